package lds

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/gen/sds"
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

// inboundContext is what one sidecar's virtualInbound listener is made
// of: the workload's ports, the effective PeerAuthentication, and the
// policy filters per port.
type inboundContext struct {
	scopeKey string
	ports    []inboundPort
	mtls     index.EffectiveMTLS
	// extraPorts are ports with a port-level mTLS mode that no workload
	// port covers: they get passthrough chains of their own, as in Istio.
	extraPorts []uint32
	policy     map[int]policyFilters // by port, 0 for passthrough; nil without an InboundPolicy
	policyKey  string
}

type policyFilters struct {
	http    []*hcmv3.HttpFilter
	network []*listenerv3.Filter
}

// policyFilters asks the InboundPolicy (if any) for port's filters.
func (g *Generator) policyFilters(p *xds.Proxy, ix *index.Index, port int) policyFilters {
	if g.o.InboundPolicy == nil {
		return policyFilters{}
	}
	http, network := g.o.InboundPolicy.InboundFilters(p, ix, port)
	return policyFilters{http: http, network: network}
}

// hash writes the filters' deterministic encoding: listeners built from
// them are cached under it.
func (pf policyFilters) hash(h io.Writer) {
	for _, f := range pf.http {
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(f)
		h.Write(b)
		h.Write([]byte{0})
	}
	h.Write([]byte{1})
	for _, f := range pf.network {
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(f)
		h.Write(b)
		h.Write([]byte{0})
	}
}

func (g *Generator) inbound(p *xds.Proxy, ix *index.Index) *inboundContext {
	ic := &inboundContext{scopeKey: ix.SidecarScope(p).Key(), ports: inboundPorts(p, ix)}
	if g.o.DisableInboundMTLS {
		ic.mtls = index.EffectiveMTLS{Mode: index.MTLSDisable}
	} else {
		ic.mtls = ix.PeerAuthentication(p.Namespace, p.Labels)
	}
	for _, port := range slices.Sorted(maps.Keys(ic.mtls.PerPort)) {
		if !slices.ContainsFunc(ic.ports, func(ip inboundPort) bool { return ip.port == int(port) }) {
			ic.extraPorts = append(ic.extraPorts, port)
		}
	}
	if g.o.InboundPolicy != nil {
		ic.policy = map[int]policyFilters{}
		h := sha256.New()
		add := func(port int) {
			pf := g.policyFilters(p, ix, port)
			ic.policy[port] = pf
			fmt.Fprintf(h, "|%d:", port)
			pf.hash(h)
		}
		add(0)
		for _, ip := range ic.ports {
			add(ip.port)
		}
		for _, port := range ic.extraPorts {
			add(int(port))
		}
		ic.policyKey = hex.EncodeToString(h.Sum(nil))
	}
	return ic
}

// key is the cache key of the listener: everything it is built from.
func (ic *inboundContext) key() string {
	var b strings.Builder
	b.WriteString("inbound|" + ic.scopeKey + "|mtls:" + ic.mtls.Key() + "|policy:" + ic.policyKey)
	for _, in := range ic.ports {
		b.WriteString("|in:" + strconv.Itoa(in.port) + "/" + string(in.protocol) + "/" + in.host)
	}
	return b.String()
}

// listener is Istio's virtualInbound: connections redirected to 15006
// are matched by their original destination port (restored by the
// original_dst listener filter) to the workload's ports, and by what the
// TLS and HTTP inspectors saw to a chain for the port's mTLS mode;
// anything else passes through to the original destination. It hands
// nothing off by use_original_dst, as Istio's does not: the outbound
// listener of the same port ("0.0.0.0_9080") would take inbound traffic
// and send it straight back to the pod, round and round.
func (ic *inboundContext) listener() *listenerv3.Listener {
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
	// Passthrough chains for undeclared ports, then for ports with a
	// port-level mode of their own, then the workload's ports.
	l.FilterChains = append(l.FilterChains, ic.passthroughChains(0, ic.mtls.Mode)...)
	for _, port := range ic.extraPorts {
		l.FilterChains = append(l.FilterChains, ic.passthroughChains(port, ic.mtls.PerPort[port])...)
	}
	for _, ip := range ic.ports {
		l.FilterChains = append(l.FilterChains, ic.portChains(ip)...)
	}
	return l
}

