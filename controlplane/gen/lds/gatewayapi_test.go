package lds

import (
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/skiff-mesh/skiff/controlplane/gatewayapi"
	"github.com/skiff-mesh/skiff/controlplane/gen/index/indextest"
	"github.com/skiff-mesh/skiff/controlplane/gen/rds"
)

// TestGatewayAPIBookinfo runs Bookinfo's Gateway API samples through the
// converter (controlplane/gatewayapi) and these generators, as skiffd
// will: the gateway's listener and routes, and the mesh route the
// reviews HTTPRoute makes, must be accepted by skiff-proxy and say what
// the samples declare.
func TestGatewayAPIBookinfo(t *testing.T) {
	in := indextest.Sample(t, "bookinfo/platform/kube/bookinfo.yaml")
	in = append(in, indextest.Sample(t, "bookinfo/platform/kube/bookinfo-versions.yaml")...)
	in = append(in, indextest.Sample(t, "bookinfo/gateway-api/bookinfo-gateway.yaml")...)
	in = append(in, indextest.Sample(t, "bookinfo/gateway-api/route-reviews-90-10.yaml")...)
	res := gatewayapi.Convert(in, gatewayapi.Options{SelectorOverride: ingress.Labels})
	ix := indextest.Build(indextest.Mesh(append(in, res.Objects...)))

	ls := listenersOf(t, ingress, ix)
	goldenListeners(t, "gateway-api-bookinfo.ingress", ls)
	wantChains(t, listenerByName(t, ls, "0.0.0.0_80"), []string{"-> rds:http.80"})
	rcs := indextest.Unpack[*routev3.RouteConfiguration](t, rds.Generate(ingress, ix, []string{"http.80"}))
	var got []string
	for _, r := range rcs[0].GetVirtualHosts()[0].GetRoutes() {
		m := r.GetMatch()
		got = append(got, m.GetPath()+m.GetPathSeparatedPrefix()+" -> "+r.GetRoute().GetCluster())
	}
	want := []string{
		"/productpage -> outbound|9080||productpage.default.svc.cluster.local",
		"/login -> outbound|9080||productpage.default.svc.cluster.local",
		"/logout -> outbound|9080||productpage.default.svc.cluster.local",
		"/api/v1/products -> outbound|9080||productpage.default.svc.cluster.local",
		"/static -> outbound|9080||productpage.default.svc.cluster.local",
	}
	if !equalSets(got, want) {
		t.Errorf("http.80 routes:\n got %q\nwant (any order) %q", got, want)
	}

	pp := indextest.SidecarFor(t, ix, "default", "productpage-v1-0")
	listenersOf(t, pp, ix)
	mesh := indextest.Unpack[*routev3.RouteConfiguration](t, rds.Generate(pp, ix, []string{"9080"}))
	for _, vh := range mesh[0].GetVirtualHosts() {
		if vh.GetName() != "reviews.default.svc.cluster.local:9080" {
			continue
		}
		wc := vh.GetRoutes()[0].GetRoute().GetWeightedClusters().GetClusters()
		if len(wc) != 2 || wc[0].GetName() != "outbound|9080||reviews-v1.default.svc.cluster.local" || wc[0].GetWeight().GetValue() != 90 ||
			wc[1].GetName() != "outbound|9080||reviews-v2.default.svc.cluster.local" || wc[1].GetWeight().GetValue() != 10 {
			t.Errorf("reviews mesh route = %v, want reviews-v1 90 / reviews-v2 10", vh.GetRoutes()[0].GetRoute())
		}
		return
	}
	t.Error("productpage has no reviews virtual host")
}

func equalSets(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, s := range a {
		seen[s]++
	}
	for _, s := range b {
		seen[s]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}
