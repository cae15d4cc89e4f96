package index_test

import (
	"slices"
	"testing"

	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/gen/index/indextest"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

const scopes = `
apiVersion: v1
kind: Service
metadata: {name: api, namespace: other}
spec: {selector: {app: api}, ports: [{name: http, port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: secret, namespace: other, annotations: {networking.istio.io/exportTo: "."}}
spec: {selector: {app: secret}, ports: [{name: http, port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec: {selector: {app: db}, ports: [{name: tcp, port: 5432}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: mesh-default, namespace: istio-system}
spec:
  egress:
  - hosts: ["./*", "istio-system/*"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: trim, namespace: default}
spec:
  workloadSelector: {labels: {app: ratings}}
  egress:
  - hosts: ["~/*"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: ns-default, namespace: default}
spec:
  egress:
  - hosts: ["*/*", "~data/*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: private, namespace: other}
spec:
  hosts: [api.other.svc.cluster.local]
  exportTo: ["."]
  http: [{route: [{destination: {host: api.other.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: public, namespace: other}
spec:
  hosts: [api.other.svc.cluster.local]
  gateways: [edge, mesh]
  http: [{route: [{destination: {host: api.other.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: details-only, namespace: default}
spec:
  workloadSelector: {labels: {app: details}}
  egress:
  - hosts: ["./details.default.svc.cluster.local"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details-moved, namespace: default}
spec:
  hosts: [details]
  http: [{route: [{destination: {host: api.other.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: other}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
`

func hosts(ss []*index.SidecarScope) [][]string {
	var out [][]string
	for _, s := range ss {
		var hs []string
		for _, svc := range s.Services() {
			hs = append(hs, svc.Hostname)
		}
		out = append(out, hs)
	}
	return out
}

// TestSidecarScope checks which Sidecar applies (selector, then namespace
// default, then root default) and what its egress hosts import.
func TestSidecarScope(t *testing.T) {
	objs := append(indextest.Sample(t, "bookinfo/platform/kube/bookinfo.yaml"), indextest.Decode(t, "scopes.yaml", []byte(scopes))...)
	ix := indextest.Build(indextest.Mesh(objs))

	pp := indextest.SidecarFor(t, ix, "default", "productpage-v1-0")
	rt := indextest.SidecarFor(t, ix, "default", "ratings-v1-0")
	other := &xds.Proxy{Type: xds.SidecarProxy, Namespace: "other", Labels: map[string]string{"app": "api"}}
	data := &xds.Proxy{Type: xds.SidecarProxy, Namespace: "data"}
	got := hosts([]*index.SidecarScope{ix.SidecarScope(pp), ix.SidecarScope(rt), ix.SidecarScope(other), ix.SidecarScope(data)})
	want := [][]string{
		// default/ns-default: every namespace but data; other/secret is not exported to default.
		{"api.other.svc.cluster.local", "details.default.svc.cluster.local", "productpage.default.svc.cluster.local", "ratings.default.svc.cluster.local", "reviews.default.svc.cluster.local"},
		// default/trim ("~/*") imports nothing.
		nil,
		// istio-system/mesh-default: own namespace only.
		{"api.other.svc.cluster.local", "secret.other.svc.cluster.local"},
		{"db.data.svc.cluster.local"},
	}
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Errorf("scope %d services = %q, want %q", i, got[i], want[i])
		}
	}
	if k := ix.SidecarScope(pp).Key(); k != "default/default.ns-default" {
		t.Errorf("productpage scope key = %q", k)
	}
	rv1 := indextest.SidecarFor(t, ix, "default", "reviews-v1-0")
	rv2 := indextest.SidecarFor(t, ix, "default", "reviews-v2-0")
	if ix.SidecarScope(rv1) != ix.SidecarScope(rv2) {
		t.Error("two proxies under the same Sidecar must share one scope")
	}
	// The details VirtualService imported by the egress host sends traffic
	// to api.other, which is therefore reachable too, as in Istio.
	det := indextest.SidecarFor(t, ix, "default", "details-v1-0")
	if got, want := hosts([]*index.SidecarScope{ix.SidecarScope(det)})[0], []string{"api.other.svc.cluster.local", "details.default.svc.cluster.local"}; !slices.Equal(got, want) {
		t.Errorf("details scope = %q, want %q", got, want)
	}
	if ps := ix.SidecarScope(other).Ports(); len(ps) != 1 || ps[0].Port != 8080 || len(ps[0].Services) != 2 {
		t.Errorf("other ports = %+v", ps)
	}
}

// TestVirtualServiceVisibility checks exportTo and gateway binding.
func TestVirtualServiceVisibility(t *testing.T) {
	ix := indextest.Build(indextest.Mesh(indextest.Decode(t, "scopes.yaml", []byte(scopes))))
	names := func(p *xds.Proxy, gw string) []string {
		var out []string
		for _, o := range ix.VirtualServices(p, gw) {
			out = append(out, o.Meta.Namespace+"/"+o.Meta.Name)
		}
		return out
	}
	inOther := &xds.Proxy{Type: xds.SidecarProxy, Namespace: "other"}
	inDefault := &xds.Proxy{Type: xds.SidecarProxy, Namespace: "default"}
	// Istio lists what is private to the proxy's namespace first.
	if got, want := names(inOther, "mesh"), []string{"other/private", "default/details-moved", "other/public"}; !slices.Equal(got, want) {
		t.Errorf("mesh VSs seen from other = %q, want %q (private first)", got, want)
	}
	if got, want := names(inDefault, "mesh"), []string{"default/details-moved", "other/public"}; !slices.Equal(got, want) {
		t.Errorf("mesh VSs seen from default = %q, want %q (private is exportTo .)", got, want)
	}
	gw := indextest.Router("istio-system", map[string]string{"istio": "ingressgateway"})
	if got, want := names(gw, "other/edge"), []string{"other/public"}; !slices.Equal(got, want) {
		t.Errorf("VSs bound to other/edge = %q, want %q", got, want)
	}
	if g := ix.Gateways(gw); len(g) != 1 || index.GatewayName(g[0]) != "other/edge" {
		t.Errorf("gateways of the ingress = %v", g)
	}
	if g := ix.Gateways(inOther); g != nil {
		t.Errorf("a sidecar has no gateways, got %v", g)
	}
}
