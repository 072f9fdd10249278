package dhcp

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	replies *prometheus.CounterVec // by type: offer, ack, nak
	ignored *prometheus.CounterVec // by reason
}

func newMetrics() *metrics {
	return &metrics{
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackflow_pxe_dhcp_replies_total",
			Help: "DHCP replies sent, by message type: offer, ack, nak.",
		}, []string{"type"}),
		ignored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackflow_pxe_dhcp_ignored_total",
			Help: "DHCP packets not answered, by reason: malformed, unregistered, expired, profile_none, backend_error, other_server, not_pxe, unknown_relay, unsupported.",
		}, []string{"reason"}),
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	for _, c := range []**prometheus.CounterVec{&m.replies, &m.ignored} {
		if err := r.Register(*c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				// A second Server on the same registry (e.g. restarted)
				// counts into the counters already there.
				if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
					*c = existing
					continue
				}
			}
			return fmt.Errorf("register dhcp metrics: %w", err)
		}
	}
	return nil
}
