package api

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const goodInventory = `
hosts:
  - name: node07
    bmc: {address: 127.0.0.1, port: 6230, provider: ipmi, credential: bmc/node07}
    mac: "52:54:00:AB:CD:07"
    network: {ip: 192.0.2.17, netmask: 255.255.255.0, gateway: 192.0.2.1, dns: [192.0.2.53]}
    disk: /dev/sda
    image:
      url: http://images.example/debian-12.raw
      size: 2147483648
      sha256: 2b7e151628aed2a6abf7158809cf4f3c762e7160f38b4da56a784d9045190cfe
    ssh: {credential: ssh/provision}
    chef:
      server_url: https://chef.example/organizations/infra
      run_list: ["role[db]", "recipe[base::hardening]"]
      validator_credential: chef/validator
`

// parseInventory decodes an inventory as the worker reads its file.
func parseInventory(s string) (*Inventory, error) {
	var inv Inventory
	if err := Decode("inventory.yaml", []byte(s), &inv); err != nil {
		return nil, err
	}
	return &inv, nil
}

func TestDecodeInventoryAppliesDefaults(t *testing.T) {
	inv, err := parseInventory(goodInventory)
	if err != nil {
		t.Fatal(err)
	}
	h, err := inv.Lookup("node07")
	if err != nil {
		t.Fatal(err)
	}
	want := Host{
		Name:    "node07",
		BMC:     BMC{Address: "127.0.0.1", Port: 6230, Provider: "ipmi", Credential: "bmc/node07"},
		MAC:     "52:54:00:ab:cd:07",
		Network: Network{IP: "192.0.2.17", Netmask: "255.255.255.0", Gateway: "192.0.2.1", DNS: []string{"192.0.2.53"}},
		Disk:    "/dev/sda",
		Image: Image{URL: "http://images.example/debian-12.raw", Size: 2147483648,
			SHA256: "2b7e151628aed2a6abf7158809cf4f3c762e7160f38b4da56a784d9045190cfe"},
		SSH: SSH{User: "root", Port: 22, LivePort: 22, Credential: "ssh/provision"},
		Chef: &Chef{ServerURL: "https://chef.example/organizations/infra", RunList: []string{"role[db]", "recipe[base::hardening]"},
			NodeName: "node07", ValidatorName: "chef-validator", ValidatorCredential: "chef/validator",
			Command: "chef-client -j /etc/chef/first-boot.json"},
	}
	if d := cmp.Diff(want, h); d != "" {
		t.Errorf("host (-want +got):\n%s", d)
	}
	if _, err := inv.Lookup("node99"); !errors.Is(err, ErrUnknownHost) {
		t.Errorf("Lookup(node99) = %v, want ErrUnknownHost", err)
	}
}

