// Package cds generates the clusters (Envoy CDS) a proxy needs, as Istio's
// istiod generates them: one outbound cluster per visible service port
// (EDS, DNS or original-destination, with the applicable DestinationRule's
// traffic policy) and one per DestinationRule subset, the inbound clusters
// of the proxy's own workload, and the PassthroughCluster, BlackHoleCluster
// and InboundPassthroughClusterIpv4 that listeners fall back on.
//
// Generation is a pure function of (proxy, index). The outbound part, the
// bulk of the work, depends only on the proxy's Sidecar scope, namespace,
// type and workload-selected DestinationRules, so it is built once per
// such key and Index and shared, already marshalled, by every proxy.
package cds

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/model"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// Names of the clusters every sidecar has; the listeners generator
// refers to the same constants in package index.
const (
	PassthroughCluster        = index.PassthroughCluster
	BlackHoleCluster          = index.BlackHoleCluster
	InboundPassthroughCluster = index.InboundPassthroughCluster
)

// Options are the mesh settings cluster generation depends on.
type Options struct {
	// InboundAddress is where inbound clusters deliver to the workload
	// when nothing is captured (INTERCEPTION_MODE NONE); default
	// "127.0.0.1". Captured traffic is delivered as Istio ≥1.10 does: to
	// its original destination, the pod's own address, from 127.0.0.6.
	InboundAddress string
	// DisableAutoMTLS turns off Istio's auto mutual TLS: without it, a
	// cluster whose DestinationRule sets no TLS mode speaks Istio mTLS to
	// endpoints that have a sidecar and plaintext to the others.
	DisableAutoMTLS bool
	// ConnectTimeout is the mesh's default connect timeout; default 10s.
	ConnectTimeout time.Duration
	// DNSRefreshRate is how often DNS clusters re-resolve; default 60s.
	DNSRefreshRate time.Duration
}

func (o Options) withDefaults() Options {
	if o.InboundAddress == "" {
		o.InboundAddress = "127.0.0.1"
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.DNSRefreshRate == 0 {
		o.DNSRefreshRate = 60 * time.Second
	}
	return o
}

// Generator generates clusters with fixed Options, caching shared output
// per Index. It is safe for concurrent use.
type Generator struct {
	o        Options
	cacheKey string // names this generator's cache in each Index
	// Clusters that depend on nothing but the options, marshalled once,
	// sorted: what routers get, and what sidecars get.
	routerFixed, sidecarFixed []xds.Resource
}

// New returns a Generator.
func New(o Options) *Generator {
	o = o.withDefaults()
	g := &Generator{o: o, cacheKey: fmt.Sprintf("cds %+v", o)}
	g.routerFixed = []xds.Resource{resource(g.blackHole())}
	g.sidecarFixed = []xds.Resource{resource(g.blackHole()), resource(g.inboundPassthrough()), resource(g.passthrough())}
	slices.SortFunc(g.sidecarFixed, func(a, b xds.Resource) int { return strings.Compare(a.Name, b.Name) })
	return g
}

var defaultGenerator = New(Options{})

// Generate returns every cluster for the proxy, with default Options.
func Generate(p *xds.Proxy, ix *index.Index) []xds.Resource { return defaultGenerator.Generate(p, ix) }

// ixCache is one Index's shared output; it lives as long as the Index
// (see index.Cached).
type ixCache struct {
	mu       sync.Mutex
	outbound map[string]func() []xds.Resource // by scope, namespace, type, rules
	inbound  map[string]func() []xds.Resource // by scope and addresses
}

func (g *Generator) cache(ix *index.Index) *ixCache {
	return ix.Cached(g.cacheKey, func() any {
		return &ixCache{outbound: map[string]func() []xds.Resource{}, inbound: map[string]func() []xds.Resource{}}
	}).(*ixCache)
}

// once returns the builder stored under key in m, storing build first.
func (c *ixCache) once(m map[string]func() []xds.Resource, key string, build func() []xds.Resource) func() []xds.Resource {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, ok := m[key]
	if !ok {
		f = sync.OnceValue(build)
		m[key] = f
	}
	return f
}

// Generate returns every cluster for the proxy, sorted by name: the
// well-known clusters, the inbound ones (sidecars only), then outbound.
func (g *Generator) Generate(p *xds.Proxy, ix *index.Index) []xds.Resource {
	scope := ix.SidecarScope(p)
	key := strings.Join([]string{scope.Key(), p.Namespace, p.Type, strconv.FormatBool(p.Proxyless), ix.DestinationRuleSelectorKey(p.Namespace, p.Labels)}, "\x00")
	c := g.cache(ix)
	out := c.once(c.outbound, key, func() []xds.Resource { return g.outbound(p, ix, scope) })()
	if p.Proxyless {
		// A gRPC client routes only to outbound services.
		return out
	}
	if p.Type != xds.SidecarProxy {
		return append(slices.Clip(g.routerFixed), out...)
	}
	// Upper-case names sort first: fixed, then inbound|…, then outbound|….
	in := c.once(c.inbound, scope.Key()+"\x00"+strings.Join(p.IPs, ",")+"\x00"+strconv.FormatBool(p.Captured()), func() []xds.Resource {
		var res []xds.Resource
		for _, cl := range g.inbound(p, ix, scope) {
			res = append(res, resource(cl))
		}
		return res
	})()
	res := make([]xds.Resource, 0, len(g.sidecarFixed)+len(in)+len(out))
	res = append(res, g.sidecarFixed...)
	res = append(res, in...)
	return append(res, out...)
}

// resource marshals a cluster once so every proxy shares the encoding.
func resource(c *clusterv3.Cluster) xds.Resource {
	a := &anypb.Any{}
	err := anypb.MarshalFrom(a, c, proto.MarshalOptions{Deterministic: true}) // equal config → equal bytes (delta versions, sharing)
	if err != nil {
		// Marshalling a well-formed generated message cannot fail.
		panic(fmt.Sprintf("cds: marshal cluster %q: %v", c.GetName(), err))
	}
	return xds.MustResource(c.GetName(), a) // encoded once for every stream
}

// ClusterName is Istio's cluster name: "outbound|9080|v1|reviews.default.svc.cluster.local".
func ClusterName(direction string, port int, subset, host string) string {
	return direction + "|" + strconv.Itoa(port) + "|" + subset + "|" + host
}

// ParseClusterName splits an Istio cluster name; ok is false for names
// of another form.
func ParseClusterName(name string) (direction string, port int, subset, host string, ok bool) {
	parts := strings.SplitN(name, "|", 4)
	if len(parts) != 4 {
		return "", 0, "", "", false
	}
	port, err := strconv.Atoi(parts[1])
	if err != nil {
		return "", 0, "", "", false
	}
	return parts[0], port, parts[2], parts[3], true
}

// outbound builds the clusters for every service port the scope reaches,
// sorted by name.
func (g *Generator) outbound(p *xds.Proxy, ix *index.Index, scope *index.SidecarScope) []xds.Resource {
	var out []xds.Resource
	for _, svc := range scope.Services() {
		dr := ix.DestinationRule(p.Namespace, svc.Hostname, p.Labels)
		for _, port := range svc.Ports {
			if port.Protocol == model.UDP {
				continue // Istio does not proxy UDP
			}
			if c := g.outboundCluster(ix, p.Type, svc, port, dr, nil, p.Proxyless); c != nil {
				out = append(out, resource(c))
			}
			if dr == nil {
				continue
			}
			for _, ss := range dr.Rule.GetSubsets() {
				if c := g.outboundCluster(ix, p.Type, svc, port, dr, ss, p.Proxyless); c != nil {
					out = append(out, resource(c))
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b xds.Resource) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// SelectInstances returns the instances whose labels include every label
// of the subset (all for no subset).
func SelectInstances(list []*model.Instance, subset *networking.Subset) []*model.Instance {
	if len(subset.GetLabels()) == 0 {
		return list
	}
	var out []*model.Instance
	for _, in := range list {
		if labelsMatch(subset.GetLabels(), in.Labels) {
			out = append(out, in)
		}
	}
	return out
}

func labelsMatch(selector, labels map[string]string) bool {
	for k, v := range selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

// adsSource is "fetch over the ADS stream", as Istio points EDS and SDS.
func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		InitialFetchTimeout:   durationpb.New(0),
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

// outboundCluster builds outbound|PORT|SUBSET|HOST, or nil when the
// service cannot have one (dynamic DNS, or DNS without endpoints, or, for
// a proxyless gRPC client, anything gRPC cannot use).
func (g *Generator) outboundCluster(ix *index.Index, proxyType string, svc *model.Service, port *model.Port, dr *index.ResolvedDR, subset *networking.Subset, grpc bool) *clusterv3.Cluster {
	name := ClusterName("outbound", port.Port, subset.GetName(), svc.Hostname)
	c := &clusterv3.Cluster{
		Name:           name,
		ConnectTimeout: durationpb.New(g.o.ConnectTimeout),
	}
	switch svc.Resolution {
	case model.ClientSideLB:
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
		c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource(), ServiceName: name}
	case model.DNS, model.DNSRoundRobin:
		la := dnsAssignment(ix, name, SelectInstances(ix.Registry().Instances(svc, port.Port), subset), svc.Resolution == model.DNSRoundRobin)
		if la == nil {
			return nil
		}
		typ := clusterv3.Cluster_STRICT_DNS
		if svc.Resolution == model.DNSRoundRobin {
			typ = clusterv3.Cluster_LOGICAL_DNS
		}
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: typ}
		c.LoadAssignment = la
		c.DnsLookupFamily = clusterv3.Cluster_V4_ONLY
		c.DnsRefreshRate = durationpb.New(g.o.DNSRefreshRate)
		c.RespectDnsTtl = true
	case model.Passthrough:
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
	default:
		// DYNAMIC_DNS needs Envoy's dynamic forward proxy, which
		// skiff-proxy does not have: such hosts get no cluster.
		return nil
	}
	var rule *networking.DestinationRule
	if dr != nil {
		rule = dr.Rule
	}
	tp := TrafficPolicyFor(rule, port.Port, subset)
	b := &builder{c: c, thresholds: defaultThresholds(), proxyType: proxyType}
	b.protocol(port.Protocol, tp.GetConnectionPool().GetHttp())
	b.loadBalancer(tp.GetLoadBalancer())
	b.connectionPool(tp.GetConnectionPool())
	b.outlierDetection(tp.GetOutlierDetection(), c.GetType() == clusterv3.Cluster_EDS)
	b.locality(tp.GetLoadBalancer().GetLocalityLbSetting(), tp.GetOutlierDetection() != nil)
	g.tls(b, ix, svc, port, subset.GetName(), tp, dr != nil && dr.Rule.GetWorkloadSelector() != nil)
	b.finish()
	c.Metadata = metadata(svc, port, subset.GetName(), dr)
	if grpc {
		return grpcCluster(c, svc, tp.GetTls())
	}
	return c
}

// metadata is what Istio attaches to an outbound cluster for telemetry
// and debugging: the service it reaches (destination_service), its port,
// the subset, and the DestinationRule that shaped it.
func metadata(svc *model.Service, port *model.Port, subset string, dr *index.ResolvedDR) *corev3.Metadata {
	f := map[string]*structpb.Value{
		"services": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			"host":      structpb.NewStringValue(svc.Hostname),
			"name":      structpb.NewStringValue(svc.Name),
			"namespace": structpb.NewStringValue(svc.Namespace),
		}})}}),
		"default_original_port": structpb.NewNumberValue(float64(port.Port)),
	}
	if subset != "" {
		f["subset"] = structpb.NewStringValue(subset)
	}
	if dr != nil {
		f["config"] = structpb.NewStringValue("/apis/networking.istio.io/v1alpha3/namespaces/" + dr.Source.Meta.Namespace + "/destination-rule/" + dr.Source.Meta.Name)
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": {Fields: f}}}
}

// dnsAssignment lists a DNS cluster's endpoints inline, each host:port
// once; LOGICAL_DNS takes only the first, as Istio does.
func dnsAssignment(ix *index.Index, name string, list []*model.Instance, first bool) *endpointv3.ClusterLoadAssignment {
	seen := map[string]bool{}
	var eps []*endpointv3.LbEndpoint
	for _, in := range list {
		if in.Port == 0 || !in.Healthy {
			continue
		}
		k := in.Address + ":" + strconv.Itoa(in.Port)
		if seen[k] {
			continue
		}
		seen[k] = true
		ep := &endpointv3.LbEndpoint{
			HostIdentifier:      &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(in.Address, in.Port)}},
			LoadBalancingWeight: wrapperspb.UInt32(max(in.Weight, 1)),
		}
		if in.TLSMode == "istio" && !ix.MTLSDisabled(in.Namespace, in.Labels, in.Port) {
			// What auto mTLS's transport socket match looks for, as EDS sends it.
			ep.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
				"envoy.transport_socket_match": {Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue("istio")}},
			}}
		}
		eps = append(eps, ep)
		if first {
			break
		}
	}
	if len(eps) == 0 {
		return nil
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: eps}}}
}

func socketAddress(addr string, port int) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}
