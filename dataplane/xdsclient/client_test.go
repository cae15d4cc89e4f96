package xdsclient_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/skiff-mesh/skiff/dataplane/xdsclient"
	"github.com/skiff-mesh/skiff/dataplane/xdstypes"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

const nodeID = "sidecar~127.0.0.1~app.default~default.svc.cluster.local"

// --- resources ---

func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

func edsCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads()},
	}
}

func endpoints(cluster string, port uint32) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: cluster,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
						Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
					}}},
				}},
			}},
		}},
	}
}

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func httpListener(t testing.TB, name string, port uint32, route string) *listenerv3.Listener {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix:     name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: ads(), RouteConfigName: route}},
		HttpFilters: []*hcmv3.HttpFilter{{
			Name:       "envoy.filters.http.router",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})},
		}},
	}
	return &listenerv3.Listener{
		Name: name,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
		}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name:       "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, hcm)},
		}}}},
	}
}

func routeConfig(name, cluster string) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    name,
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
			}},
		}},
	}
}

// mesh is a snapshot's content: clusters (each with endpoints) and
// listeners (each with its own route config to the cluster of that index).
type mesh struct {
	clusters  []string
	listeners []string
	extra     []types.Resource // extra clusters, e.g. invalid ones
}

func (m mesh) snapshot(t testing.TB, version string) *cachev3.Snapshot {
	t.Helper()
	res := map[resourcev3.Type][]types.Resource{}
	for i, c := range m.clusters {
		res[resourcev3.ClusterType] = append(res[resourcev3.ClusterType], edsCluster(c))
		res[resourcev3.EndpointType] = append(res[resourcev3.EndpointType], endpoints(c, uint32(8000+i)))
	}
	res[resourcev3.ClusterType] = append(res[resourcev3.ClusterType], m.extra...)
	for i, l := range m.listeners {
		route := "route-" + l
		res[resourcev3.ListenerType] = append(res[resourcev3.ListenerType], httpListener(t, l, uint32(9000+i), route))
		res[resourcev3.RouteType] = append(res[resourcev3.RouteType], routeConfig(route, m.clusters[i%len(m.clusters)]))
	}
	s, err := cachev3.NewSnapshot(version, res)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// --- server ---

type seenRequest struct {
	stream int64
	sotw   *discoveryv3.DiscoveryRequest
	delta  *discoveryv3.DeltaDiscoveryRequest
}

func (r seenRequest) typeURL() string {
	if r.sotw != nil {
		return r.sotw.GetTypeUrl()
	}
	return r.delta.GetTypeUrl()
}

func (r seenRequest) errorMessage() string {
	if r.sotw != nil {
		return r.sotw.GetErrorDetail().GetMessage()
	}
	return r.delta.GetErrorDetail().GetMessage()
}

func (r seenRequest) nonce() string {
	if r.sotw != nil {
		return r.sotw.GetResponseNonce()
	}
	return r.delta.GetResponseNonce()
}

// xdsServer is go-control-plane's real ADS server and snapshot cache on
// 127.0.0.1, with every request it receives recorded.
type xdsServer struct {
	cache cachev3.SnapshotCache
	addr  string
	srv   *grpc.Server

	mu   sync.Mutex
	reqs []seenRequest
}

func newXDSServer(t *testing.T, cache cachev3.SnapshotCache, addr string) *xdsServer {
	t.Helper()
	s := &xdsServer{cache: cache}
	cb := serverv3.CallbackFuncs{
		StreamRequestFunc: func(id int64, r *discoveryv3.DiscoveryRequest) error {
			s.record(seenRequest{stream: id, sotw: proto.Clone(r).(*discoveryv3.DiscoveryRequest)})
			return nil
		},
		StreamDeltaRequestFunc: func(id int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			s.record(seenRequest{stream: id, delta: proto.Clone(r).(*discoveryv3.DeltaDiscoveryRequest)})
			return nil
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	x := serverv3.NewServer(ctx, cache, cb)
	s.srv = grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(s.srv, x)
	var lis net.Listener
	var err error
	// The port may be briefly unavailable right after the previous server
	// on it stopped.
	for deadline := time.Now().Add(5 * time.Second); ; {
		lis, err = net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	s.addr = lis.Addr().String()
	go s.srv.Serve(lis)
	t.Cleanup(func() { s.srv.Stop(); cancel() })
	return s
}

func (s *xdsServer) record(r seenRequest) {
	s.mu.Lock()
	s.reqs = append(s.reqs, r)
	s.mu.Unlock()
}

func (s *xdsServer) requests() []seenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reqs)
}

func (s *xdsServer) set(t *testing.T, m mesh, version string) {
	t.Helper()
	if err := s.cache.SetSnapshot(context.Background(), nodeID, m.snapshot(t, version)); err != nil {
		t.Fatal(err)
	}
}

// --- handler ---

type update struct {
	typeURL string
	version string
	names   []string
	removed []string
}

// recorder is a handler that behaves like the proxy: it keeps the last
// good resources per type and subscribes to the EDS and RDS names that the
// clusters and listeners it holds refer to.
type recorder struct {
	client *xdsclient.Client

	mu      sync.Mutex
	state   map[string]map[string]xdsclient.Resource
	updates []update
	reject  func(typeURL string, u *xdsclient.Update) error
}

func newRecorder() *recorder {
	return &recorder{state: map[string]map[string]xdsclient.Resource{}}
}

func (r *recorder) OnUpdate(typeURL string, u *xdsclient.Update) error {
	r.mu.Lock()
	reject := r.reject
	r.mu.Unlock()
	if reject != nil {
		if err := reject(typeURL, u); err != nil {
			return err
		}
	}
	r.mu.Lock()
	cur := r.state[typeURL]
	if cur == nil || (u.Full && xdstypes.IsWildcard(typeURL)) {
		cur = map[string]xdsclient.Resource{}
		r.state[typeURL] = cur
	}
	up := update{typeURL: typeURL, version: u.Version, removed: u.Removed}
	for _, res := range u.Resources {
		cur[res.Name] = res
		up.names = append(up.names, res.Name)
	}
	for _, n := range u.Removed {
		delete(cur, n)
	}
	r.updates = append(r.updates, up)
	var eds, rds []string
	for _, res := range r.state[xdstypes.Cluster] {
		if res.Message.(*clusterv3.Cluster).GetType() == clusterv3.Cluster_EDS {
			eds = append(eds, res.Name)
		}
	}
	for _, res := range r.state[xdstypes.Listener] {
		for _, fc := range res.Message.(*listenerv3.Listener).GetFilterChains() {
			for _, f := range fc.GetFilters() {
				m, err := f.GetTypedConfig().UnmarshalNew()
				if err != nil {
					r.mu.Unlock()
					return fmt.Errorf("listener %q: %v", res.Name, err)
				}
				if hcm, ok := m.(*hcmv3.HttpConnectionManager); ok {
					rds = append(rds, hcm.GetRds().GetRouteConfigName())
				}
			}
		}
	}
	r.mu.Unlock()
	// Subscribing from inside OnUpdate is how the proxy follows references.
	switch typeURL {
	case xdstypes.Cluster:
		r.client.Subscribe(xdstypes.ClusterLoadAssignment, eds)
	case xdstypes.Listener:
		r.client.Subscribe(xdstypes.RouteConfiguration, rds)
	}
	return nil
}

func (r *recorder) has(typeURL string, names ...string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range names {
		if _, ok := r.state[typeURL][n]; !ok {
			return false
		}
	}
	return true
}

func (r *recorder) get(typeURL, name string) xdsclient.Resource {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state[typeURL][name]
}

func (r *recorder) names(typeURL string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for n := range r.state[typeURL] {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func (r *recorder) updateCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.updates)
}

func (r *recorder) allUpdates() []update {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.updates)
}

func (r *recorder) setReject(f func(string, *xdsclient.Update) error) {
	r.mu.Lock()
	r.reject = f
	r.mu.Unlock()
}

// --- helpers ---

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dialer(addr string) func(context.Context) (*grpc.ClientConn, error) {
	return func(context.Context) (*grpc.ClientConn, error) {
		return grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
}

// startClient runs a client against addr until the test ends.
func startClient(t *testing.T, addr string, delta bool, h *recorder) *xdsclient.Client {
	t.Helper()
	c := xdsclient.New(xdsclient.Config{
		Dial:        dialer(addr),
		Node:        &corev3.Node{Id: nodeID, Cluster: "app.default"},
		Delta:       delta,
		Handler:     h,
		Logger:      slog.New(slog.DiscardHandler),
		BackoffBase: 20 * time.Millisecond,
		BackoffMax:  200 * time.Millisecond,
	})
	h.client = c
	c.SubscribeWildcard(xdstypes.Cluster)
	c.SubscribeWildcard(xdstypes.Listener)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != context.Canceled {
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return c
}

func status(c *xdsclient.Client, typeURL string) xdsclient.TypeStatus {
	for _, s := range c.Status() {
		if s.TypeURL == typeURL {
			return s
		}
	}
	return xdsclient.TypeStatus{}
}

func modes(t *testing.T, f func(t *testing.T, delta bool)) {
	t.Run("sotw", func(t *testing.T) { f(t, false) })
	t.Run("delta", func(t *testing.T) { f(t, true) })
}

var allTypes = []string{xdstypes.Cluster, xdstypes.ClusterLoadAssignment, xdstypes.Listener, xdstypes.RouteConfiguration}

// --- tests ---

// The client subscribes to CDS and LDS, follows their references to EDS and
// RDS from inside OnUpdate, and ACKs each type with the server's version.
func TestReceivesAllTypes(t *testing.T) {
	modes(t, func(t *testing.T, delta bool) {
		srv := newXDSServer(t, cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil), "127.0.0.1:0")
		srv.set(t, mesh{clusters: []string{"outbound|80||a"}, listeners: []string{"0.0.0.0_80"}}, "1")
		h := newRecorder()
		c := startClient(t, srv.addr, delta, h)

		eventually(t, "all four types", func() bool {
			return h.has(xdstypes.Cluster, "outbound|80||a") && h.has(xdstypes.ClusterLoadAssignment, "outbound|80||a") &&
				h.has(xdstypes.Listener, "0.0.0.0_80") && h.has(xdstypes.RouteConfiguration, "route-0.0.0.0_80")
		})
		eventually(t, "every type ACKed at version 1", func() bool {
			for _, ty := range allTypes {
				if st := status(c, ty); st.Version != "1" || st.Nonce == "" || !st.Connected {
					return false
				}
			}
			return true
		})
		if m := h.get(xdstypes.ClusterLoadAssignment, "outbound|80||a").Message; m.(*endpointv3.ClusterLoadAssignment).GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue() != 8000 {
			t.Errorf("endpoint decoded wrongly: %v", m)
		}

		// The server saw CDS first, then an ACK naming the nonce of each response.
		reqs := srv.requests()
		if reqs[0].typeURL() != xdstypes.Cluster {
			t.Errorf("first request is for %s, want CDS first", reqs[0].typeURL())
		}
		if delta {
			if reqs[0].delta.GetNode().GetId() != nodeID {
				t.Errorf("first request has node %v", reqs[0].delta.GetNode())
			}
		} else if reqs[0].sotw.GetNode().GetId() != nodeID {
			t.Errorf("first request has node %v", reqs[0].sotw.GetNode())
		}
		for _, ty := range allTypes {
			nonce := status(c, ty).Nonce
			eventually(t, "ACK of "+ty, func() bool {
				for _, r := range srv.requests() {
					if r.typeURL() == ty && r.nonce() == nonce && r.errorMessage() == "" {
						return r.delta != nil || r.sotw.GetVersionInfo() == "1"
					}
				}
				return false
			})
		}
		if !delta {
			for _, r := range reqs {
				if r.sotw.GetTypeUrl() == xdstypes.ClusterLoadAssignment && r.sotw.GetResponseNonce() == "" && !slices.Equal(r.sotw.GetResourceNames(), []string{"outbound|80||a"}) {
					t.Errorf("EDS subscription names %v", r.sotw.GetResourceNames())
				}
			}
		}
	})
}

// A new cluster and listener make the handler subscribe to more EDS and RDS
// names; the server answers them; dropping a cluster is seen as removed
// (delta) or absent from the full set (SotW).
func TestSubscriptionChanges(t *testing.T) {
	modes(t, func(t *testing.T, delta bool) {
		srv := newXDSServer(t, cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil), "127.0.0.1:0")
		srv.set(t, mesh{clusters: []string{"a"}, listeners: []string{"l1"}}, "1")
		h := newRecorder()
		c := startClient(t, srv.addr, delta, h)
		eventually(t, "version 1", func() bool { return h.has(xdstypes.RouteConfiguration, "route-l1") })

		srv.set(t, mesh{clusters: []string{"a", "b"}, listeners: []string{"l1", "l2"}}, "2")
		eventually(t, "EDS b and RDS route-l2", func() bool {
			return h.has(xdstypes.ClusterLoadAssignment, "a", "b") && h.has(xdstypes.RouteConfiguration, "route-l1", "route-l2")
		})
		if st := status(c, xdstypes.ClusterLoadAssignment); !slices.Equal(st.Names, []string{"a", "b"}) || st.Wildcard {
			t.Errorf("EDS status names %v wildcard %v, want [a b]", st.Names, st.Wildcard)
		}
		sawSub := false
		for _, r := range srv.requests() {
			if r.typeURL() != xdstypes.ClusterLoadAssignment {
				continue
			}
			if delta && slices.Equal(r.delta.GetResourceNamesSubscribe(), []string{"b"}) {
				sawSub = true
			}
			if !delta && slices.Equal(r.sotw.GetResourceNames(), []string{"a", "b"}) {
				sawSub = true
			}
		}
		if !sawSub {
			t.Error("server never saw the EDS subscription grow to include b")
		}

		srv.set(t, mesh{clusters: []string{"b"}, listeners: []string{"l2"}}, "3")
		eventually(t, "cluster a gone", func() bool {
			return slices.Equal(h.names(xdstypes.Cluster), []string{"b"}) && slices.Equal(h.names(xdstypes.Listener), []string{"l2"})
		})
		eventually(t, "EDS unsubscribed from a", func() bool {
			return slices.Equal(status(c, xdstypes.ClusterLoadAssignment).Names, []string{"b"})
		})
		if delta {
			removed := false
			for _, u := range h.allUpdates() {
				if u.typeURL == xdstypes.Cluster && slices.Contains(u.removed, "a") {
					removed = true
				}
			}
			if !removed {
				t.Error("delta update never listed cluster a in Removed")
			}
			eventually(t, "EDS unsubscribe a sent", func() bool {
				for _, r := range srv.requests() {
					if r.typeURL() == xdstypes.ClusterLoadAssignment && slices.Equal(r.delta.GetResourceNamesUnsubscribe(), []string{"a"}) {
						return true
					}
				}
				return false
			})
		}
	})
}

// A handler error NACKs with the previous good version and the error text in
// error_detail; the next good snapshot is ACKed and clears the NACK.
func TestHandlerErrorNACKs(t *testing.T) {
	modes(t, func(t *testing.T, delta bool) {
		srv := newXDSServer(t, cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil), "127.0.0.1:0")
		srv.set(t, mesh{clusters: []string{"a"}, listeners: []string{"l1"}}, "1")
		h := newRecorder()
		h.setReject(func(typeURL string, u *xdsclient.Update) error {
			for _, r := range u.Resources {
				if r.Name == "poison" {
					return fmt.Errorf("cluster %q: lb_policy: not supported", r.Name)
				}
			}
			return nil
		})
		c := startClient(t, srv.addr, delta, h)
		eventually(t, "CDS v1 ACKed", func() bool { return status(c, xdstypes.Cluster).Version == "1" })

		srv.set(t, mesh{clusters: []string{"a", "poison"}, listeners: []string{"l1"}}, "2")
		var nack seenRequest
		eventually(t, "NACK at the server", func() bool {
			for _, r := range srv.requests() {
				if r.typeURL() == xdstypes.Cluster && r.errorMessage() != "" {
					nack = r
					return true
				}
			}
			return false
		})
		if want := `cluster "poison": lb_policy: not supported`; nack.errorMessage() != want {
			t.Errorf("error_detail %q, want %q", nack.errorMessage(), want)
		}
		if !delta && nack.sotw.GetVersionInfo() != "1" {
			t.Errorf("NACK version_info %q, want the last good 1", nack.sotw.GetVersionInfo())
		}
		if nack.nonce() == "" {
			t.Error("NACK carries no response_nonce")
		}
		st := status(c, xdstypes.Cluster)
		if st.Version != "1" || !strings.Contains(st.LastNACK, "poison") || st.LastNACKAt.IsZero() {
			t.Errorf("status after NACK: %+v", st)
		}
		if h.has(xdstypes.Cluster, "poison") {
			t.Error("handler state took the rejected cluster")
		}

		h.setReject(nil)
		srv.set(t, mesh{clusters: []string{"a", "b"}, listeners: []string{"l1"}}, "3")
		eventually(t, "CDS v3 ACKed", func() bool {
			st := status(c, xdstypes.Cluster)
			return st.Version == "3" && st.LastNACK == "" && h.has(xdstypes.Cluster, "b")
		})
		if !delta {
			eventually(t, "ACK of v3 at the server", func() bool {
				for _, r := range srv.requests() {
					if r.typeURL() == xdstypes.Cluster && r.sotw.GetVersionInfo() == "3" && r.errorMessage() == "" && r.nonce() != "" {
						return true
					}
				}
				return false
			})
		}
	})
}

