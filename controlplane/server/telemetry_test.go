package server_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/skiff-mesh/skiff/controlplane/server"
)

// TestListenersCarryTelemetry runs skiffd on Bookinfo with
// accessLogFile set and a Telemetry that drops one metric, and reads a
// sidecar's listeners over a real ADS stream: the outbound HTTP
// listener's connection manager has the metadata exchange first, the
// stats filter (with the override) before the router, and the access log.
func TestListenersCarryTelemetry(t *testing.T) {
	dir := t.TempDir()
	bookinfo, err := os.ReadFile("/work/shared/istio-samples/bookinfo/platform/kube/bookinfo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tel := []byte(`apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  metrics:
  - overrides:
    - match: {metric: REQUEST_SIZE}
      disabled: true
`)
	for name, b := range map[string][]byte{"bookinfo.yaml": bookinfo, "telemetry.yaml": tel} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mc := server.DefaultMeshConfig()
	mc.AccessLogFile = "/dev/stdout"
	srv, err := server.New(server.Options{
		ConfigDir: dir, XDSAddr: "127.0.0.1:0", MonitoringAddr: "127.0.0.1:0", MeshConfig: mc,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	cc, err := grpc.NewClient(srv.XDSAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	md, _ := structpb.NewStruct(map[string]any{"NAMESPACE": "default", "LABELS": map[string]any{"app": "productpage", "version": "v1"}})
	if err := stream.Send(&discoveryv3.DiscoveryRequest{
		Node:    &corev3.Node{Id: "sidecar~198.18.0.10~productpage-v1-0.default~default.svc.cluster.local", Metadata: md},
		TypeUrl: "type.googleapis.com/envoy.config.listener.v3.Listener",
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("no LDS response: %v", err)
	}
	var h *hcmv3.HttpConnectionManager
	for _, a := range resp.GetResources() {
		l := &listenerv3.Listener{}
		if err := a.UnmarshalTo(l); err != nil {
			t.Fatal(err)
		}
		if l.GetName() != "0.0.0.0_9080" {
			continue
		}
		h = &hcmv3.HttpConnectionManager{}
		if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(h); err != nil {
			t.Fatal(err)
		}
	}
	if h == nil {
		t.Fatalf("no listener 0.0.0.0_9080 among %d", len(resp.GetResources()))
	}
	var names []string
	for _, f := range h.GetHttpFilters() {
		names = append(names, f.GetName())
	}
	i := slices.Index(names, "istio.stats")
	if names[0] != "istio.metadata_exchange" || i < 0 || names[i+1] != "envoy.filters.http.router" {
		t.Errorf("HTTP filters %v: want istio.metadata_exchange first and istio.stats right before the router", names)
	}
	if i >= 0 {
		if v := string(h.GetHttpFilters()[i].GetTypedConfig().GetValue()); !strings.Contains(v, "request_bytes") {
			t.Errorf("istio.stats config %q does not carry the Telemetry's request_bytes override", v)
		}
	}
	if len(h.GetAccessLog()) != 1 || h.GetAccessLog()[0].GetName() != "envoy.access_loggers.file" {
		t.Errorf("access logs %v: want meshConfig.accessLogFile's file logger", h.GetAccessLog())
	}
}
