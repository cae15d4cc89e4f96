package xds_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"

	"github.com/skiff-mesh/skiff/controlplane/xds"
)

var vsReviews = xds.ConfigKey{Kind: "VirtualService", Namespace: "default", Name: "reviews"}

func withVersion(k xds.ConfigKey, v string) xds.ConfigKey { k.ResourceVersion = v; return k }

// A SotW proxy gets the generator's resources, its ACK is recorded and not
// answered, its NACK is recorded with the error and counted while the
// ACKed version stays, and config tracing follows both.
func TestSotwAckNack(t *testing.T) {
	gen := newFakeGen()
	gen.set(xds.ClusterType, cluster("outbound|9080||reviews.default.svc.cluster.local"), cluster("inbound|9080||"))
	s := startServer(t, xds.Options{Generator: gen, DebounceAfter: 10 * time.Millisecond})
	c := newSotw(t, dial(t, s.addr), true)

	c.send(&discoveryv3.DiscoveryRequest{Node: node(t, "reviews-v1-abc", "default", "10.0.0.1"), TypeUrl: xds.ClusterType})
	r := c.recv()
	if got, want := names(t, r), []string{"inbound|9080||", "outbound|9080||reviews.default.svc.cluster.local"}; !slices.Equal(got, want) {
		t.Fatalf("initial CDS: %v, want %v", got, want)
	}
	if r.GetVersionInfo() == "" || r.GetNonce() == "" {
		t.Fatalf("response lacks version or nonce: %q %q", r.GetVersionInfo(), r.GetNonce())
	}
	c.ack(r)
	eventually(t, "ACK recorded", func() bool {
		ts, _ := typeStatus(s.Server, "reviews-v1-abc.default", xds.ClusterType)
		return ts.VersionAcked == r.GetVersionInfo() && ts.NonceAcked == r.GetNonce()
	})
	c.noResponse(50 * time.Millisecond)

	gen.set(xds.ClusterType, cluster("inbound|9080||"), cluster("outbound|9080|v2|reviews.default.svc.cluster.local"))
	s.Push(&xds.PushRequest{Full: true, Types: map[string]bool{xds.ClusterType: true}, Reason: "config",
		ConfigsUpdated: []xds.ConfigKey{withVersion(vsReviews, "7")}})
	r2 := c.recv()
	if got, want := names(t, r2), []string{"inbound|9080||", "outbound|9080|v2|reviews.default.svc.cluster.local"}; !slices.Equal(got, want) {
		t.Fatalf("pushed CDS: %v, want %v", got, want)
	}
	if r2.GetVersionInfo() == r.GetVersionInfo() {
		t.Fatalf("push reused version %q", r2.GetVersionInfo())
	}
	c.send(&discoveryv3.DiscoveryRequest{TypeUrl: xds.ClusterType, VersionInfo: r.GetVersionInfo(), ResponseNonce: r2.GetNonce(),
		ErrorDetail: &status.Status{Code: 3, Message: "cluster outbound|9080|v2|reviews.default.svc.cluster.local: unknown lb_policy"}})
	eventually(t, "NACK recorded", func() bool {
		ts, _ := typeStatus(s.Server, "reviews-v1-abc.default", xds.ClusterType)
		return ts.NACKs == 1
	})
	ts, _ := typeStatus(s.Server, "reviews-v1-abc.default", xds.ClusterType)
	if ts.LastNACK != "cluster outbound|9080|v2|reviews.default.svc.cluster.local: unknown lb_policy" || ts.LastNACKNonce != r2.GetNonce() {
		t.Errorf("last NACK %q (nonce %q)", ts.LastNACK, ts.LastNACKNonce)
	}
	if ts.VersionAcked != r.GetVersionInfo() || ts.VersionSent != r2.GetVersionInfo() {
		t.Errorf("after NACK: acked %q sent %q, want acked %q sent %q", ts.VersionAcked, ts.VersionSent, r.GetVersionInfo(), r2.GetVersionInfo())
	}
	if got := metric(t, s.Server, "pilot_total_xds_rejects", "type=cds"); got != 1 {
		t.Errorf("pilot_total_xds_rejects{type=cds} = %v, want 1", got)
	}
	if log := s.log.String(); !strings.Contains(log, `level=WARN msg="proxy rejected config (NACK)" component=xds proxy=reviews-v1-abc.default conn=reviews-v1-abc.default-1 type=cds nonce=`+r2.GetNonce()+` err="cluster outbound|9080|v2|reviews.default.svc.cluster.local: unknown lb_policy"`) {
		t.Errorf("NACK not logged with proxy and error:\n%s", log)
	}
	if got := s.Trace(withVersion(vsReviews, "7")); len(got) != 1 || !got[0].Sent || got[0].Acked {
		t.Errorf("trace after NACK: %+v, want sent and not acked", got)
	}
	c.noResponse(50 * time.Millisecond)

	// The fix is pushed and ACKed: the trace now shows it applied.
	gen.set(xds.ClusterType, cluster("inbound|9080||"))
	s.Push(&xds.PushRequest{Full: true, Reason: "config", ConfigsUpdated: []xds.ConfigKey{withVersion(vsReviews, "8")}})
	r3 := c.recv()
	c.ack(r3)
	eventually(t, "ACK of the fix", func() bool { return traceAcked(s.Server, withVersion(vsReviews, "8")) == 1 })
	ts, _ = typeStatus(s.Server, "reviews-v1-abc.default", xds.ClusterType)
	if ts.LastNACK != "" || ts.NACKs != 1 || ts.VersionAcked != r3.GetVersionInfo() {
		t.Errorf("after ACK: last NACK %q, NACKs %d, acked %q", ts.LastNACK, ts.NACKs, ts.VersionAcked)
	}
	if got := s.Trace(withVersion(vsReviews, "7")); len(got) != 0 {
		t.Errorf("superseded version 7 still traced: %+v", got)
	}
	if got := metric(t, s.Server, "skiff_xds_ack_latency_seconds", "type=cds"); got != 3 {
		t.Errorf("ACK latency samples %v, want 3 (2 ACKs, 1 NACK)", got)
	}
}

