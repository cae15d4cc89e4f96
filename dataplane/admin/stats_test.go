package admin

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/pkg/stats"
)

// knownStore holds a few metrics with known values, including a cluster
// name that needs label escaping.
func knownStore() *stats.Store {
	st := stats.New()
	a := st.Scope("cluster.outbound|80||a.ns.svc.cluster.local", "cluster",
		stats.Tag{Name: "cluster_name", Value: "outbound|80||a.ns.svc.cluster.local"})
	b := st.Scope(`cluster.we"ird\name`, "cluster", stats.Tag{Name: "cluster_name", Value: "we\"ird\\na\nme"})
	a.Counter("upstream_rq_total").Add(7)
	b.Counter("upstream_rq_total").Add(3)
	a.Counter("upstream_rq_timeout")
	a.Gauge("upstream_cx_active").Set(2)
	b.Gauge("upstream_cx_active").Set(-1)
	h := a.Histogram("upstream_rq_time")
	for _, v := range []float64{0.2, 3, 3, 40, 700, 5000000} {
		h.Record(v)
	}
	b.Histogram("upstream_rq_time")
	st.Root().Gauge("server.total_connections").Set(1)
	return st
}

func get(t *testing.T, h http.Handler, path string) (int, string, http.Header) {
	t.Helper()
	ts := httptest.NewServer(h)
	defer ts.Close()
	resp, err := ts.Client().Get(ts.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body), resp.Header
}

func TestStatsTextLines(t *testing.T) {
	h := New(Options{Store: knownStore()}).Handler()
	code, body, hdr := get(t, h, "/stats")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") {
		t.Fatalf("/stats: %d %q", code, hdr.Get("Content-Type"))
	}
	want := "" +
		"cluster.outbound|80||a.ns.svc.cluster.local.upstream_cx_active: 2\n" +
		"cluster.outbound|80||a.ns.svc.cluster.local.upstream_rq_timeout: 0\n" +
		"cluster.outbound|80||a.ns.svc.cluster.local.upstream_rq_total: 7\n" +
		"cluster.we\"ird\\name.upstream_cx_active: -1\n" +
		"cluster.we\"ird\\name.upstream_rq_total: 3\n" +
		"server.live: 0\n" +
		"server.state: 2\n" +
		"server.total_connections: 1\n" +
		// 6 samples: 0.2 | 3 3 | 40 | 700 | 5e6 (past the last bound).
		"cluster.outbound|80||a.ns.svc.cluster.local.upstream_rq_time: P0(nan,0.5) P25(nan,5) P50(nan,5) P75(nan,1000) P90(nan,3600000) P95(nan,3600000) P99(nan,3600000) P99.5(nan,3600000) P99.9(nan,3600000) P100(nan,3600000)\n" +
		"cluster.we\"ird\\name.upstream_rq_time: No recorded values\n"
	if body != want {
		t.Errorf("/stats:\n%s\nwant:\n%s", body, want)
	}
}

func TestStatsFilterUsedOnlyAndType(t *testing.T) {
	h := New(Options{Store: knownStore()}).Handler()
	cases := []struct{ q, want string }{
		{"?filter=rq_total$", "cluster.outbound|80||a.ns.svc.cluster.local.upstream_rq_total: 7\ncluster.we\"ird\\name.upstream_rq_total: 3\n"},
		{"?filter=outbound&usedonly", "cluster.outbound|80||a.ns.svc.cluster.local.upstream_cx_active: 2\n" +
			"cluster.outbound|80||a.ns.svc.cluster.local.upstream_rq_total: 7\n" +
			"cluster.outbound|80||a.ns.svc.cluster.local.upstream_rq_time: P0(nan,0.5) P25(nan,5) P50(nan,5) P75(nan,1000) P90(nan,3600000) P95(nan,3600000) P99(nan,3600000) P99.5(nan,3600000) P99.9(nan,3600000) P100(nan,3600000)\n"},
		{"?type=Gauges", "cluster.outbound|80||a.ns.svc.cluster.local.upstream_cx_active: 2\ncluster.we\"ird\\name.upstream_cx_active: -1\nserver.live: 0\nserver.state: 2\nserver.total_connections: 1\n"},
		{"?type=Histograms&usedonly&filter=weird", ""},
	}
	for _, c := range cases {
		code, body, _ := get(t, h, "/stats"+c.q)
		if code != 200 || body != c.want {
			t.Errorf("/stats%s: %d\n%s\nwant:\n%s", c.q, code, body, c.want)
		}
	}
	for _, q := range []string{"?filter=(", "?type=Bogus", "?format=xml"} {
		if code, body, _ := get(t, h, "/stats"+q); code != 400 || body == "" {
			t.Errorf("/stats%s: %d %q, want 400 with a reason", q, code, body)
		}
	}
}

