package nitrofake

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
)

// NITRO error codes the fake answers with, by their NSERR_ names in the
// NetScaler error-message reference.
const (
	codeOK              = 0
	codePerm            = 257  // NSERR_PERM: Operation not permitted
	codeNoEnt           = 258  // NSERR_NOENT: No such resource
	codeExist           = 273  // NSERR_EXIST: Resource already exists
	codeInval           = 278  // NSERR_INVAL: Invalid argument
	codeAlready         = 293  // NSERR_ALREADY: Operation already in progress
	codeInUse           = 315  // NSERR_TOOMANYREFS: Resource in use
	codeBadLogin        = 354  // NSERR_NOUSER: Invalid username or password
	codeSessionExpired  = 444  // NSERR_SESSION_EXPIRED
	codeNoVserver       = 461  // NSERR_NOENT_VSERVER: No such Vserver
	codeNoSvcGroup      = 463  // NSERR_NOENT_SVC_SVCGRP: No such service/serviceGroup
	codeNotLoggedIn     = 1027 // NSERR_AUTHTIMEOUT: Not logged in or connection timed out
	codeInvalidName     = 1075 // NSERR_INVALIDNAME
	codeArgPrereq       = 1093 // NSERR_ARGPREREQ: Argument pre-requisite missing
	codeArgMissing      = 1095 // NSERR_ARGMISSING: Required argument missing
	codeArgValBad       = 1097 // NSERR_ARGVALBAD: Invalid argument value
	codeIntMax          = 1108 // NSERR_INTMAXVAL
	codeIntMin          = 1109 // NSERR_INTMINVAL
	codeInvalidIP       = 1110 // NSERR_INVALIDIP
	codeInvalidNetmask  = 1111 // NSERR_INVALIDNETMASK
	codeBadObjectName   = 1232 // NSERR_NITRO_INVALID_OBJECTNAME
	codeBadJSON         = 1233 // NSERR_NITRO_INVALID_JSON_INPUT
	codeBadJSONDatatype = 1234 // NSERR_NITRO_INVALID_JSON_DATATYPE
	codeSvcTypeMismatch = 1304 // NSERR_SVCTYPE_MISMATCH
	codeNotBound        = 1303 // the service/servicegroup is not bound to the vserver
	codeMonitorNotBound = 2170 // NSERR_MONITOR_NOT_BOUND
	codeRNATExists      = 774  // NSERR_RNAT_EXISTS: RNAT to the target network already exists
	codeNotPropagated   = 1028 // warning: the command did not propagate to the HA peer
	// codeNATIPNotOwned: an INAT public IP or RNAT NAT IP that is not an
	// address of the appliance. NetScaler answers with a code of its NAT
	// range (3888–3902); the fake uses the first and claims no more.
	codeNATIPNotOwned = 3888
)

type kind int

const (
	kString kind = iota
	kName
	kIP
	kNetmask
	kInt
	kEnum
)

type field struct {
	kind     kind
	enum     []string
	min, max int64
	required bool
	// fixed fields cannot be changed by an update (PUT).
	fixed bool
	// asString: GET returns this number as a JSON string, as NetScaler does
	// for several numeric fields, so clients must accept both.
	asString bool
}

// objSchema describes a top-level resource (add/get/update/delete by name).
type objSchema struct {
	key      string
	fields   map[string]field
	defaults map[string]any // added to GET output when not set
	// deleteArgs must be given as ?args= on DELETE (lbmonitor needs type).
	deleteArgs []string
}

// bindSchema describes a binding resource: rows under a parent object.
type bindSchema struct {
	parentType, parentField string
	keyFields               []string // identify one row besides the parent
	fields                  map[string]field
	missingParent           int
	refs                    []ref
	defaults                map[string]any
}

type ref struct {
	field, typ string
	code       int
}

