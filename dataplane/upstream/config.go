package upstream

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	lbcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/common/v3"
	leastrequestv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	maglevv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/maglev/v3"
	randomv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/random/v3"
	ringhashv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/ring_hash/v3"
	roundrobinv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const (
	httpProtocolOptionsName = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	tlsTransportSocketName  = "envoy.transport_sockets.tls"
	rawTransportSocketName  = "envoy.transport_sockets.raw_buffer"
	maglevTableSize         = 65537
)

type lbKind int

const (
	lbRoundRobin lbKind = iota
	lbLeastRequest
	lbRandom
	lbRingHash
	lbMaglev
	lbClusterProvided
)

// protocol is how a cluster speaks HTTP upstream.
type protocol int

const (
	protoHTTP1 protocol = iota
	protoHTTP2
	protoDownstream // use_downstream_protocol: per request, from req.ProtoMajor
)

// config is a cluster's compiled configuration: every default applied and
// every field validated, so the request path reads plain values.
type config struct {
	name           string
	discovery      clusterv3.Cluster_DiscoveryType
	edsServiceName string
	connectTimeout time.Duration
	// sourceAddr is upstream_bind_config's source address: connections
	// leave from it (Istio's inbound clusters use 127.0.0.6 so capture
	// rules can tell the sidecar's delivery from the app's own traffic).
	sourceAddr *net.TCPAddr

	lb              lbKind
	panicThreshold  float64 // percent; 0 disables panic mode
	localityWeights bool
	ringMin         uint64
	ringMax         uint64
	maglevSize      uint64
	choiceCount     int

	proto                 protocol
	maxStreams            uint32
	maxRqPerConn          uint32
	idleTimeout           time.Duration
	upstreamTLS           *tlsv3.UpstreamTlsContext // nil: plaintext
	socketMatches         []socketMatch
	maxConnections        int64
	maxPending            int64
	maxRequests           int64
	maxRetries            int64
	outlier               *outlierConfig
	healthChecks          []*corev3.HealthCheck
	dnsRefresh            time.Duration
	dnsFamily             clusterv3.Cluster_DnsLookupFamily
	cleanupInterval       time.Duration
	origDstHeader         string // header carrying the override host; "" = off
	origDstPortOverr      uint32
	ignoreNewHostsUntilHC bool
}

// socketMatch is one transport_socket_matches entry: endpoints whose
// "envoy.transport_socket_match" metadata has every field of match use tls
// (nil: plaintext). Istio's auto mTLS is built on this.
type socketMatch struct {
	name  string
	match map[string]*structpb.Value
	tls   *tlsv3.UpstreamTlsContext
}

type outlierConfig struct {
	interval, baseEjection, maxEjection time.Duration
	maxEjectionPercent                  uint32
	alwaysEjectOne                      bool
	consecutive5xx, enforcing5xx        uint32
	consecutiveGw, enforcingGw          uint32
	srMinHosts, srVolume, srStdev       uint32
	enforcingSR                         uint32
	fpThreshold, fpMinHosts, fpVolume   uint32
	enforcingFP                         uint32
}

func durOr(d *durationpb.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.AsDuration()
}

func u32Or(v *wrapperspb.UInt32Value, def uint32) uint32 {
	if v == nil {
		return def
	}
	return v.GetValue()
}

