package lds

import (
	"strconv"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/gen/index/indextest"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// The passthrough chains every virtualInbound starts with, by mode.
var (
	passthroughPermissive = []string{
		"port=15006 -> tcp:BlackHoleCluster",
		"alpn=istio-http/1.0,istio-http/1.1,istio-h2 tls -> inline:InboundPassthroughCluster",
		"alpn=http/1.1,h2c -> inline:InboundPassthroughCluster",
		"alpn=istio-peer-exchange,istio tls -> tcp:InboundPassthroughCluster",
		"-> tcp:InboundPassthroughCluster",
		"-> tcp:InboundPassthroughCluster",
	}
	passthroughStrict = []string{
		"port=15006 -> tcp:BlackHoleCluster",
		"alpn=istio-http/1.0,istio-http/1.1,istio-h2 tls -> inline:InboundPassthroughCluster",
		"tls -> tcp:InboundPassthroughCluster",
	}
	passthroughDisable = []string{
		"port=15006 -> tcp:BlackHoleCluster",
		"alpn=http/1.1,h2c -> inline:InboundPassthroughCluster",
		"-> tcp:InboundPassthroughCluster",
	}
)

func cat(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// TestPeerAuthenticationInbound pins productpage's virtualInbound under
// each PeerAuthentication mode and scope: which chains exist (so which
// connections find one), their TLS, and Istio's names.
func TestPeerAuthenticationInbound(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
		transport  map[int]string // chain index → transport_protocol checked
	}{
		{"permissive", ``, cat(passthroughPermissive,
			[]string{"port=9080 alpn=istio,istio-peer-exchange,istio-http/1.0,istio-http/1.1,istio-h2 tls -> inline:inbound|9080||", "port=9080 -> inline:inbound|9080||"}),
			map[int]string{6: "tls", 7: "raw_buffer"}},
		{"strict-namespace", `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}`, cat(passthroughStrict, []string{"port=9080 tls -> inline:inbound|9080||"}), map[int]string{3: "tls"}},
		{"disable-mesh", `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: DISABLE}}`, cat(passthroughDisable, []string{"port=9080 -> inline:inbound|9080||"}), map[int]string{3: "raw_buffer"}},
		// Mesh STRICT, namespace DISABLE, the workload UNSET: the
		// namespace's DISABLE is inherited.
		{"precedence", `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: productpage, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}`, cat(passthroughDisable, []string{"port=9080 -> inline:inbound|9080||"}), nil},
		// STRICT for the workload, its port 9080 PERMISSIVE, and a port no
		// service declares (9999) DISABLE: that one gets passthrough
		// chains of its own.
		{"port-level", `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: productpage, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  mtls: {mode: STRICT}
  portLevelMtls:
    9080: {mode: PERMISSIVE}
    9999: {mode: DISABLE}`, cat(passthroughStrict, []string{
			"port=9999 alpn=http/1.1,h2c -> inline:InboundPassthroughCluster",
			"port=9999 -> tcp:InboundPassthroughCluster",
			"port=9080 alpn=istio,istio-peer-exchange,istio-http/1.0,istio-http/1.1,istio-h2 tls -> inline:inbound|9080||",
			"port=9080 -> inline:inbound|9080||",
		}), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ix := bookinfoIndex(t, indextest.Decode(t, tc.name+".yaml", []byte(tc.yaml)))
			pp := indextest.SidecarFor(t, ix, "default", "productpage-v1-0")
			ls := listenersOf(t, pp, ix)
			in := listenerByName(t, ls, "virtualInbound")
			goldenListeners(t, "peerauthn/"+tc.name+".productpage", []*listenerv3.Listener{in})
			wantChains(t, in, tc.want)
			for i, tp := range tc.transport {
				if got := in.GetFilterChains()[i].GetFilterChainMatch().GetTransportProtocol(); got != tp {
					t.Errorf("chain %d transport_protocol %q, want %q", i, got, tp)
				}
			}
			for _, fc := range in.GetFilterChains() {
				if fc.GetTransportSocket() == nil {
					continue
				}
				var ctx tlsv3.DownstreamTlsContext
				if err := fc.GetTransportSocket().GetTypedConfig().UnmarshalTo(&ctx); err != nil {
					t.Fatal(err)
				}
				c := ctx.GetCommonTlsContext()
				if !ctx.GetRequireClientCertificate().GetValue() || c.GetTlsCertificateSdsSecretConfigs()[0].GetName() != "default" ||
					c.GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName() != "ROOTCA" {
					t.Errorf("chain %q: mTLS context %v", fc.GetName(), &ctx)
				}
			}
		})
	}
}

