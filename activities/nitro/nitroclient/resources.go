package nitroclient

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Resource is a typed NITRO object or binding: its JSON is the payload and
// ResourceType is the NITRO resource name used in URLs and as the JSON key.
type Resource interface {
	ResourceType() string
}

// Int is a NITRO number. NITRO answers some numbers as JSON strings ("1")
// and others as numbers; Int reads both and always writes a number.
type Int int

// UnmarshalJSON implements json.Unmarshaler.
func (i *Int) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*i = 0
		return nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("nitro number %s: %w", b, err)
	}
	*i = Int(n)
	return nil
}

// MarshalJSON implements json.Marshaler.
func (i Int) MarshalJSON() ([]byte, error) { return json.Marshal(int64(i)) }

// States NITRO reports in the read-only fields below (NITRO reference,
// "Possible values").
const (
	// StateEnabled and StateDisabled are the admin state ("state") of a
	// servicegroup, a member or a vserver.
	StateEnabled  = "ENABLED"
	StateDisabled = "DISABLED"
	// CurStateUp, CurStateDown and CurStateOutOfService are an lbvserver's
	// "curstate": DOWN until a bound member's monitor succeeds.
	CurStateUp           = "UP"
	CurStateDown         = "DOWN"
	CurStateOutOfService = "OUT OF SERVICE"
)

// The structs below carry the fields rackflow writes and a few it reads
// back. Fields marked read-only are omitted on write because the zero value
// is empty; never send an object read by Get back unchanged.

// ServiceGroup is a "servicegroup": a pool of backend members of one service type.
type ServiceGroup struct {
	Name        string `json:"servicegroupname"`
	ServiceType string `json:"servicetype,omitempty"`
	Comment     string `json:"comment,omitempty"`
	// State is read back: StateEnabled or StateDisabled.
	State string `json:"state,omitempty"`
}

func (ServiceGroup) ResourceType() string { return "servicegroup" }

// ServiceGroupMember is a "servicegroup_servicegroupmember_binding": one
// backend IP and port in a service group.
type ServiceGroupMember struct {
	ServiceGroup string `json:"servicegroupname"`
	IP           string `json:"ip,omitempty"`
	Port         Int    `json:"port,omitempty"`
	Weight       Int    `json:"weight,omitempty"`
	// ServerName is read-only here: NetScaler names the implicit server
	// object after the IP.
	ServerName string `json:"servername,omitempty"`
}

func (ServiceGroupMember) ResourceType() string { return "servicegroup_servicegroupmember_binding" }

// LBMonitor is an "lbmonitor".
type LBMonitor struct {
	Name        string `json:"monitorname"`
	Type        string `json:"type,omitempty"`
	Interval    Int    `json:"interval,omitempty"`
	RespTimeout Int    `json:"resptimeout,omitempty"`
	Retries     Int    `json:"retries,omitempty"`
	DestPort    Int    `json:"destport,omitempty"`
}

func (LBMonitor) ResourceType() string { return "lbmonitor" }

// ServiceGroupMonitorBinding is a "servicegroup_lbmonitor_binding".
type ServiceGroupMonitorBinding struct {
	ServiceGroup string `json:"servicegroupname"`
	Monitor      string `json:"monitor_name,omitempty"`
	Weight       Int    `json:"weight,omitempty"`
}

func (ServiceGroupMonitorBinding) ResourceType() string { return "servicegroup_lbmonitor_binding" }

// LBVServer is an "lbvserver": the VIP and port clients connect to.
type LBVServer struct {
	Name        string `json:"name"`
	ServiceType string `json:"servicetype,omitempty"`
	IPv46       string `json:"ipv46,omitempty"`
	Port        Int    `json:"port,omitempty"`
	LBMethod    string `json:"lbmethod,omitempty"`
	Comment     string `json:"comment,omitempty"`
	// CurState is read-only: CurStateUp, CurStateDown or CurStateOutOfService.
	CurState string `json:"curstate,omitempty"`
}

func (LBVServer) ResourceType() string { return "lbvserver" }

// LBVServerServiceGroupBinding is an "lbvserver_servicegroup_binding".
type LBVServerServiceGroupBinding struct {
	VServer      string `json:"name"`
	ServiceGroup string `json:"servicegroupname,omitempty"`
}

func (LBVServerServiceGroupBinding) ResourceType() string { return "lbvserver_servicegroup_binding" }

// INAT is an "inat": inbound NAT of a public IP to a private one. It has no
// comment field.
type INAT struct {
	Name      string `json:"name"`
	PublicIP  string `json:"publicip,omitempty"`
	PrivateIP string `json:"privateip,omitempty"`
	TCPProxy  string `json:"tcpproxy,omitempty"`
	USIP      string `json:"usip,omitempty"`
	USNIP     string `json:"usnip,omitempty"`
}

func (INAT) ResourceType() string { return "inat" }

// RNAT is an "rnat" in the named form of NetScaler 12.1 and later: a rule
// matching traffic from Network/Netmask (or an ACL), whose NAT IPs are bound
// separately as RNATNSIPBinding ("bind rnat NAME NATIP"). The pre-12.1 form
// (unnamed, "set rnat NETWORK NETMASK -natIP") is not supported. It has no
// comment field.
type RNAT struct {
	Name    string `json:"name"`
	Network string `json:"network,omitempty"`
	Netmask string `json:"netmask,omitempty"`
	ACLName string `json:"aclname,omitempty"`
}

func (RNAT) ResourceType() string { return "rnat" }

// RNATNSIPBinding is an "rnat_nsip_binding": one NAT IP of a named RNAT rule.
type RNATNSIPBinding struct {
	Name  string `json:"name"`
	NATIP string `json:"natip,omitempty"`
}

func (RNATNSIPBinding) ResourceType() string { return "rnat_nsip_binding" }