// The filter chain match ALPNs Istio uses inbound: what the HTTP
// inspector reports for cleartext HTTP, what Istio's clients offer on
// mTLS for sniffed HTTP and for TCP, and all of Istio's mTLS ALPNs.
var (
	plaintextHTTPALPNs = []string{"http/1.1", "h2c"}
	mtlsHTTPALPNs      = []string{"istio-http/1.0", "istio-http/1.1", "istio-h2"}
	mtlsTCPALPNs       = []string{"istio-peer-exchange", "istio"}
	allIstioMtlsALPNs  = []string{"istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"}
)

// chainOpt is one filter chain of a port: what it matches, whether it
// serves HTTP, and whether it terminates mTLS.
type chainOpt struct {
	alpn      []string
	transport string // "tls" or "raw_buffer"
	http      bool
	mtls      bool
}

// Istio's chain sets per mTLS mode for HTTP, TCP and undeclared (sniffed)
// ports. PERMISSIVE accepts mTLS beside plaintext (and, on TCP ports, TLS
// the application terminates itself); STRICT only TLS, so plaintext finds
// no chain and is closed; DISABLE only plaintext.
func chainOpts(mode index.MTLSMode, http, sniffed bool) []chainOpt {
	switch {
	case sniffed:
		switch mode {
		case index.MTLSStrict:
			return []chainOpt{
				{alpn: mtlsHTTPALPNs, transport: "tls", http: true, mtls: true},
				{transport: "tls", mtls: true},
			}
		case index.MTLSPermissive:
			return []chainOpt{
				{alpn: mtlsHTTPALPNs, transport: "tls", http: true, mtls: true},
				{alpn: plaintextHTTPALPNs, transport: "raw_buffer", http: true},
				{alpn: mtlsTCPALPNs, transport: "tls", mtls: true},
				{transport: "raw_buffer"},
				{transport: "tls"},
			}
		}
		return []chainOpt{
			{alpn: plaintextHTTPALPNs, transport: "raw_buffer", http: true},
			{transport: "raw_buffer"},
		}
	case http:
		switch mode {
		case index.MTLSStrict:
			return []chainOpt{{transport: "tls", http: true, mtls: true}}
		case index.MTLSPermissive:
			return []chainOpt{
				{alpn: allIstioMtlsALPNs, transport: "tls", http: true, mtls: true},
				{transport: "raw_buffer", http: true},
			}
		}
		return []chainOpt{{transport: "raw_buffer", http: true}}
	}
	switch mode {
	case index.MTLSStrict:
		return []chainOpt{{transport: "tls", mtls: true}}
	case index.MTLSPermissive:
		return []chainOpt{
			{alpn: allIstioMtlsALPNs, transport: "tls", mtls: true},
			{transport: "raw_buffer"},
			{transport: "tls"},
		}
	}
	return []chainOpt{{transport: "raw_buffer"}}
}