// compile validates c and produces its config. Errors name the cluster and
// the field.
func compile(c *clusterv3.Cluster) (*config, error) {
	name := c.GetName()
	if name == "" {
		return nil, fmt.Errorf("cluster: name: must not be empty")
	}
	errf := func(field, format string, a ...any) error {
		return fmt.Errorf("cluster %q: %s: %s", name, field, fmt.Sprintf(format, a...))
	}
	cfg := &config{
		name: name, connectTimeout: durOr(c.GetConnectTimeout(), 5*time.Second),
		panicThreshold: 50, ringMin: 1024, ringMax: 8 * 1024 * 1024, maglevSize: maglevTableSize,
		choiceCount: 2, maxStreams: math.MaxInt32, idleTimeout: time.Hour,
		maxConnections: 1024, maxPending: 1024, maxRequests: 1024, maxRetries: 3,
		dnsRefresh: durOr(c.GetDnsRefreshRate(), 5*time.Second), dnsFamily: c.GetDnsLookupFamily(),
		cleanupInterval: durOr(c.GetCleanupInterval(), 5*time.Second),
	}
	if cfg.connectTimeout <= 0 {
		return nil, errf("connect_timeout", "must be positive")
	}
	if c.GetClusterType() != nil {
		return nil, errf("cluster_type", "custom cluster type %q is not supported", c.GetClusterType().GetName())
	}
	cfg.discovery = c.GetType()
	switch cfg.discovery {
	case clusterv3.Cluster_STATIC, clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
		if len(c.GetLoadAssignment().GetEndpoints()) == 0 && cfg.discovery != clusterv3.Cluster_STATIC {
			return nil, errf("load_assignment", "%s cluster needs at least one endpoint", cfg.discovery)
		}
		if _, err := parseCLA(c.GetLoadAssignment(), cfg.discovery != clusterv3.Cluster_STATIC); err != nil {
			return nil, fmt.Errorf("cluster %q: load_assignment: %w", name, err)
		}
		if cfg.discovery == clusterv3.Cluster_LOGICAL_DNS {
			n := 0
			for _, l := range c.GetLoadAssignment().GetEndpoints() {
				n += len(l.GetLbEndpoints())
			}
			if n != 1 {
				return nil, errf("load_assignment", "LOGICAL_DNS cluster needs exactly one endpoint, has %d", n)
			}
		}
		if cfg.dnsRefresh <= 0 {
			return nil, errf("dns_refresh_rate", "must be positive")
		}
	case clusterv3.Cluster_EDS:
		cfg.edsServiceName = c.GetEdsClusterConfig().GetServiceName()
		if cfg.edsServiceName == "" {
			cfg.edsServiceName = name
		}
	case clusterv3.Cluster_ORIGINAL_DST:
		if c.GetLbPolicy() != clusterv3.Cluster_CLUSTER_PROVIDED {
			return nil, errf("lb_policy", "ORIGINAL_DST clusters need CLUSTER_PROVIDED, got %s", c.GetLbPolicy())
		}
		if len(c.GetLoadAssignment().GetEndpoints()) > 0 {
			return nil, errf("load_assignment", "ORIGINAL_DST clusters take no endpoints")
		}
		if od := c.GetOriginalDstLbConfig(); od != nil {
			if od.GetUseHttpHeader() {
				cfg.origDstHeader = od.GetHttpHeaderName()
				if cfg.origDstHeader == "" {
					cfg.origDstHeader = "x-envoy-original-dst-host"
				}
			}
			cfg.origDstPortOverr = od.GetUpstreamPortOverride().GetValue()
		}
		if cfg.cleanupInterval <= 0 {
			return nil, errf("cleanup_interval", "must be positive")
		}
	default:
		return nil, errf("type", "discovery type %s is not supported", cfg.discovery)
	}

	if b := c.GetUpstreamBindConfig(); b != nil {
		sa := b.GetSourceAddress()
		ip, err := netip.ParseAddr(sa.GetAddress())
		if err != nil {
			return nil, errf("upstream_bind_config.source_address.address", "%q is not an IP address", sa.GetAddress())
		}
		if sa.GetPortValue() > 65535 {
			return nil, errf("upstream_bind_config.source_address.port_value", "%d is not a port", sa.GetPortValue())
		}
		cfg.sourceAddr = &net.TCPAddr{IP: ip.AsSlice(), Port: int(sa.GetPortValue())}
	}
	if err := compileLB(c, cfg, errf); err != nil {
		return nil, err
	}
	if err := compileProtocol(c, cfg, errf); err != nil {
		return nil, err
	}
	tc, err := parseTransportSocket(c.GetTransportSocket(), "transport_socket", errf)
	if err != nil {
		return nil, err
	}
	cfg.upstreamTLS = tc
	for i, m := range c.GetTransportSocketMatches() {
		field := fmt.Sprintf("transport_socket_matches[%d].transport_socket", i)
		tc, err := parseTransportSocket(m.GetTransportSocket(), field, errf)
		if err != nil {
			return nil, err
		}
		cfg.socketMatches = append(cfg.socketMatches, socketMatch{name: m.GetName(), match: m.GetMatch().GetFields(), tls: tc})
	}
	for _, th := range c.GetCircuitBreakers().GetThresholds() {
		if th.GetPriority() != corev3.RoutingPriority_DEFAULT {
			continue // only DEFAULT-priority requests exist in skiff
		}
		if v := th.GetMaxConnections(); v != nil {
			cfg.maxConnections = int64(v.GetValue())
		}
		if v := th.GetMaxPendingRequests(); v != nil {
			cfg.maxPending = int64(v.GetValue())
		}
		if v := th.GetMaxRequests(); v != nil {
			cfg.maxRequests = int64(v.GetValue())
		}
		if v := th.GetMaxRetries(); v != nil {
			cfg.maxRetries = int64(v.GetValue())
		}
	}
	if od := c.GetOutlierDetection(); od != nil {
		o := &outlierConfig{
			interval: durOr(od.GetInterval(), 10*time.Second), baseEjection: durOr(od.GetBaseEjectionTime(), 30*time.Second),
			maxEjection: durOr(od.GetMaxEjectionTime(), 300*time.Second), maxEjectionPercent: u32Or(od.GetMaxEjectionPercent(), 10),
			alwaysEjectOne: od.GetAlwaysEjectOneHost().GetValue(),
			consecutive5xx: u32Or(od.GetConsecutive_5Xx(), 5), enforcing5xx: u32Or(od.GetEnforcingConsecutive_5Xx(), 100),
			consecutiveGw: u32Or(od.GetConsecutiveGatewayFailure(), 5), enforcingGw: u32Or(od.GetEnforcingConsecutiveGatewayFailure(), 0),
			srMinHosts: u32Or(od.GetSuccessRateMinimumHosts(), 5), srVolume: u32Or(od.GetSuccessRateRequestVolume(), 100),
			srStdev: u32Or(od.GetSuccessRateStdevFactor(), 1900), enforcingSR: u32Or(od.GetEnforcingSuccessRate(), 100),
			fpThreshold: u32Or(od.GetFailurePercentageThreshold(), 85), fpMinHosts: u32Or(od.GetFailurePercentageMinimumHosts(), 5),
			fpVolume: u32Or(od.GetFailurePercentageRequestVolume(), 50), enforcingFP: u32Or(od.GetEnforcingFailurePercentage(), 0),
		}
		if o.interval <= 0 {
			return nil, errf("outlier_detection.interval", "must be positive")
		}
		if o.baseEjection <= 0 {
			return nil, errf("outlier_detection.base_ejection_time", "must be positive")
		}
		if o.maxEjection < o.baseEjection {
			// Envoy: max_ejection_time defaults to 300s or base_ejection_time if larger.
			if od.GetMaxEjectionTime() != nil {
				return nil, errf("outlier_detection.max_ejection_time", "must not be below base_ejection_time")
			}
			o.maxEjection = o.baseEjection
		}
		for f, v := range map[string]uint32{"max_ejection_percent": o.maxEjectionPercent, "enforcing_consecutive_5xx": o.enforcing5xx,
			"enforcing_consecutive_gateway_failure": o.enforcingGw, "enforcing_success_rate": o.enforcingSR,
			"enforcing_failure_percentage": o.enforcingFP, "failure_percentage_threshold": o.fpThreshold} {
			if v > 100 {
				return nil, errf("outlier_detection."+f, "%d is above 100", v)
			}
		}
		cfg.outlier = o
	}
	if len(c.GetHealthChecks()) > 1 {
		return nil, errf("health_checks", "only one health check per cluster is supported, got %d", len(c.GetHealthChecks()))
	}
	for i, hc := range c.GetHealthChecks() {
		field := fmt.Sprintf("health_checks[%d]", i)
		if hc.GetTimeout().AsDuration() <= 0 {
			return nil, errf(field+".timeout", "must be positive")
		}
		if hc.GetInterval().AsDuration() <= 0 {
			return nil, errf(field+".interval", "must be positive")
		}
		if hc.GetUnhealthyThreshold() == nil || hc.GetHealthyThreshold() == nil {
			return nil, errf(field, "unhealthy_threshold and healthy_threshold are required")
		}
		switch {
		case hc.GetHttpHealthCheck() != nil:
			h := hc.GetHttpHealthCheck()
			if h.GetPath() == "" {
				return nil, errf(field+".http_health_check.path", "must not be empty")
			}
			if h.GetCodecClientType() != typev3.CodecClientType_HTTP1 {
				return nil, errf(field+".http_health_check.codec_client_type", "only HTTP1 is supported")
			}
			for j, r := range h.GetExpectedStatuses() {
				if r.GetStart() < 100 || r.GetEnd() > 600 || r.GetStart() >= r.GetEnd() {
					return nil, errf(fmt.Sprintf("%s.http_health_check.expected_statuses[%d]", field, j), "range [%d, %d) is not within [100, 600)", r.GetStart(), r.GetEnd())
				}
			}
		case hc.GetTcpHealthCheck() != nil:
			t := hc.GetTcpHealthCheck()
			for j, p := range append([]*corev3.HealthCheck_Payload{t.GetSend()}, t.GetReceive()...) {
				if p == nil {
					continue
				}
				if _, err := payload(p); err != nil {
					return nil, errf(fmt.Sprintf("%s.tcp_health_check payload %d", field, j), "text must be hex: %v", err)
				}
			}
		default:
			return nil, errf(field, "only http_health_check and tcp_health_check are supported")
		}
		cfg.healthChecks = append(cfg.healthChecks, hc)
	}
	cfg.ignoreNewHostsUntilHC = c.GetCommonLbConfig().GetIgnoreNewHostsUntilFirstHc()
	return cfg, nil
}

