package rds

import (
	"path/filepath"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/gen/index/indextest"
	"github.com/skiff-mesh/skiff/controlplane/xds"
	"github.com/skiff-mesh/skiff/internal/testing/golden"

	// Linked so golden JSON can expand the Anys in per-filter configs.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
)

// ingress is the bookinfo ingress gateway proxy (istio: ingressgateway).
var ingress = indextest.Router("istio-system", map[string]string{"istio": "ingressgateway", "app": "istio-ingressgateway"})

// bookinfoIndex is bookinfo.yaml plus the given networking objects.
func bookinfoIndex(t *testing.T, extra ...[]*config.Object) *index.Index {
	t.Helper()
	objs := indextest.Sample(t, "bookinfo/platform/kube/bookinfo.yaml")
	for _, e := range extra {
		objs = append(objs, e...)
	}
	return indextest.Build(indextest.Mesh(objs))
}

// routesOf generates, checks against skiff-proxy, and returns a proxy's routes.
func routesOf(t *testing.T, p *xds.Proxy, ix *index.Index) []*routev3.RouteConfiguration {
	t.Helper()
	rcs := indextest.Unpack[*routev3.RouteConfiguration](t, Generate(p, ix, nil))
	indextest.AcceptRoutes(t, rcs)
	return rcs
}

func goldenRoutes(t *testing.T, name string, rcs []*routev3.RouteConfiguration) {
	t.Helper()
	golden.Compare(t, filepath.Join("testdata", name+".json"), golden.MarshalProtos(t, rcs))
}

// TestBookinfoNetworkingGolden pins, for every Bookinfo networking sample,
// the routes of the productpage sidecar (which calls reviews and details),
// the reviews-v1 sidecar (which calls ratings) and the ingress gateway.
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
			rv := indextest.SidecarFor(t, ix, "default", "reviews-v1-0")
			goldenRoutes(t, "bookinfo/"+name+".productpage", routesOf(t, pp, ix))
			goldenRoutes(t, "bookinfo/"+name+".reviews-v1", routesOf(t, rv, ix))
			goldenRoutes(t, "bookinfo/"+name+".ingress", routesOf(t, ingress, ix))
		})
	}
}
