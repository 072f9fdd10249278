package csfake_test

import (
	"strings"
	"testing"

	cs "github.com/apache/cloudstack-go/v2/cloudstack"
	"github.com/google/go-cmp/cmp"

	"github.com/rackflow/rackflow/testsuite/csfake"
)

type world struct {
	srv                *csfake.Server
	zone, basic        string
	dmz, secnet, other string
	vm                 string
}

func newWorld(t *testing.T, opts csfake.Options) world {
	srv := csfake.Start(t, opts)
	w := world{srv: srv}
	w.zone = srv.AddZone(csfake.Zone{Name: "zone1", NetworkType: "Advanced"})
	w.basic = srv.AddZone(csfake.Zone{Name: "legacy", NetworkType: "Basic"})
	w.dmz = srv.AddNetwork(csfake.Network{Name: "dmz", ZoneID: w.zone, CIDR: "10.50.0.0/24", Gateway: "10.50.0.1"})
	w.secnet = srv.AddNetwork(csfake.Network{Name: "secnet", ZoneID: w.zone, CIDR: "10.51.0.0/24", Gateway: "10.51.0.1"})
	w.vm = srv.AddVM(csfake.VM{Name: "web01", ZoneID: w.zone, Nics: []csfake.Nic{{NetworkID: w.dmz, IP: "10.50.0.10", IsDefault: true}}})
	return w
}

func (w world) client(secret string) *cs.CloudStackClient {
	return cs.NewClient(w.srv.URL(), w.srv.APIKey(), secret, false)
}

func TestSignatureChecked(t *testing.T) {
	w := newWorld(t, csfake.Options{})
	tests := map[string]struct {
		key, secret string
		wantErr     string
	}{
		"right key":    {key: w.srv.APIKey(), secret: w.srv.SecretKey()},
		"wrong secret": {key: w.srv.APIKey(), secret: "not-the-secret", wantErr: "CloudStack API error 401 (CSExceptionErrorCode: 0): unable to verify user credentials and/or request signature"},
		"unknown key":  {key: "nobody", secret: w.srv.SecretKey(), wantErr: "CloudStack API error 401"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := cs.NewClient(w.srv.URL(), tc.key, tc.secret, false)
			p := c.VirtualMachine.NewListVirtualMachinesParams()
			p.SetName("web 01 with spaces*") // values the signature must encode as CloudStack does
			_, err := c.VirtualMachine.ListVirtualMachines(p)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("signed request refused: %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want prefix %q", err, tc.wantErr)
			}
		})
	}
	if got := w.srv.Calls("listVirtualMachines"); got != 1 {
		t.Errorf("authenticated listVirtualMachines calls = %d, want 1 (refused requests must not count)", got)
	}
}

func TestStrictParameters(t *testing.T) {
	w := newWorld(t, csfake.Options{})
	c := w.client(w.srv.SecretKey())
	tests := map[string]struct {
		command string
		params  map[string]any
		wantErr string
	}{
		"unknown command": {
			command: "deployVirtualMachine", params: map[string]any{"zoneid": w.zone},
			wantErr: "CloudStack API error 432 (CSExceptionErrorCode: 9999): The given command:deployVirtualMachine does not exist",
		},
		"unknown parameter": {
			command: "listNics", params: map[string]any{"virtualmachineid": w.vm, "fordisplay": true},
			wantErr: "CloudStack API error 431 (CSExceptionErrorCode: 9999): fake CloudStack: unknown parameter fordisplay for command listNics",
		},
		"missing parameter": {
			command: "addNicToVirtualMachine", params: map[string]any{"virtualmachineid": w.vm},
			wantErr: "CloudStack API error 431 (CSExceptionErrorCode: 9999): Unable to execute API command addnictovirtualmachine due to missing parameter networkid",
		},
		"malformed id": {
			command: "listNics", params: map[string]any{"virtualmachineid": "web01"},
			wantErr: "CloudStack API error 431 (CSExceptionErrorCode: 9999): Unable to execute API command listnics due to invalid value. Invalid parameter virtualmachineid value=web01",
		},
		"id of nothing": {
			command: "listNics", params: map[string]any{"virtualmachineid": csfake.NewUUID()},
			wantErr: "CloudStack API error 431 (CSExceptionErrorCode: 9999): Unable to execute API command listnics due to invalid value.",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := &cs.CustomServiceParams{}
			for k, v := range tc.params {
				p.SetParam(k, v)
			}
			var out map[string]any
			err := c.Custom.(*cs.CustomService).CustomRequest(tc.command, p, &out)
			if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want prefix %q", err, tc.wantErr)
			}
		})
	}
	if vm, _ := w.srv.VM(w.vm); len(vm.Nics) != 1 {
		t.Errorf("refused calls changed the VM: %d NICs", len(vm.Nics))
	}
}

