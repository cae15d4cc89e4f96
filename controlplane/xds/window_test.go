package xds_test

import (
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"

	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// With a send window of one, a second proxy's large response waits until
// the first proxy answers its own, or until the hold expires for a proxy
// that never answers; small responses never wait.
func TestSendWindowBoundsLargeResponses(t *testing.T) {
	gen := newFakeGen()
	big := strings.Repeat("x", 300<<10) // above the 256 KB that takes a slot
	gen.set(xds.ClusterType, clusterV("big", big))
	gen.set(xds.EndpointType, cla("small", "10.0.0.9"))
	s := startServer(t, xds.Options{Generator: gen, DebounceAfter: 10 * time.Millisecond, LargeSends: 1})
	cc := dial(t, s.addr, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(4<<20)))
	a, b, c := newDelta(t, cc), newDelta(t, cc), newDelta(t, cc)

	a.send(&discoveryv3.DeltaDiscoveryRequest{Node: node(t, "a-0", "default", "10.0.0.1"), TypeUrl: xds.ClusterType})
	ra := a.recv()
	b.send(&discoveryv3.DeltaDiscoveryRequest{Node: node(t, "b-0", "default", "10.0.0.2"), TypeUrl: xds.ClusterType})
	b.noResponse(300 * time.Millisecond)
	// A small response goes out while the window is full.
	c.send(&discoveryv3.DeltaDiscoveryRequest{Node: node(t, "c-0", "default", "10.0.0.3"), TypeUrl: xds.EndpointType})
	if got, _ := deltaNames(c.recv()); len(got) != 1 || got[0] != "small" {
		t.Fatalf("small response: %v", got)
	}
	a.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.ClusterType, ResponseNonce: ra.GetNonce()})
	if got, _ := deltaNames(b.recv()); len(got) != 1 || got[0] != "big" {
		t.Fatalf("b after a's ACK: %v", got)
	}

	// b never answers: a third large response waits out the hold (1s).
	d := newDelta(t, cc)
	start := time.Now()
	d.send(&discoveryv3.DeltaDiscoveryRequest{Node: node(t, "d-0", "default", "10.0.0.4"), TypeUrl: xds.ClusterType})
	d.recv()
	if waited := time.Since(start); waited < 500*time.Millisecond {
		t.Errorf("d got its large response after %v, before b's slot was held for long", waited)
	}
}
