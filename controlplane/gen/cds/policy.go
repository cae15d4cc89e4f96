package cds

import (
	"cmp"
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiff-mesh/skiff/controlplane/model"
)

// TrafficPolicyFor is the traffic policy that applies to one port of one
// subset (nil: the service itself) under a DestinationRule, merged as
// Istio merges it: the subset's policy overrides the rule's, section by
// section (load balancer, connection pool, outlier detection, TLS), and
// in each a matching portLevelSettings entry overrides the rest. It
// returns nil when nothing applies.
func TrafficPolicyFor(dr *networking.DestinationRule, port int, subset *networking.Subset) *networking.TrafficPolicy {
	out := atPort(dr.GetTrafficPolicy(), port)
	if s := atPort(subset.GetTrafficPolicy(), port); s != nil {
		if out == nil {
			return s
		}
		if s.LoadBalancer != nil {
			out.LoadBalancer = s.LoadBalancer
		}
		if s.ConnectionPool != nil {
			out.ConnectionPool = s.ConnectionPool
		}
		if s.OutlierDetection != nil {
			out.OutlierDetection = s.OutlierDetection
		}
		if s.Tls != nil {
			out.Tls = s.Tls
		}
	}
	return out
}

// atPort applies a policy's port-level settings for port to its top
// level, returning a new policy without port-level settings.
func atPort(tp *networking.TrafficPolicy, port int) *networking.TrafficPolicy {
	if tp == nil {
		return nil
	}
	out := &networking.TrafficPolicy{
		LoadBalancer: tp.LoadBalancer, ConnectionPool: tp.ConnectionPool,
		OutlierDetection: tp.OutlierDetection, Tls: tp.Tls,
	}
	for _, pl := range tp.GetPortLevelSettings() {
		if int(pl.GetPort().GetNumber()) != port {
			continue
		}
		if pl.LoadBalancer != nil {
			out.LoadBalancer = pl.LoadBalancer
		}
		if pl.ConnectionPool != nil {
			out.ConnectionPool = pl.ConnectionPool
		}
		if pl.OutlierDetection != nil {
			out.OutlierDetection = pl.OutlierDetection
		}
		if pl.Tls != nil {
			out.Tls = pl.Tls
		}
		break
	}
	return out
}

// defaultThresholds are Istio's circuit breakers when none are set: no
// limit (Envoy's own defaults, 1024, would throttle a busy proxy).
func defaultThresholds() *clusterv3.CircuitBreakers_Thresholds {
	const unlimited = 4294967295
	return &clusterv3.CircuitBreakers_Thresholds{
		MaxConnections:     wrapperspb.UInt32(unlimited),
		MaxPendingRequests: wrapperspb.UInt32(unlimited),
		MaxRequests:        wrapperspb.UInt32(unlimited),
		MaxRetries:         wrapperspb.UInt32(unlimited),
		TrackRemaining:     true,
	}
}

// builder accumulates settings that several policy sections contribute
// to (circuit breakers, HTTP protocol options) and writes them once.
type builder struct {
	c          *clusterv3.Cluster
	thresholds *clusterv3.CircuitBreakers_Thresholds
	http       *httpv3.HttpProtocolOptions
	proxyType  string // of the proxy the cluster is for
}

// http2 reports whether the cluster speaks HTTP/2 upstream (Istio's
// isHttp2Cluster): such clusters offer "h2" in their TLS ALPN.
func (b *builder) http2() bool {
	e, ok := b.http.GetUpstreamProtocolOptions().(*httpv3.HttpProtocolOptions_ExplicitHttpConfig_)
	return ok && e.ExplicitHttpConfig.GetHttp2ProtocolOptions() != nil
}

func (b *builder) httpOptions() *httpv3.HttpProtocolOptions {
	if b.http == nil {
		b.http = &httpv3.HttpProtocolOptions{}
	}
	return b.http
}

func (b *builder) commonLB() *clusterv3.Cluster_CommonLbConfig {
	if b.c.CommonLbConfig == nil {
		b.c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{}
	}
	return b.c.CommonLbConfig
}

func (b *builder) finish() {
	b.c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{b.thresholds}}
	if b.http != nil {
		a := &anypb.Any{}
		err := anypb.MarshalFrom(a, b.http, proto.MarshalOptions{Deterministic: true}) // equal config → equal bytes (delta versions, sharing)
		if err != nil {
			panic(fmt.Sprintf("cds: marshal HttpProtocolOptions: %v", err))
		}
		b.c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": a}
	}
}

