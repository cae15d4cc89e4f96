package xds_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// fakeGen serves fixed resources per type, optionally per proxy, and
// counts its calls.
type fakeGen struct {
	mu    sync.Mutex
	res   map[string][]xds.Resource
	per   func(p *xds.Proxy, typeURL string) []xds.Resource // overrides res when non-nil result
	calls map[string]int
	total atomic.Int64
	err   error // returned by every call when set
}

func newFakeGen() *fakeGen {
	return &fakeGen{res: map[string][]xds.Resource{}, calls: map[string]int{}}
}

func (g *fakeGen) set(typeURL string, rs ...xds.Resource) {
	g.mu.Lock()
	g.res[typeURL] = rs
	g.mu.Unlock()
}

func (g *fakeGen) Generate(p *xds.Proxy, typeURL string, names []string, req *xds.PushRequest) ([]xds.Resource, error) {
	g.total.Add(1)
	g.mu.Lock()
	g.calls[typeURL]++
	rs := g.res[typeURL]
	per, err := g.per, g.err
	g.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if per != nil {
		if r := per(p, typeURL); r != nil {
			return r, nil
		}
	}
	return rs, nil
}

func (g *fakeGen) callsFor(typeURL string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls[typeURL]
}

func cluster(name string) xds.Resource {
	return xds.Resource{Name: name, Message: &clusterv3.Cluster{Name: name}}
}

// clusterV is a cluster whose content differs by version, so its hash does.
func clusterV(name, version string) xds.Resource {
	return xds.Resource{Name: name, Message: &clusterv3.Cluster{Name: name, AltStatName: version}}
}

func cla(name string, ips ...string) xds.Resource {
	var eps []*endpointv3.LbEndpoint
	for _, ip := range ips {
		eps = append(eps, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 9080}}}}}}})
	}
	return xds.Resource{Name: name, Message: &endpointv3.ClusterLoadAssignment{
		ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: eps}}}}
}

// testServer is an ADS server on 127.0.0.1 with its push loop running.
type testServer struct {
	*xds.Server
	addr string
	log  *syncBuffer
}

// syncBuffer collects the server's log for assertions.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startServer(t testing.TB, opts xds.Options) *testServer {
	t.Helper()
	logs := &syncBuffer{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	s := xds.New(opts)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(xds.GRPCServerOptions()...)
	s.Register(g)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(func() {
		cancel()
		<-done
		g.Stop()
	})
	return &testServer{Server: s, addr: lis.Addr().String(), log: logs}
}

func dial(t testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// node is an Envoy node as Istio's pilot-agent sends it.
func node(t testing.TB, pod, ns, ip string) *corev3.Node {
	t.Helper()
	md, err := structpb.NewStruct(map[string]any{
		"NAMESPACE":       ns,
		"SERVICE_ACCOUNT": "bookinfo-" + pod,
		"INSTANCE_IPS":    ip,
		"WORKLOAD_NAME":   pod,
		"ISTIO_VERSION":   "1.28.0",
		"CLUSTER_ID":      "Kubernetes",
		"LABELS":          map[string]any{"app": pod, "version": "v1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.Node{Id: fmt.Sprintf("sidecar~%s~%s.%s~%s.svc.cluster.local", ip, pod, ns, ns), Metadata: md}
}

// sotwClient is a raw SotW ADS stream whose responses arrive on a channel.
type sotwClient struct {
	t      testing.TB
	stream grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	resps  chan *discoveryv3.DiscoveryResponse
	cancel context.CancelFunc
}

func newSotw(t testing.TB, cc *grpc.ClientConn, read bool) *sotwClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &sotwClient{t: t, stream: st, resps: make(chan *discoveryv3.DiscoveryResponse, 100), cancel: cancel}
	if read {
		go func() {
			for {
				r, err := st.Recv()
				if err != nil {
					close(c.resps)
					return
				}
				c.resps <- r
			}
		}()
	}
	return c
}

func (c *sotwClient) send(r *discoveryv3.DiscoveryRequest) {
	c.t.Helper()
	if err := c.stream.Send(r); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *sotwClient) recv() *discoveryv3.DiscoveryResponse {
	c.t.Helper()
	select {
	case r, ok := <-c.resps:
		if !ok {
			c.t.Fatal("stream closed")
		}
		return r
	case <-time.After(5 * time.Second):
		c.t.Fatal("no response within 5s")
	}
	return nil
}

func (c *sotwClient) noResponse(d time.Duration) {
	c.t.Helper()
	select {
	case r := <-c.resps:
		c.t.Fatalf("unexpected response: type %s version %s with %d resources", r.GetTypeUrl(), r.GetVersionInfo(), len(r.GetResources()))
	case <-time.After(d):
	}
}

// ack acknowledges r, keeping names as the subscription.
func (c *sotwClient) ack(r *discoveryv3.DiscoveryResponse, names ...string) {
	c.t.Helper()
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce(), ResourceNames: names})
}

// names decodes a SotW response's resource names.
func names(t testing.TB, r *discoveryv3.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, a := range r.GetResources() {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, resourceName(m))
	}
	return out
}

