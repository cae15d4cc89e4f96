package core

import "github.com/skiff-mesh/skiff/pkg/stats"

// ClusterStats are a cluster's Envoy-named statistics. The router updates
// the request counters; the upstream package updates the pool, breaker,
// health and outlier ones.
type ClusterStats struct {
	RqTotal, Rq2xx, Rq3xx, Rq4xx, Rq5xx      *stats.Counter
	RqActive                                 *stats.Gauge
	RqPendingTotal, RqPendingOverflow        *stats.Counter
	RqPendingActive                          *stats.Gauge
	RqRetry, RqRetrySuccess, RqRetryOverflow *stats.Counter
	RqRetryLimitExceeded                     *stats.Counter
	RqTimeout, RqPerTryTimeout               *stats.Counter
	RqRxReset, RqTxReset                     *stats.Counter
	RqCancelled                              *stats.Counter
	CxTotal, CxConnectFail, CxOverflow       *stats.Counter
	CxDestroy, CxNoneHealthy                 *stats.Counter
	CxActive                                 *stats.Gauge
	MembershipHealthy, MembershipTotal       *stats.Gauge
	OutlierEjectionsActive                   *stats.Gauge
	OutlierEjectionsTotal                    *stats.Counter
	OutlierEjectionsEnforcedTotal            *stats.Counter
	OutlierEjectionsConsecutive5xx           *stats.Counter
	OutlierEjectionsGatewayFailure           *stats.Counter
	OutlierEjectionsSuccessRate              *stats.Counter
	HealthCheckAttempt, HealthCheckSuccess   *stats.Counter
	HealthCheckFailure                       *stats.Counter
	RqTime                                   *stats.Histogram
}

// NewClusterStats creates (or finds) the statistics of cluster name in s.
func NewClusterStats(s *stats.Store, name string) *ClusterStats {
	sc := s.Scope("cluster."+name, "cluster", stats.Tag{Name: "cluster_name", Value: name})
	return &ClusterStats{
		RqTotal: sc.Counter("upstream_rq_total"), Rq2xx: sc.Counter("upstream_rq_2xx"),
		Rq3xx: sc.Counter("upstream_rq_3xx"), Rq4xx: sc.Counter("upstream_rq_4xx"),
		Rq5xx: sc.Counter("upstream_rq_5xx"), RqActive: sc.Gauge("upstream_rq_active"),
		RqPendingTotal: sc.Counter("upstream_rq_pending_total"), RqPendingOverflow: sc.Counter("upstream_rq_pending_overflow"),
		RqPendingActive: sc.Gauge("upstream_rq_pending_active"),
		RqRetry:         sc.Counter("upstream_rq_retry"), RqRetrySuccess: sc.Counter("upstream_rq_retry_success"),
		RqRetryOverflow: sc.Counter("upstream_rq_retry_overflow"), RqRetryLimitExceeded: sc.Counter("upstream_rq_retry_limit_exceeded"),
		RqTimeout: sc.Counter("upstream_rq_timeout"), RqPerTryTimeout: sc.Counter("upstream_rq_per_try_timeout"),
		RqRxReset: sc.Counter("upstream_rq_rx_reset"), RqTxReset: sc.Counter("upstream_rq_tx_reset"),
		RqCancelled: sc.Counter("upstream_rq_cancelled"),
		CxTotal:     sc.Counter("upstream_cx_total"), CxConnectFail: sc.Counter("upstream_cx_connect_fail"),
		CxOverflow: sc.Counter("upstream_cx_overflow"), CxDestroy: sc.Counter("upstream_cx_destroy"),
		CxNoneHealthy: sc.Counter("upstream_cx_none_healthy"), CxActive: sc.Gauge("upstream_cx_active"),
		MembershipHealthy: sc.Gauge("membership_healthy"), MembershipTotal: sc.Gauge("membership_total"),
		OutlierEjectionsActive:         sc.Gauge("outlier_detection.ejections_active"),
		OutlierEjectionsTotal:          sc.Counter("outlier_detection.ejections_total"),
		OutlierEjectionsEnforcedTotal:  sc.Counter("outlier_detection.ejections_enforced_total"),
		OutlierEjectionsConsecutive5xx: sc.Counter("outlier_detection.ejections_enforced_consecutive_5xx"),
		OutlierEjectionsGatewayFailure: sc.Counter("outlier_detection.ejections_enforced_consecutive_gateway_failure"),
		OutlierEjectionsSuccessRate:    sc.Counter("outlier_detection.ejections_enforced_success_rate"),
		HealthCheckAttempt:             sc.Counter("health_check.attempt"), HealthCheckSuccess: sc.Counter("health_check.success"),
		HealthCheckFailure: sc.Counter("health_check.failure"),
		RqTime:             sc.Histogram("upstream_rq_time"),
	}
}

// CountStatus adds one response to the total and its status-class counter.
func (s *ClusterStats) CountStatus(code int) {
	switch code / 100 {
	case 2:
		s.Rq2xx.Inc()
	case 3:
		s.Rq3xx.Inc()
	case 4:
		s.Rq4xx.Inc()
	case 5:
		s.Rq5xx.Inc()
	}
}
