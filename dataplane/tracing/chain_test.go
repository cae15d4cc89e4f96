package tracing_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/dataplane/proxy"
	"github.com/skiff-mesh/skiff/dataplane/tracing/tracetest"
	"github.com/skiff-mesh/skiff/internal/testing/proxytest"
)

// The chain under test, as two sidecars see one call:
//
//	client → proxy A (sidecar outbound, CLIENT span) → proxy B (sidecar
//	inbound, SERVER span) → app
//
// Both proxies export to the same collector through their own cluster.

const listenerTmpl = `
  - name: NAME
    traffic_direction: DIRECTION
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: NAME
          tracing:
TRACING
          route_config:
            name: NAME
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: /}
                route: {cluster: UPSTREAM}
                decorator: {operation: "OPERATION"}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
`

func otelGRPC(random, client, overall string) string {
	return fmt.Sprintf(`            random_sampling: {value: %s}
            client_sampling: {value: %s}
            overall_sampling: {value: %s}
            custom_tags:
            - {tag: istio.mesh_id, literal: {value: cluster.local}}
            - {tag: tenant, request_header: {name: x-tenant, default_value: none}}
            - {tag: home, environment: {name: SKIFF_TRACING_TEST_ENV, default_value: unset}}
            - {tag: code, value: "%%RESPONSE_CODE%%/%%UPSTREAM_CLUSTER%%"}
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                grpc_service: {envoy_grpc: {cluster_name: "outbound|4317||otel-collector.istio-system.svc.cluster.local"}, timeout: 5s}
                service_name: SERVICE
`, random, client, overall)
}

func otelHTTP(random string) string {
	return fmt.Sprintf(`            random_sampling: {value: %s}
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                http_service:
                  http_uri: {uri: "http://otel-collector.istio-system.svc.cluster.local:4318/v1/traces", cluster: "outbound|4318||otel-collector.istio-system.svc.cluster.local", timeout: 5s}
                service_name: SERVICE
`, random)
}

func zipkin(random string) string {
	return fmt.Sprintf(`            random_sampling: {value: %s}
            provider:
              name: envoy.tracers.zipkin
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
                collector_cluster: "outbound|9411||zipkin.istio-system.svc.cluster.local"
                collector_endpoint: /api/v2/spans
                collector_endpoint_version: HTTP_JSON
                trace_id_128bit: true
                shared_span_context: false
`, random)
}

func cluster(name, addr string, h2 bool) string {
	s := `
  - name: "` + name + `"
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: "` + name + `"
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: ` + proxytest.Port(addr) + `}}}}]}]
`
	if h2 {
		s += "    http2_protocol_options: {}\n"
	}
	return s
}

// startProxy runs one proxy with a listener "l" of direction dir forwarding
// to upstream, tracing as tracing says, the collector clusters pointing at
// collector.
func startProxy(t *testing.T, nodeID, nodeCluster, dir, tracing, service, operation, upstream, collector string) string {
	t.Helper()
	l := strings.NewReplacer("NAME", "l", "DIRECTION", dir, "UPSTREAM", "upstream", "OPERATION", operation).Replace(listenerTmpl)
	l = strings.Replace(l, "TRACING\n", strings.ReplaceAll(tracing, "SERVICE", service), 1)
	cfg := "node: {id: \"" + nodeID + "\", cluster: \"" + nodeCluster + "\", locality: {zone: zone-a}}\n" +
		"admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}\nstatic_resources:\n  clusters:" +
		cluster("upstream", upstream, false) +
		cluster("outbound|4317||otel-collector.istio-system.svc.cluster.local", collector, true) +
		cluster("outbound|4318||otel-collector.istio-system.svc.cluster.local", collector, false) +
		cluster("outbound|9411||zipkin.istio-system.svc.cluster.local", collector, false) +
		"  listeners:" + l
	var p *proxy.Proxy = proxytest.Start(t, cfg)
	return p.ListenerAddr("l").String()
}

// app records the headers of every request it serves.
type app struct {
	mu   sync.Mutex
	seen []http.Header
}

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.seen = append(a.seen, r.Header.Clone())
	a.mu.Unlock()
	io.WriteString(w, "ok")
}

