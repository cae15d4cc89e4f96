package xdsload_test

import (
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiff-mesh/skiff/internal/xdsload"
)

const (
	testHost = "svc-0.load-0.svc.cluster.local"
	testPort = 8080
)

var (
	clusterAll = "outbound|8080||" + testHost
	clusterV1  = "outbound|8080|v1|" + testHost
	clusterV2  = "outbound|8080|v2|" + testHost
)

// adsServer is a minimal state-of-the-world ADS server: it answers each
// request that opens or changes a subscription with the current resources
// of that type, treats a request carrying the last nonce and the same names
// as an ACK, and records every request in order, per stream.
type adsServer struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	Addr string

	mu       sync.Mutex
	w1, w2   int    // route weights of the v1/v2 split
	endpoint string // the address in every load assignment
	junk     []byte // when set, CDS responses also carry a resource with these bytes
	streams  []*adsStream
}

type adsStream struct {
	srv    *adsServer
	send   sync.Mutex // grpc streams allow one sender at a time
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer

	mu      sync.Mutex
	reqs    []*discoveryv3.DiscoveryRequest
	names   map[string][]string // subscribed names per type
	nonce   int
	version map[string]int
}

func startADS(t *testing.T) *adsServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &adsServer{Addr: ln.Addr().String(), w1: 50, w2: 50, endpoint: "198.18.0.1"}
	g := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, s)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	return s
}

func (s *adsServer) StreamAggregatedResources(stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	st := &adsStream{srv: s, stream: stream, names: map[string][]string{}, version: map[string]int{}}
	s.mu.Lock()
	s.streams = append(s.streams, st)
	s.mu.Unlock()
	for {
		req, err := stream.Recv()
		if err != nil {
			return err
		}
		st.mu.Lock()
		st.reqs = append(st.reqs, req)
		names, had := st.names[req.GetTypeUrl()]
		isACK := had && req.GetResponseNonce() != "" && slices.Equal(names, req.GetResourceNames())
		st.names[req.GetTypeUrl()] = req.GetResourceNames()
		st.mu.Unlock()
		if !isACK {
			if err := st.respond(req.GetTypeUrl()); err != nil {
				return err
			}
		}
	}
}

// respond sends the current resources of typeURL with the next version
// ("c1", "e1", "l1", "r1", …) and nonce ("n1", "n2", … per stream).
func (st *adsStream) respond(typeURL string) error {
	st.srv.mu.Lock()
	res := st.srv.resources(typeURL)
	junk := st.srv.junk
	st.srv.mu.Unlock()
	st.mu.Lock()
	st.nonce++
	st.version[typeURL]++
	resp := &discoveryv3.DiscoveryResponse{TypeUrl: typeURL, Nonce: "n" + strconv.Itoa(st.nonce),
		VersionInfo: typePrefix(typeURL) + strconv.Itoa(st.version[typeURL])}
	st.mu.Unlock()
	for _, m := range res {
		a, err := anypb.New(m)
		if err != nil {
			return err
		}
		resp.Resources = append(resp.Resources, a)
	}
	if junk != nil && typeURL == xdsload.ClusterType {
		resp.Resources = append(resp.Resources, &anypb.Any{TypeUrl: typeURL, Value: junk})
	}
	st.send.Lock()
	defer st.send.Unlock()
	return st.stream.Send(resp)
}

func typePrefix(typeURL string) string {
	return map[string]string{xdsload.ClusterType: "c", xdsload.EndpointType: "e", xdsload.ListenerType: "l", xdsload.RouteType: "r"}[typeURL]
}

func (s *adsServer) resources(typeURL string) []proto.Message {
	eds := func(name string) *clusterv3.Cluster {
		return &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{ServiceName: name,
				EdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}}
	}
	switch typeURL {
	case xdsload.ClusterType:
		return []proto.Message{eds(clusterAll), eds(clusterV1), eds(clusterV2),
			&clusterv3.Cluster{Name: "BlackHoleCluster", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}}}
	case xdsload.EndpointType:
		var out []proto.Message
		for _, n := range []string{clusterAll, clusterV1, clusterV2} {
			out = append(out, &endpointv3.ClusterLoadAssignment{ClusterName: n, Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
						Address: s.endpoint, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: testPort}}}}}}}}}}})
		}
		return out
	case xdsload.ListenerType:
		hcm, err := anypb.New(&hcmv3.HttpConnectionManager{StatPrefix: "outbound_0.0.0.0_8080",
			RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "8080"}}})
		if err != nil {
			panic(err)
		}
		return []proto.Message{
			&listenerv3.Listener{Name: "0.0.0.0_8080", FilterChains: []*listenerv3.FilterChain{{
				Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager",
					ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}}}}},
			&listenerv3.Listener{Name: "virtualOutbound"},
		}
	case xdsload.RouteType:
		return []proto.Message{&routev3.RouteConfiguration{Name: "8080", VirtualHosts: []*routev3.VirtualHost{{
			Name: testHost + ":8080", Domains: []string{testHost, testHost + ":8080"},
			Routes: []*routev3.Route{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{
					WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
						{Name: clusterV1, Weight: wrapperspb.UInt32(uint32(s.w1))},
						{Name: clusterV2, Weight: wrapperspb.UInt32(uint32(s.w2))},
					}}}}}}}}}}}
	}
	return nil
}

// push changes the server's state with set, then, after delay, sends the
// new resources of typeURL on every stream, as a control plane pushes.
func (s *adsServer) push(t *testing.T, typeURL string, delay time.Duration, set func()) {
	s.mu.Lock()
	set()
	streams := slices.Clone(s.streams)
	s.mu.Unlock()
	go func() {
		time.Sleep(delay)
		for _, st := range streams {
			if err := st.respond(typeURL); err != nil {
				t.Errorf("pushing %s: %v", xdsload.ShortType(typeURL), err)
			}
		}
	}()
}

// requests is what the proxies sent, per stream, in order.
func (s *adsServer) requests() [][]*discoveryv3.DiscoveryRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out [][]*discoveryv3.DiscoveryRequest
	for _, st := range s.streams {
		st.mu.Lock()
		out = append(out, slices.Clone(st.reqs))
		st.mu.Unlock()
	}
	return out
}
