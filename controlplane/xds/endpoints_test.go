package xds_test

import (
	"slices"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/skiff-mesh/skiff/controlplane/xds"
)

const (
	reviewsCluster = "outbound|9080||reviews.default.svc.cluster.local"
	ratingsCluster = "outbound|9080||ratings.default.svc.cluster.local"
	detailsCluster = "outbound|9080||details.default.svc.cluster.local"
)

// An endpoint push limited to some services sends, on a state-of-the-world
// stream, only those services' ClusterLoadAssignments (EDS may carry a
// subset; the proxy keeps the rest), and nothing at all to a proxy that
// watches none of them. Pushes merged in the debounce window send the
// union; merged with an unlimited endpoint push, everything.
func TestEndpointPushLimitedToChangedServices(t *testing.T) {
	gen := newFakeGen()
	gen.set(xds.EndpointType, cla(reviewsCluster, "10.1.0.1"), cla(ratingsCluster, "10.1.0.2"), cla(detailsCluster, "10.1.0.3"))
	s := startServer(t, xds.Options{Generator: gen, EndpointDebounce: 50 * time.Millisecond})

	all := newSotw(t, dial(t, s.addr), true)
	all.send(&discoveryv3.DiscoveryRequest{Node: node(t, "productpage-1", "default", "10.0.0.1"), TypeUrl: xds.EndpointType,
		ResourceNames: []string{reviewsCluster, ratingsCluster, detailsCluster}})
	all.ack(all.recv(), reviewsCluster, ratingsCluster, detailsCluster)
	onlyDetails := newSotw(t, dial(t, s.addr), true)
	onlyDetails.send(&discoveryv3.DiscoveryRequest{Node: node(t, "other-1", "default", "10.0.0.2"), TypeUrl: xds.EndpointType,
		ResourceNames: []string{detailsCluster}})
	onlyDetails.ack(onlyDetails.recv(), detailsCluster)

	edsOnly := map[string]bool{xds.EndpointType: true}
	s.Push(&xds.PushRequest{Types: edsOnly, Reason: "endpoint", EndpointsOf: map[string]bool{"reviews.default.svc.cluster.local": true}})
	r := all.recv()
	if got := names(t, r); !slices.Equal(got, []string{reviewsCluster}) {
		t.Errorf("limited EDS push carried %v, want only %s", got, reviewsCluster)
	}
	all.ack(r, reviewsCluster, ratingsCluster, detailsCluster)
	onlyDetails.noResponse(100 * time.Millisecond)

	// Two limited pushes within one window: the union.
	s.Push(&xds.PushRequest{Types: edsOnly, Reason: "endpoint", EndpointsOf: map[string]bool{"reviews.default.svc.cluster.local": true}})
	s.Push(&xds.PushRequest{Types: edsOnly, Reason: "endpoint", EndpointsOf: map[string]bool{"ratings.default.svc.cluster.local": true}})
	r = all.recv()
	if got := names(t, r); !slices.Equal(got, []string{ratingsCluster, reviewsCluster}) {
		t.Errorf("merged limited pushes carried %v, want ratings and reviews", got)
	}
	all.ack(r, reviewsCluster, ratingsCluster, detailsCluster)
	onlyDetails.noResponse(100 * time.Millisecond)

	// A limited push merged with an unlimited one: everything.
	s.Push(&xds.PushRequest{Types: edsOnly, Reason: "endpoint", EndpointsOf: map[string]bool{"reviews.default.svc.cluster.local": true}})
	s.Push(&xds.PushRequest{Types: edsOnly, Reason: "endpoint"})
	r = all.recv()
	if got := names(t, r); len(got) != 3 {
		t.Errorf("limited push merged with an unlimited one carried %v, want all three clusters", got)
	}
	all.ack(r, reviewsCluster, ratingsCluster, detailsCluster)
	if got := names(t, onlyDetails.recv()); !slices.Equal(got, []string{detailsCluster}) {
		t.Errorf("the details-only proxy got %v, want its one cluster", got)
	}
}

// On a delta stream a limited endpoint push generates only the changed
// services' assignments, and sends those whose content changed.
func TestDeltaEndpointPushLimitedToChangedServices(t *testing.T) {
	gen := newFakeGen()
	gen.set(xds.EndpointType, cla(reviewsCluster, "10.1.0.1"), cla(ratingsCluster, "10.1.0.2"))
	s := startServer(t, xds.Options{Generator: gen, EndpointDebounce: 20 * time.Millisecond})
	c := newDelta(t, dial(t, s.addr))
	c.send(&discoveryv3.DeltaDiscoveryRequest{Node: node(t, "productpage-1", "default", "10.0.0.1"), TypeUrl: xds.EndpointType,
		ResourceNamesSubscribe: []string{reviewsCluster, ratingsCluster}})
	r := c.recv()
	c.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: xds.EndpointType, ResponseNonce: r.GetNonce()})

	gen.set(xds.EndpointType, cla(reviewsCluster, "10.1.0.9"), cla(ratingsCluster, "10.1.0.8"))
	s.Push(&xds.PushRequest{Types: map[string]bool{xds.EndpointType: true}, Reason: "endpoint",
		EndpointsOf: map[string]bool{"reviews.default.svc.cluster.local": true}})
	r = c.recv()
	if got, _ := deltaNames(r); !slices.Equal(got, []string{reviewsCluster}) || len(r.GetRemovedResources()) != 0 {
		t.Errorf("limited delta push: resources %v removed %v, want only %s and nothing removed", got, r.GetRemovedResources(), reviewsCluster)
	}
}