func TestStatsJSON(t *testing.T) {
	h := New(Options{Store: knownStore()}).Handler()
	code, body, hdr := get(t, h, "/stats?format=json")
	if code != 200 || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %q", code, hdr.Get("Content-Type"))
	}
	var doc struct {
		Stats []json.RawMessage `json:"stats"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	if len(doc.Stats) != 9 {
		t.Fatalf("want 8 stats and 1 histograms entry, got %d: %s", len(doc.Stats), body)
	}
	var first struct {
		Name  string `json:"name"`
		Value int64  `json:"value"`
	}
	json.Unmarshal(doc.Stats[3], &first)
	if first.Name != `cluster.we"ird\name.upstream_cx_active` || first.Value != -1 {
		t.Errorf("stats[3] = %+v", first)
	}
	var hist struct {
		Histograms struct {
			Supported []float64 `json:"supported_quantiles"`
			Computed  []struct {
				Name   string `json:"name"`
				Values []struct {
					Interval   *float64 `json:"interval"`
					Cumulative *float64 `json:"cumulative"`
				} `json:"values"`
			} `json:"computed_quantiles"`
		} `json:"histograms"`
	}
	if err := json.Unmarshal(doc.Stats[8], &hist); err != nil {
		t.Fatal(err)
	}
	hs := hist.Histograms
	if fmt.Sprint(hs.Supported) != "[0 25 50 75 90 95 99 99.5 99.9 100]" || len(hs.Computed) != 2 {
		t.Fatalf("histograms: %+v", hs)
	}
	if v := hs.Computed[0].Values; len(v) != 10 || v[1].Cumulative == nil || *v[1].Cumulative != 5 || v[1].Interval != nil {
		t.Errorf("P25 of %s: %+v", hs.Computed[0].Name, v)
	}
	if v := hs.Computed[1].Values; v[0].Cumulative != nil {
		t.Errorf("empty histogram %s has a P0", hs.Computed[1].Name)
	}
}

// promSample is one parsed sample line.
type promSample struct {
	name   string
	labels map[string]string
	value  float64
}

// parseExposition checks text against the Prometheus 0.0.4 text format
// strictly and returns the TYPE of each name and the samples in order.
func parseExposition(t *testing.T, text string) (map[string]string, []promSample) {
	t.Helper()
	if text != "" && !strings.HasSuffix(text, "\n") {
		t.Fatal("exposition does not end in a newline")
	}
	types := map[string]string{}
	var samples []promSample
	family := "" // the name of the last TYPE line
	closed := map[string]bool{}
	for ln, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if strings.HasPrefix(line, "#") {
			f := strings.Fields(line)
			if len(f) != 4 || f[1] != "TYPE" {
				t.Fatalf("line %d: bad comment %q", ln+1, line)
			}
			if _, dup := types[f[2]]; dup {
				t.Fatalf("line %d: second TYPE line for %s", ln+1, f[2])
			}
			switch f[3] {
			case "counter", "gauge", "histogram":
			default:
				t.Fatalf("line %d: type %q", ln+1, f[3])
			}
			if family != "" {
				closed[family] = true
			}
			types[f[2]], family = f[3], f[2]
			continue
		}
		s := parseSample(t, ln+1, line)
		base := s.name
		if types[family] == "histogram" {
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if strings.HasSuffix(base, suf) && strings.TrimSuffix(base, suf) == family {
					base = family
				}
			}
		}
		if base != family || closed[base] {
			t.Fatalf("line %d: sample %s outside its family's group (current %s)", ln+1, s.name, family)
		}
		samples = append(samples, s)
	}
	return types, samples
}

