package xds_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"

	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// scopeNS affects only proxies in one namespace.
type scopeNS string

func (s scopeNS) Affected(p *xds.Proxy, _ *xds.PushRequest) bool { return p.Namespace == string(s) }

// subscribeCDSEDS opens a SotW stream for pod.ns watching CDS (wildcard)
// and EDS (one name), and ACKs the initial responses.
func subscribeCDSEDS(t *testing.T, s *testServer, pod, ns, ip string) *sotwClient {
	t.Helper()
	c := newSotw(t, dial(t, s.addr), true)
	c.send(&discoveryv3.DiscoveryRequest{Node: node(t, pod, ns, ip), TypeUrl: xds.ClusterType})
	c.ack(c.recv())
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: xds.EndpointType, ResourceNames: []string{"reviews"}})
	c.ack(c.recv(), "reviews")
	return c
}

// An endpoint change pushes EDS alone, and only to the proxies the scope
// says it affects, through the short endpoint debounce window: the 10s
// config window would outlast the clients' 5s wait.
func TestEndpointPushOnlyAffected(t *testing.T) {
	gen := newFakeGen()
	gen.set(xds.ClusterType, cluster("reviews"))
	gen.set(xds.EndpointType, cla("reviews", "10.1.0.1"))
	s := startServer(t, xds.Options{Generator: gen, Scope: scopeNS("bookinfo"), DebounceAfter: 10 * time.Second})
	var in, out []*sotwClient
	for i := range 3 {
		in = append(in, subscribeCDSEDS(t, s, fmt.Sprintf("productpage-%d", i), "bookinfo", fmt.Sprintf("10.0.0.%d", i+1)))
	}
	for i := range 2 {
		out = append(out, subscribeCDSEDS(t, s, fmt.Sprintf("sleep-%d", i), "other", fmt.Sprintf("10.0.1.%d", i+1)))
	}
	// A push is counted just after it is sent, so the client may see it
	// first: wait for the 5 initial responses of each type to be counted.
	eventually(t, "initial pushes counted", func() bool {
		return metric(t, s.Server, "pilot_xds_pushes", "type=cds") == 5 && metric(t, s.Server, "pilot_xds_pushes", "type=eds") == 5
	})

	gen.set(xds.EndpointType, cla("reviews", "10.1.0.1", "10.1.0.2"))
	s.Push(&xds.PushRequest{Types: map[string]bool{xds.EndpointType: true}, Reason: "endpoint"})
	for i, c := range in {
		r := c.recv()
		if r.GetTypeUrl() != xds.EndpointType {
			t.Fatalf("affected proxy got %s, want EDS only", r.GetTypeUrl())
		}
		c.ack(r, "reviews")
		eventually(t, "EDS push ACKed", func() bool {
			ts, _ := typeStatus(s.Server, fmt.Sprintf("productpage-%d.bookinfo", i), xds.EndpointType)
			return ts.VersionAcked == r.GetVersionInfo()
		})
	}
	for _, c := range in {
		c.noResponse(20 * time.Millisecond)
	}
	for _, c := range out {
		c.noResponse(20 * time.Millisecond)
	}
	if got := metric(t, s.Server, "pilot_xds_pushes", "type=eds") - 5; got != 3 {
		t.Errorf("EDS pushes: %v, want 3 (the affected proxies)", got)
	}
	if got := metric(t, s.Server, "pilot_xds_pushes", "type=cds") - 5; got != 0 {
		t.Errorf("CDS pushes: %v, want 0", got)
	}
	if got := metric(t, s.Server, "pilot_push_triggers", "type=endpoint"); got != 1 {
		t.Errorf("pilot_push_triggers{type=endpoint} = %v, want 1", got)
	}
	if got := metric(t, s.Server, "pilot_xds", "version=1.28.0"); got != 5 {
		t.Errorf("pilot_xds{version=1.28.0} = %v, want 5 connected", got)
	}
}

