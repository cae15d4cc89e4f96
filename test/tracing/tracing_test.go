// Package tracing checks, black box, that one Bookinfo page view on the
// local mesh is one trace: `skiff up` with a mesh config naming an
// OpenTelemetry extension provider, the collector (a real OTLP gRPC server
// in the test) put in the registry with a ServiceEntry, Istio's Telemetry
// API turning tracing on at 100 %, and the spans of every hop checked for
// their parent links.
package tracing

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/dataplane/tracing/tracetest"
	"github.com/skiff-mesh/skiff/internal/testing/meshtest"
)

var (
	bin string
	// repo is the repository root; samples is Istio's Bookinfo samples
	// directory beside it (../shared/istio-samples/bookinfo).
	repo, samples = meshtest.Repo, filepath.Join(meshtest.IstioSamples, "bookinfo")
)

func TestMain(m *testing.M) { meshtest.Main(m, meshtest.Bookinfo, &bin) }

// Istio's way to name a tracing backend: an extension provider in the mesh
// config, made the default tracing provider.
const meshConfig = `
extensionProviders:
- name: otel-tracing
  opentelemetry:
    service: opentelemetry-collector.observability.svc.cluster.local
    port: 4317
defaultProviders:
  tracing: [otel-tracing]
`

// The collector as the registry knows it (the test's own OTLP server), and
// the mesh-wide Telemetry sampling every request.
const collectorAndTelemetry = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: opentelemetry-collector
  namespace: istio-system
spec:
  hosts: [opentelemetry-collector.observability.svc.cluster.local]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - {number: 4317, name: grpc-otlp, protocol: GRPC}
  endpoints:
  - address: ADDRESS
    ports: {grpc-otlp: PORT}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: mesh-default
  namespace: istio-system
spec:
  tracing:
  - providers: [{name: otel-tracing}]
    randomSamplingPercentage: 100