// A resource that fails its proto validation is NACKed by the client itself,
// naming it; the handler never sees that response.
func TestInvalidResourceNACKedByClient(t *testing.T) {
	modes(t, func(t *testing.T, delta bool) {
		srv := newXDSServer(t, cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil), "127.0.0.1:0")
		srv.set(t, mesh{clusters: []string{"a"}, listeners: []string{"l1"}}, "1")
		h := newRecorder()
		c := startClient(t, srv.addr, delta, h)
		eventually(t, "CDS v1 ACKed", func() bool { return status(c, xdstypes.Cluster).Version == "1" })
		before := 0
		for _, u := range h.allUpdates() {
			if u.typeURL == xdstypes.Cluster {
				before++
			}
		}

		bad := edsCluster("negative-timeout")
		bad.ConnectTimeout = durationpb.New(-time.Second)
		srv.set(t, mesh{clusters: []string{"a"}, listeners: []string{"l1"}, extra: []types.Resource{bad}}, "2")
		eventually(t, "client NACK", func() bool {
			return strings.Contains(status(c, xdstypes.Cluster).LastNACK, `Cluster "negative-timeout"`)
		})
		found := false
		for _, r := range srv.requests() {
			if r.typeURL() == xdstypes.Cluster && strings.Contains(r.errorMessage(), `Cluster "negative-timeout"`) && strings.Contains(r.errorMessage(), "ConnectTimeout") {
				found = true
			}
		}
		if !found {
			t.Error("server saw no NACK naming the cluster and its field")
		}
		after := 0
		for _, u := range h.allUpdates() {
			if u.typeURL == xdstypes.Cluster {
				after++
			}
		}
		if after != before {
			t.Errorf("handler saw %d CDS updates after the invalid one, want none", after-before)
		}
		if st := status(c, xdstypes.Cluster); st.Version != "1" {
			t.Errorf("CDS version %q after NACK, want 1", st.Version)
		}
	})
}

