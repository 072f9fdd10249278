package pxe

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rackflow/rackflow/pxe/lease"
)

var (
	// ErrHostKeyGone is returned when a host key was already fetched.
	ErrHostKeyGone = errors.New("host key already fetched")
	// ErrWrongRequester is returned when a boot route is asked for by an
	// address other than the lease's IP.
	ErrWrongRequester = errors.New("request not from the lease's IP")
	// ErrLocked is returned when another process holds the state file.
	ErrLocked = errors.New("state file in use by another process")
)

// ConflictError says which MAC already holds the IP.
type ConflictError struct {
	IP    string
	Owner string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("ip %s already leased to %s", e.IP, e.Owner)
}

// Is makes errors.Is(err, lease.ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == lease.ErrConflict }

// StoreConfig configures a Store. Its zero value is a store that lives in
// memory only.
type StoreConfig struct {
	// Path is the JSON state file, written with mode 0600 because it holds
	// unfetched host private keys. Empty: nothing is persisted.
	Path string
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Store holds the leases. Every change is on disk (written to a temporary
// file, fsynced, renamed over the state file, directory fsynced) before the
// call returns, so an acknowledged PUT survives a crash and a crash never
// leaves a truncated state file.
type Store struct {
	path string
	now  func() time.Time
	lock *os.File

	mu      sync.Mutex
	records map[string]*record // by normalised MAC
}

// record is a lease with its secret half, which only the state file and
// TakeHostKey ever see.
type record struct {
	Lease   lease.Lease    `json:"lease"`
	HostKey *hostKeySecret `json:"host_key_secret,omitempty"`
}

type hostKeySecret struct {
	// Token is the one-time capability in /v1/hostkeys/{token}.
	Token string `json:"token"`
	// PrivatePEM is the OpenSSH private key, wiped once fetched.
	PrivatePEM string    `json:"private_pem,omitempty"`
	FetchedAt  time.Time `json:"fetched_at,omitzero"`
}

type stateFile struct {
	Version int       `json:"version"`
	Records []*record `json:"leases"`
}

const stateVersion = 1

// OpenStore loads the state file (a missing file is an empty store) and
// removes temporary files a crash may have left beside it. It takes an
// exclusive lock on Path+".lock" until Close, so two services never write
// the same file.
func OpenStore(cfg StoreConfig) (*Store, error) {
	s := &Store{path: cfg.Path, now: cfg.Now, records: map[string]*record{}}
	if s.now == nil {
		s.now = time.Now
	}
	if s.path == "" {
		return s, nil
	}
	lock, err := os.OpenFile(s.path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lease store lock: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("open lease store %s: %w", s.path, ErrLocked)
	}
	s.lock = lock
	if err := s.load(); err != nil {
		s.Close()
		return nil, err
	}
	s.removeTempFiles()
	if s.prune() > 0 {
		if err := s.persist(s.records); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// Close releases the state file's lock. The store must not be used after.
func (s *Store) Close() error {
	if s.lock == nil {
		return nil
	}
	err := s.lock.Close()
	s.lock = nil
	return err
}

func (s *Store) load() error {
	data, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read lease store: %w", err)
	}
	var st stateFile
	if err := json.Unmarshal(data, &st); err != nil {
		// Refuse to start rather than start empty: serving no leases would
		// silently break every boot in flight.
		return fmt.Errorf("parse lease store %s: %w", s.path, err)
	}
	if st.Version != stateVersion {
		return fmt.Errorf("parse lease store %s: unsupported version %d", s.path, st.Version)
	}
	for _, r := range st.Records {
		if r == nil {
			continue
		}
		mac, err := lease.NormalizeMAC(r.Lease.MAC)
		if err != nil {
			return fmt.Errorf("parse lease store %s: mac %q: %w", s.path, r.Lease.MAC, err)
		}
		r.Lease.MAC = mac
		s.records[mac] = r
	}
	return nil
}

func (s *Store) tempPattern() string { return "." + filepath.Base(s.path) + ".tmp-*" }

func (s *Store) removeTempFiles() {
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(s.path), s.tempPattern()))
	for _, m := range matches {
		os.Remove(m)
	}
}

// persist writes recs as the new state. The caller holds mu and commits recs
// to memory only if persist succeeds.
func (s *Store) persist(recs map[string]*record) error {
	if s.path == "" {
		return nil
	}
	st := stateFile{Version: stateVersion}
	for _, r := range recs {
		st.Records = append(st.Records, r)
	}
	slices.SortFunc(st.Records, func(a, b *record) int { return strings.Compare(a.Lease.MAC, b.Lease.MAC) })
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode lease store: %w", err)
	}
	dir := filepath.Dir(s.path)
	tmp, err := os.CreateTemp(dir, s.tempPattern())
	if err != nil {
		return fmt.Errorf("write lease store: %w", err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// CreateTemp already uses 0600; Chmod guards against an odd umask-less FS.
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("write lease store: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write lease store: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync lease store: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write lease store: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.path); err != nil {
		return fmt.Errorf("replace lease store: %w", err)
	}
	done = true
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync lease store dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync lease store dir: %w", err)
	}
	return nil
}

// prune drops expired leases from memory and reports how many. Caller holds mu.
func (s *Store) prune() int {
	now := s.now()
	n := 0
	for mac, r := range s.records {
		if r.Lease.Expired(now) {
			delete(s.records, mac)
			n++
		}
	}
	return n
}

// Prune removes expired leases (and their unfetched keys) from memory and
// disk, and reports how many it removed.
func (s *Store) Prune(ctx context.Context) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.cloneLive()
	n := len(s.records) - len(next)
	if n == 0 {
		return 0, nil
	}
	if err := s.persist(next); err != nil {
		return 0, err
	}
	s.records = next
	return n, nil
}

