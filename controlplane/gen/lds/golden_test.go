package lds

import (
	"path/filepath"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/gen/index/indextest"
	"github.com/skiff-mesh/skiff/controlplane/gen/rds"
	"github.com/skiff-mesh/skiff/controlplane/xds"
	"github.com/skiff-mesh/skiff/dataplane/compile"
	"github.com/skiff-mesh/skiff/internal/testing/golden"

	// Linked so golden JSON can expand the Anys inside listeners.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

var ingress = indextest.Router("istio-system", map[string]string{"istio": "ingressgateway", "app": "istio-ingressgateway"})

func bookinfoIndex(t *testing.T, extra ...[]*config.Object) *index.Index {
	t.Helper()
	objs := indextest.Sample(t, "bookinfo/platform/kube/bookinfo.yaml")
	for _, e := range extra {
		objs = append(objs, e...)
	}
	return indextest.Build(indextest.Mesh(objs))
}

// listenersOf generates a proxy's listeners and its routes, checks both
// with skiff-proxy's own validation, and checks that every RDS name a
// listener refers to is generated.
func listenersOf(t *testing.T, p *xds.Proxy, ix *index.Index) []*listenerv3.Listener {
	t.Helper()
	ls := indextest.Unpack[*listenerv3.Listener](t, Generate(p, ix))
	indextest.AcceptListeners(t, ls)
	rcs := indextest.Unpack[*routev3.RouteConfiguration](t, rds.Generate(p, ix, nil))
	indextest.AcceptRoutes(t, rcs)
	have := map[string]bool{}
	for _, rc := range rcs {
		have[rc.GetName()] = true
	}
	for _, l := range ls {
		for _, name := range compile.RouteNames(l) {
			if !have[name] {
				t.Errorf("listener %q refers to route configuration %q, which RDS does not generate", l.GetName(), name)
			}
		}
	}
	return ls
}

func goldenListeners(t *testing.T, name string, ls []*listenerv3.Listener) {
	t.Helper()
	golden.Compare(t, filepath.Join("testdata", name+".json"), golden.MarshalProtos(t, ls))
}

// TestBookinfoNetworkingGolden pins, for Bookinfo and each of its
// networking samples, the listeners of the productpage sidecar and of the
// ingress gateway, all accepted by skiff-proxy.
func TestBookinfoNetworkingGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(indextest.SamplesDir, "bookinfo/networking/*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no bookinfo networking samples: %v", err)
	}
	files = append([]string{""}, files...)
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		if f == "" {
			name = "bookinfo"
		}
		t.Run(name, func(t *testing.T) {
			var extra []*config.Object
			if f != "" {
				extra = indextest.Sample(t, "bookinfo/networking/"+filepath.Base(f))
			}
			ix := bookinfoIndex(t, extra)
			pp := indextest.SidecarFor(t, ix, "default", "productpage-v1-0")
			goldenListeners(t, "bookinfo/"+name+".productpage", listenersOf(t, pp, ix))
			goldenListeners(t, "bookinfo/"+name+".ingress", listenersOf(t, ingress, ix))
		})
	}
}
