package cds

import (
	"fmt"
	"strconv"
	"strings"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/gen/sds"
	"github.com/skiff-mesh/skiff/controlplane/model"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// SDS resource names Istio's proxies fetch their own identity under.
const (
	SecretDefault = sds.Default // the workload certificate and key
	SecretRootCA  = sds.RootCA  // the mesh's trust roots
)

// ALPN Istio's clients offer on mesh mTLS so the server can tell a
// sidecar from another TLS client; HTTP/2 clusters add "h2".
var (
	istioALPN   = []string{"istio-peer-exchange", "istio"}
	istioALPNH2 = []string{"istio-peer-exchange", "istio", "h2"}
)

// metadataExchange runs Istio's peer metadata exchange on upstream
// connections that negotiate ALPN istio-peer-exchange (mesh mTLS), so
// the client side learns which workload answered.
var metadataExchange = &clusterv3.Filter{
	Name: "istio.metadata_exchange",
	TypedConfig: mustAny(&xdstypev3.TypedStruct{
		TypeUrl: "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange",
		Value:   &structpb.Struct{Fields: map[string]*structpb.Value{"protocol": structpb.NewStringValue("istio-peer-exchange")}},
	}),
}

// IstioSNI is the SNI Istio's clients send on mesh mTLS, naming the
// cluster: "outbound_.9080_.v1_.reviews.default.svc.cluster.local".
func IstioSNI(port int, subset, host string) string {
	return "outbound_." + strconv.Itoa(port) + "_." + subset + "_." + host
}

// tls applies the policy's TLS settings, or auto mTLS when it has none, as
// Istio's cluster builder does.
func (g *Generator) tls(b *builder, ix *index.Index, svc *model.Service, port *model.Port, subset string, tp *networking.TrafficPolicy, drSelects bool) {
	c := b.c
	t := tp.GetTls()
	sni := IstioSNI(port.Port, subset, svc.Hostname)
	if t == nil {
		if !g.autoMTLS(ix, svc, port, tp) {
			return
		}
		socket := tlsSocket(istioMutual(sni, svc.Identities(), b.http2()))
		c.Filters = append(c.Filters, metadataExchange)
		if c.GetType() == clusterv3.Cluster_ORIGINAL_DST {
			// Every endpoint has a sidecar (autoMTLS checked): no metadata
			// to match on for original destinations, mTLS outright.
			c.TransportSocket = socket
			return
		}
		c.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{
			{
				Name:            "tlsMode-istio",
				Match:           &structpb.Struct{Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue("istio")}},
				TransportSocket: socket,
			},
			{
				Name:            "tlsMode-disabled",
				Match:           &structpb.Struct{},
				TransportSocket: rawSocket(),
			},
		}
		return
	}
	switch t.GetMode() {
	case networking.ClientTLSSettings_ISTIO_MUTUAL:
		sans := t.GetSubjectAltNames()
		if sans == nil {
			sans = svc.Identities()
		}
		if t.GetSni() != "" {
			sni = t.GetSni()
		}
		c.TransportSocket = tlsSocket(istioMutual(sni, sans, b.http2()))
		c.Filters = append(c.Filters, metadataExchange)
	case networking.ClientTLSSettings_SIMPLE, networking.ClientTLSSettings_MUTUAL:
		// A credential handed to every sidecar a rule reaches would be
		// fetched by all of them: Istio honours credentialName on a
		// sidecar only from a rule with a workloadSelector, else the
		// cluster gets no TLS at all.
		if t.GetCredentialName() != "" && !drSelects && b.proxyType == xds.SidecarProxy {
			return
		}
		c.TransportSocket = tlsSocket(userTLS(t, svc, b.http2()))
	}
}

// autoMTLS decides, as Istio does, whether a cluster whose policy sets no
// TLS speaks mesh mTLS to endpoints that have a sidecar: not when turned
// off, not toward services outside the mesh, not when the destination's
// mesh- or namespace-wide PeerAuthentication is DISABLE, and for original
// destination (headless or PASSTHROUGH) only when every endpoint has a
// sidecar. Workload-level DISABLE is the endpoints' business: their
// tlsMode metadata (EDS) then does not match.
func (g *Generator) autoMTLS(ix *index.Index, svc *model.Service, port *model.Port, tp *networking.TrafficPolicy) bool {
	if g.o.DisableAutoMTLS || svc.MeshExternal {
		return false
	}
	if svc.Resolution == model.Passthrough || tp.GetLoadBalancer().GetSimple() == networking.LoadBalancerSettings_PASSTHROUGH {
		list := ix.Registry().Instances(svc, port.Port)
		if len(list) == 0 {
			return false
		}
		for _, in := range list {
			if in.TLSMode != "istio" {
				return false
			}
		}
	}
	return ix.NamespaceMTLSMode(svc.Namespace) != index.MTLSDisable
}

// istioMutual is the client side of mesh mTLS: the proxy's own
// certificate and the mesh roots from the local agent, and the server's
// identity checked against the service's SPIFFE IDs.
func istioMutual(sni string, sans []string, h2 bool) *tlsv3.UpstreamTlsContext {
	alpn := istioALPN
	if h2 {
		alpn = istioALPNH2
	}
	return &tlsv3.UpstreamTlsContext{
		Sni: sni,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams: &tlsv3.TlsParameters{
				TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2,
				TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
			},
			AlpnProtocols:                  alpn,
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sds.Identity(sds.Default)},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchSubjectAltNames: exact(sans)},
					ValidationContextSdsSecretConfig: sds.Identity(sds.RootCA),
				},
			},
		},
	}
}

