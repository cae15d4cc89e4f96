package xdsload

import (
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// split cuts b into buffers of size n (the last shorter), as gRPC hands
// over a message read from several HTTP/2 frames.
func split(b []byte, n int) *wireMsg {
	m := &wireMsg{}
	for len(b) > 0 {
		k := min(n, len(b))
		m.bufs = append(m.bufs, mem.SliceBuffer(b[:k]))
		b = b[k:]
	}
	return m
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestParseAcrossBuffers reads responses cut at every buffer size from 1
// byte up, and checks the tool sees what a full decode sees: names, the
// subscriptions they drive, versions, and the change detectors' verdicts.
func TestParseAcrossBuffers(t *testing.T) {
	cds := []proto.Message{
		&clusterv3.Cluster{Name: "outbound|8080||a.ns.svc.cluster.local", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{ServiceName: "outbound|8080||a.ns.svc.cluster.local"}},
		&clusterv3.Cluster{Name: "outbound|8080|v1|b.ns.svc.cluster.local", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}},
		&clusterv3.Cluster{Name: "PassthroughCluster", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}},
	}
	hcm := &hcmv3.HttpConnectionManager{RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "8080"}}}
	lds := []proto.Message{&listenerv3.Listener{Name: "0.0.0.0_8080", FilterChains: []*listenerv3.FilterChain{{
		Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, hcm)}}},
	}}}}
	wc := &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
		{Name: "outbound|8080|v1|b.ns.svc.cluster.local", Weight: wrapperspb.UInt32(30)},
		{Name: "outbound|8080|v2|b.ns.svc.cluster.local", Weight: wrapperspb.UInt32(70)},
	}}
	rds := []proto.Message{&routev3.RouteConfiguration{Name: "8080", VirtualHosts: []*routev3.VirtualHost{
		{Name: "a.ns.svc.cluster.local:8080", Domains: []string{"a.ns.svc.cluster.local"}},
		{Name: "b.ns.svc.cluster.local:8080", Domains: []string{"b.ns.svc.cluster.local"}, Routes: []*routev3.Route{{
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}}},
		}}},
	}}}
	eds := []proto.Message{&endpointv3.ClusterLoadAssignment{ClusterName: "outbound|8080||a.ns.svc.cluster.local",
		Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "198.18.0.7"}}}},
		}}}}}}}
	type want struct {
		names, deps []string
		match       bool
	}
	cases := []struct {
		typeURL string
		res     []proto.Message
		exp     Expectation
		want    want
	}{
		{ClusterType, cds, Expectation{}, want{names: []string{"outbound|8080||a.ns.svc.cluster.local", "outbound|8080|v1|b.ns.svc.cluster.local", "PassthroughCluster"},
			deps: []string{"outbound|8080||a.ns.svc.cluster.local", "outbound|8080|v1|b.ns.svc.cluster.local"}}},
		{ListenerType, lds, Expectation{}, want{names: []string{"0.0.0.0_8080"}, deps: []string{"8080"}}},
		{RouteType, rds, RouteWeights("b.ns.svc.cluster.local", 8080, 30, 70), want{names: []string{"8080"}, match: true}},
		{RouteType, rds, RouteWeights("b.ns.svc.cluster.local", 8080, 70, 30), want{names: []string{"8080"}}},
		{EndpointType, eds, EndpointAddress("outbound|8080||a.ns.svc.cluster.local", "198.18.0.7"), want{names: []string{"outbound|8080||a.ns.svc.cluster.local"}, match: true}},
		{EndpointType, eds, EndpointAddress("outbound|8080||a.ns.svc.cluster.local", "198.18.0.8"), want{names: []string{"outbound|8080||a.ns.svc.cluster.local"}}},
	}
	for _, tc := range cases {
		sotw := &discoveryv3.DiscoveryResponse{VersionInfo: "v7", TypeUrl: tc.typeURL, Nonce: "n7"}
		delta := &discoveryv3.DeltaDiscoveryResponse{SystemVersionInfo: "v7", TypeUrl: tc.typeURL, Nonce: "n7", RemovedResources: []string{"gone"}}
		for i, r := range tc.res {
			sotw.Resources = append(sotw.Resources, mustAny(t, r))
			delta.Resources = append(delta.Resources, &discoveryv3.Resource{Name: "ignored", Version: "h" + string(rune('0'+i)), Resource: mustAny(t, r)})
		}
		for _, isDelta := range []bool{false, true} {
			var b []byte
			var err error
			if isDelta {
				b, err = proto.Marshal(delta)
			} else {
				b, err = proto.Marshal(sotw)
			}
			if err != nil {
				t.Fatal(err)
			}
			for n := 1; n <= len(b); n++ {
				m := split(b, n)
				var r wireResponse
				if isDelta {
					r, err = parseDelta(m)
				} else {
					r, err = parseSotW(m)
				}
				if err != nil {
					t.Fatalf("%s delta=%v buffers of %d: %v", ShortType(tc.typeURL), isDelta, n, err)
				}
				if r.typeURL != tc.typeURL || r.version != "v7" || r.nonce != "n7" || len(r.resources) != len(tc.res) {
					t.Fatalf("%s delta=%v buffers of %d: got type %q version %q nonce %q, %d resources", ShortType(tc.typeURL), isDelta, n, r.typeURL, r.version, r.nonce, len(r.resources))
				}
				if isDelta && (!slices.Equal(r.removed, []string{"gone"}) || r.resources[0].version.Value() != "h0") {
					t.Fatalf("delta buffers of %d: removed %q, first version %q", n, r.removed, r.resources[0].version.Value())
				}
				var names, deps []string
				match := false
				for _, res := range r.resources {
					d, err := decode(tc.typeURL, res.value)
					if err != nil {
						t.Fatalf("%s buffers of %d: %v", ShortType(tc.typeURL), n, err)
					}
					names = append(names, d.name.Value())
					for _, dep := range d.deps {
						deps = append(deps, dep.Value())
					}
					if tc.exp.match != nil && tc.exp.match(d.raw) {
						match = true
					}
				}
				if !slices.Equal(names, tc.want.names) || !slices.Equal(deps, tc.want.deps) || match != tc.want.match {
					t.Fatalf("%s delta=%v buffers of %d: names %q deps %q match %v, want %+v", ShortType(tc.typeURL), isDelta, n, names, deps, match, tc.want)
				}
			}
		}
	}
}

