package proxy

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/skiff-mesh/skiff/dataplane/xdstypes"
	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
	"github.com/skiff-mesh/skiff/internal/testing/xdsserver"
)

// A gateway's credentialName secret (kubernetes://NAME) comes over ADS:
// the listener waits for it, serves it, and picks up a replacement at the
// next handshake.
func TestGatewaySecretOverADS(t *testing.T) {
	backend, _ := echoBackend(t, "backend", nil)
	listen := freeAddr(t)
	ca := newCA(t, "gateway-ca")
	const name = "kubernetes://bookinfo-credential"
	ts := &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: xdsres.Any(&tlsv3.DownstreamTlsContext{
			CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: name,
				SdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
					ResourceApiVersion: corev3.ApiVersion_V3}}}}})}}
	secret := func() *tlsv3.Secret {
		certPEM, keyPEM := ca.leaf(t, "bookinfo.example.com")
		return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: xdsres.Inline(certPEM), PrivateKey: xdsres.Inline(keyPEM)}}}
	}
	resources := func(s *tlsv3.Secret) []types.Resource {
		l := xdsres.Listener("https", listen, xdsres.HCM("https", "routes"))
		l.FilterChains[0].TransportSocket = ts
		res := []types.Resource{l, xdsres.EDSCluster("backend"), xdsres.Endpoints("backend", backend),
			xdsres.RouteConfig("routes", xdsres.PrefixRoute("/", "backend"))}
		if s != nil {
			res = append(res, s)
		}
		return res
	}
	xds := xdsserver.Start(t)
	xds.Set(t, resources(nil)...)
	p := launchProxy(t, xds.Bootstrap(false), &syncBuffer{}, IdentityOptions{})
	eventually(t, "the proxy to ask for the secret over ADS", func() (bool, string) {
		return xds.Requested(xdstypes.Secret), "no SDS request"
	})
	// Without its secret the listener warms: nothing is bound yet.
	if c, err := tls.Dial("tcp", listen, &tls.Config{InsecureSkipVerify: true}); err == nil {
		c.Close()
		t.Fatal("the listener serves before its secret arrived")
	}
	serial := func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := tlsDial(ctx, listen, &tls.Config{RootCAs: ca.pool(), ServerName: "bookinfo.example.com"})
		if err != nil {
			return "", err
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
	}
	select {
	case <-p.Ready():
		t.Fatal("ready while a listener waits for its secret")
	default:
	}
	xds.Set(t, resources(secret())...)
	var first string
	eventually(t, "the listener to serve the ADS secret", func() (bool, string) {
		s, err := serial()
		first = s
		return err == nil, ""
	})
	select {
	case <-p.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("not ready once the secret arrived")
	}
	xds.Set(t, resources(secret())...)
	eventually(t, "a new handshake to get the replaced secret", func() (bool, string) {
		s, err := serial()
		return err == nil && s != first, s
	})
}

// Static SDS references to sds-grpc are never asked of the xDS server.
func TestSDSGRPCNeverOverADS(t *testing.T) {
	xds := xdsserver.Start(t)
	ts := &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: xdsres.Any(&tlsv3.DownstreamTlsContext{
			CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "default",
				SdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
					ApiType: corev3.ApiConfigSource_GRPC, TransportApiVersion: corev3.ApiVersion_V3,
					GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "sds-grpc"}}}}}},
					ResourceApiVersion: corev3.ApiVersion_V3}}}}})}}
	l := xdsres.Listener("mtls", freeAddr(t), xdsres.TCPProxy("mtls", "backend"))
	l.FilterChains = []*listenerv3.FilterChain{{Filters: l.FilterChains[0].Filters, TransportSocket: ts}}
	xds.Set(t, l, xdsres.EDSCluster("backend"), xdsres.Endpoints("backend", "127.0.0.1:9"))
	startProxy(t, xds.Bootstrap(false))
	time.Sleep(200 * time.Millisecond)
	if xds.Requested(xdstypes.Secret) {
		t.Fatal("the proxy asked the xDS server for an sds-grpc secret")
	}
}