// Ten changes in quick succession make one push carrying all ten configs.
func TestDebounceMerges(t *testing.T) {
	gen := newFakeGen()
	gen.set(xds.ClusterType, cluster("reviews"))
	s := startServer(t, xds.Options{Generator: gen, DebounceAfter: 100 * time.Millisecond})
	c := newSotw(t, dial(t, s.addr), true)
	c.send(&discoveryv3.DiscoveryRequest{Node: node(t, "reviews-v1-abc", "default", "10.0.0.1"), TypeUrl: xds.ClusterType})
	c.ack(c.recv())
	before := gen.callsFor(xds.ClusterType)

	for i := range 10 {
		s.Push(&xds.PushRequest{Full: true, Reason: "config", ConfigsUpdated: []xds.ConfigKey{
			{Kind: "VirtualService", Namespace: "default", Name: fmt.Sprintf("vs-%d", i), ResourceVersion: "1"}}})
		time.Sleep(5 * time.Millisecond)
	}
	r := c.recv()
	c.ack(r)
	c.noResponse(250 * time.Millisecond)
	if got := gen.callsFor(xds.ClusterType) - before; got != 1 {
		t.Errorf("generator called %d times for 10 rapid changes, want 1", got)
	}
	if got := metric(t, s.Server, "pilot_debounce_time", ""); got != 1 {
		t.Errorf("pilot_debounce_time samples %v, want 1 merged push", got)
	}
	if got := metric(t, s.Server, "pilot_push_triggers", "type=config"); got != 10 {
		t.Errorf("pilot_push_triggers{type=config} = %v, want 10", got)
	}
	ts, _ := typeStatus(s.Server, "reviews-v1-abc.default", xds.ClusterType)
	if len(ts.SentConfigs) != 10 {
		t.Errorf("last push carried %d configs, want all 10: %v", len(ts.SentConfigs), ts.SentConfigs)
	}
	eventually(t, "all 10 configs ACKed", func() bool {
		for i := range 10 {
			if traceAcked(s.Server, xds.ConfigKey{Kind: "VirtualService", Namespace: "default", Name: fmt.Sprintf("vs-%d", i), ResourceVersion: "1"}) != 1 {
				return false
			}
		}
		return true
	})
	if got := metric(t, s.Server, "pilot_proxy_convergence_time", ""); got != 1 {
		t.Errorf("pilot_proxy_convergence_time samples %v, want 1", got)
	}
}

// A proxy that stops reading (its stream's flow-control window full) holds
// up nobody: 50 others receive every push, even with only 2 generation
// slots, while the stuck one stays behind.
func TestSlowProxyDoesNotBlockOthers(t *testing.T) {
	gen := newFakeGen()
	gen.set(xds.ClusterType, cluster("small"))
	big := strings.Repeat("x", 1<<20)
	var version sync.Map // proxy-independent content version, bumped per push
	version.Store("v", "0")
	gen.per = func(p *xds.Proxy, typeURL string) []xds.Resource {
		v, _ := version.Load("v")
		if strings.HasPrefix(p.ID, "slow") {
			return []xds.Resource{{Name: "big", Message: &clusterv3.Cluster{Name: "big", AltStatName: big + v.(string)}}}
		}
		return []xds.Resource{clusterV("small", v.(string))}
	}
	s := startServer(t, xds.Options{Generator: gen, Concurrency: 2, DebounceAfter: time.Millisecond})

	slow := newSotw(t, dial(t, s.addr), false)
	slow.send(&discoveryv3.DiscoveryRequest{Node: node(t, "slow", "default", "10.0.9.1"), TypeUrl: xds.ClusterType})
	var fast []*sotwClient
	for i := range 50 {
		c := newSotw(t, dial(t, s.addr), true)
		c.send(&discoveryv3.DiscoveryRequest{Node: node(t, fmt.Sprintf("fast-%d", i), "default", fmt.Sprintf("10.0.2.%d", i+1)), TypeUrl: xds.ClusterType})
		c.ack(c.recv())
		fast = append(fast, c)
	}
	var last string
	for round := 1; round <= 3; round++ {
		version.Store("v", fmt.Sprint(round))
		start := time.Now()
		s.Push(&xds.PushRequest{Full: true, Reason: "config"})
		for _, c := range fast {
			r := c.recv()
			c.ack(r)
			last = r.GetVersionInfo()
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("round %d: 50 fast proxies took %v", round, d)
		}
	}
	ts, _ := typeStatus(s.Server, "slow.default", xds.ClusterType)
	if ts.VersionSent == last {
		t.Errorf("slow proxy was sent the latest version %q: it never blocked, so the test proves nothing", last)
	}
	slow.cancel()
}

