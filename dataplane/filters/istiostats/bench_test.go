package istiostats_test

import (
	"net/http"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/structpb"
	statspb "istio.io/api/envoy/extensions/stats"

	"github.com/skiff-mesh/skiff/dataplane/hcm"
	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// BenchmarkStatsFilter is one request through the HTTP connection manager
// (inline route, direct response) without and with Istio's telemetry
// filters, to show what istio.stats and istio.metadata_exchange add per
// request once the label set is known: ns/op and allocs/op.
func BenchmarkStatsFilter(b *testing.B) {
	md, _ := structpb.NewStruct(map[string]any{"NAME": "client-v2-5c4b", "NAMESPACE": "default", "WORKLOAD_NAME": "client-v2",
		"LABELS": map[string]any{"app": "client", "version": "v2"}})
	node := &corev3.Node{Id: "client-v2-5c4b.default", Metadata: md}
	for _, bc := range []struct {
		name    string
		filters []*hcmv3.HttpFilter
	}{
		{"off", nil},
		{"stats", []*hcmv3.HttpFilter{httpStats(&statspb.PluginConfig{})}},
		{"mx+stats", []*hcmv3.HttpFilter{httpMX(false), httpStats(&statspb.PluginConfig{})}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := xdsres.HCMFilters("bench", "", bc.filters...)
			cfg.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{Name: "r",
				VirtualHosts: []*routev3.VirtualHost{{Name: "all", Domains: []string{"*"}, Routes: []*routev3.Route{{
					Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200}}}}}}}}
			st := stats.New()
			cm, err := hcm.New(cfg, hcm.Deps{Stats: st, Direction: corev3.TrafficDirection_OUTBOUND, Node: node})
			if err != nil {
				b.Fatal(err)
			}
			req, _ := http.NewRequest("GET", "http://reviews:9080/reviews/0", nil)
			w := &discardWriter{h: http.Header{}}
			cm.ServeHTTP(w, req) // the label set's first sight builds its series
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				clear(w.h)
				cm.ServeHTTP(w, req)
			}
			b.StopTimer()
			var n uint64
			st.Each(func(m any) {
				if c, ok := m.(*stats.Counter); ok && c.PromName == "istio_requests_total" {
					n += c.Value()
				}
			})
			if want := uint64(b.N + 1); len(bc.filters) > 0 && n != want {
				b.Fatalf("istio_requests_total = %d, want %d", n, want)
			}
		})
	}
}

type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }
