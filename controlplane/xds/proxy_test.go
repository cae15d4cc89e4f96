package xds_test

import (
	"reflect"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/skiff-mesh/skiff/controlplane/xds"
)

func mustStruct(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The node as pilot-agent sends it for a sidecar and a gateway, and as a
// proxyless gRPC bootstrap carries it, parses to the same Proxy fields
// Istio derives.
func TestParseNode(t *testing.T) {
	sidecar, err := xds.ParseNode(&corev3.Node{
		Id: "sidecar~10.244.0.12~reviews-v1-7d8f9c-abcde.default~default.svc.cluster.local",
		Metadata: mustStruct(t, map[string]any{
			"NAMESPACE":       "default",
			"NAME":            "reviews-v1-7d8f9c-abcde",
			"SERVICE_ACCOUNT": "bookinfo-reviews",
			"INSTANCE_IPS":    "10.244.0.12,fd00:10:244::c",
			"WORKLOAD_NAME":   "reviews-v1",
			"ISTIO_VERSION":   "1.28.0",
			"CLUSTER_ID":      "Kubernetes",
			"NETWORK":         "net1",
			"MESH_ID":         "cluster.local",
			"LABELS":          map[string]any{"app": "reviews", "version": "v1"},
			"ANNOTATIONS":     map[string]any{"sidecar.istio.io/status": "{}"},
		}),
		Locality: &corev3.Locality{Region: "us-east1", Zone: "us-east1-b"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := xds.Proxy{
		ID: "reviews-v1-7d8f9c-abcde.default", NodeID: "sidecar~10.244.0.12~reviews-v1-7d8f9c-abcde.default~default.svc.cluster.local",
		Type: xds.SidecarProxy, IPs: []string{"10.244.0.12", "fd00:10:244::c"}, DNSDomain: "default.svc.cluster.local",
		Namespace: "default", ServiceAccount: "bookinfo-reviews", Workload: "reviews-v1", PodName: "reviews-v1-7d8f9c-abcde",
		Labels: map[string]string{"app": "reviews", "version": "v1"}, Annotations: map[string]string{"sidecar.istio.io/status": "{}"},
		IstioVersion: "1.28.0", ClusterID: "Kubernetes", Network: "net1", MeshID: "cluster.local",
	}
	got := *sidecar
	got.Metadata, got.Locality = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("sidecar:\n got %+v\nwant %+v", got, want)
	}
	if sidecar.Locality.GetZone() != "us-east1-b" {
		t.Errorf("locality %v", sidecar.Locality)
	}

	// A gateway with no metadata: namespace and IP come from the id.
	gw, err := xds.ParseNode(&corev3.Node{Id: "router~10.244.0.5~istio-ingressgateway-5c9f.istio-system~istio-system.svc.cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	if gw.Type != xds.RouterProxy || gw.Namespace != "istio-system" || !reflect.DeepEqual(gw.IPs, []string{"10.244.0.5"}) || gw.PodName != "istio-ingressgateway-5c9f" {
		t.Errorf("gateway: %+v", gw)
	}

	// Proxyless gRPC (istio-agent's grpc bootstrap sets GENERATOR=grpc).
	grpcNode, err := xds.ParseNode(&corev3.Node{
		Id:            "sidecar~10.244.0.20~echo-grpc-6b7c.echo~echo.svc.cluster.local",
		UserAgentName: "gRPC Go",
		Metadata:      mustStruct(t, map[string]any{"GENERATOR": "grpc", "NAMESPACE": "echo", "INSTANCE_IPS": "10.244.0.20"}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !grpcNode.Proxyless || grpcNode.Namespace != "echo" || grpcNode.ID != "echo-grpc-6b7c.echo" {
		t.Errorf("proxyless: %+v", grpcNode)
	}
}

func TestParseNodeErrors(t *testing.T) {
	for _, tc := range []struct {
		node *corev3.Node
		want string
	}{
		{&corev3.Node{Id: "waypoint~10.0.0.1~w.default~default.svc.cluster.local"},
			`node id "waypoint~10.0.0.1~w.default~default.svc.cluster.local": proxy type "waypoint" is not "sidecar" or "router"`},
		{&corev3.Node{Id: "sidecar~10.0.0.1~~default.svc.cluster.local"},
			`node id "sidecar~10.0.0.1~~default.svc.cluster.local": empty pod.namespace field`},
		{&corev3.Node{Id: "sidecar~not-an-ip~p.default~default.svc.cluster.local"},
			`node "sidecar~not-an-ip~p.default~default.svc.cluster.local": IP "not-an-ip" (from INSTANCE_IPS or the node id) is not an IP address`},
		{&corev3.Node{Id: "sidecar~10.0.0.1~p.default~default.svc.cluster.local", Metadata: mustStruct(t, map[string]any{"LABELS": map[string]any{"app": 3.0}})},
			`node "sidecar~10.0.0.1~p.default~default.svc.cluster.local": metadata LABELS.app must be a string, got *structpb.Value_NumberValue`},
	} {
		_, err := xds.ParseNode(tc.node)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: error %v, want %s", tc.node.GetId(), err, tc.want)
		}
	}
}
