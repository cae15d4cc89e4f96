package gatewayapi

import (
	"strings"
	"testing"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

const otherNS = `
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: other}
spec: {ports: [{name: http, port: 8080}], selector: {app: backend}}
`

const crossNSRule = `  - backendRefs: [{name: backend, namespace: other, port: 8080}]`

func TestCrossNamespaceBackend(t *testing.T) {
	t.Run("without ReferenceGrant", func(t *testing.T) {
		r := routeWith(t, crossNSRule, otherNS)
		wantProto(t, httpRoutes(t, r)[0], `{"name": "default.r.0", "directResponse": {"status": 500}}`)
		want := "False/RefNotPermitted: spec.rules[0].backendRefs[0]: Service other/backend is in another namespace and no ReferenceGrant in other allows HTTPRoutes from default to use it"
		if got := cond(t, r, key(config.HTTPRoute, "default", "r"), 0, "ResolvedRefs"); got != want {
			t.Errorf("ResolvedRefs =\n %s\nwant\n %s", got, want)
		}
		// The route is still accepted: it serves 500s for that rule.
		if got := cond(t, r, key(config.HTTPRoute, "default", "r"), 0, "Accepted"); got != "True/Accepted: Route was valid" {
			t.Errorf("Accepted = %s", got)
		}
	})
	for _, tc := range []struct{ name, grant string }{
		{"with ReferenceGrant for the name", `
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: allow, namespace: other}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]
  to: [{group: "", kind: Service, name: backend}]`},
		{"with ReferenceGrant for all Services", `
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: allow, namespace: other}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]
  to: [{group: "", kind: Service}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := routeWith(t, crossNSRule, otherNS, tc.grant)
			wantProto(t, httpRoutes(t, r)[0], `{"name": "default.r.0", "route": [{"destination": {"host": "backend.other.svc.cluster.local", "port": {"number": 8080}}}]}`)
			if got := cond(t, r, key(config.HTTPRoute, "default", "r"), 0, "ResolvedRefs"); got != "True/ResolvedRefs: All references resolved" {
				t.Errorf("ResolvedRefs = %s", got)
			}
		})
	}
	t.Run("grant in the wrong namespace or for another kind", func(t *testing.T) {
		r := routeWith(t, crossNSRule, otherNS, `
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: allow, namespace: default}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]
  to: [{group: "", kind: Service}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: allow-grpc, namespace: other}
spec:
  from: [{group: gateway.networking.k8s.io, kind: GRPCRoute, namespace: default}]
  to: [{group: "", kind: Service}]`)
		if got := cond(t, r, key(config.HTTPRoute, "default", "r"), 0, "ResolvedRefs"); !strings.HasPrefix(got, "False/RefNotPermitted: ") {
			t.Errorf("ResolvedRefs = %s", got)
		}
	})
}

func TestUnknownBackend(t *testing.T) {
	r := routeWith(t, `  - backendRefs: [{name: nope, port: 80}]
  - matches: [{path: {value: /ok}}]
    backendRefs: [{name: httpbin, port: 80, weight: 1}, {name: missing, port: 80, weight: 1}]`)
	rs := httpRoutes(t, r)
	if len(rs) != 2 {
		t.Fatalf("%d routes, want 2", len(rs))
	}
	wantProto(t, rs[0], `{"name": "default.r.1", "match": [{"uri": {"prefix": "/ok"}}], `+dest+`}`)
	wantProto(t, rs[1], `{"name": "default.r.0", "directResponse": {"status": 500}}`)
	want := "False/BackendNotFound: spec.rules[0].backendRefs[0]: Service default/nope not found"
	if got := cond(t, r, key(config.HTTPRoute, "default", "r"), 0, "ResolvedRefs"); got != want {
		t.Errorf("ResolvedRefs = %s, want %s", got, want)
	}
}

func TestUnsupportedBackendKind(t *testing.T) {
	r := routeWith(t, `  - backendRefs: [{group: example.com, kind: Bucket, name: b, port: 80}]`)
	want := "False/InvalidKind: spec.rules[0].backendRefs[0]: backend kind example.com/Bucket is not supported: refer to a Service"
	if got := cond(t, r, key(config.HTTPRoute, "default", "r"), 0, "ResolvedRefs"); got != want {
		t.Errorf("ResolvedRefs = %s, want %s", got, want)
	}
}

func TestMissingGateway(t *testing.T) {
	r := Convert(decode(t, base+`---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: nowhere}]
  rules: [{backendRefs: [{name: httpbin, port: 80}]}]
