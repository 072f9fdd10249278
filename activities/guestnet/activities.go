package guestnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/remote"
)

// Dialer opens an SSH connection to a guest; *remote.Dialer is one.
type Dialer interface {
	Dial(ctx context.Context, t remote.Target) (*ssh.Client, error)
}

// Activities are the guest network activities.
type Activities struct {
	// Dialer reaches the guest.
	Dialer Dialer
	// EtcDir is where the guest keeps its configuration; "/etc" when
	// empty. Tests point it elsewhere; so could a chroot.
	EtcDir string
}

func (a *Activities) etc() (string, error) {
	if a.EtcDir == "" {
		return "/etc", nil
	}
	return a.EtcDir, validEtc(a.EtcDir)
}

func (a *Activities) dial(ctx context.Context, t remote.Target) (guest, func(), error) {
	if a.Dialer == nil {
		return guest{}, nil, errors.New("guestnet: Activities has no Dialer")
	}
	c, err := a.Dialer.Dial(ctx, t)
	if err != nil {
		return guest{}, nil, remote.AppError(err)
	}
	user := t.User
	if user == "" {
		user = "root"
	}
	return guest{ctx: ctx, client: c, user: user}, func() { c.Close() }, nil
}

// ConfigureRoutes sets up the NIC with in.MAC: link up, in.Address on it, no
// default route through it, a route per CIDR via in.Gateway (in main, or
// with PolicyRouting in in.Table plus `ip rule`s), and with Persist the
// distribution's configuration file. Each step is checked first; a re-run
// returns Changed=false.
func (a *Activities) ConfigureRoutes(ctx context.Context, in ConfigureInput) (ConfigureResult, error) {
	log := activity.GetLogger(ctx)
	p, err := in.plan()
	if err != nil {
		return ConfigureResult{}, err
	}
	etc, err := a.etc()
	if err != nil {
		return ConfigureResult{}, err
	}
	g, done, err := a.dial(ctx, in.Target)
	if err != nil {
		return ConfigureResult{}, err
	}
	defer done()
	if err := g.becomeRoot(); err != nil {
		return ConfigureResult{}, failed("become root", err)
	}

	iface, err := g.findIface(p.mac)
	if err != nil {
		return ConfigureResult{}, failed("find interface", err)
	}
	if iface == "" {
		err := fmt.Errorf("no interface in %s has MAC %s (yet)", in.Target.Addr, p.mac)
		return ConfigureResult{}, temporal.NewApplicationErrorWithOptions(err.Error(), ErrTypeInterfaceNotFound, temporal.ApplicationErrorOptions{Cause: err})
	}
	link, err := g.link(iface)
	if err != nil {
		return ConfigureResult{}, failed("read "+iface, err)
	}
	sess, err := g.session()
	if err != nil {
		return ConfigureResult{}, failed("read the SSH session", err)
	}
	if err := p.guard(iface, link, sess); err != nil {
		return ConfigureResult{}, err
	}
	res := ConfigureResult{Interface: iface}
	do := func(action, cmd string) error {
		if _, err := g.priv(cmd, nil); err != nil {
			return failed(action+" on "+iface, err)
		}
		res.Actions = append(res.Actions, action)
		log.Info("guest network changed", "addr", in.Target.Addr, "interface", iface, "mac", p.mac, "action", action)
		return nil
	}

	// Persist first and apply through the guest's renderer, so that what
	// runs is what the renderer owns: networkd keeps its own rules and
	// routes over a restart (it removes foreign ones), and ifupdown knows
	// the interface is up. The `ip` steps below then only fill in what no
	// renderer did (none running) and check the result.
	if p.persist {
		mech, err := g.detect(etc)
		if err != nil {
			return res, failed("detect network configuration", err)
		}
		if mech == "" {
			err := fmt.Errorf("guest %s has no netplan, NetworkManager or ifupdown configuration to persist to", in.Target.Addr)
			return res, activities.NonRetryable(err.Error(), ErrTypePersistUnsupported, err)
		}
		if mech == MechIfupdown {
			if err := g.checkIfupdown(etc, iface, p); err != nil {
				return res, err
			}
		}
		files := render(mech, etc, iface, p)
		wrote := false
		for _, f := range files {
			w, err := g.ensureFile(f)
			if err != nil {
				return res, failed("write "+f.path, err)
			}
			if w {
				wrote = true
				res.Actions = append(res.Actions, "write "+f.path)
				log.Info("guest network persisted", "addr", in.Target.Addr, "interface", iface, "mechanism", mech, "path", f.path)
			}
		}
		res.Persisted = mech + ":" + files[0].path
		if err := g.apply(mech, iface, p, wrote, do); err != nil {
			return res, err
		}
		if link, err = g.link(iface); err != nil {
			return res, failed("read "+iface, err)
		}
	}

	if !link.up() {
		if err := do("link up", "ip link set dev "+iface+" up"); err != nil {
			return res, err
		}
	}
	for _, a := range p.addrs() {
		if !link.has(a) {
			if err := do("address "+a.String(), "ip addr add "+a.String()+" dev "+iface); err != nil {
				return res, err
			}
		}
	}

	// Loose reverse-path filtering on the new NIC: with strict filtering
	// (1, many distributions' default) a packet arriving on it from a
	// source the main table routes elsewhere is dropped.
	rp, err := g.rpFilter(iface)
	if err != nil {
		return res, failed("read rp_filter of "+iface, err)
	}
	if rp != "2" {
		if err := do("rp_filter 2", "sysctl -q -w net/ipv4/conf/"+iface+"/rp_filter=2"); err != nil {
			return res, err
		}
		if rp, err = g.rpFilter(iface); err != nil || rp != "2" {
			return res, failed("set rp_filter of "+iface, fmt.Errorf("reads %q after setting 2 (%v)", rp, err))
		}
	}

	// A DHCP client or a distribution default may have given the new NIC a
	// default route; the default route belongs to the primary NIC.
	mainRoutes, err := g.routes("main")
	if err != nil {
		return res, failed("read routes", err)
	}
	for _, r := range mainRoutes {
		if r.Dst != "default" || r.Dev != iface {
			continue
		}
		cmd := "ip route del default dev " + iface
		if r.Gateway != "" {
			cmd += " via " + r.Gateway
		}
		if r.Metric != 0 {
			cmd += fmt.Sprintf(" metric %d", r.Metric)
		}
		if err := do("remove default route via "+iface, cmd); err != nil {
			return res, err
		}
	}

	table := mainRoutes
	if p.policy {
		if table, err = g.routes(p.table); err != nil {
			return res, failed("read routes", err)
		}
	}
	for _, c := range p.cidrs {
		if hasRoute(table, c, p.gw, iface) {
			continue
		}
		if err := do(fmt.Sprintf("route %s via %s table %s", c, p.gw, p.table),
			fmt.Sprintf("ip route replace %s via %s dev %s table %s", c, p.gw, iface, p.table)); err != nil {
			return res, err
		}
	}
	for _, r := range p.rules() {
		n, err := g.countRule(r)
		if err != nil {
			return res, failed("read rules", err)
		}
		if n > 0 {
			continue
		}
		if err := do("rule "+r.args(), "ip rule add "+r.args()); err != nil {
			return res, err
		}
	}

	res.Changed = len(res.Actions) > 0
	log.Info("guest routes configured", "addr", in.Target.Addr, "interface", iface, "mac", p.mac, "changed", res.Changed, "persisted", res.Persisted)
	return res, nil
}

