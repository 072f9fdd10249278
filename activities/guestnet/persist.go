package guestnet

import (
	"crypto/sha1"
	"fmt"
	"net/netip"
	"strings"

	"github.com/rackflow/rackflow/activities/remote"
)

// Persistence mechanisms: the guest's network renderer.
const (
	MechNetplan        = "netplan"
	MechNetworkManager = "networkmanager"
	MechIfupdown       = "ifupdown"
)

// persistFile is one file rackflow owns in the guest for a NIC.
type persistFile struct {
	path    string
	mode    string // chmod mode
	content string
}

const header = "# Written by rackflow for the NIC with MAC %s: routes to the security area.\n" +
	"# No gateway and no default route here: the default route stays on the primary NIC.\n" +
	"# rackflow owns this file: configuration management must leave it alone.\n"

// paths of the files for the NIC with id (MAC without colons).
func netplanPath(etc, id string) string { return etc + "/netplan/90-rackflow-" + id + ".yaml" }
func nmPath(etc, id string) string {
	return etc + "/NetworkManager/system-connections/rackflow-" + id + ".nmconnection"
}
func ifupdownPath(etc, id string) string { return etc + "/network/interfaces.d/rackflow-" + id }
func linkPath(etc, id string) string     { return etc + "/systemd/network/10-rackflow-" + id + ".link" }
func sysctlPath(etc, id string) string   { return etc + "/sysctl.d/90-rackflow-" + id + ".conf" }

// netplanID is the netplan definition's id. networkd gives a device the
// first .network file (by name) that matches it, and netplan names them
// 10-netplan-<id>.network: an id starting "00-" sorts before a catch-all's
// ("all-en", "eth", "zz-all-en"), so a DHCP catch-all does not win the NIC.
func netplanID(p plan) string { return "00-rackflow-" + p.id() }

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

// render returns the files mech needs for the NIC, named iface now: the
// renderer's own file, pinned to the MAC, and the sysctl.d file that keeps
// rp_filter at 2. ifupdown's stanza and the sysctl key name the
// interface, so for ifupdown and netplan a systemd .link file pins the
// name to the MAC (KVM may name a re-plugged NIC otherwise after a
// stop/start). Not netplan's set-name: netplan renders it as a match on
// PermanentMACAddress, which a NIC whose address was set has not.
// NetworkManager matches the MAC.
func render(mech, etc, iface string, p plan) []persistFile {
	sysctl := persistFile{path: sysctlPath(etc, p.id()), mode: "644", content: renderSysctl(iface, p)}
	switch mech {
	case MechNetplan:
		return []persistFile{{path: netplanPath(etc, p.id()), mode: "600", content: renderNetplan(iface, p)},
			{path: linkPath(etc, p.id()), mode: "644", content: renderLink(iface, p)}, sysctl}
	case MechNetworkManager:
		return []persistFile{{path: nmPath(etc, p.id()), mode: "600", content: renderNM(p)}, sysctl}
	default:
		return []persistFile{
			{path: ifupdownPath(etc, p.id()), mode: "644", content: renderIfupdown(iface, p)},
			{path: linkPath(etc, p.id()), mode: "644", content: renderLink(iface, p)},
			sysctl,
		}
	}
}

// rules are the policy routing rules: traffic from each of the NIC's
// addresses (so replies leave the way requests came) and to each CIDR.
func (p plan) rules() []rule {
	if !p.policy {
		return nil
	}
	var rs []rule
	for _, a := range p.addrs() {
		rs = append(rs, rule{priority: p.priority, from: netip.PrefixFrom(a.Addr(), 32), table: p.table})
	}
	for _, c := range p.cidrs {
		rs = append(rs, rule{priority: p.priority, to: c, table: p.table})
	}
	return rs
}

