package xdsres

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// FaultFilterName is the HTTP fault filter's name, the key Istio uses in
// typed_per_filter_config.
const FaultFilterName = "envoy.filters.http.fault"

// FaultFilter is the fault filter as Istio places it in every HCM: empty at
// the listener, configured per route.
func FaultFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: FaultFilterName,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: Any(&faultv3.HTTPFault{})}}
}

// Percent is pct% as Istio writes it (denominator MILLION).
func Percent(pct float64) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: uint32(pct * 10000), Denominator: typev3.FractionalPercent_MILLION}
}

// FaultDelay is a per-route fault config delaying pct% of requests by d.
func FaultDelay(d time.Duration, pct float64) *faultv3.HTTPFault {
	return &faultv3.HTTPFault{Delay: &faultcommonv3.FaultDelay{
		FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(d)},
		Percentage:         Percent(pct)}}
}

// FaultAbort is a per-route fault config aborting pct% of requests with
// status.
func FaultAbort(status uint32, pct float64) *faultv3.HTTPFault {
	return &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{
		ErrorType:  &faultv3.FaultAbort_HttpStatus{HttpStatus: status},
		Percentage: Percent(pct)}}
}

// PerFilter sets a route's typed_per_filter_config entry for filter name.
func PerFilter(r *routev3.Route, name string, cfg proto.Message) *routev3.Route {
	if r.TypedPerFilterConfig == nil {
		r.TypedPerFilterConfig = map[string]*anypb.Any{}
	}
	r.TypedPerFilterConfig[name] = Any(cfg)
	return r
}

// HCMFilters is HCM with the given HTTP filters placed before the router.
func HCMFilters(statPrefix, routeName string, filters ...*hcmv3.HttpFilter) *hcmv3.HttpConnectionManager {
	h := HCM(statPrefix, routeName)
	h.HttpFilters = append(append([]*hcmv3.HttpFilter(nil), filters...), Router())
	return h
}

// PriorityEndpoints is a ClusterLoadAssignment with one locality per
// priority: prios[0] holds the priority-0 hosts, prios[1] priority 1, …
func PriorityEndpoints(cluster string, prios ...[]string) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: cluster}
	for p, hosts := range prios {
		loc := &endpointv3.LocalityLbEndpoints{Priority: uint32(p),
			Locality: &corev3.Locality{Region: "r", Zone: "z" + string(rune('0'+p))}}
		for _, h := range hosts {
			loc.LbEndpoints = append(loc.LbEndpoints, &endpointv3.LbEndpoint{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: Addr(h)}}})
		}
		cla.Endpoints = append(cla.Endpoints, loc)
	}
	return cla
}

// HTTPOptions sets the cluster's HttpProtocolOptions
// common_http_protocol_options (keeping an explicit HTTP/2 config if any).
func HTTPOptions(c *clusterv3.Cluster, common *corev3.HttpProtocolOptions) *clusterv3.Cluster {
	const key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	opts := &httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}}}}}
	if prev, ok := c.TypedExtensionProtocolOptions[key]; ok {
		if err := prev.UnmarshalTo(opts); err != nil {
			panic(err)
		}
	}
	opts.CommonHttpProtocolOptions = common
	if c.TypedExtensionProtocolOptions == nil {
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{}
	}
	c.TypedExtensionProtocolOptions[key] = Any(opts)
	return c
}

// UpstreamTLS makes the cluster speak TLS to its hosts with sni, trusting
// the PEM roots caPEM.
func UpstreamTLS(c *clusterv3.Cluster, sni string, caPEM []byte) *clusterv3.Cluster {
	c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: Any(&tlsv3.UpstreamTlsContext{
			Sni: sni,
			CommonTlsContext: &tlsv3.CommonTlsContext{ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{
				ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: Inline(caPEM)}}}})}}
	return c
}

// Inline is an inline-bytes data source.
func Inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

// DownstreamTLS is a server-side TLS transport socket with an inline
// certificate and the given ALPN protocols.
func DownstreamTLS(certPEM, keyPEM []byte, alpn ...string) *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: Any(&tlsv3.DownstreamTlsContext{
			CommonTlsContext: &tlsv3.CommonTlsContext{
				TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: Inline(certPEM), PrivateKey: Inline(keyPEM)}},
				AlpnProtocols:   alpn}})}}
}

// TLSInspector is the tls_inspector listener filter, which reads SNI and
// ALPN for filter chain selection.
func TLSInspector() *listenerv3.ListenerFilter {
	return &listenerv3.ListenerFilter{Name: "envoy.filters.listener.tls_inspector",
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: Any(&tlsinspectorv3.TlsInspector{})}}
}

// FilterChain is one chain running terminal (an HCM or TcpProxy), matched
// on the given server names when any, with transport socket ts (nil for
// plaintext).
func FilterChain(name string, serverNames []string, ts *corev3.TransportSocket, terminal proto.Message) *listenerv3.FilterChain {
	fc := Listener("x", "127.0.0.1:1", terminal).FilterChains[0]
	fc.Name = name
	fc.TransportSocket = ts
	if len(serverNames) > 0 {
		fc.FilterChainMatch = &listenerv3.FilterChainMatch{ServerNames: serverNames}
	}
	return fc
}