func resourceName(m proto.Message) string {
	switch m := m.(type) {
	case *clusterv3.Cluster:
		return m.GetName()
	case *endpointv3.ClusterLoadAssignment:
		return m.GetClusterName()
	}
	return fmt.Sprintf("<%T>", m)
}

// deltaClient is a raw delta ADS stream.
type deltaClient struct {
	t      testing.TB
	stream grpc.BidiStreamingClient[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]
	resps  chan *discoveryv3.DeltaDiscoveryResponse
}

func newDelta(t testing.TB, cc *grpc.ClientConn) *deltaClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &deltaClient{t: t, stream: st, resps: make(chan *discoveryv3.DeltaDiscoveryResponse, 100)}
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				close(c.resps)
				return
			}
			c.resps <- r
		}
	}()
	return c
}

func (c *deltaClient) send(r *discoveryv3.DeltaDiscoveryRequest) {
	c.t.Helper()
	if err := c.stream.Send(r); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *deltaClient) recv() *discoveryv3.DeltaDiscoveryResponse {
	c.t.Helper()
	select {
	case r, ok := <-c.resps:
		if !ok {
			c.t.Fatal("stream closed")
		}
		return r
	case <-time.After(5 * time.Second):
		c.t.Fatal("no response within 5s")
	}
	return nil
}

func (c *deltaClient) noResponse(d time.Duration) {
	c.t.Helper()
	select {
	case r := <-c.resps:
		c.t.Fatalf("unexpected response: type %s with %d resources, removed %v", r.GetTypeUrl(), len(r.GetResources()), r.GetRemovedResources())
	case <-time.After(d):
	}
}

// deltaNames lists a delta response's resource names and versions.
func deltaNames(r *discoveryv3.DeltaDiscoveryResponse) (names []string, versions map[string]string) {
	versions = map[string]string{}
	for _, res := range r.GetResources() {
		names = append(names, res.GetName())
		versions[res.GetName()] = res.GetVersion()
	}
	return names, versions
}

// metric reads one sample of a metric from the server's registry: a
// counter's or gauge's value, or a histogram's sample count. labels is
// "k=v,k=v" or "".
func metric(t testing.TB, s *xds.Server, name, labels string) float64 {
	t.Helper()
	fams, err := s.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if labelString(m) != labels {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

func labelString(m *dto.Metric) string {
	var parts []string
	for _, l := range m.GetLabel() {
		parts = append(parts, l.GetName()+"="+l.GetValue())
	}
	return strings.Join(parts, ",")
}

// eventually polls cond every 5ms for up to 5s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("timed out after 5s waiting for %s", what)
}

// typeStatus finds the status of typeURL on the connection of proxyID.
func typeStatus(s *xds.Server, proxyID, typeURL string) (xds.TypeStatus, bool) {
	for _, ps := range s.Status() {
		if ps.ProxyID != proxyID {
			continue
		}
		for _, ts := range ps.Types {
			if ts.TypeURL == typeURL {
				return ts, true
			}
		}
	}
	return xds.TypeStatus{}, false
}