func traceAcked(s *xds.Server, k xds.ConfigKey) int {
	n := 0
	for _, d := range s.Trace(k) {
		if d.Acked {
			n++
		}
	}
	return n
}

// Named subscriptions: the response holds just the names asked for; a
// request adding a name is answered with the new set; a request with a
// stale nonce is ignored and counted.
func TestSotwSubscriptionChange(t *testing.T) {
	gen := newFakeGen()
	gen.set(xds.EndpointType, cla("outbound|9080||reviews.default.svc.cluster.local", "10.1.0.1"),
		cla("outbound|9080||ratings.default.svc.cluster.local", "10.1.0.2"),
		cla("outbound|9080||details.default.svc.cluster.local", "10.1.0.3"))
	s := startServer(t, xds.Options{Generator: gen, DebounceAfter: 10 * time.Millisecond})
	c := newSotw(t, dial(t, s.addr), true)

	c.send(&discoveryv3.DiscoveryRequest{Node: node(t, "productpage-v1-x", "default", "10.0.0.2"), TypeUrl: xds.EndpointType,
		ResourceNames: []string{"outbound|9080||reviews.default.svc.cluster.local"}})
	r := c.recv()
	if got := names(t, r); !slices.Equal(got, []string{"outbound|9080||reviews.default.svc.cluster.local"}) {
		t.Fatalf("EDS for one name: %v", got)
	}
	c.ack(r, "outbound|9080||reviews.default.svc.cluster.local", "outbound|9080||ratings.default.svc.cluster.local")
	r2 := c.recv()
	if got, want := names(t, r2), []string{"outbound|9080||ratings.default.svc.cluster.local", "outbound|9080||reviews.default.svc.cluster.local"}; !slices.Equal(got, want) {
		t.Fatalf("EDS after subscribing to ratings: %v, want %v", got, want)
	}
	// An ACK of the first response, arriving late, is stale.
	c.ack(r, "outbound|9080||reviews.default.svc.cluster.local")
	eventually(t, "stale nonce counted", func() bool { return metric(t, s.Server, "pilot_xds_expired_nonce", "type=eds") == 1 })
	c.noResponse(50 * time.Millisecond)
	ts, _ := typeStatus(s.Server, "productpage-v1-x.default", xds.EndpointType)
	if want := []string{"outbound|9080||ratings.default.svc.cluster.local", "outbound|9080||reviews.default.svc.cluster.local"}; !slices.Equal(ts.Names, want) || ts.Wildcard {
		t.Errorf("subscription %v (wildcard %v), want %v", ts.Names, ts.Wildcard, want)
	}
	// A push sends the subscribed set only.
	s.Push(&xds.PushRequest{Types: map[string]bool{xds.EndpointType: true}, Reason: "endpoint"})
	if got := names(t, c.recv()); len(got) != 2 {
		t.Errorf("pushed EDS: %v, want the 2 subscribed", got)
	}
}

// A stream whose first request has no node, or a node id Istio would not
// accept, is refused with the reason.
func TestSotwBadNode(t *testing.T) {
	s := startServer(t, xds.Options{Generator: newFakeGen()})
	for _, tc := range []struct {
		id, want string
	}{
		{"", "rpc error: code = InvalidArgument desc = xDS request has no node id: the first request on a stream must carry node.id (\"sidecar~IP~pod.namespace~namespace.svc.cluster.local\")"},
		{"sidecar~10.0.0.1~x.default", "rpc error: code = InvalidArgument desc = node id \"sidecar~10.0.0.1~x.default\": want 4 fields separated by \"~\" (type~ip~pod.namespace~domain), got 3"},
	} {
		c := newSotw(t, dial(t, s.addr), false)
		req := &discoveryv3.DiscoveryRequest{TypeUrl: xds.ClusterType}
		if tc.id != "" {
			req.Node = node(t, "x", "default", "10.0.0.1")
			req.Node.Id = tc.id
		}
		c.send(req)
		_, err := c.stream.Recv()
		if err == nil || err.Error() != tc.want {
			t.Errorf("node %q: error %v, want %s", tc.id, err, tc.want)
		}
	}
}
