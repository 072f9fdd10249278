// Package bmc holds the activities that switch a bare-metal host's power and
// boot device through its BMC (IPMI through ipmitool, or Redfish), using
// bmclib. It decides when acting is safe (two agreeing power reads before any
// power change, so a glitchy read never power-cycles a healthy host), bounds
// how many activities talk to one BMC at once, and turns failures into
// Temporal errors with searchable types. It does not retry: Temporal does.
// It is not a BMC library and has no inventory: the workflow passes the BMC's
// address and a credential reference, resolved here and never logged.
package bmc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"

	"github.com/rackflow/rackflow/activities"
	"github.com/rackflow/rackflow/api"
	"github.com/rackflow/rackflow/secrets"
)

// Error types of this package's failures; all but ErrTypeUntrustedCert and
// ErrTypeRefused are retryable. The other non-retryable ones are the shared
// activities.ErrTypeInvalidInput, ErrTypeCredentialNotFound,
// ErrTypeCredentialNotAllowed and ErrTypeInvalidCredential (also what a
// Redfish BMC's 401 to the login means: it rejected the user or password).
const (
	// ErrTypeUnreachable: the BMC did not answer a call within CallTimeout,
	// or the network refused the connection.
	ErrTypeUnreachable = "BMCUnreachable"
	// ErrTypeNoSession: ipmitool could not open an IPMI session. That is
	// what it says both when the BMC rejects the user or password and when
	// it answers nothing, and bmclib does not run it verbosely, so it stays
	// retryable; the message names both causes.
	ErrTypeNoSession = "BMCNoSession"
	// ErrTypeStateUnconfirmed: two power reads disagreed, or were neither
	// "on" nor "off"; nothing was switched.
	ErrTypeStateUnconfirmed = "BMCStateUnconfirmed"
	// ErrTypeStateTimeout: the power state did not reach the wanted one
	// within SettleTimeout after the command was accepted.
	ErrTypeStateTimeout = "BMCStateTimeout"
	// ErrTypeUntrustedCert: a Redfish BMC's TLS certificate failed
	// verification (not the pinned one, or not signed by bmc.ca_file or a
	// system root). Not retryable: nothing was sent, and the inventory or
	// the BMC, not a retry, has to change.
	ErrTypeUntrustedCert = "BMCUntrustedCert"
	// ErrTypeRefused: a Redfish BMC answered 400 Bad Request to what
	// bmclib sent (a boot target or reset type it does not allow, a
	// property it does not know); the message quotes its
	// @Message.ExtendedInfo. Not retryable: a retry sends the same.
	ErrTypeRefused = "BMCRefused"
	// ErrTypeTaskFailed: a Redfish BMC accepted a reset as a task (202
	// Accepted) and the task ended in Exception, Killed or Cancelled; the
	// message quotes the task's messages. Retryable: the power was not
	// switched, and a BMC's reset can fail once.
	ErrTypeTaskFailed = "BMCTaskFailed"
	// ErrTypeBMC: any other failure reported by the BMC or bmclib.
	ErrTypeBMC = "BMCError"
)

// Input names the host (for logs) and its BMC.
type Input struct {
	Host string  `json:"host"`
	BMC  api.BMC `json:"bmc"`
}

// Result says what an activity found and did.
type Result struct {
	// PriorState is the confirmed power state before acting: "on" or "off".
	PriorState string `json:"prior_state"`
	// Action is "on", "off", "cycle" or "none".
	Action string `json:"action"`
	// State is the power state read at the end.
	State string `json:"state"`
}

// Progress is the heartbeat detail. A retried attempt reads it: once a
// previous attempt's power command was accepted, the retry does not repeat
// it on a host that is already on (a second cycle would cut a PXE boot short).
type Progress struct {
	Step       string `json:"step"`
	PriorState string `json:"prior_state,omitempty"`
	Action     string `json:"action,omitempty"`
}

