package dashboard

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/internal/testing/promtest"
)

// startPrometheus runs Debian's prometheus scraping target every second.
func startPrometheus(t *testing.T, target string) string {
	t.Helper()
	return promtest.Start(t, fmt.Sprintf("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n- job_name: proxy\n  metrics_path: /stats/prometheus\n  static_configs:\n  - targets: [%q]\n", target))
}

// Against a real Prometheus scraping a proxy's exposition, the graph and
// the service signals come out as from the dashboard's own scrapes: the
// same edges, error share and p99, from the PromQL the dashboard sends.
func TestGraphFromPrometheus(t *testing.T) {
	stats := &proxyStats{}
	proxy := httptest.NewServer(stats)
	defer proxy.Close()
	prom := &Prometheus{URL: startPrometheus(t, strings.TrimPrefix(proxy.URL, "http://"))}
	ctx := context.Background()
	// Counts grow by 9 ok, 1 failed and 5 productpage calls every 100 ms,
	// for at most 60 s, until Prometheus has the rates of both edges.
	var g Graph
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; ; i++ {
		stats.ok.Add(9)
		stats.failed.Add(1)
		stats.pp.Add(5)
		time.Sleep(100 * time.Millisecond)
		if i%10 != 9 {
			continue
		}
		rs, err := prom.RatesRange(ctx, time.Now(), time.Now(), 0, 10*time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		g = BuildGraph(rs[0], 10*time.Second, prom.Describe())
		if len(g.Edges) == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus at %s gives no graph of the 4 edges within 60 s: %+v", prom.URL, g.Edges)
		}
	}
	for _, e := range g.Edges {
		switch e.Target {
		case "service:default/ratings":
			// About 10%: a scrape may fall between the two counters' updates.
			if e.ErrorRate < 0.08 || e.ErrorRate > 0.12 || !e.Red || e.Rate <= 0 {
				t.Errorf("reviews-v2 → ratings: %+v, want 10%% errors, red", e)
			}
		case "service:default/reviews":
			if !e.MTLS || e.P99 <= 10 || e.P99 > 25 {
				t.Errorf("productpage → reviews: %+v, want the lock and a p99 within (10, 25] ms", e)
			}
		}
	}
	// query_range: the service page over the last 20 s, one point per 2 s.
	rs, err := prom.RatesRange(ctx, time.Now().Add(-20*time.Second), time.Now(), 2*time.Second, 10*time.Second,
		map[string]string{"destination_service_name": "ratings", "destination_service_namespace": "default"})
	if err != nil {
		t.Fatal(err)
	}
	sig := ServiceSignals(rs)
	if len(sig) != 11 {
		t.Fatalf("%d points for 20 s at 2 s, want 11", len(sig))
	}
	last := sig[len(sig)-1]
	if last.NoData || last.Rate <= 0 || last.ErrorRate < 0.08 || last.ErrorRate > 0.12 {
		t.Errorf("ratings' last point from query_range: %+v, want traffic with 10%% errors", last)
	}
	// A query Prometheus refuses says so.
	if _, err := prom.Query(ctx, "sum(", time.Now()); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("a bad query: error %v, want Prometheus's refusal", err)
	}
}
