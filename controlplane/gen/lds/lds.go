// Package lds generates the Listeners (LDS) a proxy needs, as Istio's
// istiod does. A sidecar gets virtualOutbound (0.0.0.0:15001, the capture
// port handing connections to the listener of their original
// destination), one outbound listener per HTTP port ("0.0.0.0_9080",
// routes by RDS "9080") and per TCP service address ("198.19.0.7_3306"),
// and virtualInbound (0.0.0.0:15006) with filter chains per workload
// port for the mTLS mode its PeerAuthentication sets (mTLS terminated
// with the workload's identity from its agent, plaintext, or both) and
// passthrough chains for undeclared ports, with room for policy filters
// (InboundPolicy). A gateway gets one bound listener per server port,
// TLS from files, Kubernetes Secrets (over SDS) or its own identity. A
// proxyless gRPC client gets an API listener per reachable "host:port".
//
// Output is shared between proxies that would get the same answer. The
// cache key (within one index, i.e. one config version) is: proxy type
// (and whether proxyless), SidecarScope.Key() (namespace and Sidecar
// resource), the bind address and HTTP proxy port, the proxy's values of
// the labels a VirtualService matches sourceLabels on, and for gateways
// the selected Gateway objects. A captured sidecar's inbound listener is
// cached apart, by its workload's ports (from the services its IPs serve),
// its effective PeerAuthentication and its InboundPolicy filters.
package lds

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	httpinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/gen/rds"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// Istio's capture ports.
const (
	OutboundCapturePort = 15001
	InboundCapturePort  = 15006
)

// InboundPolicy supplies the policy filters of a sidecar's inbound
// chains (AuthorizationPolicy, RequestAuthentication): for the proxy and
// one inbound port (0 for the passthrough chains of undeclared ports), the
// HTTP filters to run before fault, CORS and the router, and the network
// filters to run before tcp_proxy. Its answer must depend only on its
// arguments; the listener is cached by what it returns.
type InboundPolicy interface {
	InboundFilters(p *xds.Proxy, ix *index.Index, port int) (http []*hcmv3.HttpFilter, network []*listenerv3.Filter)
}

// InboundPolicyFunc adapts a function to InboundPolicy.
type InboundPolicyFunc func(p *xds.Proxy, ix *index.Index, port int) ([]*hcmv3.HttpFilter, []*listenerv3.Filter)

// InboundFilters implements InboundPolicy.
func (f InboundPolicyFunc) InboundFilters(p *xds.Proxy, ix *index.Index, port int) ([]*hcmv3.HttpFilter, []*listenerv3.Filter) {
	return f(p, ix, port)
}

// Telemetry adds a proxy's observability to its listeners: Istio's
// metadata exchange and stats filters, tracing and access logs, as the
// Telemetry API and mesh config set them. Key names what Decorate would
// do for the proxy (equal keys, equal edits), so listeners are cached by
// it; Decorate edits listeners just built for this key (never shared
// ones) in place. Proxyless gRPC clients are not decorated.
type Telemetry interface {
	Key(p *xds.Proxy, ix *index.Index) string
	Decorate(p *xds.Proxy, ix *index.Index, ls []*listenerv3.Listener)
}

// Options are the mesh settings listener generation depends on.
type Options struct {
	// DisableInboundMTLS makes every inbound chain plaintext, as if
	// every PeerAuthentication said DISABLE: for meshes without a CA,
	// where no proxy has a certificate to terminate mTLS with.
	DisableInboundMTLS bool
	// InboundPolicy, when set, adds policy filters to inbound chains.
	InboundPolicy InboundPolicy
	// Telemetry, when set, decorates every listener but proxyless ones.
	Telemetry Telemetry
}

// Generator generates listeners with fixed Options. It is safe for
// concurrent use.
type Generator struct {
	o      Options
	prefix string // names this generator's entries in each Index's cache
}

var generators atomic.Int64

// New returns a Generator.
func New(o Options) *Generator {
	return &Generator{o: o, prefix: "lds" + strconv.FormatInt(generators.Add(1), 10) + "|"}
}

var defaultGenerator = New(Options{})

// Generate returns every listener of the proxy with default Options.
func Generate(p *xds.Proxy, ix *index.Index) []xds.Resource { return defaultGenerator.Generate(p, ix) }

