package validation

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

func bookinfoFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, dir := range []string{"bookinfo/platform/kube", "bookinfo/networking", "bookinfo/gateway-api"} {
		m, err := filepath.Glob(filepath.Join(samplesDir, dir, "*.yaml"))
		if err != nil || len(m) == 0 {
			t.Fatalf("no samples in %s: %v", dir, err)
		}
		slices.Sort(m)
		files = append(files, m...)
	}
	return files
}

func render(errs []ObjectError) []string {
	var out []string
	for _, e := range errs {
		out = append(out, e.Error())
	}
	return out
}

// TestBookinfoReferences: the whole bookinfo set, loaded as a store would
// (a later file's object replaces an earlier one with the same key), has
// two dangling references, both of which Istio's analyzer reports too
// (IST0101): certmanager-gateway.yaml routes to cert-manager-resolver, a
// service the samples do not define (cert-manager creates it), and
// fault-injection-details-v1.yaml redefines DestinationRule details with
// subset v1 only, so virtual-service-details-v2.yaml routes to a subset v2
// nothing defines. Everything else resolves: every other destination host
// (a Service, or the googleapis ServiceEntry), each VirtualService's gateway
// (bookinfo-gateway in default, cert-manager-gateway in istio-system), the
// other subsets (v1, v2, v3, v2-mysql, v2-mysql-vm), each HTTPRoute's parent
// (the Gateway API bookinfo-gateway, the reviews/ratings/details/productpage
// Services), one DestinationRule per host. The analyzer would also say the
// Gateways' selector istio=ingressgateway matches no pod; Skiff's local mesh
// provides that gateway itself, so it is not a finding here.
func TestBookinfoReferences(t *testing.T) {
	objs := loadLikeStore(t, bookinfoFiles(t))
	if len(objs) < 30 {
		t.Fatalf("loaded %d objects from bookinfo, expected the whole set", len(objs))
	}
	got := render(CheckReferences(objs))
	want := []string{
		filepath.Join(samplesDir, "bookinfo/networking/certmanager-gateway.yaml") + ":17: VirtualService/istio-system/cert-manager: " +
			"warning: spec.http[0].route[0].destination.host: host cert-manager-resolver.istio-system.svc.cluster.local matches no Service or ServiceEntry; requests to it will fail with 503 until one exists",
		filepath.Join(samplesDir, "bookinfo/networking/virtual-service-details-v2.yaml") + ":1: VirtualService/details: " +
			`warning: spec.http[0].route[0].destination.subset: subset "v2" of host details.default.svc.cluster.local is not defined by any DestinationRule; traffic to it will fail with 503 until a DestinationRule for details.default.svc.cluster.local defines it`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestBookinfoDuplicateDestinationRules: adding destination-rule-all-mtls.yaml
// under other names next to the rules already loaded gives one warning per
// duplicated host, on each of the two rules (the findings on other kinds are
// TestBookinfoReferences').
func TestBookinfoDuplicateDestinationRules(t *testing.T) {
	objs := loadLikeStore(t, bookinfoFiles(t))
	mtls := decodeFile(t, filepath.Join(samplesDir, "bookinfo/networking/destination-rule-all-mtls.yaml"))
	for _, o := range mtls {
		o.Meta.Name += "-mtls"
	}
	var got []string
	for _, e := range CheckReferences(append(objs, mtls...)) {
		if e.Object.Kind == config.DestinationRule {
			got = append(got, e.Error())
		}
	}
	want := []string{}
	for _, pair := range [][3]string{
		{"bookinfo/networking/destination-rule-all.yaml:1", "productpage", "productpage-mtls"},
		{"bookinfo/networking/destination-rule-reviews.yaml:1", "reviews", "reviews-mtls"},
		{"bookinfo/networking/destination-rule-all.yaml:29", "ratings", "ratings-mtls"},
		{"bookinfo/networking/fault-injection-details-v1.yaml:23", "details", "details-mtls"},
		{"bookinfo/networking/destination-rule-all-mtls.yaml:1", "productpage-mtls", "productpage"},
		{"bookinfo/networking/destination-rule-all-mtls.yaml:15", "reviews-mtls", "reviews"},
		{"bookinfo/networking/destination-rule-all-mtls.yaml:35", "ratings-mtls", "ratings"},
		{"bookinfo/networking/destination-rule-all-mtls.yaml:58", "details-mtls", "details"},
	} {
		host := strings.TrimSuffix(pair[1], "-mtls")
		want = append(want, filepath.Join(samplesDir, pair[0])+": DestinationRule/"+pair[1]+
			": warning: spec.host: host "+host+".default.svc.cluster.local also has DestinationRule "+pair[2]+
			" in namespace default; Istio merges their subsets but applies only the oldest one's trafficPolicy, so keep one DestinationRule per host")
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestMissingGatewayNamesFileAndLine: removing bookinfo's Gateway leaves its
// VirtualService bound to nothing: one error, at the VirtualService's file
// and line and field. (Warnings, which TestBookinfoReferences covers, are
// left out.)
func TestMissingGatewayNamesFileAndLine(t *testing.T) {
	var objs []*config.Object
	for _, o := range loadLikeStore(t, bookinfoFiles(t)) {
		gateway := o.Kind == config.Gateway && o.Meta.Name == "bookinfo-gateway"
		details := o.Kind == config.VirtualService && o.Meta.Name == "details"
		if !gateway && !details {
			objs = append(objs, o)
		}
	}
	var got []string
	for _, e := range CheckReferences(objs) {
		if !e.Err.Warning {
			got = append(got, e.Error())
		}
	}
	want := []string{filepath.Join(samplesDir, "bookinfo/networking/bookinfo-gateway.yaml") + ":18: VirtualService/bookinfo: " +
		`spec.gateways[0]: gateway "bookinfo-gateway" not found: there is no Gateway default/bookinfo-gateway; create it or fix the name (use namespace/name for a Gateway in another namespace)`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestCheckReferences(t *testing.T) {
	objs, err := decodeYAML("refs.yaml", []byte(`apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: edge}
spec:
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: app}
spec:
  hosts: [reviews]
  gateways: [mesh, edge/gw, gw, other/gw, gw.edge]
  http:
  - match: [{gateways: [missing]}]
    route:
    - destination: {host: reviews, subset: v1}
      weight: 50
    - destination: {host: reviews.app.svc.cluster.local, subset: v9}
      weight: 50
    mirror: {host: ratings, subset: v1}
  tcp:
  - route: [{destination: {host: db.example.com, subset: primary}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: app}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: wildcard, namespace: ops}
spec:
  host: "*.example.com"
  subsets: [{name: primary, labels: {role: primary}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: kgw, namespace: app}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: route, namespace: app}
spec:
  parentRefs:
  - {name: kgw, sectionName: http}
  - {name: kgw, sectionName: https}
  - {name: kgw, namespace: other}
  - {group: "", kind: Service, name: ratings}
  rules: [{backendRefs: [{name: reviews, port: 9080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: app}
spec: {ports: [{port: 9080, name: http}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: ops}
spec: {hosts: ["*.example.com"], ports: [{number: 5432, name: tcp-pg}], resolution: NONE}
`))
	if err != nil {
		t.Fatal(err)
	}
	got := render(CheckReferences(objs))
	want := []string{
		`refs.yaml:7: VirtualService/app/vs: spec.gateways[2]: gateway "gw" not found: there is no Gateway app/gw; create it or fix the name (use namespace/name for a Gateway in another namespace)`,
		`refs.yaml:7: VirtualService/app/vs: spec.gateways[3]: gateway "other/gw" not found: there is no Gateway other/gw; create it or fix the name (use namespace/name for a Gateway in another namespace)`,
		`refs.yaml:7: VirtualService/app/vs: spec.http[0].match[0].gateways[0]: gateway "missing" not found: there is no Gateway app/missing; create it or fix the name (use namespace/name for a Gateway in another namespace)`,
		`refs.yaml:7: VirtualService/app/vs: warning: spec.http[0].route[1].destination.subset: subset "v9" of host reviews.app.svc.cluster.local is not defined by any DestinationRule; traffic to it will fail with 503 until a DestinationRule for reviews.app.svc.cluster.local defines it`,
		`refs.yaml:7: VirtualService/app/vs: warning: spec.http[0].mirror.host: host ratings.app.svc.cluster.local matches no Service or ServiceEntry; requests to it will fail with 503 until one exists`,
		`refs.yaml:7: VirtualService/app/vs: warning: spec.http[0].mirror.subset: subset "v1" of host ratings.app.svc.cluster.local is not defined by any DestinationRule; traffic to it will fail with 503 until a DestinationRule for ratings.app.svc.cluster.local defines it`,
		`refs.yaml:45: HTTPRoute/app/route: spec.parentRefs[1].sectionName: Gateway app/kgw has no listener "https"; use one of its listener names`,
		`refs.yaml:45: HTTPRoute/app/route: spec.parentRefs[2].name: parent Gateway other/kgw not found; create it or fix parentRefs`,
		`refs.yaml:45: HTTPRoute/app/route: warning: spec.parentRefs[3].name: parent Service app/ratings not found; create it or fix parentRefs`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