`, "test.yaml"), Options{})
	for _, o := range r.Objects {
		if o.Kind == config.VirtualService {
			t.Errorf("synthesized %s for a route with no parent", o.Meta.Name)
		}
	}
	rk := key(config.HTTPRoute, "default", "r")
	if got := cond(t, r, rk, 0, "Accepted"); got != "False/NoMatchingParent: Gateway default/nowhere not found" {
		t.Errorf("Accepted = %s", got)
	}
	if p := r.Status[rk].Parents[0].ParentRef.Name; p != "nowhere" {
		t.Errorf("status parentRef %q", p)
	}
}

func TestSectionNameAndPort(t *testing.T) {
	gw := `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: two}
spec:
  gatewayClassName: istio
  listeners:
  - {name: a, port: 80, protocol: HTTP, hostname: a.example.com}
  - {name: b, port: 8080, protocol: HTTP, hostname: b.example.com}
`
	for _, tc := range []struct{ name, ref, want, cond string }{
		{"section", `{name: two, sectionName: b}`, "default/two-istio-autogenerated-k8s-gateway-b b.example.com", "True/Accepted: Route was valid"},
		{"port", `{name: two, port: 80}`, "default/two-istio-autogenerated-k8s-gateway-a a.example.com", "True/Accepted: Route was valid"},
		{"both listeners", `{name: two}`, "default/two-istio-autogenerated-k8s-gateway-a a.example.com, default/two-istio-autogenerated-k8s-gateway-b b.example.com", "True/Accepted: Route was valid"},
		{"missing section", `{name: two, sectionName: c}`, "", `False/NoMatchingParent: Gateway default/two has no listener named "c"`},
		{"missing port", `{name: two, sectionName: a, port: 9}`, "", `False/NoMatchingParent: Gateway default/two has no listener named "a" on port 9`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Convert(decode(t, base+"---\n"+gw+`---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [`+tc.ref+`]
  rules: [{backendRefs: [{name: httpbin, port: 80}]}]
`, "test.yaml"), Options{})
			var got []string
			for _, o := range r.Objects {
				if vs, ok := o.Spec.(*networking.VirtualService); ok {
					got = append(got, vs.Gateways[0]+" "+vs.Hosts[0])
				}
			}
			if strings.Join(got, ", ") != tc.want {
				t.Errorf("virtual services %v, want %s", got, tc.want)
			}
			if c := cond(t, r, key(config.HTTPRoute, "default", "r"), 0, "Accepted"); c != tc.cond {
				t.Errorf("Accepted = %s, want %s", c, tc.cond)
			}
		})
	}
}

func TestHostnameIntersection(t *testing.T) {
	gw := func(host string) string {
		return `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: hgw}
spec:
  gatewayClassName: istio
  listeners:
  - {name: l, port: 80, protocol: HTTP, hostname: "` + host + `"}
`
	}
	for _, tc := range []struct{ name, listener, routeHosts, want, cond string }{
		{"exact", "foo.example.com", `[foo.example.com, bar.example.com]`, "foo.example.com", "True/Accepted"},
		{"route wildcard narrows to listener", "foo.example.com", `["*.example.com"]`, "foo.example.com", "True/Accepted"},
		{"listener wildcard keeps route host", "*.example.com", `[a.example.com, a.b.example.com, example.com]`, "a.example.com a.b.example.com", "True/Accepted"},
		{"no route hostnames", "*.example.com", `[]`, "*.example.com", "True/Accepted"},
		{"disjoint", "foo.example.com", `[bar.example.com, "*.other.com"]`, "", "False/NoMatchingListenerHostname"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Convert(decode(t, base+"---\n"+gw(tc.listener)+`---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: hgw}]
  hostnames: `+tc.routeHosts+`
  rules: [{backendRefs: [{name: httpbin, port: 80}]}]
`, "test.yaml"), Options{})
			var got []string
			for _, o := range r.Objects {
				if vs, ok := o.Spec.(*networking.VirtualService); ok {
					got = append(got, vs.Hosts...)
				}
			}
			if strings.Join(got, " ") != tc.want {
				t.Errorf("hosts %v, want %s", got, tc.want)
			}
			c := cond(t, r, key(config.HTTPRoute, "default", "r"), 0, "Accepted")
			if !strings.HasPrefix(c, tc.cond+":") {
				t.Errorf("Accepted = %s, want %s", c, tc.cond)
			}
			if tc.cond == "False/NoMatchingListenerHostname" {
				want := "False/NoMatchingListenerHostname: spec.hostnames [bar.example.com *.other.com] do not intersect the hostnames of Gateway default/hgw's listeners [foo.example.com]"
				if c != want {
					t.Errorf("message\n %s\nwant\n %s", c, want)
				}
				if n := r.Status[key(config.KubeGateway, "default", "hgw")].Listeners[0].AttachedRoutes; n != 0 {
					t.Errorf("attachedRoutes %d, want 0", n)
				}
			}
		})
	}
}
