package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sort"
	"sync/atomic"
	"time"
)

// bmcEndpoint is one fake BMC address. It answers for the machines behind
// it: one, or several as a blade chassis' manager does, told apart by the
// login (each host has its own credential). It counts the calls it serves
// at once, from the moment a request arrives until it is answered: the
// worker's per-BMC limit must hold here, whatever the worker believes.
type bmcEndpoint struct {
	addr     string
	latency  time.Duration // how long each call takes, as a slow BMC's would
	machines map[string]*machine
	srv      *http.Server

	inFlight atomic.Int64
	peak     atomic.Int64
	calls    atomic.Int64
}

func newBMCEndpoint(addr string, latency time.Duration) *bmcEndpoint {
	return &bmcEndpoint{addr: addr, latency: latency, machines: map[string]*machine{}}
}

// add puts m behind this BMC; its bmcUser must be unique here.
func (e *bmcEndpoint) add(m *machine) { e.machines[m.bmcUser] = m }

func (e *bmcEndpoint) serve() error {
	ln, err := net.Listen("tcp", e.addr)
	if err != nil {
		return fmt.Errorf("bmc %s: %w", e.addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /power", e.call(func(m *machine, w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		st := "off"
		if m.power {
			st = "on"
		}
		m.mu.Unlock()
		_ = json.NewEncoder(w).Encode(bmcState{State: st})
	}))
	mux.HandleFunc("POST /power", e.call(func(m *machine, w http.ResponseWriter, r *http.Request) {
		var req bmcState
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		if err := m.setPower(req.State); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("POST /bootdev", e.call(func(m *machine, w http.ResponseWriter, r *http.Request) {
		var req bmcBootDev
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || (req.Device != "pxe" && req.Device != "disk") {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		m.mu.Lock()
		m.bootDev, m.bootOnce = req.Device, !req.Persistent
		m.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	e.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = e.srv.Serve(ln) }()
	return nil
}

// call counts the request as one call in flight, takes the BMC's latency,
// checks the login and hands the request to its machine.
func (e *bmcEndpoint) call(next func(*machine, http.ResponseWriter, *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		e.calls.Add(1)
		n := e.inFlight.Add(1)
		defer e.inFlight.Add(-1)
		for {
			p := e.peak.Load()
			if n <= p || e.peak.CompareAndSwap(p, n) {
				break
			}
		}
		if e.latency > 0 {
			time.Sleep(e.latency)
		}
		u, p, ok := r.BasicAuth()
		m := e.machines[u]
		if !ok || m == nil || subtle.ConstantTimeCompare([]byte(p), []byte(m.bmcPass)) != 1 {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		next(m, w, r)
	}
}

func (e *bmcEndpoint) shutdown() {
	if e.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = e.srv.Shutdown(ctx)
}

// bmcLoad is what the fleet's BMCs saw.
type bmcLoad struct {
	bmcs  int
	calls int64
	peak  int64    // the most calls any BMC served at once
	over  []string // BMCs that saw more than the limit, with their peak
}

func measureBMCs(es []*bmcEndpoint, limit int) bmcLoad {
	l := bmcLoad{bmcs: len(es)}
	for _, e := range es {
		p := e.peak.Load()
		l.calls += e.calls.Load()
		l.peak = max(l.peak, p)
		if p > int64(limit) {
			l.over = append(l.over, fmt.Sprintf("%s (%d hosts): %d at once", e.addr, len(e.machines), p))
		}
	}
	sort.Strings(l.over)
	return l
}
