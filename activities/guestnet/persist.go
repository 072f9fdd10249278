package guestnet

import (
	"crypto/sha1"
	"fmt"
	"net/netip"
	"strings"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/remote"
)

// Persistence mechanisms.
const (
	MechNetplan        = "netplan"
	MechNetworkManager = "networkmanager"
	MechIfupdown       = "ifupdown"
)

// persistFile is one mechanism's file for a NIC.
type persistFile struct {
	mech    string
	path    string
	mode    string // chmod mode
	content string
}

const header = "# Written by rackflow for the NIC with MAC %s: routes to the security area.\n" +
	"# No gateway and no default route here: the default route stays on the primary NIC.\n"

// paths of each mechanism's file for the NIC with id (MAC without colons).
func netplanPath(etc, id string) string { return etc + "/netplan/90-rackflow-" + id + ".yaml" }
func nmPath(etc, id string) string {
	return etc + "/NetworkManager/system-connections/rackflow-" + id + ".nmconnection"
}
func ifupdownPath(etc, id string) string { return etc + "/network/interfaces.d/rackflow-" + id }

// detect finds how the guest configures its network: netplan (an
// /etc/netplan directory and the netplan binary), NetworkManager (nmcli and
// a running NetworkManager), ifupdown (/etc/network/interfaces). "" when
// none.
func (g guest) detect(etc string) (string, error) {
	e := remote.Quote(etc)
	out, err := g.run(`if [ -d `+e+`/netplan ] && command -v netplan >/dev/null 2>&1; then echo `+MechNetplan+`; `+
		`elif command -v nmcli >/dev/null 2>&1 && nmcli -t -f RUNNING general 2>/dev/null | grep -qx running; then echo `+MechNetworkManager+`; `+
		`elif [ -f `+e+`/network/interfaces ]; then echo `+MechIfupdown+`; fi`, nil)
	return strings.TrimSpace(out), err
}

// render returns the persistent configuration for mech.
func render(mech, etc, iface string, p plan) persistFile {
	switch mech {
	case MechNetplan:
		return persistFile{mech: mech, path: netplanPath(etc, p.id()), mode: "600", content: renderNetplan(p)}
	case MechNetworkManager:
		return persistFile{mech: mech, path: nmPath(etc, p.id()), mode: "600", content: renderNM(p)}
	default:
		return persistFile{mech: MechIfupdown, path: ifupdownPath(etc, p.id()), mode: "644", content: renderIfupdown(iface, p)}
	}
}

func (p plan) rules() []rule {
	if !p.policy {
		return nil
	}
	rs := []rule{{priority: p.priority, from: netip.PrefixFrom(p.addr.Addr(), 32), table: p.table}}
	for _, c := range p.cidrs {
		rs = append(rs, rule{priority: p.priority, to: c, table: p.table})
	}
	return rs
}

// renderNetplan matches the NIC by MAC, gives it its static address and
// the routes; no gateway4, no DHCP, so no default route.
func renderNetplan(p plan) string {
	var b strings.Builder
	fmt.Fprintf(&b, header, p.mac)
	fmt.Fprintf(&b, "network:\n  version: 2\n  ethernets:\n    rackflow-%s:\n", p.id())
	fmt.Fprintf(&b, "      match:\n        macaddress: %q\n", p.mac)
	b.WriteString("      dhcp4: false\n      dhcp6: false\n      accept-ra: false\n")
	fmt.Fprintf(&b, "      addresses:\n        - %q\n", p.addr.String())
	b.WriteString("      routes:\n")
	for _, c := range p.cidrs {
		fmt.Fprintf(&b, "        - to: %q\n          via: %q\n", c.String(), p.gw.String())
		if p.policy {
			fmt.Fprintf(&b, "          table: %s\n", p.table)
		}
	}
	if rs := p.rules(); len(rs) > 0 {
		b.WriteString("      routing-policy:\n")
		for _, r := range rs {
			if r.to.IsValid() {
				fmt.Fprintf(&b, "        - to: %q\n", r.to.String())
			} else {
				fmt.Fprintf(&b, "        - from: %q\n", r.from.String())
			}
			fmt.Fprintf(&b, "          table: %s\n          priority: %d\n", r.table, r.priority)
		}
	}
	return b.String()
}

