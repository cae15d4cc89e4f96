package xds_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcxds "google.golang.org/grpc/xds"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiff-mesh/skiff/controlplane/xds"
)

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

const (
	plTarget  = "reviews.default.svc.cluster.local:9080"
	plCluster = "outbound|9080||reviews.default.svc.cluster.local"
)

// proxylessResources makes gen serve what grpc-go's xds:/// resolver needs
// for plTarget: an API listener whose HCM takes its routes over ADS, the
// route to an EDS cluster, and that cluster's one endpoint, backend.
func proxylessResources(t testing.TB, gen *fakeGen, backend string) {
	t.Helper()
	host, portStr, _ := net.SplitHostPort(backend)
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		t.Fatal(err)
	}
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	hcm := &hcmv3.HttpConnectionManager{
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: ads, RouteConfigName: plTarget}},
		HttpFilters:    []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}}},
	}
	gen.set(xds.ListenerType, xds.Resource{Name: plTarget, Message: &listenerv3.Listener{
		Name: plTarget, ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(t, hcm)}}})
	gen.set(xds.RouteType, xds.Resource{Name: plTarget, Message: &routev3.RouteConfiguration{
		Name: plTarget,
		VirtualHosts: []*routev3.VirtualHost{{Name: plTarget, Domains: []string{plTarget}, Routes: []*routev3.Route{{
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: plCluster}}},
		}}}},
	}})
	gen.set(xds.ClusterType, xds.Resource{Name: plCluster, Message: &clusterv3.Cluster{
		Name: plCluster, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads},
		LbPolicy:         clusterv3.Cluster_ROUND_ROBIN,
	}})
	gen.set(xds.EndpointType, xds.Resource{Name: plCluster, Message: &endpointv3.ClusterLoadAssignment{
		ClusterName: plCluster,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{
			Locality:            &corev3.Locality{Region: "local"},
			LoadBalancingWeight: wrapperspb.UInt32(1),
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}}}}}},
		}},
	}})
}

// healthBackend is a gRPC server on 127.0.0.1 answering health checks
// with status.
func healthBackend(t *testing.T, status healthpb.HealthCheckResponse_ServingStatus) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	h := health.NewServer()
	h.SetServingStatus("", status)
	healthpb.RegisterHealthServer(g, h)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

// A proxyless grpc-go client (the xds:/// resolver, with the node a
// proxyless Istio bootstrap gives it) resolves its target through skiffd
// over LDS → RDS → CDS → EDS, makes real RPCs, ACKs every type, and
// follows an endpoint push to a new backend.
func TestProxylessGRPCClient(t *testing.T) {
	gen := newFakeGen()
	first := healthBackend(t, healthpb.HealthCheckResponse_SERVING)
	second := healthBackend(t, healthpb.HealthCheckResponse_NOT_SERVING)
	proxylessResources(t, gen, first)
	s := startServer(t, xds.Options{Generator: gen, DebounceAfter: 10 * time.Millisecond})

	bootstrap := fmt.Sprintf(`{
		"xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
		"node": {"id": "sidecar~127.0.0.1~reviews-client-5d4.default~default.svc.cluster.local",
		         "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default", "INSTANCE_IPS": "127.0.0.1"}}
	}`, s.addr)
	resolver, err := grpcxds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///"+plTarget, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(resolver))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("RPC through xds:///%s: %v", plTarget, err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first backend answered %v", resp.GetStatus())
	}
	eventually(t, "all four types ACKed by the gRPC client", func() bool {
		for _, typ := range []string{xds.ListenerType, xds.RouteType, xds.ClusterType, xds.EndpointType} {
			ts, ok := typeStatus(s.Server, "reviews-client-5d4.default", typ)
			if !ok || ts.VersionAcked == "" || ts.VersionAcked != ts.VersionSent || ts.LastNACK != "" {
				return false
			}
		}
		return true
	})
	for _, ps := range s.Status() {
		if ps.ProxyID == "reviews-client-5d4.default" && ps.Namespace != "default" {
			t.Errorf("proxyless client namespace %q", ps.Namespace)
		}
	}

	// Move the endpoints: the client follows the EDS push.
	proxylessResources(t, gen, second)
	s.Push(&xds.PushRequest{Types: map[string]bool{xds.EndpointType: true}, Reason: "endpoint"})
	for i := 0; ; i++ {
		resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			break
		}
		if i == 500 {
			t.Fatalf("RPCs still not reaching the second backend after the endpoint push: %v %v", resp, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
