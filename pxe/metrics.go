package pxe

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	leasePuts      *prometheus.CounterVec
	leaseDeletes   prometheus.Counter
	hostKeyFetches *prometheus.CounterVec
	httpBytes      *prometheus.CounterVec
	httpRequests   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, store *Store) (*metrics, error) {
	m := &metrics{
		leasePuts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackflow_pxe_lease_puts_total",
			Help: "Lease PUTs by result: created, updated, unchanged, invalid, conflict, error.",
		}, []string{"result"}),
		leaseDeletes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackflow_pxe_lease_deletes_total",
			Help: "Lease DELETEs answered, including those of absent leases.",
		}),
		hostKeyFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackflow_pxe_hostkey_fetches_total",
			Help: "Host key fetches by result: served, gone (already fetched), refused (not from the lease's IP), not_found, error.",
		}, []string{"result"}),
		httpBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackflow_pxe_http_bytes_served_total",
			Help: "Response body bytes written, by route.",
		}, []string{"route"}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackflow_pxe_http_requests_total",
			Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
	}
	leases := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rackflow_pxe_leases",
		Help: "Unexpired leases held.",
	}, func() float64 { return float64(store.Len()) })
	for _, c := range []prometheus.Collector{m.leasePuts, m.leaseDeletes, m.hostKeyFetches, m.httpBytes, m.httpRequests, leases} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
