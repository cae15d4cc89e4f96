package lds

import (
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/gen/rds"
	"github.com/skiff-mesh/skiff/controlplane/gen/sds"
	"github.com/skiff-mesh/skiff/controlplane/model"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// gatewayListeners are a router's listeners: one bound "0.0.0.0_PORT" per
// distinct server port of the Gateways selecting it, with a filter chain
// per server (plain HTTP servers on a port share one, as they share the
// "http.PORT" route configuration).
func gatewayListeners(p *xds.Proxy, ix *index.Index, policy policyFilters) []*listenerv3.Listener {
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
		if l := gatewayListener(p, ix, port, byPort[port], policy); l != nil {
			out = append(out, l)
		}
	}
	return out
}

func gatewayListener(p *xds.Proxy, ix *index.Index, port int, servers []rds.Server, policy policyFilters) *listenerv3.Listener {
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
			add(&listenerv3.FilterChain{Filters: []*listenerv3.Filter{gatewayHCM(name, s.RouteName(), policy.http)}})
		case s.TerminatesHTTP():
			tls = true
			add(&listenerv3.FilterChain{
				FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: serverNames(s)},
				TransportSocket:  downstreamTLS(s.Spec.GetTls()),
				Filters:          []*listenerv3.Filter{gatewayHCM(name, s.RouteName(), policy.http)},
			})
		case s.Protocol() == model.TLS || (s.Spec.GetTls() != nil && s.Spec.GetTls().GetMode() == networking.ServerTLSSettings_PASSTHROUGH):
			// TLS passed through, routed by SNI with tls routes.
			tls = true
			for _, fc := range gatewayL4Chains(p, ix, s, true) {
				fc.Filters = append(slices.Clone(policy.network), fc.Filters...)
				add(fc)
			}
		case s.Protocol().IsTCP():
			for _, fc := range gatewayL4Chains(p, ix, s, false) {
				fc.Filters = append(slices.Clone(policy.network), fc.Filters...)
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

func gatewayHCM(listenerName, routeName string, policy []*hcmv3.HttpFilter) *listenerv3.Filter {
	return httpConnectionManager(hcmOptions{
		statPrefix: "outbound_" + listenerName, rds: routeName,
		useRemoteAddress: true, normalizePath: true, policy: policy,
		xfcc: hcmv3.HttpConnectionManager_SANITIZE_SET,
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

// downstreamTLS is the server side of a terminating gateway server, as
// Istio builds it: certificates from files (serverCertificate/privateKey,
// or each of tlsCertificates), from Kubernetes Secrets over ADS
// (credentialName or each of credentialNames, as "kubernetes://NAME"; the
// CA verifying clients under "kubernetes://NAME-cacert"), or, for
// ISTIO_MUTUAL, the gateway's own workload identity from its agent
// ("default" and "ROOTCA" on sds-grpc). MUTUAL and ISTIO_MUTUAL require
// a client certificate; OPTIONAL_MUTUAL verifies one when sent.
func downstreamTLS(t *networking.ServerTLSSettings) *corev3.TransportSocket {
	ctc := &tlsv3.CommonTlsContext{AlpnProtocols: []string{"h2", "http/1.1"}}
	mode := t.GetMode()
	require := mode == networking.ServerTLSSettings_MUTUAL || mode == networking.ServerTLSSettings_ISTIO_MUTUAL
	verify := require || mode == networking.ServerTLSSettings_OPTIONAL_MUTUAL
	sans := sanMatchers(t.GetSubjectAltNames())
	switch {
	case mode == networking.ServerTLSSettings_ISTIO_MUTUAL:
		ctc.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{sds.Identity(sds.Default)}
		ctc.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchSubjectAltNames: sans},
				ValidationContextSdsSecretConfig: sds.Identity(sds.RootCA),
			},
		}
	case t.GetCredentialName() != "" || len(t.GetCredentialNames()) > 0:
		names := t.GetCredentialNames()
		if len(names) == 0 {
			names = []string{t.GetCredentialName()}
		}
		for _, n := range names {
			ctc.TlsCertificateSdsSecretConfigs = append(ctc.TlsCertificateSdsSecretConfigs, sds.Credential(n))
		}
		ca := names[0] + sds.CASuffix // one CA for all certificates, as in Istio
		if cc := t.GetCaCertCredentialName(); cc != "" {
			ca = cc
		}
		switch {
		case verify:
			ctc.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext: &tlsv3.CertificateValidationContext{
						MatchSubjectAltNames:  sans,
						VerifyCertificateSpki: t.GetVerifyCertificateSpki(),
						VerifyCertificateHash: t.GetVerifyCertificateHash(),
					},
					ValidationContextSdsSecretConfig: sds.Credential(ca),
				},
			}
		case len(sans) > 0:
			ctc.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{
				ValidationContext: &tlsv3.CertificateValidationContext{MatchSubjectAltNames: sans},
			}
		}
	default:
		certs := t.GetTlsCertificates()
		if len(certs) == 0 {
			certs = []*networking.ServerTLSSettings_TLSCertificate{{ServerCertificate: t.GetServerCertificate(), PrivateKey: t.GetPrivateKey()}}
		}
		for _, c := range certs {
			ctc.TlsCertificates = append(ctc.TlsCertificates, &tlsv3.TlsCertificate{
				CertificateChain: fileSource(c.GetServerCertificate()), PrivateKey: fileSource(c.GetPrivateKey()),
			})
		}
		if verify && t.GetCaCertificates() != "" {
			ctc.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{
				ValidationContext: &tlsv3.CertificateValidationContext{
					TrustedCa:             fileSource(t.GetCaCertificates()),
					MatchSubjectAltNames:  sans,
					VerifyCertificateSpki: t.GetVerifyCertificateSpki(),
					VerifyCertificateHash: t.GetVerifyCertificateHash(),
				},
			}
		}
	}
	if mode != networking.ServerTLSSettings_ISTIO_MUTUAL {
		if params := tlsParams(t); params != nil {
			ctc.TlsParams = params
		}
	}
	dtc := &tlsv3.DownstreamTlsContext{CommonTlsContext: ctc, RequireClientCertificate: wrapperspb.Bool(require)}
	return &corev3.TransportSocket{
		Name:       "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(dtc)},
	}
}

func sanMatchers(names []string) []*matcherv3.StringMatcher {
	var out []*matcherv3.StringMatcher
	for _, n := range names {
		out = append(out, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: n}})
	}
	return out
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
