package lds

import (
	"net/netip"
	"strconv"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/gen/rds"
	"github.com/skiff-mesh/skiff/controlplane/model"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// outboundListeners are virtualOutbound and the per-port / per-address
// listeners it hands connections to.
func outboundListeners(p *xds.Proxy, ix *index.Index) []*listenerv3.Listener {
	scope := ix.SidecarScope(p)
	fallback := index.PassthroughCluster
	if scope.OutboundTrafficPolicy() == "REGISTRY_ONLY" {
		fallback = index.BlackHoleCluster
	}
	var out []*listenerv3.Listener
	if p.Captured() {
		out = append(out, virtualOutbound(fallback))
	}
	if p.HTTPProxyPort > 0 {
		out = append(out, httpProxyListener(p))
	}
	vss := rds.NewVSLookup(ix, ix.VirtualServices(p, "mesh"))
	for _, ps := range scope.Ports() {
		out = append(out, portListeners(p, ix, ps, vss, fallback)...)
	}
	return out
}

// httpProxyListener is Istio's HTTP_PROXY_PORT listener: applications
// that set HTTP_PROXY to it send absolute-form requests, routed by host
// and port across every service the proxy sees (route "http_proxy"). It
// binds the proxy's own address, as nothing is redirected to it.
func httpProxyListener(p *xds.Proxy) *listenerv3.Listener {
	ip := p.BindAddress()
	if p.Captured() {
		ip = "127.0.0.1" // inside the pod's own network, as Istio binds it
	}
	name := ip + "_" + strconv.Itoa(p.HTTPProxyPort)
	return &listenerv3.Listener{
		Name:             name,
		Address:          socketAddress(ip, p.HTTPProxyPort),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{httpConnectionManager(hcmOptions{statPrefix: "outbound_" + name, rds: rds.HTTPProxyRoute})},
		}},
	}
}

// virtualOutbound is Istio's capture listener: connections redirected to
// 15001 go to the listener for their original destination, and the rest
// pass through (ALLOW_ANY) or are dropped (REGISTRY_ONLY). Connections to
// 15001 itself are dropped so a loop cannot form.
func virtualOutbound(fallback string) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:             "virtualOutbound",
		Address:          socketAddress("0.0.0.0", OutboundCapturePort),
		UseOriginalDst:   wrapperspb.Bool(true),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		ListenerFilters:  []*listenerv3.ListenerFilter{originalDstFilter},
		FilterChains: []*listenerv3.FilterChain{
			{
				Name:             "virtualOutbound-blackhole",
				FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(OutboundCapturePort)},
				Filters:          []*listenerv3.Filter{tcpProxy(index.BlackHoleCluster)},
			},
			{
				Name:    "virtualOutbound-catchall-tcp",
				Filters: []*listenerv3.Filter{tcpProxy(fallback)},
			},
		},
	}
}

// portListeners builds the outbound listeners of one port: "0.0.0.0_PORT"
// when HTTP (or sniffed) services use the port, or TCP services without a
// virtual IP do; "VIP_PORT" for each TCP service with a virtual IP.
func portListeners(p *xds.Proxy, ix *index.Index, ps index.PortServices, vss *rds.VSLookup, fallback string) []*listenerv3.Listener {
	port := ps.Port
	l4 := l4Context{ix: ix, port: port, gateways: []string{"mesh"}, labels: p.Labels, proxyNS: p.Namespace}
	bindIP, bound := egressBind(ps.Egress)
	var out []*listenerv3.Listener
	var wildcardTCP []*model.Service // TCP services without a VIP
	for _, svc := range ps.Services {
		proto := svc.Port(port).Protocol
		if proto.IsHTTP() || proto.IsUnsupported() || !proto.IsTCP() {
			continue
		}
		vips := serviceVIPs(svc)
		if len(vips) == 0 || bound {
			wildcardTCP = append(wildcardTCP, svc)
			continue
		}
		chains := serviceTCPChains(l4, svc, vss, proto.IsTLS())
		for _, vip := range vips {
			out = append(out, &listenerv3.Listener{
				Name:             vip + "_" + strconv.Itoa(port),
				Address:          socketAddress(vip, port),
				BindToPort:       wrapperspb.Bool(false),
				TrafficDirection: corev3.TrafficDirection_OUTBOUND,
				ListenerFilters:  tcpListenerFilters(proto.IsTLS()),
				FilterChains:     chains,
			})
		}
	}
	http := rds.HTTPPort(ps)
	if !http && len(wildcardTCP) == 0 {
		return out
	}
	l := &listenerv3.Listener{
		Name:             bindIP + "_" + strconv.Itoa(port),
		Address:          socketAddress(bindIP, port),
		BindToPort:       wrapperspb.Bool(bound),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
	}
	if !http {
		l.ListenerFilters, l.FilterChains = wildcardTCPChains(l4, wildcardTCP, vss, fallback)
		return append(out, l)
	}
	// HTTP: Istio sniffs every outbound HTTP port, so that non-HTTP
	// traffic to an address the mesh does not know still passes through.
	l.ListenerFilters = []*listenerv3.ListenerFilter{tlsInspectorFilter, httpInspectorFilter}
	hcm := httpConnectionManager(hcmOptions{statPrefix: "outbound_" + bindIP + "_" + strconv.Itoa(port), rds: strconv.Itoa(port)})
	for _, svc := range ps.Services {
		if !svc.Port(port).Protocol.IsUnsupported() {
			continue
		}
		// A sniffed service's non-HTTP traffic goes to its own cluster.
		for _, vip := range serviceVIPs(svc) {
			r := cidrs([]string{vip})
			httpMatch := plaintextHTTP()
			httpMatch.PrefixRanges = r
			l.FilterChains = append(l.FilterChains,
				&listenerv3.FilterChain{FilterChainMatch: httpMatch, Filters: []*listenerv3.Filter{hcm}},
				&listenerv3.FilterChain{
					FilterChainMatch: &listenerv3.FilterChainMatch{PrefixRanges: r},
					Filters:          []*listenerv3.Filter{tcpProxy(index.OutboundCluster(port, "", svc.Hostname))},
				})
		}
	}
	tcpFallback := fallback
	if len(wildcardTCP) > 0 {
		tcpFallback = index.OutboundCluster(port, "", wildcardTCP[0].Hostname)
	}
	l.FilterChains = append(l.FilterChains,
		&listenerv3.FilterChain{FilterChainMatch: plaintextHTTP(), Filters: []*listenerv3.Filter{hcm}},
		&listenerv3.FilterChain{Name: tcpFallback, Filters: []*listenerv3.Filter{tcpProxy(tcpFallback)}},
	)
	return append(out, l)
}