func compileLB(c *clusterv3.Cluster, cfg *config, errf func(string, string, ...any) error) error {
	switch c.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN:
		cfg.lb = lbRoundRobin
	case clusterv3.Cluster_LEAST_REQUEST:
		cfg.lb = lbLeastRequest
		if lr := c.GetLeastRequestLbConfig(); lr != nil && lr.GetChoiceCount() != nil {
			cfg.choiceCount = int(lr.GetChoiceCount().GetValue())
			if cfg.choiceCount < 2 {
				return errf("least_request_lb_config.choice_count", "must be at least 2")
			}
		}
	case clusterv3.Cluster_RANDOM:
		cfg.lb = lbRandom
	case clusterv3.Cluster_RING_HASH:
		cfg.lb = lbRingHash
		if rh := c.GetRingHashLbConfig(); rh != nil {
			if v := rh.GetMinimumRingSize(); v != nil {
				cfg.ringMin = v.GetValue()
			}
			if v := rh.GetMaximumRingSize(); v != nil {
				cfg.ringMax = v.GetValue()
			}
		}
		if cfg.ringMin == 0 || cfg.ringMin > cfg.ringMax || cfg.ringMax > 8*1024*1024 {
			return errf("ring_hash_lb_config", "need 0 < minimum_ring_size (%d) <= maximum_ring_size (%d) <= 8388608", cfg.ringMin, cfg.ringMax)
		}
	case clusterv3.Cluster_MAGLEV:
		cfg.lb = lbMaglev
		if v := c.GetMaglevLbConfig().GetTableSize(); v != nil {
			cfg.maglevSize = v.GetValue()
			if !isPrime(cfg.maglevSize) || cfg.maglevSize > 5000011 {
				return errf("maglev_lb_config.table_size", "%d must be a prime no larger than 5000011", cfg.maglevSize)
			}
		}
	case clusterv3.Cluster_CLUSTER_PROVIDED:
		if cfg.discovery != clusterv3.Cluster_ORIGINAL_DST {
			return errf("lb_policy", "CLUSTER_PROVIDED is only valid for ORIGINAL_DST clusters")
		}
		cfg.lb = lbClusterProvided
	default:
		return errf("lb_policy", "%s is not supported", c.GetLbPolicy())
	}
	if c.GetLbSubsetConfig() != nil {
		return errf("lb_subset_config", "subset load balancing is not supported")
	}
	if lp := c.GetLoadBalancingPolicy(); lp != nil {
		if err := compileTypedLB(lp, cfg, errf); err != nil {
			return err
		}
	}
	if cl := c.GetCommonLbConfig(); cl != nil {
		if p := cl.GetHealthyPanicThreshold(); p != nil {
			if p.GetValue() < 0 || p.GetValue() > 100 {
				return errf("common_lb_config.healthy_panic_threshold", "%v is not a percentage", p.GetValue())
			}
			cfg.panicThreshold = p.GetValue()
		}
		cfg.localityWeights = cl.GetLocalityWeightedLbConfig() != nil
	}
	return nil
}