func hasRoute(rs []ipRoute, dst netip.Prefix, gw netip.Addr, iface string) bool {
	for _, r := range rs {
		if p, ok := r.prefix(); ok && p == dst && r.Gateway == gw.String() && r.Dev == iface {
			return true
		}
	}
	return false
}

// RemoveRoutes undoes ConfigureRoutes for the same input: the routes via
// in.Gateway, the rules, in.Address (and the link goes down when no IPv4
// address is left on it), and every persistent file rackflow wrote for the
// MAC. What is already gone is skipped, including the whole interface.
func (a *Activities) RemoveRoutes(ctx context.Context, in ConfigureInput) error {
	log := activity.GetLogger(ctx)
	in.Persist = false
	p, err := in.plan()
	if err != nil {
		return err
	}
	etc, err := a.etc()
	if err != nil {
		return err
	}
	g, done, err := a.dial(ctx, in.Target)
	if err != nil {
		return err
	}
	defer done()
	if err := g.becomeRoot(); err != nil {
		return failed("become root", err)
	}

	// Never unconfigure the interface carrying the primary IP or the
	// session: check before touching anything.
	iface, err := g.findIface(p.mac)
	if err != nil {
		return failed("find interface", err)
	}
	if iface != "" {
		link, err := g.link(iface)
		if err != nil {
			return failed("read "+iface, err)
		}
		sess, err := g.session()
		if err != nil {
			return failed("read the SSH session", err)
		}
		if err := p.guardInterface(iface, link, sess); err != nil {
			return err
		}
	}

	if err := g.unapply(etc, iface, p); err != nil {
		return err
	}
	removed, err := g.removeFiles(etc, p)
	if err != nil {
		return failed("remove persistent configuration", err)
	}
	for _, f := range removed {
		log.Info("guest network file removed", "addr", in.Target.Addr, "mac", p.mac, "path", f)
	}
	if err := g.reapply(removed); err != nil {
		return err
	}
	for _, r := range p.rules() {
		n, err := g.countRule(r)
		if err != nil {
			return failed("read rules", err)
		}
		for ; n > 0; n-- {
			if _, err := g.priv("ip rule del "+r.args(), nil); err != nil {
				return failed("remove rule "+r.args(), err)
			}
		}
	}

	if iface == "" {
		log.Info("no interface with the MAC left; nothing more to undo", "addr", in.Target.Addr, "mac", p.mac)
		return nil
	}
	table, err := g.routes(p.table)
	if err != nil {
		return failed("read routes", err)
	}
	for _, c := range p.cidrs {
		if !hasRoute(table, c, p.gw, iface) {
			continue
		}
		if _, err := g.priv(fmt.Sprintf("ip route del %s via %s dev %s table %s", c, p.gw, iface, p.table), nil); err != nil {
			return failed("remove route "+c.String(), err)
		}
	}
	link, err := g.link(iface)
	if err != nil {
		return failed("read "+iface, err)
	}
	// Secondary addresses first: deleting the primary one of a subnet
	// takes its secondaries with it (without promote_secondaries).
	addrs := p.addrs()
	for i := len(addrs) - 1; i >= 0; i-- {
		if !link.has(addrs[i]) {
			continue
		}
		if _, err := g.priv("ip addr del "+addrs[i].String()+" dev "+iface, nil); err != nil {
			return failed("remove address "+addrs[i].String(), err)
		}
		if link, err = g.link(iface); err != nil {
			return failed("read "+iface, err)
		}
	}
	if link.up() && len(link.v4()) == 0 {
		if _, err := g.priv("ip link set dev "+iface+" down", nil); err != nil {
			return failed("link down", err)
		}
	}
	log.Info("guest routes removed", "addr", in.Target.Addr, "interface", iface, "mac", p.mac)
	return nil
}

