// Package csfake is a strict fake of the CloudStack API for tests, served on
// loopback so the real cloudstack-go client talks to it over HTTP. It checks
// every request's signature as CloudStack does (HMAC-SHA1 over the sorted,
// lower-cased query string), answers with CloudStack's error codes and
// bodies, runs addNicToVirtualMachine and removeNicFromVirtualMachine as
// async jobs that stay pending for a set number of polls, and keeps zones,
// networks, VMs and their NICs so a test can assert the end state.
//
// It is stricter than CloudStack, on purpose: an unknown command or an
// unknown parameter fails loudly (431) instead of being ignored, so a client
// that sends what it did not mean to is caught. It implements only the
// commands rackflow uses (listVirtualMachines, listNetworks, listZones,
// listNics, addNicToVirtualMachine, removeNicFromVirtualMachine, addIpToNic,
// removeIpFromNic, queryAsyncJobResult). It is not a CloudStack simulator.
// Projects are scoped as CloudStack scopes them: a project's VMs and
// networks are listed only when the call names the project (projectid, or
// -1 for all projects), never by default.
//
// Where CloudStack is lax it is lax too, since a client that relies on the
// strict reading would break on the real thing: listNetworks ignores "name"
// (as CloudStack before 4.22 does), lists are paged (default.page.size,
// Options.PageSize), and listVirtualMachines returns VNF appliances, whose
// vnfnics are objects, unless isvnf=false.
package csfake

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// Zone is a CloudStack zone.
type Zone struct {
	ID   string
	Name string
	// NetworkType is "Advanced" or "Basic".
	NetworkType string
}

// Project is a CloudStack project. Its VMs and networks are listed only
// when a list call names it (projectid), as CloudStack does
// (apache/cloudstack#3343): without projectid a project VM is not found.
type Project struct {
	ID   string
	Name string
}

// Network is a guest network.
type Network struct {
	ID     string
	Name   string
	ZoneID string
	// ProjectID makes it a project's network; "" is the caller's account's
	// (or a shared network, which every list shows).
	ProjectID string
	// CIDR is the guest CIDR, e.g. "10.51.0.0/24".
	CIDR    string
	Gateway string
	// Type is "Isolated", "Shared" or "L2"; "Shared" when empty.
	Type string
}

// Nic is a VM's NIC.
type Nic struct {
	ID        string
	NetworkID string
	MAC       string
	IP        string
	IsDefault bool
	DeviceID  int
	// Secondary are its secondary IPs (addIpToNic).
	Secondary []SecondaryIP
}

// SecondaryIP is a NIC's secondary address, with the id removeIpFromNic
// takes.
type SecondaryIP struct {
	ID string
	IP string
}

// VM is a user VM.
type VM struct {
	ID   string
	Name string
	// InstanceName is CloudStack's "i-2-10-VM"; made up when empty.
	InstanceName string
	ZoneID       string
	// ProjectID puts the VM in a project: listed only with that projectid.
	ProjectID string
	// State is "Running" when empty.
	State string
	Nics  []Nic
	// VNF makes it a VNF appliance (CloudStack 4.19+): listed with
	// vnfnics and vnfdetails, and left out by isvnf=false.
	VNF bool
}

// Options configures a Server. The zero value listens on a free
// 127.0.0.1 port with a fresh random key pair.
type Options struct {
	// Addr to listen on; "127.0.0.1:0" when empty. Keep it on loopback.
	Addr string
	// APIKey and SecretKey are the one key pair accepted; random when empty.
	APIKey    string
	SecretKey string
	// JobPolls is how many queryAsyncJobResult calls see a job pending
	// before it runs; 0 runs it at the first poll.
	JobPolls int
	// PageSize is CloudStack's default.page.size, the page length of a
	// list call that gives no pagesize; 500 when zero.
	PageSize int
}

// Server is the fake. Its methods are safe for concurrent use.
type Server struct {
	opts Options
	l    net.Listener

	mu       sync.Mutex
	zones    map[string]*Zone
	projects map[string]*Project
	networks map[string]*Network
	vms      map[string]*VM
	vmOrder  []string
	jobs     map[string]*job
	plans    map[[2]string]NicPlan
	calls    map[string]int
	failNext map[string]*apiError
	failJob  map[string]*apiError
	before   map[string]func()
	denied   map[string]bool
	hits     int
	nextMAC  int
	nextInst int
	reqLog   []string
}

// NicPlan fixes the MAC and IP of a NIC the fake will add, so they match a
// test lab's interfaces.
type NicPlan struct {
	MAC string
	IP  string
}

// New listens on opts.Addr; call Serve to answer.
func New(opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.APIKey == "" {
		opts.APIKey = "fake-" + randHex(16)
	}
	if opts.SecretKey == "" {
		opts.SecretKey = randHex(32)
	}
	if opts.PageSize <= 0 {
		opts.PageSize = 500
	}
	l, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("csfake: listen: %w", err)
	}
	return &Server{
		opts: opts, l: l,
		zones: map[string]*Zone{}, projects: map[string]*Project{}, networks: map[string]*Network{}, vms: map[string]*VM{},
		jobs: map[string]*job{}, plans: map[[2]string]NicPlan{}, calls: map[string]int{},
		failNext: map[string]*apiError{}, failJob: map[string]*apiError{}, before: map[string]func(){},
		denied: map[string]bool{},
	}, nil
}

// Serve answers API requests until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	defer stop()
	err := srv.Serve(s.l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Start starts a Server for a test and stops it when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("csfake: %v", err)
		}
	})
	return s
}

// URL is the API endpoint, "http://127.0.0.1:PORT/client/api".
func (s *Server) URL() string { return "http://" + s.l.Addr().String() + "/client/api" }