// Activities drive BMCs. The zero value with Secrets set works: bmclib
// clients, one activity per BMC at a time, and the timings below.
type Activities struct {
	// Secrets resolves api.BMC.Credential to a username and password.
	Secrets secrets.Resolver
	// NewClient builds a BMC client; nil means BMCLib.
	NewClient ClientFunc
	// Limiter bounds concurrent activities per BMC in this process; nil
	// means one at a time, shared by everything using this Activities.
	Limiter *Limiter

	// CallTimeout bounds each call to the BMC (one or a few ipmitool runs);
	// 20s when zero. A BMC that does not answer fails the activity with
	// ErrTypeUnreachable after this long.
	CallTimeout time.Duration
	// ConfirmDelay is the pause between the two power reads that must agree
	// before a power change; 2s when zero.
	ConfirmDelay time.Duration
	// PollInterval is the pause between reads while waiting for the power
	// state to settle; 2s when zero.
	PollInterval time.Duration
	// SettleTimeout bounds that wait; 2m when zero.
	SettleTimeout time.Duration
	// HeartbeatInterval is how often a running activity heartbeats, also
	// while it waits for a BMC slot or for the BMC; 5s when zero.
	HeartbeatInterval time.Duration

	once    sync.Once
	limiter *Limiter
}

// New returns Activities that reach BMCs through bmclib, resolve
// credentials with res, and let perBMC activities talk to one BMC at once.
func New(res secrets.Resolver, perBMC int) *Activities {
	return &Activities{Secrets: res, NewClient: BMCLib, Limiter: NewLimiter(perBMC)}
}

func (a *Activities) lim() *Limiter {
	a.once.Do(func() {
		a.limiter = a.Limiter
		if a.limiter == nil {
			a.limiter = NewLimiter(1)
		}
	})
	return a.limiter
}

// PowerOnPXE makes the host boot from the network once: it sets the next
// boot (only) to PXE, then power-cycles the host if two reads agree it is
// on, or powers it on if they agree it is off, and waits until it reads on.
func (a *Activities) PowerOnPXE(ctx context.Context, in Input) (Result, error) {
	return a.bootInto(ctx, in, "pxe", false)
}

// BootFromDisk makes the host boot from its disk from now on: it sets the
// boot device to disk persistently, then cycles or powers on the host like
// PowerOnPXE.
func (a *Activities) BootFromDisk(ctx context.Context, in Input) (Result, error) {
	return a.bootInto(ctx, in, "disk", true)
}

func (a *Activities) bootInto(ctx context.Context, in Input, device string, persistent bool) (Result, error) {
	s, err := a.open(ctx, in, "boot "+device)
	if err != nil {
		return Result{}, err
	}
	defer s.close()

	// A previous attempt whose power command went through: if the host is
	// on now, that command did its job.
	if prev, ok := activities.PreviousProgress[Progress](ctx); ok && prev.Action != "" {
		if st, err := s.state(ctx); err == nil && st == "on" {
			s.log.Info("power command of a previous attempt took effect; not repeating it", "action", prev.Action)
			return Result{PriorState: prev.PriorState, Action: prev.Action, State: "on"}, nil
		}
	}

	s.step("set boot device " + device)
	if err := s.call(ctx, "set boot device "+device, func(ctx context.Context) error {
		ok, err := s.c.SetBootDevice(ctx, device, persistent, false)
		if err == nil && !ok {
			err = errors.New("bmc did not confirm the boot device")
		}
		return err
	}); err != nil {
		return Result{}, err
	}
	prior, err := s.confirmedState(ctx)
	if err != nil {
		return Result{}, err
	}
	action := "on"
	if prior == "on" {
		action = "cycle"
	}
	if err := s.setPower(ctx, prior, action); err != nil {
		return Result{}, err
	}
	if err := s.waitFor(ctx, "on"); err != nil {
		return Result{}, err
	}
	s.log.Info("host powered", "prior_state", prior, "action", action, "boot_device", device)
	return Result{PriorState: prior, Action: action, State: "on"}, nil
}