// VerifyPath checks that the guest reaches in.Dest through the NIC with
// in.MAC: `ip route get` must name that interface, and a TCP connection
// (bash's /dev/tcp, or nc) must succeed from one of its addresses.
func (a *Activities) VerifyPath(ctx context.Context, in VerifyInput) (VerifyResult, error) {
	mac, err := parseMAC(in.MAC)
	if err != nil {
		return VerifyResult{}, err
	}
	dest, err := netip.ParseAddrPort(in.Dest)
	if err != nil || !dest.Addr().Is4() || dest.Port() == 0 {
		return VerifyResult{}, activities.InvalidInputf("dest %q is not an IPv4 ip:port", in.Dest)
	}
	g, done, err := a.dial(ctx, in.Target)
	if err != nil {
		return VerifyResult{}, err
	}
	defer done()

	iface, err := g.findIface(mac)
	if err != nil {
		return VerifyResult{}, failed("find interface", err)
	}
	if iface == "" {
		err := fmt.Errorf("no interface in %s has MAC %s", in.Target.Addr, mac)
		return VerifyResult{}, temporal.NewApplicationErrorWithOptions(err.Error(), ErrTypeInterfaceNotFound, temporal.ApplicationErrorOptions{Cause: err})
	}
	notThrough := func(format string, args ...any) error {
		err := fmt.Errorf("path to %s: "+format, append([]any{dest}, args...)...)
		return activities.NonRetryable(err.Error(), ErrTypePathNotThroughNic, err)
	}
	r, err := g.routeGet(dest.Addr())
	if err != nil {
		if ee, ok := exited(err); ok {
			return VerifyResult{}, notThrough("the guest has no route (%s), want one out %s (MAC %s)", ee.StderrTail, iface, mac)
		}
		return VerifyResult{}, failed("ip route get", err)
	}
	if r.Dev != iface {
		how := r.Dev
		if r.Gateway != "" {
			how += " via " + r.Gateway
		}
		return VerifyResult{}, notThrough("goes out %s, not %s (MAC %s): the routes through the new NIC are missing", how, iface, mac)
	}
	link, err := g.link(iface)
	if err != nil {
		return VerifyResult{}, failed("read "+iface, err)
	}

	ip, port := dest.Addr().String(), fmt.Sprint(dest.Port())
	// bash holds the connection open while ss names its local address; the
	// pid filter picks this connection among others to the same place.
	out, err := g.run(`if command -v bash >/dev/null 2>&1; then `+
		`timeout 10 bash -c 'exec 3<>"/dev/tcp/$1/$2" || exit 3; ss -Hntp state established dst "$1" 2>/dev/null | grep "pid=$$," || true' sh `+ip+` `+port+`; `+
		`elif command -v nc >/dev/null 2>&1; then timeout 10 nc -z -w 5 `+ip+` `+port+`; `+
		`else echo "no bash or nc in the guest" >&2; exit 127; fi`, nil)
	if ee, ok := exited(err); ok {
		err := fmt.Errorf("connect to %s from %s out %s: exit %d: %s", dest, in.Target.Addr, iface, ee.Status, ee.StderrTail)
		return VerifyResult{}, temporal.NewApplicationErrorWithOptions(err.Error(), ErrTypeDestinationUnreachable, temporal.ApplicationErrorOptions{Cause: err})
	}
	if err != nil {
		return VerifyResult{}, failed("connect", err)
	}
	src := r.PrefSrc
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 4 {
			if ap, err := netip.ParseAddrPort(f[2]); err == nil {
				src = ap.Addr().String()
			}
		}
	}
	if !slices.Contains(link.v4(), src) {
		return VerifyResult{}, notThrough("connected from %s, which is not an address of %s (%v)", src, iface, link.v4())
	}
	activity.GetLogger(ctx).Info("path verified", "addr", in.Target.Addr, "dest", in.Dest, "interface", iface, "source", src)
	return VerifyResult{Interface: iface, Source: src}, nil
}

