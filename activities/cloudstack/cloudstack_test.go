package cloudstack_test

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	cs "github.com/apache/cloudstack-go/v2/cloudstack"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/cloudstack"
	"github.com/rackflow/rackflow/secrets"
	"github.com/rackflow/rackflow/testsuite/csfake"
)

type world struct {
	srv                 *csfake.Server
	acts                *cloudstack.Activities
	target              cloudstack.Target
	zone, basic, zone2  string
	secnet2             string
	dmz, secnet, flat   string
	flat2               string
	web, old, twinA     string
	webDefaultNic       string
	heartbeats          []cloudstack.JobProgress
	mu                  sync.Mutex
	heartbeatDetailsSet any
}

const credRef = "cloudstack/rackflow"

func newWorld(t *testing.T, jobPolls int) *world {
	// A page size of 2 makes every list call page, as a CloudStack with
	// more VMs or networks than default.page.size does.
	srv := csfake.Start(t, csfake.Options{JobPolls: jobPolls, PageSize: 2})
	w := &world{srv: srv}
	w.zone = srv.AddZone(csfake.Zone{Name: "zone1", NetworkType: "Advanced"})
	w.zone2 = srv.AddZone(csfake.Zone{Name: "zone2", NetworkType: "Advanced"})
	w.basic = srv.AddZone(csfake.Zone{Name: "legacy", NetworkType: "Basic"})
	w.dmz = srv.AddNetwork(csfake.Network{Name: "dmz", ZoneID: w.zone, CIDR: "10.50.0.0/24", Gateway: "10.50.0.1", Type: "Isolated"})
	w.secnet = srv.AddNetwork(csfake.Network{Name: "secnet", ZoneID: w.zone, CIDR: "10.51.0.0/24", Gateway: "10.51.0.1"})
	w.flat = srv.AddNetwork(csfake.Network{Name: "flat", ZoneID: w.basic, CIDR: "10.60.0.0/24", Gateway: "10.60.0.1"})
	w.flat2 = srv.AddNetwork(csfake.Network{Name: "flat2", ZoneID: w.basic, CIDR: "10.61.0.0/24", Gateway: "10.61.0.1"})
	// Networks whose names contain "secnet" (listNetworks' keyword is a
	// substring match), and a "secnet" of the same name in another zone.
	srv.AddNetwork(csfake.Network{Name: "secnet-old", ZoneID: w.zone, CIDR: "10.53.0.0/24", Gateway: "10.53.0.1"})
	srv.AddNetwork(csfake.Network{Name: "old-secnet", ZoneID: w.zone, CIDR: "10.54.0.0/24", Gateway: "10.54.0.1"})
	w.secnet2 = srv.AddNetwork(csfake.Network{Name: "secnet", ZoneID: w.zone2, CIDR: "10.51.0.0/24", Gateway: "10.51.0.1"})
	w.webDefaultNic = csfake.NewUUID()
	w.web = srv.AddVM(csfake.VM{Name: "web01", ZoneID: w.zone, Nics: []csfake.Nic{{ID: w.webDefaultNic, NetworkID: w.dmz, MAC: "52:54:00:50:00:0a", IP: "10.50.0.10", IsDefault: true}}})
	// "web01-old" also matches CloudStack's substring name filter for "web01".
	srv.AddVM(csfake.VM{Name: "web01-old", ZoneID: w.zone, Nics: []csfake.Nic{{NetworkID: w.dmz, IP: "10.50.0.11", IsDefault: true}}})
	// A VNF appliance whose name contains "web01": cloudstack-go v2.19.0
	// fails to decode a list holding it.
	srv.AddVM(csfake.VM{Name: "web01-fw", ZoneID: w.zone, VNF: true, Nics: []csfake.Nic{{NetworkID: w.dmz, IP: "10.50.0.2", IsDefault: true}}})
	w.old = srv.AddVM(csfake.VM{Name: "old01", ZoneID: w.basic, Nics: []csfake.Nic{{NetworkID: w.flat, IP: "10.60.0.5", IsDefault: true}}})
	w.twinA = srv.AddVM(csfake.VM{Name: "twin", ZoneID: w.zone})
	srv.AddVM(csfake.VM{Name: "twin", ZoneID: w.zone})
	srv.PlanNic(w.web, w.secnet, csfake.NicPlan{MAC: "52:54:00:51:00:0a", IP: "10.51.0.10"})

	w.acts = &cloudstack.Activities{
		Secrets: secrets.Static{
			credRef:            {Username: srv.APIKey(), Password: srv.SecretKey(), Endpoints: []string{srv.URL()}},
			"cloudstack/bad":   {Username: srv.APIKey(), Password: "wrong-secret", Endpoints: []string{srv.URL()}},
			"cloudstack/nokey": {Password: srv.SecretKey(), Endpoints: []string{srv.URL()}},
		},
		PollInterval: 5 * time.Millisecond,
	}
	w.target = cloudstack.Target{URL: srv.URL(), Credential: credRef}
	return w
}

