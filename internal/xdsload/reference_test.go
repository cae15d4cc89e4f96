package xdsload_test

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"

	"github.com/skiff-mesh/skiff/internal/xdsload"
)

// referenceServer is go-control-plane's ADS server over its snapshot
// cache: the proxies must interoperate with it in both protocol variants.
type referenceServer struct {
	addr    string
	cache   cachev3.SnapshotCache
	version int
}

func startReference(t testing.TB) *referenceServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &referenceServer{addr: ln.Addr().String(), cache: cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)}
	g := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, serverv3.NewServer(ctx, r.cache, nil))
	go g.Serve(ln)
	t.Cleanup(func() { cancel(); g.Stop() })
	return r
}

// set publishes the test resources (weights w1/w2, endpoint ip) to every
// node in nodes.
func (r *referenceServer) set(nodes []string, w1, w2 int, ip string) error {
	src := &adsServer{w1: w1, w2: w2, endpoint: ip}
	r.version++
	byType := map[string][]types.Resource{}
	for _, tu := range xdsload.Types {
		for _, m := range src.resources(tu) {
			byType[tu] = append(byType[tu], m)
		}
	}
	snap, err := cachev3.NewSnapshot(strconv.Itoa(r.version), byType)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if err := r.cache.SetSnapshot(context.Background(), n, snap); err != nil {
			return err
		}
	}
	return nil
}

func TestReferenceServerBothVariants(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) {
			srv := startReference(t)
			pods := testPods(t, 2, 1)
			var nodes []string
			for _, p := range pods {
				nodes = append(nodes, xdsload.NodeFor(p).GetId())
			}
			if err := srv.set(nodes, 50, 50, "198.18.0.1"); err != nil {
				t.Fatal(err)
			}
			f := startFleet(t, srv.addr, pods, delta)
			for _, p := range f.Proxies {
				got := map[string]int{}
				for _, s := range p.Status() {
					got[s.Type] = s.Resources
					if s.ACKs != s.Responses || s.ACKs == 0 {
						t.Errorf("proxy %d %s: %d responses, %d ACKs; want every response ACKed", p.Index, s.Type, s.Responses, s.ACKs)
					}
				}
				if want := map[string]int{"CDS": 4, "EDS": 3, "LDS": 2, "RDS": 1}; len(got) != 4 || got["CDS"] != 4 || got["EDS"] != 3 || got["LDS"] != 2 || got["RDS"] != 1 {
					t.Errorf("proxy %d holds %v, want %v", p.Index, got, want)
				}
			}

			w := f.Expect(xdsload.RouteWeights(testHost, testPort, 20, 80))
			time.AfterFunc(200*time.Millisecond, func() {
				if err := srv.set(nodes, 20, 80, "198.18.0.1"); err != nil {
					t.Errorf("publishing the route change: %v", err)
				}
			})
			res := w.Wait(context.Background(), 5*time.Second)
			if res.Missing != 0 || res.Last < 200*time.Millisecond {
				t.Errorf("route change published 200ms after T0: %d missing, last at %v", res.Missing, res.Last)
			}
			if d, s := f.Errors(); d != 0 || s != 0 {
				t.Errorf("%d decode errors, %d stream errors", d, s)
			}
		})
	}
}
