package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcxds "google.golang.org/grpc/xds"

	"github.com/skiff-mesh/skiff/controlplane/server"
)

// healthBackend is a real gRPC server whose health status names it.
func healthBackend(t *testing.T, addr string, st healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("gRPC backend on %s: %v", addr, err)
	}
	s := grpc.NewServer()
	h := health.NewServer()
	h.SetServingStatus("", st)
	healthpb.RegisterHealthServer(s, h)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
}

const grpcMesh = `apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  selector: {app: echo}
  ports: [{name: grpc, port: 7070}]
---
apiVersion: v1
kind: Pod
metadata: {name: echo-v1, namespace: default, labels: {app: echo, version: v1}}
spec: {containers: [{name: app, image: echo, ports: [{containerPort: 7070}]}]}
status: {podIP: 127.0.0.2, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: echo-v2, namespace: default, labels: {app: echo, version: v2}}
spec: {containers: [{name: app, image: echo, ports: [{containerPort: 7070}]}]}
status: {podIP: 127.0.0.3, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: default}
spec:
  host: echo
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo]
  http:
  - route:
    - {destination: {host: echo, subset: v1}, weight: 75}
    - {destination: {host: echo, subset: v2}, weight: 25}
`

// A grpc-go client with the xds:/// resolver, pointed at skiffd, follows a
// VirtualService weight split: proxyless gRPC, as Istio serves it.
func TestProxylessGRPCFollowsWeightsFromSkiffd(t *testing.T) {
	healthBackend(t, "127.0.0.2:7070", healthpb.HealthCheckResponse_SERVING)
	healthBackend(t, "127.0.0.3:7070", healthpb.HealthCheckResponse_NOT_SERVING)
	dir := t.TempDir()
	write(t, dir, "mesh.yaml", grpcMesh)
	cp, err := server.New(server.Options{ConfigDir: dir, XDSAddr: "127.0.0.1:0", MonitoringAddr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	defer func() { cancel(); <-done }()

	bootstrap := fmt.Sprintf(`{"xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
		"node": {"id": "sidecar~127.0.0.1~client.default~default.svc.cluster.local", "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default"}}}`,
		cp.XDSAddr().String())
	resolver, err := grpcxds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///echo.default.svc.cluster.local:7070",
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(resolver))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	counts := map[healthpb.HealthCheckResponse_ServingStatus]int{}
	const n = 400
	for i := 0; i < n; i++ {
		rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := hc.Check(rctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
		rcancel()
		if err != nil {
			t.Fatalf("RPC %d via xds:///: %v", i, err)
		}
		counts[resp.GetStatus()]++
	}
	// 75/25 over 400 RPCs: sd ≈ 8.7; ±5 sd.
	v1 := counts[healthpb.HealthCheckResponse_SERVING]
	if v1 < 257 || v1 > 343 {
		t.Fatalf("75/25 split over %d RPCs gave v1=%d v2=%d", n, v1, counts[healthpb.HealthCheckResponse_NOT_SERVING])
	}
}