// TestParseTruncated refuses a response cut short, wherever it is cut.
func TestParseTruncated(t *testing.T) {
	b, err := proto.Marshal(&discoveryv3.DiscoveryResponse{VersionInfo: "v1", TypeUrl: ClusterType, Nonce: "n1",
		Resources: []*anypb.Any{mustAny(t, &clusterv3.Cluster{Name: "c"})}})
	if err != nil {
		t.Fatal(err)
	}
	for cut := 1; cut < len(b); cut++ {
		r, err := parseSotW(split(b[:cut], 3))
		if err == nil && len(r.resources) == 1 && r.nonce == "n1" {
			t.Fatalf("cut at %d of %d: parsed as whole", cut, len(b))
		}
	}
}

func TestDirtyPoolSizes(t *testing.T) {
	var p dirtyPool
	for _, n := range []int{0, 1, 9, 16 << 10, 16<<10 + 1, 64 << 10, 64<<10 + 1} {
		b := p.Get(n)
		if len(*b) != n {
			t.Errorf("Get(%d) has length %d", n, len(*b))
		}
		if c := cap(*b); n <= 64<<10 && (c < n || c&(c-1) != 0) {
			t.Errorf("Get(%d) has capacity %d, want a power of two ≥ %d", n, c, n)
		}
		p.Put(b)
	}
	odd := make([]byte, 100)
	p.Put(&odd) // not a pool size: dropped, never handed out for 128
	if b := p.Get(128); cap(*b) != 128 {
		t.Errorf("Get(128) after Put of a 100-byte buffer has capacity %d", cap(*b))
	}
}