func testLogger() log.Logger {
	return log.NewStructuredLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
}

// env returns an activity environment that records heartbeats; details, if
// not nil, are what an earlier attempt heartbeated.
func (w *world) env(details any) *testsuite.TestActivityEnvironment {
	var ts testsuite.WorkflowTestSuite
	ts.SetLogger(testLogger())
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivity(w.acts)
	if details != nil {
		env.SetHeartbeatDetails(details)
	}
	env.SetOnActivityHeartbeatListener(func(_ *activity.Info, d converter.EncodedValues) {
		var p cloudstack.JobProgress
		if d.Get(&p) == nil {
			w.mu.Lock()
			w.heartbeats = append(w.heartbeats, p)
			w.mu.Unlock()
		}
	})
	return env
}

func run[T any](t *testing.T, env *testsuite.TestActivityEnvironment, fn any, in any) (T, error) {
	t.Helper()
	var out T
	v, err := env.ExecuteActivity(fn, in)
	if err != nil {
		return out, err
	}
	if err := v.Get(&out); err != nil {
		t.Fatal(err)
	}
	return out, nil
}

func appErr(t *testing.T, err error) *temporal.ApplicationError {
	t.Helper()
	var ae *temporal.ApplicationError
	if !errors.As(err, &ae) {
		t.Fatalf("want an ApplicationError, got %T: %v", err, err)
	}
	return ae
}

func TestLookupVM(t *testing.T) {
	w := newWorld(t, 0)
	webInfo := cloudstack.VMInfo{
		ID: w.web, Name: "web01", ZoneID: w.zone, ZoneNetworkType: "Advanced", State: "Running",
		Nics: []cloudstack.Nic{{ID: w.webDefaultNic, NetworkID: w.dmz, MAC: "52:54:00:50:00:0a", IP: "10.50.0.10", Netmask: "255.255.255.0", Gateway: "10.50.0.1", IsDefault: true}},
	}
	tests := map[string]struct {
		target   cloudstack.Target
		vm       string
		want     cloudstack.VMInfo
		errType  string
		retry    bool
		errMatch string
	}{
		"by name":              {vm: "web01", want: webInfo},
		"by id":                {vm: w.web, want: webInfo},
		"basic zone refused":   {vm: "old01", errType: cloudstack.ErrTypeBasicZone, errMatch: "Basic zone"},
		"no such name":         {vm: "nope", errType: cloudstack.ErrTypeNotFound},
		"no such id":           {vm: csfake.NewUUID(), errType: cloudstack.ErrTypeNotFound},
		"ambiguous name":       {vm: "twin", errType: cloudstack.ErrTypeAmbiguous},
		"empty":                {vm: " ", errType: activities.ErrTypeInvalidInput},
		"bad signature":        {vm: "web01", target: cloudstack.Target{URL: w.srv.URL(), Credential: "cloudstack/bad"}, errType: cloudstack.ErrTypeAuthFailed},
		"unknown credential":   {vm: "web01", target: cloudstack.Target{URL: w.srv.URL(), Credential: "cloudstack/none"}, errType: activities.ErrTypeCredentialNotFound},
		"credential lacks key": {vm: "web01", target: cloudstack.Target{URL: w.srv.URL(), Credential: "cloudstack/nokey"}, errType: activities.ErrTypeInvalidCredential},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if tc.target.URL == "" {
				tc.target = w.target
			}
			got, err := run[cloudstack.VMInfo](t, w.env(nil), w.acts.LookupVM, cloudstack.LookupVMInput{Target: tc.target, VM: tc.vm})
			if tc.errType == "" {
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(tc.want, got); diff != "" {
					t.Errorf("VMInfo (-want +got):\n%s", diff)
				}
				return
			}
			ae := appErr(t, err)
			if ae.Type() != tc.errType || !ae.NonRetryable() {
				t.Fatalf("want non-retryable %s, got %s (non-retryable %v): %v", tc.errType, ae.Type(), ae.NonRetryable(), err)
			}
			if !strings.Contains(err.Error(), tc.errMatch) {
				t.Errorf("error %q lacks %q", err, tc.errMatch)
			}
			if strings.Contains(err.Error(), w.srv.SecretKey()) {
				t.Errorf("error carries the secret key: %v", err)
			}
		})
	}
}

