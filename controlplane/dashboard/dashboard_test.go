package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// exposition is what a proxy's :15090/stats/prometheus shows, written by
// hand in Istio's names: ok and failed calls from reviews-v2 to ratings
// (source reporter), the calls from productpage to reviews as both ends
// report them (the server saw mutual TLS), with a duration histogram.
func exposition(ok, failed, pp int) string {
	const src = `source_workload="reviews-v2",source_workload_namespace="default",source_app="reviews",source_version="v2",` +
		`destination_workload="ratings-v1",destination_workload_namespace="default",destination_app="ratings",destination_version="v1",` +
		`destination_service="ratings.default.svc.cluster.local",destination_service_name="ratings",destination_service_namespace="default",` +
		`request_protocol="http",response_flags="-",connection_security_policy="unknown",source_principal="spiffe://cluster.local/ns/default/sa/bookinfo-reviews"`
	const pp2rev = `source_workload="productpage-v1",source_workload_namespace="default",source_app="productpage",source_version="v1",` +
		`destination_workload="reviews-v1",destination_workload_namespace="default",destination_app="reviews",destination_version="v1",` +
		`destination_service="reviews.default.svc.cluster.local",destination_service_name="reviews",destination_service_namespace="default",` +
		`request_protocol="http",response_flags="-"`
	var b strings.Builder
	fmt.Fprintln(&b, "# TYPE istio_requests_total counter")
	fmt.Fprintf(&b, "istio_requests_total{reporter=\"source\",%s,response_code=\"200\"} %d\n", src, ok)
	fmt.Fprintf(&b, "istio_requests_total{reporter=\"source\",%s,response_code=\"500\"} %d\n", src, failed)
	fmt.Fprintf(&b, "istio_requests_total{reporter=\"source\",%s,connection_security_policy=\"unknown\",response_code=\"200\"} %d\n", pp2rev, pp)
	fmt.Fprintf(&b, "istio_requests_total{reporter=\"destination\",%s,connection_security_policy=\"mutual_tls\",response_code=\"200\"} %d\n", pp2rev, pp)
	fmt.Fprintln(&b, "# TYPE istio_request_duration_milliseconds histogram")
	// Every productpage → reviews call took between 10 and 25 ms.
	for _, le := range []string{"1", "10", "25", "50", "+Inf"} {
		n := pp
		if le == "1" || le == "10" {
			n = 0
		}
		fmt.Fprintf(&b, "istio_request_duration_milliseconds_bucket{reporter=\"source\",%s,connection_security_policy=\"unknown\",response_code=\"200\",le=%q} %d\n", pp2rev, le, n)
	}
	fmt.Fprintf(&b, "istio_request_duration_milliseconds_sum{reporter=\"source\",%s,connection_security_policy=\"unknown\",response_code=\"200\"} %d\n", pp2rev, pp*20)
	fmt.Fprintf(&b, "istio_request_duration_milliseconds_count{reporter=\"source\",%s,connection_security_policy=\"unknown\",response_code=\"200\"} %d\n", pp2rev, pp)
	fmt.Fprintln(&b, "# TYPE envoy_cluster_upstream_rq counter\nenvoy_cluster_upstream_rq{cluster=\"x\"} 7")
	return b.String()
}

// proxyStats serves the exposition of the counts held, as a proxy does.
type proxyStats struct{ ok, failed, pp atomic.Int64 }

func (p *proxyStats) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	io.WriteString(w, exposition(int(p.ok.Load()), int(p.failed.Load()), int(p.pp.Load())))
}

func getJSON(t *testing.T, url string, out any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("GET %s: %v: %s", url, err, b)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-6*math.Max(1, math.Abs(b)) }