// 200 concurrent streams, half SotW and half delta, each get their
// config, ACK it, and all receive and ACK a push.
func TestManyStreams(t *testing.T) {
	gen := newFakeGen()
	gen.set(xds.ClusterType, clusterV("reviews", "1"))
	s := startServer(t, xds.Options{Generator: gen, DebounceAfter: time.Millisecond})
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errs := make(chan error, 200)
	ready := make(chan struct{}, 200)
	pushed := make(chan struct{})
	for i := range 200 {
		cc := dial(t, s.addr)
		nd := node(t, fmt.Sprintf("pod-%d", i), "default", fmt.Sprintf("10.0.%d.%d", i/250, i%250+1))
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- runClient(ctx, cc, nd, i%2 == 1, ready, pushed)
		}()
	}
	for range 200 {
		select {
		case <-ready:
		case <-ctx.Done():
			t.Fatal("not every stream got its initial config within 20s")
		}
	}
	gen.set(xds.ClusterType, clusterV("reviews", "2"))
	s.Push(&xds.PushRequest{Full: true, Reason: "config", ConfigsUpdated: []xds.ConfigKey{withVersion(vsReviews, "2")}})
	close(pushed)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	eventually(t, "200 ACKs of the push", func() bool { return traceAcked(s.Server, withVersion(vsReviews, "2")) == 200 })
	if got := len(s.Status()); got != 200 {
		t.Errorf("%d connections in status, want 200", got)
	}
}

// runClient subscribes to CDS, ACKs, signals ready, then waits for the
// push and ACKs it.
func runClient(ctx context.Context, cc *grpc.ClientConn, nd *corev3.Node, delta bool, ready chan<- struct{}, pushed <-chan struct{}) error {
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(cc)
	if delta {
		st, err := ads.DeltaAggregatedResources(ctx)
		if err != nil {
			return err
		}
		if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: nd, TypeUrl: xds.ClusterType}); err != nil {
			return err
		}
		for i := range 2 {
			r, err := st.Recv()
			if err != nil {
				return fmt.Errorf("%s: response %d: %w", nd.GetId(), i, err)
			}
			if len(r.GetResources()) != 1 {
				return fmt.Errorf("%s: response %d has %d resources, want 1", nd.GetId(), i, len(r.GetResources()))
			}
			if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.ClusterType, ResponseNonce: r.GetNonce()}); err != nil {
				return err
			}
			if i == 0 {
				ready <- struct{}{}
				<-pushed
			}
		}
		return nil
	}
	st, err := ads.StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: nd, TypeUrl: xds.ClusterType}); err != nil {
		return err
	}
	for i := range 2 {
		r, err := st.Recv()
		if err != nil {
			return fmt.Errorf("%s: response %d: %w", nd.GetId(), i, err)
		}
		if len(r.GetResources()) != 1 {
			return fmt.Errorf("%s: response %d has %d resources, want 1", nd.GetId(), i, len(r.GetResources()))
		}
		if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: xds.ClusterType, VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()}); err != nil {
			return err
		}
		if i == 0 {
			ready <- struct{}{}
			<-pushed
		}
	}
	return nil
}

