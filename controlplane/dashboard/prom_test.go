package dashboard

import (
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startPrometheus runs Debian's prometheus scraping target every second.
func startPrometheus(t *testing.T, target string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("this test runs Debian's prometheus: apt-get install prometheus (scripts/test.sh does)")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n- job_name: proxy\n  metrics_path: /stats/prometheus\n  static_configs:\n  - targets: [%q]\n", target)), 0o644)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var log strings.Builder
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus:\n%s", log.String())
		}
	})
	return "http://" + addr
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