// The scraper reads a proxy over HTTP twice; the graph then shows the
// edges with the rates, error share, p99 and lock the counts imply.
func TestGraphFromScrapedProxies(t *testing.T) {
	stats := &proxyStats{}
	stats.ok.Store(100)
	stats.pp.Store(40)
	proxy := httptest.NewServer(stats)
	defer proxy.Close()
	s := &Scraper{Interval: time.Hour, Targets: func(context.Context) ([]Target, error) {
		return []Target{{Name: "default/reviews-v2", URL: proxy.URL + "/stats/prometheus"}, {Name: "default/gone", URL: "http://127.0.0.1:1/stats/prometheus"}}, nil
	}}
	s.Scrape(context.Background())
	// 90 ok and 10 failed calls to ratings, 50 from productpage.
	stats.ok.Add(90)
	stats.failed.Add(10)
	stats.pp.Add(50)
	time.Sleep(20 * time.Millisecond)
	s.Scrape(context.Background())
	if e := s.Errors()["default/gone"]; e == "" {
		t.Errorf("a proxy that does not answer: no scrape error reported (errors %v)", s.Errors())
	}
	secs := s.snaps[1].at.Sub(s.snaps[0].at).Seconds()

	srv := httptest.NewServer(Handler(Options{Source: s}))
	defer srv.Close()
	var g Graph
	getJSON(t, srv.URL+"/dashboard/api/graph?window=1m", &g)
	edges := map[string]Edge{}
	for _, e := range g.Edges {
		edges[e.Source+" -> "+e.Target] = e
	}
	check := func(name string, rate, errRate float64, red, mtls bool, p99 float64) {
		t.Helper()
		e, ok := edges[name]
		if !ok {
			t.Fatalf("no edge %s in the graph; edges: %+v", name, g.Edges)
		}
		if !near(e.Rate, rate) || !near(e.ErrorRate, errRate) || e.Red != red || e.MTLS != mtls {
			t.Errorf("edge %s = rate %v, errors %v, red %v, mtls %v; want %v, %v, %v, %v", name, e.Rate, e.ErrorRate, e.Red, e.MTLS, rate, errRate, red, mtls)
		}
		if p99 >= 0 && !near(e.P99, p99) {
			t.Errorf("edge %s p99 = %v ms, want %v", name, e.P99, p99)
		}
	}
	// Calls within (10, 25] ms: p99 is interpolated at 10 + 15*0.99.
	check("workload:default/productpage-v1 -> service:default/reviews", 50/secs, 0, false, true, 10+15*0.99)
	check("service:default/reviews -> workload:default/reviews-v1", 50/secs, 0, false, true, 10+15*0.99)
	check("workload:default/reviews-v2 -> service:default/ratings", 100/secs, 0.1, true, false, -1)
	check("service:default/ratings -> workload:default/ratings-v1", 100/secs, 0.1, true, false, -1)
	if len(g.Edges) != 4 {
		t.Errorf("%d edges, want 4 (the destination reports of productpage → reviews are not counted twice): %+v", len(g.Edges), g.Edges)
	}

	// The service page: signals over time from the kept scrapes.
	var p ServicePage
	getJSON(t, srv.URL+"/dashboard/api/service?namespace=default&name=ratings&span=1m", &p)
	last := p.Signals[len(p.Signals)-1]
	if !near(last.Rate, 100/secs) || !near(last.ErrorRate, 0.1) {
		t.Errorf("ratings' last signals = %+v, want %v rps and 10%% errors", last, 100/secs)
	}
}

// A counter that goes down was reset (the proxy restarted): the new value
// counts from zero, as PromQL's rate() does.
func TestScraperCounterReset(t *testing.T) {
	stats := &proxyStats{}
	stats.ok.Store(1000)
	proxy := httptest.NewServer(stats)
	defer proxy.Close()
	s := &Scraper{Targets: func(context.Context) ([]Target, error) { return []Target{{Name: "p", URL: proxy.URL}}, nil }}
	s.Scrape(context.Background())
	stats.ok.Store(30)
	s.Scrape(context.Background())
	secs := s.snaps[1].at.Sub(s.snaps[0].at).Seconds()
	rs, _ := s.RatesRange(context.Background(), time.Now(), time.Now(), 0, time.Minute, map[string]string{"destination_service_name": "ratings"})
	g := BuildGraph(rs[0], time.Minute, "")
	for _, e := range g.Edges {
		if e.Target == "service:default/ratings" && !near(e.Rate, 30/secs) {
			t.Errorf("after a reset to 30 the rate is %v, want %v", e.Rate, 30/secs)
		}
	}
}

func TestQuantile(t *testing.T) {
	inf := math.Inf(1)
	for _, c := range []struct {
		q    float64
		b    map[float64]float64
		want float64
	}{
		{0.5, map[float64]float64{10: 0, 20: 10, inf: 10}, 15},
		{0.99, map[float64]float64{10: 5, 20: 5, inf: 10}, 20}, // in +Inf: the highest finite bound
		{0.5, map[float64]float64{10: 0, inf: 0}, -1},
		{0.5, map[float64]float64{10: 4}, -1}, // no +Inf: not a histogram
		{0.25, map[float64]float64{1: 1, 2: 2, 4: 4, inf: 4}, 1},
	} {
		if got := quantile(c.q, c.b); !near(got, c.want) {
			t.Errorf("quantile(%v, %v) = %v, want %v", c.q, c.b, got, c.want)
		}
	}
}