// Generate returns every listener of the proxy, sorted by name. The
// messages are shared with other proxies and must not be modified.
func (g *Generator) Generate(p *xds.Proxy, ix *index.Index) []xds.Resource {
	if p.Type == xds.RouterProxy || p.Proxyless || !p.Captured() {
		key := g.prefix + cacheKey(p, ix) + g.telemetryKey(p, ix)
		var policy policyFilters
		if p.Type == xds.RouterProxy && !p.Proxyless {
			// A gateway enforces the policies that select its workload
			// (Istio's ingress JWT and authorization tasks).
			policy = g.policyFilters(p, ix, 0)
			h := sha256.New()
			policy.hash(h)
			key += "|policy:" + hex.EncodeToString(h.Sum(nil))
		}
		return slices.Clone(cachedListeners(ix, key, func() []*listenerv3.Listener {
			switch {
			case p.Proxyless:
				return proxylessListeners(p, ix)
			case p.Type == xds.RouterProxy:
				return g.decorate(p, ix, gatewayListeners(p, ix, policy))
			}
			// Nothing is redirected to this proxy: no capture listeners;
			// applications reach it as an explicit HTTP proxy, and
			// Sidecar egress listeners with a port bind where they say.
			return g.decorate(p, ix, outboundListeners(p, ix))
		}))
	}
	// A sidecar's outbound listeners are the same for every proxy of a
	// namespace, its inbound one differs with the workload's ports and
	// policies: they are cached apart, or 2000 sidecars of 1000 services
	// would each build the mesh's outbound listeners.
	tk := g.telemetryKey(p, ix)
	out := cachedListeners(ix, g.prefix+cacheKey(p, ix)+tk, func() []*listenerv3.Listener {
		return g.decorate(p, ix, outboundListeners(p, ix))
	})
	ic := g.inbound(p, ix)
	in := cachedListeners(ix, g.prefix+ic.key()+tk, func() []*listenerv3.Listener {
		return g.decorate(p, ix, []*listenerv3.Listener{ic.listener()})
	})
	all := append(slices.Clone(out), in...)
	slices.SortFunc(all, func(a, b xds.Resource) int { return strings.Compare(a.Name, b.Name) })
	return all
}

// telemetryKey is the cache-key part for the proxy's Telemetry.
func (g *Generator) telemetryKey(p *xds.Proxy, ix *index.Index) string {
	if g.o.Telemetry == nil || p.Proxyless {
		return ""
	}
	return "|telemetry:" + g.o.Telemetry.Key(p, ix)
}

// decorate applies the Telemetry (if any) to freshly built listeners.
func (g *Generator) decorate(p *xds.Proxy, ix *index.Index, ls []*listenerv3.Listener) []*listenerv3.Listener {
	if g.o.Telemetry != nil {
		g.o.Telemetry.Decorate(p, ix, ls)
	}
	return ls
}

func cachedListeners(ix *index.Index, key string, build func() []*listenerv3.Listener) []xds.Resource {
	return ix.Cached(key, func() any {
		ls := build()
		slices.SortFunc(ls, func(a, b *listenerv3.Listener) int { return strings.Compare(a.GetName(), b.GetName()) })
		out := make([]xds.Resource, len(ls))
		for i, l := range ls {
			out[i] = xds.MustResource(l.GetName(), mustAny(l)) // encoded once for every stream
		}
		return out
	}).([]xds.Resource)
}

// cacheKey is what the outbound and gateway listeners depend on; see the
// package doc.
func cacheKey(p *xds.Proxy, ix *index.Index) string {
	var b strings.Builder
	b.WriteString(p.Type)
	if p.Proxyless {
		b.WriteString("/grpc")
	}
	b.WriteByte('|')
	b.WriteString(ix.SidecarScope(p).Key())
	b.WriteString("|bind:" + p.BindAddress() + "|http_proxy:" + strconv.Itoa(p.HTTPProxyPort))
	for _, k := range ix.SourceLabelKeys() {
		if v, ok := p.Labels[k]; ok {
			b.WriteString("|" + k + "=" + v)
		}
	}
	for _, g := range ix.Gateways(p) {
		b.WriteString("|gw:" + index.GatewayName(g))
	}
	if p.Type == xds.RouterProxy {
		b.WriteString("|ports:" + rds.GatewayPortKey(p, ix))
	}
	return b.String()
}

// mustAny marshals a message the generator built itself (failure would
// be a programming error), deterministically so equal config encodes to
// equal bytes across proxies and versions.
func mustAny(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		panic(err)
	}
	return a
}

func socketAddress(ip string, port int) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}