func parseSample(t *testing.T, ln int, line string) promSample {
	t.Helper()
	s := promSample{labels: map[string]string{}}
	i := strings.IndexAny(line, "{ ")
	if i <= 0 {
		t.Fatalf("line %d: no metric name: %q", ln, line)
	}
	s.name = line[:i]
	for j, c := range s.name {
		if !(c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || j > 0 && c >= '0' && c <= '9') {
			t.Fatalf("line %d: bad metric name %q", ln, s.name)
		}
	}
	rest := line[i:]
	if rest[0] == '{' {
		rest = rest[1:]
		for rest[0] != '}' {
			eq := strings.Index(rest, `="`)
			if eq <= 0 {
				t.Fatalf("line %d: bad label in %q", ln, line)
			}
			name := rest[:eq]
			rest = rest[eq+2:]
			var val strings.Builder
			for {
				if rest == "" {
					t.Fatalf("line %d: unterminated label value", ln)
				}
				c := rest[0]
				rest = rest[1:]
				if c == '"' {
					break
				}
				if c == '\n' {
					t.Fatalf("line %d: raw newline in label", ln)
				}
				if c == '\\' {
					switch rest[0] {
					case '\\':
						val.WriteByte('\\')
					case '"':
						val.WriteByte('"')
					case 'n':
						val.WriteByte('\n')
					default:
						t.Fatalf("line %d: bad escape \\%c", ln, rest[0])
					}
					rest = rest[1:]
					continue
				}
				val.WriteByte(c)
			}
			if _, dup := s.labels[name]; dup {
				t.Fatalf("line %d: label %s twice", ln, name)
			}
			s.labels[name] = val.String()
			if rest[0] == ',' {
				rest = rest[1:]
			}
		}
		rest = rest[1:]
	}
	if !strings.HasPrefix(rest, " ") {
		t.Fatalf("line %d: no value: %q", ln, line)
	}
	v, err := strconv.ParseFloat(strings.TrimPrefix(rest, " "), 64)
	if err != nil {
		t.Fatalf("line %d: value: %v", ln, err)
	}
	s.value = v
	return s
}

func TestPrometheusExposition(t *testing.T) {
	code, body, hdr := get(t, PrometheusHandler(knownStore()), "/stats/prometheus")
	if code != 200 || hdr.Get("Content-Type") != PrometheusContentType {
		t.Fatalf("%d %q", code, hdr.Get("Content-Type"))
	}
	types, samples := parseExposition(t, body)
	wantTypes := map[string]string{
		"envoy_cluster_upstream_rq_total":   "counter",
		"envoy_cluster_upstream_rq_timeout": "counter",
		"envoy_cluster_upstream_cx_active":  "gauge",
		"envoy_server_total_connections":    "gauge",
		"envoy_cluster_upstream_rq_time":    "histogram",
	}
	if fmt.Sprint(types) != fmt.Sprint(wantTypes) {
		t.Errorf("types %v, want %v", types, wantTypes)
	}
	// Envoy's order: counters, gauges, histograms; names sorted in each.
	if !strings.HasPrefix(body, "# TYPE envoy_cluster_upstream_rq_timeout counter\n") ||
		strings.Index(body, "# TYPE envoy_server_total_connections gauge") > strings.Index(body, "# TYPE envoy_cluster_upstream_rq_time histogram") {
		t.Errorf("order:\n%s", body)
	}
	weird := "we\"ird\\na\nme"
	byKey := map[string]float64{}
	for _, s := range samples {
		byKey[s.name+"|"+s.labels["cluster_name"]+"|"+s.labels["le"]] = s.value
	}
	for k, want := range map[string]float64{
		"envoy_cluster_upstream_rq_total|outbound|80||a.ns.svc.cluster.local|":    7,
		"envoy_cluster_upstream_rq_total|" + weird + "|":                          3,
		"envoy_cluster_upstream_cx_active|" + weird + "|":                         -1,
		"envoy_server_total_connections||":                                        1,
		"envoy_cluster_upstream_rq_time_count|" + weird + "|":                     0,
		"envoy_cluster_upstream_rq_time_sum|outbound|80||a.ns.svc.cluster.local|": 0.2 + 3 + 3 + 40 + 700 + 5000000,
	} {
		if got, ok := byKey[k]; !ok || math.Abs(got-want) > 1e-6 {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, want)
		}
	}
	if !strings.Contains(body, "envoy_server_total_connections{} 1\n") {
		t.Error("a series without labels is not written as Envoy does (name{} value)")
	}
	checkHistograms(t, samples, 2)
}

