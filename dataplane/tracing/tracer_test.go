package tracing

import (
	"net/http"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tagv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

type noClusters struct{}

func (noClusters) Cluster(string) core.Cluster { return nil }

func provider(t *testing.T, m proto.Message) *tracev3.Tracing_Http {
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return &tracev3.Tracing_Http{Name: "x", ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: a}}
}

func TestConfigErrors(t *testing.T) {
	otel := provider(t, &tracev3.OpenTelemetryConfig{GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "otel"}}}})
	for _, tc := range []struct {
		tr   *hcmv3.HttpConnectionManager_Tracing
		want string
	}{
		{&hcmv3.HttpConnectionManager_Tracing{Provider: provider(t, &tracev3.OpenTelemetryConfig{GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_GoogleGrpc_{GoogleGrpc: &corev3.GrpcService_GoogleGrpc{TargetUri: "x:1"}}}})},
			"provider.typed_config.grpc_service.envoy_grpc: is required"},
		{&hcmv3.HttpConnectionManager_Tracing{Provider: provider(t, &tracev3.ZipkinConfig{CollectorCluster: "z", CollectorEndpoint: "/api/v2/spans",
			CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_PROTO})}, "provider.typed_config.collector_endpoint_version: HTTP_PROTO is not supported"},
		{&hcmv3.HttpConnectionManager_Tracing{Provider: provider(t, &tracev3.ZipkinConfig{CollectorCluster: "z", CollectorEndpoint: "api"})},
			`provider.typed_config.collector_endpoint: "api" must be a path`},
		{&hcmv3.HttpConnectionManager_Tracing{Provider: provider(t, &tracev3.DatadogConfig{})}, "provider.typed_config: unsupported tracer"},
		{&hcmv3.HttpConnectionManager_Tracing{Provider: otel, RandomSampling: &typev3.Percent{Value: 101}}, "random_sampling.value: 101 is not a percentage"},
		{&hcmv3.HttpConnectionManager_Tracing{Provider: otel, CustomTags: []*tagv3.CustomTag{{Tag: "m", Type: &tagv3.CustomTag_Metadata_{Metadata: &tagv3.CustomTag_Metadata{}}}}},
			`custom_tags[0] "m": metadata: metadata tags are not supported`},
	} {
		tr, err := New(Config{Tracing: tc.tr, Clusters: noClusters{}})
		if err == nil {
			tr.Close()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
}

func TestPropagationFormats(t *testing.T) {
	for _, tc := range []struct {
		h       http.Header
		w3c, ok bool
		trace   string
		sampled sampling
	}{
		{http.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}, true, true, "4bf92f3577b34da6a3ce929d0e0e4736", sampleYes},
		{http.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}}, true, true, "4bf92f3577b34da6a3ce929d0e0e4736", sampleNo},
		{http.Header{"Traceparent": {"00-00000000000000000000000000000000-00f067aa0ba902b7-01"}}, true, false, "", 0},
		{http.Header{"Traceparent": {"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"}}, true, false, "", 0}, // upper case is invalid
		{http.Header{"Traceparent": {"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"}}, true, true, "4bf92f3577b34da6a3ce929d0e0e4736", sampleYes},
		{http.Header{"X-B3-Traceid": {"a3ce929d0e0e4736"}, "X-B3-Spanid": {"00f067aa0ba902b7"}}, false, true, "0000000000000000a3ce929d0e0e4736", sampleDefer},
		{http.Header{"X-B3-Traceid": {"a3ce929d0e0e4736"}, "X-B3-Spanid": {"00f067aa0ba902b7"}, "X-B3-Flags": {"1"}}, false, true, "0000000000000000a3ce929d0e0e4736", sampleYes},
		{http.Header{"B3": {"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0-05e3ac9a4f6e3b90"}}, false, true, "80f198ee56343ba864fe8b2a57d3eff7", sampleNo},
		{http.Header{"B3": {"1"}}, false, false, "", 0},
	} {
		var sc spanContext
		var ok bool
		if tc.w3c {
			sc, ok = extractW3C(tc.h)
		} else {
			sc, ok = extractB3(tc.h)
		}
		if ok != tc.ok {
			t.Errorf("%v: ok %v, want %v", tc.h, ok, tc.ok)
			continue
		}
		if ok && (hexOf(sc.traceID[:]) != tc.trace || sc.sampled != tc.sampled) {
			t.Errorf("%v: trace %s sampled %v, want %s %v", tc.h, hexOf(sc.traceID[:]), sc.sampled, tc.trace, tc.sampled)
		}
	}
}

// A 64-bit B3 trace id stays 64-bit in what goes upstream.
func TestB3ShortTraceIDKept(t *testing.T) {
	tr := &Tracer{random: 100, client: 100, overall: 100, exp: &exporter{}}
	r, _ := http.NewRequest("GET", "http://x/", nil)
	r.Header.Set("X-B3-Traceid", "a3ce929d0e0e4736")
	r.Header.Set("X-B3-Spanid", "00f067aa0ba902b7")
	r.Header.Set("X-B3-Sampled", "1")
	r.Header.Set("B3", "a3ce929d0e0e4736-00f067aa0ba902b7-1")
	sp := tr.Start(r, time.Now(), "op")
	sp.Inject(r.Header)
	if r.Header.Get("X-B3-Traceid") != "a3ce929d0e0e4736" || r.Header.Get("X-B3-Parentspanid") != "00f067aa0ba902b7" || r.Header.Get("X-B3-Sampled") != "1" {
		t.Errorf("B3 out: %v", r.Header)
	}
	if b3 := r.Header.Get("B3"); b3 != "a3ce929d0e0e4736-"+r.Header.Get("X-B3-Spanid")+"-1-00f067aa0ba902b7" {
		t.Errorf("b3 single out %q", b3)
	}
}

func hexOf(b []byte) string {
	const h = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, h[c>>4], h[c&15])
	}
	return string(out)
}