func TestAppliesTo(t *testing.T) {
	obj := func(kind, ns, name, spec string) ConfigObject {
		return ConfigObject{Kind: kind, Namespace: ns, Name: name, Spec: json.RawMessage(spec)}
	}
	v := &ConfigView{Objects: []ConfigObject{
		obj("Service", "default", "reviews", `{"spec":{"selector":{"app":"reviews"}}}`),
		obj("VirtualService", "default", "reviews", `{"hosts":["reviews"]}`),
		obj("VirtualService", "default", "ratings", `{"hosts":["ratings"]}`),
		obj("VirtualService", "other", "short", `{"hosts":["reviews"]}`), // reviews.other
		obj("VirtualService", "istio-system", "fqdn", `{"hosts":["reviews.default.svc.cluster.local"]}`),
		obj("VirtualService", "default", "bookinfo", `{"hosts":["*"],"gateways":["bookinfo-gateway"],"http":[{"route":[{"destination":{"host":"productpage"}}]}]}`),
		obj("VirtualService", "default", "via-gateway", `{"hosts":["*"],"gateways":["bookinfo-gateway"],"http":[{"route":[{"destination":{"host":"reviews"}}]}]}`),
		obj("DestinationRule", "default", "reviews", `{"host":"reviews.default"}`),
		obj("AuthorizationPolicy", "default", "reviews-viewer", `{"selector":{"matchLabels":{"app":"reviews"}}}`),
		obj("AuthorizationPolicy", "default", "ratings-viewer", `{"selector":{"matchLabels":{"app":"ratings"}}}`),
		obj("PeerAuthentication", "istio-system", "default", `{"mtls":{"mode":"STRICT"}}`),
		obj("PeerAuthentication", "other", "default", `{}`),
		obj("HTTPRoute", "default", "reviews", `{"rules":[{"backendRefs":[{"name":"reviews","port":9080}]}]}`),
	}}
	var got []string
	for _, o := range AppliesTo(v, "reviews", "default") {
		got = append(got, o.Kind+" "+o.Namespace+"/"+o.Name)
	}
	want := []string{"Service default/reviews", "VirtualService default/reviews", "VirtualService istio-system/fqdn",
		"VirtualService default/via-gateway", "DestinationRule default/reviews", "AuthorizationPolicy default/reviews-viewer", "PeerAuthentication istio-system/default", "HTTPRoute default/reviews"}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("config applying to reviews.default:\n got %v\nwant %v", got, want)
	}
}

// The page and its assets come from the dashboard itself: no absolute URL
// that a browser would fetch.
func TestAssetsAreLocal(t *testing.T) {
	srv := httptest.NewServer(Handler(Options{}))
	defer srv.Close()
	ref := regexp.MustCompile(`(?:src|href)="([^"]*)"`)
	for _, path := range []string{"/dashboard/", "/dashboard/static/app.js", "/dashboard/static/style.css"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", path, resp.Status)
		}
		for _, m := range ref.FindAllStringSubmatch(string(b), -1) {
			if strings.Contains(m[1], "//") {
				t.Errorf("%s refers to %q, outside the dashboard", path, m[1])
			}
		}
		if strings.Contains(string(b), "@import") || strings.Contains(string(b), "url(http") {
			t.Errorf("%s imports from elsewhere", path)
		}
	}
	resp, err := http.Get(srv.URL + "/dashboard/api/graph")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "--prometheus") {
		t.Errorf("graph without a metrics source: %s %q, want 503 saying how to give one", resp.Status, b)
	}
}

// The gateway's calls as both ends report them, the server having seen
// the Host header's IP for a service: one edge through productpage, with
// the lock; and a caller from outside the mesh, addressing the pod by
// IP, goes straight to the workload.
func TestGraphDeduplicatesServerReports(t *testing.T) {
	gw := map[string]string{"source_workload": "istio-ingressgateway", "source_workload_namespace": "istio-system",
		"destination_workload": "productpage-v1", "destination_workload_namespace": "default", "destination_app": "productpage", "response_code": "200"}
	with := func(l map[string]string, kv ...string) map[string]string {
		out := cloneWith(l, kv[0], kv[1])
		for i := 2; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	g := BuildGraph(Rates{Requests: []Sample{
		{Labels: with(gw, "reporter", "source", "destination_service_name", "productpage", "destination_service_namespace", "default", "connection_security_policy", "unknown"), Value: 2},
		{Labels: with(gw, "reporter", "destination", "destination_service_name", "127", "destination_service", "127.0.0.1:8080", "connection_security_policy", "mutual_tls"), Value: 2},
		{Labels: map[string]string{"reporter": "destination", "source_workload": "unknown", "destination_workload": "productpage-v1",
			"destination_workload_namespace": "default", "destination_service_name": "198", "response_code": "200", "connection_security_policy": "none"}, Value: 1},
	}}, time.Minute, "")
	var got []string
	for _, e := range g.Edges {
		got = append(got, fmt.Sprintf("%s->%s %.0f mtls=%v", e.Source, e.Target, e.Rate, e.MTLS))
	}
	want := []string{
		"service:default/productpage->workload:default/productpage-v1 2 mtls=true",
		"unknown->workload:default/productpage-v1 1 mtls=false",
		"workload:istio-system/istio-ingressgateway->service:default/productpage 2 mtls=true",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("edges:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
