package cds

import (
	"slices"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/model"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// blackHole drops everything: a STATIC cluster with no endpoints.
func (g *Generator) blackHole() *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 BlackHoleCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(g.o.ConnectTimeout),
	}
}

// passthrough forwards to the original destination, speaking whatever
// HTTP version the client spoke.
func (g *Generator) passthrough() *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 PassthroughCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       durationpb.New(g.o.ConnectTimeout),
	}
	b := &builder{c: c, thresholds: defaultThresholds()}
	b.protocol(model.Unsupported, nil)
	b.finish()
	return c
}

// inboundPassthrough delivers inbound traffic for ports no service
// declares to its original destination, from 127.0.0.6 as Istio does, so
// capture rules can tell it from the app's own outbound traffic.
func (g *Generator) inboundPassthrough() *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 InboundPassthroughCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       durationpb.New(g.o.ConnectTimeout),
		UpstreamBindConfig:   &corev3.BindConfig{SourceAddress: &corev3.SocketAddress{Address: "127.0.0.6", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0}}},
	}
	b := &builder{c: c, thresholds: defaultThresholds()}
	b.protocol(model.Unsupported, nil)
	b.finish()
	return c
}

// inbound builds inbound|PORT|| for each port the proxy's workload serves:
// the Sidecar's ingress listeners when it declares any, else the target
// ports of the service instances at the proxy's addresses.
func (g *Generator) inbound(p *xds.Proxy, ix *index.Index, scope *index.SidecarScope) []*clusterv3.Cluster {
	type target struct {
		host  string
		port  int
		proto model.Protocol
		// asIs delivers to the connection's original destination (the
		// pod's own address) from 127.0.0.6, as Istio ≥1.10 does for
		// captured traffic: apps bound to the pod IP only are reached,
		// and capture rules let the delivery through.
		asIs bool
		// services served on this port, for destination_service on the
		// destination side (Istio's filter_metadata.istio.services).
		services []*model.Service
	}
	ports := map[int]target{}
	if ing := scope.IngressListeners(); len(ing) > 0 {
		for _, l := range ing {
			host, port, ok := parseDefaultEndpoint(l.GetDefaultEndpoint(), g.o.InboundAddress)
			if ok {
				ports[int(l.GetPort().GetNumber())] = target{host: host, port: port, proto: model.ParseProtocol(l.GetPort().GetProtocol())}
			}
		}
	} else {
		for _, ip := range p.IPs {
			for _, in := range ix.Registry().InstancesByIP(ip) {
				if in.Port == 0 || in.ServicePort.Protocol == model.UDP {
					continue
				}
				t, dup := ports[in.Port]
				if !dup {
					t = target{host: g.o.InboundAddress, port: in.Port, proto: in.ServicePort.Protocol, asIs: p.Captured()}
				}
				if !slices.ContainsFunc(t.services, func(s *model.Service) bool { return s.Hostname == in.Service.Hostname }) {
					t.services = append(t.services, in.Service)
				}
				ports[in.Port] = t
			}
		}
	}
	var out []*clusterv3.Cluster
	for n, pt := range ports {
		name := ClusterName("inbound", n, "", "")
		c := &clusterv3.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
			ConnectTimeout:       durationpb.New(g.o.ConnectTimeout),
			LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(pt.host, pt.port)}}}},
			}}},
		}
		if pt.asIs {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
			c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
			c.LoadAssignment = nil
			c.UpstreamBindConfig = &corev3.BindConfig{SourceAddress: &corev3.SocketAddress{Address: "127.0.0.6", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0}}}
		}
		b := &builder{c: c, thresholds: defaultThresholds()}
		b.protocol(pt.proto, nil)
		b.finish()
		c.Metadata = inboundMetadata(pt.services)
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *clusterv3.Cluster) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// parseDefaultEndpoint reads a Sidecar ingress listener's defaultEndpoint
// ("127.0.0.1:8080", "0.0.0.0:8080"); the any-address means the
// workload's own, which here is InboundAddress. Unix sockets are not
// supported by skiff-proxy clusters and are skipped.
func parseDefaultEndpoint(ep, inbound string) (string, int, bool) {
	host, portStr, ok := strings.Cut(ep, ":")
	if !ok || strings.HasPrefix(ep, "unix://") {
		return "", 0, false
	}
	n, err := strconv.Atoi(portStr)
	if err != nil || n <= 0 || n > 65535 {
		return "", 0, false
	}
	if host == "0.0.0.0" || host == "" {
		host = inbound
	}
	return host, n, true
}

// inboundMetadata names the services an inbound cluster serves, sorted by
// host, as Istio attaches them (the destination side's destination_service
// labels come from here); nil when none is known.
func inboundMetadata(svcs []*model.Service) *corev3.Metadata {
	if len(svcs) == 0 {
		return nil
	}
	svcs = slices.Clone(svcs)
	slices.SortFunc(svcs, func(a, b *model.Service) int { return strings.Compare(a.Hostname, b.Hostname) })
	var list []*structpb.Value
	for _, s := range svcs {
		list = append(list, structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			"host":      structpb.NewStringValue(s.Hostname),
			"name":      structpb.NewStringValue(s.Name),
			"namespace": structpb.NewStringValue(s.Namespace),
		}}))
	}
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": {Fields: map[string]*structpb.Value{
		"services": structpb.NewListValue(&structpb.ListValue{Values: list}),
	}}}}
}
