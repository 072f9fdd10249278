package tftp

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	transfers *prometheus.CounterVec
	bytes     prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		transfers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackflow_pxe_tftp_transfers_total",
			Help: "TFTP read requests by result: ok, size_probe (tsize read, then ended by the client), not_found, forbidden, busy, failed.",
		}, []string{"result"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackflow_pxe_tftp_bytes_sent_total",
			Help: "File bytes sent over TFTP.",
		}),
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	if err := r.Register(m.transfers); err != nil {
		existing, ok := alreadyRegistered(err).(*prometheus.CounterVec)
		if !ok {
			return fmt.Errorf("register tftp metrics: %w", err)
		}
		m.transfers = existing // a second Server on one registry shares the series
	}
	if err := r.Register(m.bytes); err != nil {
		existing, ok := alreadyRegistered(err).(prometheus.Counter)
		if !ok {
			return fmt.Errorf("register tftp metrics: %w", err)
		}
		m.bytes = existing
	}
	return nil
}

func alreadyRegistered(err error) prometheus.Collector {
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		return are.ExistingCollector
	}
	return nil
}
