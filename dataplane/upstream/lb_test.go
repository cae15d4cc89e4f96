package upstream

import (
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	leastrequestv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	maglevv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/maglev/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

func TestRoundRobinSpreadsByWeight(t *testing.T) {
	m, _ := newTestManager(t)
	a, b, c := newBackend(t, "a", nil), newBackend(t, "b", nil), newBackend(t, "c", nil)

	eq := mustAdd(t, m, staticCluster("eq", ep{addr: a.addr()}, ep{addr: b.addr()}, ep{addr: c.addr()}))
	got := map[string]int{}
	for range 300 {
		r := send(eq, nil)
		if r.err != nil || r.status != 200 {
			t.Fatalf("request failed: %+v", r)
		}
		got[r.body]++
	}
	for _, n := range []string{"a", "b", "c"} {
		if got[n] != 100 {
			t.Errorf("equal-weight round robin: %s got %d of 300, want 100 (%v)", n, got[n], got)
		}
	}

	w := mustAdd(t, m, staticCluster("w", ep{addr: a.addr(), weight: 1}, ep{addr: b.addr(), weight: 3}))
	got = map[string]int{}
	for range 400 {
		got[send(w, nil).body]++
	}
	if got["a"] != 100 || got["b"] != 300 {
		t.Errorf("weighted 1:3 round robin over 400 requests: %v, want a=100 b=300", got)
	}
}

func TestRandomRespectsWeights(t *testing.T) {
	m, _ := newTestManager(t)
	a, b := newBackend(t, "a", nil), newBackend(t, "b", nil)
	c := staticCluster("r", ep{addr: a.addr(), weight: 1}, ep{addr: b.addr(), weight: 4})
	c.LbPolicy = clusterv3.Cluster_RANDOM
	cl := mustAdd(t, m, c)
	got := map[string]int{}
	for range 2000 {
		got[cl.ChooseHost(nil).Address()]++
	}
	// Expect 400 for a; 5 sigma is about 90.
	if n := got[a.addr()]; n < 300 || n > 500 {
		t.Errorf("random 1:4: a chosen %d of 2000 times, want about 400", n)
	}
}

func TestLeastRequestPrefersIdleHost(t *testing.T) {
	m, _ := newTestManager(t)
	release := make(chan struct{})
	busy := newBackend(t, "busy", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-release
	})
	idle := newBackend(t, "idle", nil)
	defer close(release)
	c := staticCluster("lr", ep{addr: busy.addr()}, ep{addr: idle.addr()})
	c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
	cl := mustAdd(t, m, c)

	// Park three requests on the busy host: their bodies stay open.
	var busyHost core.Host
	for busyHost == nil {
		if h := cl.ChooseHost(nil); h.Address() == busy.addr() {
			busyHost = h
		}
	}
	for range 3 {
		req, _ := http.NewRequest("GET", "http://svc/", nil)
		resp, err := busyHost.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
	}
	n := 0
	for range 1000 {
		if cl.ChooseHost(nil).Address() == idle.addr() {
			n++
		}
	}
	// Two choices among two hosts: the idle one wins unless both samples
	// hit the busy one (1 in 4), so about 750 of 1000.
	if n < 650 {
		t.Errorf("least request chose the idle host %d of 1000 times, want about 750", n)
	}
}

func hashKeys(cl core.Cluster, n int) map[uint64]string {
	out := map[uint64]string{}
	r := rand.New(rand.NewPCG(1, 2))
	for range n {
		k := r.Uint64()
		out[k] = cl.ChooseHost(&core.LBContext{Hash: k, HasHash: true}).Address()
	}
	return out
}

func TestConsistentHashStableAndMinimalMovement(t *testing.T) {
	for _, policy := range []clusterv3.Cluster_LbPolicy{clusterv3.Cluster_RING_HASH, clusterv3.Cluster_MAGLEV} {
		t.Run(policy.String(), func(t *testing.T) {
			m, _ := newTestManager(t)
			var eps []ep
			for i := range 5 {
				eps = append(eps, ep{addr: newBackend(t, string(rune('a'+i)), nil).addr()})
			}
			c := edsCluster("h")
			c.LbPolicy = policy
			cl := mustAdd(t, m, c)
			if err := m.SetEndpoints(cla("h", eps...)); err != nil {
				t.Fatal(err)
			}
			before := hashKeys(cl, 2000)
			again := hashKeys(cl, 2000)
			perHost := map[string]int{}
			for k, h := range before {
				if again[k] != h {
					t.Fatalf("key %d moved from %s to %s with no change", k, h, again[k])
				}
				perHost[h]++
			}
			for _, e := range eps {
				if n := perHost[e.addr]; n < 200 || n > 650 {
					t.Errorf("host %s owns %d of 2000 keys, want about 400", e.addr, n)
				}
			}
			removed := eps[2].addr
			if err := m.SetEndpoints(cla("h", append(eps[:2:2], eps[3:]...)...)); err != nil {
				t.Fatal(err)
			}
			after := hashKeys(cl, 2000)
			moved, movedFromKept := 0, 0
			for k, h := range before {
				if after[k] == removed {
					t.Fatalf("key still maps to removed host %s", removed)
				}
				if after[k] != h {
					moved++
					if h != removed {
						movedFromKept++
					}
				}
			}
			// The removed host's fifth must move. Maglev keeps nearly every
			// other key; Envoy's ring keeps its size, so each kept host
			// gains points (205 → 256 each) that take a further share.
			maxKept := 100
			if policy == clusterv3.Cluster_RING_HASH {
				maxKept = 350
			}
			if moved < 250 || moved > 400+maxKept {
				t.Errorf("%d of 2000 keys moved after removing 1 of 5 hosts, want about %d", moved, 400+maxKept/2)
			}
			if movedFromKept > maxKept {
				t.Errorf("%d keys of kept hosts moved, want at most %d", movedFromKept, maxKept)
			}
		})
	}
}