// A generator failure sends nothing (the proxy keeps its config), is
// counted as a build error and logged with the proxy; the next good push
// goes out.
func TestGeneratorErrorKeepsProxyConfig(t *testing.T) {
	gen := newFakeGen()
	gen.set(xds.ClusterType, cluster("reviews"))
	s := startServer(t, xds.Options{Generator: gen, DebounceAfter: time.Millisecond})
	c := newSotw(t, dial(t, s.addr), true)
	c.send(&discoveryv3.DiscoveryRequest{Node: node(t, "reviews-v1-abc", "default", "10.0.0.1"), TypeUrl: xds.ClusterType})
	r := c.recv()
	c.ack(r)

	gen.mu.Lock()
	gen.err = fmt.Errorf("DestinationRule default/reviews: subset v3 has no matching workloads")
	gen.mu.Unlock()
	s.Push(&xds.PushRequest{Full: true, Reason: "config"})
	eventually(t, "build error counted", func() bool { return metric(t, s.Server, "pilot_xds_pushes", "type=cds_builderr") == 1 })
	c.noResponse(100 * time.Millisecond)
	if log := s.log.String(); !strings.Contains(log, `msg="generating resources failed; the proxy keeps its previous config" component=xds proxy=reviews-v1-abc.default type=cds err="DestinationRule default/reviews: subset v3 has no matching workloads"`) {
		t.Errorf("generator error not logged:\n%s", log)
	}
	ts, _ := typeStatus(s.Server, "reviews-v1-abc.default", xds.ClusterType)
	if ts.VersionSent != r.GetVersionInfo() || ts.VersionAcked != r.GetVersionInfo() {
		t.Errorf("after a failed build: sent %q acked %q, want both %q", ts.VersionSent, ts.VersionAcked, r.GetVersionInfo())
	}

	gen.mu.Lock()
	gen.err = nil
	gen.mu.Unlock()
	s.Push(&xds.PushRequest{Full: true, Reason: "config"})
	if got := names(t, c.recv()); len(got) != 1 || got[0] != "reviews" {
		t.Errorf("push after recovery: %v", got)
	}
}

// With a SendTimeout, a proxy that stops reading is disconnected (it will
// reconnect and resync) and the failure is counted; without one it would
// stay connected, stuck.
func TestSendTimeoutDisconnectsStuckProxy(t *testing.T) {
	gen := newFakeGen()
	big := strings.Repeat("x", 1<<20)
	gen.set(xds.ClusterType, xds.Resource{Name: "big", Message: &clusterv3.Cluster{Name: "big", AltStatName: big}})
	s := startServer(t, xds.Options{Generator: gen, SendTimeout: 200 * time.Millisecond})
	slow := newSotw(t, dial(t, s.addr), false)
	slow.send(&discoveryv3.DiscoveryRequest{Node: node(t, "slow", "default", "10.0.9.1"), TypeUrl: xds.ClusterType})
	// gRPC takes one message whatever its size; the unread megabyte then
	// holds the flow-control window shut, so the next send blocks.
	eventually(t, "first response taken", func() bool { return metric(t, s.Server, "pilot_xds_pushes", "type=cds") == 1 })
	s.Push(&xds.PushRequest{Full: true, Reason: "config"})
	eventually(t, "stuck proxy disconnected", func() bool {
		return len(s.Status()) == 0 && metric(t, s.Server, "pilot_xds_pushes", "type=cds_senderr") == 1
	})
	if log := s.log.String(); !strings.Contains(log, `msg="sending to proxy failed; closing its stream" component=xds proxy=slow.default conn=slow.default-1 type=cds err="rpc error: code = DeadlineExceeded desc = proxy did not take a response within 200ms (SendTimeout); disconnecting it so it reconnects and resyncs"`) {
		t.Errorf("disconnect not logged:\n%s", log)
	}
	if got := metric(t, s.Server, "pilot_xds_pushes", "type=cds"); got != 1 {
		t.Errorf("pilot_xds_pushes{type=cds} = %v, want 1: the push was not delivered", got)
	}
}