func TestAddNicJob(t *testing.T) {
	w := newWorld(t, csfake.Options{JobPolls: 2})
	w.srv.PlanNic(w.vm, w.secnet, csfake.NicPlan{MAC: "52:54:00:51:00:0A", IP: "10.51.0.10"})
	c := w.client(w.srv.SecretKey())

	add := func() string {
		r, err := c.VirtualMachine.AddNicToVirtualMachine(c.VirtualMachine.NewAddNicToVirtualMachineParams(w.secnet, w.vm))
		if err != nil {
			t.Fatalf("addNicToVirtualMachine: %v", err)
		}
		return r.JobID
	}
	poll := func(job string) *cs.QueryAsyncJobResultResponse {
		r, err := c.Asyncjob.QueryAsyncJobResult(c.Asyncjob.NewQueryAsyncJobResultParams(job))
		if err != nil {
			t.Fatalf("queryAsyncJobResult: %v", err)
		}
		return r
	}

	first, second := add(), add()
	var statuses []int
	for i := 0; i < 4; i++ {
		statuses = append(statuses, poll(first).Jobstatus)
	}
	if diff := cmp.Diff([]int{0, 0, 1, 1}, statuses); diff != "" {
		t.Errorf("job status per poll (-want +got):\n%s", diff)
	}
	vm, _ := w.srv.VM(w.vm)
	if len(vm.Nics) != 2 || vm.Nics[1].MAC != "52:54:00:51:00:0a" || vm.Nics[1].IP != "10.51.0.10" || vm.Nics[1].NetworkID != w.secnet {
		t.Fatalf("VM NICs after the job: %+v", vm.Nics)
	}

	// The second job runs after the first and meets its NIC.
	poll(second)
	poll(second)
	r := poll(second)
	if r.Jobstatus != 2 || r.Jobresultcode != 530 {
		t.Fatalf("second add: status %d code %d, want 2/530", r.Jobstatus, r.Jobresultcode)
	}
	if want := "A NIC already exists for VM:" + vm.InstanceName + " in network: " + w.secnet; !strings.Contains(string(r.Jobresult), want) {
		t.Errorf("second add result %s lacks %q", r.Jobresult, want)
	}
	if vm, _ := w.srv.VM(w.vm); len(vm.Nics) != 2 {
		t.Errorf("second add changed NICs: %+v", vm.Nics)
	}
	if got := w.srv.Calls("addNicToVirtualMachine"); got != 2 {
		t.Errorf("addNicToVirtualMachine calls = %d, want 2", got)
	}
}

func TestBasicZoneRefusesNic(t *testing.T) {
	w := newWorld(t, csfake.Options{})
	flat := w.srv.AddNetwork(csfake.Network{Name: "flat", ZoneID: w.basic, CIDR: "10.60.0.0/24", Gateway: "10.60.0.1"})
	vm := w.srv.AddVM(csfake.VM{Name: "old01", ZoneID: w.basic, Nics: []csfake.Nic{{NetworkID: flat, IP: "10.60.0.5", IsDefault: true}}})
	c := w.client(w.srv.SecretKey())
	r, err := c.VirtualMachine.AddNicToVirtualMachine(c.VirtualMachine.NewAddNicToVirtualMachineParams(flat, vm))
	if err != nil {
		t.Fatal(err)
	}
	q, err := c.Asyncjob.QueryAsyncJobResult(c.Asyncjob.NewQueryAsyncJobResultParams(r.JobID))
	if err != nil {
		t.Fatal(err)
	}
	if q.Jobstatus != 2 || !strings.Contains(string(q.Jobresult), "NetworkType of Basic") {
		t.Errorf("job status %d result %s, want a Basic zone failure", q.Jobstatus, q.Jobresult)
	}
}

