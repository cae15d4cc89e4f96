package xdsclient

import (
	"fmt"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/skiff-mesh/skiff/dataplane/xdstypes"
)

func anyOf(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func cluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(time.Second)}
}

// Malformed responses fail as a whole, with a message naming the resource.
func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sotw  *discoveryv3.DiscoveryResponse
		delta *discoveryv3.DeltaDiscoveryResponse
		want  string
	}{
		{name: "duplicate", sotw: &discoveryv3.DiscoveryResponse{Resources: []*anypb.Any{anyOf(t, cluster("a")), anyOf(t, cluster("a"))}},
			want: `Cluster "a": duplicate resource name in one response`},
		{name: "nameless", sotw: &discoveryv3.DiscoveryResponse{Resources: []*anypb.Any{anyOf(t, &clusterv3.Cluster{})}},
			want: `Cluster resources[0]: resource has no name`},
		{name: "empty wrapper", sotw: &discoveryv3.DiscoveryResponse{Resources: []*anypb.Any{anyOf(t, &discoveryv3.Resource{Name: "w"})}},
			want: `Cluster "w": wrapped Resource has no resource`},
		{name: "delta without body", delta: &discoveryv3.DeltaDiscoveryResponse{Resources: []*discoveryv3.Resource{{Name: "d", Version: "1"}}},
			want: `Cluster "d": resource has no body`},
		{name: "delta wrong type", delta: &discoveryv3.DeltaDiscoveryResponse{Resources: []*discoveryv3.Resource{{Name: "e", Resource: anyOf(t, &endpointv3.ClusterLoadAssignment{ClusterName: "e"})}}},
			want: `Cluster "e": type is "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"`},
		{name: "delta invalid", delta: &discoveryv3.DeltaDiscoveryResponse{Resources: []*discoveryv3.Resource{{Name: "v", Resource: anyOf(t, &clusterv3.Cluster{Name: "v", ConnectTimeout: durationpb.New(-time.Second)})}}},
			want: `Cluster "v": invalid Cluster.ConnectTimeout`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.sotw != nil {
				_, err = decodeSotw(xdstypes.Cluster, tc.sotw)
			} else {
				_, err = decodeDelta(xdstypes.Cluster, tc.delta)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestDecodeEndpointsByClusterName(t *testing.T) {
	u, err := decodeSotw(xdstypes.ClusterLoadAssignment, &discoveryv3.DiscoveryResponse{
		VersionInfo: "7",
		Resources:   []*anypb.Any{anyOf(t, &endpointv3.ClusterLoadAssignment{ClusterName: "outbound|80||a"})},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !u.Full || len(u.Resources) != 1 || u.Resources[0].Name != "outbound|80||a" || u.Resources[0].Version != "7" {
		t.Errorf("update %+v", u)
	}
}

// BenchmarkDecodeSotw measures decoding and validating a 1000-cluster CDS
// response, the largest a sidecar usually sees.
func BenchmarkDecodeSotw(b *testing.B) {
	resp := &discoveryv3.DiscoveryResponse{VersionInfo: "1"}
	for i := range 1000 {
		resp.Resources = append(resp.Resources, anyOf(b, cluster(fmt.Sprintf("outbound|80||svc-%d.default.svc.cluster.local", i))))
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeSotw(xdstypes.Cluster, resp); err != nil {
			b.Fatal(err)
		}
	}
}
