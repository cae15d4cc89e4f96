package cds_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcxds "google.golang.org/grpc/xds"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiff-mesh/skiff/controlplane/gen/cds"
	"github.com/skiff-mesh/skiff/controlplane/gen/cds/gentest"
	"github.com/skiff-mesh/skiff/controlplane/gen/eds"
	"github.com/skiff-mesh/skiff/controlplane/xds"
	"github.com/skiff-mesh/skiff/internal/testing/xdsserver"
)

// TestProxylessGRPC serves the clusters and endpoints generated for a
// proxyless gRPC client to grpc-go's own xds:/// resolver (with a
// hand-written API listener and route in front, which are the listeners
// generator's business) and makes a real RPC through them: grpc-go
// accepts the cluster (no transport socket matches, a load balancer it
// knows) and the endpoints, and reaches the backend on 127.0.0.1.
func TestProxylessGRPC(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	backend := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(backend, hs)
	go func() { _ = backend.Serve(lis) }()
	t.Cleanup(backend.Stop)
	port := lis.Addr().(*net.TCPAddr).Port

	objs := gentest.Decode(t, "echo.yaml", fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.mesh]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: grpc, protocol: GRPC, targetPort: %d}]
  endpoints:
  - {address: 127.0.0.1, locality: local/zone}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: default}
spec:
  host: echo.mesh
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
    outlierDetection: {consecutive5xxErrors: 5}
`, port))
	ix := gentest.Index(objs)
	p := &xds.Proxy{ID: "client.default", Type: xds.SidecarProxy, Namespace: "default", IPs: []string{"127.0.0.1"}, Proxyless: true}
	clusters := cds.Generate(p, ix)
	if got := names(clusters); len(got) != 1 || got[0] != "outbound|9080||echo.mesh" {
		t.Fatalf("proxyless clusters %q, want only outbound|9080||echo.mesh", got)
	}
	c := gentest.Messages(t, clusters)[0].(*clusterv3.Cluster)
	if c.GetLbPolicy() != clusterv3.Cluster_ROUND_ROBIN || c.GetTransportSocketMatches() != nil {
		t.Errorf("proxyless cluster: lb %s, %d transport socket matches; want ROUND_ROBIN (for RANDOM) and none", c.GetLbPolicy(), len(c.GetTransportSocketMatches()))
	}

	const target = "echo.mesh:9080"
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: ads, RouteConfigName: target}},
		HttpFilters:    []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	res := []types.Resource{
		&listenerv3.Listener{Name: target, ApiListener: &listenerv3.ApiListener{ApiListener: hcm}},
		&routev3.RouteConfiguration{Name: target, VirtualHosts: []*routev3.VirtualHost{{
			Name: target, Domains: []string{target},
			Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "outbound|9080||echo.mesh"}}},
			}},
		}}},
	}
	for _, m := range gentest.Messages(t, clusters) {
		res = append(res, m)
	}
	for _, m := range gentest.Messages(t, eds.Generate(p, ix, []string{"outbound|9080||echo.mesh"})) {
		res = append(res, m)
	}
	srv := xdsserver.Start(t)
	srv.Set(t, res...)

	bootstrap := fmt.Sprintf(`{
		"xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
		"node": {"id": %q}
	}`, srv.Addr, xdsserver.NodeID)
	resolver, err := grpcxds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///"+target, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(resolver))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("RPC through xds:///%s: %v", target, err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("backend answered %v", resp.GetStatus())
	}
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestProxylessTLS checks TLS for proxyless clients: Istio mTLS comes from
// the bootstrap's certificate provider (gRPC has no SDS), and TLS gRPC
// cannot originate (files, secrets) leaves the cluster out instead of
// sending plaintext.
func TestProxylessTLS(t *testing.T) {
	ix := gentest.Index(gentest.Decode(t, "tls.yaml", `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.mesh]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: grpc, protocol: GRPC}]
  endpoints: [{address: 198.18.5.5, serviceAccount: echo}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: default}
spec:
  host: echo.mesh
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
  subsets:
  - name: simple
    trafficPolicy:
      tls: {mode: SIMPLE, caCertificates: /etc/ca.pem}
`))
	p := &xds.Proxy{ID: "client.default", Type: xds.SidecarProxy, Namespace: "default", IPs: []string{"198.18.5.6"}, Proxyless: true}
	got := clusters(t, cds.Generate(p, ix))
	if _, ok := got["outbound|9080|simple|echo.mesh"]; ok || len(got) != 1 {
		t.Fatalf("proxyless clusters %v: want only outbound|9080||echo.mesh", slices.Sorted(mapsKeys(got)))
	}
	var tc tlsv3.UpstreamTlsContext
	if err := got["outbound|9080||echo.mesh"].GetTransportSocket().GetTypedConfig().UnmarshalTo(&tc); err != nil {
		t.Fatal(err)
	}
	ctc := tc.GetCommonTlsContext()
	vc := ctc.GetCombinedValidationContext().GetDefaultValidationContext()
	if ctc.GetTlsCertificateProviderInstance().GetInstanceName() != "default" || ctc.GetTlsCertificateSdsSecretConfigs() != nil ||
		vc.GetCaCertificateProviderInstance().GetCertificateName() != "ROOTCA" ||
		len(vc.GetMatchSubjectAltNames()) != 1 || vc.GetMatchSubjectAltNames()[0].GetExact() != "spiffe://cluster.local/ns/default/sa/echo" {
		t.Errorf("proxyless ISTIO_MUTUAL context: %v", protojson.Format(&tc))
	}
}