// TestLaxWhereCloudStackIsLax: the fake lists VNF appliances unless
// isvnf=false (cloudstack-go v2.19.0 cannot decode them), ignores
// listNetworks' name as CloudStack before 4.22 does, and pages.
func TestLaxWhereCloudStackIsLax(t *testing.T) {
	w := newWorld(t, csfake.Options{PageSize: 1})
	w.srv.AddVM(csfake.VM{Name: "web01-fw", ZoneID: w.zone, VNF: true, Nics: []csfake.Nic{{NetworkID: w.dmz, IP: "10.50.0.2", IsDefault: true}}})
	c := w.client(w.srv.SecretKey())

	p := c.VirtualMachine.NewListVirtualMachinesParams()
	p.SetName("web01")
	p.SetPagesize(10)
	if _, err := c.VirtualMachine.ListVirtualMachines(p); err == nil || !strings.Contains(err.Error(), "vnfnics") {
		t.Errorf("listing a VNF appliance: err = %v, want cloudstack-go's vnfnics decoding error", err)
	}
	p.SetIsvnf(false)
	r, err := c.VirtualMachine.ListVirtualMachines(p)
	if err != nil {
		t.Fatal(err)
	}
	if r.Count != 1 || r.VirtualMachines[0].Name != "web01" {
		t.Errorf("isvnf=false listed %d: %+v", r.Count, r.VirtualMachines)
	}

	np := c.Network.NewListNetworksParams()
	np.SetName("secnet")
	nr, err := c.Network.ListNetworks(np)
	if err != nil {
		t.Fatal(err)
	}
	if nr.Count != 2 || len(nr.Networks) != 1 {
		t.Errorf("by ignored name with page size 1: count %d, %d on the page; want 2 and 1", nr.Count, len(nr.Networks))
	}
	np = c.Network.NewListNetworksParams()
	np.SetKeyword("SECN")
	if nr, err = c.Network.ListNetworks(np); err != nil || nr.Count != 1 || nr.Networks[0].Id != w.secnet {
		t.Errorf("by keyword: %+v, %v", nr, err)
	}
}

// TestDeniedCommand: a role that may not run a command gets CloudStack's
// 401 for it, with a good signature.
func TestDeniedCommand(t *testing.T) {
	w := newWorld(t, csfake.Options{})
	w.srv.Deny("addNicToVirtualMachine")
	c := w.client(w.srv.SecretKey())
	_, err := c.VirtualMachine.AddNicToVirtualMachine(c.VirtualMachine.NewAddNicToVirtualMachineParams(w.secnet, w.vm))
	if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "is not available for user") {
		t.Errorf("denied command: %v", err)
	}
	if _, err := c.Nic.ListNics(c.Nic.NewListNicsParams(w.vm)); err != nil {
		t.Errorf("an allowed command: %v", err)
	}
}