func (a *app) last(t *testing.T) http.Header {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.seen) == 0 {
		t.Fatal("the app got no request")
	}
	return a.seen[len(a.seen)-1]
}

type chain struct {
	entry string // proxy A's listener
	app   *app
	col   *tracetest.Collector
}

func startChain(t *testing.T, col *tracetest.Collector, tracingA, tracingB string) *chain {
	t.Helper()
	t.Setenv("SKIFF_TRACING_TEST_ENV", "from-env")
	a := &app{}
	appAddr := proxytest.ServeHTTP(t, a)
	b := startProxy(t, "sidecar~127.0.0.2~reviews-v1.default~default.svc.cluster.local", "reviews.default", "INBOUND",
		tracingB, "reviews.default", "reviews.default.svc.cluster.local:9080/*", appAddr, col.Addr)
	entry := startProxy(t, "sidecar~127.0.0.1~productpage-v1.default~default.svc.cluster.local", "productpage.default", "OUTBOUND",
		tracingA, "productpage.default", "reviews.default.svc.cluster.local:9080/*", b, col.Addr)
	return &chain{entry: entry, app: a, col: col}
}

func (c *chain) get(t *testing.T, path string, h http.Header) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+c.entry+path, nil)
	req.Host = "reviews.default.svc.cluster.local:9080"
	for k, v := range h {
		req.Header[k] = v
	}
	cl := &http.Client{Timeout: 10 * time.Second}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", path, resp.StatusCode)
	}
}

const waitFor = 20 * time.Second

// twoSpans waits for the trace with exactly the client span of A and the
// server span of B and checks the parent links.
func twoSpans(t *testing.T, col *tracetest.Collector, trace func([]tracetest.Span) string) (a, b tracetest.Span) {
	t.Helper()
	var id string
	ss := col.Wait(t, waitFor, "two spans of one trace", func(ss []tracetest.Span) bool {
		id = trace(ss)
		return id != "" && len(tracetest.Trace(ss, id)) >= 2
	})
	tr := tracetest.Trace(ss, id)
	if len(tr) != 2 {
		t.Fatalf("trace %s has %d spans, want 2:\n%s", id, len(tr), tracetest.Dump(tr))
	}
	for _, s := range tr {
		switch s.Kind {
		case "CLIENT":
			a = s
		case "SERVER":
			b = s
		}
	}
	if a.SpanID == "" || b.SpanID == "" {
		t.Fatalf("want one CLIENT span (proxy A, outbound) and one SERVER span (proxy B, inbound):\n%s", tracetest.Dump(tr))
	}
	if b.ParentID != a.SpanID {
		t.Errorf("server span %s has parent %q, want the client span %s", b.SpanID, b.ParentID, a.SpanID)
	}
	return a, b
}

func anyTrace(ss []tracetest.Span) string {
	if len(ss) == 0 {
		return ""
	}
	return ss[0].TraceID
}