var (
	enabled = []string{"ENABLED", "DISABLED"}
	yesNo   = []string{"YES", "NO"}

	serviceTypes = []string{"HTTP", "FTP", "TCP", "UDP", "SSL", "SSL_BRIDGE", "SSL_TCP", "DTLS", "NNTP",
		"RPCSVR", "DNS", "ADNS", "SNMP", "RTSP", "DHCPRA", "ANY", "SIP_UDP", "SIP_TCP", "SIP_SSL",
		"DNS_TCP", "ADNS_TCP", "MYSQL", "MSSQL", "ORACLE", "MONGO", "MONGO_TLS", "RADIUS", "RADIUSListener",
		"RDP", "DIAMETER", "SSL_DIAMETER", "TFTP", "SMPP", "PPTP", "GRE", "SYSLOGTCP", "SYSLOGUDP", "FIX",
		"SSL_FIX", "USER_TCP", "USER_SSL_TCP", "QUIC", "IPFIX", "LOGSTREAM", "LDAP", "HTTP_QUIC", "QUIC_BRIDGE"}
	lbMethods = []string{"ROUNDROBIN", "LEASTCONNECTION", "LEASTRESPONSETIME", "URLHASH", "DOMAINHASH",
		"DESTINATIONIPHASH", "SOURCEIPHASH", "SRCIPDESTIPHASH", "LEASTBANDWIDTH", "LEASTPACKETS", "TOKEN",
		"SRCIPSRCPORTHASH", "LRTM", "CALLIDHASH", "CUSTOMLOAD", "LEASTREQUEST", "AUDITLOGHASH",
		"STATICPROXIMITY", "USER_TOKEN"}
	monitorTypes = []string{"PING", "TCP", "HTTP", "TCP-ECV", "HTTP-ECV", "UDP-ECV", "DNS", "FTP", "LDNS-PING",
		"LDNS-TCP", "LDNS-DNS", "RADIUS", "USER", "HTTP-INLINE", "SIP-UDP", "SIP-TCP", "LOAD", "FTP-EXTENDED",
		"SMTP", "SNMP", "NNTP", "MYSQL", "MYSQL-ECV", "MSSQL-ECV", "ORACLE-ECV", "LDAP", "POP3", "DNS-TCP",
		"RTSP", "ARP", "ND6", "DIAMETER", "RADIUS_ACCOUNTING", "STOREFRONT", "SMPP", "CITRIX-XD-DDC"}
)