// TestProjectScoping: as in CloudStack (apache/cloudstack#3343), a project's
// VM and network are not listed unless the call names the project.
func TestProjectScoping(t *testing.T) {
	w := newWorld(t, csfake.Options{})
	proj := w.srv.AddProject(csfake.Project{Name: "shop"})
	pnet := w.srv.AddNetwork(csfake.Network{Name: "shopnet", ZoneID: w.zone, CIDR: "10.70.0.0/24", Gateway: "10.70.0.1", Type: "Isolated", ProjectID: proj})
	pvm := w.srv.AddVM(csfake.VM{Name: "shop01", ZoneID: w.zone, ProjectID: proj, Nics: []csfake.Nic{{NetworkID: pnet, IP: "10.70.0.10", IsDefault: true}}})
	c := w.client(w.srv.SecretKey())

	vms := func(project, id string) []string {
		p := c.VirtualMachine.NewListVirtualMachinesParams()
		p.SetListall(true)
		if project != "" {
			p.SetProjectid(project)
		}
		if id != "" {
			p.SetId(id)
		}
		r, err := c.VirtualMachine.ListVirtualMachines(p)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, vm := range r.VirtualMachines {
			names = append(names, vm.Name)
		}
		return names
	}
	if got := vms("", ""); !cmp.Equal(got, []string{"web01"}) {
		t.Errorf("without projectid: %v, want only web01", got)
	}
	if got := vms("", pvm); len(got) != 0 {
		t.Errorf("project VM by id without projectid: %v, want none", got)
	}
	if got := vms(proj, pvm); !cmp.Equal(got, []string{"shop01"}) {
		t.Errorf("with projectid: %v", got)
	}
	if got := vms("-1", ""); !cmp.Equal(got, []string{"shop01"}) {
		t.Errorf("projectid=-1: %v", got)
	}
	np := c.Network.NewListNetworksParams()
	np.SetKeyword("shopnet")
	if r, err := c.Network.ListNetworks(np); err != nil || r.Count != 0 {
		t.Errorf("project network without projectid: %+v %v", r, err)
	}
	np.SetProjectid(proj)
	if r, err := c.Network.ListNetworks(np); err != nil || r.Count != 1 {
		t.Errorf("project network with projectid: %+v %v", r, err)
	}
	bad := c.VirtualMachine.NewListVirtualMachinesParams()
	bad.SetProjectid(csfake.NewUUID())
	if _, err := c.VirtualMachine.ListVirtualMachines(bad); err == nil || !strings.Contains(err.Error(), "431") {
		t.Errorf("unknown project: %v", err)
	}
}

// TestSecondaryIPJobs: addIpToNic and removeIpFromNic are async jobs.
func TestSecondaryIPJobs(t *testing.T) {
	w := newWorld(t, csfake.Options{JobPolls: 1})
	nic := w.srv.AttachNic(w.vm, csfake.Nic{NetworkID: w.secnet, IP: "10.51.0.10"})
	c := w.client(w.srv.SecretKey())
	p := c.Nic.NewAddIpToNicParams(nic)
	p.SetIpaddress("10.51.0.11")
	r, err := c.Nic.AddIpToNic(p)
	if err != nil || r.JobID == "" {
		t.Fatalf("addIpToNic: %+v %v", r, err)
	}
	poll := func(job string) *cs.QueryAsyncJobResultResponse {
		q, err := c.Asyncjob.QueryAsyncJobResult(c.Asyncjob.NewQueryAsyncJobResultParams(job))
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	if poll(r.JobID).Jobstatus != 0 {
		t.Fatal("job ran before its poll")
	}
	if vm, _ := w.srv.VM(w.vm); len(vm.Nics[1].Secondary) != 0 {
		t.Fatal("secondary IP added before the job ran")
	}
	if q := poll(r.JobID); q.Jobstatus != 1 || !strings.Contains(string(q.Jobresult), `"ipaddress":"10.51.0.11"`) {
		t.Fatalf("job: %d %s", q.Jobstatus, q.Jobresult)
	}
	vm, _ := w.srv.VM(w.vm)
	sec := vm.Nics[1].Secondary
	if len(sec) != 1 || sec[0].IP != "10.51.0.11" {
		t.Fatalf("secondary IPs: %+v", sec)
	}
	// The same address again: taken.
	r2, _ := c.Nic.AddIpToNic(p)
	poll(r2.JobID)
	if q := poll(r2.JobID); q.Jobstatus != 2 || q.Jobresultcode != 530 {
		t.Errorf("second add of the same IP: %d %d %s", q.Jobstatus, q.Jobresultcode, q.Jobresult)
	}
	rr, err := c.Nic.RemoveIpFromNic(c.Nic.NewRemoveIpFromNicParams(sec[0].ID))
	if err != nil {
		t.Fatal(err)
	}
	poll(rr.JobID)
	poll(rr.JobID)
	if vm, _ := w.srv.VM(w.vm); len(vm.Nics[1].Secondary) != 0 {
		t.Errorf("secondary IP left: %+v", vm.Nics[1].Secondary)
	}
}