// The server goes away and comes back on the same port: the handler is not
// told anything in between (it keeps serving its config), and the client
// re-subscribes with the versions it holds.
func TestReconnectResubscribesWithVersions(t *testing.T) {
	modes(t, func(t *testing.T, delta bool) {
		cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
		srv := newXDSServer(t, cache, "127.0.0.1:0")
		addr := srv.addr
		srv.set(t, mesh{clusters: []string{"a"}, listeners: []string{"l1"}}, "1")
		h := newRecorder()
		c := startClient(t, addr, delta, h)
		eventually(t, "all ACKed at v1", func() bool {
			for _, ty := range allTypes {
				if status(c, ty).Version != "1" {
					return false
				}
			}
			return true
		})

		srv.srv.Stop()
		eventually(t, "client sees the stream gone", func() bool { return !status(c, xdstypes.Cluster).Connected })
		n := h.updateCount()
		// Several reconnect attempts fail while the server is away.
		time.Sleep(300 * time.Millisecond)
		if h.updateCount() != n {
			t.Error("handler was called while the server was away")
		}
		if !h.has(xdstypes.Cluster, "a") || !h.has(xdstypes.RouteConfiguration, "route-l1") {
			t.Error("handler lost state")
		}

		srv2 := newXDSServer(t, cache, addr)
		eventually(t, "reconnected", func() bool { return status(c, xdstypes.Cluster).Connected })
		eventually(t, "EDS and RDS resubscribed", func() bool {
			var eds, rds bool
			for _, r := range srv2.requests() {
				eds = eds || r.typeURL() == xdstypes.ClusterLoadAssignment
				rds = rds || r.typeURL() == xdstypes.RouteConfiguration
			}
			return eds && rds
		})
		reqs := srv2.requests()
		if reqs[0].typeURL() != xdstypes.Cluster {
			t.Errorf("first request after reconnect is %s, want CDS", reqs[0].typeURL())
		}
		firsts := map[string]seenRequest{}
		for _, r := range reqs {
			if _, ok := firsts[r.typeURL()]; !ok {
				firsts[r.typeURL()] = r
			}
		}
		if delta {
			if v := firsts[xdstypes.Cluster].delta.GetInitialResourceVersions(); v["a"] == "" {
				t.Errorf("CDS initial_resource_versions %v, want a's version", v)
			}
			if r := firsts[xdstypes.ClusterLoadAssignment].delta; !slices.Equal(r.GetResourceNamesSubscribe(), []string{"a"}) || r.GetInitialResourceVersions()["a"] == "" {
				t.Errorf("EDS resubscribe %v", r)
			}
		} else {
			for _, ty := range allTypes {
				r := firsts[ty].sotw
				if r.GetVersionInfo() != "1" || r.GetResponseNonce() != "" {
					t.Errorf("%s resubscribe version %q nonce %q, want 1 and none", ty, r.GetVersionInfo(), r.GetResponseNonce())
				}
			}
			if r := firsts[xdstypes.RouteConfiguration].sotw; !slices.Equal(r.GetResourceNames(), []string{"route-l1"}) {
				t.Errorf("RDS resubscribe names %v", r.GetResourceNames())
			}
		}

		srv2.set(t, mesh{clusters: []string{"a", "b"}, listeners: []string{"l1"}}, "2")
		eventually(t, "update after reconnect", func() bool {
			return h.has(xdstypes.ClusterLoadAssignment, "b") && status(c, xdstypes.Cluster).Version == "2"
		})
	})
}

