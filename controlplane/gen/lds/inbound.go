package lds

import (
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/model"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// inboundPort is one port the workload receives traffic on.
type inboundPort struct {
	port     int
	protocol model.Protocol
	host     string // the service it serves, for the tracing operation; may be empty
}

// inboundPorts are the workload's ports: from the Sidecar's ingress
// listeners when it declares any, else the target ports of the services
// that select the workload (by the proxy's IPs), sorted by port.
func inboundPorts(p *xds.Proxy, ix *index.Index) []inboundPort {
	var out []inboundPort
	add := func(ip inboundPort) {
		for i, have := range out {
			if have.port == ip.port {
				// HTTP wins when services disagree, as the port then
				// still serves the HTTP ones.
				if !have.protocol.IsHTTP() && ip.protocol.IsHTTP() {
					out[i] = ip
				}
				return
			}
		}
		out = append(out, ip)
	}
	if ing := ix.SidecarScope(p).IngressListeners(); len(ing) > 0 {
		for _, il := range ing {
			if strings.HasPrefix(il.GetDefaultEndpoint(), "unix://") {
				continue // skiff-proxy clusters cannot reach unix sockets, so CDS has no cluster for it
			}
			add(inboundPort{port: int(il.GetPort().GetNumber()), protocol: model.ParseProtocol(il.GetPort().GetProtocol())})
		}
	} else {
		for _, ip := range p.IPs {
			for _, in := range ix.Registry().InstancesByIP(ip) {
				if in.Port == 0 || in.ServicePort.Protocol == model.UDP {
					continue
				}
				add(inboundPort{port: in.Port, protocol: in.ServicePort.Protocol, host: in.Service.Hostname + ":" + strconv.Itoa(in.ServicePort.Port)})
			}
		}
	}
	slices.SortFunc(out, func(a, b inboundPort) int { return a.port - b.port })
	return out
}

// inboundListener is Istio's virtualInbound: connections redirected to
// 15006 are matched by their original destination port (restored by the
// original_dst listener filter) to the workload's ports; anything else
// passes through to the original destination. It hands nothing off by
// use_original_dst, as Istio's does not: the outbound listener of the
// same port ("0.0.0.0_9080") would take inbound traffic and send it
// straight back to the pod, round and round.
// Chains are plaintext; mutual TLS chains per port slot in beside them.
func inboundListener(p *xds.Proxy, ix *index.Index) *listenerv3.Listener {
	l := &listenerv3.Listener{
		Name:             "virtualInbound",
		Address:          socketAddress("0.0.0.0", InboundCapturePort),
		TrafficDirection: corev3.TrafficDirection_INBOUND,
		ListenerFilters:  []*listenerv3.ListenerFilter{originalDstFilter, tlsInspectorFilter, httpInspectorFilter},
		FilterChains: []*listenerv3.FilterChain{{
			Name:             "virtualInbound-blackhole",
			FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(InboundCapturePort)},
			Filters:          []*listenerv3.Filter{tcpProxy(index.BlackHoleCluster)},
		}},
	}
	for _, ip := range inboundPorts(p, ix) {
		l.FilterChains = append(l.FilterChains, inboundChains(ip)...)
	}
	l.FilterChains = append(l.FilterChains,
		&listenerv3.FilterChain{
			Name:             "virtualInbound-catchall-http",
			FilterChainMatch: plaintextHTTP(),
			Filters: []*listenerv3.Filter{httpConnectionManager(hcmOptions{
				statPrefix:    index.InboundPassthroughCluster,
				routeConfig:   inboundRoute(index.InboundPassthroughCluster, "inbound|http|0", ""),
				normalizePath: true,
			})},
		},
		&listenerv3.FilterChain{
			Name:    "virtualInbound",
			Filters: []*listenerv3.Filter{tcpProxy(index.InboundPassthroughCluster)},
		},
	)
	return l
}

// inboundChains serve one workload port: HTTP through the connection
// manager, TCP by tcp_proxy, undeclared protocols sniffed to one or the other.
func inboundChains(ip inboundPort) []*listenerv3.FilterChain {
	cluster := index.InboundCluster(ip.port)
	name := "0.0.0.0_" + strconv.Itoa(ip.port)
	port := wrapperspb.UInt32(uint32(ip.port))
	hcm := httpConnectionManager(hcmOptions{
		statPrefix:    "inbound_" + name,
		routeConfig:   inboundRoute(cluster, "inbound|http|"+strconv.Itoa(ip.port), ip.host),
		normalizePath: true,
	})
	tcp := tcpProxy(cluster)
	switch {
	case ip.protocol.IsHTTP():
		return []*listenerv3.FilterChain{{
			Name: name, FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: port},
			Filters: []*listenerv3.Filter{hcm},
		}}
	case ip.protocol.IsUnsupported():
		return []*listenerv3.FilterChain{
			{
				Name:             name,
				FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: port, TransportProtocol: "raw_buffer", ApplicationProtocols: []string{"http/1.1", "h2c"}},
				Filters:          []*listenerv3.Filter{hcm},
			},
			{Name: name, FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: port}, Filters: []*listenerv3.Filter{tcp}},
		}
	}
	return []*listenerv3.FilterChain{{
		Name: name, FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: port},
		Filters: []*listenerv3.Filter{tcp},
	}}
}

// inboundRoute is Istio's inline inbound route configuration: everything
// to the local cluster, with no timeout.
func inboundRoute(cluster, vhost, host string) *routev3.RouteConfiguration {
	op := host + "/*"
	if host == "" {
		op = cluster + "/*"
	}
	return &routev3.RouteConfiguration{
		Name:             cluster,
		ValidateClusters: wrapperspb.Bool(false),
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    vhost,
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Name:      "default",
				Match:     &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Decorator: &routev3.Decorator{Operation: op},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
					Timeout:          durationpb.New(0),
					MaxGrpcTimeout:   durationpb.New(0),
				}},
			}},
		}},
	}
}