// PowerOff turns the host off and waits until it reads off. A host that two
// reads agree is already off is left alone, so compensation may run it any
// number of times.
func (a *Activities) PowerOff(ctx context.Context, in Input) (Result, error) {
	s, err := a.open(ctx, in, "power off")
	if err != nil {
		return Result{}, err
	}
	defer s.close()

	prior, err := s.state(ctx)
	if err != nil {
		return Result{}, err
	}
	if prior == "off" {
		// Make sure: one read that says off must not skip the power-off of
		// a host that is on.
		if err := s.sleep(ctx, activities.OrDefault(a.ConfirmDelay, 2*time.Second)); err != nil {
			return Result{}, err
		}
		again, err := s.state(ctx)
		if err != nil {
			return Result{}, err
		}
		if again == "off" {
			return Result{PriorState: "off", Action: "none", State: "off"}, nil
		}
		prior = again
	}
	// Switching off is safe whatever the host's state, so an unclear
	// read does not block it.
	if err := s.setPower(ctx, prior, "off"); err != nil {
		return Result{}, err
	}
	if err := s.waitFor(ctx, "off"); err != nil {
		return Result{}, err
	}
	s.log.Info("host powered off", "prior_state", prior)
	return Result{PriorState: prior, Action: "off", State: "off"}, nil
}

// PowerState reads the host's power state once: "on", "off", or the
// provider's word for anything else (such as Redfish's "poweringon").
func (a *Activities) PowerState(ctx context.Context, in Input) (string, error) {
	s, err := a.open(ctx, in, "read power state")
	if err != nil {
		return "", err
	}
	defer s.close()
	return s.state(ctx)
}

// session is one activity's connection to one BMC.
type session struct {
	a       *Activities
	target  string // address:port, for messages and the limiter
	c       Client
	pass    string // only to scrub it from error messages
	credRef string
	log     log.Logger
	timeout time.Duration
	actx    context.Context // the activity's context, for heartbeats

	mu       sync.Mutex
	progress Progress
	stopBeat func()
	release  func()
}

func (a *Activities) open(ctx context.Context, in Input, op string) (*session, error) {
	b := in.BMC
	if b.Provider == "" {
		b.Provider = "ipmi"
	}
	if b.Port == 0 {
		b.Port = 623
		if b.Provider == "redfish" {
			b.Port = 443
		}
	}
	switch {
	case b.Address == "":
		return nil, activities.NonRetryable("bmc.address: required", activities.ErrTypeInvalidInput, nil)
	case b.Provider != "ipmi" && b.Provider != "redfish":
		return nil, activities.NonRetryable(fmt.Sprintf(`bmc.provider: must be "ipmi" or "redfish", got %q`, b.Provider), activities.ErrTypeInvalidInput, nil)
	case b.Port < 1 || b.Port > 65535:
		return nil, activities.NonRetryable(fmt.Sprintf("bmc.port: must be 1-65535, got %d", b.Port), activities.ErrTypeInvalidInput, nil)
	case b.Credential == "":
		return nil, activities.NonRetryable("bmc.credential: required", activities.ErrTypeInvalidInput, nil)
	}
	s := &session{
		a:       a,
		target:  net.JoinHostPort(b.Address, strconv.Itoa(b.Port)),
		timeout: activities.OrDefault(a.CallTimeout, 20*time.Second),
		actx:    ctx,
	}
	s.log = log.With(activity.GetLogger(ctx), "host", in.Host, "bmc", s.target, "op", op)
	// Waits (for a slot, for a slow BMC) must not look like a dead worker.
	s.stopBeat = activities.KeepAlive(ctx, activities.OrDefault(a.HeartbeatInterval, 5*time.Second), func() any {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.progress
	})

	s.step("wait for a slot on bmc " + s.target)
	release, err := a.lim().Acquire(ctx, s.target)
	if err != nil {
		s.stopBeat()
		return nil, fmt.Errorf("wait for a slot on bmc %s: %w", s.target, err)
	}
	s.release = release

	// IPMI's RAKP and Redfish's login both hand the BMC what it needs to
	// replay the password, and the input names the address: the secrets
	// file decides which BMCs this credential may go to.
	if a.Secrets == nil {
		s.close()
		return nil, activities.NonRetryable("bmc activities have no secrets resolver", activities.ErrTypeCredentialNotFound, nil)
	}
	cred, err := secrets.ResolveFor(ctx, a.Secrets, b.Credential, secrets.Use{Dest: b.CredentialDest(), Discloses: true})
	if err != nil {
		s.close()
		if e := activities.CredentialError(fmt.Errorf("bmc credential: %w", err)); e != nil {
			return nil, e
		}
		return nil, fmt.Errorf("resolve bmc credential %q: %w", b.Credential, err)
	}
	if cred.Username == "" && cred.Password == "" {
		s.close()
		return nil, activities.NonRetryable(fmt.Sprintf("bmc credential %q holds no username or password", b.Credential), activities.ErrTypeInvalidCredential, nil)
	}
	s.pass, s.credRef = cred.Password, b.Credential

	conn := Conn{Host: b.Address, Port: b.Port, Provider: b.Provider, User: cred.Username, Password: cred.Password}
	if b.Provider == "redfish" {
		if conn.TLS, err = RedfishTLS(b); err != nil {
			s.close()
			return nil, activities.NonRetryable(fmt.Sprintf("bmc %s: %v", s.target, err), activities.ErrTypeInvalidInput, nil)
		}
	}
	newClient := a.NewClient
	if newClient == nil {
		newClient = BMCLib
	}
	c, err := newClient(ctx, conn)
	if err != nil {
		s.close()
		return nil, temporal.NewApplicationError(fmt.Sprintf("bmc %s: build client: %s", s.target, s.scrub(err.Error())), ErrTypeBMC)
	}
	s.c = c
	s.step("connect to bmc " + s.target)
	if err := s.call(ctx, "connect", c.Open); err != nil {
		s.c = nil // nothing to close
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *session) close() {
	if s.c != nil {
		// Close may log out a Redfish session; give it its own short
		// deadline so a cancelled activity still releases the BMC's slot.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.c.Close(ctx); err != nil {
			s.log.Warn("close bmc connection", "error", s.scrub(err.Error()))
		}
		cancel()
		s.c = nil
	}
	if s.release != nil {
		s.release()
		s.release = nil
	}
	if s.stopBeat != nil {
		s.stopBeat()
	}
}

