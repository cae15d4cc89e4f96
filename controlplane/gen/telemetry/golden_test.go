package telemetry_test

import (
	"path/filepath"
	"slices"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/gen/index/indextest"
	"github.com/skiff-mesh/skiff/controlplane/gen/lds"
	"github.com/skiff-mesh/skiff/controlplane/gen/telemetry"
	"github.com/skiff-mesh/skiff/controlplane/xds"
	"github.com/skiff-mesh/skiff/internal/testing/golden"

	// Linked so golden JSON can expand the Anys inside listeners.
	_ "github.com/cncf/xds/go/xds/type/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "istio.io/api/envoy/extensions/stats"

	// skiff-proxy's Istio filters, so its validation knows them as the
	// proxy (which links them) does.
	_ "github.com/skiff-mesh/skiff/dataplane/filters/istiostats"
)

// pinned are the sidecar listeners the goldens show: inbound (HTTP and
// TCP chains, mTLS and plaintext), one outbound HTTP port, and the
// capture listener's TCP passthrough.
var pinned = []string{"virtualInbound", "0.0.0.0_9080", "virtualOutbound"}

// setup builds Bookinfo with testdata/NAME.yaml and a listener generator
// decorated by the telemetry of testdata/NAME.mesh.yaml.
func setup(t testing.TB, name string, log *logBuffer) (*index.Index, *lds.Generator, *telemetry.Generator) {
	t.Helper()
	ix := bookinfo(t, decodeFile(t, filepath.Join("testdata", name+".yaml"))...)
	o := telemetry.Options{Mesh: meshConfig(t, filepath.Join("testdata", name+".mesh.yaml"))}
	if log != nil {
		o.Logger = log.logger()
	}
	tel := telemetry.New(o)
	return ix, lds.New(lds.Options{Telemetry: tel}), tel
}

func listeners(t testing.TB, g *lds.Generator, p *xds.Proxy, ix *index.Index, names ...string) []*listenerv3.Listener {
	t.Helper()
	var out []*listenerv3.Listener
	for _, r := range g.Generate(p, ix) {
		if len(names) > 0 && !slices.Contains(names, r.Name) {
			continue
		}
		l := &listenerv3.Listener{}
		if err := anypb.UnmarshalTo(r.Message.(*anypb.Any), l, proto.UnmarshalOptions{}); err != nil {
			t.Fatalf("listener %s: %v", r.Name, err)
		}
		out = append(out, l)
	}
	return out
}

func compare(t *testing.T, file string, ls []*listenerv3.Listener) {
	t.Helper()
	golden.Compare(t, filepath.Join("testdata", file+".json"), golden.MarshalProtos(t, ls))
}

// TestGolden pins the decorated listeners of each case (testdata/NAME.yaml
// with its optional NAME.mesh.yaml) for the proxies it concerns; run with
// -update to rewrite them.
func TestGolden(t *testing.T) {
	cases := []struct {
		name    string
		pods    []string // sidecars of namespace default
		gateway bool
	}{
		{"default", []string{"productpage-v1-0"}, true},
		{"accesslog-text", []string{"productpage-v1-0"}, false},
		{"accesslog-json", []string{"productpage-v1-0"}, false},
		{"precedence", []string{"productpage-v1-0", "reviews-v1-0"}, true},
		{"metric-overrides", []string{"productpage-v1-0"}, false},
		{"tracing-otel", []string{"productpage-v1-0"}, true},
		{"tracing-zipkin", []string{"productpage-v1-0"}, false},
		{"accesslog-disabled", []string{"productpage-v1-0", "reviews-v1-0"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var log logBuffer
			ix, g, _ := setup(t, c.name, &log)
			for _, pod := range c.pods {
				ls := listeners(t, g, sidecar(t, ix, "default", pod), ix, pinned...)
				indextest.AcceptListeners(t, ls)
				compare(t, c.name+"."+pod, ls)
			}
			if c.gateway {
				ls := listeners(t, g, ingress, ix)
				indextest.AcceptListeners(t, ls)
				compare(t, c.name+".ingress", ls)
			}
			if log.Len() > 0 {
				t.Errorf("unexpected warnings:\n%s", log.String())
			}
		})
	}
}