// cloneLive copies the map of unexpired records. Caller holds mu.
func (s *Store) cloneLive() map[string]*record {
	now := s.now()
	next := make(map[string]*record, len(s.records))
	for mac, r := range s.records {
		if !r.Lease.Expired(now) {
			next[mac] = r
		}
	}
	return next
}

// PutResult says what a Put did, for metrics and logs.
type PutResult string

const (
	PutCreated   PutResult = "created"
	PutUpdated   PutResult = "updated"
	PutUnchanged PutResult = "unchanged"
)

// Put validates and stores a lease and returns it as stored, with its host
// key. A live lease that is new, has a new BootID or has no key yet gets a
// fresh ed25519 host key; otherwise the key is kept, so repeating a PUT
// returns the same key. A disk or none lease carries no host key: there is no
// live system to use it, and an unfetched private key is a liability.
func (s *Store) Put(ctx context.Context, l lease.Lease) (lease.Lease, PutResult, error) {
	if err := l.Validate(s.now()); err != nil {
		return lease.Lease{}, "", err
	}
	l = l.Normalized()

	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.cloneLive()
	for mac, r := range next {
		if mac != l.MAC && r.Lease.IP == l.IP {
			return lease.Lease{}, "", &ConflictError{IP: l.IP, Owner: mac}
		}
	}
	old := next[l.MAC]
	if old != nil && sameRequest(old.Lease, l) {
		// A retried PUT: answer as before, writing only if expired leases
		// were dropped on the way.
		if len(next) != len(s.records) {
			if err := s.persist(next); err != nil {
				return lease.Lease{}, "", err
			}
			s.records = next
		}
		return old.Lease, PutUnchanged, nil
	}
	result := PutCreated
	if old != nil {
		result = PutUpdated
	}
	rec := &record{Lease: l}
	switch {
	case l.Profile != lease.ProfileLive:
	case old != nil && old.HostKey != nil && old.Lease.HostKey != "" && old.Lease.BootID == l.BootID:
		// The same boot: its key, who fetched it and what was refused stay.
		rec.HostKey = old.HostKey
		rec.Lease.HostKey = old.Lease.HostKey
		rec.Lease.HostKeyFetchedFrom, rec.Lease.HostKeyFetchedAt = old.Lease.HostKeyFetchedFrom, old.Lease.HostKeyFetchedAt
		rec.Lease.Refusals = old.Lease.Refusals
	default:
		pub, secret, err := newHostKey(l)
		if err != nil {
			return lease.Lease{}, "", err
		}
		rec.HostKey = secret
		rec.Lease.HostKey = pub
	}
	rec.Lease.UpdatedAt = s.now().UTC()
	next[l.MAC] = rec
	if err := s.persist(next); err != nil {
		return lease.Lease{}, "", err
	}
	s.records = next
	return rec.Lease, result, nil
}