func (s *session) step(name string) {
	s.mu.Lock()
	s.progress.Step = name
	p := s.progress
	s.mu.Unlock()
	s.log.Debug("bmc step", "step", name)
	activity.RecordHeartbeat(s.actx, p)
}

// call runs one BMC call under CallTimeout and classifies its failure. On
// a Redfish BMC it repeats the call once when the BMC's answer says a
// repeat will do: a 412 (the system changed since bmclib read it; bmclib
// reads it again on every call) or a 401 to a session that worked (it
// expired: log in again first). Temporal owns every other retry.
func (s *session) call(ctx context.Context, what string, f func(context.Context) error) error {
	rc, _ := s.c.(*redfishClient)
	mark := 0
	if rc != nil {
		mark = rc.mark()
	}
	err, timedOut := s.try(ctx, f)
	if err != nil && rc != nil && ctx.Err() == nil && !timedOut {
		switch redo := redfishRedo(rc.since(mark)); {
		case redo == "etag":
			s.log.Info("bmc answered 412: the system changed since it was read; reading it again", "call", what)
			mark = rc.mark()
			err, timedOut = s.try(ctx, f)
		case redo == "session" && what != "connect":
			s.log.Info("bmc session ended; logging in again", "call", what)
			_, _ = s.try(ctx, s.c.Close) // the session is gone; a refused logout changes nothing
			mark = rc.mark()
			if err, timedOut = s.try(ctx, s.c.Open); err == nil {
				mark = rc.mark()
				err, timedOut = s.try(ctx, f)
			}
		}
	}
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		// The activity itself was cancelled or timed out: Temporal knows.
		return fmt.Errorf("bmc %s: %s: %w", s.target, what, ctx.Err())
	}
	msg := s.scrub(strings.Join(strings.Fields(err.Error()), " "))
	s.log.Warn("bmc call failed", "call", what, "error", msg)
	var answers []answer
	if rc != nil {
		answers = rc.since(mark)
	}
	var te *taskError
	switch {
	case timedOut:
		return temporal.NewApplicationError(fmt.Sprintf("bmc %s unreachable: %s: no answer within %v", s.target, what, s.timeout), ErrTypeUnreachable)
	case errors.Is(err, ErrUntrustedCert), errors.As(err, new(*tls.CertificateVerificationError)),
		// bmclib may flatten the chain into text.
		strings.Contains(msg, ErrUntrustedCert.Error()), strings.Contains(msg, "tls: failed to verify certificate"):
		// Nothing was sent: the handshake stopped before any login.
		return activities.NonRetryable(fmt.Sprintf("bmc %s: %s: TLS: %s; trust its certificate with bmc.pin_sha256 or bmc.ca_file", s.target, what, msg), ErrTypeUntrustedCert, nil)
	case errors.As(err, &te):
		return temporal.NewApplicationError(fmt.Sprintf("bmc %s: %s: %s", s.target, what, s.scrub(te.Error())), ErrTypeTaskFailed)
	case len(answers) > 0:
		if e := s.redfishError(what, answers, err.Error()); e != nil {
			return e
		}
	}
	switch {
	case strings.Contains(msg, "Unable to establish IPMI v2 / RMCP+ session"):
		return temporal.NewApplicationError(fmt.Sprintf("bmc %s unreachable or credentials rejected: %s: ipmitool could not open an IPMI session (it does not say which)", s.target, what), ErrTypeNoSession)
	case strings.Contains(msg, "connection refused"), strings.Contains(msg, "no route to host"),
		strings.Contains(msg, "i/o timeout"), strings.Contains(msg, "no such host"), strings.Contains(msg, "network is unreachable"):
		return temporal.NewApplicationError(fmt.Sprintf("bmc %s unreachable: %s: %s", s.target, what, msg), ErrTypeUnreachable)
	default:
		return temporal.NewApplicationError(fmt.Sprintf("bmc %s: %s: %s", s.target, what, msg), ErrTypeBMC)
	}
}

