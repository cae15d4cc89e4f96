package xds

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are Istio's pilot metrics, under Istio's names and labels so its
// dashboards read skiffd unchanged, plus skiff_xds_ack_latency_seconds.
type metrics struct {
	reg *prometheus.Registry

	clients      *prometheus.GaugeVec     // pilot_xds{version}
	pushes       *prometheus.CounterVec   // pilot_xds_pushes{type}
	pushTime     *prometheus.HistogramVec // pilot_xds_push_time{type}
	convergence  prometheus.Histogram     // pilot_proxy_convergence_time
	rejects      *prometheus.CounterVec   // pilot_total_xds_rejects{type}
	expiredNonce *prometheus.CounterVec   // pilot_xds_expired_nonce{type}
	triggers     *prometheus.CounterVec   // pilot_push_triggers{type}
	debounceTime prometheus.Histogram     // pilot_debounce_time
	queueTime    prometheus.Histogram     // pilot_proxy_queue_time
	ackLatency   *prometheus.HistogramVec // skiff_xds_ack_latency_seconds{type}
}

// Istio's buckets, with finer steps below 100 ms where our targets lie.
var latencyBuckets = []float64{.001, .005, .01, .025, .05, .1, .2, .5, 1, 3, 5, 10, 20, 30}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		clients: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pilot_xds", Help: "Number of endpoints connected to this pilot using XDS.",
		}, []string{"version"}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pilot_xds_pushes", Help: "Pilot build and send errors for lds, rds, cds and eds.",
		}, []string{"type"}),
		pushTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "pilot_xds_push_time", Help: "Total time in seconds Pilot takes to push lds, rds, cds and eds.",
			Buckets: latencyBuckets,
		}, []string{"type"}),
		convergence: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "pilot_proxy_convergence_time", Help: "Delay in seconds between config change and a proxy receiving all required configuration.",
			Buckets: latencyBuckets,
		}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pilot_total_xds_rejects", Help: "Total number of XDS responses from pilot rejected by proxy.",
		}, []string{"type"}),
		expiredNonce: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pilot_xds_expired_nonce", Help: "Total number of XDS requests with an expired nonce.",
		}, []string{"type"}),
		triggers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pilot_push_triggers", Help: "Total number of times a push was triggered, labeled by reason for the push.",
		}, []string{"type"}),
		debounceTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "pilot_debounce_time", Help: "Delay in seconds between the first config enters debouncing and the merged push request is pushed into the push queue.",
			Buckets: latencyBuckets,
		}),
		queueTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "pilot_proxy_queue_time", Help: "Time in seconds, a proxy is in the push queue before being dequeued.",
			Buckets: latencyBuckets,
		}),
		ackLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "skiff_xds_ack_latency_seconds", Help: "Time in seconds from sending an xDS response to receiving its ACK or NACK.",
			Buckets: latencyBuckets,
		}, []string{"type"}),
	}
	m.reg.MustRegister(m.clients, m.pushes, m.pushTime, m.convergence, m.rejects,
		m.expiredNonce, m.triggers, m.debounceTime, m.queueTime, m.ackLatency)
	return m
}
