package lds

import (
	"bytes"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiff-mesh/skiff/controlplane/gen/index/indextest"
	"github.com/skiff-mesh/skiff/controlplane/gen/rds"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

func listenerByName(t *testing.T, ls []*listenerv3.Listener, name string) *listenerv3.Listener {
	t.Helper()
	for _, l := range ls {
		if l.GetName() == name {
			return l
		}
	}
	var names []string
	for _, l := range ls {
		names = append(names, l.GetName())
	}
	t.Fatalf("no listener %q; have %q", name, names)
	return nil
}

// chainTargets describes each filter chain as "match -> target" where the
// target is the HCM's route name or the tcp_proxy's cluster(s).
func chainTargets(t *testing.T, l *listenerv3.Listener) []string {
	t.Helper()
	var out []string
	for _, fc := range l.GetFilterChains() {
		m := fc.GetFilterChainMatch()
		desc := ""
		if p := m.GetDestinationPort(); p != nil {
			desc += "port=" + strconv.Itoa(int(p.GetValue())) + " "
		}
		for _, r := range m.GetPrefixRanges() {
			desc += "ip=" + r.GetAddressPrefix() + " "
		}
		if len(m.GetServerNames()) > 0 {
			desc += "sni=" + strings.Join(m.GetServerNames(), ",") + " "
		}
		if len(m.GetApplicationProtocols()) > 0 {
			desc += "alpn=" + strings.Join(m.GetApplicationProtocols(), ",") + " "
		}
		if fc.GetTransportSocket() != nil {
			desc += "tls "
		}
		tc := fc.GetFilters()[len(fc.GetFilters())-1].GetTypedConfig()
		msg, err := tc.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		switch v := msg.(type) {
		case *hcmv3.HttpConnectionManager:
			if v.GetRds() != nil {
				desc += "-> rds:" + v.GetRds().GetRouteConfigName()
			} else {
				desc += "-> inline:" + v.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetCluster()
			}
		case *tcpv3.TcpProxy:
			if c := v.GetCluster(); c != "" {
				desc += "-> tcp:" + c
			} else {
				for _, w := range v.GetWeightedClusters().GetClusters() {
					desc += "-> tcp:" + w.GetName() + "@" + strconv.Itoa(int(w.GetWeight()))
				}
			}
		}
		out = append(out, desc)
	}
	return out
}

func wantChains(t *testing.T, l *listenerv3.Listener, want []string) {
	t.Helper()
	if got := chainTargets(t, l); !slices.Equal(got, want) {
		t.Errorf("listener %q chains:\n got %q\nwant %q", l.GetName(), got, want)
	}
}

// TestGatewayTLS covers a gateway's servers: HTTP with httpsRedirect,
// HTTPS from files and from SDS (MUTUAL), and TLS passthrough by SNI.
func TestGatewayTLS(t *testing.T) {
	ix := bookinfoIndex(t, indextest.Testdata(t, "gateway-tls.yaml"))
	ls := listenersOf(t, ingress, ix)
	goldenListeners(t, "gateway-tls.ingress", ls)

	wantChains(t, listenerByName(t, ls, "0.0.0.0_8080"), []string{"-> rds:http.8080"})
	l8443 := listenerByName(t, ls, "0.0.0.0_8443")
	wantChains(t, l8443, []string{
		"sni=bookinfo.example.com tls -> rds:https.8443.https-files.edge.istio-system",
		"sni=api.example.com tls -> rds:https.8443.https-mtls.edge.istio-system",
		"sni=internal.example.com tls -> rds:https.8443.https-internal.edge.istio-system",
	})
	var internal tlsv3.DownstreamTlsContext
	if err := l8443.GetFilterChains()[2].GetTransportSocket().GetTypedConfig().UnmarshalTo(&internal); err != nil {
		t.Fatal(err)
	}
	if s := internal.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs(); len(s) != 1 || s[0].GetName() != "default" ||
		s[0].GetSdsConfig().GetApiConfigSource().GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != "sds-grpc" ||
		internal.GetCommonTlsContext().GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName() != "ROOTCA" ||
		!internal.GetRequireClientCertificate().GetValue() {
		t.Errorf("ISTIO_MUTUAL: %v", &internal)
	}
	var files, mtls tlsv3.DownstreamTlsContext
	if err := l8443.GetFilterChains()[0].GetTransportSocket().GetTypedConfig().UnmarshalTo(&files); err != nil {
		t.Fatal(err)
	}
	if c := files.GetCommonTlsContext().GetTlsCertificates(); len(c) != 1 || c[0].GetCertificateChain().GetFilename() != "/work/shared/istio-samples/certs/ca-cert.pem" {
		t.Errorf("file certificate = %v", c)
	}
	if v := files.GetCommonTlsContext().GetTlsParams().GetTlsMinimumProtocolVersion(); v != tlsv3.TlsParameters_TLSv1_2 {
		t.Errorf("min TLS version = %v", v)
	}
	if err := l8443.GetFilterChains()[1].GetTransportSocket().GetTypedConfig().UnmarshalTo(&mtls); err != nil {
		t.Fatal(err)
	}
	if s := mtls.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs(); len(s) != 1 || s[0].GetName() != "kubernetes://api-cred" || s[0].GetSdsConfig().GetAds() == nil {
		t.Errorf("SDS certificate = %v", s)
	}
	if v := mtls.GetCommonTlsContext().GetCombinedValidationContext().GetValidationContextSdsSecretConfig(); v.GetName() != "kubernetes://api-cred-cacert" || !mtls.GetRequireClientCertificate().GetValue() {
		t.Errorf("MUTUAL: validation %v require %v", v, mtls.GetRequireClientCertificate())
	}
	// Only the SNI inside the server's hosts (*.passthrough.example.com) is routed.
	wantChains(t, listenerByName(t, ls, "0.0.0.0_9443"), []string{
		"sni=reviews.passthrough.example.com -> tcp:outbound|9080||reviews.default.svc.cluster.local",
	})

	rcs := indextest.Unpack[*routev3.RouteConfiguration](t, rds.Generate(ingress, ix, nil))
	var names []string
	for _, rc := range rcs {
		for _, vh := range rc.GetVirtualHosts() {
			names = append(names, rc.GetName()+" "+vh.GetName()+" "+vh.GetRequireTls().String())
		}
	}
	want := []string{
		"http.8080 bookinfo.example.com:8080 ALL",
		"https.8443.https-files.edge.istio-system bookinfo.example.com:8443 NONE",
		"https.8443.https-internal.edge.istio-system internal.example.com:8443 NONE",
		"https.8443.https-mtls.edge.istio-system api.example.com:8443 NONE",
	}
	if !slices.Equal(names, want) {
		t.Errorf("gateway virtual hosts:\n got %q\nwant %q", names, want)
	}
}

// TestTCPEcho covers TCP: the tcp-echo sample's gateway with weighted tcp
// routes, and its sidecar listeners per service address and port.
func TestTCPEcho(t *testing.T) {
	objs := indextest.Mesh(append(indextest.Sample(t, "tcp-echo/tcp-echo-services.yaml"),
		append(indextest.Sample(t, "tcp-echo/tcp-echo-all-v1.yaml"), indextest.Sample(t, "bookinfo/platform/kube/bookinfo.yaml")...)...))
	ix := indextest.Build(objs)
	ls := listenersOf(t, ingress, ix)
	goldenListeners(t, "tcp-echo-all-v1.ingress", ls)
	wantChains(t, listenerByName(t, ls, "0.0.0.0_31400"), []string{"-> tcp:outbound|9000|v1|tcp-echo.default.svc.cluster.local"})

	pp := indextest.SidecarFor(t, ix, "default", "productpage-v1-0")
	side := listenersOf(t, pp, ix)
	goldenListeners(t, "tcp-echo-all-v1.productpage", side)
	wantChains(t, listenerByName(t, side, "198.19.0.1_9000"), []string{"-> tcp:outbound|9000||tcp-echo.default.svc.cluster.local"})
	wantChains(t, listenerByName(t, side, "198.19.0.1_9001"), []string{"-> tcp:outbound|9001||tcp-echo.default.svc.cluster.local"})

	weighted := indextest.Build(indextest.Mesh(append(objs[:0:0], append(indextest.Sample(t, "tcp-echo/tcp-echo-services.yaml"),
		append(indextest.Sample(t, "tcp-echo/tcp-echo-all-v1.yaml")[:2], indextest.Sample(t, "tcp-echo/tcp-echo-20-v2.yaml")...)...)...)))
	wantChains(t, listenerByName(t, listenersOf(t, ingress, weighted), "0.0.0.0_31400"), []string{
		"-> tcp:outbound|9000|v1|tcp-echo.default.svc.cluster.local@80-> tcp:outbound|9000|v2|tcp-echo.default.svc.cluster.local@20",
	})
}

// TestSidecarShapes covers the sidecar listeners: inbound chains per
// workload port, sniffing for undeclared protocols, REGISTRY_ONLY, and a
// Sidecar's egress hosts trimming what is generated.
func TestSidecarShapes(t *testing.T) {
	extra := indextest.Decode(t, "sidecar.yaml", []byte(`
apiVersion: v1
kind: Service
metadata: {name: legacy, namespace: default}
spec:
  selector: {app: legacy}
  ports:
  - {name: custom, port: 7000}
  - {name: mysql, port: 3306}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews-only, namespace: default}
spec:
  workloadSelector:
    labels: {app: ratings}
  egress:
  - hosts: ["./reviews.default.svc.cluster.local", "./legacy.default.svc.cluster.local"]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
`))
	ix := bookinfoIndex(t, extra)
	pp := indextest.SidecarFor(t, ix, "default", "productpage-v1-0")
	ls := listenersOf(t, pp, ix)
	goldenListeners(t, "sidecar.productpage", ls)
	wantChains(t, listenerByName(t, ls, "0.0.0.0_7000"), []string{
		"ip=198.19.0.5 alpn=http/1.1,h2c -> rds:7000",
		"ip=198.19.0.5 -> tcp:outbound|7000||legacy.default.svc.cluster.local",
		"alpn=http/1.1,h2c -> rds:7000",
		"-> tcp:PassthroughCluster",
	})
	wantChains(t, listenerByName(t, ls, "198.19.0.5_3306"), []string{"-> tcp:outbound|3306||legacy.default.svc.cluster.local"})
	wantChains(t, listenerByName(t, ls, "virtualInbound"), []string{
		"port=15006 -> tcp:BlackHoleCluster",
		// PERMISSIVE (no PeerAuthentication): Istio's five passthrough
		// chains (mTLS HTTP, plaintext HTTP, mTLS TCP, plaintext TCP,
		// the application's own TLS), then mTLS and plaintext per port.
		"alpn=istio-http/1.0,istio-http/1.1,istio-h2 tls -> inline:InboundPassthroughCluster",
		"alpn=http/1.1,h2c -> inline:InboundPassthroughCluster",
		"alpn=istio-peer-exchange,istio tls -> tcp:InboundPassthroughCluster",
		"-> tcp:InboundPassthroughCluster",
		"-> tcp:InboundPassthroughCluster",
		"port=9080 alpn=istio,istio-peer-exchange,istio-http/1.0,istio-http/1.1,istio-h2 tls -> inline:inbound|9080||",
		"port=9080 -> inline:inbound|9080||",
	})

	rt := indextest.SidecarFor(t, ix, "default", "ratings-v1-0")
	rls := listenersOf(t, rt, ix)
	goldenListeners(t, "sidecar.ratings-v1", rls)
	var names []string
	for _, l := range rls {
		names = append(names, l.GetName())
	}
	if want := []string{"0.0.0.0_7000", "0.0.0.0_9080", "198.19.0.5_3306", "virtualInbound", "virtualOutbound"}; !slices.Equal(names, want) {
		t.Errorf("ratings listeners = %q, want %q", names, want)
	}
	wantChains(t, listenerByName(t, rls, "virtualOutbound"), []string{"port=15001 -> tcp:BlackHoleCluster", "-> tcp:BlackHoleCluster"})
	rcs := indextest.Unpack[*routev3.RouteConfiguration](t, rds.Generate(rt, ix, []string{"9080"}))
	var vhs []string
	for _, vh := range rcs[0].GetVirtualHosts() {
		vhs = append(vhs, vh.GetName())
	}
	if want := []string{"reviews.default.svc.cluster.local:9080", "block_all"}; !slices.Equal(vhs, want) {
		t.Errorf("ratings 9080 virtual hosts = %q, want %q", vhs, want)
	}
}

// TestSidecarIngressEgressPorts covers a Sidecar's ingress listeners
// (they replace the inbound ports learned from services) and an egress
// listener with an explicit port and bind address (a bound listener on
// that address, with only that listener's hosts).
func TestSidecarIngressEgressPorts(t *testing.T) {
	extra := indextest.Decode(t, "sidecar-ports.yaml", []byte(`
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: productpage, namespace: default}
spec:
  workloadSelector:
    labels: {app: productpage}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
  - port: {number: 9090, protocol: TCP, name: tcp-admin}
    defaultEndpoint: 127.0.0.1:9090
  egress:
  - port: {number: 9080, protocol: HTTP, name: http}
    bind: 127.0.0.1
    hosts: ["./reviews.default.svc.cluster.local"]
  - hosts: ["./*"]
`))
	ix := bookinfoIndex(t, extra)
	pp := indextest.SidecarFor(t, ix, "default", "productpage-v1-0")
	ls := listenersOf(t, pp, ix)
	goldenListeners(t, "sidecar-ports.productpage", ls)
	wantChains(t, listenerByName(t, ls, "virtualInbound"), []string{
		"port=15006 -> tcp:BlackHoleCluster",
		// PERMISSIVE (no PeerAuthentication): Istio's five passthrough
		// chains (mTLS HTTP, plaintext HTTP, mTLS TCP, plaintext TCP,
		// the application's own TLS), then mTLS and plaintext per port.
		"alpn=istio-http/1.0,istio-http/1.1,istio-h2 tls -> inline:InboundPassthroughCluster",
		"alpn=http/1.1,h2c -> inline:InboundPassthroughCluster",
		"alpn=istio-peer-exchange,istio tls -> tcp:InboundPassthroughCluster",
		"-> tcp:InboundPassthroughCluster",
		"-> tcp:InboundPassthroughCluster",
		"port=9080 alpn=istio,istio-peer-exchange,istio-http/1.0,istio-http/1.1,istio-h2 tls -> inline:inbound|9080||",
		"port=9080 -> inline:inbound|9080||",
		"port=9090 alpn=istio,istio-peer-exchange,istio-http/1.0,istio-http/1.1,istio-h2 tls -> tcp:inbound|9090||",
		"port=9090 -> tcp:inbound|9090||",
		"port=9090 -> tcp:inbound|9090||",
	})
	bound := listenerByName(t, ls, "127.0.0.1_9080")
	if !bound.GetBindToPort().GetValue() || bound.GetAddress().GetSocketAddress().GetAddress() != "127.0.0.1" {
		t.Errorf("egress listener with bind: bind_to_port %v address %v", bound.GetBindToPort(), bound.GetAddress())
	}
	rcs := indextest.Unpack[*routev3.RouteConfiguration](t, rds.Generate(pp, ix, []string{"9080"}))
	var vhs []string
	for _, vh := range rcs[0].GetVirtualHosts() {
		vhs = append(vhs, vh.GetName())
	}
	if want := []string{"reviews.default.svc.cluster.local:9080", "allow_any"}; !slices.Equal(vhs, want) {
		t.Errorf("9080 virtual hosts = %q, want %q (port 9080 belongs to the explicit egress listener)", vhs, want)
	}
}

// TestConcurrentGenerate runs LDS and RDS for every Bookinfo proxy from
// several goroutines on one fresh index (as the ADS server does) and
// checks every goroutine got the same resources; run with -race.
func TestConcurrentGenerate(t *testing.T) {
	ix := bookinfoIndex(t, indextest.Sample(t, "bookinfo/networking/virtual-service-reviews-80-20.yaml"))
	var proxies []*xds.Proxy
	for _, w := range ix.Registry().Workloads() {
		proxies = append(proxies, indextest.SidecarFor(t, ix, w.Namespace, w.Name))
	}
	proxies = append(proxies, ingress)
	const workers = 8
	results := make([][]xds.Resource, workers)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, p := range proxies {
				results[i] = append(results[i], Generate(p, ix)...)
				results[i] = append(results[i], rds.Generate(p, ix, nil)...)
			}
		}()
	}
	wg.Wait()
	for i := 1; i < workers; i++ {
		if len(results[i]) != len(results[0]) {
			t.Fatalf("worker %d got %d resources, worker 0 %d", i, len(results[i]), len(results[0]))
		}
		for j := range results[i] {
			if results[i][j].Name != results[0][j].Name || !proto.Equal(results[i][j].Message, results[0][j].Message) {
				t.Errorf("worker %d resource %d (%s) differs from worker 0's", i, j, results[i][j].Name)
			}
		}
	}
}