// guard refuses a configuration that would cut the guest off: one on the
// interface carrying the primary IP or the SSH session (guardInterface),
// or routes through the new NIC that capture the SSH peer's address.
func (p plan) guard(iface string, link ipLink, sess session) error {
	if err := p.guardInterface(iface, link, sess); err != nil {
		return err
	}
	for _, c := range p.cidrs {
		if c.Contains(sess.peer) {
			err := fmt.Errorf("the SSH session comes from %s, inside %s, which would be routed through %s: the routes would cut this session and the worker's way back into the guest; leave %s out of the CIDRs or reach the guest through another address",
				sess.peer, c, iface, sess.peer)
			return activities.NonRetryable(err.Error(), ErrTypeRouteCapture, err)
		}
	}
	return nil
}

// guardInterface refuses to touch the interface that carries the VM's
// primary IP (or MAC) or the address the SSH session arrived on.
func (p plan) guardInterface(iface string, link ipLink, sess session) error {
	why := ""
	for _, a := range link.v4() {
		switch {
		case p.primaryIP.IsValid() && a == p.primaryIP.String():
			why = "carries the VM's primary IP " + a
		case a == sess.local.String():
			why = "carries " + a + ", the address this SSH session arrived on"
		}
		if why != "" {
			break
		}
	}
	if why == "" {
		return nil
	}
	err := fmt.Errorf("interface %s (MAC %s) %s: rackflow never changes routes or addresses on it", iface, p.mac, why)
	return activities.NonRetryable(err.Error(), ErrTypePrimaryInterface, err)
}