func TestLookupNetwork(t *testing.T) {
	w := newWorld(t, 0)
	want := cloudstack.NetworkInfo{ID: w.secnet, Name: "secnet", ZoneID: w.zone, CIDR: "10.51.0.0/24", Gateway: "10.51.0.1", Netmask: "255.255.255.0", Type: "Shared"}
	tests := map[string]struct {
		network, zone string
		want          cloudstack.NetworkInfo
		errType       string
	}{
		"by name in the VM's zone": {network: "secnet", zone: w.zone, want: want},
		"by id":                    {network: w.secnet, want: want},
		"by id and zone":           {network: w.secnet, zone: w.zone, want: want},
		"same name in two zones":   {network: "secnet", errType: cloudstack.ErrTypeAmbiguous},
		"partial name":             {network: "sec", zone: w.zone, errType: cloudstack.ErrTypeNotFound},
		"id in another zone":       {network: w.secnet2, zone: w.zone, errType: cloudstack.ErrTypeNotFound},
		"bad zone id":              {network: "secnet", zone: "zone1", errType: activities.ErrTypeInvalidInput},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := run[cloudstack.NetworkInfo](t, w.env(nil), w.acts.LookupNetwork, cloudstack.LookupNetworkInput{Target: w.target, Network: tc.network, ZoneID: tc.zone})
			if tc.errType != "" {
				if ae := appErr(t, err); ae.Type() != tc.errType || !ae.NonRetryable() {
					t.Fatalf("got %s (non-retryable %v), want non-retryable %s: %v", ae.Type(), ae.NonRetryable(), tc.errType, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("NetworkInfo (-want +got):\n%s", diff)
			}
		})
	}
	// By name: keyword, never name (which CloudStack before 4.22 ignores),
	// and every page read.
	var asked []string
	for _, r := range w.srv.Requests() {
		if strings.HasPrefix(r, "listNetworks ") && strings.Contains(r, "keyword=secnet ") {
			asked = append(asked, r)
		}
		if strings.Contains(r, " name=") && strings.HasPrefix(r, "listNetworks") {
			t.Errorf("listNetworks asked by name: %s", r)
		}
	}
	wantPages := []string{
		"listNetworks keyword=secnet listall=true page=1 pagesize=500 zoneid=" + w.zone,
		"listNetworks keyword=secnet listall=true page=1 pagesize=500",
	}
	if diff := cmp.Diff(wantPages, asked, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
		t.Errorf("listNetworks by keyword (-want +got):\n%s", diff)
	}
}

// TestListsPage: with default.page.size below the number of matches, a
// lookup reads every page.
func TestListsPage(t *testing.T) {
	w := newWorld(t, 0)
	// More VMs named web01-* than a page of 500 would hold would be slow
	// to build; instead the activity's own page size is what is checked:
	// a short page ends the listing, a full one asks for the next.
	for i := range cloudstack.PageSize + 1 {
		w.srv.AddNetwork(csfake.Network{Name: fmt.Sprintf("secnet-%03d", i), ZoneID: w.zone, CIDR: "10.55.0.0/24", Gateway: "10.55.0.1"})
	}
	got, err := run[cloudstack.NetworkInfo](t, w.env(nil), w.acts.LookupNetwork, cloudstack.LookupNetworkInput{Target: w.target, Network: "secnet", ZoneID: w.zone})
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != w.secnet {
		t.Errorf("found %s, want %s", got.ID, w.secnet)
	}
	if n := w.srv.Calls("listNetworks"); n != 2 {
		t.Errorf("listNetworks calls = %d, want 2 pages", n)
	}
}