func exact(names []string) []*matcherv3.StringMatcher {
	var out []*matcherv3.StringMatcher
	for _, s := range names {
		out = append(out, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}})
	}
	return out
}

// userTLS is origination of TLS the user configured (SIMPLE or MUTUAL):
// certificates from files, or from SDS over ADS when credentialName names
// a Secret ("kubernetes://NAME", its CA under "kubernetes://NAME-cacert").
// SNI is the rule's, else the service host when it is not a wildcard;
// SANs the rule's, else for a ServiceEntry its subjectAltNames.
func userTLS(t *networking.ClientTLSSettings, svc *model.Service, h2 bool) *tlsv3.UpstreamTlsContext {
	ctx := &tlsv3.UpstreamTlsContext{Sni: t.GetSni(), CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsParams: &tlsv3.TlsParameters{
			TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2,
			TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
		},
	}}
	if ctx.Sni == "" && !strings.HasPrefix(svc.Hostname, "*") {
		ctx.Sni = svc.Hostname
	}
	ctc := ctx.CommonTlsContext
	if h2 {
		ctc.AlpnProtocols = []string{"h2"}
	}
	names := t.GetSubjectAltNames()
	if len(names) == 0 && svc.Source != nil && svc.Source.Kind == config.ServiceEntry {
		names = svc.SubjectAltNames
	}
	sans := exact(names)
	verify := !t.GetInsecureSkipVerify().GetValue()
	if name := t.GetCredentialName(); name != "" {
		ctc.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{sds.Credential(name)}
		if verify {
			ctc.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchSubjectAltNames: sans},
					ValidationContextSdsSecretConfig: sds.Credential(name + sds.CASuffix),
				},
			}
		}
		return ctx
	}
	if t.GetMode() == networking.ClientTLSSettings_MUTUAL {
		ctc.TlsCertificates = []*tlsv3.TlsCertificate{{
			CertificateChain: file(t.GetClientCertificate()),
			PrivateKey:       file(t.GetPrivateKey()),
		}}
	}
	if verify && (t.GetCaCertificates() != "" || len(sans) > 0) {
		vc := &tlsv3.CertificateValidationContext{MatchSubjectAltNames: sans}
		if t.GetCaCertificates() != "" {
			vc.TrustedCa = file(t.GetCaCertificates())
		}
		ctc.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}
	}
	return ctx
}

func file(name string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: name}}
}

func tlsSocket(ctx *tlsv3.UpstreamTlsContext) *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
}

func rawSocket() *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.raw_buffer", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&rawbufferv3.RawBuffer{})}}
}

func mustAny(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}) // equal config → equal bytes (delta versions, sharing)
	if err != nil {
		// Marshalling a well-formed generated message cannot fail.
		panic(fmt.Sprintf("cds: marshal %T: %v", m, err))
	}
	return a
}

// grpcCluster adapts a cluster for a proxyless gRPC client, which accepts
// only EDS and LOGICAL_DNS clusters balanced round robin, by ring hash or
// by least request, and TLS only from certificate providers configured in
// its bootstrap, as Istio's grpcgen emits it. A cluster gRPC cannot use
// as intended (another discovery type, TLS from files or secrets) is left
// out rather than silently downgraded; auto mTLS does not apply.
func grpcCluster(c *clusterv3.Cluster, svc *model.Service, t *networking.ClientTLSSettings) *clusterv3.Cluster {
	switch c.GetType() {
	case clusterv3.Cluster_EDS, clusterv3.Cluster_LOGICAL_DNS:
	default:
		return nil
	}
	switch c.GetLbPolicy() {
	case clusterv3.Cluster_RANDOM:
		c.LbPolicy, c.LbConfig = clusterv3.Cluster_ROUND_ROBIN, nil
	case clusterv3.Cluster_MAGLEV:
		c.LbPolicy, c.LbConfig = clusterv3.Cluster_RING_HASH, nil
	}
	c.TransportSocketMatches = nil
	c.TransportSocket = nil
	c.Filters = nil // the exchange is the sidecars' business
	switch t.GetMode() {
	case networking.ClientTLSSettings_ISTIO_MUTUAL:
		sans := t.GetSubjectAltNames()
		if len(sans) == 0 {
			sans = svc.Identities()
		}
		c.TransportSocket = tlsSocket(grpcMutual(sans))
	case networking.ClientTLSSettings_SIMPLE, networking.ClientTLSSettings_MUTUAL:
		return nil
	}
	return c
}

// grpcMutual is mesh mTLS for a proxyless gRPC client: certificate and
// roots from the bootstrap's "default" certificate provider instance.
func grpcMutual(sans []string) *tlsv3.UpstreamTlsContext {
	var matchers []*matcherv3.StringMatcher
	for _, s := range sans {
		matchers = append(matchers, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}})
	}
	return &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: "default", CertificateName: SecretDefault},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext: &tlsv3.CertificateValidationContext{
					MatchSubjectAltNames:          matchers,
					CaCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: "default", CertificateName: SecretRootCA},
				},
			},
		},
	}}
}