// Requests merged in one debounce window push the union of their types,
// in make-before-break order (clusters before endpoints), and no other type.
func TestMergedTypesInOrder(t *testing.T) {
	gen := newFakeGen()
	gen.set(xds.ClusterType, cluster("reviews"))
	gen.set(xds.EndpointType, cla("reviews", "10.1.0.1"))
	gen.set(xds.ListenerType, xds.Resource{Name: "0.0.0.0_9080", Message: &listenerv3.Listener{Name: "0.0.0.0_9080"}})
	s := startServer(t, xds.Options{Generator: gen, DebounceAfter: 50 * time.Millisecond})
	c := subscribeCDSEDS(t, s, "productpage-v1-x", "default", "10.0.0.1")
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: xds.ListenerType})
	c.ack(c.recv())

	s.Push(&xds.PushRequest{Types: map[string]bool{xds.EndpointType: true}, Reason: "endpoint"})
	s.Push(&xds.PushRequest{Full: true, Types: map[string]bool{xds.ClusterType: true}, Reason: "config"})
	first, second := c.recv(), c.recv()
	if first.GetTypeUrl() != xds.ClusterType || second.GetTypeUrl() != xds.EndpointType {
		t.Fatalf("pushed %s then %s, want CDS then EDS", first.GetTypeUrl(), second.GetTypeUrl())
	}
	if first.GetVersionInfo() != second.GetVersionInfo() {
		t.Errorf("one merged push carried versions %q and %q", first.GetVersionInfo(), second.GetVersionInfo())
	}
	c.noResponse(100 * time.Millisecond)
}

// A push with Proxies reaches only the proxies it accepts; requests merged
// by the debounce reach the proxies either accepts, and one without
// Proxies makes the merged push reach every proxy.
func TestPushReachesOnlyAcceptedProxies(t *testing.T) {
	gen := newFakeGen()
	gen.set(xds.ClusterType, cluster("reviews"))
	s := startServer(t, xds.Options{Generator: gen, DebounceAfter: 50 * time.Millisecond})
	clients := map[string]*sotwClient{}
	for i, ns := range []string{"a", "b", "c"} {
		c := newSotw(t, dial(t, s.addr), true)
		c.send(&discoveryv3.DiscoveryRequest{Node: node(t, "app-"+ns, ns, fmt.Sprintf("10.0.0.%d", i+1)), TypeUrl: xds.ClusterType})
		c.ack(c.recv())
		clients[ns] = c
	}
	inNS := func(ns string) func(*xds.Proxy) bool { return func(p *xds.Proxy) bool { return p.Namespace == ns } }
	for _, tc := range []struct {
		name    string
		reqs    []func(*xds.Proxy) bool
		reached []string
	}{
		{"one namespace", []func(*xds.Proxy) bool{inNS("a")}, []string{"a"}},
		{"two merged", []func(*xds.Proxy) bool{inNS("a"), inNS("b")}, []string{"a", "b"}},
		{"merged with an unscoped one", []func(*xds.Proxy) bool{inNS("a"), nil}, []string{"a", "b", "c"}},
	} {
		gen.set(xds.ClusterType, cluster("reviews"), cluster(strings.ReplaceAll(tc.name, " ", "-")))
		for _, f := range tc.reqs {
			s.Push(&xds.PushRequest{Full: true, Types: map[string]bool{xds.ClusterType: true}, Reason: "config", Proxies: f})
		}
		for _, ns := range []string{"a", "b", "c"} {
			if slices.Contains(tc.reached, ns) {
				clients[ns].ack(clients[ns].recv())
			} else {
				clients[ns].noResponse(300 * time.Millisecond)
			}
		}
	}
}