// renderNM is a NetworkManager keyfile bound to the MAC, with
// never-default so DHCP or a later edit cannot add a default route.
func renderNM(p plan) string {
	var b strings.Builder
	fmt.Fprintf(&b, header, p.mac)
	sum := sha1.Sum([]byte("rackflow-nic-" + p.mac))
	sum[6] = sum[6]&0x0f | 0x50 // a name-based (version 5 style) UUID: stable per MAC
	sum[8] = sum[8]&0x3f | 0x80
	uuid := fmt.Sprintf("%x-%x-%x-%x-%x", sum[0:4], sum[4:6], sum[6:8], sum[8:10], sum[10:16])
	fmt.Fprintf(&b, "[connection]\nid=rackflow-%s\nuuid=%s\ntype=ethernet\nautoconnect=true\n\n", p.id(), uuid)
	fmt.Fprintf(&b, "[ethernet]\nmac-address=%s\n\n", strings.ToUpper(p.mac))
	fmt.Fprintf(&b, "[ipv4]\nmethod=manual\naddress1=%s\nnever-default=true\nignore-auto-routes=true\n", p.addr)
	for i, c := range p.cidrs {
		fmt.Fprintf(&b, "route%d=%s,%s\n", i+1, c, p.gw)
		if p.policy {
			fmt.Fprintf(&b, "route%d_options=table=%s\n", i+1, p.table)
		}
	}
	for i, r := range p.rules() {
		sel := "from " + r.from.String()
		if r.to.IsValid() {
			sel = "to " + r.to.String()
		}
		fmt.Fprintf(&b, "routing-rule%d=priority %d %s table %s\n", i+1, r.priority, sel, r.table)
	}
	b.WriteString("\n[ipv6]\nmethod=ignore\n")
	return b.String()
}

// renderIfupdown is an interfaces.d stanza: static address, no gateway,
// routes and rules added on up and removed on down.
func renderIfupdown(iface string, p plan) string {
	var b strings.Builder
	fmt.Fprintf(&b, header, p.mac)
	fmt.Fprintf(&b, "allow-hotplug %s\niface %s inet static\n    address %s\n", iface, iface, p.addr)
	for _, c := range p.cidrs {
		fmt.Fprintf(&b, "    up ip route replace %s via %s dev %s table %s\n", c, p.gw, iface, p.table)
	}
	for _, r := range p.rules() {
		fmt.Fprintf(&b, "    up ip rule add %s\n", r.args())
	}
	for _, r := range p.rules() {
		fmt.Fprintf(&b, "    down ip rule del %s\n", r.args())
	}
	for _, c := range p.cidrs {
		fmt.Fprintf(&b, "    down ip route del %s via %s dev %s table %s\n", c, p.gw, iface, p.table)
	}
	return b.String()
}

// ensureFile writes f when its content differs and reports whether it did.
func (g guest) ensureFile(f persistFile) (bool, error) {
	q := remote.Quote(f.path)
	cur, err := g.priv("cat "+q+" 2>/dev/null", nil)
	if _, missing := exited(err); err != nil && !missing {
		return false, err
	}
	if err == nil && cur == f.content {
		return false, nil
	}
	dir := f.path[:strings.LastIndex(f.path, "/")]
	tmp := remote.Quote(f.path + ".rackflow-tmp")
	_, err = g.priv(fmt.Sprintf("mkdir -p %s && umask 077 && cat > %s && chmod %s %s && mv -f %s %s",
		remote.Quote(dir), tmp, f.mode, tmp, tmp, q), []byte(f.content))
	return true, err
}

// checkIfupdown makes sure /etc/network/interfaces reads interfaces.d.
func (g guest) checkIfupdown(etc string) error {
	_, err := g.priv(`grep -Eq '^[[:space:]]*(source|source-directory)[[:space:]]+.*interfaces\.d' `+remote.Quote(etc+"/network/interfaces"), nil)
	if _, no := exited(err); no {
		err := fmt.Errorf("%s/network/interfaces does not source interfaces.d; rackflow will not edit it", etc)
		return activities.NonRetryable(err.Error(), ErrTypePersistUnsupported, err)
	}
	return err
}

// removeFiles deletes every mechanism's file for the NIC; it reports the
// ones that existed.
func (g guest) removeFiles(etc string, p plan) ([]string, error) {
	var removed []string
	for _, path := range []string{netplanPath(etc, p.id()), nmPath(etc, p.id()), ifupdownPath(etc, p.id())} {
		out, err := g.priv(fmt.Sprintf("if [ -e %[1]s ]; then rm -f %[1]s && echo removed; fi", remote.Quote(path)), nil)
		if err != nil {
			return removed, err
		}
		if strings.TrimSpace(out) == "removed" {
			removed = append(removed, path)
		}
	}
	return removed, nil
}
