package lds

import (
	"path/filepath"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	"github.com/skiff-mesh/skiff/controlplane/gen/cds"
	"github.com/skiff-mesh/skiff/controlplane/gen/index/indextest"
	"github.com/skiff-mesh/skiff/controlplane/gen/rds"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// referencedClusters lists every cluster a proxy's listeners and routes
// send traffic to.
func referencedClusters(t *testing.T, ls []*listenerv3.Listener, rcs []*routev3.RouteConfiguration) map[string]string {
	t.Helper()
	out := map[string]string{}
	addRoutes := func(rc *routev3.RouteConfiguration) {
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				where := "route " + rc.GetName() + "/" + vh.GetName()
				if c := r.GetRoute().GetCluster(); c != "" {
					out[c] = where
				}
				for _, w := range r.GetRoute().GetWeightedClusters().GetClusters() {
					out[w.GetName()] = where
				}
				for _, m := range r.GetRoute().GetRequestMirrorPolicies() {
					out[m.GetCluster()] = where
				}
			}
		}
	}
	for _, rc := range rcs {
		addRoutes(rc)
	}
	for _, l := range ls {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				msg, err := f.GetTypedConfig().UnmarshalNew()
				if err != nil {
					t.Fatal(err)
				}
				switch v := msg.(type) {
				case *tcpv3.TcpProxy:
					if c := v.GetCluster(); c != "" {
						out[c] = "listener " + l.GetName()
					}
					for _, w := range v.GetWeightedClusters().GetClusters() {
						out[w.GetName()] = "listener " + l.GetName()
					}
				case *hcmv3.HttpConnectionManager:
					if rc := v.GetRouteConfig(); rc != nil {
						addRoutes(rc)
					}
				}
			}
		}
	}
	return out
}

// TestReferencedClustersExist checks, for Bookinfo and each networking
// sample (with destination-rule-all.yaml, which Istio's tasks apply first
// to define the subsets the routes use), that every cluster the listeners and routes name is one the
// clusters generator (cds) produces for the same proxy: a dangling name
// would be a 503 at run time.
func TestReferencedClustersExist(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(indextest.SamplesDir, "bookinfo/networking/*.yaml"))
	files = append([]string{""}, files...)
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			extra := indextest.Sample(t, "bookinfo/networking/destination-rule-all.yaml")
			if f != "" && !strings.HasPrefix(name, "destination-rule") {
				extra = append(extra, indextest.Sample(t, "bookinfo/networking/"+filepath.Base(f))...)
			}
			ix := bookinfoIndex(t, extra)
			for _, p := range []*xds.Proxy{indextest.SidecarFor(t, ix, "default", "productpage-v1-0"), indextest.SidecarFor(t, ix, "default", "reviews-v2-0"), ingress} {
				have := map[string]bool{}
				for _, r := range cds.Generate(p, ix) {
					have[r.Name] = true
				}
				ls := indextest.Unpack[*listenerv3.Listener](t, Generate(p, ix))
				rcs := indextest.Unpack[*routev3.RouteConfiguration](t, rds.Generate(p, ix, nil))
				for c, where := range referencedClusters(t, ls, rcs) {
					// A route to a host the registry does not know (the
					// certmanager sample's resolver) has no cluster in
					// Istio either.
					_, _, _, host, ok := cds.ParseClusterName(c)
					if ok && ix.Registry().Service(host, "") == nil {
						continue
					}
					if !have[c] {
						t.Errorf("%s: %s names cluster %q, which CDS does not generate", p.ID, where, c)
					}
				}
			}
		})
	}
}