var objects = map[string]objSchema{
	"servicegroup": {
		key: "servicegroupname",
		fields: map[string]field{
			"servicegroupname": {kind: kName, required: true, fixed: true},
			"servicetype":      {kind: kEnum, enum: serviceTypes, required: true, fixed: true},
			"comment":          {kind: kString, max: 256},
			"td":               {kind: kInt, min: 0, max: 4094, fixed: true},
			"state":            {kind: kEnum, enum: enabled},
			"maxclient":        {kind: kInt, min: 0, max: 4294967294},
			"usip":             {kind: kEnum, enum: yesNo},
			"useproxyport":     {kind: kEnum, enum: yesNo},
			"healthmonitor":    {kind: kEnum, enum: yesNo},
			"cip":              {kind: kEnum, enum: enabled},
		},
		defaults: map[string]any{"state": "ENABLED", "td": json.Number("0"), "healthmonitor": "YES",
			"servicegroupeffectivestate": "DOWN", "numofconnections": json.Number("0")},
	},
	"lbvserver": {
		key: "name",
		fields: map[string]field{
			"name":            {kind: kName, required: true, fixed: true},
			"servicetype":     {kind: kEnum, enum: serviceTypes, required: true, fixed: true},
			"ipv46":           {kind: kIP},
			"port":            {kind: kInt, min: 1, max: 65535},
			"lbmethod":        {kind: kEnum, enum: lbMethods},
			"comment":         {kind: kString, max: 256},
			"td":              {kind: kInt, min: 0, max: 4094, fixed: true},
			"state":           {kind: kEnum, enum: enabled},
			"persistencetype": {kind: kEnum, enum: []string{"SOURCEIP", "COOKIEINSERT", "SSLSESSION", "RULE", "URLPASSIVE", "CUSTOMSERVERID", "DESTIP", "SRCIPDESTIP", "CALLID", "RTSPSID", "DIAMETER", "FIXSESSION", "USERSESSION", "NONE"}},
			"timeout":         {kind: kInt, min: 0, max: 1440},
			"clttimeout":      {kind: kInt, min: 0, max: 31536000},
		},
		defaults: map[string]any{"lbmethod": "LEASTCONNECTION", "td": json.Number("0"), "ipv46": "0.0.0.0",
			"port": json.Number("0"), "curstate": "DOWN", "effectivestate": "DOWN", "persistencetype": "NONE"},
	},
	"lbmonitor": {
		key: "monitorname",
		fields: map[string]field{
			"monitorname": {kind: kName, required: true, fixed: true},
			"type":        {kind: kEnum, enum: monitorTypes, required: true, fixed: true},
			"interval":    {kind: kInt, min: 1, max: 20940000},
			"resptimeout": {kind: kInt, min: 1, max: 20939000},
			"retries":     {kind: kInt, min: 1, max: 127},
			"destport":    {kind: kInt, min: 0, max: 65535},
			"httprequest": {kind: kString},
			"send":        {kind: kString},
			"recv":        {kind: kString},
		},
		defaults:   map[string]any{"interval": json.Number("5"), "resptimeout": json.Number("2"), "retries": json.Number("3"), "state": "ENABLED"},
		deleteArgs: []string{"type"},
	},
	"inat": {
		key: "name",
		fields: map[string]field{
			"name":         {kind: kName, required: true, fixed: true},
			"publicip":     {kind: kIP, required: true, fixed: true},
			"privateip":    {kind: kIP, required: true},
			"tcpproxy":     {kind: kEnum, enum: enabled},
			"ftp":          {kind: kEnum, enum: enabled},
			"tftp":         {kind: kEnum, enum: enabled},
			"usip":         {kind: kEnum, enum: []string{"ON", "OFF"}},
			"usnip":        {kind: kEnum, enum: []string{"ON", "OFF"}},
			"proxyip":      {kind: kIP},
			"useproxyport": {kind: kEnum, enum: enabled},
			"td":           {kind: kInt, min: 0, max: 4094, fixed: true},
			"connfailover": {kind: kEnum, enum: enabled},
		},
		defaults: map[string]any{"tcpproxy": "DISABLED", "ftp": "DISABLED", "tftp": "DISABLED", "td": json.Number("0")},
	},
	// server: NetScaler creates one, named after the IP, when a member is
	// bound by IP.
	"server": {
		key: "name",
		fields: map[string]field{
			"name":      {kind: kName, required: true, fixed: true},
			"ipaddress": {kind: kIP, required: true, fixed: true},
			"comment":   {kind: kString, max: 256},
			"state":     {kind: kEnum, enum: enabled},
			"td":        {kind: kInt, min: 0, max: 4094, fixed: true},
		},
		defaults: map[string]any{"state": "ENABLED", "td": json.Number("0")},
	},
	// nsip: the appliance's own addresses (NSIP, VIP, SNIP, ...).
	"nsip": {
		key: "ipaddress",
		fields: map[string]field{
			"ipaddress": {kind: kIP, required: true, fixed: true},
			"netmask":   {kind: kNetmask, required: true},
			"type":      {kind: kEnum, enum: []string{"SNIP", "VIP", "NSIP", "GSLBsiteIP", "CLIP", "LSN"}},
			"td":        {kind: kInt, min: 0, max: 4094, fixed: true},
		},
		defaults: map[string]any{"type": "SNIP", "td": json.Number("0")},
	},
	// policypatset: a named set of strings (rackflow counts the users of a
	// shared RNAT rule in one).
	"policypatset": {
		key: "name",
		fields: map[string]field{
			"name":      {kind: kName, required: true, fixed: true},
			"comment":   {kind: kString, max: 256},
			"indextype": {kind: kEnum, enum: []string{"Auto-generated", "User-defined"}},
		},
	},
	// rnat as named RNAT4 rules (NetScaler 12.1 and later): add with name,
	// network and netmask (or aclname); NAT IPs bound through rnat_nsip_binding.
	"rnat": {
		key: "name",
		fields: map[string]field{
			"name":             {kind: kName, required: true, fixed: true},
			"network":          {kind: kIP, fixed: true},
			"netmask":          {kind: kNetmask, fixed: true},
			"aclname":          {kind: kName, fixed: true},
			"td":               {kind: kInt, min: 0, max: 4094, fixed: true},
			"srcippersistency": {kind: kEnum, enum: enabled},
			"useproxyport":     {kind: kEnum, enum: enabled},
			"connfailover":     {kind: kEnum, enum: enabled},
			"ownergroup":       {kind: kName},
		},
		defaults: map[string]any{"td": json.Number("0"), "srcippersistency": "DISABLED", "useproxyport": "ENABLED", "connfailover": "DISABLED"},
	},
}