// TestErrorClassification drives each CloudStack error code through an
// activity and checks the Temporal error a workflow would see.
func TestErrorClassification(t *testing.T) {
	tests := map[string]struct {
		code, csCode int
		text         string
		errType      string
		nonRetryable bool
		delay        time.Duration
	}{
		"param error":           {431, 4350, "Invalid parameter", cloudstack.ErrTypeInvalidParameter, true, 0},
		"internal":              {530, 4250, "Something broke", cloudstack.ErrTypeInternal, false, 0},
		"insufficient capacity": {533, 4325, "Unable to create a deployment", cloudstack.ErrTypeCapacity, false, cloudstack.CapacityRetryDelay},
		"resource in use":       {536, 4375, "VM is busy", cloudstack.ErrTypeInUse, false, cloudstack.InUseRetryDelay},
		"rule conflict":         {537, 4360, "conflict", cloudstack.ErrTypeConflict, true, 0},
		"account limit":         {532, 4280, "Maximum number of resources", cloudstack.ErrTypeLimit, true, 0},
		"unavailable":           {534, 4380, "router down", cloudstack.ErrTypeUnavailable, false, 0},
		// 530 is CloudRuntimeException: retried, unless its text is one a
		// retry meets again.
		"530 VM gone":            {530, 4250, "Virtual machine id does not exist", cloudstack.ErrTypeNotFound, true, 0},
		"530 duplicate MAC":      {530, 4250, "A NIC with this MAC address exists for network: 5f3c", cloudstack.ErrTypeConflict, true, 0},
		"530 duplicate hostname": {530, 4250, "Network secnet already has a vm with host name: web01", cloudstack.ErrTypeConflict, true, 0},
		"530 capacity":           {530, 4250, "Insufficient capacity when adding NIC to VM instance {...}: no IP", cloudstack.ErrTypeCapacity, true, 0},
		"530 permission":         {530, 4250, "Account rackflow does not have permission to operate within domain", cloudstack.ErrTypeAccount, true, 0},
		"401 bad signature":      {401, 0, "unable to verify user credentials and/or request signature", cloudstack.ErrTypeAuthFailed, true, 0},
		"401 role denies":        {401, 9999, "The given command 'addNicToVirtualMachine' either does not exist, is not available for user.", cloudstack.ErrTypeNotPermitted, true, 0},
	}
	w := newWorld(t, 0)
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			w.srv.FailNext("listVirtualMachines", tc.code, tc.csCode, tc.text)
			_, err := run[cloudstack.VMInfo](t, w.env(nil), w.acts.LookupVM, cloudstack.LookupVMInput{Target: w.target, VM: "web01"})
			ae := appErr(t, err)
			if ae.Type() != tc.errType || ae.NonRetryable() != tc.nonRetryable || ae.NextRetryDelay() != tc.delay {
				t.Errorf("got type %s non-retryable %v delay %s, want %s %v %s", ae.Type(), ae.NonRetryable(), ae.NextRetryDelay(), tc.errType, tc.nonRetryable, tc.delay)
			}
			var api cloudstack.APIError
			if err := ae.Details(&api); err != nil {
				t.Fatalf("no APIError in the details of %v: %v", err, err)
			}
			if diff := cmp.Diff(cloudstack.APIError{HTTPCode: tc.code, CSCode: tc.csCode, Text: tc.text}, api); diff != "" {
				t.Errorf("APIError (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseError(t *testing.T) {
	tests := map[string]struct {
		err  error
		want *cloudstack.APIError
	}{
		"cloudstack-go text": {
			err:  errors.New("CloudStack API error 431 (CSExceptionErrorCode: 4350): Invalid parameter id value=x"),
			want: &cloudstack.APIError{HTTPCode: 431, CSCode: 4350, Text: "Invalid parameter id value=x"},
		},
		"wrapped": {
			err:  errors.New("list nics: CloudStack API error 530 (CSExceptionErrorCode: 4250): A NIC already exists for VM:i-2-10-VM in network: n\nmore"),
			want: &cloudstack.APIError{HTTPCode: 530, CSCode: 4250, Text: "A NIC already exists for VM:i-2-10-VM in network: n\nmore"},
		},
		"typed":      {err: &cloudstack.APIError{HTTPCode: 533, Text: "x"}, want: &cloudstack.APIError{HTTPCode: 533, Text: "x"}},
		"not an API": {err: errors.New("dial tcp 127.0.0.1:1: connection refused")},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok := cloudstack.ParseError(tc.err)
			if ok != (tc.want != nil) {
				t.Fatalf("ok = %v", ok)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	if ae, _ := cloudstack.ParseError(tests["wrapped"].err); !ae.NicExists() || ae.Retryable() != true {
		t.Errorf("NIC-exists error: NicExists %v Retryable %v", ae.NicExists(), ae.Retryable())
	}
}

func (w *world) nics(t *testing.T, vm string) []csfake.Nic {
	t.Helper()
	v, ok := w.srv.VM(vm)
	if !ok {
		t.Fatalf("VM %s gone", vm)
	}
	return v.Nics
}

func TestEnsureNicAddsOnceAndReruns(t *testing.T) {
	w := newWorld(t, 3)
	in := cloudstack.EnsureNicInput{Target: w.target, VMID: w.web, NetworkID: w.secnet}
	res, err := run[cloudstack.NicResult](t, w.env(nil), w.acts.EnsureNic, in)
	if err != nil {
		t.Fatal(err)
	}
	nics := w.nics(t, w.web)
	if len(nics) != 2 {
		t.Fatalf("VM has %d NICs, want 2: %+v", len(nics), nics)
	}
	want := cloudstack.NicResult{
		Nic:   cloudstack.Nic{ID: nics[1].ID, NetworkID: w.secnet, MAC: "52:54:00:51:00:0a", IP: "10.51.0.10", Netmask: "255.255.255.0", Gateway: "10.51.0.1"},
		Added: true, JobID: res.JobID,
	}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Errorf("first run (-want +got):\n%s", diff)
	}
	if res.JobID == "" {
		t.Error("no job id")
	}
	// The job id is heartbeated as soon as the job exists (the SDK
	// throttles later heartbeats, so the test sees only some of them).
	if len(w.heartbeats) == 0 {
		t.Error("no heartbeat")
	}
	for _, hb := range w.heartbeats {
		if hb.JobID != res.JobID {
			t.Errorf("heartbeat %+v lacks job id %s", hb, res.JobID)
		}
	}

	again, err := run[cloudstack.NicResult](t, w.env(nil), w.acts.EnsureNic, in)
	if err != nil {
		t.Fatal(err)
	}
	want.Added, want.JobID = false, ""
	if diff := cmp.Diff(want, again); diff != "" {
		t.Errorf("re-run (-want +got):\n%s", diff)
	}
	if got := w.srv.Calls("addNicToVirtualMachine"); got != 1 {
		t.Errorf("addNicToVirtualMachine calls = %d, want 1", got)
	}
	if got := len(w.nics(t, w.web)); got != 2 {
		t.Errorf("VM has %d NICs after re-run, want 2", got)
	}
}

// TestEnsureNicResumesJob: an earlier attempt started the job and died; its
// heartbeat kept the job id. The retry must poll that job, not add again.
func TestEnsureNicResumesJob(t *testing.T) {
	w := newWorld(t, 2)
	c := cs.NewClient(w.srv.URL(), w.srv.APIKey(), w.srv.SecretKey(), false)
	r, err := c.VirtualMachine.AddNicToVirtualMachine(c.VirtualMachine.NewAddNicToVirtualMachineParams(w.secnet, w.web))
	if err != nil {
		t.Fatal(err)
	}
	if len(w.nics(t, w.web)) != 1 {
		t.Fatal("job ran before any poll")
	}
	res, err := run[cloudstack.NicResult](t, w.env(cloudstack.JobProgress{JobID: r.JobID, Polls: 1}), w.acts.EnsureNic,
		cloudstack.EnsureNicInput{Target: w.target, VMID: w.web, NetworkID: w.secnet})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Added || res.JobID != r.JobID || res.Nic.MAC != "52:54:00:51:00:0a" {
		t.Errorf("result %+v, want Added with job %s", res, r.JobID)
	}
	if got := w.srv.Calls("addNicToVirtualMachine"); got != 1 {
		t.Errorf("addNicToVirtualMachine calls = %d, want 1 (the crashed attempt's)", got)
	}
	if got := w.srv.Calls("listNics"); got != 1 {
		t.Errorf("listNics calls = %d, want 1 (read back after the job)", got)
	}
	if n := len(w.nics(t, w.web)); n != 2 {
		t.Errorf("VM has %d NICs, want 2", n)
	}
}

// TestEnsureNicSomeoneElseAdded: between our listNics and our job, another
// actor attaches a NIC on the network; CloudStack fails our job with "A NIC
// already exists", which is success without Added.
func TestEnsureNicSomeoneElseAdded(t *testing.T) {
	w := newWorld(t, 1)
	var theirs string
	w.srv.BeforeNext("addNicToVirtualMachine", func() {
		theirs = w.srv.AttachNic(w.web, csfake.Nic{NetworkID: w.secnet, MAC: "52:54:00:51:00:99", IP: "10.51.0.99"})
	})
	res, err := run[cloudstack.NicResult](t, w.env(nil), w.acts.EnsureNic, cloudstack.EnsureNicInput{Target: w.target, VMID: w.web, NetworkID: w.secnet})
	if err != nil {
		t.Fatal(err)
	}
	if res.Added || res.Nic.ID != theirs || res.Nic.IP != "10.51.0.99" {
		t.Errorf("result %+v, want their NIC %s, not Added", res, theirs)
	}
	if n := len(w.nics(t, w.web)); n != 2 {
		t.Errorf("VM has %d NICs, want 2", n)
	}
}

func TestEnsureNicErrors(t *testing.T) {
	w := newWorld(t, 0)
	tests := map[string]struct {
		in      cloudstack.EnsureNicInput
		prepare func()
		errType string
		retry   bool
	}{
		"vm not an id":     {in: cloudstack.EnsureNicInput{VMID: "web01", NetworkID: w.secnet}, errType: activities.ErrTypeInvalidInput},
		"bad ip":           {in: cloudstack.EnsureNicInput{VMID: w.web, NetworkID: w.secnet, IP: "10.51.0.300"}, errType: activities.ErrTypeInvalidInput},
		"unknown network":  {in: cloudstack.EnsureNicInput{VMID: w.web, NetworkID: csfake.NewUUID()}, errType: cloudstack.ErrTypeInvalidParameter},
		"basic zone (job)": {in: cloudstack.EnsureNicInput{VMID: w.old, NetworkID: w.flat2}, errType: cloudstack.ErrTypeBasicZone},
		"capacity (job)": {
			in:      cloudstack.EnsureNicInput{VMID: w.web, NetworkID: w.secnet},
			prepare: func() { w.srv.FailNextJob("addNicToVirtualMachine", 533, "Unable to acquire Guest IP address") },
			errType: cloudstack.ErrTypeCapacity, retry: true,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if tc.prepare != nil {
				tc.prepare()
			}
			tc.in.Target = w.target
			_, err := run[cloudstack.NicResult](t, w.env(nil), w.acts.EnsureNic, tc.in)
			ae := appErr(t, err)
			if ae.Type() != tc.errType || ae.NonRetryable() == tc.retry {
				t.Errorf("got %s (non-retryable %v), want %s retryable=%v: %v", ae.Type(), ae.NonRetryable(), tc.errType, tc.retry, err)
			}
		})
	}
	if n := len(w.nics(t, w.web)); n != 1 {
		t.Errorf("failed calls left web01 with %d NICs, want 1", n)
	}
}

func TestRemoveNic(t *testing.T) {
	w := newWorld(t, 2)
	added, err := run[cloudstack.NicResult](t, w.env(nil), w.acts.EnsureNic, cloudstack.EnsureNicInput{Target: w.target, VMID: w.web, NetworkID: w.secnet})
	if err != nil {
		t.Fatal(err)
	}
	in := cloudstack.RemoveNicInput{Target: w.target, VMID: w.web, NicID: added.Nic.ID}
	if _, err := w.env(nil).ExecuteActivity(w.acts.RemoveNic, in); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{w.webDefaultNic}, nicIDs(w.nics(t, w.web))); diff != "" {
		t.Errorf("NICs after removal (-want +got):\n%s", diff)
	}
	// Again: absent is success, and nothing is asked of CloudStack.
	if _, err := w.env(nil).ExecuteActivity(w.acts.RemoveNic, in); err != nil {
		t.Fatalf("second removal: %v", err)
	}
	if got := w.srv.Calls("removeNicFromVirtualMachine"); got != 1 {
		t.Errorf("removeNicFromVirtualMachine calls = %d, want 1", got)
	}
	// The default NIC is never removed: refused before CloudStack is asked.
	removes := w.srv.Calls("removeNicFromVirtualMachine")
	_, err = w.env(nil).ExecuteActivity(w.acts.RemoveNic, cloudstack.RemoveNicInput{Target: w.target, VMID: w.web, NicID: w.webDefaultNic})
	if ae := appErr(t, err); ae.Type() != cloudstack.ErrTypeDefaultNetwork || !ae.NonRetryable() || !strings.Contains(err.Error(), "default NIC") {
		t.Errorf("removing the default NIC: %v", err)
	}
	if w.srv.Calls("removeNicFromVirtualMachine") != removes {
		t.Error("removeNicFromVirtualMachine was called for the default NIC")
	}
	// A VM that is gone has no NIC left to remove.
	if _, err := w.env(nil).ExecuteActivity(w.acts.RemoveNic, cloudstack.RemoveNicInput{Target: w.target, VMID: csfake.NewUUID(), NicID: csfake.NewUUID()}); err != nil {
		t.Errorf("removal from a vanished VM: %v", err)
	}
}

func TestRemoveNicResumesJob(t *testing.T) {
	w := newWorld(t, 2)
	nic := w.srv.AttachNic(w.web, csfake.Nic{NetworkID: w.secnet, IP: "10.51.0.10"})
	c := cs.NewClient(w.srv.URL(), w.srv.APIKey(), w.srv.SecretKey(), false)
	r, err := c.VirtualMachine.RemoveNicFromVirtualMachine(c.VirtualMachine.NewRemoveNicFromVirtualMachineParams(nic, w.web))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.env(cloudstack.JobProgress{JobID: r.JobID}).ExecuteActivity(w.acts.RemoveNic, cloudstack.RemoveNicInput{Target: w.target, VMID: w.web, NicID: nic}); err != nil {
		t.Fatal(err)
	}
	if got := w.srv.Calls("removeNicFromVirtualMachine"); got != 1 {
		t.Errorf("removeNicFromVirtualMachine calls = %d, want 1", got)
	}
	if diff := cmp.Diff([]string{w.webDefaultNic}, nicIDs(w.nics(t, w.web))); diff != "" {
		t.Errorf("NICs (-want +got):\n%s", diff)
	}
}

func nicIDs(ns []csfake.Nic) []string {
	var ids []string
	for _, n := range ns {
		ids = append(ids, n.ID)
	}
	return ids
}

// TestRoleDeniedSaysNotPermitted: a key whose role may not add NICs is
// told so, not that its credentials are bad.
func TestRoleDeniedSaysNotPermitted(t *testing.T) {
	w := newWorld(t, 0)
	w.srv.Deny("addNicToVirtualMachine")
	_, err := run[cloudstack.NicResult](t, w.env(nil), w.acts.EnsureNic, cloudstack.EnsureNicInput{Target: w.target, VMID: w.web, NetworkID: w.secnet})
	ae := appErr(t, err)
	if ae.Type() != cloudstack.ErrTypeNotPermitted || !ae.NonRetryable() {
		t.Fatalf("got %s (non-retryable %v): %v", ae.Type(), ae.NonRetryable(), err)
	}
	if !strings.Contains(ae.Error(), "not permitted") || strings.Contains(ae.Error(), "bad credentials") {
		t.Errorf("message %q should say not permitted, not bad credentials", ae.Error())
	}
	_, err = run[cloudstack.VMInfo](t, w.env(nil), w.acts.LookupVM, cloudstack.LookupVMInput{Target: cloudstack.Target{URL: w.srv.URL(), Credential: "cloudstack/bad"}, VM: "web01"})
	if ae := appErr(t, err); ae.Type() != cloudstack.ErrTypeAuthFailed || !strings.Contains(ae.Error(), "bad credentials") {
		t.Errorf("bad signature: %v", err)
	}
}

// TestEnsureNicRefuses: no NIC is added to a VM that is not Running, none
// is "ensured" on the VM's default network, and a VM expunged while the
// job runs is reported gone, not retried.
func TestEnsureNicRefuses(t *testing.T) {
	tests := map[string]struct {
		prepare   func(w *world)
		network   func(w *world) string
		errType   string
		retryable bool
		msg       string
	}{
		"stopped":         {prepare: func(w *world) { w.srv.SetVMState(w.web, "Stopped") }, errType: cloudstack.ErrTypeVMNotRunning, msg: "is Stopped: start it first"},
		"starting":        {prepare: func(w *world) { w.srv.SetVMState(w.web, "Starting") }, errType: cloudstack.ErrTypeVMNotRunning, retryable: true, msg: "is Starting"},
		"default network": {network: func(w *world) string { return w.dmz }, errType: cloudstack.ErrTypeDefaultNetwork, msg: "default network"},
		"expunged during the job": {
			prepare: func(w *world) { w.srv.BeforeNext("queryAsyncJobResult", func() { w.srv.ExpungeVM(w.web) }) },
			errType: cloudstack.ErrTypeNotFound, msg: "Virtual machine id does not exist",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t, 0)
			if tc.prepare != nil {
				tc.prepare(w)
			}
			netID := w.secnet
			if tc.network != nil {
				netID = tc.network(w)
			}
			_, err := run[cloudstack.NicResult](t, w.env(nil), w.acts.EnsureNic, cloudstack.EnsureNicInput{Target: w.target, VMID: w.web, NetworkID: netID})
			ae := appErr(t, err)
			if ae.Type() != tc.errType || ae.NonRetryable() == tc.retryable || !strings.Contains(ae.Error(), tc.msg) {
				t.Fatalf("got %s (non-retryable %v): %v; want %s retryable=%v saying %q", ae.Type(), ae.NonRetryable(), err, tc.errType, tc.retryable, tc.msg)
			}
			if name != "expunged during the job" && w.srv.Calls("addNicToVirtualMachine") != 0 {
				t.Error("addNicToVirtualMachine was called")
			}
		})
	}
}