func share(cl core.Cluster, n int) map[string]int {
	out := map[string]int{}
	for range n {
		if h := cl.ChooseHost(nil); h != nil {
			out[h.Address()]++
		} else {
			out[""]++
		}
	}
	return out
}

func TestPriorityFailoverAndPanic(t *testing.T) {
	m, _ := newTestManager(t)
	var addrs []string
	for i := range 4 {
		addrs = append(addrs, newBackend(t, string(rune('a'+i)), nil).addr())
	}
	cl := mustAdd(t, m, edsCluster("p"))
	if got := m.Warming(); len(got) != 1 || got[0] != "p" {
		t.Fatalf("Warming() = %v before EDS, want [p]", got)
	}
	if h := cl.ChooseHost(nil); h != nil {
		t.Fatalf("ChooseHost with no endpoints = %s, want nil", h.Address())
	}
	healthy, unhealthy := corev3.HealthStatus_HEALTHY, corev3.HealthStatus_UNHEALTHY
	set := func(h0, h1, h2, h3 corev3.HealthStatus) {
		t.Helper()
		err := m.SetEndpoints(cla("p",
			ep{addr: addrs[0], health: h0}, ep{addr: addrs[1], health: h1},
			ep{addr: addrs[2], priority: 1, health: h2}, ep{addr: addrs[3], priority: 1, health: h3}))
		if err != nil {
			t.Fatal(err)
		}
	}
	p1 := func(s map[string]int) int { return s[addrs[2]] + s[addrs[3]] }

	set(healthy, healthy, healthy, healthy)
	if len(m.Warming()) != 0 {
		t.Fatalf("still warming after EDS: %v", m.Warming())
	}
	if s := share(cl, 1000); p1(s) != 0 {
		t.Errorf("all healthy: priority 1 got %d of 1000, want 0", p1(s))
	}
	// P0 half healthy: health 50%×1.4 = 70, so P1 takes 30%.
	set(healthy, unhealthy, healthy, healthy)
	s := share(cl, 4000)
	if s[addrs[1]] != 0 {
		t.Errorf("unhealthy host chosen %d times", s[addrs[1]])
	}
	if n := p1(s); n < 1000 || n > 1400 {
		t.Errorf("P0 at 50%% health: P1 got %d of 4000, want about 1200", n)
	}
	set(unhealthy, unhealthy, healthy, healthy)
	if s := share(cl, 1000); p1(s) != 1000 {
		t.Errorf("P0 down: P1 got %d of 1000, want all", p1(s))
	}
	// Nothing healthy: total panic spreads over every host.
	set(unhealthy, unhealthy, unhealthy, unhealthy)
	s = share(cl, 4000)
	for _, a := range addrs {
		if s[a] < 700 {
			t.Errorf("total panic: host %s got %d of 4000, want about 1000", a, s[a])
		}
	}
}

func TestPanicThreshold(t *testing.T) {
	m, st := newTestManager(t)
	var eps []ep
	for i := range 4 {
		e := ep{addr: newBackend(t, string(rune('a'+i)), nil).addr(), health: corev3.HealthStatus_UNHEALTHY}
		if i == 0 {
			e.health = corev3.HealthStatus_HEALTHY
		}
		eps = append(eps, e)
	}
	// 25% healthy is under the default 50% threshold: panic, all hosts.
	cl := mustAdd(t, m, staticCluster("panic", eps...))
	if s := share(cl, 2000); len(s) != 4 {
		t.Errorf("panic mode used %d hosts, want all 4: %v", len(s), s)
	}
	// Threshold 0 disables panic: only the healthy host.
	c := staticCluster("nopanic", eps...)
	c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}}
	cl = mustAdd(t, m, c)
	if s := share(cl, 500); s[eps[0].addr] != 500 {
		t.Errorf("panic disabled: %v, want only %s", s, eps[0].addr)
	}
	// With no healthy host and panic disabled there is no host at all.
	for i := range eps {
		eps[i].health = corev3.HealthStatus_DRAINING
	}
	c = staticCluster("none", eps...)
	c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}}
	cl = mustAdd(t, m, c)
	if h := cl.ChooseHost(nil); h != nil {
		t.Errorf("all draining, panic off: chose %s, want nil", h.Address())
	}
	if n := st.CounterValue("cluster.none.upstream_cx_none_healthy"); n != 1 {
		t.Errorf("upstream_cx_none_healthy = %d, want 1", n)
	}
}