var bindings = map[string]bindSchema{
	"servicegroup_servicegroupmember_binding": {
		parentType: "servicegroup", parentField: "servicegroupname", keyFields: []string{"ip", "port"},
		fields: map[string]field{
			"servicegroupname": {kind: kName, required: true},
			"ip":               {kind: kIP, required: true},
			"port":             {kind: kInt, min: 1, max: 65535, required: true},
			"weight":           {kind: kInt, min: 1, max: 100, asString: true},
			"state":            {kind: kEnum, enum: enabled},
			"hashid":           {kind: kInt, min: 1, max: 4294967295},
		},
		missingParent: codeNoEnt,
		defaults:      map[string]any{"weight": json.Number("1"), "state": "ENABLED", "svrstate": "DOWN"},
	},
	"lbvserver_servicegroup_binding": {
		parentType: "lbvserver", parentField: "name", keyFields: []string{"servicegroupname"},
		fields: map[string]field{
			"name":             {kind: kName, required: true},
			"servicegroupname": {kind: kName, required: true},
		},
		missingParent: codeNoVserver,
		refs:          []ref{{field: "servicegroupname", typ: "servicegroup", code: codeNoSvcGroup}},
	},
	"servicegroup_lbmonitor_binding": {
		parentType: "servicegroup", parentField: "servicegroupname", keyFields: []string{"monitor_name"},
		fields: map[string]field{
			"servicegroupname": {kind: kName, required: true},
			"monitor_name":     {kind: kName, required: true},
			"weight":           {kind: kInt, min: 1, max: 100, asString: true},
			"passive":          {kind: kEnum, enum: []string{"true", "false"}},
		},
		missingParent: codeNoEnt,
		refs:          []ref{{field: "monitor_name", typ: "lbmonitor", code: codeNoEnt}},
		defaults:      map[string]any{"weight": json.Number("1"), "monstate": "ENABLED"},
	},
	"policypatset_pattern_binding": {
		parentType: "policypatset", parentField: "name", keyFields: []string{"String"},
		fields: map[string]field{
			"name":    {kind: kName, required: true},
			"String":  {kind: kString, required: true, max: 255},
			"index":   {kind: kInt, min: 1, max: 4294967290},
			"charset": {kind: kEnum, enum: []string{"ASCII", "UTF_8"}},
			"comment": {kind: kString, max: 256},
		},
		missingParent: codeNoEnt,
	},
	"rnat_nsip_binding": {
		parentType: "rnat", parentField: "name", keyFields: []string{"natip"},
		fields: map[string]field{
			"name":  {kind: kName, required: true},
			"natip": {kind: kIP, required: true},
			"td":    {kind: kInt, min: 0, max: 4094},
		},
		missingParent: codeNoEnt,
	},
}

