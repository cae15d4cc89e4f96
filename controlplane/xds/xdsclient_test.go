package xds_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/skiff-mesh/skiff/controlplane/xds"
	"github.com/skiff-mesh/skiff/dataplane/xdsclient"
)

// recorder is an xdsclient handler that keeps what it applied and refuses
// any cluster named "bad", as a proxy refusing an unusable resource.
type recorder struct {
	mu   sync.Mutex
	held map[string][]string // type → names in the last applied update
}

func (r *recorder) OnUpdate(typeURL string, u *xdsclient.Update) error {
	var names []string
	for _, res := range u.Resources {
		if res.Name == "bad" {
			return errors.New(`Cluster "bad": lb_policy RING_HASH needs a hash policy`)
		}
		names = append(names, res.Name)
	}
	r.mu.Lock()
	r.held[typeURL] = names
	r.mu.Unlock()
	return nil
}

func (r *recorder) get(typeURL string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.held[typeURL]
}

// skiff-proxy's own ADS client, over both protocols: it receives the
// generated resources, its ACKs are recorded, and a resource it refuses
// shows as a NACK with its error while the ACKed version stays.
func TestDataplaneClient(t *testing.T) {
	for _, delta := range []bool{false, true} {
		name := "sotw"
		if delta {
			name = "delta"
		}
		t.Run(name, func(t *testing.T) {
			gen := newFakeGen()
			gen.set(xds.ClusterType, cluster("outbound|9080||reviews.default.svc.cluster.local"))
			gen.set(xds.EndpointType, cla("outbound|9080||reviews.default.svc.cluster.local", "10.1.0.1"), cla("other", "10.1.0.2"))
			s := startServer(t, xds.Options{Generator: gen, DebounceAfter: 10 * time.Millisecond})
			rec := &recorder{held: map[string][]string{}}
			c := xdsclient.New(xdsclient.Config{
				Dial: func(ctx context.Context) (*grpc.ClientConn, error) {
					return grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
				},
				Node:    node(t, "productpage-v1-x", "default", "10.0.0.5"),
				Delta:   delta,
				Handler: rec,
			})
			c.SubscribeWildcard(xds.ClusterType)
			c.Subscribe(xds.EndpointType, []string{"outbound|9080||reviews.default.svc.cluster.local"})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { _ = c.Run(ctx); close(done) }()
			t.Cleanup(func() { cancel(); <-done })

			eventually(t, "CDS and EDS applied and ACKed", func() bool {
				cds, _ := typeStatus(s.Server, "productpage-v1-x.default", xds.ClusterType)
				eds, _ := typeStatus(s.Server, "productpage-v1-x.default", xds.EndpointType)
				return cds.VersionAcked != "" && cds.VersionAcked == cds.VersionSent && eds.VersionAcked != "" && eds.VersionAcked == eds.VersionSent
			})
			if got := rec.get(xds.EndpointType); !slices.Equal(got, []string{"outbound|9080||reviews.default.svc.cluster.local"}) {
				t.Errorf("client holds EDS %v, want just the subscribed name", got)
			}
			if got := rec.get(xds.ClusterType); !slices.Equal(got, []string{"outbound|9080||reviews.default.svc.cluster.local"}) {
				t.Errorf("client holds CDS %v", got)
			}
			good, _ := typeStatus(s.Server, "productpage-v1-x.default", xds.ClusterType)

			gen.set(xds.ClusterType, cluster("bad"), cluster("outbound|9080||reviews.default.svc.cluster.local"))
			s.Push(&xds.PushRequest{Full: true, Types: map[string]bool{xds.ClusterType: true}, Reason: "config"})
			eventually(t, "NACK recorded", func() bool {
				ts, _ := typeStatus(s.Server, "productpage-v1-x.default", xds.ClusterType)
				return ts.NACKs == 1
			})
			ts, _ := typeStatus(s.Server, "productpage-v1-x.default", xds.ClusterType)
			if want := `Cluster "bad": lb_policy RING_HASH needs a hash policy`; ts.LastNACK != want {
				t.Errorf("last NACK %q, want %q", ts.LastNACK, want)
			}
			if ts.VersionAcked != good.VersionAcked {
				t.Errorf("ACKed version moved from %q to %q on a NACK", good.VersionAcked, ts.VersionAcked)
			}
			if got := metric(t, s.Server, "pilot_total_xds_rejects", "type=cds"); got != 1 {
				t.Errorf("pilot_total_xds_rejects{type=cds} = %v, want 1", got)
			}
			if got := rec.get(xds.ClusterType); !slices.Equal(got, []string{"outbound|9080||reviews.default.svc.cluster.local"}) {
				t.Errorf("client holds CDS %v after refusing, want its last good", got)
			}

			// An endpoint change reaches the client and is ACKed.
			gen.set(xds.EndpointType, cla("outbound|9080||reviews.default.svc.cluster.local", "10.1.0.1", "10.1.0.7"))
			s.Push(&xds.PushRequest{Types: map[string]bool{xds.EndpointType: true}, Reason: "endpoint",
				ConfigsUpdated: []xds.ConfigKey{{Kind: "EndpointSlice", Namespace: "default", Name: "reviews-abc", ResourceVersion: "42"}}})
			eventually(t, "endpoint change ACKed", func() bool {
				return traceAcked(s.Server, xds.ConfigKey{Kind: "EndpointSlice", Namespace: "default", Name: "reviews-abc", ResourceVersion: "42"}) == 1
			})
		})
	}
}