// TestInboundMTLSDisabled: a mesh without a CA gets plaintext chains
// whatever PeerAuthentication says.
func TestInboundMTLSDisabled(t *testing.T) {
	ix := bookinfoIndex(t, indextest.Decode(t, "strict.yaml", []byte(`
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}`)))
	pp := indextest.SidecarFor(t, ix, "default", "productpage-v1-0")
	ls := indextest.Unpack[*listenerv3.Listener](t, New(Options{DisableInboundMTLS: true}).Generate(pp, ix))
	wantChains(t, listenerByName(t, ls, "virtualInbound"), cat(passthroughDisable, []string{"port=9080 -> inline:inbound|9080||"}))
}

// TestInboundPolicyHook: the filters an InboundPolicy returns go before
// the built-in HTTP filters and before tcp_proxy, on every chain of their
// port, and proxies whose policy differs do not share a listener.
func TestInboundPolicyHook(t *testing.T) {
	ix := bookinfoIndex(t)
	rbac := func(name string) *hcmv3.HttpFilter {
		return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&emptypb.Empty{})}}
	}
	g := New(Options{InboundPolicy: InboundPolicyFunc(func(p *xds.Proxy, _ *index.Index, port int) ([]*hcmv3.HttpFilter, []*listenerv3.Filter) {
		if p.Labels["app"] != "productpage" {
			return nil, nil
		}
		return []*hcmv3.HttpFilter{rbac("policy.port" + strconv.Itoa(port))},
			[]*listenerv3.Filter{{Name: "netpolicy.port" + strconv.Itoa(port), ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&emptypb.Empty{})}}}
	})})
	pp := indextest.SidecarFor(t, ix, "default", "productpage-v1-0")
	in := listenerByName(t, indextest.Unpack[*listenerv3.Listener](t, g.Generate(pp, ix)), "virtualInbound")
	for _, fc := range in.GetFilterChains()[1:] { // after the blackhole
		port := "0"
		if fc.GetFilterChainMatch().GetDestinationPort() != nil {
			port = strconv.Itoa(int(fc.GetFilterChainMatch().GetDestinationPort().GetValue()))
		}
		f := fc.GetFilters()
		if f[len(f)-1].GetName() == "envoy.filters.network.http_connection_manager" {
			var h hcmv3.HttpConnectionManager
			if err := f[0].GetTypedConfig().UnmarshalTo(&h); err != nil {
				t.Fatal(err)
			}
			if len(f) != 1 || h.GetHttpFilters()[0].GetName() != "policy.port"+port || h.GetHttpFilters()[len(h.GetHttpFilters())-1].GetName() != "envoy.filters.http.router" {
				t.Errorf("chain %q: HTTP filters %v", fc.GetName(), h.GetHttpFilters())
			}
			continue
		}
		if len(f) != 2 || f[0].GetName() != "netpolicy.port"+port || f[1].GetName() != "envoy.filters.network.tcp_proxy" {
			t.Errorf("chain %q: network filters %v", fc.GetName(), f)
		}
	}
	// Another workload with the same ports but no policy.
	other := *pp
	other.Labels = map[string]string{"app": "other"}
	oin := listenerByName(t, indextest.Unpack[*listenerv3.Listener](t, g.Generate(&other, ix)), "virtualInbound")
	if n := len(oin.GetFilterChains()[4].GetFilters()); n != 1 {
		t.Errorf("proxy without policy shares the listener of one with: %d filters on a TCP chain", n)
	}
}