func TestValidateNamesEveryBadField(t *testing.T) {
	tests := map[string]struct {
		edit   func(h *Host)
		fields []string
	}{
		"bad mac":            {func(h *Host) { h.MAC = "52:54:00:zz:00:01" }, []string{"mac"}},
		"multicast mac":      {func(h *Host) { h.MAC = "01:00:5e:00:00:01" }, []string{"mac"}},
		"bad ip":             {func(h *Host) { h.Network.IP = "192.0.2.300" }, []string{"network.ip"}},
		"ipv6 ip":            {func(h *Host) { h.Network.IP = "2001:db8::1" }, []string{"network.ip"}},
		"holey netmask":      {func(h *Host) { h.Network.Netmask = "255.0.255.0" }, []string{"network.netmask"}},
		"missing checksum":   {func(h *Host) { h.Image.SHA256 = "" }, []string{"image.sha256"}},
		"short checksum":     {func(h *Host) { h.Image.SHA256 = "abc" }, []string{"image.sha256"}},
		"short sha512":       {func(h *Host) { h.Image.SHA256, h.Image.SHA512 = "", strings.Repeat("ab", 32) }, []string{"image.sha512"}},
		"both checksums":     {func(h *Host) { h.Image.SHA512 = strings.Repeat("ab", 64) }, []string{"image.sha512"}},
		"ftp url":            {func(h *Host) { h.Image.URL = "ftp://x/y.raw" }, []string{"image.url"}},
		"jump host unpinned": {func(h *Host) { h.SSH.Jump = &SSHJump{Address: "10.20.0.5:22", Credential: "ssh/jump"} }, []string{"ssh.jump.host_key"}},
		"jump host no port": {func(h *Host) {
			h.SSH.Jump = &SSHJump{Address: "10.20.0.5", Credential: "ssh/jump", HostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"}
		}, []string{"ssh.jump.address"}},
		"zero size":       {func(h *Host) { h.Image.Size = 0 }, []string{"image.size"}},
		"relative disk":   {func(h *Host) { h.Disk = "sda" }, []string{"disk"}},
		"disk traversal":  {func(h *Host) { h.Disk = "/dev/../etc/passwd" }, []string{"disk"}},
		"bad credential":  {func(h *Host) { h.BMC.Credential = "../etc/shadow" }, []string{"bmc.credential"}},
		"bad provider":    {func(h *Host) { h.BMC.Provider = "amt" }, []string{"bmc.provider"}},
		"pin not sha256":  {func(h *Host) { h.BMC.Provider, h.BMC.PinSHA256 = "redfish", "abc" }, []string{"bmc.pin_sha256"}},
		"relative ca":     {func(h *Host) { h.BMC.Provider, h.BMC.CAFile = "redfish", "bmc-ca.pem" }, []string{"bmc.ca_file"}},
		"pin for ipmi":    {func(h *Host) { h.BMC.PinSHA256 = strings.Repeat("ab", 32) }, []string{"bmc.provider"}},
		"bad run list":    {func(h *Host) { h.Chef.RunList = []string{"db; rm -rf /"} }, []string{"chef.run_list[0]"}},
		"upper-case name": {func(h *Host) { h.Name = "Node07" }, []string{"name"}},
		"several at once": {func(h *Host) { h.MAC = "x"; h.Network.IP = "y"; h.Image.SHA256 = "" },
			[]string{"mac", "network.ip", "image.sha256"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			inv, err := parseInventory(goodInventory)
			if err != nil {
				t.Fatal(err)
			}
			h := inv.Hosts[0]
			c := *h.Chef
			h.Chef = &c
			tc.edit(&h)
			err = h.Validate()
			var fe FieldErrors
			if !errors.As(err, &fe) {
				t.Fatalf("Validate() = %v, want FieldErrors", err)
			}
			var got []string
			for _, e := range fe {
				got = append(got, e.Field)
			}
			if d := cmp.Diff(tc.fields, got); d != "" {
				t.Errorf("fields (-want +got):\n%s\nerror: %v", d, err)
			}
		})
	}
}

func TestDecodeInventoryRejectsTyposAndDuplicates(t *testing.T) {
	_, err := parseInventory(strings.Replace(goodInventory, "disk: /dev/sda", "disc: /dev/sda", 1))
	if err == nil || !strings.Contains(err.Error(), "inventory.yaml:7: field disc not found") {
		t.Errorf("unknown field: err = %v, want it named with its line", err)
	}
	dup := goodInventory + strings.TrimPrefix(goodInventory, "\nhosts:\n")
	_, err = parseInventory(dup)
	var se SpecErrors
	if !errors.As(err, &se) {
		t.Fatalf("duplicate: err = %v", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "hosts[1].name") || !strings.Contains(msg, "hosts[1].mac") {
		t.Errorf("duplicate name and mac not both reported: %v", err)
	}
}

func TestProvisionWorkflowID(t *testing.T) {
	id := ProvisionWorkflowID("node07")
	if id != "provision/node07" {
		t.Fatalf("id = %q", id)
	}
	if h, ok := HostFromProvisionWorkflowID(id); !ok || h != "node07" {
		t.Fatalf("inverse = %q %v", h, ok)
	}
}

func TestLoadInventoryNamesFileLineAndField(t *testing.T) {
	bad := strings.Replace(strings.Replace(goodInventory, `"52:54:00:AB:CD:07"`, `"52:54:00:AB:CD"`, 1), "sha256: 2b7e", "sha256: ZZ7e", 1)
	path := t.TempDir() + "/inventory.yaml"
	if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadInventory(path)
	var se SpecErrors
	if !errors.As(err, &se) {
		t.Fatalf("err = %v, want SpecErrors", err)
	}
	got := map[string]int{}
	for _, e := range se {
		got[e.Field] = e.Line
	}
	if d := cmp.Diff(map[string]int{"hosts[0].mac": 5, "hosts[0].image.sha256": 11}, got); d != "" {
		t.Errorf("(-want +got):\n%s\n%v", d, err)
	}
}

func TestImageWithSHA512(t *testing.T) {
	inv, err := parseInventory(goodInventory)
	if err != nil {
		t.Fatal(err)
	}
	h := inv.Hosts[0]
	h.Image.SHA256, h.Image.SHA512 = "", strings.Repeat("0a", 64)
	if err := h.Validate(); err != nil {
		t.Fatalf("a host whose image has only a sha512: %v", err)
	}
	if algo, d := h.Image.Digest(); algo != "sha512" || d != h.Image.SHA512 {
		t.Errorf("Digest() = %s %s", algo, d)
	}
	if algo, _ := (Image{SHA256: "x"}).Digest(); algo != "sha256" {
		t.Errorf("sha256 image: Digest() algo %s", algo)
	}
}

func TestHostWithJumpHost(t *testing.T) {
	inv, err := parseInventory(goodInventory)
	if err != nil {
		t.Fatal(err)
	}
	h := inv.Hosts[0]
	h.SSH.Jump = &SSHJump{Address: "pxe.boot.internal:22", Credential: "ssh/jump",
		HostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"}
	if err := h.Validate(); err != nil {
		t.Fatalf("a host reached through a jump host: %v", err)
	}
}

// TestValidationGaps: inputs the security review found accepted. Each is
// refused now, with a message that names the field and does not echo
// megabytes back.
func TestValidationGaps(t *testing.T) {
	edit := func(old, new string) string {
		if !strings.Contains(goodInventory, old) {
			t.Fatalf("fixture lacks %q", old)
		}
		return strings.Replace(goodInventory, old, new, 1)
	}
	huge := strings.Repeat("A", 2<<20)
	tests := map[string]struct {
		inv  string
		want string
	}{
		"all-zero MAC":              {edit(`mac: "52:54:00:AB:CD:07"`, `mac: "00:00:00:00:00:00"`), "all-zero"},
		"fractional size":           {edit("size: 2147483648", "size: 2147483648.5"), "image.size: must be a whole number"},
		"exponent size":             {edit("size: 2147483648", "size: 2e9"), "image.size: must be a whole number"},
		"fractional port":           {edit("port: 6230", "port: 6230.7"), "bmc.port: must be a whole number"},
		"trailing document":         {goodInventory + "---\nhosts: []\n", "second YAML document"},
		"null inventory":            {"~\n", "null"},
		"empty inventory":           {"", "no YAML document"},
		"no hosts":                  {"hosts: []\n", "no hosts"},
		"gateway outside subnet":    {edit("gateway: 192.0.2.1", "gateway: 198.51.100.1"), "not in the host's subnet 192.0.2.0/24"},
		"dns with an IPv6 zone":     {edit("dns: [192.0.2.53]", `dns: ["fe80::1%x\nchain http://evil/x"]`), "IPv6 zones"},
		"junk host key":             {edit("ssh: {credential: ssh/provision}", `ssh: {credential: ssh/provision, host_key: "ssh-ed25519 bm90LWEta2V5"}`), "ssh.host_key"},
		"two host keys in one line": {edit("ssh: {credential: ssh/provision}", "ssh: {credential: ssh/provision, host_key: \""+testHostKey+"\\n"+testHostKey+"\"}"), "ssh.host_key"},
		"megabyte value":            {edit("disk: /dev/sda", "disk: "+huge), "(2097152 bytes)"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var inv Inventory
			err := Decode("inventory.yaml", []byte(tc.inv), &inv)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %.300v, want one containing %q", err, tc.want)
			}
			if len(err.Error()) > 4096 {
				t.Fatalf("error message is %d bytes", len(err.Error()))
			}
		})
	}
	// A valid key with a comment still passes.
	ok := edit("ssh: {credential: ssh/provision}", `ssh: {credential: ssh/provision, host_key: "`+testHostKey+` root@node07"}`)
	var inv Inventory
	if err := Decode("inventory.yaml", []byte(ok), &inv); err != nil {
		t.Fatalf("valid host key refused: %v", err)
	}
}

const testHostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"

func TestBMCCredentialDest(t *testing.T) {
	tests := map[string]struct {
		bmc  BMC
		want string
	}{
		"ipmi":         {BMC{Address: "10.20.0.7", Provider: "ipmi"}, "10.20.0.7:623"},
		"redfish":      {BMC{Address: "10.20.0.7", Provider: "redfish"}, "https://10.20.0.7:443"},
		"redfish port": {BMC{Address: "bmc07.mgmt", Port: 8443, Provider: "redfish"}, "https://bmc07.mgmt:8443"},
		"ipv6":         {BMC{Address: "fd00::7", Provider: "ipmi"}, "[fd00::7]:623"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := Host{BMC: tc.bmc}
			h.Defaults()
			if diff := cmp.Diff(tc.want, h.BMC.CredentialDest()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestNormalizePin(t *testing.T) {
	hex := strings.Repeat("ab", 32)
	colons := strings.ToUpper(strings.TrimSuffix(strings.Repeat("AB:", 32), ":"))
	for in, want := range map[string]string{hex: hex, colons: hex, "abc": "", strings.Repeat("zz", 32): ""} {
		if got := NormalizePin(in); got != want {
			t.Errorf("NormalizePin(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestInventoryNetScalers: netscalers: entries decode with the NetScaler
// fields inline, and bad ones are named by their path in the file.
func TestInventoryNetScalers(t *testing.T) {
	inv, err := parseInventory(goodInventory + `
netscalers:
  - {name: ns-dc1, url: "https://ns1.mgmt", credential: netscaler/dc1, server_name: ns1.example, partition: web}
`)
	if err != nil {
		t.Fatal(err)
	}
	want := []NetScalerEntry{{Name: "ns-dc1", NetScaler: NetScaler{URL: "https://ns1.mgmt", Credential: "netscaler/dc1", ServerName: "ns1.example", Partition: "web"}}}
	if d := cmp.Diff(want, inv.NetScalers); d != "" {
		t.Errorf("netscalers (-want +got):\n%s", d)
	}
	_, err = parseInventory(goodInventory + `
netscalers:
  - {name: ns-dc1, url: "ftp://ns1", credential: netscaler/dc1}
  - {name: ns-dc1, url: "https://ns2", credential: "", auth: header, partition: web}
`)
	for _, f := range []string{"netscalers[0].url", "netscalers[1].name", "netscalers[1].credential", "netscalers[1].partition"} {
		if err == nil || !strings.Contains(err.Error(), f) {
			t.Errorf("error %v: want it to name %s", err, f)
		}
	}
	// A password has no place in the inventory: it is refused, not ignored.
	if _, err := parseInventory(goodInventory + `
netscalers:
  - {name: ns3, url: "https://ns3", credential: netscaler/x, password: oops}
`); err == nil || !strings.Contains(err.Error(), "password") {
		t.Errorf("a password field: %v", err)
	}
}