// protocol picks how the cluster speaks HTTP upstream, as Istio does:
// HTTP/2 for HTTP2 and gRPC ports or when the policy upgrades; the
// client's protocol for undeclared (sniffed) ports or when asked to.
func (b *builder) protocol(p model.Protocol, h *networking.ConnectionPoolSettings_HTTPSettings) {
	h2 := &corev3.Http2ProtocolOptions{}
	if n := h.GetMaxConcurrentStreams(); n > 0 {
		h2.MaxConcurrentStreams = wrapperspb.UInt32(uint32(n))
	}
	switch {
	case p.IsUnsupported() || h.GetUseClientProtocol():
		b.httpOptions().UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{
			UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
				HttpProtocolOptions: &corev3.Http1ProtocolOptions{}, Http2ProtocolOptions: h2,
			},
		}
	case p.IsHTTP2() || (p.IsHTTP() && h.GetH2UpgradePolicy() == networking.ConnectionPoolSettings_HTTPSettings_UPGRADE):
		b.httpOptions().UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: h2},
			},
		}
	}
}

// loadBalancer maps the policy's load balancer. Istio's default, when
// the rule sets none, is LEAST_REQUEST.
func (b *builder) loadBalancer(lb *networking.LoadBalancerSettings) {
	c := b.c
	if c.GetType() == clusterv3.Cluster_ORIGINAL_DST {
		c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
		return
	}
	warmup := lb.GetWarmup().GetDuration()
	if warmup == nil {
		warmup = lb.GetWarmupDurationSecs()
	}
	switch lb.GetSimple() {
	case networking.LoadBalancerSettings_RANDOM:
		c.LbPolicy = clusterv3.Cluster_RANDOM
	case networking.LoadBalancerSettings_ROUND_ROBIN:
		c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
		if warmup != nil {
			c.LbConfig = &clusterv3.Cluster_RoundRobinLbConfig_{RoundRobinLbConfig: &clusterv3.Cluster_RoundRobinLbConfig{
				SlowStartConfig: &clusterv3.Cluster_SlowStartConfig{SlowStartWindow: warmup},
			}}
		}
	case networking.LoadBalancerSettings_PASSTHROUGH:
		c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
		c.EdsClusterConfig, c.LoadAssignment = nil, nil
		c.DnsLookupFamily, c.DnsRefreshRate, c.RespectDnsTtl = 0, nil, false
		return
	default: // UNSPECIFIED, LEAST_REQUEST, LEAST_CONN
		c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
		if warmup != nil {
			c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{
				SlowStartConfig: &clusterv3.Cluster_SlowStartConfig{SlowStartWindow: warmup},
			}}
		}
	}
	ch := lb.GetConsistentHash()
	if ch == nil {
		return
	}
	switch {
	case ch.GetMaglev() != nil:
		c.LbPolicy = clusterv3.Cluster_MAGLEV
		c.LbConfig = nil
		if n := ch.GetMaglev().GetTableSize(); n != 0 {
			c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(n)}}
		}
	default:
		// ringHash, or the deprecated top-level minimumRingSize; Envoy's
		// default ring is 1024 entries.
		n := ch.GetRingHash().GetMinimumRingSize()
		if ch.GetRingHash() == nil {
			n = ch.GetMinimumRingSize() //nolint:staticcheck // deprecated field Istio still honors
		}
		c.LbPolicy = clusterv3.Cluster_RING_HASH
		c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
			MinimumRingSize: wrapperspb.UInt64(cmp.Or(n, 1024)),
		}}
	}
}

// connectionPool maps connection pool settings onto circuit breakers,
// the connect timeout, TCP keepalive and HTTP protocol options, as
// Istio's applyConnectionPool does.
func (b *builder) connectionPool(cp *networking.ConnectionPoolSettings) {
	if cp == nil {
		return
	}
	th := b.thresholds
	var idle *durationpb.Duration
	if h := cp.GetHttp(); h != nil {
		if h.Http2MaxRequests > 0 {
			th.MaxRequests = wrapperspb.UInt32(uint32(h.Http2MaxRequests))
		}
		if h.Http1MaxPendingRequests > 0 {
			th.MaxPendingRequests = wrapperspb.UInt32(uint32(h.Http1MaxPendingRequests))
		}
		if h.MaxRetries > 0 {
			th.MaxRetries = wrapperspb.UInt32(uint32(h.MaxRetries))
		}
		idle = h.GetIdleTimeout()
		if h.MaxRequestsPerConnection > 0 {
			b.common().MaxRequestsPerConnection = wrapperspb.UInt32(uint32(h.MaxRequestsPerConnection))
		}
	}
	if t := cp.GetTcp(); t != nil {
		if t.GetConnectTimeout() != nil {
			b.c.ConnectTimeout = t.GetConnectTimeout()
		}
		if t.MaxConnections > 0 {
			th.MaxConnections = wrapperspb.UInt32(uint32(t.MaxConnections))
		}
		if t.GetMaxConnectionDuration() != nil {
			b.common().MaxConnectionDuration = t.GetMaxConnectionDuration()
		}
		if idle == nil {
			idle = t.GetIdleTimeout()
		}
		if ka := t.GetTcpKeepalive(); ka != nil {
			k := &corev3.TcpKeepalive{}
			if ka.Probes > 0 {
				k.KeepaliveProbes = wrapperspb.UInt32(ka.Probes)
			}
			if ka.GetTime() != nil {
				k.KeepaliveTime = wrapperspb.UInt32(uint32(ka.GetTime().GetSeconds()))
			}
			if ka.GetInterval() != nil {
				k.KeepaliveInterval = wrapperspb.UInt32(uint32(ka.GetInterval().GetSeconds()))
			}
			b.c.UpstreamConnectionOptions = &clusterv3.UpstreamConnectionOptions{TcpKeepalive: k}
		}
	}
	if idle != nil {
		b.common().IdleTimeout = idle
	}
}

