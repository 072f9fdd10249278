package csfake

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// apiError is an error answer: HTTP status Code, body
// {"<command>response":{"uuidList":[],"errorcode":Code,"cserrorcode":CSCode,"errortext":Text}}.
type apiError struct {
	Code   int
	CSCode int
	Text   string
}

const (
	csServerAPI  = 9999 // ServerApiException
	csRuntime    = 4250 // CloudRuntimeException
	csInvalidVal = 4350 // InvalidParameterValueException
)

// commonParams are sent with every signed request.
var commonParams = map[string]bool{
	"apiKey": true, "command": true, "response": true, "signature": true,
	"signatureversion": true, "expires": true,
}

// uuidParams name entities; CloudStack translates them to database ids and
// rejects a malformed or unknown one.
var uuidParams = map[string]bool{
	"id": true, "zoneid": true, "networkid": true, "virtualmachineid": true, "nicid": true, "jobid": true,
	"projectid": true,
}

type command struct {
	required, optional []string
	run                func(s *Server, p url.Values) (any, *apiError) // called with s.mu held
}

var commands = map[string]command{
	"listVirtualMachines":         {optional: []string{"id", "name", "keyword", "listall", "zoneid", "isvnf", "page", "pagesize", "projectid"}, run: (*Server).listVirtualMachines},
	"listNetworks":                {optional: []string{"id", "name", "keyword", "listall", "zoneid", "page", "pagesize", "projectid"}, run: (*Server).listNetworks},
	"listZones":                   {optional: []string{"id", "name", "available", "page", "pagesize"}, run: (*Server).listZones},
	"listNics":                    {required: []string{"virtualmachineid"}, optional: []string{"networkid", "nicid", "page", "pagesize"}, run: (*Server).listNics},
	"addNicToVirtualMachine":      {required: []string{"networkid", "virtualmachineid"}, optional: []string{"ipaddress", "macaddress"}, run: (*Server).addNic},
	"removeNicFromVirtualMachine": {required: []string{"nicid", "virtualmachineid"}, run: (*Server).removeNic},
	"queryAsyncJobResult":         {required: []string{"jobid"}, run: (*Server).queryJob},
	"addIpToNic":                  {required: []string{"nicid"}, optional: []string{"ipaddress"}, run: (*Server).addIP},
	"removeIpFromNic":             {required: []string{"id"}, run: (*Server).removeIP},
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.hits++
	s.mu.Unlock()
	if r.URL.Path != "/client/api" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if err := r.ParseForm(); err != nil {
		writeError(w, "errorresponse", &apiError{Code: 431, CSCode: csServerAPI, Text: "malformed request: " + err.Error()})
		return
	}
	p := r.Form
	cmdName := p.Get("command")
	respName := strings.ToLower(cmdName) + "response"
	if cmdName == "" {
		respName = "errorresponse"
	}
	if !s.authentic(p) {
		writeError(w, respName, &apiError{Code: 401, Text: "unable to verify user credentials and/or request signature"})
		return
	}
	for k, vs := range p {
		if len(vs) != 1 {
			writeError(w, respName, &apiError{Code: 431, CSCode: csServerAPI, Text: fmt.Sprintf("fake CloudStack: parameter %s given %d times", k, len(vs))})
			return
		}
	}
	if p.Get("response") != "json" {
		writeError(w, respName, &apiError{Code: 431, CSCode: csServerAPI, Text: "fake CloudStack: only response=json is supported"})
		return
	}
	cmd, ok := commands[cmdName]
	if !ok {
		writeError(w, "errorresponse", &apiError{Code: 432, CSCode: csServerAPI, Text: fmt.Sprintf("The given command:%s does not exist or it is not available for user", cmdName)})
		return
	}

	s.mu.Lock()
	if fn := s.before[cmdName]; fn != nil {
		delete(s.before, cmdName)
		s.mu.Unlock()
		fn()
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	s.calls[cmdName]++
	s.logRequest(cmdName, p)
	if s.denied[cmdName] {
		// ApiServer.commandAvailable: a PermissionDeniedException from the
		// role checker, answered as UNAUTHORIZED.
		writeError(w, respName, &apiError{Code: 401, CSCode: csServerAPI, Text: fmt.Sprintf("The given command '%s' either does not exist, is not available for user.", cmdName)})
		return
	}
	if e := s.failNext[cmdName]; e != nil {
		delete(s.failNext, cmdName)
		writeError(w, respName, e)
		return
	}
	if e := s.checkParams(cmdName, cmd, p); e != nil {
		writeError(w, respName, e)
		return
	}
	out, e := cmd.run(s, p)
	if e != nil {
		writeError(w, respName, e)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{respName: out})
}

// authentic checks apiKey, expiry and signature as CloudStack's ApiServer
// does: every parameter but the signature, sorted by name, values
// URL-encoded the Java way (space as %20), joined with &, lower-cased,
// HMAC-SHA1 with the secret key, base64.
func (s *Server) authentic(p url.Values) bool {
	if p.Get("apiKey") != s.opts.APIKey {
		return false
	}
	if p.Get("signatureversion") == "3" {
		exp, err := time.Parse(time.RFC3339, p.Get("expires"))
		if err != nil || time.Now().After(exp) {
			return false
		}
	}
	got, err := base64.StdEncoding.DecodeString(p.Get("signature"))
	if err != nil {
		return false
	}
	keys := make([]string, 0, len(p))
	for k := range p {
		if k != "signature" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		for _, v := range p[k] {
			parts = append(parts, k+"="+javaURLEncode(v))
		}
	}
	mac := hmac.New(sha1.New, []byte(s.opts.SecretKey))
	mac.Write([]byte(strings.ToLower(strings.Join(parts, "&"))))
	return hmac.Equal(got, mac.Sum(nil))
}

// javaURLEncode is java.net.URLEncoder.encode(v, "UTF-8") with "+" turned
// into "%20", which is what CloudStack signs.
func javaURLEncode(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '.', c == '-', c == '*', c == '_':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func (s *Server) logRequest(cmd string, p url.Values) {
	keys := make([]string, 0, len(p))
	for k := range p {
		if !commonParams[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	line := cmd
	for _, k := range keys {
		line += " " + k + "=" + p.Get(k)
	}
	s.reqLog = append(s.reqLog, line)
}

var uuidRe = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func (s *Server) checkParams(name string, cmd command, p url.Values) *apiError {
	lname := strings.ToLower(name)
	allowed := map[string]bool{}
	for _, k := range cmd.required {
		allowed[k] = true
		if p.Get(k) == "" {
			return &apiError{Code: 431, CSCode: csServerAPI, Text: fmt.Sprintf("Unable to execute API command %s due to missing parameter %s", lname, k)}
		}
	}
	for _, k := range cmd.optional {
		allowed[k] = true
	}
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := p.Get(k)
		switch {
		case commonParams[k]:
		case !allowed[k]:
			return &apiError{Code: 431, CSCode: csServerAPI, Text: fmt.Sprintf("fake CloudStack: unknown parameter %s for command %s", k, name)}
		case uuidParams[k] && !s.exists(k, v):
			return invalidValue(lname, k, v)
		case k == "listall" || k == "available" || k == "isvnf":
			if v != "true" && v != "false" {
				return &apiError{Code: 431, CSCode: csServerAPI, Text: fmt.Sprintf("Unable to execute API command %s due to invalid value. Invalid parameter %s value=%s due to incorrect boolean value format", lname, k, v)}
			}
		case k == "page" || k == "pagesize":
			if n, err := strconv.Atoi(v); err != nil || n < 1 {
				return invalidValue(lname, k, v)
			}
		case k == "ipaddress":
			if a, err := netip.ParseAddr(v); err != nil || !a.Is4() {
				return &apiError{Code: 431, CSCode: csInvalidVal, Text: "Invalid format for IP address parameter: " + v}
			}
		}
	}
	return nil
}

func invalidValue(cmd, k, v string) *apiError {
	return &apiError{Code: 431, CSCode: csServerAPI, Text: fmt.Sprintf("Unable to execute API command %s due to invalid value. Invalid parameter %s value=%s due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the field in api cmd class.", cmd, k, v)}
}

// exists reports whether a UUID parameter names an entity. id is checked
// by the command itself (it names different kinds).
func (s *Server) exists(k, v string) bool {
	if k == "projectid" && v == "-1" {
		return true // every project the caller may see
	}
	if !uuidRe.MatchString(v) {
		return false
	}
	switch k {
	case "projectid":
		return s.projects[v] != nil
	case "zoneid":
		return s.zones[v] != nil
	case "networkid":
		return s.networks[v] != nil
	case "virtualmachineid":
		return s.vms[v] != nil
	case "jobid":
		return s.jobs[v] != nil
	case "nicid":
		for _, vm := range s.vms {
			for _, n := range vm.Nics {
				if n.ID == v {
					return true
				}
			}
		}
		return false
	}
	return true
}

func writeError(w http.ResponseWriter, respName string, e *apiError) {
	body := map[string]any{"uuidList": []string{}, "errorcode": e.Code, "errortext": e.Text}
	if e.CSCode != 0 {
		body["cserrorcode"] = e.CSCode
	}
	writeJSON(w, e.Code, map[string]any{respName: body})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// list wraps items as CloudStack does: {"count":n,"key":[...]}, or {} when
// there are none.
func list(key string, items []any) map[string]any {
	if len(items) == 0 {
		return map[string]any{}
	}
	return map[string]any{"count": len(items), key: items}
}

// page is one page of items, as CloudStack pages a list: page (from 1) of
// pagesize (default.page.size when absent), with count the total.
func (s *Server) page(key string, items []any, p url.Values) map[string]any {
	size := s.opts.PageSize
	if v := p.Get("pagesize"); v != "" {
		size, _ = strconv.Atoi(v)
	}
	n := 1
	if v := p.Get("page"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	total := len(items)
	lo := min((n-1)*size, total)
	hi := min(lo+size, total)
	if total == 0 || lo == hi {
		return map[string]any{}
	}
	return map[string]any{"count": total, key: items[lo:hi]}
}

func (s *Server) listVirtualMachines(p url.Values) (any, *apiError) {
	if id := p.Get("id"); id != "" && s.vms[id] == nil {
		return nil, invalidValue("listvirtualmachines", "id", id)
	}
	var out []any
	for _, id := range s.vmOrder {
		vm := s.vms[id]
		if vm == nil || !match(p, "id", vm.ID) || !match(p, "zoneid", vm.ZoneID) || !inProject(p, vm.ProjectID, false) {
			continue
		}
		// isvnf absent lists both kinds.
		if v := p.Get("isvnf"); v != "" && (v == "true") != vm.VNF {
			continue
		}
		// CloudStack's name filter is a substring match.
		if n := p.Get("name"); n != "" && !strings.Contains(vm.Name, n) {
			continue
		}
		if kw := p.Get("keyword"); kw != "" && !strings.Contains(strings.ToLower(vm.Name), strings.ToLower(kw)) {
			continue
		}
		out = append(out, s.vmJSON(vm))
	}
	return s.page("virtualmachine", out, p), nil
}

func (s *Server) listNetworks(p url.Values) (any, *apiError) {
	if id := p.Get("id"); id != "" && s.networks[id] == nil {
		return nil, invalidValue("listnetworks", "id", id)
	}
	var out []any
	for _, id := range sortedKeys(s.networks) {
		n := s.networks[id]
		if !match(p, "id", n.ID) || !match(p, "zoneid", n.ZoneID) || !inProject(p, n.ProjectID, n.Type == "Shared") {
			continue
		}
		// "name" is ignored, as CloudStack before 4.22 ignores it;
		// "keyword" is a case-insensitive substring of name or display
		// text (the fake's display text is the name).
		if kw := p.Get("keyword"); kw != "" && !strings.Contains(strings.ToLower(n.Name), strings.ToLower(kw)) {
			continue
		}
		out = append(out, s.networkJSON(n))
	}
	return s.page("network", out, p), nil
}

func (s *Server) listZones(p url.Values) (any, *apiError) {
	if id := p.Get("id"); id != "" && s.zones[id] == nil {
		return nil, invalidValue("listzones", "id", id)
	}
	var out []any
	for _, id := range sortedKeys(s.zones) {
		z := s.zones[id]
		if !match(p, "id", z.ID) || !match(p, "name", z.Name) {
			continue
		}
		out = append(out, map[string]any{"id": z.ID, "name": z.Name, "networktype": z.NetworkType, "allocationstate": "Enabled"})
	}
	return list("zone", out), nil
}

func (s *Server) listNics(p url.Values) (any, *apiError) {
	vm := s.vms[p.Get("virtualmachineid")]
	var out []any
	for i := range vm.Nics {
		n := &vm.Nics[i]
		if !match(p, "networkid", n.NetworkID) || !match(p, "nicid", n.ID) {
			continue
		}
		out = append(out, s.nicJSON(vm, n))
	}
	return list("nic", out), nil
}

// inProject is CloudStack's project scoping of a list: without projectid
// only the account's own resources (a project's are left out), with
// projectid=-1 every project's, with a project id only that project's.
// A shared network without a project is listed either way.
func inProject(p url.Values, owner string, shared bool) bool {
	want := p.Get("projectid")
	switch {
	case owner == "" && shared:
		return true
	case want == "":
		return owner == ""
	case want == "-1":
		return owner != ""
	}
	return owner == want
}

func match(p url.Values, k, v string) bool {
	want := p.Get(k)
	return want == "" || want == v
}

func sortedKeys[T any](m map[string]T) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (s *Server) vmJSON(vm *VM) map[string]any {
	nics := []any{}
	for i := range vm.Nics {
		nics = append(nics, s.nicJSON(vm, &vm.Nics[i]))
	}
	zname := ""
	if z := s.zones[vm.ZoneID]; z != nil {
		zname = z.Name
	}
	out := map[string]any{
		"id": vm.ID, "name": vm.Name, "displayname": vm.Name, "instancename": vm.InstanceName,
		"zoneid": vm.ZoneID, "zonename": zname, "state": vm.State, "nic": nics,
	}
	if vm.ProjectID != "" {
		out["projectid"] = vm.ProjectID
	}
	if vm.VNF {
		// As CloudStack 4.19+ lists a VNF appliance: vnfnics are objects.
		var vnics []any
		for i := range vm.Nics {
			n := &vm.Nics[i]
			vnics = append(vnics, map[string]any{
				"deviceid": n.DeviceID, "name": fmt.Sprintf("eth%d", n.DeviceID), "required": true,
				"management": i == 0, "description": "", "networkid": n.NetworkID,
			})
		}
		out["vmtype"] = "User"
		out["templatetype"] = "VNF"
		out["vnfnics"] = vnics
		out["vnfdetails"] = map[string]any{"access_methods": "ssh_password", "username": "admin"}
	}
	return out
}

func (s *Server) networkJSON(n *Network) map[string]any {
	pfx := netip.MustParsePrefix(n.CIDR)
	return map[string]any{
		"id": n.ID, "name": n.Name, "zoneid": n.ZoneID, "cidr": pfx.Masked().String(),
		"gateway": n.Gateway, "netmask": netmask(pfx.Bits()), "type": n.Type,
		"state": "Implemented", "traffictype": "Guest", "projectid": n.ProjectID,
	}
}

func (s *Server) nicJSON(vm *VM, n *Nic) map[string]any {
	sec := []any{}
	for _, x := range n.Secondary {
		sec = append(sec, map[string]any{"id": x.ID, "ipaddress": x.IP})
	}
	m := map[string]any{
		"id": n.ID, "networkid": n.NetworkID, "macaddress": n.MAC, "ipaddress": n.IP, "secondaryip": sec,
		"isdefault": n.IsDefault, "deviceid": strconv.Itoa(n.DeviceID), "virtualmachineid": vm.ID,
		"traffictype": "Guest",
	}
	if net := s.networks[n.NetworkID]; net != nil {
		m["networkname"] = net.Name
		m["gateway"] = net.Gateway
		m["netmask"] = netmask(netip.MustParsePrefix(net.CIDR).Bits())
		m["type"] = net.Type
	}
	return m
}

func netmask(bits int) string {
	var m uint32 = 0
	if bits > 0 {
		m = ^uint32(0) << (32 - bits)
	}
	return fmt.Sprintf("%d.%d.%d.%d", m>>24, (m>>16)&0xff, (m>>8)&0xff, m&0xff)
}