// TestRemoveNicOfExpungedVM: a VM expunged while the removal job is
// pending has no NIC left; that is success.
func TestRemoveNicOfExpungedVM(t *testing.T) {
	w := newWorld(t, 1)
	nic := w.srv.AttachNic(w.web, csfake.Nic{NetworkID: w.secnet, IP: "10.51.0.10"})
	w.srv.BeforeNext("queryAsyncJobResult", func() { w.srv.ExpungeVM(w.web) })
	if _, err := w.env(nil).ExecuteActivity(w.acts.RemoveNic, cloudstack.RemoveNicInput{Target: w.target, VMID: w.web, NicID: nic}); err != nil {
		t.Fatal(err)
	}
}

// TestProjectResources: a VM and network of a CloudStack project are found,
// and a NIC added, only when the target names the project; every list call
// carries projectid then. Without it CloudStack (and the fake) lists none
// of the project's resources.
func TestProjectResources(t *testing.T) {
	w := newWorld(t, 1)
	proj := w.srv.AddProject(csfake.Project{Name: "shop"})
	pnet := w.srv.AddNetwork(csfake.Network{Name: "shopsec", ZoneID: w.zone, CIDR: "10.71.0.0/24", Gateway: "10.71.0.1", Type: "Isolated", ProjectID: proj})
	pvm := w.srv.AddVM(csfake.VM{Name: "shop01", ZoneID: w.zone, ProjectID: proj, Nics: []csfake.Nic{{NetworkID: w.dmz, IP: "10.50.0.30", IsDefault: true}}})

	_, err := run[cloudstack.VMInfo](t, w.env(nil), w.acts.LookupVM, cloudstack.LookupVMInput{Target: w.target, VM: "shop01"})
	if ae := appErr(t, err); ae.Type() != cloudstack.ErrTypeNotFound {
		t.Errorf("project VM without the project: %v, want %s", err, cloudstack.ErrTypeNotFound)
	}

	pt := w.target
	pt.ProjectID = proj
	before := len(w.srv.Requests())
	vm, err := run[cloudstack.VMInfo](t, w.env(nil), w.acts.LookupVM, cloudstack.LookupVMInput{Target: pt, VM: "shop01"})
	if err != nil || vm.ID != pvm {
		t.Fatalf("project VM by name: %+v %v", vm, err)
	}
	n, err := run[cloudstack.NetworkInfo](t, w.env(nil), w.acts.LookupNetwork, cloudstack.LookupNetworkInput{Target: pt, Network: "shopsec", ZoneID: w.zone})
	if err != nil || n.ID != pnet {
		t.Fatalf("project network by name: %+v %v", n, err)
	}
	res, err := run[cloudstack.NicResult](t, w.env(nil), w.acts.EnsureNic, cloudstack.EnsureNicInput{Target: pt, VMID: pvm, NetworkID: pnet})
	if err != nil || !res.Added {
		t.Fatalf("NIC on the project VM: %+v %v", res, err)
	}
	lists := 0
	for _, r := range w.srv.Requests()[before:] {
		if strings.HasPrefix(r, "listVirtualMachines ") || strings.HasPrefix(r, "listNetworks ") {
			lists++
			if !strings.Contains(r, " projectid="+proj) {
				t.Errorf("list call without the project: %s", r)
			}
		}
	}
	if lists != 3 { // lookup VM, lookup network, the Running check
		t.Errorf("%d list calls, want 3", lists)
	}

	bad := w.target
	bad.ProjectID = "shop"
	_, err = run[cloudstack.VMInfo](t, w.env(nil), w.acts.LookupVM, cloudstack.LookupVMInput{Target: bad, VM: "shop01"})
	if ae := appErr(t, err); ae.Type() != activities.ErrTypeInvalidInput || !ae.NonRetryable() {
		t.Errorf("project that is no id: %v", err)
	}
}

