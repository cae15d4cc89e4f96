package lds

import (
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/gen/rds"
	"github.com/skiff-mesh/skiff/controlplane/model"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// gatewayListeners are a router's listeners: one bound "0.0.0.0_PORT" per
// distinct server port of the Gateways selecting it, with a filter chain
// per server (plain HTTP servers on a port share one, as they share the
// "http.PORT" route configuration).
func gatewayListeners(p *xds.Proxy, ix *index.Index) []*listenerv3.Listener {
	byPort := map[int][]rds.Server{}
	var ports []int
	for _, s := range rds.ServersFor(p, ix) {
		if _, ok := byPort[s.BindPort()]; !ok {
			ports = append(ports, s.BindPort())
		}
		byPort[s.BindPort()] = append(byPort[s.BindPort()], s)
	}
	slices.Sort(ports)
	var out []*listenerv3.Listener
	for _, port := range ports {
		if l := gatewayListener(p, ix, port, byPort[port]); l != nil {
			out = append(out, l)
		}
	}
	return out
}

func gatewayListener(p *xds.Proxy, ix *index.Index, port int, servers []rds.Server) *listenerv3.Listener {
	ip := p.BindAddress()
	name := ip + "_" + strconv.Itoa(port)
	l := &listenerv3.Listener{
		Name:             name,
		Address:          socketAddress(ip, port),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
	}
	seen := map[string]bool{}
	add := func(fc *listenerv3.FilterChain) {
		key, _ := proto.MarshalOptions{Deterministic: true}.Marshal(fc.GetFilterChainMatch())
		if !seen[string(key)] {
			seen[string(key)] = true
			l.FilterChains = append(l.FilterChains, fc)
		}
	}
	tls := false
	for _, s := range servers {
		switch {
		case s.Protocol().IsHTTP():
			add(&listenerv3.FilterChain{Filters: []*listenerv3.Filter{gatewayHCM(name, s.RouteName())}})
		case s.TerminatesHTTP():
			tls = true
			add(&listenerv3.FilterChain{
				FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: serverNames(s)},
				TransportSocket:  downstreamTLS(s.Spec.GetTls()),
				Filters:          []*listenerv3.Filter{gatewayHCM(name, s.RouteName())},
			})
		case s.Protocol() == model.TLS || (s.Spec.GetTls() != nil && s.Spec.GetTls().GetMode() == networking.ServerTLSSettings_PASSTHROUGH):
			// TLS passed through, routed by SNI with tls routes.
			tls = true
			for _, fc := range gatewayL4Chains(p, ix, s, true) {
				add(fc)
			}
		case s.Protocol().IsTCP():
			for _, fc := range gatewayL4Chains(p, ix, s, false) {
				add(fc)
			}
		}
		// AUTO_PASSTHROUGH needs Envoy's sni_cluster filter, which
		// skiff-proxy does not implement: such servers get no chain.
	}
	if len(l.FilterChains) == 0 {
		return nil
	}
	if tls {
		l.ListenerFilters = []*listenerv3.ListenerFilter{tlsInspectorFilter}
	}
	return l
}

func gatewayHCM(listenerName, routeName string) *listenerv3.Filter {
	return httpConnectionManager(hcmOptions{
		statPrefix: "outbound_" + listenerName, rds: routeName,
		useRemoteAddress: true, normalizePath: true,
	})
}

