package lds

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	grpcxds "google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiff-mesh/skiff/controlplane/gen/index/indextest"
	"github.com/skiff-mesh/skiff/controlplane/gen/rds"
	"github.com/skiff-mesh/skiff/controlplane/xds"
	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
	"github.com/skiff-mesh/skiff/internal/testing/xdsserver"
)

const grpcMesh = `
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  selector: {app: echo}
  ports: [{name: grpc, port: 7070}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo]
  http:
  - match:
    - headers:
        x-version: {exact: v2}
    route:
    - destination: {host: echo, subset: v2}
  - route:
    - destination: {host: echo, subset: v1}
`

// healthBackend is a gRPC server whose health service answers status,
// so a test can tell backends apart by the answer.
func healthBackend(t *testing.T, status healthpb.HealthCheckResponse_ServingStatus) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	h := health.NewServer()
	h.SetServingStatus("", status)
	healthpb.RegisterHealthServer(s, h)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return ln.Addr().String()
}

// TestProxylessGRPC serves the generated API listeners and routes to a
// real grpc-go client through its xds:/// resolver, which must accept
// them and route by the VirtualService's header match.
func TestProxylessGRPC(t *testing.T) {
	ix := indextest.Build(indextest.Mesh(indextest.Decode(t, "grpc.yaml", []byte(grpcMesh))))
	client := &xds.Proxy{ID: "client.default", Type: xds.SidecarProxy, Namespace: "default", Proxyless: true, DNSDomain: "default.svc.cluster.local"}
	ls := indextest.Unpack[*listenerv3.Listener](t, Generate(client, ix))
	rcs := indextest.Unpack[*routev3.RouteConfiguration](t, rds.Generate(client, ix, nil))
	goldenListeners(t, "proxyless.echo", ls)
	const target = "echo.default.svc.cluster.local:7070"
	if len(ls) != 1 || ls[0].GetName() != target || len(rcs) != 1 || rcs[0].GetName() != target {
		t.Fatalf("want one API listener and route configuration named %s, got %d listeners, %d routes", target, len(ls), len(rcs))
	}
	res := []types.Resource{ls[0], rcs[0]}
	for _, b := range []struct {
		subset string
		status healthpb.HealthCheckResponse_ServingStatus
	}{{"v1", healthpb.HealthCheckResponse_SERVING}, {"v2", healthpb.HealthCheckResponse_NOT_SERVING}} {
		name := "outbound|7070|" + b.subset + "|echo.default.svc.cluster.local"
		cla := xdsres.Endpoints(name, healthBackend(t, b.status))
		// gRPC refuses localities without an ID and ignores those
		// without a weight; Istio always sets both.
		cla.Endpoints[0].Locality = &corev3.Locality{Region: "r1"}
		cla.Endpoints[0].LoadBalancingWeight = wrapperspb.UInt32(1)
		res = append(res, xdsres.EDSCluster(name), cla)
	}
	srv := xdsserver.Start(t)
	srv.Set(t, res...)

	bootstrap := fmt.Sprintf(`{"xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
		"node": {"id": %q}}`, srv.Addr, xdsserver.NodeID)
	resolver, err := grpcxds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///"+target, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(resolver))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	check := func(md ...string) healthpb.HealthCheckResponse_ServingStatus {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if len(md) > 0 {
			ctx = metadata.AppendToOutgoingContext(ctx, md...)
		}
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
		if err != nil {
			t.Fatalf("Check via xds:///%s: %v", target, err)
		}
		return resp.GetStatus()
	}
	if got := check(); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("default route: status %v, want SERVING (subset v1)", got)
	}
	if got := check("x-version", "v2"); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("x-version: v2: status %v, want NOT_SERVING (subset v2)", got)
	}
	for _, r := range srv.Responses() {
		if r.NACK != "" {
			t.Errorf("grpc-go NACKed %s: %s", r.TypeURL, r.NACK)
		}
	}
}