// builtinMonitors exist on every NetScaler and cannot be removed.
var builtinMonitors = map[string]string{
	"ping": "PING", "tcp": "TCP", "http": "HTTP", "tcp-ecv": "TCP-ECV", "http-ecv": "HTTP-ECV",
	"udp-ecv": "UDP-ECV", "dns": "DNS", "ftp": "FTP", "ping-default": "PING", "tcp-default": "TCP",
	"arp": "ARP", "nd6": "ND6", "tcps": "TCP", "https": "HTTP", "https-ecv": "HTTP-ECV",
}

// NetScaler entity names: start with a letter, digit or underscore, then
// letters, digits and _ # . space : @ = -; at most 127 characters.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_#. :@=-]{0,126}$`)

type nitroErr struct {
	code int
	msg  string
}

// Values returns a copy of the values the fake accepts for an enumerated
// field of an object or binding type, e.g. Values("lbvserver", "lbmethod"),
// as the NITRO reference lists them; nil if the type has no such enumerated
// field. Tests use it to hold rackflow's own lists to the reference.
func Values(typ, name string) []string {
	var fields map[string]field
	if o, ok := objects[typ]; ok {
		fields = o.fields
	} else if b, ok := bindings[typ]; ok {
		fields = b.fields
	}
	f, ok := fields[name]
	if !ok || f.kind != kEnum {
		return nil
	}
	return slices.Clone(f.enum)
}

func errf(code int, format string, a ...any) *nitroErr {
	return &nitroErr{code: code, msg: fmt.Sprintf(format, a...)}
}

// checkFields validates one object or binding row against its fields.
// add says whether required fields must be present.
func checkFields(fields map[string]field, obj map[string]any, add bool) *nitroErr {
	for k, v := range obj {
		f, ok := fields[k]
		if !ok {
			return errf(codeInval, "Invalid argument [%s]", k)
		}
		if e := checkValue(k, f, v); e != nil {
			return e
		}
	}
	if add {
		names := make([]string, 0, len(fields))
		for k := range fields {
			names = append(names, k)
		}
		slices.Sort(names)
		for _, k := range names {
			if fields[k].required {
				if _, ok := obj[k]; !ok {
					return errf(codeArgMissing, "Required argument missing [%s]", k)
				}
			}
		}
	}
	return nil
}

func checkValue(k string, f field, v any) *nitroErr {
	if f.kind == kInt {
		n, ok := v.(json.Number)
		if !ok {
			return errf(codeBadJSONDatatype, "Invalid JSON data type [%s]", k)
		}
		i, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil {
			return errf(codeBadJSONDatatype, "Invalid JSON data type [%s]", k)
		}
		if i < f.min {
			return errf(codeIntMin, "Integer value below minimum [%s, %d]", k, i)
		}
		if f.max > 0 && i > f.max {
			return errf(codeIntMax, "Integer value exceeds maximum [%s, %d]", k, i)
		}
		return nil
	}
	s, ok := v.(string)
	if !ok {
		return errf(codeBadJSONDatatype, "Invalid JSON data type [%s]", k)
	}
	switch f.kind {
	case kName:
		if !nameRE.MatchString(s) {
			return errf(codeInvalidName, "Invalid name; names must begin with an alphanumeric character or underscore and must contain only alphanumerics, _, #, ., space, :, @, = or - [%s, %s]", k, s)
		}
	case kIP:
		if _, err := netip.ParseAddr(s); err != nil {
			return errf(codeInvalidIP, "Invalid IP address [%s, %s]", k, s)
		}
	case kNetmask:
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() || !contiguous(a.As4()) {
			return errf(codeInvalidNetmask, "Invalid netmask [%s, %s]", k, s)
		}
	case kEnum:
		if !slices.Contains(f.enum, s) {
			return errf(codeArgValBad, "Invalid argument value [%s, %s]", k, s)
		}
	case kString:
		if f.max > 0 && int64(len(s)) > f.max {
			return errf(codeArgValBad, "String length exceeds maximum [%s]", k)
		}
	}
	return nil
}

func contiguous(b [4]byte) bool {
	m := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	inv := ^m // ones then zeros: inverted is 0..01..1
	return inv&(inv+1) == 0
}
