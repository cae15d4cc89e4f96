package proxy

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
)

// lbStack is cluster c with policy pol over hosts, routed from "/" with an
// optional header hash policy on x-user.
func lbStack(listen string, c *clusterv3.Cluster, hashHeader bool, hosts ...string) []types.Resource {
	r := to(prefix("/"), c.Name)
	if hashHeader {
		r.GetRoute().HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
			Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: "x-user"}}}}
	}
	return []types.Resource{c, xdsres.Endpoints(c.Name, hosts...),
		xdsres.Listener("http", listen, xdsres.HCM("http", "routes")), xdsres.RouteConfig("routes", r)}
}

func threeBackends(t *testing.T) []string {
	var out []string
	for _, n := range []string{"h0", "h1", "h2"} {
		a, _ := echoBackend(t, n, nil)
		out = append(out, a)
	}
	return out
}

// Scenario 8: the load balancers and priority failover, driven over xDS.
func TestScenarioLoadBalancers(t *testing.T) {
	t.Run("LEAST_REQUEST avoids the busy host", func(t *testing.T) {
		slow, _ := echoBackend(t, "slow", func(w http.ResponseWriter, r *http.Request) bool {
			time.Sleep(200 * time.Millisecond)
			return false
		})
		fast, _ := echoBackend(t, "fast", nil)
		listen := freeAddr(t)
		c := xdsres.EDSCluster("lr")
		c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
		// With two hosts, two random choices are the same host half the
		// time; ten make a pick of the busy host negligible.
		c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{
			ChoiceCount: wrapperspb.UInt32(10)}}
		scenario(t, lbStack(listen, c, false, slow, fast)...)
		ups := map[string]int{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for w := 0; w < 10; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				client := &http.Client{Timeout: 5 * time.Second}
				defer client.CloseIdleConnections()
				for i := 0; i < 10; i++ {
					resp, err := client.Get("http://" + listen + "/")
					if err != nil {
						t.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					mu.Lock()
					ups[resp.Header.Get("x-upstream")]++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		t.Logf("least request: %v", ups)
		// Round robin gives each exactly 50, random 50 ± 5; least request
		// measured ~90 on the fast host.
		if ups["fast"] < 70 || ups["fast"]+ups["slow"] != 100 {
			t.Fatalf("least request over 100 concurrent requests: %v, want ≥ 70 on the fast host", ups)
		}
	})

	t.Run("RANDOM", func(t *testing.T) {
		hosts := threeBackends(t)
		listen := freeAddr(t)
		c := xdsres.EDSCluster("rnd")
		c.LbPolicy = clusterv3.Cluster_RANDOM
		scenario(t, lbStack(listen, c, false, hosts...)...)
		counts := map[string]int{}
		repeats, prev := 0, ""
		client := &http.Client{Timeout: 5 * time.Second}
		for i := 0; i < 300; i++ {
			resp, err := client.Get("http://" + listen + "/")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			u := resp.Header.Get("x-upstream")
			counts[u]++
			if u == prev {
				repeats++
			}
			prev = u
		}
		client.CloseIdleConnections()
		// 100 ± 8 each; a random pick repeats the previous host a third of
		// the time (~100), round robin never.
		for _, n := range []string{"h0", "h1", "h2"} {
			if counts[n] < 65 || counts[n] > 135 {
				t.Errorf("random over 300 requests: %v", counts)
			}
		}
		if repeats < 60 || repeats > 140 {
			t.Errorf("random picked the previous host again %d times in 300, want ~100", repeats)
		}
	})

	for _, pol := range []clusterv3.Cluster_LbPolicy{clusterv3.Cluster_RING_HASH, clusterv3.Cluster_MAGLEV} {
		t.Run(pol.String()+" by header", func(t *testing.T) {
			hosts := threeBackends(t)
			listen := freeAddr(t)
			c := xdsres.EDSCluster("hash")
			c.LbPolicy = pol
			scenario(t, lbStack(listen, c, true, hosts...)...)
			url := "http://" + listen + "/"
			_, ups := loadLoop(t, url, 50, "x-user", "alice")
			if len(ups) != 1 || ups[""] != 0 {
				t.Fatalf("50 requests with x-user alice went to %v, want one host", ups)
			}
			spread := map[string]int{}
			for i := 0; i < 30; i++ {
				_, ups := loadLoop(t, url, 3, "x-user", fmt.Sprintf("user-%d", i))
				if len(ups) != 1 {
					t.Fatalf("x-user user-%d went to %v, want one host", i, ups)
				}
				for u := range ups {
					spread[u]++
				}
			}
			// 30 keys over 3 hosts: each host gets some unless hashing is
			// broken (P(a host gets none) ≈ 3·(2/3)^30 ≈ 1e-5).
			if len(spread) != 3 {
				t.Fatalf("30 distinct keys landed on %v, want all three hosts", spread)
			}
		})
	}

	t.Run("priority failover", func(t *testing.T) {
		p0, _ := echoBackend(t, "p0", nil)
		p1, _ := echoBackend(t, "p1", nil)
		listen := freeAddr(t)
		cla := xdsres.PriorityEndpoints("pf", []string{p0}, []string{p1})
		xds, _ := scenario(t, xdsres.EDSCluster("pf"), cla,
			xdsres.Listener("http", listen, xdsres.HCM("http", "routes")), xdsres.RouteConfig("routes", to(prefix("/"), "pf")))
		url := "http://" + listen + "/"
		if _, ups := loadLoop(t, url, 20); ups["p0"] != 20 {
			t.Fatalf("with priority 0 healthy: %v, want all on p0", ups)
		}
		down := xdsres.PriorityEndpoints("pf", []string{p0}, []string{p1})
		down.Endpoints[0].LbEndpoints[0].HealthStatus = corev3.HealthStatus_UNHEALTHY
		xds.Set(t, xdsres.EDSCluster("pf"), down,
			xdsres.Listener("http", listen, xdsres.HCM("http", "routes")), xdsres.RouteConfig("routes", to(prefix("/"), "pf")))
		eventually(t, "traffic to fail over to priority 1", func() (bool, string) {
			_, ups := loadLoop(t, url, 20)
			return ups["p1"] == 20, fmtMap(ups)
		})
	})

	t.Run("priority failover when priority 0 is down", func(t *testing.T) {
		down := freeAddr(t) // nothing listens: the priority-0 host is down
		p1, _ := echoBackend(t, "p1", nil)
		listen := freeAddr(t)
		c := xdsres.EDSCluster("pd")
		c.HealthChecks = []*corev3.HealthCheck{{
			Timeout: durationpb.New(time.Second), Interval: durationpb.New(100 * time.Millisecond),
			NoTrafficInterval:  durationpb.New(100 * time.Millisecond),
			UnhealthyThreshold: wrapperspb.UInt32(1), HealthyThreshold: wrapperspb.UInt32(1),
			HealthChecker: &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &corev3.HealthCheck_TcpHealthCheck{}}}}
		scenario(t, c, xdsres.PriorityEndpoints("pd", []string{down}, []string{p1}),
			xdsres.Listener("http", listen, xdsres.HCM("http", "routes")), xdsres.RouteConfig("routes", to(prefix("/"), "pd")))
		url := "http://" + listen + "/"
		eventually(t, "traffic on priority 1", func() (bool, string) {
			codes, ups := loadLoop(t, url, 20)
			return ups["p1"] == 20, fmt.Sprint(codes, ups)
		})
	})
}
