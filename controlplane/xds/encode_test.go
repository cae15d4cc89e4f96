package xds

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"unsafe"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	grpcencoding "google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/encoding/protowire"
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
	if err := proto.Unmarshal(join(first(sotwResponse(ClusterType, "v7", "n-1", encs))), &sotw); err != nil {
		t.Fatalf("decoding the SotW response: %v", err)
	}
	want := &discoveryv3.DiscoveryResponse{VersionInfo: "v7", TypeUrl: ClusterType, Nonce: "n-1", Resources: anys}
	if !proto.Equal(want, &sotw) {
		t.Errorf("SotW response:\n%s\nwant:\n%s", prototext.Format(&sotw), prototext.Format(want))
	}

	var delta discoveryv3.DeltaDiscoveryResponse
	if err := proto.Unmarshal(join(first(deltaResponse(ClusterType, "v8", "n-2", encs[1:], []string{"gone-a", "gone-b"}))), &delta); err != nil {
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

	// Two streams sending the same resources share the body's chunks,
	// which the codec hands to gRPC without copying them.
	w1, b1 := sotwResponse(ClusterType, "v7", "n-1", encs)
	w2, b2 := sotwResponse(ClusterType, "v7", "n-9", slices.Clone(encs))
	if len(b1) == 0 || !slices.Equal(b1, b2) {
		t.Errorf("two responses with the same resources built different chunks")
	}
	bs1, err := codec{}.Marshal(w1)
	if err != nil {
		t.Fatal(err)
	}
	bs2, _ := codec{}.Marshal(w2)
	if &bs1[1].ReadOnlyData()[0] != &bs2[1].ReadOnlyData()[0] || &bs1[1].ReadOnlyData()[0] != &b1[0].bytes[0] {
		t.Errorf("the codec copied a shared chunk")
	}
}

// A list that differs from another by one resource of its own (a proxy's
// inbound cluster) shares every chunk but the one holding it.
func TestChunksSharedAcrossListsThatDifferByOne(t *testing.T) {
	var common []*encoding
	for i := range 2000 {
		name := fmt.Sprintf("outbound|8080||svc-%04d.load.svc.cluster.local", i)
		common = append(common, MustResource(name, &clusterv3.Cluster{Name: name}).enc)
	}
	own := MustResource("inbound|8080||", &clusterv3.Cluster{Name: "inbound|8080||"}).enc
	a := bodyOf(common, false)
	b := bodyOf(append(slices.Clone(common[:1000]), append([]*encoding{own}, common[1000:]...)...), false)
	shared := 0
	in := map[*chunk]bool{}
	for _, c := range a {
		in[c] = true
	}
	for _, c := range b {
		if in[c] {
			shared++
		}
	}
	if len(a) < 10 || shared < len(b)-2 {
		t.Errorf("lists differing by one resource: %d and %d chunks, %d shared; want all but at most 2 shared", len(a), len(b), shared)
	}
	if got, want := len(bytes.Join(first(sotwResponse(ClusterType, "v", "n", common)).parts[1:], nil)), func() int {
		n := 0
		for _, e := range common {
			n += len(e.sotw)
		}
		return n
	}(); got != want {
		t.Errorf("body holds %d bytes, want the %d of its encodings", got, want)
	}
}

func first[A, B any](a A, _ B) A { return a }

func join(w *wireMessage) []byte { return bytes.Join(w.parts, nil) }

// Requests decode as the proto library decodes them, and the names of
// two requests share their bytes (an ACK allocates no names).
func TestRequestsDecodeWithInternedNames(t *testing.T) {
	want := &discoveryv3.DiscoveryRequest{
		VersionInfo: "v1", TypeUrl: EndpointType, ResponseNonce: "n-3",
		Node:          &corev3.Node{Id: "sidecar~10.0.0.1~a.default~default.svc.cluster.local"},
		ResourceNames: []string{"outbound|80||a.default.svc.cluster.local", "outbound|80||b.default.svc.cluster.local"},
		ErrorDetail:   &statuspb.Status{Code: 3, Message: "rejected"},
	}
	b, err := proto.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var got1, got2 discoveryv3.DiscoveryRequest
	for _, got := range []*discoveryv3.DiscoveryRequest{&got1, &got2} {
		if err := (codec{proto: grpcencoding.GetCodecV2("proto")}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(want, got) {
			t.Fatalf("decoded:\n%s\nwant:\n%s", prototext.Format(got), prototext.Format(want))
		}
	}
	if unsafe.StringData(got1.ResourceNames[1]) != unsafe.StringData(got2.ResourceNames[1]) {
		t.Errorf("the same name in two requests was allocated twice")
	}

	// A name that is not UTF-8 is refused as the proto library refuses it.
	bad := protowire.AppendTag(nil, 3, protowire.BytesType)
	bad = protowire.AppendBytes(bad, []byte{0xff, 0xfe})
	var r discoveryv3.DiscoveryRequest
	if err := (codec{proto: grpcencoding.GetCodecV2("proto")}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(bad)}, &r); err == nil {
		t.Errorf("a resource name that is not UTF-8 decoded without error")
	}
}