func TestLocalityWeightedLB(t *testing.T) {
	m, _ := newTestManager(t)
	a, b := newBackend(t, "a", nil), newBackend(t, "b", nil)
	c := staticCluster("loc", ep{addr: a.addr(), zone: "z1"}, ep{addr: b.addr(), zone: "z2"})
	c.LoadAssignment.Endpoints[0].LoadBalancingWeight = wrapperspb.UInt32(1)
	c.LoadAssignment.Endpoints[1].LoadBalancingWeight = wrapperspb.UInt32(3)
	c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{
		LocalityConfigSpecifier: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{LocalityWeightedLbConfig: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig{}},
	}
	cl := mustAdd(t, m, c)
	s := share(cl, 4000)
	if n := s[b.addr()]; n < 2800 || n > 3200 {
		t.Errorf("locality weights 1:3: z2 got %d of 4000, want about 3000", n)
	}
}

func TestRejectPredicateAvoidsPreviousHost(t *testing.T) {
	m, _ := newTestManager(t)
	a, b := newBackend(t, "a", nil), newBackend(t, "b", nil)
	c := staticCluster("rej", ep{addr: a.addr()}, ep{addr: b.addr()})
	c.LbPolicy = clusterv3.Cluster_RANDOM
	cl := mustAdd(t, m, c)
	// Only three random draws all landing on a (1 in 8) may pick it.
	avoided := 0
	for range 1000 {
		if cl.ChooseHost(&core.LBContext{Reject: func(h core.Host) bool { return h.Address() == a.addr() }}).Address() == b.addr() {
			avoided++
		}
	}
	if avoided < 820 {
		t.Errorf("reject predicate: previous host avoided %d of 1000 times, want about 875", avoided)
	}
}

func TestConnectTimeoutAndFailure(t *testing.T) {
	m, st := newTestManager(t)
	dead := newBackend(t, "dead", nil)
	addr := dead.addr()
	dead.Close()
	cl := mustAdd(t, m, staticCluster("dead", ep{addr: addr}))
	r := send(cl, nil)
	ue, ok := r.err.(*core.UpstreamError)
	if !ok || ue.Kind != core.ConnectFailure {
		t.Fatalf("request to closed port: err = %v, want ConnectFailure", r.err)
	}
	if n := st.CounterValue("cluster.dead.upstream_cx_connect_fail"); n != 1 {
		t.Errorf("upstream_cx_connect_fail = %d, want 1", n)
	}
}

func typedPolicy(t *testing.T, msgs ...proto.Message) *clusterv3.LoadBalancingPolicy {
	lp := &clusterv3.LoadBalancingPolicy{}
	for _, m := range msgs {
		a, err := anypb.New(m)
		if err != nil {
			t.Fatal(err)
		}
		lp.Policies = append(lp.Policies, &clusterv3.LoadBalancingPolicy_Policy{
			TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: "p", TypedConfig: a}})
	}
	return lp
}

func TestTypedLoadBalancingPolicy(t *testing.T) {
	m, _ := newTestManager(t)
	var eps []ep
	for i := range 4 {
		eps = append(eps, ep{addr: newBackend(t, string(rune('a'+i)), nil).addr()})
	}
	// The first supported policy wins: an unknown one is skipped.
	c := staticCluster("typed", eps...)
	c.LoadBalancingPolicy = typedPolicy(t, &clusterv3.Cluster{}, &maglevv3.Maglev{})
	cl := mustAdd(t, m, c)
	hosts := map[string]bool{}
	for k := range uint64(200) {
		first := cl.ChooseHost(&core.LBContext{Hash: k * 7919, HasHash: true}).Address()
		for range 3 {
			if again := cl.ChooseHost(&core.LBContext{Hash: k * 7919, HasHash: true}).Address(); again != first {
				t.Fatalf("typed maglev: hash %d chose %s then %s", k, first, again)
			}
		}
		hosts[first] = true
	}
	if len(hosts) != 4 {
		t.Errorf("typed maglev spread 200 keys over %d of 4 hosts", len(hosts))
	}
	bad := staticCluster("typed-bad", eps...)
	bad.LoadBalancingPolicy = typedPolicy(t, &leastrequestv3.LeastRequest{ChoiceCount: wrapperspb.UInt32(1)})
	if err := m.Validate(bad); err == nil || !strings.Contains(err.Error(), "load_balancing_policy.policies[0].choice_count") {
		t.Errorf("choice_count 1: err = %v", err)
	}
	bad.LoadBalancingPolicy = typedPolicy(t, &clusterv3.Cluster{})
	if err := m.Validate(bad); err == nil || !strings.Contains(err.Error(), `cluster "typed-bad": load_balancing_policy.policies: none of`) {
		t.Errorf("unsupported policy: err = %v", err)
	}
}