// wildcardTCPChains route TCP services that share a port without virtual
// IPs: TLS ones by SNI (their tls routes, else their host name), the
// rest as the first plain TCP service says, as Istio resolves the
// conflict; unmatched TLS passes through (or is dropped).
func wildcardTCPChains(l4 l4Context, svcs []*model.Service, vss *rds.VSLookup, fallback string) ([]*listenerv3.ListenerFilter, []*listenerv3.FilterChain) {
	var chains []*listenerv3.FilterChain
	seen := map[string]bool{}
	add := func(fcs ...*listenerv3.FilterChain) {
		for _, fc := range fcs {
			key := fc.GetFilterChainMatch().String()
			if !seen[key] {
				seen[key] = true
				chains = append(chains, fc)
			}
		}
	}
	tls := false
	for _, svc := range svcs {
		if !svc.Port(l4.port).Protocol.IsTLS() {
			add(serviceTCPChains(l4, svc, vss, false)...)
			continue
		}
		tls = true
		var own []*listenerv3.FilterChain
		if vs := vss.For(svc.Hostname); vs != nil {
			own = l4.tlsChains(vs, nil)
		}
		if len(own) == 0 {
			own = []*listenerv3.FilterChain{{
				FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: []string{svc.Hostname}},
				Filters:          []*listenerv3.Filter{tcpProxy(index.OutboundCluster(l4.port, "", svc.Hostname))},
			}}
		}
		add(own...)
	}
	add(&listenerv3.FilterChain{Name: fallback, Filters: []*listenerv3.Filter{tcpProxy(fallback)}})
	return tcpListenerFilters(tls), chains
}

// egressBind is where a Sidecar egress listener with an explicit port and
// bind address listens (bound, as Istio does for captureMode NONE or an
// explicit bind); otherwise the capture address 0.0.0.0, unbound.
func egressBind(el *index.EgressListener) (string, bool) {
	spec := el.Spec
	if spec.GetPort().GetNumber() == 0 {
		return "0.0.0.0", false
	}
	if _, err := netip.ParseAddr(spec.GetBind()); err == nil {
		return spec.GetBind(), true
	}
	if spec.GetCaptureMode() == networking.CaptureMode_NONE {
		return "127.0.0.1", true
	}
	return "0.0.0.0", false
}

func tcpListenerFilters(tls bool) []*listenerv3.ListenerFilter {
	if tls {
		return []*listenerv3.ListenerFilter{tlsInspectorFilter}
	}
	return nil
}

// serviceTCPChains routes a TCP or TLS service: its VirtualService's tcp
// (or tls, by SNI) routes, then everything else to the service's cluster.
func serviceTCPChains(l4 l4Context, svc *model.Service, vss *rds.VSLookup, tls bool) []*listenerv3.FilterChain {
	def := &listenerv3.FilterChain{Filters: []*listenerv3.Filter{tcpProxy(index.OutboundCluster(l4.port, "", svc.Hostname))}}
	vs := vss.For(svc.Hostname)
	if vs == nil {
		return []*listenerv3.FilterChain{def}
	}
	var chains []*listenerv3.FilterChain
	if tls {
		chains = l4.tlsChains(vs, nil)
	}
	chains = append(chains, l4.tcpChains(vs)...)
	for _, c := range chains {
		if c.FilterChainMatch == nil {
			return chains
		}
	}
	return append(chains, def)
}

// serviceVIPs are a service's single-address virtual IPs.
func serviceVIPs(svc *model.Service) []string {
	var out []string
	for _, a := range svc.Addresses {
		if ip, err := netip.ParseAddr(a); err == nil && !ip.IsUnspecified() {
			out = append(out, a)
		}
	}
	return out
}