// badServer is a hand-written ADS server that sends what go-control-plane
// never would: Anys of the wrong type and undecodable bytes.
type badServer struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	responses []*discoveryv3.DiscoveryResponse
	answers   chan *discoveryv3.DiscoveryRequest
}

func (b *badServer) StreamAggregatedResources(s discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	if _, err := s.Recv(); err != nil { // the CDS subscription
		return err
	}
	for _, resp := range b.responses {
		if err := s.Send(resp); err != nil {
			return err
		}
		for {
			req, err := s.Recv()
			if err != nil {
				return err
			}
			if req.GetTypeUrl() == resp.GetTypeUrl() && req.GetResponseNonce() == resp.GetNonce() {
				b.answers <- req
				break
			}
		}
	}
	<-s.Context().Done()
	return nil
}

func TestUndecodableResourcesNACKed(t *testing.T) {
	good := mustAny(t, edsCluster("good"))
	wrapped := mustAny(t, &discoveryv3.Resource{Name: "wrapped", Version: "w1", Resource: mustAny(t, edsCluster("wrapped"))})
	bs := &badServer{
		answers: make(chan *discoveryv3.DiscoveryRequest, 8),
		responses: []*discoveryv3.DiscoveryResponse{
			{TypeUrl: xdstypes.Cluster, VersionInfo: "1", Nonce: "n1", Resources: []*anypb.Any{good, wrapped}},
			{TypeUrl: xdstypes.Cluster, VersionInfo: "2", Nonce: "n2", Resources: []*anypb.Any{good, mustAny(t, &listenerv3.Listener{Name: "x"})}},
			{TypeUrl: xdstypes.Cluster, VersionInfo: "3", Nonce: "n3", Resources: []*anypb.Any{{TypeUrl: xdstypes.Cluster, Value: []byte{0x0a, 0xff}}}},
		},
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, bs)
	go gs.Serve(lis)
	defer gs.Stop()

	var mu sync.Mutex
	var calls []*xdsclient.Update
	c := xdsclient.New(xdsclient.Config{
		Dial:   dialer(lis.Addr().String()),
		Node:   &corev3.Node{Id: nodeID},
		Logger: slog.New(slog.DiscardHandler),
		Handler: xdsclient.HandlerFunc(func(typeURL string, u *xdsclient.Update) error {
			mu.Lock()
			calls = append(calls, u)
			mu.Unlock()
			return nil
		}),
	})
	c.SubscribeWildcard(xdstypes.Cluster)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	answer := func() *discoveryv3.DiscoveryRequest {
		select {
		case r := <-bs.answers:
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("no answer from the client")
			return nil
		}
	}
	if r := answer(); r.GetErrorDetail() != nil || r.GetVersionInfo() != "1" {
		t.Fatalf("response 1 not ACKed: %v", r)
	}
	r := answer()
	if r.GetVersionInfo() != "1" || !strings.Contains(r.GetErrorDetail().GetMessage(), "Cluster resources[1]") ||
		!strings.Contains(r.GetErrorDetail().GetMessage(), "envoy.config.listener.v3.Listener") {
		t.Errorf("wrong-type NACK: version %q detail %q", r.GetVersionInfo(), r.GetErrorDetail().GetMessage())
	}
	r = answer()
	if r.GetVersionInfo() != "1" || !strings.Contains(r.GetErrorDetail().GetMessage(), "Cluster resources[0]: decode") {
		t.Errorf("bad-bytes NACK: version %q detail %q", r.GetVersionInfo(), r.GetErrorDetail().GetMessage())
	}

	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 1 {
		t.Fatalf("handler called %d times, want once (only the good response)", len(calls))
	}
	u := calls[0]
	if !u.Full || u.Version != "1" || len(u.Resources) != 2 {
		t.Fatalf("update %+v", u)
	}
	if u.Resources[1].Name != "wrapped" || u.Resources[1].Version != "w1" || u.Resources[1].Message.(*clusterv3.Cluster).GetName() != "wrapped" {
		t.Errorf("wrapped Resource not unwrapped: %+v", u.Resources[1])
	}
}