`

// TestProductPageViewIsOneTrace runs without root: pods share the
// loopback and are reached directly, so the trace holds the gateway's span
// and the sidecars' outbound (CLIENT) spans, each under the span of the
// hop that called it. TestProductPageViewIsOneTraceNetns (tag netns, root)
// adds every sidecar's inbound span.
func TestProductPageViewIsOneTrace(t *testing.T) {
	tr := viewOnePage(t, "loopback", nil)
	checkTrace(t, tr, map[hop]int{
		{"istio-ingressgateway", "SERVER"}: 1, {"productpage", "CLIENT"}: 2, {"reviews", "CLIENT"}: 1,
	}, map[string]hop{
		"productpage/CLIENT": {"istio-ingressgateway", "SERVER"},
		"reviews/CLIENT":     {"productpage", "CLIENT"},
	})
}

type hop struct{ workload, kind string }

// viewOnePage runs Bookinfo with tracing to a test collector, routes
// reviews to v3 (which calls ratings) and returns the trace of one page
// view that went through every service. collectorOn, when set, starts the
// collector once the mesh is up (on an address the pods reach).
func viewOnePage(t *testing.T, capture string, collectorOn func(t *testing.T) *tracetest.Collector, extra ...string) []tracetest.Span {
	t.Helper()
	for _, f := range []string{"networking/destination-rule-all.yaml", "networking/virtual-service-reviews-v3.yaml"} {
		if _, err := os.Stat(filepath.Join(samples, f)); err != nil {
			t.Fatalf("Istio's Bookinfo sample %s is missing (%v): check out ../shared/istio-samples beside the repository", f, err)
		}
	}
	mc := filepath.Join(t.TempDir(), "mesh.yaml")
	if err := os.WriteFile(mc, []byte(meshConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	var ingress string
	ready := false
	args := append([]string{filepath.Join(repo, "samples/bookinfo/platform/local"), "--capture", capture,
		"--gateway-port", "0", "--monitoring-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0", "--meshconfig", mc}, extra...)
	m := meshtest.Start(t, bin, args, func(l string) (bool, error) {
		if l == "mesh ready" {
			ready = true
		}
		if u, ok := strings.CutPrefix(l, "product page:"); ok {
			ingress = strings.TrimSpace(u)
			return ready, nil
		}
		return false, nil
	})
	var col *tracetest.Collector
	if collectorOn != nil {
		col = collectorOn(t)
	} else {
		col = tracetest.StartOTLPGRPC(t)
	}
	host, port, _ := strings.Cut(col.Addr, ":")
	m.ApplyInline(t, "collector.yaml", strings.NewReplacer("ADDRESS", host, "PORT", port).Replace(collectorAndTelemetry))
	m.Apply(t, filepath.Join(samples, "networking/destination-rule-all.yaml"))
	m.Apply(t, filepath.Join(samples, "networking/virtual-service-reviews-v3.yaml"))

	// Config reaches the proxies asynchronously: view the page (bounded)
	// until a view shows red stars (reviews v3) and its trace reaches the
	// ratings hop, then return that view's trace.
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	deadline := time.Now().Add(90 * time.Second)
	for attempt := 0; ; attempt++ {
		// The gateway replaces an outside x-request-id, as Envoy does at the
		// edge; the query string marks the view in the gateway's http.url.
		rid := fmt.Sprintf("view-%d-%d", time.Now().UnixNano(), attempt)
		resp, err := c.Get(ingress + "?view=" + rid)
		body := ""
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
		}
		if err == nil && resp.StatusCode == 200 && strings.Contains(body, `<font color="red">`) {
			if tr := waitTrace(col, rid, 20*time.Second); reachesRatings(tr) {
				return tr
			}
		}
		if time.Now().After(deadline) || attempt > 60 {
			t.Fatalf("no page view with red stars (reviews v3) and a trace reaching ratings within 90 s; last: %s %v; spans so far:\n%s",
				statusOf(resp, err), err, tracetest.Dump(col.Spans()))
		}
		time.Sleep(time.Second)
	}
}

// reachesRatings: the trace has the reviews → ratings call.
func reachesRatings(tr []tracetest.Span) bool {
	for _, s := range tr {
		if strings.HasPrefix(s.Name, "ratings.") {
			return true
		}
	}
	return false
}

func statusOf(resp *http.Response, err error) string {
	if err != nil || resp == nil {
		return "no response"
	}
	return resp.Status
}

// waitTrace waits until the spans of the page view marked rid
// stop growing (every proxy flushes within a second or two) and returns
// that trace.
func waitTrace(col *tracetest.Collector, rid string, timeout time.Duration) []tracetest.Span {
	var id string
	deadline := time.Now().Add(timeout)
	last, stable := -1, 0
	for time.Now().Before(deadline) {
		for _, s := range col.Spans() {
			if strings.HasSuffix(s.Attrs["http.url"], "?view="+rid) {
				id = s.TraceID
				break
			}
		}
		n := len(tracetest.Trace(col.Spans(), id))
		if id != "" && n == last {
			if stable++; stable >= 3 && reachesRatings(tracetest.Trace(col.Spans(), id)) {
				break
			}
		} else {
			stable = 0
		}
		last = n
		time.Sleep(time.Second)
	}
	if id == "" {
		return nil
	}
	return tracetest.Trace(col.Spans(), id)
}

// checkTrace checks the trace has exactly the spans counted in want
// (workload and kind) and that each span hangs under the span parentOf
// names ("workload/KIND" → parent hop); the gateway's span is the root.
func checkTrace(t *testing.T, tr []tracetest.Span, want map[hop]int, parentOf map[string]hop) {
	t.Helper()
	byID := map[string]tracetest.Span{}
	for _, s := range tr {
		byID[s.SpanID] = s
	}
	count := map[hop]int{}
	for _, s := range tr {
		count[hop{workload(s), s.Kind}]++
	}
	total := 0
	for h, n := range want {
		total += n
		if count[h] != n {
			t.Errorf("%d %s spans from %s, want %d", count[h], h.kind, h.workload, n)
		}
	}
	if len(tr) != total {
		t.Errorf("the page view's trace has %d spans, want %d", len(tr), total)
	}
	for _, s := range tr {
		key := workload(s) + "/" + s.Kind
		if s.Attrs["http.url"] == "" || s.Attrs["http.status_code"] != "200" || s.Service == "" {
			t.Errorf("%s span %s: http.url %q, http.status_code %q, service.name %q", key, s.SpanID, s.Attrs["http.url"], s.Attrs["http.status_code"], s.Service)
		}
		if key == "istio-ingressgateway/SERVER" {
			if s.ParentID != "" {
				t.Errorf("the gateway's span has parent %s; the page view started there", s.ParentID)
			}
			continue
		}
		p, ok := byID[s.ParentID]
		if !ok {
			t.Errorf("%s span %s: parent %q is not in the trace", key, s.SpanID, s.ParentID)
			continue
		}
		if w, ok := parentOf[key]; !ok || (hop{workload(p), p.Kind}) != w {
			t.Errorf("%s span's parent is a %s span of %s, want %s of %s", key, p.Kind, workload(p), w.kind, w.workload)
		}
	}
	if t.Failed() {
		t.Logf("trace:\n%s", tracetest.Dump(tr))
	}
}

// workload names a span's proxy by its pod's workload, from node_id
// (sidecar~IP~POD.NS~NS.svc.cluster.local).
func workload(s tracetest.Span) string {
	parts := strings.Split(s.Attrs["node_id"], "~")
	if len(parts) < 3 {
		return s.Attrs["node_id"]
	}
	for _, w := range []string{"istio-ingressgateway", "productpage", "details", "reviews", "ratings"} {
		if strings.HasPrefix(parts[2], w) {
			return w
		}
	}
	return parts[2]
}