// Listener filters, with Istio's names.
var (
	originalDstFilter = &listenerv3.ListenerFilter{
		Name:       "envoy.filters.listener.original_dst",
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&originaldstv3.OriginalDst{})},
	}
	tlsInspectorFilter = &listenerv3.ListenerFilter{
		Name:       "envoy.filters.listener.tls_inspector",
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&tlsinspectorv3.TlsInspector{})},
	}
	httpInspectorFilter = &listenerv3.ListenerFilter{
		Name:       "envoy.filters.listener.http_inspector",
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&httpinspectorv3.HttpInspector{})},
	}
)

// plaintextHTTP matches connections the inspectors found to be cleartext
// HTTP/1.1 or HTTP/2 (prior knowledge): Istio's sniffed-HTTP match.
func plaintextHTTP() *listenerv3.FilterChainMatch {
	return &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer", ApplicationProtocols: []string{"http/1.1", "h2c"}}
}

// tcpProxy is a filter chain's terminal tcp_proxy to one cluster.
func tcpProxy(cluster string) *listenerv3.Filter {
	return networkFilter("envoy.filters.network.tcp_proxy", &tcpv3.TcpProxy{
		StatPrefix:       cluster,
		ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: cluster},
	})
}

// weightedTCPProxy splits connections across clusters by weight; one
// cluster degenerates to a plain tcp_proxy, as Istio emits it.
func weightedTCPProxy(statPrefix string, clusters []string, weights []uint32) *listenerv3.Filter {
	if len(clusters) == 1 {
		return tcpProxy(clusters[0])
	}
	wc := &tcpv3.TcpProxy_WeightedCluster{}
	for i, c := range clusters {
		wc.Clusters = append(wc.Clusters, &tcpv3.TcpProxy_WeightedCluster_ClusterWeight{Name: c, Weight: weights[i]})
	}
	return networkFilter("envoy.filters.network.tcp_proxy", &tcpv3.TcpProxy{
		StatPrefix:       statPrefix,
		ClusterSpecifier: &tcpv3.TcpProxy_WeightedClusters{WeightedClusters: wc},
	})
}

func networkFilter(name string, cfg proto.Message) *listenerv3.Filter {
	return &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(cfg)}}
}

// httpFilters are Istio's HTTP filters that skiff-proxy runs: policy
// filters (inbound), then fault and CORS (configured per route), then the
// router.
func httpFilters(policy []*hcmv3.HttpFilter) []*hcmv3.HttpFilter {
	f := func(name string, m proto.Message) *hcmv3.HttpFilter {
		return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(m)}}
	}
	return append(slices.Clone(policy),
		f(rds.FaultFilter, &faultv3.HTTPFault{}),
		f(rds.CorsFilter, &corsv3.Cors{}),
		f("envoy.filters.http.router", &routerv3.Router{}),
	)
}

// hcmOptions vary the HTTP connection manager by direction.
type hcmOptions struct {
	statPrefix       string
	rds              string                      // route configuration name, or
	routeConfig      *routev3.RouteConfiguration // an inline one (inbound)
	useRemoteAddress bool                        // gateways: the client is the peer
	normalizePath    bool                        // inbound and gateways
	policy           []*hcmv3.HttpFilter         // inbound: before the others
	// xfcc is how X-Forwarded-Client-Cert is handled: Istio's inbound
	// sidecars APPEND_FORWARD, its gateways SANITIZE_SET, each adding the
	// peer certificate's subject, URI and DNS SANs.
	xfcc hcmv3.HttpConnectionManager_ForwardClientCertDetails
}

// httpConnectionManager builds the HCM filter as Istio configures it for
// the fields skiff-proxy implements.
func httpConnectionManager(o hcmOptions) *listenerv3.Filter {
	h := &hcmv3.HttpConnectionManager{
		StatPrefix:        o.statPrefix,
		HttpFilters:       httpFilters(o.policy),
		UseRemoteAddress:  wrapperspb.Bool(o.useRemoteAddress),
		GenerateRequestId: wrapperspb.Bool(true),
		UpgradeConfigs:    []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}},
	}
	if o.normalizePath {
		h.NormalizePath = wrapperspb.Bool(true)
	}
	if o.xfcc != hcmv3.HttpConnectionManager_SANITIZE {
		h.ForwardClientCertDetails = o.xfcc
		h.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{
			Subject: wrapperspb.Bool(true), Dns: true, Uri: true,
		}
	}
	if o.routeConfig != nil {
		h.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: o.routeConfig}
	} else {
		h.RouteSpecifier = &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: o.rds,
			ConfigSource: &corev3.ConfigSource{
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
				ResourceApiVersion:    corev3.ApiVersion_V3,
			},
		}}
	}
	return networkFilter("envoy.filters.network.http_connection_manager", h)
}
