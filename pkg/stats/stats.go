// Package stats is the proxy's statistics store: counters, gauges and
// histograms named as Envoy names them ("cluster.<name>.upstream_rq_total"),
// rendered flat for /stats and with extracted tags for /stats/prometheus
// ("envoy_cluster_upstream_rq_total{cluster_name="<name>"}").
//
// Metrics are created when config is compiled and kept as pointers by the
// code that updates them, so the request path only does atomic adds.
package stats

import (
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// Tag is one extracted label: the name Prometheus shows and its value.
type Tag struct{ Name, Value string }

// Store holds every metric of one process. The zero value is not usable:
// call New.
type Store struct {
	mu      sync.Mutex
	metrics map[string]metric // by flat name
}

type metric interface{ meta() *Meta }

// Meta is what a metric is called: its flat Envoy name, and its Prometheus
// name and labels.
type Meta struct {
	Name     string // flat: "cluster.outbound|80||a.ns.svc.cluster.local.upstream_rq_total"
	PromName string // "envoy_cluster_upstream_rq_total"
	Tags     []Tag
}

func (m *Meta) meta() *Meta { return m }

// New returns an empty store.
func New() *Store { return &Store{metrics: map[string]metric{}} }

// Scope is a naming prefix with the tags it carries, such as a cluster's
// ("cluster.<name>", cluster_name=<name>).
type Scope struct {
	store      *Store
	flatPrefix string // "cluster.x." (with trailing dot) or ""
	promPrefix string // "envoy_cluster_"
	tags       []Tag
}

// Scope makes a scope. flat is the Envoy prefix including the tag values
// ("cluster.outbound|80||x"); prom is the same prefix with the tag values
// taken out ("cluster"); tags are those values with their label names.
func (s *Store) Scope(flat, prom string, tags ...Tag) *Scope {
	sc := &Scope{store: s, tags: tags}
	if flat != "" {
		sc.flatPrefix = flat + "."
	}
	sc.promPrefix = "envoy_"
	if prom != "" {
		sc.promPrefix += sanitize(prom) + "_"
	}
	return sc
}

// Root is the scope with no prefix ("server.live" and the like).
func (s *Store) Root() *Scope { return s.Scope("", "") }

func (sc *Scope) metaFor(name string) Meta {
	return Meta{Name: sc.flatPrefix + name, PromName: sc.promPrefix + sanitize(name), Tags: sc.tags}
}

// Counter returns the named counter, creating it on first use.
func (sc *Scope) Counter(name string) *Counter {
	m := sc.metaFor(name)
	return getOrCreate(sc.store, m.Name, func() *Counter { return &Counter{Meta: m} })
}

// Gauge returns the named gauge, creating it on first use.
func (sc *Scope) Gauge(name string) *Gauge {
	m := sc.metaFor(name)
	return getOrCreate(sc.store, m.Name, func() *Gauge { return &Gauge{Meta: m} })
}

// Histogram returns the named histogram (values in milliseconds), creating
// it on first use.
func (sc *Scope) Histogram(name string) *Histogram {
	m := sc.metaFor(name)
	return getOrCreate(sc.store, m.Name, func() *Histogram { return &Histogram{Meta: m} })
}

func getOrCreate[T metric](s *Store, name string, mk func() T) T {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.metrics[name]; ok {
		if t, ok := m.(T); ok {
			return t
		}
	}
	t := mk()
	s.metrics[name] = t
	return t
}

// Remove drops every metric whose flat name starts with prefix, e.g. a
// removed cluster's "cluster.<name>.".
func (s *Store) Remove(prefix string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for n := range s.metrics {
		if strings.HasPrefix(n, prefix) {
			delete(s.metrics, n)
		}
	}
}

// Counter only goes up.
type Counter struct {
	Meta
	v atomic.Uint64
}

func (c *Counter) Inc()          { c.v.Add(1) }
func (c *Counter) Add(n uint64)  { c.v.Add(n) }
func (c *Counter) Value() uint64 { return c.v.Load() }

// Gauge goes up and down.
type Gauge struct {
	Meta
	v atomic.Int64
}

func (g *Gauge) Inc()         { g.v.Add(1) }
func (g *Gauge) Dec()         { g.v.Add(-1) }
func (g *Gauge) Add(n int64)  { g.v.Add(n) }
func (g *Gauge) Set(n int64)  { g.v.Store(n) }
func (g *Gauge) Value() int64 { return g.v.Load() }

// Buckets are Envoy's default histogram bucket bounds, in milliseconds.
var Buckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// Histogram counts values into Buckets.
type Histogram struct {
	Meta
	counts    [20]atomic.Uint64 // len(Buckets)+1, the last is +Inf
	count     atomic.Uint64
	sumMicros atomic.Uint64
}

// Record adds one value in milliseconds.
func (h *Histogram) Record(ms float64) {
	i := sort.SearchFloat64s(Buckets, ms)
	h.counts[i].Add(1)
	h.count.Add(1)
	if ms > 0 {
		h.sumMicros.Add(uint64(math.Round(ms * 1000)))
	}
}

// HistogramSnapshot is a histogram's state at one moment.
type HistogramSnapshot struct {
	Cumulative []uint64 // per bucket of Buckets, cumulative; then +Inf
	Count      uint64
	Sum        float64 // ms
}

// Snapshot reads the histogram.
func (h *Histogram) Snapshot() HistogramSnapshot {
	s := HistogramSnapshot{Cumulative: make([]uint64, len(Buckets)+1)}
	var run uint64
	for i := range s.Cumulative {
		run += h.counts[i].Load()
		s.Cumulative[i] = run
	}
	s.Count = h.count.Load()
	s.Sum = float64(h.sumMicros.Load()) / 1000
	return s
}

// Quantile estimates quantile q (0..1) in ms from the buckets: the upper
// bound of the bucket where it falls.
func (s HistogramSnapshot) Quantile(q float64) float64 {
	if s.Count == 0 {
		return math.NaN()
	}
	target := uint64(math.Ceil(q * float64(s.Count)))
	for i, c := range s.Cumulative {
		if c >= target {
			if i < len(Buckets) {
				return Buckets[i]
			}
			return math.Inf(1)
		}
	}
	return math.Inf(1)
}

// Each visits every metric in flat-name order: *Counter, *Gauge or *Histogram.
func (s *Store) Each(fn func(any)) {
	s.mu.Lock()
	names := make([]string, 0, len(s.metrics))
	for n := range s.metrics {
		names = append(names, n)
	}
	ms := make([]metric, 0, len(names))
	sort.Strings(names)
	for _, n := range names {
		ms = append(ms, s.metrics[n])
	}
	s.mu.Unlock()
	for _, m := range ms {
		fn(m)
	}
}

// Lookup returns the metric with this flat name, or nil.
func (s *Store) Lookup(name string) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.metrics[name]; ok {
		return m
	}
	return nil
}

// CounterValue is a convenience for tests and the admin page: the value of
// a counter by flat name, 0 when absent.
func (s *Store) CounterValue(name string) uint64 {
	if c, ok := s.Lookup(name).(*Counter); ok {
		return c.Value()
	}
	return 0
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_':
			return r
		}
		return '_'
	}, s)
}
