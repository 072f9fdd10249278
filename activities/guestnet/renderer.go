package guestnet

import (
	"fmt"
	"strings"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/remote"
)

// WaitOnline is how long networkd may take to configure the NIC after a
// reload, in seconds (systemd-networkd-wait-online --timeout).
const WaitOnline = 30

// networkdFile is the .network file netplan generates for the NIC.
func networkdFile(p plan) string {
	return "/run/systemd/network/10-netplan-" + netplanID(p) + ".network"
}

// apply makes the guest's renderer take up what was persisted: netplan
// generates networkd's files and, where networkd runs, networkd reloads
// and configures the NIC (and must then use rackflow's file, not a
// catch-all's); ifupdown brings the stanza up (its commands are
// idempotent); NetworkManager reloads and activates the connection.
// Nothing is run when the files were already in place and the renderer
// has taken them up, so a re-run changes nothing. do runs a privileged
// command and records it as an action.
func (g guest) apply(mech, iface string, p plan, wrote bool, do func(action, cmd string) error) error {
	switch mech {
	case MechNetplan:
		generated, err := g.run("test -e "+remote.Quote(networkdFile(p))+" && echo yes || true", nil)
		if err != nil {
			return failed("look for netplan's generated file", err)
		}
		if wrote || strings.TrimSpace(generated) != "yes" {
			if err := do("netplan generate", "netplan generate"); err != nil {
				return err
			}
		}
		file, running, err := g.networkdFileOf(iface)
		if err != nil {
			return failed("networkctl status "+iface, err)
		}
		if !running {
			// netplan's renderer is not running (a NetworkManager-rendered
			// netplan, or no networkd): the files are in place for the next
			// boot, and the `ip` steps configure the NIC now.
			return nil
		}
		if wrote || file != networkdFile(p) {
			if err := do("networkctl reload", "networkctl reload"); err != nil {
				return err
			}
			if err := do("networkctl reconfigure "+iface, "networkctl reconfigure "+remote.Quote(iface)); err != nil {
				return err
			}
			// The reload has chosen the file; configuring goes on after.
			if file, _, err = g.networkdFileOf(iface); err != nil {
				return failed("networkctl status "+iface, err)
			}
			if file == networkdFile(p) {
				// Event-driven wait until networkd has configured the NIC.
				if _, err := g.priv(fmt.Sprintf("/lib/systemd/systemd-networkd-wait-online -q -i %s --timeout=%d", remote.Quote(iface), WaitOnline), nil); err != nil {
					return failed("wait for networkd to configure "+iface, err)
				}
			}
		}
		if file != networkdFile(p) {
			err := fmt.Errorf("systemd-networkd configures %s with %q, not rackflow's %s: another netplan or networkd file (a catch-all such as match: {name: \"*\"} with dhcp4) sorts first and wins the NIC; narrow its match to leave MAC %s out",
				iface, file, networkdFile(p), p.mac)
			return activities.NonRetryable(err.Error(), ErrTypeRendererConflict, err)
		}
	case MechIfupdown:
		up, err := g.priv("ifquery --state "+remote.Quote(iface)+" || true", nil)
		if err != nil {
			return failed("ifquery --state "+iface, err)
		}
		if wrote || strings.TrimSpace(up) == "" {
			// --force: an interface ifupdown already has up re-runs its
			// (idempotent) commands, so a changed stanza takes effect.
			if err := do("ifup "+iface, "ifup --force "+remote.Quote(iface)); err != nil {
				return err
			}
		}
	case MechNetworkManager:
		if wrote {
			if err := do("nmcli connection reload", "nmcli connection reload"); err != nil {
				return err
			}
			if err := do("nmcli connection up rackflow-"+p.id(), "nmcli connection up id "+remote.Quote("rackflow-"+p.id())); err != nil {
				return err
			}
		}
	}
	return nil
}