// APIKey and SecretKey are the accepted key pair.
func (s *Server) APIKey() string    { return s.opts.APIKey }
func (s *Server) SecretKey() string { return s.opts.SecretKey }

// AddZone adds a zone and returns its id (made up when z.ID is empty).
func (s *Server) AddZone(z Zone) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if z.ID == "" {
		z.ID = NewUUID()
	}
	s.zones[z.ID] = &z
	return z.ID
}

// AddProject adds a project and returns its id.
func (s *Server) AddProject(p Project) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.ID == "" {
		p.ID = NewUUID()
	}
	s.projects[p.ID] = &p
	return p.ID
}

// AddNetwork adds a network and returns its id.
func (s *Server) AddNetwork(n Network) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n.ID == "" {
		n.ID = NewUUID()
	}
	if n.Type == "" {
		n.Type = "Shared"
	}
	if _, err := netip.ParsePrefix(n.CIDR); err != nil {
		panic(fmt.Sprintf("csfake: network %s: bad CIDR %q", n.Name, n.CIDR))
	}
	s.networks[n.ID] = &n
	return n.ID
}

// AddVM adds a VM and returns its id. NICs without id or MAC get one.
func (s *Server) AddVM(vm VM) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if vm.ID == "" {
		vm.ID = NewUUID()
	}
	if vm.State == "" {
		vm.State = "Running"
	}
	s.nextInst++
	if vm.InstanceName == "" {
		vm.InstanceName = fmt.Sprintf("i-2-%d-VM", 100+s.nextInst)
	}
	vm.Nics = append([]Nic(nil), vm.Nics...)
	for i := range vm.Nics {
		n := &vm.Nics[i]
		if n.ID == "" {
			n.ID = NewUUID()
		}
		if n.MAC == "" {
			n.MAC = s.newMAC()
		}
		n.MAC = strings.ToLower(n.MAC)
		n.DeviceID = i
	}
	s.vms[vm.ID] = &vm
	s.vmOrder = append(s.vmOrder, vm.ID)
	return vm.ID
}

// PlanNic fixes MAC and IP (either may be empty) of the NIC that
// addNicToVirtualMachine will add to vmID on networkID.
func (s *Server) PlanNic(vmID, networkID string, p NicPlan) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p.MAC = strings.ToLower(p.MAC)
	s.plans[[2]string{vmID, networkID}] = p
}

// VM returns a copy of the VM's current state.
func (s *Server) VM(id string) (VM, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	vm, ok := s.vms[id]
	if !ok {
		return VM{}, false
	}
	c := *vm
	c.Nics = append([]Nic(nil), vm.Nics...)
	for i := range c.Nics {
		c.Nics[i].Secondary = append([]SecondaryIP(nil), c.Nics[i].Secondary...)
	}
	return c, true
}

// SetJobPolls changes Options.JobPolls for jobs started from now on.
func (s *Server) SetJobPolls(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.JobPolls = n
}

// Calls is how many authenticated requests of command arrived.
func (s *Server) Calls(command string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[command]
}

// Requests lists "command param=value ..." of every authenticated request
// in order (signature, apiKey and expires left out).
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.reqLog...)
}

// FailNext makes the next request of command fail with CloudStack error
// code (e.g. 530), csCode (e.g. 4250) and text, before it has any effect.
func (s *Server) FailNext(command string, code, csCode int, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext[command] = &apiError{Code: code, CSCode: csCode, Text: text}
}

// FailNextJob makes the next async job of command fail, when it runs, with
// code and text, without effect.
func (s *Server) FailNextJob(command string, code int, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failJob[command] = &apiError{Code: code, Text: text}
}

// PendingJobs is how many jobs have not run yet.
func (s *Server) PendingJobs() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, j := range s.jobs {
		if j.status == 0 {
			n++
		}
	}
	return n
}

func (s *Server) newMAC() string {
	s.nextMAC++
	return fmt.Sprintf("02:00:5e:%02x:%02x:%02x", (s.nextMAC>>16)&0xff, (s.nextMAC>>8)&0xff, s.nextMAC&0xff)
}

// NewUUID returns a random version 4 UUID, the form of CloudStack ids.
func NewUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func randHex(n int) string {
	b := make([]byte, n/2)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

// AttachNic adds a NIC to a VM at once, as another actor would, and returns
// its id.
func (s *Server) AttachNic(vmID string, n Nic) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	vm := s.vms[vmID]
	if vm == nil {
		panic("csfake: AttachNic: no VM " + vmID)
	}
	if n.ID == "" {
		n.ID = NewUUID()
	}
	if n.MAC == "" {
		n.MAC = s.newMAC()
	}
	n.MAC = strings.ToLower(n.MAC)
	n.DeviceID = len(vm.Nics)
	vm.Nics = append(vm.Nics, n)
	return n.ID
}

// BeforeNext runs fn once, when the next authenticated request of command
// arrives and before it is handled: a way to let another actor act between
// two of the client's calls.
func (s *Server) BeforeNext(command string, fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.before[command] = fn
}

// Deny makes the key's role refuse command, as CloudStack's role-based API
// checker does: 401 "either does not exist, is not available for user",
// with a valid signature.
func (s *Server) Deny(command string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denied[command] = true
}

// Hits is how many HTTP requests arrived, signed or not, well-formed or not.
func (s *Server) Hits() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits
}

// SetVMState sets a VM's state ("Stopped", "Running"...).
func (s *Server) SetVMState(id, state string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.vms[id].State = state
}

// ExpungeVM removes a VM, as an expunge would: later commands naming it
// fail as CloudStack's do.
func (s *Server) ExpungeVM(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.vms, id)
}
