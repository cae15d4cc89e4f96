package xds_test

import (
	"slices"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"

	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// Delta: the first wildcard request gets everything with per-resource
// versions; a push sends only resources whose bytes changed and names
// that disappeared; ACK and NACK are recorded by nonce.
func TestDeltaWildcard(t *testing.T) {
	gen := newFakeGen()
	gen.set(xds.ClusterType, clusterV("a", "1"), clusterV("b", "1"))
	s := startServer(t, xds.Options{Generator: gen, DebounceAfter: 10 * time.Millisecond})
	c := newDelta(t, dial(t, s.addr))

	c.send(&discoveryv3.DeltaDiscoveryRequest{Node: node(t, "reviews-v1-abc", "default", "10.0.0.1"), TypeUrl: xds.ClusterType})
	r := c.recv()
	got, v1 := deltaNames(r)
	if !slices.Equal(got, []string{"a", "b"}) || len(r.GetRemovedResources()) != 0 {
		t.Fatalf("initial delta: %v removed %v", got, r.GetRemovedResources())
	}
	if v1["a"] == "" || v1["a"] == v1["b"] {
		t.Fatalf("per-resource versions %v: want distinct content hashes", v1)
	}
	c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.ClusterType, ResponseNonce: r.GetNonce()})
	eventually(t, "delta ACK", func() bool {
		ts, _ := typeStatus(s.Server, "reviews-v1-abc.default", xds.ClusterType)
		return ts.NonceAcked == r.GetNonce() && ts.VersionAcked == r.GetSystemVersionInfo()
	})

	// a unchanged, b changed, c new.
	gen.set(xds.ClusterType, clusterV("a", "1"), clusterV("b", "2"), clusterV("c", "1"))
	s.Push(&xds.PushRequest{Full: true, Reason: "config"})
	r2 := c.recv()
	got, v2 := deltaNames(r2)
	if !slices.Equal(got, []string{"b", "c"}) || len(r2.GetRemovedResources()) != 0 {
		t.Fatalf("delta push: %v removed %v, want [b c] and nothing removed", got, r2.GetRemovedResources())
	}
	if v2["b"] == v1["b"] {
		t.Errorf("b changed but kept version %q", v2["b"])
	}
	c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.ClusterType, ResponseNonce: r2.GetNonce()})

	// a removed.
	gen.set(xds.ClusterType, clusterV("b", "2"), clusterV("c", "1"))
	s.Push(&xds.PushRequest{Full: true, Reason: "config"})
	r3 := c.recv()
	if got, _ := deltaNames(r3); len(got) != 0 || !slices.Equal(r3.GetRemovedResources(), []string{"a"}) {
		t.Fatalf("delta removal: resources %v removed %v, want none and [a]", got, r3.GetRemovedResources())
	}
	c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.ClusterType, ResponseNonce: r3.GetNonce(),
		ErrorDetail: &status.Status{Code: 3, Message: "removing cluster a: still referenced"}})
	eventually(t, "delta NACK", func() bool {
		ts, _ := typeStatus(s.Server, "reviews-v1-abc.default", xds.ClusterType)
		return ts.LastNACK == "removing cluster a: still referenced"
	})
	ts, _ := typeStatus(s.Server, "reviews-v1-abc.default", xds.ClusterType)
	if ts.VersionAcked != r2.GetSystemVersionInfo() {
		t.Errorf("after NACK acked version %q, want %q", ts.VersionAcked, r2.GetSystemVersionInfo())
	}
	if got := metric(t, s.Server, "pilot_total_xds_rejects", "type=cds"); got != 1 {
		t.Errorf("pilot_total_xds_rejects{type=cds} = %v, want 1", got)
	}

	// A push that changes nothing sends nothing.
	s.Push(&xds.PushRequest{Full: true, Reason: "config"})
	c.noResponse(100 * time.Millisecond)

	// A reconnecting proxy that declares what it holds gets only the rest.
	c2 := newDelta(t, dial(t, s.addr))
	c2.send(&discoveryv3.DeltaDiscoveryRequest{Node: node(t, "reviews-v1-abc", "default", "10.0.0.1"), TypeUrl: xds.ClusterType,
		InitialResourceVersions: map[string]string{"b": v2["b"], "c": "stale", "gone": "x"}})
	r4 := c2.recv()
	if got, _ := deltaNames(r4); !slices.Equal(got, []string{"c"}) || !slices.Equal(r4.GetRemovedResources(), []string{"gone"}) {
		t.Errorf("reconnect: resources %v removed %v, want [c] and [gone]", got, r4.GetRemovedResources())
	}
}