// networkdFileOf returns the .network file networkd configures iface with
// ("" for none), and whether networkd runs at all.
func (g guest) networkdFileOf(iface string) (string, bool, error) {
	out, err := g.run("if command -v networkctl >/dev/null 2>&1; then networkctl --no-pager status -- "+remote.Quote(iface)+" 2>&1; else echo 'systemd-networkd is not running'; fi", nil)
	if err != nil {
		if _, ok := exited(err); ok {
			return "", false, nil // networkctl fails without networkd
		}
		return "", false, err
	}
	if strings.Contains(out, "systemd-networkd is not running") {
		return "", false, nil
	}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && k == "Network File" {
			v = strings.TrimSpace(v)
			if v == "n/a" {
				v = ""
			}
			return v, true, nil
		}
	}
	return "", true, nil
}

// checkIfupdown makes sure /etc/network/interfaces reads interfaces.d and
// that no other stanza configures iface: ifupdown would merge the two (a
// DHCP stanza would run next to rackflow's).
func (g guest) checkIfupdown(etc, iface string, p plan) error {
	_, err := g.priv(`grep -Eq '^[[:space:]]*(source|source-directory)[[:space:]]+.*interfaces\.d' `+remote.Quote(etc+"/network/interfaces"), nil)
	if _, no := exited(err); no {
		err := fmt.Errorf("%s/network/interfaces does not source interfaces.d; rackflow will not edit it", etc)
		return activities.NonRetryable(err.Error(), ErrTypePersistUnsupported, err)
	}
	if err != nil {
		return failed("read "+etc+"/network/interfaces", err)
	}
	out, err := g.priv(`grep -lE '^[[:space:]]*iface[[:space:]]+`+strings.ReplaceAll(iface, ".", `\.`)+`[[:space:]]' `+
		remote.Quote(etc+"/network/interfaces")+` `+remote.Quote(etc+"/network/interfaces.d")+`/* 2>/dev/null || true`, nil)
	if err != nil {
		return failed("read ifupdown's stanzas", err)
	}
	for _, f := range strings.Fields(out) {
		if f != ifupdownPath(etc, p.id()) {
			err := fmt.Errorf("%s also configures %s (MAC %s): ifupdown would run both stanzas; remove that stanza and rackflow writes its own", f, iface, p.mac)
			return activities.NonRetryable(err.Error(), ErrTypeRendererConflict, err)
		}
	}
	return nil
}

// unapply takes the NIC away from the renderer before its files go:
// ifupdown runs the stanza's down commands (it needs the stanza for that).
func (g guest) unapply(etc, iface string, p plan) error {
	if iface == "" {
		return nil
	}
	out, err := g.priv("if [ -e "+remote.Quote(ifupdownPath(etc, p.id()))+" ] && command -v ifquery >/dev/null 2>&1; then ifquery --state "+remote.Quote(iface)+" || true; fi", nil)
	if err != nil {
		return failed("ifquery --state "+iface, err)
	}
	if strings.TrimSpace(out) != "" {
		if _, err := g.priv("ifdown --force "+remote.Quote(iface), nil); err != nil {
			return failed("ifdown "+iface, err)
		}
	}
	return nil
}

// reapply tells the renderer that rackflow's files are gone.
func (g guest) reapply(removed []string) error {
	var netplan, nm bool
	for _, f := range removed {
		netplan = netplan || strings.Contains(f, "/netplan/")
		nm = nm || strings.Contains(f, "/NetworkManager/")
	}
	if netplan {
		if _, err := g.priv("netplan generate", nil); err != nil {
			return failed("netplan generate", err)
		}
		if _, running, err := g.networkdFileOf("lo"); err == nil && running {
			if _, err := g.priv("networkctl reload", nil); err != nil {
				return failed("networkctl reload", err)
			}
		}
	}
	if nm {
		if _, err := g.priv("nmcli connection reload", nil); err != nil {
			return failed("nmcli connection reload", err)
		}
	}
	return nil
}