// try runs f under CallTimeout; timedOut says the BMC took all of it.
func (s *session) try(ctx context.Context, f func(context.Context) error) (err error, timedOut bool) {
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	err = f(cctx)
	return err, err != nil && errors.Is(cctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
}

// redfishRedo says whether a failed call's answers call for one repeat:
// "etag" after a 412, "session" after a 401 to a session token (not to a
// login or to Basic auth, which mean the credential is wrong).
func redfishRedo(answers []answer) string {
	for _, a := range answers {
		switch {
		case a.status == http.StatusPreconditionFailed:
			return "etag"
		case a.status == http.StatusUnauthorized && !a.login && !a.basic:
			return "session"
		}
	}
	return ""
}

// redfishError classifies a failed Redfish call by the first error status
// the BMC answered; nil when none says more than the error text.
func (s *session) redfishError(what string, answers []answer, errText string) error {
	for _, a := range answers {
		if a.status < 400 {
			continue
		}
		detail := fmt.Sprintf("%s %s: HTTP %d", a.method, a.path, a.status)
		if m := extendedInfo(errText); m != "" {
			detail += ": " + s.scrub(m)
		}
		switch {
		case a.status == http.StatusUnauthorized && (a.login || a.basic):
			return activities.NonRetryable(fmt.Sprintf("bmc %s rejected the user name or password of credential %q (%s); fix the secret or the BMC account", s.target, s.credRef, detail), activities.ErrTypeInvalidCredential, nil)
		case a.status == http.StatusBadRequest:
			return activities.NonRetryable(fmt.Sprintf("bmc %s refused %s: %s", s.target, what, detail), ErrTypeRefused, nil)
		default:
			return temporal.NewApplicationError(fmt.Sprintf("bmc %s: %s: %s", s.target, what, detail), ErrTypeBMC)
		}
	}
	return nil
}

// scrub removes the password from text that came back from a BMC tool.
func (s *session) scrub(msg string) string {
	if len(s.pass) >= 3 {
		msg = strings.ReplaceAll(msg, s.pass, "[redacted]")
	}
	return msg
}

// state reads the power state once, normalised to "on" or "off" when it is
// one of them.
func (s *session) state(ctx context.Context) (string, error) {
	var raw string
	err := s.call(ctx, "read power state", func(ctx context.Context) error {
		var err error
		raw, err = s.c.GetPowerState(ctx)
		return err
	})
	if err != nil {
		return "", err
	}
	return normalize(raw), nil
}

// normalize maps "Chassis Power is on" (ipmitool) and "On" (Redfish) to
// "on", likewise for off, and lower-cases anything else.
func normalize(raw string) string {
	s := strings.ToLower(strings.TrimSpace(raw))
	switch {
	case s == "on" || strings.HasSuffix(s, " on"):
		return "on"
	case s == "off" || strings.HasSuffix(s, " off"):
		return "off"
	}
	return s
}

// confirmedState reads the power state twice, ConfirmDelay apart, and
// returns it only if both reads agree on "on" or "off".
func (s *session) confirmedState(ctx context.Context) (string, error) {
	s.step("read power state")
	first, err := s.state(ctx)
	if err != nil {
		return "", err
	}
	if err := s.sleep(ctx, activities.OrDefault(s.a.ConfirmDelay, 2*time.Second)); err != nil {
		return "", err
	}
	s.step("confirm power state")
	second, err := s.state(ctx)
	if err != nil {
		return "", err
	}
	if first != second || (first != "on" && first != "off") {
		return "", temporal.NewApplicationError(fmt.Sprintf("bmc %s: power state unconfirmed: read %q, then %q; no power command sent", s.target, first, second), ErrTypeStateUnconfirmed)
	}
	return first, nil
}

func (s *session) setPower(ctx context.Context, prior, action string) error {
	s.step("power " + action)
	if err := s.call(ctx, "power "+action, func(ctx context.Context) error {
		ok, err := s.c.SetPowerState(ctx, action)
		if err == nil && !ok {
			err = errors.New("bmc did not confirm the power command")
		}
		return err
	}); err != nil {
		return err
	}
	// A Redfish BMC may run the reset as a task: it has happened only
	// when the task completes, and only the task says why it failed.
	if rc, ok := s.c.(*redfishClient); ok {
		for _, task := range rc.takeTasks() {
			if err := s.waitTask(ctx, rc, action, task); err != nil {
				return err
			}
		}
	}
	s.mu.Lock()
	s.progress.PriorState, s.progress.Action = prior, action
	s.mu.Unlock()
	s.step("power " + action + " accepted")
	return nil
}

// waitTask polls a BMC task until it ends, for at most SettleTimeout.
func (s *session) waitTask(ctx context.Context, rc *redfishClient, action, task string) error {
	s.step("wait for bmc task " + task)
	limit := activities.OrDefault(s.a.SettleTimeout, 2*time.Minute)
	deadline := time.Now().Add(limit)
	for {
		var state string
		var done bool
		if err := s.call(ctx, "power "+action+": task "+task, func(ctx context.Context) error {
			var err error
			state, done, err = rc.taskState(ctx, task)
			return err
		}); err != nil {
			return err
		}
		if done {
			s.log.Info("bmc task ended", "task", task, "state", state)
			return nil
		}
		if time.Now().After(deadline) {
			return temporal.NewApplicationError(fmt.Sprintf("bmc %s: power %s: task %s still %s %v after the command", s.target, action, task, state, limit), ErrTypeStateTimeout)
		}
		if err := s.sleep(ctx, activities.OrDefault(s.a.PollInterval, 2*time.Second)); err != nil {
			return err
		}
	}
}

// waitFor polls until the power state reads want. Failed reads while the
// host switches are tolerated until SettleTimeout.
func (s *session) waitFor(ctx context.Context, want string) error {
	s.step("wait for power " + want)
	limit := activities.OrDefault(s.a.SettleTimeout, 2*time.Minute)
	deadline := time.Now().Add(limit)
	last := ""
	for {
		st, err := s.state(ctx)
		switch {
		case err == nil && st == want:
			return nil
		case err == nil:
			last = st
		case ctx.Err() != nil:
			return err
		default:
			last = "unreadable"
		}
		if time.Now().After(deadline) {
			return temporal.NewApplicationError(fmt.Sprintf("bmc %s: power still %s %v after the command (wanted %s)", s.target, last, limit, want), ErrTypeStateTimeout)
		}
		if err := s.sleep(ctx, activities.OrDefault(s.a.PollInterval, 2*time.Second)); err != nil {
			return err
		}
	}
}

func (s *session) sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("bmc %s: %w", s.target, ctx.Err())
	}
}
