package guestnet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"strings"

	"go.temporal.io/sdk/temporal"
	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/activities/remote"
)

// guest runs commands in one guest over one SSH connection.
type guest struct {
	ctx    context.Context
	client *ssh.Client
	// user is the login; sudo is set (by becomeRoot) when it is not root,
	// and privileged commands then run through `sudo -n`.
	user string
	sudo bool
}

// becomeRoot finds out whether the login is root and, when it is not,
// whether it may run commands as root through `sudo -n` (no password, no
// prompt: a prompt would hang the session). A user without such a rule
// gets a non-retryable GuestSudoRefused before anything is changed.
func (g *guest) becomeRoot() error {
	out, err := g.run("id -u", nil)
	if err != nil {
		return failed("read the login's uid", err)
	}
	if strings.TrimSpace(out) == "0" {
		g.sudo = false
		return nil
	}
	g.sudo = true
	_, err = g.priv("true", nil)
	return err
}

// priv runs cmd as root: as is for root, through `sudo -n sh -c` for
// another user. A sudo refusal (no rule, a rule that wants a password, no
// sudo at all) is a non-retryable GuestSudoRefused.
func (g guest) priv(cmd string, stdin []byte) (string, error) {
	if !g.sudo {
		return g.run(cmd, stdin)
	}
	out, err := g.run("sudo -n -- sh -c "+remote.Quote(cmd), stdin)
	if ee, ok := exited(err); ok && sudoRefused(ee) {
		msg := fmt.Sprintf("user %s may not run commands as root without a password (`sudo -n` said: %s): add a sudoers rule, e.g. /etc/sudoers.d/rackflow containing %q (cloud images give their default user one), or log in as a user that has one",
			g.user, strings.TrimSpace(ee.StderrTail), g.user+" ALL=(root) NOPASSWD: ALL")
		return out, activities.NonRetryable(msg, ErrTypeSudoRefused, nil)
	}
	return out, err
}

// sudoRefused reports whether a command run through sudo failed in sudo
// itself, for want of a rule or a password, rather than in the command.
func sudoRefused(ee *remote.ExitError) bool {
	if ee.Status == 127 && strings.Contains(ee.StderrTail, "sudo") {
		return true // no sudo in the guest
	}
	for _, s := range []string{"sudo: a password is required", "is not in the sudoers file", "may not run sudo", "is not allowed to execute", "sudo: a terminal is required"} {
		if strings.Contains(ee.StderrTail, s) {
			return true
		}
	}
	return false
}

// run runs cmd and returns its stdout; a non-zero exit is a
// *remote.ExitError quoting the end of stderr.
func (g guest) run(cmd string, stdin []byte) (string, error) {
	var in io.Reader
	if stdin != nil {
		in = bytes.NewReader(stdin)
	}
	out, err := remote.Output(g.ctx, g.client, cmd, in)
	return string(out), err
}

// exited reports whether err is a command that ran and exited non-zero
// (rather than one that could not run), and its exit.
func exited(err error) (*remote.ExitError, bool) {
	var ee *remote.ExitError
	return ee, errors.As(err, &ee)
}

// failed is a retryable GuestCommandFailed saying what failed; a sudo
// refusal keeps its own, non-retryable kind.
func failed(action string, err error) error {
	if activities.IsType(err, ErrTypeSudoRefused) {
		return err
	}
	msg := action + ": " + err.Error()
	return temporal.NewApplicationErrorWithOptions(msg, ErrTypeCommandFailed, temporal.ApplicationErrorOptions{Cause: err})
}

var ifNameRe = regexp.MustCompile(`^[A-Za-z0-9_.:@-]{1,15}$`)

// findIface returns the name of the interface with mac: by
// /sys/class/net/*/address, preferring a device-backed interface when a
// VLAN or bridge on top of it shares the MAC. "" when there is none.
func (g guest) findIface(mac string) (string, error) {
	out, err := g.run(`for d in /sys/class/net/*; do [ -r "$d/address" ] || continue; `+
		`if [ -e "$d/device" ]; then k=dev; else k=virt; fi; `+
		`printf '%s %s %s\n' "${d##*/}" "$(cat "$d/address")" "$k"; done`, nil)
	if err != nil {
		return "", err
	}
	var dev, virt []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || !strings.EqualFold(f[1], mac) || !ifNameRe.MatchString(f[0]) {
			continue
		}
		if f[2] == "dev" {
			dev = append(dev, f[0])
		} else {
			virt = append(virt, f[0])
		}
	}
	switch {
	case len(dev) == 1:
		return dev[0], nil
	case len(dev) > 1:
		return "", fmt.Errorf("several interfaces have MAC %s: %s", mac, strings.Join(dev, ", "))
	case len(virt) == 1:
		return virt[0], nil
	case len(virt) > 1:
		return "", fmt.Errorf("several interfaces have MAC %s: %s", mac, strings.Join(virt, ", "))
	}
	return "", nil
}

type ipAddrInfo struct {
	Family    string `json:"family"`
	Local     string `json:"local"`
	PrefixLen int    `json:"prefixlen"`
}

type ipLink struct {
	IfName   string       `json:"ifname"`
	Flags    []string     `json:"flags"`
	AddrInfo []ipAddrInfo `json:"addr_info"`
}