// sameRequest compares the fields a PUT sets.
func sameRequest(a, b lease.Lease) bool {
	return a.MAC == b.MAC && a.IP == b.IP && a.Netmask == b.Netmask && a.Gateway == b.Gateway &&
		slices.Equal(a.DNS, b.DNS) && a.Hostname == b.Hostname && a.Profile == b.Profile &&
		a.ExpiresAt.Equal(b.ExpiresAt) && a.BootID == b.BootID &&
		slices.Equal(a.SSHAuthorizedKeys, b.SSHAuthorizedKeys)
}

func newHostKey(l lease.Lease) (string, *hostKeySecret, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", nil, fmt.Errorf("generate host key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return "", nil, fmt.Errorf("generate host key: %w", err)
	}
	comment := "rackflow-live@" + l.MAC
	if l.Hostname != "" {
		comment = "rackflow-live@" + l.Hostname
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return "", nil, fmt.Errorf("encode host key: %w", err)
	}
	token := make([]byte, 32)
	if _, err := rand.Read(token); err != nil {
		return "", nil, fmt.Errorf("generate host key token: %w", err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))), &hostKeySecret{
		Token:      hex.EncodeToString(token),
		PrivatePEM: string(pem.EncodeToMemory(block)),
	}, nil
}

// Get returns the unexpired lease of mac. It is what the DHCP and TFTP
// servers read.
func (s *Store) Get(ctx context.Context, mac net.HardwareAddr) (lease.Lease, bool, error) {
	if len(mac) != 6 {
		return lease.Lease{}, false, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.records[mac.String()]
	if !ok || r.Lease.Expired(s.now()) {
		return lease.Lease{}, false, nil
	}
	return r.Lease, true, nil
}

// Lookup is Get for a MAC in text form; an unparsable MAC is not found.
func (s *Store) Lookup(ctx context.Context, mac string) (lease.Lease, bool, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return lease.Lease{}, false, nil
	}
	return s.Get(ctx, hw)
}

// macByIP returns the MAC whose unexpired lease holds ip, or "".
func (s *Store) macByIP(ip string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for mac, r := range s.records {
		if r.Lease.IP == ip && !r.Lease.Expired(now) {
			return mac
		}
	}
	return ""
}

// hostKeyToken returns the token of mac's unexpired live lease, if any.
func (s *Store) hostKeyToken(mac string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.records[mac]
	if !ok || r.HostKey == nil || r.Lease.Expired(s.now()) {
		return ""
	}
	return r.HostKey.Token
}

// List returns the unexpired leases sorted by MAC.
func (s *Store) List(ctx context.Context) ([]lease.Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	out := make([]lease.Lease, 0, len(s.records))
	for _, r := range s.records {
		if !r.Lease.Expired(now) {
			out = append(out, r.Lease)
		}
	}
	slices.SortFunc(out, func(a, b lease.Lease) int { return strings.Compare(a.MAC, b.MAC) })
	return out, nil
}