// The proxy's xDS health, under Envoy's statistic names: connected state,
// and per type the updates attempted, accepted and rejected, the time of
// the last good one and a hash of its version; the state drops to 0 when
// the management server goes away.
func TestXDSHealthStats(t *testing.T) {
	srv := newXDSServer(t, cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil), "127.0.0.1:0")
	srv.set(t, mesh{clusters: []string{"a"}, listeners: []string{"l1"}}, "1")
	h := newRecorder()
	h.setReject(func(typeURL string, u *xdsclient.Update) error {
		for _, r := range u.Resources {
			if r.Name == "poison" {
				return fmt.Errorf("cluster %q: not supported", r.Name)
			}
		}
		return nil
	})
	st := stats.New()
	c := xdsclient.New(xdsclient.Config{
		Dial: dialer(srv.addr), Node: &corev3.Node{Id: nodeID, Cluster: "app.default"},
		Handler: h, Logger: slog.New(slog.DiscardHandler), Stats: st,
		BackoffBase: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
	})
	h.client = c
	c.SubscribeWildcard(xdstypes.Cluster)
	c.SubscribeWildcard(xdstypes.Listener)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)
	gauge := func(name string) int64 {
		g, _ := st.Lookup(name).(*stats.Gauge)
		if g == nil {
			t.Fatalf("no gauge %s", name)
		}
		return g.Value()
	}
	eventually(t, "CDS v1 accepted", func() bool { return st.CounterValue("cluster_manager.cds.update_success") == 1 })
	if gauge("control_plane.connected_state") != 1 {
		t.Error("control_plane.connected_state is not 1 while connected")
	}
	if st.CounterValue("listener_manager.lds.update_success") < 1 || gauge("cluster_manager.cds.update_time") == 0 {
		t.Error("LDS success or the CDS update time not recorded")
	}
	v1 := gauge("cluster_manager.cds.version")

	srv.set(t, mesh{clusters: []string{"a", "poison"}, listeners: []string{"l1"}}, "2")
	eventually(t, "CDS v2 rejected", func() bool { return st.CounterValue("cluster_manager.cds.update_rejected") >= 1 })
	if got := gauge("cluster_manager.cds.version"); got != v1 {
		t.Errorf("cds.version changed on a rejected update: %d → %d", v1, got)
	}
	srv.set(t, mesh{clusters: []string{"a", "b"}, listeners: []string{"l1"}}, "3")
	eventually(t, "CDS v3 accepted", func() bool { return st.CounterValue("cluster_manager.cds.update_success") == 2 })
	if got := gauge("cluster_manager.cds.version"); got == v1 {
		t.Error("cds.version did not change with the accepted version")
	}
	if a, s, r := st.CounterValue("cluster_manager.cds.update_attempt"), st.CounterValue("cluster_manager.cds.update_success"), st.CounterValue("cluster_manager.cds.update_rejected"); a != s+r {
		t.Errorf("cds attempts %d != successes %d + rejections %d", a, s, r)
	}

	srv.srv.Stop()
	eventually(t, "connected_state 0 after the server stopped", func() bool { return gauge("control_plane.connected_state") == 0 })
}
