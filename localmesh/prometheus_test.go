package localmesh

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Targets follow Istio's scrape annotations: every proxy on 15090, the
// application where it asks, nothing where a pod opts out.
func TestTargetGroups(t *testing.T) {
	got := TargetGroups([]ScrapeTarget{
		{Namespace: "default", Pod: "reviews-v1-abc", Labels: map[string]string{"app": "reviews", "version": "v1"}, IP: "198.18.0.5", Proxy: true},
		{Namespace: "default", Pod: "productpage-v1-x", Labels: map[string]string{"app": "productpage"}, IP: "198.18.0.6", Proxy: true,
			Annotations: map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "9080", "prometheus.io/path": "/metrics"}},
		// Annotations pointing at the agent's merged port: the proxy only.
		{Namespace: "default", Pod: "merged", IP: "198.18.0.7", Proxy: true,
			Annotations: map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "15020", "prometheus.io/path": "/stats/prometheus"}},
		{Namespace: "default", Pod: "opted-out", IP: "198.18.0.8", Proxy: true, Annotations: map[string]string{"prometheus.io/scrape": "false"}},
		{Namespace: "default", Pod: "no-sidecar", IP: "198.18.0.9"},
		{Namespace: "default", Pod: "app-only", IP: "198.18.0.10", Annotations: map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "8000"}},
	})
	b, _ := json.Marshal(got)
	want := `[{"targets":["198.18.0.5:15090"],"labels":{"__metrics_path__":"/stats/prometheus","app":"reviews","namespace":"default","pod":"reviews-v1-abc","version":"v1"}},` +
		`{"targets":["198.18.0.6:15090"],"labels":{"__metrics_path__":"/stats/prometheus","app":"productpage","namespace":"default","pod":"productpage-v1-x"}},` +
		`{"targets":["198.18.0.6:9080"],"labels":{"__metrics_path__":"/metrics","app":"productpage","namespace":"default","pod":"productpage-v1-x"}},` +
		`{"targets":["198.18.0.7:15090"],"labels":{"__metrics_path__":"/stats/prometheus","namespace":"default","pod":"merged"}},` +
		`{"targets":["198.18.0.10:8000"],"labels":{"__metrics_path__":"/metrics","namespace":"default","pod":"app-only"}}]`
	if string(b) != want {
		t.Errorf("targets:\n got %s\nwant %s", b, want)
	}
}

func TestPrometheusConfig(t *testing.T) {
	cfg := string(PrometheusConfig("/state/prometheus/targets.json", time.Second))
	for _, want := range []string{"scrape_interval: 1s", "job_name: kubernetes-pods", `files: ["/state/prometheus/targets.json"]`} {
		if !strings.Contains(cfg, want) {
			t.Errorf("prometheus.yml lacks %q:\n%s", want, cfg)
		}
	}
}

// Prometheus cannot take a socket from skiff up, so a port picked for
// --prometheus-addr 127.0.0.1:0 can be taken by another process before
// Prometheus binds it. A Prometheus that exits before it is ready on a
// picked port is started again on another one; here the first start fails
// as it would on a taken port, and the second is Debian's real Prometheus.
func TestPrometheusMovesOffATakenPickedPort(t *testing.T) {
	real, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("this test runs Debian's prometheus: apt-get install prometheus (scripts/test.sh does)")
	}
	dir := t.TempDir()
	fake := filepath.Join(dir, "prometheus")
	script := `#!/bin/sh
echo "$@" >> ` + filepath.Join(dir, "args") + `
if [ ! -e ` + filepath.Join(dir, "failed") + ` ]; then
	touch ` + filepath.Join(dir, "failed") + `
	echo 'Error starting web server: listen tcp: bind: address already in use' >&2
	exit 1
fi
exec ` + real + ` "$@"
`
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	var progress strings.Builder
	m := &mesh{o: Options{StateDir: t.TempDir(), Progress: &progress, Backoff: Backoff{Initial: 50 * time.Millisecond, Max: time.Second, Reset: time.Minute}, Grace: time.Second}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop, err := m.startPrometheus(ctx, PrometheusOptions{Binary: fake, Addr: "127.0.0.1:0", ScrapeInterval: time.Second})
	if err != nil {
		t.Fatalf("startPrometheus: %v\n%s", err, progress.String())
	}
	defer stop()
	args, _ := os.ReadFile(filepath.Join(dir, "args"))
	var addrs []string
	for _, f := range strings.Fields(string(args)) {
		if a, ok := strings.CutPrefix(f, "--web.listen-address="); ok {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) != 2 || addrs[0] == addrs[1] {
		t.Fatalf("prometheus started on %v; want twice, on two picked addresses", addrs)
	}
	if want := "prometheus on " + addrs[0] + ": exited before it was ready (exit code 1); another process may have taken the picked port: trying another"; !strings.Contains(progress.String(), want) {
		t.Errorf("skiff up did not say %q:\n%s", want, progress.String())
	}
	st, err := os.ReadFile(filepath.Join(m.o.StateDir, prometheusDir, prometheusStateFile))
	if err != nil || !strings.Contains(string(st), `"url": "http://`+addrs[1]+`"`) {
		t.Errorf("prometheus state %s (%v); want the second address %s", st, err, addrs[1])
	}
	resp, err := http.Get("http://" + addrs[1] + "/-/ready")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the second Prometheus is not ready: %v", err)
	}
	resp.Body.Close()
}