// Delete removes mac's lease. Deleting an absent lease is not an error.
func (s *Store) Delete(ctx context.Context, mac net.HardwareAddr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.cloneLive()
	delete(next, mac.String())
	if len(next) == len(s.records) {
		return nil
	}
	if err := s.persist(next); err != nil {
		return err
	}
	s.records = next
	return nil
}

// Len returns the number of unexpired leases.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	n := 0
	for _, r := range s.records {
		if !r.Lease.Expired(now) {
			n++
		}
	}
	return n
}

// TakeHostKey returns the OpenSSH PEM private host key behind token, once,
// and only to the lease's own IP (from): the key is wiped from the state file
// before it is returned, so a crash can lose it but never serve it twice. A
// request from another address gives ErrWrongRequester, a token already
// used ErrHostKeyGone; both are recorded in the lease's Refusals, where the
// worker sees them. An unknown token, or one whose lease expired or got a
// new key, gives lease.ErrNotFound.
func (s *Store) TakeHostKey(ctx context.Context, token string, from netip.Addr) ([]byte, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var found *record
	for _, r := range s.records {
		// Constant-time: a timing side channel must not help guess a token.
		if r.HostKey != nil && subtle.ConstantTimeCompare([]byte(r.HostKey.Token), []byte(token)) == 1 {
			found = r
		}
	}
	if found == nil || found.Lease.Expired(now) {
		return nil, "", lease.ErrNotFound
	}
	mac := found.Lease.MAC
	if !fromLease(found.Lease, from) {
		return nil, mac, s.refuseLocked(mac, "host key", from, lease.RefusedOtherIP, ErrWrongRequester)
	}
	if found.HostKey.PrivatePEM == "" {
		return nil, mac, s.refuseLocked(mac, "host key", from, lease.RefusedSecondFetch, ErrHostKeyGone)
	}
	updated := *found
	updated.HostKey = &hostKeySecret{Token: found.HostKey.Token, FetchedAt: now.UTC()}
	updated.Lease.HostKeyFetchedFrom = from.Unmap().String()
	updated.Lease.HostKeyFetchedAt = now.UTC()
	next := s.cloneLive()
	next[mac] = &updated
	if err := s.persist(next); err != nil {
		return nil, mac, err
	}
	s.records = next
	return []byte(found.HostKey.PrivatePEM), mac, nil
}

// CheckRequester returns the unexpired lease of mac when from is its IP.
// A request from any other address is recorded in the lease's Refusals and
// answered with ErrWrongRequester; the route names what was asked for.
func (s *Store) CheckRequester(ctx context.Context, mac, route string, from netip.Addr) (lease.Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.records[mac]
	if !ok || r.Lease.Expired(s.now()) {
		return lease.Lease{}, lease.ErrNotFound
	}
	if !fromLease(r.Lease, from) {
		return lease.Lease{}, s.refuseLocked(mac, route, from, lease.RefusedOtherIP, ErrWrongRequester)
	}
	return r.Lease, nil
}

func fromLease(l lease.Lease, from netip.Addr) bool {
	ip, err := netip.ParseAddr(l.IP)
	return err == nil && from.IsValid() && from.Unmap() == ip
}

// refuseLocked records a refused request in mac's lease and returns kind.
// Only live leases record refusals: a disk or none lease hands out nothing
// secret. s.mu must be held.
func (s *Store) refuseLocked(mac, route string, from netip.Addr, reason string, kind error) error {
	r, ok := s.records[mac]
	if !ok || r.Lease.Profile != lease.ProfileLive {
		return kind
	}
	updated := *r
	refusals := append(slices.Clone(r.Lease.Refusals), lease.Refusal{Route: route, From: from.Unmap().String(), Reason: reason, At: s.now().UTC()})
	if over := len(refusals) - lease.MaxRefusals; over > 0 {
		refusals = refusals[over:]
	}
	updated.Lease.Refusals = refusals
	next := s.cloneLive()
	next[mac] = &updated
	if err := s.persist(next); err != nil {
		return errors.Join(kind, err)
	}
	s.records = next
	return kind
}