// checkHistograms verifies each histogram series: buckets in increasing le
// order, cumulative, ending in +Inf equal to _count.
func checkHistograms(t *testing.T, samples []promSample, wantSeries int) {
	t.Helper()
	type series struct {
		les    []float64
		counts []float64
		count  float64
		sum    bool
	}
	all := map[string]*series{}
	var order []string
	for _, s := range samples {
		base, suf := s.name, ""
		for _, x := range []string{"_bucket", "_sum", "_count"} {
			if strings.HasSuffix(s.name, x) {
				base, suf = strings.TrimSuffix(s.name, x), x
			}
		}
		if suf == "" {
			continue
		}
		key := base + "|" + s.labels["cluster_name"]
		sr := all[key]
		if sr == nil {
			sr = &series{count: -1}
			all[key] = sr
			order = append(order, key)
		}
		switch suf {
		case "_bucket":
			le, err := strconv.ParseFloat(s.labels["le"], 64)
			if err != nil {
				t.Fatalf("%s: le %q", key, s.labels["le"])
			}
			sr.les, sr.counts = append(sr.les, le), append(sr.counts, s.value)
		case "_sum":
			sr.sum = true
		case "_count":
			sr.count = s.value
		}
	}
	if len(all) != wantSeries {
		t.Fatalf("%d histogram series, want %d", len(all), wantSeries)
	}
	for _, key := range order {
		sr := all[key]
		if len(sr.les) != len(stats.Buckets)+1 || !math.IsInf(sr.les[len(sr.les)-1], 1) || !sr.sum {
			t.Fatalf("%s: %d buckets, last le %v, sum %v", key, len(sr.les), sr.les[len(sr.les)-1], sr.sum)
		}
		for i := 1; i < len(sr.les); i++ {
			if sr.les[i] <= sr.les[i-1] || sr.counts[i] < sr.counts[i-1] {
				t.Fatalf("%s: bucket %d not increasing/cumulative: le %v count %v", key, i, sr.les, sr.counts)
			}
		}
		if sr.counts[len(sr.counts)-1] != sr.count {
			t.Fatalf("%s: +Inf bucket %v != _count %v", key, sr.counts[len(sr.counts)-1], sr.count)
		}
	}
}

func TestPrometheusKnownBuckets(t *testing.T) {
	_, body, _ := get(t, PrometheusHandler(knownStore()), "/")
	for _, line := range []string{
		`envoy_cluster_upstream_rq_time_bucket{cluster_name="outbound|80||a.ns.svc.cluster.local",le="0.5"} 1`,
		`envoy_cluster_upstream_rq_time_bucket{cluster_name="outbound|80||a.ns.svc.cluster.local",le="5"} 3`,
		`envoy_cluster_upstream_rq_time_bucket{cluster_name="outbound|80||a.ns.svc.cluster.local",le="3600000"} 5`,
		`envoy_cluster_upstream_rq_time_bucket{cluster_name="outbound|80||a.ns.svc.cluster.local",le="+Inf"} 6`,
		`envoy_cluster_upstream_rq_time_count{cluster_name="outbound|80||a.ns.svc.cluster.local"} 6`,
		`envoy_cluster_upstream_rq_total{cluster_name="we\"ird\\na\nme"} 3`,
	} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("missing line %s", line)
		}
	}
}

func TestPrometheusUsedOnlyAndFilter(t *testing.T) {
	h := PrometheusHandler(knownStore())
	_, body, _ := get(t, h, "/?usedonly")
	types, samples := parseExposition(t, body)
	if _, ok := types["envoy_cluster_upstream_rq_timeout"]; ok {
		t.Error("usedonly kept a zero counter")
	}
	checkHistograms(t, samples, 1)
	_, body, _ = get(t, h, "/?filter=^server\\.")
	if body != "# TYPE envoy_server_total_connections gauge\nenvoy_server_total_connections{} 1\n" {
		t.Errorf("filter: %q", body)
	}
	if code, _, _ := get(t, h, "/?filter=%28"); code != 400 {
		t.Errorf("bad filter: %d, want 400", code)
	}
	// /stats?format=prometheus is the same rendering.
	_, viaStats, _ := get(t, New(Options{Store: knownStore()}).Handler(), "/stats?format=prometheus&filter=^server.total")
	if viaStats != "# TYPE envoy_server_total_connections gauge\nenvoy_server_total_connections{} 1\n" {
		t.Errorf("/stats?format=prometheus: %q", viaStats)
	}
}