// TestSecondaryIPs: the NIC gets the asked secondary addresses through
// addIpToNic jobs; a re-run adds none; a retried attempt resumes the job its
// predecessor started and still reports the address as added; removal
// takes away exactly those addresses.
func TestSecondaryIPs(t *testing.T) {
	w := newWorld(t, 2)
	nic := w.srv.AttachNic(w.web, csfake.Nic{NetworkID: w.secnet, MAC: "52:54:00:51:00:0a", IP: "10.51.0.10"})
	in := cloudstack.SecondaryIPsInput{Target: w.target, VMID: w.web, NicID: nic, IPs: []string{"10.51.0.11", "10.51.0.12"}}
	secondary := func() []string {
		var ips []string
		for _, n := range w.nics(t, w.web) {
			for _, x := range n.Secondary {
				ips = append(ips, x.IP)
			}
		}
		return ips
	}

	res, err := run[cloudstack.SecondaryIPsResult](t, w.env(nil), w.acts.EnsureSecondaryIPs, in)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"10.51.0.11", "10.51.0.12"}, secondary()); diff != "" {
		t.Errorf("secondary IPs (-want +got):\n%s", diff)
	}
	if len(res.Added) != 2 || res.Added[0].IP != "10.51.0.11" || res.Added[0].ID == "" {
		t.Errorf("added: %+v", res.Added)
	}
	again, err := run[cloudstack.SecondaryIPsResult](t, w.env(nil), w.acts.EnsureSecondaryIPs, in)
	if err != nil || len(again.Added) != 0 || w.srv.Calls("addIpToNic") != 2 {
		t.Errorf("re-run: %+v %v, %d addIpToNic calls", again, err, w.srv.Calls("addIpToNic"))
	}

	if _, err := w.env(nil).ExecuteActivity(w.acts.RemoveSecondaryIPs, in); err != nil {
		t.Fatal(err)
	}
	if got := secondary(); len(got) != 0 {
		t.Errorf("left after removal: %v", got)
	}
	if _, err := w.env(nil).ExecuteActivity(w.acts.RemoveSecondaryIPs, in); err != nil || w.srv.Calls("removeIpFromNic") != 2 {
		t.Errorf("second removal: %v, %d removeIpFromNic calls", err, w.srv.Calls("removeIpFromNic"))
	}

	// An attempt died after starting the job for the first address.
	c := cs.NewClient(w.srv.URL(), w.srv.APIKey(), w.srv.SecretKey(), false)
	p := c.Nic.NewAddIpToNicParams(nic)
	p.SetIpaddress("10.51.0.11")
	r, err := c.Nic.AddIpToNic(p)
	if err != nil {
		t.Fatal(err)
	}
	type progress struct {
		JobID string `json:"job_id"`
		IP    string `json:"ip"`
	}
	res, err = run[cloudstack.SecondaryIPsResult](t, w.env(progress{JobID: r.JobID, IP: "10.51.0.11"}), w.acts.EnsureSecondaryIPs, in)
	if err != nil {
		t.Fatal(err)
	}
	var added []string
	for _, x := range res.Added {
		added = append(added, x.IP)
	}
	if diff := cmp.Diff([]string{"10.51.0.11", "10.51.0.12"}, added); diff != "" {
		t.Errorf("added after resuming (-want +got):\n%s", diff)
	}
	if n := w.srv.Calls("addIpToNic"); n != 4 {
		t.Errorf("addIpToNic calls = %d, want 4 (2, the dead attempt's, 1 more)", n)
	}
}