func TestOTLPGRPCChain(t *testing.T) {
	col := tracetest.StartOTLPGRPC(t)
	c := startChain(t, col, otelGRPC("100", "100", "100"), otelGRPC("100", "100", "100"))

	c.get(t, "/reviews/0?x=1", http.Header{"X-Tenant": {"gold"}})
	a, b := twoSpans(t, col, anyTrace)
	if a.ParentID != "" {
		t.Errorf("client span of the first hop has parent %q; the request carried no context", a.ParentID)
	}
	got := c.app.last(t)
	want := "00-" + a.TraceID + "-" + b.SpanID + "-01"
	if tp := got.Get("Traceparent"); tp != want {
		t.Errorf("app got traceparent %q, want %q (the inbound server span as parent)", tp, want)
	}
	rid := got.Get("X-Request-Id")
	if rid == "" {
		t.Fatal("app got no x-request-id")
	}
	for _, tc := range []struct {
		s                    tracetest.Span
		node, service, clust string
	}{
		{a, "sidecar~127.0.0.1~productpage-v1.default~default.svc.cluster.local", "productpage.default", "upstream"},
		{b, "sidecar~127.0.0.2~reviews-v1.default~default.svc.cluster.local", "reviews.default", "upstream"},
	} {
		want := map[string]string{
			"component": "proxy", "node_id": tc.node, "zone": "zone-a", "guid:x-request-id": rid,
			"http.method": "GET", "http.url": "http://reviews.default.svc.cluster.local:9080/reviews/0?x=1",
			"http.status_code": "200", "upstream_cluster": tc.clust, "response_flags": "-",
			"istio.mesh_id": "cluster.local", "tenant": "gold", "home": "from-env", "code": "200/upstream", "http.protocol": "HTTP/1.1",
		}
		for k, v := range want {
			if tc.s.Attrs[k] != v {
				t.Errorf("%s span: %s = %q, want %q", tc.s.Kind, k, tc.s.Attrs[k], v)
			}
		}
		if tc.s.Service != tc.service {
			t.Errorf("%s span: service.name %q, want %q", tc.s.Kind, tc.s.Service, tc.service)
		}
		if tc.s.Name != "reviews.default.svc.cluster.local:9080/*" {
			t.Errorf("%s span name %q, want the route's decorator", tc.s.Kind, tc.s.Name)
		}
		if !tc.s.End.After(tc.s.Start) {
			t.Errorf("%s span: end %v not after start %v", tc.s.Kind, tc.s.End, tc.s.Start)
		}
	}

	// A context from the caller: W3C traceparent is continued, tracestate kept.
	const caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	c.get(t, "/w3c", http.Header{"Traceparent": {caller}, "Tracestate": {"vendor=x"}})
	a, b = twoSpans(t, col, byTrace("4bf92f3577b34da6a3ce929d0e0e4736"))
	if a.ParentID != "00f067aa0ba902b7" {
		t.Errorf("client span parent %q, want the caller's span 00f067aa0ba902b7", a.ParentID)
	}
	if got := c.app.last(t); got.Get("Tracestate") != "vendor=x" || !strings.HasPrefix(got.Get("Traceparent"), "00-4bf92f3577b34da6a3ce929d0e0e4736-"+b.SpanID) {
		t.Errorf("app got traceparent %q tracestate %q", got.Get("Traceparent"), got.Get("Tracestate"))
	}

	// B3 from the caller (multi and single header) is extracted too.
	c.get(t, "/b3", http.Header{"X-B3-Traceid": {"80f198ee56343ba864fe8b2a57d3eff7"}, "X-B3-Spanid": {"e457b5a2e4d86bd1"}, "X-B3-Sampled": {"1"}})
	a, _ = twoSpans(t, col, byTrace("80f198ee56343ba864fe8b2a57d3eff7"))
	if a.ParentID != "e457b5a2e4d86bd1" {
		t.Errorf("B3: client span parent %q, want e457b5a2e4d86bd1", a.ParentID)
	}
	c.get(t, "/b3single", http.Header{"B3": {"a3ce929d0e0e47364bf92f3577b34da6-a2fb4a1d1a96d312-1"}})
	a, _ = twoSpans(t, col, byTrace("a3ce929d0e0e47364bf92f3577b34da6"))
	if a.ParentID != "a2fb4a1d1a96d312" {
		t.Errorf("b3 single: client span parent %q, want a2fb4a1d1a96d312", a.ParentID)
	}
}

func byTrace(id string) func([]tracetest.Span) string {
	return func([]tracetest.Span) string { return id }
}