// TestDeterministic checks two indexes of the same config encode every
// listener and route configuration to the same bytes, so versions can be
// derived from content.
func TestDeterministic(t *testing.T) {
	extra := indextest.Sample(t, "bookinfo/networking/virtual-service-reviews-jason-v2-v3.yaml")
	a, b := bookinfoIndex(t, extra), bookinfoIndex(t, extra)
	for _, who := range []string{"productpage-v1-0", "reviews-v2-0"} {
		pa, pb := indextest.SidecarFor(t, a, "default", who), indextest.SidecarFor(t, b, "default", who)
		ra := append(Generate(pa, a), rds.Generate(pa, a, nil)...)
		rb := append(Generate(pb, b), rds.Generate(pb, b, nil)...)
		for i := range ra {
			if !bytes.Equal(ra[i].Message.(*anypb.Any).GetValue(), rb[i].Message.(*anypb.Any).GetValue()) {
				t.Errorf("%s: %s encodes differently across indexes", who, ra[i].Name)
			}
		}
	}
}

// TestSidecarTLSBySNI covers tls routes on a TLS service's address: SNI
// chains from the VirtualService, then the service's own cluster.
func TestSidecarTLSBySNI(t *testing.T) {
	ix := bookinfoIndex(t, indextest.Decode(t, "tls.yaml", []byte(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partners, namespace: default}
spec:
  hosts: [api.partner.example]
  addresses: [198.19.9.9]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partners-eu, namespace: default}
spec:
  hosts: [eu.partner.example]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: partners, namespace: default}
spec:
  hosts: [api.partner.example]
  tls:
  - match:
    - sniHosts: [api.partner.example]
    route:
    - destination: {host: eu.partner.example}
`)))
	pp := indextest.SidecarFor(t, ix, "default", "productpage-v1-0")
	ls := listenersOf(t, pp, ix)
	wantChains(t, listenerByName(t, ls, "198.19.9.9_443"), []string{
		"sni=api.partner.example -> tcp:outbound|443||eu.partner.example",
		"-> tcp:outbound|443||api.partner.example",
	})
	wantChains(t, listenerByName(t, ls, "0.0.0.0_443"), []string{
		"sni=eu.partner.example -> tcp:outbound|443||eu.partner.example",
		"-> tcp:PassthroughCluster",
	})
}