// TestGatewayCredentials pins gateway TLS from Kubernetes Secrets (SIMPLE,
// MUTUAL with several credentials) and MUTUAL from files, as Istio names
// and shapes them.
func TestGatewayCredentials(t *testing.T) {
	ix := bookinfoIndex(t, indextest.Testdata(t, "gateway-credentials.yaml"))
	ls := listenersOf(t, ingress, ix)
	goldenListeners(t, "gateway-credentials.ingress", ls)
	l := listenerByName(t, ls, "0.0.0.0_8443")
	ctx := func(i int) *tlsv3.DownstreamTlsContext {
		var c tlsv3.DownstreamTlsContext
		if err := l.GetFilterChains()[i].GetTransportSocket().GetTypedConfig().UnmarshalTo(&c); err != nil {
			t.Fatal(err)
		}
		return &c
	}
	simple, files, multi := ctx(0), ctx(1), ctx(2)
	if s := simple.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs(); len(s) != 1 || s[0].GetName() != "kubernetes://bookinfo-cred" ||
		simple.GetCommonTlsContext().GetValidationContextType() != nil || simple.GetRequireClientCertificate().GetValue() {
		t.Errorf("SIMPLE credentialName: %v", simple)
	}
	if v := files.GetCommonTlsContext().GetValidationContext(); v.GetTrustedCa().GetFilename() != "/work/shared/istio-samples/certs/root-cert.pem" ||
		len(v.GetMatchSubjectAltNames()) != 1 || !files.GetRequireClientCertificate().GetValue() {
		t.Errorf("MUTUAL files: %v", files)
	}
	s := multi.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()
	if len(s) != 2 || s[0].GetName() != "kubernetes://rsa-cred" || s[1].GetName() != "kubernetes://ecdsa-cred" ||
		multi.GetCommonTlsContext().GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName() != "kubernetes://rsa-cred-cacert" {
		t.Errorf("MUTUAL credentialNames: %v", multi)
	}
}

// TestGatewayPolicyHook: a gateway enforces the policies that select it
// (Istio's ingress JWT and authorization tasks): the InboundPolicy's HTTP
// filters go before the router of its HTTP listeners, and a gateway whose
// policy changes does not keep a cached listener without it.
func TestGatewayPolicyHook(t *testing.T) {
	ix := bookinfoIndex(t, indextest.Sample(t, "bookinfo/networking/bookinfo-gateway.yaml"))
	var withPolicy bool
	g := New(Options{InboundPolicy: InboundPolicyFunc(func(p *xds.Proxy, _ *index.Index, port int) ([]*hcmv3.HttpFilter, []*listenerv3.Filter) {
		if !withPolicy || p.Type != xds.RouterProxy || port != 0 {
			return nil, nil
		}
		return []*hcmv3.HttpFilter{{Name: "gateway.policy", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&emptypb.Empty{})}}}, nil
	})})
	firstFilter := func() string {
		ls := indextest.Unpack[*listenerv3.Listener](t, g.Generate(ingress, ix))
		if len(ls) == 0 {
			t.Fatal("the ingress gateway got no listener")
		}
		var h hcmv3.HttpConnectionManager
		if err := ls[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&h); err != nil {
			t.Fatal(err)
		}
		return h.GetHttpFilters()[0].GetName()
	}
	if got := firstFilter(); got == "gateway.policy" {
		t.Fatalf("without a policy the gateway's first HTTP filter is %q", got)
	}
	withPolicy = true
	if got := firstFilter(); got != "gateway.policy" {
		t.Errorf("with a policy the gateway's first HTTP filter is %q, want gateway.policy", got)
	}
}