// TestSampling: proxy A samples nothing at random but honours
// x-client-trace-id; proxy B samples everything yet follows the decision
// that arrives with the request, so unsampled requests leave no span
// anywhere and the headers still carry the context (flag 00).
func TestSampling(t *testing.T) {
	col := tracetest.StartOTLPGRPC(t)
	c := startChain(t, col, otelGRPC("0", "100", "100"), otelGRPC("100", "100", "100"))
	for i := 0; i < 5; i++ {
		c.get(t, "/unsampled", nil)
	}
	tp := c.app.last(t).Get("Traceparent")
	if !strings.HasPrefix(tp, "00-") || !strings.HasSuffix(tp, "-00") {
		t.Errorf("unsampled request: app got traceparent %q, want one with flags 00", tp)
	}
	// A caller's explicit "not sampled" wins over B's 100 % too.
	c.get(t, "/caller-says-no", http.Header{"Traceparent": {"00-11111111111111111111111111111111-2222222222222222-00"}})
	// x-client-trace-id asks for a trace (client_sampling 100 %): exported.
	c.get(t, "/forced", http.Header{"X-Client-Trace-Id": {"debug-1"}})
	a, _ := twoSpans(t, col, func(ss []tracetest.Span) string {
		for _, s := range ss {
			if s.Attrs["guid:x-client-trace-id"] == "debug-1" {
				return s.TraceID
			}
		}
		return ""
	})
	// Spans leave each proxy in order; the sampled one arrived, so any
	// unsampled span would have too.
	time.Sleep(300 * time.Millisecond)
	if ss := col.Spans(); len(ss) != 2 {
		t.Errorf("got %d spans, want only the 2 of the client-sampled request (trace %s):\n%s", len(ss), a.TraceID, tracetest.Dump(ss))
	}

	// overall_sampling 0 caps even client sampling.
	col2 := tracetest.StartOTLPGRPC(t)
	c2 := startChain(t, col2, otelGRPC("100", "100", "0"), otelGRPC("100", "100", "100"))
	c2.get(t, "/capped", http.Header{"X-Client-Trace-Id": {"debug-2"}})
	if tp := c2.app.last(t).Get("Traceparent"); !strings.HasSuffix(tp, "-00") {
		t.Errorf("overall_sampling 0: app got traceparent %q, want flags 00", tp)
	}
	// Proxy A's root decides; here a caller's sampled context makes both export.
	c2.get(t, "/sampled-by-caller", http.Header{"Traceparent": {"00-33333333333333333333333333333333-4444444444444444-01"}})
	twoSpans(t, col2, byTrace("33333333333333333333333333333333"))
	time.Sleep(300 * time.Millisecond)
	if ss := col2.Spans(); len(ss) != 2 {
		t.Errorf("overall_sampling 0: got %d spans, want only the caller-sampled trace's 2:\n%s", len(ss), tracetest.Dump(ss))
	}
}

func TestOTLPHTTPChain(t *testing.T) {
	col := tracetest.StartOTLPHTTP(t)
	c := startChain(t, col, otelHTTP("100"), otelHTTP("100"))
	c.get(t, "/http", nil)
	a, b := twoSpans(t, col, anyTrace)
	if a.Service != "productpage.default" || b.Service != "reviews.default" {
		t.Errorf("services %q %q", a.Service, b.Service)
	}
}

func TestZipkinChain(t *testing.T) {
	col := tracetest.StartZipkin(t)
	c := startChain(t, col, zipkin("100"), zipkin("100"))
	c.get(t, "/zipkin", http.Header{"X-Request-Id": {"rid-zipkin"}})
	a, b := twoSpans(t, col, anyTrace)
	got := c.app.last(t)
	if got.Get("X-B3-Traceid") != a.TraceID || got.Get("X-B3-Spanid") != b.SpanID || got.Get("X-B3-Parentspanid") != a.SpanID || got.Get("X-B3-Sampled") != "1" {
		t.Errorf("app got B3 %q/%q/%q/%q; want trace %s span %s parent %s sampled 1", got.Get("X-B3-Traceid"), got.Get("X-B3-Spanid"),
			got.Get("X-B3-Parentspanid"), got.Get("X-B3-Sampled"), a.TraceID, b.SpanID, a.SpanID)
	}
	if got.Get("X-Request-Id") != "rid-zipkin" || a.Attrs["guid:x-request-id"] != "rid-zipkin" {
		t.Errorf("x-request-id %q (span tag %q), want rid-zipkin kept", got.Get("X-Request-Id"), a.Attrs["guid:x-request-id"])
	}
	if len(a.TraceID) != 32 {
		t.Errorf("trace_id_128bit: trace id %q", a.TraceID)
	}
	// Zipkin's local service is the node's cluster, as in Envoy.
	if a.Service != "productpage.default" || b.Service != "reviews.default" {
		t.Errorf("zipkin services %q %q", a.Service, b.Service)
	}
	// A W3C caller is continued by the Zipkin tracer as well.
	c.get(t, "/from-w3c", http.Header{"Traceparent": {"00-55555555555555555555555555555555-6666666666666666-01"}})
	a, _ = twoSpans(t, col, byTrace("55555555555555555555555555555555"))
	if a.ParentID != "6666666666666666" {
		t.Errorf("client span parent %q, want 6666666666666666", a.ParentID)
	}
}