// renderNetplan matches the NIC by MAC, gives
// it its static addresses, the routes and the rules; no gateway4, no DHCP,
// so no default route. The rules are in the file, so networkd owns them
// and keeps them over a restart instead of removing them as foreign.
func renderNetplan(iface string, p plan) string {
	var b strings.Builder
	fmt.Fprintf(&b, header, p.mac)
	fmt.Fprintf(&b, "network:\n  version: 2\n  ethernets:\n    %s:\n", netplanID(p))
	fmt.Fprintf(&b, "      match:\n        macaddress: %q\n", p.mac)
	b.WriteString("      dhcp4: false\n      dhcp6: false\n      accept-ra: false\n      link-local: []\n")
	b.WriteString("      addresses:\n")
	for _, a := range p.addrs() {
		fmt.Fprintf(&b, "        - %q\n", a.String())
	}
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
	fmt.Fprintf(&b, "[connection]\nid=rackflow-%s\nuuid=%s\ntype=ethernet\nautoconnect=true\nautoconnect-priority=100\n\n", p.id(), uuid)
	fmt.Fprintf(&b, "[ethernet]\nmac-address=%s\n\n", strings.ToUpper(p.mac))
	b.WriteString("[ipv4]\nmethod=manual\n")
	for i, a := range p.addrs() {
		fmt.Fprintf(&b, "address%d=%s\n", i+1, a)
	}
	b.WriteString("never-default=true\nignore-auto-routes=true\n")
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

// renderIfupdown is an interfaces.d stanza of method manual whose every
// command is idempotent (addr/route replace, a rule deleted before it is
// added), so ifup brings it up whether or not the live state is there
// already, and a re-run of ifup changes nothing.
func renderIfupdown(iface string, p plan) string {
	var b strings.Builder
	fmt.Fprintf(&b, header, p.mac)
	fmt.Fprintf(&b, "# The name %s is pinned to the MAC by %s.\n", iface, linkPath("/etc", p.id()))
	fmt.Fprintf(&b, "allow-hotplug %s\niface %s inet manual\n", iface, iface)
	fmt.Fprintf(&b, "    up ip link set dev %s up\n", iface)
	for _, a := range p.addrs() {
		fmt.Fprintf(&b, "    up ip addr replace %s dev %s\n", a, iface)
	}
	for _, c := range p.cidrs {
		fmt.Fprintf(&b, "    up ip route replace %s via %s dev %s table %s\n", c, p.gw, iface, p.table)
	}
	for _, r := range p.rules() {
		fmt.Fprintf(&b, "    up ip rule del %s 2>/dev/null || true\n    up ip rule add %s\n", r.args(), r.args())
	}
	for _, r := range p.rules() {
		fmt.Fprintf(&b, "    down ip rule del %s 2>/dev/null || true\n", r.args())
	}
	for _, c := range p.cidrs {
		fmt.Fprintf(&b, "    down ip route del %s via %s dev %s table %s 2>/dev/null || true\n", c, p.gw, iface, p.table)
	}
	extra := p.addrs()
	for i := len(extra) - 1; i >= 0; i-- {
		fmt.Fprintf(&b, "    down ip addr del %s dev %s 2>/dev/null || true\n", extra[i], iface)
	}
	return b.String()
}

// renderLink pins the NIC's name to its MAC for udev: a KVM stop/start
// can give a hot-plugged NIC another PCI slot, hence another name.
func renderLink(iface string, p plan) string {
	var b strings.Builder
	fmt.Fprintf(&b, header, p.mac)
	fmt.Fprintf(&b, "[Match]\nMACAddress=%s\n\n[Link]\nName=%s\n", p.mac, iface)
	return b.String()
}

// renderSysctl keeps loose reverse-path filtering on the NIC over a
// reboot (systemd-sysctl applies it when udev adds the device). The key
// uses slashes, as an interface name may hold a dot.
func renderSysctl(iface string, p plan) string {
	var b strings.Builder
	fmt.Fprintf(&b, header, p.mac)
	fmt.Fprintf(&b, "net/ipv4/conf/%s/rp_filter = 2\n", iface)
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

// ownedPaths are every file rackflow may write for the NIC.
func ownedPaths(etc string, p plan) []string {
	return []string{netplanPath(etc, p.id()), nmPath(etc, p.id()), ifupdownPath(etc, p.id()), linkPath(etc, p.id()), sysctlPath(etc, p.id())}
}

// removeFiles deletes every file rackflow owns for the NIC; it reports the
// ones that existed.
func (g guest) removeFiles(etc string, p plan) ([]string, error) {
	var removed []string
	for _, path := range ownedPaths(etc, p) {
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
