package lds

import (
	"net/netip"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/gen/index"
)

// l4Context is where TCP and TLS routes are being applied.
type l4Context struct {
	ix       *index.Index
	port     int
	gateways []string // "mesh", or the gateway's "ns/name"
	labels   map[string]string
	proxyNS  string
}

// tcpChains translates a VirtualService's tcp routes into filter chains,
// in order, stopping after one that matches every connection.
func (c l4Context) tcpChains(vsObj *config.Object) []*listenerv3.FilterChain {
	vs := vsObj.Spec.(*networking.VirtualService)
	var out []*listenerv3.FilterChain
	for _, r := range vs.GetTcp() {
		if len(r.GetMatch()) == 0 {
			return append(out, c.chain(vsObj, nil, nil, r.GetRoute()))
		}
		for _, m := range r.GetMatch() {
			if !c.applies(vsObj, m.GetPort(), m.GetSourceLabels(), m.GetSourceNamespace(), m.GetGateways()) {
				continue
			}
			out = append(out, c.chain(vsObj, nil, m.GetDestinationSubnets(), r.GetRoute()))
			if len(m.GetDestinationSubnets()) == 0 {
				return out
			}
		}
	}
	return out
}

// tlsChains translates a VirtualService's tls routes into filter chains
// matched by SNI. hostFilter, when set, keeps only SNI names it admits
// (a gateway server's hosts).
func (c l4Context) tlsChains(vsObj *config.Object, hostFilter func(string) bool) []*listenerv3.FilterChain {
	vs := vsObj.Spec.(*networking.VirtualService)
	var out []*listenerv3.FilterChain
	for _, r := range vs.GetTls() {
		for _, m := range r.GetMatch() {
			if !c.applies(vsObj, m.GetPort(), m.GetSourceLabels(), m.GetSourceNamespace(), m.GetGateways()) {
				continue
			}
			var sni []string
			for _, h := range m.GetSniHosts() {
				if hostFilter == nil || hostFilter(h) {
					sni = append(sni, h)
				}
			}
			if len(sni) == 0 {
				continue
			}
			out = append(out, c.chain(vsObj, sni, m.GetDestinationSubnets(), r.GetRoute()))
		}
	}
	return out
}

// applies checks a match's proxy-side conditions.
func (c l4Context) applies(vsObj *config.Object, port uint32, labels map[string]string, ns string, gws []string) bool {
	if port != 0 && int(port) != c.port {
		return false
	}
	for k, v := range labels {
		if lv, ok := c.labels[k]; !ok || lv != v {
			return false
		}
	}
	if ns != "" && ns != c.proxyNS {
		return false
	}
	if len(gws) == 0 {
		gws = vsObj.Spec.(*networking.VirtualService).GetGateways()
	}
	if len(gws) == 0 {
		gws = []string{"mesh"}
	}
	for _, g := range gws {
		if g != "mesh" && !strings.Contains(g, "/") {
			g = vsObj.Meta.Namespace + "/" + g
		}
		if slices.Contains(c.gateways, g) {
			return true
		}
	}
	return false
}

func (c l4Context) chain(vsObj *config.Object, sni, subnets []string, dests []*networking.RouteDestination) *listenerv3.FilterChain {
	var clusters []string
	var weights []uint32
	for _, d := range dests {
		if d.GetWeight() == 0 && len(dests) > 1 {
			continue
		}
		clusters = append(clusters, c.cluster(vsObj, d.GetDestination()))
		weights = append(weights, uint32(d.GetWeight()))
	}
	fc := &listenerv3.FilterChain{}
	match := &listenerv3.FilterChainMatch{ServerNames: sni, PrefixRanges: cidrs(subnets)}
	if !proto.Equal(match, &listenerv3.FilterChainMatch{}) {
		fc.FilterChainMatch = match
	}
	if len(clusters) == 0 {
		clusters, weights = []string{index.BlackHoleCluster}, []uint32{1}
	}
	fc.Filters = []*listenerv3.Filter{weightedTCPProxy(vsObj.Meta.Name, clusters, weights)}
	return fc
}

// cluster names a destination's cluster: its port, else the service's
// only port, else the port being routed.
func (c l4Context) cluster(vsObj *config.Object, d *networking.Destination) string {
	host := c.ix.ResolveHost(d.GetHost(), vsObj.Meta.Namespace)
	port := int(d.GetPort().GetNumber())
	if port == 0 {
		port = c.port
		if svc := c.ix.Registry().Service(host, c.proxyNS); svc != nil && len(svc.Ports) == 1 {
			port = svc.Ports[0].Port
		}
	}
	return index.OutboundCluster(port, d.GetSubset(), host)
}

// cidrs converts addresses and CIDRs ("10.0.0.0/8", "10.1.2.3") to Envoy ranges.
func cidrs(list []string) []*corev3.CidrRange {
	var out []*corev3.CidrRange
	for _, s := range list {
		if r := cidr(s); r != nil {
			out = append(out, r)
		}
	}
	return out
}

func cidr(s string) *corev3.CidrRange {
	if p, err := netip.ParsePrefix(s); err == nil {
		return &corev3.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return &corev3.CidrRange{AddressPrefix: a.String(), PrefixLen: wrapperspb.UInt32(uint32(a.BitLen()))}
	}
	return nil
}