// Delta named subscriptions: subscribing returns just the new names,
// unsubscribing returns nothing, and pushes cover the current set.
func TestDeltaSubscribe(t *testing.T) {
	gen := newFakeGen()
	gen.set(xds.EndpointType, cla("x", "10.1.0.1"), cla("y", "10.1.0.2"), cla("z", "10.1.0.3"))
	s := startServer(t, xds.Options{Generator: gen, DebounceAfter: 10 * time.Millisecond})
	c := newDelta(t, dial(t, s.addr))

	c.send(&discoveryv3.DeltaDiscoveryRequest{Node: node(t, "ratings-v1-q", "default", "10.0.0.3"), TypeUrl: xds.EndpointType,
		ResourceNamesSubscribe: []string{"x"}})
	r := c.recv()
	if got, _ := deltaNames(r); !slices.Equal(got, []string{"x"}) {
		t.Fatalf("subscribe x: %v", got)
	}
	c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.EndpointType, ResponseNonce: r.GetNonce(), ResourceNamesSubscribe: []string{"y"}})
	r2 := c.recv()
	if got, _ := deltaNames(r2); !slices.Equal(got, []string{"y"}) {
		t.Fatalf("subscribe y: %v, want just y", got)
	}
	c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.EndpointType, ResponseNonce: r2.GetNonce(), ResourceNamesUnsubscribe: []string{"x"}})
	c.noResponse(50 * time.Millisecond)

	gen.set(xds.EndpointType, cla("x", "10.1.0.9"), cla("y", "10.1.0.9"), cla("z", "10.1.0.9"))
	s.Push(&xds.PushRequest{Types: map[string]bool{xds.EndpointType: true}, Reason: "endpoint"})
	r3 := c.recv()
	if got, _ := deltaNames(r3); !slices.Equal(got, []string{"y"}) || len(r3.GetRemovedResources()) != 0 {
		t.Errorf("push after unsubscribing x: %v removed %v, want [y]", got, r3.GetRemovedResources())
	}
	ts, _ := typeStatus(s.Server, "ratings-v1-q.default", xds.EndpointType)
	if !slices.Equal(ts.Names, []string{"y"}) || ts.Wildcard {
		t.Errorf("subscription %v wildcard %v, want [y]", ts.Names, ts.Wildcard)
	}

	// Subscribing again to a name held is a request to resend it.
	c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.EndpointType, ResponseNonce: r3.GetNonce(), ResourceNamesSubscribe: []string{"y"}})
	r4 := c.recv()
	if got, _ := deltaNames(r4); !slices.Equal(got, []string{"y"}) {
		t.Errorf("re-subscribe y: %v, want [y] again", got)
	}
}

// In delta every response is its own change: ACKs of two responses sent
// back to back each apply their own configs, and neither is stale.
func TestDeltaTracesEveryResponse(t *testing.T) {
	gen := newFakeGen()
	gen.set(xds.ClusterType, clusterV("a", "1"), clusterV("b", "1"))
	s := startServer(t, xds.Options{Generator: gen, DebounceAfter: time.Millisecond})
	c := newDelta(t, dial(t, s.addr))
	c.send(&discoveryv3.DeltaDiscoveryRequest{Node: node(t, "reviews-v1-abc", "default", "10.0.0.1"), TypeUrl: xds.ClusterType})
	r0 := c.recv()
	c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.ClusterType, ResponseNonce: r0.GetNonce()})

	drA := xds.ConfigKey{Kind: "DestinationRule", Namespace: "default", Name: "a", ResourceVersion: "1"}
	drB := xds.ConfigKey{Kind: "DestinationRule", Namespace: "default", Name: "b", ResourceVersion: "1"}
	gen.set(xds.ClusterType, clusterV("a", "2"), clusterV("b", "1"))
	s.Push(&xds.PushRequest{Full: true, Reason: "config", ConfigsUpdated: []xds.ConfigKey{drA}})
	r1 := c.recv()
	gen.set(xds.ClusterType, clusterV("a", "2"), clusterV("b", "2"))
	s.Push(&xds.PushRequest{Full: true, Reason: "config", ConfigsUpdated: []xds.ConfigKey{drB}})
	r2 := c.recv()
	if n1, _ := deltaNames(r1); !slices.Equal(n1, []string{"a"}) {
		t.Fatalf("first push %v, want [a]", n1)
	}
	if n2, _ := deltaNames(r2); !slices.Equal(n2, []string{"b"}) {
		t.Fatalf("second push %v, want [b]", n2)
	}
	c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.ClusterType, ResponseNonce: r1.GetNonce()})
	c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.ClusterType, ResponseNonce: r2.GetNonce()})
	eventually(t, "both configs ACKed", func() bool { return traceAcked(s.Server, drA) == 1 && traceAcked(s.Server, drB) == 1 })
	if got := metric(t, s.Server, "pilot_xds_expired_nonce", "type=cds"); got != 0 {
		t.Errorf("pilot_xds_expired_nonce{type=cds} = %v, want 0", got)
	}
	ts, _ := typeStatus(s.Server, "reviews-v1-abc.default", xds.ClusterType)
	if ts.NonceAcked != r2.GetNonce() || ts.VersionAcked != r2.GetSystemVersionInfo() {
		t.Errorf("acked nonce %q version %q, want the second response's %q %q", ts.NonceAcked, ts.VersionAcked, r2.GetNonce(), r2.GetSystemVersionInfo())
	}
}