func (l ipLink) up() bool {
	for _, f := range l.Flags {
		if f == "UP" {
			return true
		}
	}
	return false
}

func (l ipLink) has(p netip.Prefix) bool {
	for _, a := range l.AddrInfo {
		if a.Family == "inet" && a.Local == p.Addr().String() && a.PrefixLen == p.Bits() {
			return true
		}
	}
	return false
}

func (l ipLink) v4() []string {
	var out []string
	for _, a := range l.AddrInfo {
		if a.Family == "inet" {
			out = append(out, a.Local)
		}
	}
	return out
}

func (g guest) link(iface string) (ipLink, error) {
	out, err := g.run("ip -j addr show dev "+iface, nil)
	if err != nil {
		return ipLink{}, err
	}
	var ls []ipLink
	if err := json.Unmarshal([]byte(out), &ls); err != nil || len(ls) != 1 {
		return ipLink{}, fmt.Errorf("read `ip -j addr show dev %s`: %q", iface, out)
	}
	return ls[0], nil
}

type ipRoute struct {
	Dst      string `json:"dst"`
	Gateway  string `json:"gateway"`
	Dev      string `json:"dev"`
	PrefSrc  string `json:"prefsrc"`
	Metric   int    `json:"metric"`
	Protocol string `json:"protocol"`
}

// prefix is the route's destination as a prefix; ip prints host routes
// without "/32".
func (r ipRoute) prefix() (netip.Prefix, bool) {
	if r.Dst == "default" {
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0), true
	}
	s := r.Dst
	if !strings.Contains(s, "/") {
		s += "/32"
	}
	p, err := netip.ParsePrefix(s)
	return p, err == nil
}

// routes lists table's IPv4 routes; a table that does not exist yet is empty.
func (g guest) routes(table string) ([]ipRoute, error) {
	out, err := g.run("ip -j -4 route show table "+table, nil)
	if ee, ok := exited(err); ok && strings.Contains(ee.StderrTail, "FIB table does not exist") {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rs []ipRoute
	if strings.TrimSpace(out) == "" {
		return nil, nil
	}
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		return nil, fmt.Errorf("read `ip -j route show table %s`: %w", table, err)
	}
	return rs, nil
}

type ipRule struct {
	Priority int    `json:"priority"`
	Src      string `json:"src"`
	SrcLen   *int   `json:"srclen"`
	Dst      string `json:"dst"`
	DstLen   *int   `json:"dstlen"`
	Table    string `json:"table"`
}

// rule is the part of an `ip rule` rackflow sets: one of from or to.
type rule struct {
	priority int
	from, to netip.Prefix
	table    string
}

func (r rule) args() string {
	sel := "from " + r.from.String()
	if r.to.IsValid() {
		sel = "to " + r.to.String()
	}
	return fmt.Sprintf("%s lookup %s pref %d", sel, r.table, r.priority)
}

func rulePrefix(addr string, l *int) netip.Prefix {
	if addr == "" || addr == "all" {
		return netip.Prefix{}
	}
	bits := 32
	if l != nil {
		bits = *l
	}
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(a, bits)
}

// countRule is how many rules equal r.
func (g guest) countRule(r rule) (int, error) {
	out, err := g.run("ip -j -4 rule show", nil)
	if err != nil {
		return 0, err
	}
	var rs []ipRule
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		return 0, fmt.Errorf("read `ip -j rule show`: %w", err)
	}
	n := 0
	for _, x := range rs {
		if x.Priority == r.priority && x.Table == r.table &&
			rulePrefix(x.Src, x.SrcLen) == r.from && rulePrefix(x.Dst, x.DstLen) == r.to {
			n++
		}
	}
	return n, nil
}

// routeGet asks the guest how it would reach dst.
func (g guest) routeGet(dst netip.Addr) (ipRoute, error) {
	out, err := g.run("ip -j -4 route get "+dst.String(), nil)
	if err != nil {
		return ipRoute{}, err
	}
	var rs []ipRoute
	if err := json.Unmarshal([]byte(out), &rs); err != nil || len(rs) == 0 {
		return ipRoute{}, fmt.Errorf("read `ip -j route get %s`: %q", dst, out)
	}
	return rs[0], nil
}

// session is the SSH connection as the guest sees it ($SSH_CONNECTION):
// the peer's address (the worker, or the jump host in between) and the
// guest address the session arrived on.
type session struct {
	peer, local netip.Addr
}

func (g guest) session() (session, error) {
	out, err := g.run(`printf '%s\n' "$SSH_CONNECTION"`, nil)
	if err != nil {
		return session{}, err
	}
	f := strings.Fields(out)
	if len(f) != 4 {
		return session{}, fmt.Errorf("read $SSH_CONNECTION: %q", out)
	}
	peer, err1 := netip.ParseAddr(f[0])
	local, err2 := netip.ParseAddr(f[2])
	if err1 != nil || err2 != nil {
		return session{}, fmt.Errorf("read $SSH_CONNECTION: %q", out)
	}
	return session{peer: peer.Unmap(), local: local.Unmap()}, nil
}

// rpFilter reads net.ipv4.conf.<iface>.rp_filter.
func (g guest) rpFilter(iface string) (string, error) {
	out, err := g.run("cat /proc/sys/net/ipv4/conf/"+iface+"/rp_filter", nil)
	return strings.TrimSpace(out), err
}
