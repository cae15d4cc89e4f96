package localmesh

import (
	"encoding/json"
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