func (b *builder) common() *corev3.HttpProtocolOptions {
	o := b.httpOptions()
	if o.CommonHttpProtocolOptions == nil {
		o.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{}
	}
	return o.CommonHttpProtocolOptions
}

// outlierDetection maps Istio's outlier detection. EDS clusters carry
// unhealthy endpoints marked UNHEALTHY (see package eds), so, as Istio
// does when it sends them, panic mode is off unless minHealthPercent
// asks for it: otherwise a mostly-unready service would get traffic on
// its unready pods.
func (b *builder) outlierDetection(od *networking.OutlierDetection, eds bool) {
	minHealth := od.GetMinHealthPercent()
	switch {
	case od != nil && minHealth > 0:
		b.commonLB().HealthyPanicThreshold = percent(float64(minHealth))
	case eds || od != nil:
		b.commonLB().HealthyPanicThreshold = percent(0)
	}
	if od == nil {
		return
	}
	out := &clusterv3.OutlierDetection{EnforcingSuccessRate: wrapperspb.UInt32(0)}
	consecutive := od.GetConsecutive_5XxErrors()
	if consecutive == nil && od.ConsecutiveErrors > 0 { //nolint:staticcheck // deprecated field Istio still honors
		consecutive = wrapperspb.UInt32(uint32(od.ConsecutiveErrors)) //nolint:staticcheck
	}
	if consecutive != nil {
		v := consecutive.GetValue()
		out.Consecutive_5Xx = wrapperspb.UInt32(v)
		out.EnforcingConsecutive_5Xx = wrapperspb.UInt32(enforce(v))
	}
	if e := od.GetConsecutiveGatewayErrors(); e != nil {
		out.ConsecutiveGatewayFailure = wrapperspb.UInt32(e.GetValue())
		out.EnforcingConsecutiveGatewayFailure = wrapperspb.UInt32(enforce(e.GetValue()))
	}
	out.Interval = od.GetInterval()
	out.BaseEjectionTime = od.GetBaseEjectionTime()
	if od.MaxEjectionPercent > 0 {
		out.MaxEjectionPercent = wrapperspb.UInt32(uint32(od.MaxEjectionPercent))
	}
	if od.SplitExternalLocalOriginErrors {
		out.SplitExternalLocalOriginErrors = true
		if n := od.GetConsecutiveLocalOriginFailures(); n.GetValue() > 0 {
			out.ConsecutiveLocalOriginFailure = wrapperspb.UInt32(n.GetValue())
		}
	}
	b.c.OutlierDetection = out
}

// enforce is Istio's enforcement percentage for a consecutive-errors
// threshold: 100 when set, 0 (off) when the threshold is 0.
func enforce(v uint32) uint32 {
	if v > 0 {
		return 100
	}
	return 0
}

// locality turns on locality-weighted balancing, as Istio does, when the
// policy distributes traffic by locality or sets failover rules that
// outlier detection lets work; the weights and priorities go in EDS.
func (b *builder) locality(l *networking.LocalityLoadBalancerSetting, outlier bool) {
	if l.GetEnabled() != nil && !l.GetEnabled().GetValue() {
		return
	}
	if len(l.GetDistribute()) == 0 && !(outlier && (len(l.GetFailover()) > 0 || len(l.GetFailoverPriority()) > 0)) {
		return
	}
	b.commonLB().LocalityConfigSpecifier = &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{
		LocalityWeightedLbConfig: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig{},
	}
}

func percent(v float64) *typev3.Percent { return &typev3.Percent{Value: v} }