// serverNames are the SNI names a server answers: its hosts without
// namespace, none (any SNI) when one is "*".
func serverNames(s rds.Server) []string {
	var out []string
	for _, h := range s.Spec.GetHosts() {
		if _, host, ok := strings.Cut(h, "/"); ok {
			h = host
		}
		if h == "*" {
			return nil
		}
		if !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

// gatewayL4Chains route a TCP or TLS-passthrough server with the tcp or
// tls routes of the VirtualServices bound to the gateway.
func gatewayL4Chains(p *xds.Proxy, ix *index.Index, s rds.Server, tls bool) []*listenerv3.FilterChain {
	gw := index.GatewayName(s.Gateway)
	l4 := l4Context{ix: ix, port: s.Port(), gateways: []string{gw}, labels: p.Labels, proxyNS: p.Namespace}
	names := serverNames(s)
	admits := func(h string) bool {
		if len(names) == 0 {
			return true
		}
		for _, n := range names {
			if n == h || (strings.HasPrefix(n, "*") && strings.HasSuffix(h, n[1:])) {
				return true
			}
		}
		return false
	}
	var out []*listenerv3.FilterChain
	for _, vs := range ix.VirtualServices(p, gw) {
		if tls {
			out = append(out, l4.tlsChains(vs, admits)...)
		} else {
			out = append(out, l4.tcpChains(vs)...)
		}
	}
	return out
}

// downstreamTLS is the server side of a terminating gateway server:
// certificates from files (serverCertificate/privateKey, or each of
// tlsCertificates), or from SDS over ADS (credentialName, each of
// credentialNames; ISTIO_MUTUAL uses the workload's own "default" and
// "ROOTCA"); client certificates verified for MUTUAL and ISTIO_MUTUAL.
func downstreamTLS(t *networking.ServerTLSSettings) *corev3.TransportSocket {
	ctc := &tlsv3.CommonTlsContext{AlpnProtocols: []string{"h2", "http/1.1"}}
	ads := &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
	sds := func(name string) *tlsv3.SdsSecretConfig { return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: ads} }
	mode := t.GetMode()
	verify := mode == networking.ServerTLSSettings_MUTUAL || mode == networking.ServerTLSSettings_ISTIO_MUTUAL
	var caSDS, caFile string
	switch {
	case mode == networking.ServerTLSSettings_ISTIO_MUTUAL:
		ctc.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{sds("default")}
		caSDS = "ROOTCA"
	case t.GetCredentialName() != "" || len(t.GetCredentialNames()) > 0:
		names := t.GetCredentialNames()
		if cn := t.GetCredentialName(); cn != "" {
			names = []string{cn}
		}
		for _, n := range names {
			ctc.TlsCertificateSdsSecretConfigs = append(ctc.TlsCertificateSdsSecretConfigs, sds(n))
		}
		caSDS = names[0] + "-cacert"
		if cc := t.GetCaCertCredentialName(); cc != "" {
			caSDS = cc
		}
	case len(t.GetTlsCertificates()) > 0:
		for _, c := range t.GetTlsCertificates() {
			ctc.TlsCertificates = append(ctc.TlsCertificates, &tlsv3.TlsCertificate{
				CertificateChain: fileSource(c.GetServerCertificate()), PrivateKey: fileSource(c.GetPrivateKey()),
			})
		}
		caFile = t.GetCaCertificates()
	default:
		ctc.TlsCertificates = []*tlsv3.TlsCertificate{{
			CertificateChain: fileSource(t.GetServerCertificate()),
			PrivateKey:       fileSource(t.GetPrivateKey()),
		}}
		caFile = t.GetCaCertificates()
	}
	if verify {
		switch {
		case caSDS != "":
			ctc.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: sds(caSDS)}
		case caFile != "":
			ctc.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{
				ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: fileSource(caFile)},
			}
		}
	}
	if params := tlsParams(t); params != nil {
		ctc.TlsParams = params
	}
	dtc := &tlsv3.DownstreamTlsContext{CommonTlsContext: ctc}
	if verify {
		dtc.RequireClientCertificate = wrapperspb.Bool(true)
	}
	return &corev3.TransportSocket{
		Name:       "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(dtc)},
	}
}

func fileSource(path string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
}

// tlsVersions maps Istio's protocol versions to Envoy's.
var tlsVersions = map[networking.ServerTLSSettings_TLSProtocol]tlsv3.TlsParameters_TlsProtocol{
	networking.ServerTLSSettings_TLSV1_0: tlsv3.TlsParameters_TLSv1_0,
	networking.ServerTLSSettings_TLSV1_1: tlsv3.TlsParameters_TLSv1_1,
	networking.ServerTLSSettings_TLSV1_2: tlsv3.TlsParameters_TLSv1_2,
	networking.ServerTLSSettings_TLSV1_3: tlsv3.TlsParameters_TLSv1_3,
}

func tlsParams(t *networking.ServerTLSSettings) *tlsv3.TlsParameters {
	p := &tlsv3.TlsParameters{
		TlsMinimumProtocolVersion: tlsVersions[t.GetMinProtocolVersion()],
		TlsMaximumProtocolVersion: tlsVersions[t.GetMaxProtocolVersion()],
		CipherSuites:              t.GetCipherSuites(),
	}
	if proto.Equal(p, &tlsv3.TlsParameters{}) {
		return nil
	}
	return p
}