func TestPrometheusNameCollisionAcrossTypesKeepsOneType(t *testing.T) {
	st := stats.New()
	st.Scope("a", "x").Counter("y").Inc() // envoy_x_y counter
	st.Scope("b", "x").Gauge("y").Set(4)  // envoy_x_y again, as a gauge
	_, body, _ := get(t, PrometheusHandler(st), "/")
	types, samples := parseExposition(t, body)
	if types["envoy_x_y"] != "counter" || len(samples) != 1 {
		t.Errorf("collision rendered as %q", body)
	}
}

// TestPrometheusScrapesDuringUpdates scrapes concurrently (sharing the
// pooled buffers) while counters and histograms move; every scrape must
// parse and keep +Inf equal to _count.
func TestPrometheusScrapesDuringUpdates(t *testing.T) {
	st := stats.New()
	var hs []*stats.Histogram
	var cs []*stats.Counter
	for i := range 50 {
		sc := st.Scope(fmt.Sprintf("cluster.c%d", i), "cluster", stats.Tag{Name: "cluster_name", Value: fmt.Sprintf("c%d", i)})
		hs = append(hs, sc.Histogram("upstream_rq_time"))
		cs = append(cs, sc.Counter("upstream_rq_total"))
	}
	ts := httptest.NewServer(PrometheusHandler(st))
	defer ts.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			hs[i%50].Record(float64(i % 700))
			cs[i%50].Inc()
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	var scrapeWG sync.WaitGroup
	errs := make(chan string, 8)
	for w := range 4 {
		scrapeWG.Add(1)
		go func() {
			defer scrapeWG.Done()
			for range 25 {
				if time.Now().After(deadline) {
					return
				}
				resp, err := ts.Client().Get(ts.URL)
				if err != nil {
					errs <- err.Error()
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if c := strings.Count(string(b), "# TYPE "); c != 2 {
					errs <- fmt.Sprintf("scraper %d: %d TYPE lines", w, c)
					return
				}
			}
		}()
	}
	scrapeWG.Wait()
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	_, body, _ := get(t, PrometheusHandler(st), "/")
	_, samples := parseExposition(t, body)
	checkHistograms(t, samples, 50)
}

func bigStore(series int) *stats.Store {
	st := stats.New()
	// Per cluster: 8 counters, 1 gauge, 1 histogram — about the mix a
	// cluster's ClusterStats has.
	for i := 0; i < series/10; i++ {
		name := fmt.Sprintf("outbound|%d||svc%d.ns.svc.cluster.local", 8000+i%100, i)
		sc := st.Scope("cluster."+name, "cluster", stats.Tag{Name: "cluster_name", Value: name})
		for _, c := range []string{"upstream_rq_total", "upstream_rq_2xx", "upstream_rq_5xx", "upstream_cx_total",
			"upstream_cx_connect_fail", "upstream_rq_retry", "upstream_rq_timeout", "upstream_rq_pending_total"} {
			sc.Counter(c).Add(uint64(i))
		}
		sc.Gauge("upstream_cx_active").Set(int64(i % 7))
		sc.Histogram("upstream_rq_time").Record(float64(i % 300))
	}
	return st
}

func TestPrometheusScrapeAllocationsBounded(t *testing.T) {
	st := bigStore(10000)
	WritePrometheus(io.Discard, st, false, nil) // warm the pool
	allocs := testing.AllocsPerRun(20, func() { WritePrometheus(io.Discard, st, false, nil) })
	// Store.Each copies its index (a few slices) and each of the 1000
	// histograms is snapshotted once; nothing may be allocated per series.
	if allocs > 1000+100 {
		t.Errorf("%v allocations per 10k-series scrape, want ≤ 1100", allocs)
	}
}

func BenchmarkPrometheus10kSeries(b *testing.B) {
	st := bigStore(10000)
	var n int
	b.ReportAllocs()
	for b.Loop() {
		cw := &countingWriter{}
		WritePrometheus(cw, st, false, nil)
		n = cw.n
	}
	b.ReportMetric(float64(n), "bytes/scrape")
}

type countingWriter struct{ n int }

func (c *countingWriter) Write(p []byte) (int, error) { c.n += len(p); return len(p), nil }
