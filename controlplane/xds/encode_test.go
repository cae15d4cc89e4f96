package xds

import (
	"bytes"
	"fmt"
	"runtime"
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
	// One more of the same kind (a resource of another kind gets a chunk
	// of its own: see the next test).
	own := MustResource("outbound|8080||svc-0999x.load.svc.cluster.local", &clusterv3.Cluster{Name: "outbound|8080||svc-0999x.load.svc.cluster.local"}).enc
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
			n += e.elementSize(false)
		}
		return n
	}(); got != want {
		t.Errorf("body holds %d bytes, want the %d of its encodings", got, want)
	}
}

// Sidecars of one namespace get the same clusters but their own inbound
// ones: the chunks they do not share hold only those.
func TestChunksIsolateEachProxysOwnResources(t *testing.T) {
	cluster := func(name string) *encoding { return MustResource(name, &clusterv3.Cluster{Name: name}).enc }
	common := []*encoding{cluster("BlackHoleCluster"), cluster("InboundPassthroughCluster"), cluster("PassthroughCluster")}
	var outbound []*encoding
	for i := range 500 {
		outbound = append(outbound, cluster(fmt.Sprintf("outbound|8080||svc-%04d.load.svc.cluster.local", i)))
	}
	bodies := map[*encoding]body{}
	for i := range 20 {
		own := cluster(fmt.Sprintf("inbound|%d||", 8000+i))
		res := append(append(slices.Clone(common), own), outbound...)
		bodies[own] = bodyOf(res, true)
	}
	seen := map[*chunk]int{}
	for _, b := range bodies {
		for _, c := range b {
			seen[c]++
		}
	}
	for own, b := range bodies {
		for _, c := range b {
			if seen[c] == 1 && !slices.Equal(c.encs, []*encoding{own}) {
				names := []string{}
				for _, e := range c.encs {
					names = append(names, e.name)
				}
				t.Fatalf("a chunk only %s's body holds carries %d resources %q; want only its own", own.name, len(c.encs), names[:min(len(names), 4)])
			}
		}
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

// Delta requests subscribe with the same thousands of names on every
// sidecar: they decode like the proto library's, with interned names.
func TestDeltaRequestsDecodeWithInternedNames(t *testing.T) {
	want := &discoveryv3.DeltaDiscoveryRequest{
		TypeUrl: EndpointType, ResponseNonce: "n-4",
		Node:                     &corev3.Node{Id: "sidecar~10.0.0.1~a.default~default.svc.cluster.local"},
		ResourceNamesSubscribe:   []string{"outbound|80||a.default.svc.cluster.local", "outbound|80||b.default.svc.cluster.local"},
		ResourceNamesUnsubscribe: []string{"outbound|80||c.default.svc.cluster.local"},
		InitialResourceVersions:  map[string]string{"outbound|80||a.default.svc.cluster.local": "7f"},
		ErrorDetail:              &statuspb.Status{Code: 3, Message: "rejected"},
	}
	b, err := proto.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var got1, got2 discoveryv3.DeltaDiscoveryRequest
	for _, got := range []*discoveryv3.DeltaDiscoveryRequest{&got1, &got2} {
		if err := (codec{proto: grpcencoding.GetCodecV2("proto")}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(want, got) {
			t.Fatalf("decoded:\n%s\nwant:\n%s", prototext.Format(got), prototext.Format(want))
		}
	}
	if unsafe.StringData(got1.ResourceNamesSubscribe[1]) != unsafe.StringData(got2.ResourceNamesSubscribe[1]) ||
		unsafe.StringData(got1.ResourceNamesUnsubscribe[0]) != unsafe.StringData(got2.ResourceNamesUnsubscribe[0]) {
		t.Errorf("the same name in two requests was allocated twice")
	}

	for _, num := range []protowire.Number{3, 4} {
		bad := protowire.AppendTag(nil, num, protowire.BytesType)
		bad = protowire.AppendBytes(bad, []byte{0xff, 0xfe})
		var r discoveryv3.DeltaDiscoveryRequest
		if err := (codec{proto: grpcencoding.GetCodecV2("proto")}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(bad)}, &r); err == nil {
			t.Errorf("a field %d name that is not UTF-8 decoded without error", num)
		}
	}
}

// Equal resources built for different proxy groups share one encoding;
// a resource that differs in content or name does not.
func TestEqualResourcesShareTheirEncoding(t *testing.T) {
	mk := func(name string, typ clusterv3.Cluster_DiscoveryType) *encoding {
		return MustResource(name, &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: typ}}).enc
	}
	a, b := mk("outbound|80||a.default.svc.cluster.local", clusterv3.Cluster_EDS), mk("outbound|80||a.default.svc.cluster.local", clusterv3.Cluster_EDS)
	if a != b {
		t.Errorf("two equal clusters got two encodings")
	}
	if c := mk("outbound|80||a.default.svc.cluster.local", clusterv3.Cluster_STRICT_DNS); c == a || c.version == a.version {
		t.Errorf("a cluster of other content shares the encoding (or version) of the first")
	}
	if d := mk("outbound|81||a.default.svc.cluster.local", clusterv3.Cluster_EDS); d == a {
		t.Errorf("a cluster of another name shares the encoding of the first")
	}
	runtime.KeepAlive(a)
}
