package stats

import (
	"math"
	"sync"
	"testing"
)

func TestScopeNamesFlatAndPrometheus(t *testing.T) {
	s := New()
	sc := s.Scope("cluster.outbound|9080||reviews.default.svc.cluster.local", "cluster",
		Tag{Name: "cluster_name", Value: "outbound|9080||reviews.default.svc.cluster.local"})
	c := sc.Counter("upstream_rq_total")
	if c.Name != "cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_total" {
		t.Errorf("flat name %q", c.Name)
	}
	if c.PromName != "envoy_cluster_upstream_rq_total" || c.Tags[0].Value != "outbound|9080||reviews.default.svc.cluster.local" {
		t.Errorf("prometheus name %q tags %v", c.PromName, c.Tags)
	}
	if g := s.Root().Gauge("server.live"); g.PromName != "envoy_server_live" {
		t.Errorf("root gauge prometheus name %q", g.PromName)
	}
	// The same name returns the same metric, so code holding a pointer and
	// the admin page agree.
	if sc.Counter("upstream_rq_total") != c {
		t.Error("a second lookup made a new counter")
	}
}

func TestCountersAreSafeUnderConcurrency(t *testing.T) {
	s := New()
	c := s.Root().Counter("x")
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 1000; j++ {
				c.Inc()
			}
		}()
	}
	wg.Wait()
	if got := s.CounterValue("x"); got != 8000 {
		t.Fatalf("counter = %d, want 8000", got)
	}
}

func TestHistogramBucketsAndQuantiles(t *testing.T) {
	h := New().Root().Histogram("rq_time")
	for _, v := range []float64{0.2, 3, 3, 7, 40, 2000} {
		h.Record(v)
	}
	snap := h.Snapshot()
	if snap.Count != 6 || math.Abs(snap.Sum-2053.2) > 0.01 {
		t.Fatalf("count %d sum %v", snap.Count, snap.Sum)
	}
	// Buckets are cumulative: ≤0.5 → 1, ≤5 → 3, ≤10 → 4, ≤50 → 5, ≤2500 → 6.
	want := map[float64]uint64{0.5: 1, 1: 1, 5: 3, 10: 4, 25: 4, 50: 5, 2500: 6}
	for i, b := range Buckets {
		if w, ok := want[b]; ok && snap.Cumulative[i] != w {
			t.Errorf("bucket le=%v: %d, want %d", b, snap.Cumulative[i], w)
		}
	}
	if snap.Cumulative[len(Buckets)] != 6 {
		t.Errorf("+Inf bucket %d, want 6", snap.Cumulative[len(Buckets)])
	}
	if q := snap.Quantile(0.5); q != 5 {
		t.Errorf("p50 = %v, want the 5 ms bucket bound", q)
	}
	if q := snap.Quantile(1); q != 2500 {
		t.Errorf("p100 = %v, want 2500", q)
	}
}

func TestRemoveDropsAScope(t *testing.T) {
	s := New()
	s.Scope("cluster.a", "cluster", Tag{"cluster_name", "a"}).Counter("upstream_rq_total").Inc()
	s.Scope("cluster.b", "cluster", Tag{"cluster_name", "b"}).Counter("upstream_rq_total").Inc()
	s.Remove("cluster.a.")
	var names []string
	s.Each(func(m any) { names = append(names, m.(*Counter).Name) })
	if len(names) != 1 || names[0] != "cluster.b.upstream_rq_total" {
		t.Fatalf("after Remove: %v", names)
	}
}
