package xds

import (
	"bytes"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// The hand-assembled responses must decode to exactly the messages the
// proto library would have encoded: a proxy cannot tell them apart.
func TestPreEncodedResponsesDecodeAsProtoMessages(t *testing.T) {
	var encs []*encoding
	var anys []*anypb.Any
	for _, name := range []string{"outbound|80||a.default.svc.cluster.local", "outbound|9080|v1|reviews.default.svc.cluster.local"} {
		r := MustResource(name, &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}})
		encs = append(encs, r.enc)
		anys = append(anys, r.enc.any)
	}

	var sotw discoveryv3.DiscoveryResponse
	if err := proto.Unmarshal(join(sotwResponse(ClusterType, "v7", "n-1", encs)), &sotw); err != nil {
		t.Fatalf("decoding the SotW response: %v", err)
	}
	want := &discoveryv3.DiscoveryResponse{VersionInfo: "v7", TypeUrl: ClusterType, Nonce: "n-1", Resources: anys}
	if !proto.Equal(want, &sotw) {
		t.Errorf("SotW response:\n%s\nwant:\n%s", prototext.Format(&sotw), prototext.Format(want))
	}

	var delta discoveryv3.DeltaDiscoveryResponse
	if err := proto.Unmarshal(join(deltaResponse(ClusterType, "v8", "n-2", encs[1:], []string{"gone-a", "gone-b"})), &delta); err != nil {
		t.Fatalf("decoding the delta response: %v", err)
	}
	wantDelta := &discoveryv3.DeltaDiscoveryResponse{SystemVersionInfo: "v8", TypeUrl: ClusterType, Nonce: "n-2",
		Resources:        []*discoveryv3.Resource{{Name: encs[1].name, Version: encs[1].version, Resource: anys[1]}},
		RemovedResources: []string{"gone-a", "gone-b"}}
	if !proto.Equal(wantDelta, &delta) {
		t.Errorf("delta response:\n%s\nwant:\n%s", prototext.Format(&delta), prototext.Format(wantDelta))
	}

	// A resource's version is its content: equal bytes, equal version.
	again := MustResource("x", &clusterv3.Cluster{Name: encs[0].name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}})
	if again.enc.version != encs[0].version || encs[0].version == encs[1].version {
		t.Errorf("versions: same content %q vs %q, different content %q", again.enc.version, encs[0].version, encs[1].version)
	}

	// The codec hands the parts to gRPC without copying them.
	bs, err := codec{}.Marshal(sotwResponse(ClusterType, "v7", "n-1", encs))
	if err != nil {
		t.Fatal(err)
	}
	if &bs[1].ReadOnlyData()[0] != &encs[0].sotw[0] {
		t.Errorf("the codec copied a shared resource encoding")
	}
}

func join(w *wireMessage) []byte { return bytes.Join(w.parts, nil) }
