package tracing

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/dataplane/hcm/accesslog"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// BenchmarkSpan is the request-path cost of tracing one request: extract,
// decide, inject and (sampled) finish and queue; export is off the path
// (the queue here is drained by a no-op sender).
func BenchmarkSpan(b *testing.B) {
	for _, sampled := range []bool{false, true} {
		name := "unsampled"
		random := 0.0
		if sampled {
			name, random = "sampled", 100
		}
		b.Run(name, func(b *testing.B) {
			exp := shared(regKey{cfg: "bench-" + name}, stats.New(), "bench", func(context.Context, []*finished) error { return nil })
			defer exp.release()
			t := &Tracer{w3c: true, server: true, random: random, client: 100, overall: 100, maxPathLen: 256,
				static: []attr{{"component", "proxy"}, {"node_id", "sidecar~10.0.0.1~a.ns~ns.svc.cluster.local"}}, exp: exp}
			r, _ := http.NewRequest("GET", "http://reviews:9080/reviews/0", nil)
			r.Header.Set("X-Request-Id", "4b3b1f8e-8c9e-4d8e-9a5f-0b2a2f6c1d3e")
			e := &accesslog.Entry{Start: time.Now(), Req: r, Status: 200, UpstreamCluster: "outbound|9080||reviews"}
			b.ReportAllocs()
			for b.Loop() {
				delete(r.Header, "Traceparent")
				sp := t.Start(r, e.Start, "reviews:9080/*")
				sp.Inject(r.Header)
				sp.Finish(e)
			}
		})
	}
}