// passthroughChains send connections to ports the workload does not
// declare (port 0: any) to their original destination, under the mode
// that applies there; Istio's fixed chain names and stat prefixes.
func (ic *inboundContext) passthroughChains(port uint32, mode index.MTLSMode) []*listenerv3.FilterChain {
	cluster := index.InboundPassthroughCluster
	pf := ic.policy[int(port)]
	var out []*listenerv3.FilterChain
	for _, o := range chainOpts(mode, false, true) {
		fc := &listenerv3.FilterChain{FilterChainMatch: o.match(port)}
		if o.http {
			fc.Name = "virtualInbound-catchall-http"
			fc.Filters = []*listenerv3.Filter{httpConnectionManager(hcmOptions{
				statPrefix:    cluster,
				routeConfig:   inboundRoute(cluster, "inbound|http|0", ""),
				normalizePath: true,
				policy:        pf.http,
				xfcc:          hcmv3.HttpConnectionManager_APPEND_FORWARD,
			})}
		} else {
			fc.Name = "virtualInbound"
			fc.Filters = append(slices.Clone(pf.network), tcpProxy(cluster))
		}
		if o.mtls {
			fc.TransportSocket = inboundMTLS(o.http)
		}
		out = append(out, fc)
	}
	return out
}

// portChains serve one workload port: HTTP through the connection
// manager, TCP by tcp_proxy, undeclared protocols sniffed to one or the
// other, each as plaintext and/or mTLS as the port's mode says.
func (ic *inboundContext) portChains(ip inboundPort) []*listenerv3.FilterChain {
	cluster := index.InboundCluster(ip.port)
	name := "0.0.0.0_" + strconv.Itoa(ip.port)
	pf := ic.policy[ip.port]
	mode := ic.mtls.ForPort(uint32(ip.port))
	var out []*listenerv3.FilterChain
	for _, o := range chainOpts(mode, ip.protocol.IsHTTP(), ip.protocol.IsUnsupported()) {
		fc := &listenerv3.FilterChain{Name: name, FilterChainMatch: o.match(uint32(ip.port))}
		if o.http {
			fc.Filters = []*listenerv3.Filter{httpConnectionManager(hcmOptions{
				statPrefix:    "inbound_" + name,
				routeConfig:   inboundRoute(cluster, "inbound|http|"+strconv.Itoa(ip.port), ip.host),
				normalizePath: true,
				policy:        pf.http,
				xfcc:          hcmv3.HttpConnectionManager_APPEND_FORWARD,
			})}
		} else {
			fc.Filters = append(slices.Clone(pf.network), tcpProxy(cluster))
		}
		if o.mtls {
			fc.TransportSocket = inboundMTLS(o.http)
		}
		out = append(out, fc)
	}
	return out
}

func (o chainOpt) match(port uint32) *listenerv3.FilterChainMatch {
	m := &listenerv3.FilterChainMatch{TransportProtocol: o.transport, ApplicationProtocols: o.alpn}
	if port > 0 {
		m.DestinationPort = wrapperspb.UInt32(port)
	}
	return m
}

// inboundCiphers are Istio's cipher suites for sidecars' mTLS servers.
var inboundCiphers = []string{
	"ECDHE-ECDSA-AES256-GCM-SHA384",
	"ECDHE-RSA-AES256-GCM-SHA384",
	"ECDHE-ECDSA-AES128-GCM-SHA256",
	"ECDHE-RSA-AES128-GCM-SHA256",
	"AES256-GCM-SHA384",
	"AES128-GCM-SHA256",
}

// inboundMTLS is the server side of mesh mTLS, as Istio builds it: the
// workload's certificate and the mesh roots from the local agent, a
// client certificate required, and ALPN offering HTTP/2 and HTTP/1.1
// (never "istio", which would stand in for the application protocol),
// with "istio-peer-exchange" first on TCP chains.
func inboundMTLS(http bool) *corev3.TransportSocket {
	alpn := []string{"h2", "http/1.1"}
	if !http {
		alpn = []string{"istio-peer-exchange", "h2", "http/1.1"}
	}
	ctx := &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols: alpn,
			TlsParams: &tlsv3.TlsParameters{
				CipherSuites:              inboundCiphers,
				TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2,
				TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
			},
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sds.Identity(sds.Default)},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext:         &tlsv3.CertificateValidationContext{},
					ValidationContextSdsSecretConfig: sds.Identity(sds.RootCA),
				},
			},
		},
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
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
