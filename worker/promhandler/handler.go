// Package promhandler exposes the Temporal SDK's metrics (client.MetricsHandler)
// as Prometheus metrics without tally or OpenTelemetry. The SDK tags one
// metric name with different tag sets in different places; Prometheus wants
// one label set per family, so every series of a family is exported with the
// union of the tag keys seen for it, missing ones empty. It is not a general
// metrics library: only what the SDK emits.
package promhandler

import (
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.temporal.io/sdk/client"
)

// Buckets of timer histograms, in seconds: from a fast poll to a long activity.
var Buckets = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800}

type kind int

const (
	counterKind kind = iota
	gaugeKind
	timerKind
)

type series struct {
	labels  map[string]string
	value   float64 // counter total or gauge value
	count   uint64  // timer
	sum     float64
	buckets []uint64
}

type family struct {
	kind   kind
	keys   map[string]bool
	series map[string]*series
}

// Handler is both the SDK's MetricsHandler and a prometheus.Collector.
type Handler struct {
	prefix string
	root   *state
	tags   map[string]string
}

type state struct {
	mu       sync.Mutex
	families map[string]*family
}

// New returns a handler whose metric names get prefix (for example
// "temporal_"); register it with a prometheus.Registerer.
func New(prefix string) *Handler {
	return &Handler{prefix: prefix, root: &state{families: map[string]*family{}}, tags: map[string]string{}}
}

var _ client.MetricsHandler = (*Handler)(nil)
var _ prometheus.Collector = (*Handler)(nil)

// WithTags implements client.MetricsHandler.
func (h *Handler) WithTags(tags map[string]string) client.MetricsHandler {
	merged := make(map[string]string, len(h.tags)+len(tags))
	for k, v := range h.tags {
		merged[k] = v
	}
	for k, v := range tags {
		merged[sanitize(k)] = v
	}
	return &Handler{prefix: h.prefix, root: h.root, tags: merged}
}

// Counter implements client.MetricsHandler.
func (h *Handler) Counter(name string) client.MetricsCounter {
	return counterFunc(func(d int64) {
		h.root.observe(h.name(name), counterKind, h.tags, func(s *series) { s.value += float64(d) })
	})
}

// Gauge implements client.MetricsHandler.
func (h *Handler) Gauge(name string) client.MetricsGauge {
	return gaugeFunc(func(v float64) {
		h.root.observe(h.name(name), gaugeKind, h.tags, func(s *series) { s.value = v })
	})
}

// Timer implements client.MetricsHandler.
func (h *Handler) Timer(name string) client.MetricsTimer {
	return timerFunc(func(d time.Duration) {
		sec := d.Seconds()
		h.root.observe(h.name(name), timerKind, h.tags, func(s *series) {
			if s.buckets == nil {
				s.buckets = make([]uint64, len(Buckets))
			}
			s.count++
			s.sum += sec
			for i, b := range Buckets {
				if sec <= b {
					s.buckets[i]++
				}
			}
		})
	})
}

type counterFunc func(int64)

func (f counterFunc) Inc(d int64) { f(d) }

type gaugeFunc func(float64)

func (f gaugeFunc) Update(v float64) { f(v) }

type timerFunc func(time.Duration)

func (f timerFunc) Record(d time.Duration) { f(d) }

func (h *Handler) name(n string) string {
	n = sanitize(n)
	if h.prefix != "" && !strings.HasPrefix(n, h.prefix) {
		n = h.prefix + n
	}
	return n
}

func (st *state) observe(name string, k kind, tags map[string]string, f func(*series)) {
	st.mu.Lock()
	defer st.mu.Unlock()
	fam := st.families[name]
	if fam == nil {
		fam = &family{kind: k, keys: map[string]bool{}, series: map[string]*series{}}
		st.families[name] = fam
	}
	if fam.kind != k {
		return // the same name used as two kinds: keep the first, never panic
	}
	for key := range tags {
		fam.keys[key] = true
	}
	id := seriesID(tags)
	s := fam.series[id]
	if s == nil {
		s = &series{labels: tags}
		fam.series[id] = s
	}
	f(s)
}

func seriesID(tags map[string]string) string {
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(tags[k])
		b.WriteByte(0)
	}
	return b.String()
}

// Describe sends nothing: the handler is an unchecked collector, because
// families appear as the SDK emits them.
func (h *Handler) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (h *Handler) Collect(ch chan<- prometheus.Metric) {
	st := h.root
	st.mu.Lock()
	defer st.mu.Unlock()
	for name, fam := range st.families {
		keys := make([]string, 0, len(fam.keys))
		for k := range fam.keys {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		desc := prometheus.NewDesc(name, "Temporal SDK metric "+name, keys, nil)
		for _, s := range fam.series {
			vals := make([]string, len(keys))
			for i, k := range keys {
				vals[i] = s.labels[k]
			}
			var m prometheus.Metric
			var err error
			switch fam.kind {
			case counterKind:
				m, err = prometheus.NewConstMetric(desc, prometheus.CounterValue, s.value, vals...)
			case gaugeKind:
				m, err = prometheus.NewConstMetric(desc, prometheus.GaugeValue, s.value, vals...)
			case timerKind:
				b := make(map[float64]uint64, len(Buckets))
				for i, ub := range Buckets {
					b[ub] = s.buckets[i]
				}
				m, err = prometheus.NewConstHistogram(desc, s.count, s.sum, b, vals...)
			}
			if err == nil && !math.IsNaN(s.value) {
				ch <- m
			}
		}
	}
}

func sanitize(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '_', r == ':':
			b.WriteRune(r)
		case r >= '0' && r <= '9' && i > 0:
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}
