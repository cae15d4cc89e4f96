package telemetry_test

import (
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/skiff-mesh/skiff/controlplane/gen/lds"
	"github.com/skiff-mesh/skiff/controlplane/gen/telemetry"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// hcmsOf returns every HTTP connection manager of the listeners.
func hcmsOf(t *testing.T, ls []*listenerv3.Listener) []*hcmv3.HttpConnectionManager {
	t.Helper()
	var out []*hcmv3.HttpConnectionManager
	for _, l := range ls {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				if f.GetName() != telemetry.HCMFilter {
					continue
				}
				h := &hcmv3.HttpConnectionManager{}
				if err := anypb.UnmarshalTo(f.GetTypedConfig(), h, proto.UnmarshalOptions{}); err != nil {
					t.Fatal(err)
				}
				out = append(out, h)
			}
		}
	}
	return out
}

func filterNames(h *hcmv3.HttpConnectionManager) []string {
	var n []string
	for _, f := range h.GetHttpFilters() {
		n = append(n, f.GetName())
	}
	return n
}

// Every HTTP connection manager starts with the metadata exchange and
// has istio.stats right before the router; metrics disabled at the mesh
// level leave the exchange and drop the stats filter.
func TestFilterOrderAndMetricsOff(t *testing.T) {
	ix, g, _ := setup(t, "default", nil)
	for _, h := range hcmsOf(t, listeners(t, g, sidecar(t, ix, "default", "productpage-v1-0"), ix)) {
		n := filterNames(h)
		if n[0] != telemetry.MetadataExchangeFilter || n[len(n)-2] != telemetry.StatsFilter || n[len(n)-1] != telemetry.RouterFilter {
			t.Errorf("%s: filters %v; want istio.metadata_exchange first, istio.stats then the router last", h.GetStatPrefix(), n)
		}
	}
	off := decodeFile(t, "testdata/metrics-off.yaml")
	ix = bookinfo(t, off...)
	g = lds.New(lds.Options{Telemetry: telemetry.New(telemetry.Options{})})
	ls := listeners(t, g, sidecar(t, ix, "default", "productpage-v1-0"), ix)
	for _, h := range hcmsOf(t, ls) {
		if n := filterNames(h); n[0] != telemetry.MetadataExchangeFilter || strings.Contains(strings.Join(n, ","), telemetry.StatsFilter) {
			t.Errorf("%s with ALL_METRICS disabled: filters %v; want the exchange and no istio.stats", h.GetStatPrefix(), n)
		}
	}
	for _, l := range ls {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				if f.GetName() == telemetry.StatsFilter {
					t.Errorf("listener %s chain %s has istio.stats with metrics off", l.GetName(), fc.GetName())
				}
			}
		}
	}
}

// The workload-level Telemetry of reviews-v1 turns its access logs off
// while productpage of the same namespace keeps the mesh level's.
func TestPrecedence(t *testing.T) {
	ix, g, _ := setup(t, "precedence", nil)
	for pod, want := range map[string]bool{"productpage-v1-0": true, "reviews-v1-0": false, "reviews-v2-0": true} {
		for _, h := range hcmsOf(t, listeners(t, g, sidecar(t, ix, "default", pod), ix)) {
			if got := len(h.GetAccessLog()) > 0; got != want {
				t.Errorf("%s %s: access log %v, want %v", pod, h.GetStatPrefix(), got, want)
			}
		}
	}
}

// A tracing provider whose collector is not in the registry gives no
// tracing and one warning per config version, however many proxies ask.
func TestMissingCollector(t *testing.T) {
	var log logBuffer
	tel := telemetry.New(telemetry.Options{Logger: log.logger(), Mesh: &meshv1alpha1.MeshConfig{
		RootNamespace:    "istio-system",
		DefaultProviders: &meshv1alpha1.MeshConfig_DefaultProviders{Metrics: []string{"prometheus"}, Tracing: []string{"jaeger"}},
		ExtensionProviders: []*meshv1alpha1.MeshConfig_ExtensionProvider{{Name: "jaeger", Provider: &meshv1alpha1.MeshConfig_ExtensionProvider_Opentelemetry{
			Opentelemetry: &meshv1alpha1.MeshConfig_ExtensionProvider_OpenTelemetryTracingProvider{Service: "jaeger-collector.istio-system.svc.cluster.local", Port: 4317},
		}}},
	}})
	g := lds.New(lds.Options{Telemetry: tel})
	for range 2 {
		ix := bookinfo(t)
		for _, pod := range []string{"productpage-v1-0", "reviews-v1-0", "ratings-v1-0"} {
			for _, h := range hcmsOf(t, listeners(t, g, sidecar(t, ix, "default", pod), ix)) {
				if h.GetTracing() != nil {
					t.Errorf("%s: tracing %v toward a collector that does not exist", pod, h.GetTracing())
				}
			}
		}
	}
	out := log.String()
	if n := strings.Count(out, "jaeger-collector.istio-system.svc.cluster.local is not in the service registry"); n != 2 {
		t.Errorf("want the missing collector logged once per config version (2), got %d:\n%s", n, out)
	}
}

// Proxies with the same Telemetry share their listeners; a workload-level
// Telemetry gives its workload listeners of its own.
func TestCacheSharing(t *testing.T) {
	ix, g, tel := setup(t, "default", nil)
	v1, v2 := sidecar(t, ix, "default", "reviews-v1-0"), sidecar(t, ix, "default", "reviews-v2-0")
	if tel.Key(v1, ix) != tel.Key(v2, ix) {
		t.Errorf("keys differ without a workload Telemetry: %q, %q", tel.Key(v1, ix), tel.Key(v2, ix))
	}
	if !sameOutbound(g.Generate(v1, ix), g.Generate(v2, ix)) {
		t.Error("reviews-v1 and reviews-v2 do not share their outbound listeners")
	}
	ix, g, tel = setup(t, "accesslog-disabled", nil)
	v1, v2 = sidecar(t, ix, "default", "reviews-v1-0"), sidecar(t, ix, "default", "reviews-v2-0")
	if tel.Key(v1, ix) == tel.Key(v2, ix) {
		t.Errorf("reviews-v1 has a Telemetry of its own but the same key as reviews-v2: %q", tel.Key(v1, ix))
	}
	if sameOutbound(g.Generate(v1, ix), g.Generate(v2, ix)) {
		t.Error("reviews-v1's own Telemetry did not split its listeners from reviews-v2's")
	}
}

func sameOutbound(a, b []xds.Resource) bool {
	for _, ra := range a {
		if ra.Name != "0.0.0.0_9080" {
			continue
		}
		for _, rb := range b {
			if rb.Name == ra.Name {
				return ra.Message == rb.Message // shared from the cache: the same message
			}
		}
	}
	return false
}

// A Telemetry change is a new config version: its objects' versions are
// part of the key.
func TestKeyNamesVersions(t *testing.T) {
	objs := decodeFile(t, "testdata/accesslog-disabled.yaml")
	ix := bookinfo(t, objs...)
	tel := telemetry.New(telemetry.Options{})
	p := sidecar(t, ix, "default", "reviews-v1-0")
	k1 := tel.Key(p, ix)
	o := *objs[0]
	o.Meta.ResourceVersion = "2"
	k2 := tel.Key(p, bookinfo(t, &o))
	if k1 == k2 || !strings.Contains(k1, "default/no-logs@") {
		t.Errorf("keys %q and %q: want the applicable object's name and version in them", k1, k2)
	}
}