func compileProtocol(c *clusterv3.Cluster, cfg *config, errf func(string, string, ...any) error) error {
	common := c.GetCommonHttpProtocolOptions()
	var h2 *corev3.Http2ProtocolOptions
	if c.GetHttp2ProtocolOptions() != nil { //nolint:staticcheck // legacy field Istio still emits
		cfg.proto = protoHTTP2
		h2 = c.GetHttp2ProtocolOptions() //nolint:staticcheck
	}
	if a, ok := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsName]; ok {
		field := fmt.Sprintf("typed_extension_protocol_options[%q]", httpProtocolOptionsName)
		po := &httpv3.HttpProtocolOptions{}
		if err := a.UnmarshalTo(po); err != nil {
			return errf(field, "want HttpProtocolOptions: %v", err)
		}
		if po.GetCommonHttpProtocolOptions() != nil {
			common = po.GetCommonHttpProtocolOptions()
		}
		switch {
		case po.GetExplicitHttpConfig() != nil:
			e := po.GetExplicitHttpConfig()
			switch {
			case e.GetHttp2ProtocolOptions() != nil:
				cfg.proto, h2 = protoHTTP2, e.GetHttp2ProtocolOptions()
			case e.GetHttp3ProtocolOptions() != nil:
				return errf(field+".explicit_http_config", "HTTP/3 is not supported")
			default:
				cfg.proto = protoHTTP1
			}
		case po.GetUseDownstreamProtocolConfig() != nil:
			cfg.proto, h2 = protoDownstream, po.GetUseDownstreamProtocolConfig().GetHttp2ProtocolOptions()
		case po.GetAutoConfig() != nil:
			return errf(field+".auto_config", "ALPN-selected protocol is not supported; use explicit_http_config or use_downstream_protocol_config")
		}
	}
	if v := h2.GetMaxConcurrentStreams(); v != nil {
		if v.GetValue() == 0 {
			return errf("http2_protocol_options.max_concurrent_streams", "must be positive")
		}
		cfg.maxStreams = v.GetValue()
	}
	if v := common.GetMaxRequestsPerConnection(); v != nil {
		cfg.maxRqPerConn = v.GetValue()
	}
	if v := c.GetMaxRequestsPerConnection(); v != nil { //nolint:staticcheck // legacy field
		cfg.maxRqPerConn = v.GetValue()
	}
	if d := common.GetIdleTimeout(); d != nil {
		// Envoy: 0 disables the idle timeout.
		cfg.idleTimeout = d.AsDuration()
	}
	return nil
}

func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	for d := uint64(2); d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// compileTypedLB applies load_balancing_policy, which overrides lb_policy:
// as in Envoy the first policy this proxy supports wins.
func compileTypedLB(lp *clusterv3.LoadBalancingPolicy, cfg *config, errf func(string, string, ...any) error) error {
	var names []string
	for i, p := range lp.GetPolicies() {
		a := p.GetTypedExtensionConfig().GetTypedConfig()
		if a == nil {
			return errf(fmt.Sprintf("load_balancing_policy.policies[%d].typed_extension_config", i), "typed_config is required")
		}
		field := fmt.Sprintf("load_balancing_policy.policies[%d]", i)
		bad := func(err error) error { return errf(field, "%s: %v", a.GetTypeUrl(), err) }
		var loc *lbcommonv3.LocalityLbConfig
		switch a.MessageName() {
		case "envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin":
			m := &roundrobinv3.RoundRobin{}
			if err := a.UnmarshalTo(m); err != nil {
				return bad(err)
			}
			cfg.lb, loc = lbRoundRobin, m.GetLocalityLbConfig()
		case "envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest":
			m := &leastrequestv3.LeastRequest{}
			if err := a.UnmarshalTo(m); err != nil {
				return bad(err)
			}
			cfg.lb, loc = lbLeastRequest, m.GetLocalityLbConfig()
			if v := m.GetChoiceCount(); v != nil {
				if v.GetValue() < 2 {
					return errf(field+".choice_count", "must be at least 2")
				}
				cfg.choiceCount = int(v.GetValue())
			}
		case "envoy.extensions.load_balancing_policies.random.v3.Random":
			m := &randomv3.Random{}
			if err := a.UnmarshalTo(m); err != nil {
				return bad(err)
			}
			cfg.lb, loc = lbRandom, m.GetLocalityLbConfig()
		case "envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash":
			m := &ringhashv3.RingHash{}
			if err := a.UnmarshalTo(m); err != nil {
				return bad(err)
			}
			cfg.lb = lbRingHash
			cfg.ringMin, cfg.ringMax = 1024, 8*1024*1024
			if v := m.GetMinimumRingSize(); v != nil {
				cfg.ringMin = v.GetValue()
			}
			if v := m.GetMaximumRingSize(); v != nil {
				cfg.ringMax = v.GetValue()
			}
			if cfg.ringMin == 0 || cfg.ringMin > cfg.ringMax || cfg.ringMax > 8*1024*1024 {
				return errf(field, "need 0 < minimum_ring_size (%d) <= maximum_ring_size (%d) <= 8388608", cfg.ringMin, cfg.ringMax)
			}
			cfg.localityWeights = m.GetLocalityWeightedLbConfig() != nil
		case "envoy.extensions.load_balancing_policies.maglev.v3.Maglev":
			m := &maglevv3.Maglev{}
			if err := a.UnmarshalTo(m); err != nil {
				return bad(err)
			}
			cfg.lb, cfg.maglevSize = lbMaglev, maglevTableSize
			if v := m.GetTableSize(); v != nil {
				cfg.maglevSize = v.GetValue()
				if !isPrime(cfg.maglevSize) || cfg.maglevSize > 5000011 {
					return errf(field+".table_size", "%d must be a prime no larger than 5000011", cfg.maglevSize)
				}
			}
			cfg.localityWeights = m.GetLocalityWeightedLbConfig() != nil
		default:
			names = append(names, a.GetTypeUrl())
			continue
		}
		if loc != nil {
			cfg.localityWeights = loc.GetLocalityWeightedLbConfig() != nil
		}
		return nil
	}
	return errf("load_balancing_policy.policies", "none of %v is supported", names)
}

// parseTransportSocket reads a cluster transport socket: TLS yields its
// UpstreamTlsContext, raw_buffer (or none) yields nil. The typed config's
// type decides, as in Envoy; the name only when there is no typed config.
func parseTransportSocket(ts *corev3.TransportSocket, field string, errf func(string, string, ...any) error) (*tlsv3.UpstreamTlsContext, error) {
	if ts == nil {
		return nil, nil
	}
	a := ts.GetTypedConfig()
	if a == nil {
		switch ts.GetName() {
		case rawTransportSocketName, "":
			return nil, nil
		case tlsTransportSocketName:
			return nil, errf(field+".typed_config", "missing UpstreamTlsContext")
		}
		return nil, errf(field+".name", "%q is not supported", ts.GetName())
	}
	switch a.MessageName() {
	case "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext":
		tc := &tlsv3.UpstreamTlsContext{}
		if err := a.UnmarshalTo(tc); err != nil {
			return nil, errf(field+".typed_config", "%v", err)
		}
		return tc, nil
	case "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer":
		return nil, nil
	}
	return nil, errf(field+".typed_config", "transport socket %s is not supported", a.GetTypeUrl())
}
