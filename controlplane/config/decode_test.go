package config

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

const samplesDir = "/work/shared/istio-samples"

// Every upstream sample manifest must load unchanged, with nothing lost.
func TestDecodeIstioSamples(t *testing.T) {
	counts := map[Kind]int{}
	files := 0
	err := filepath.WalkDir(samplesDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if ext := filepath.Ext(path); ext != ".yaml" && ext != ".yml" {
			return nil // certs, JWTs and a JWKS document are not manifests
		}
		files++
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		objs, errs := Decode(data, path)
		for _, e := range errs {
			t.Errorf("%v", e)
		}
		for _, o := range objs {
			counts[o.Kind]++
			if o.Source.File != path || o.Source.Line == 0 {
				t.Errorf("%s: source %v", o.Key(), o.Source)
			}
			if o.Meta.ResourceVersion == "" {
				t.Errorf("%s: no resource version", o.Describe())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files != 45 {
		t.Errorf("read %d sample files, want 45", files)
	}
	want := map[Kind]int{
		Service: 18, ServiceAccount: 7, Deployment: 19,
		KubeGateway: 2, HTTPRoute: 10,
		DestinationRule: 12, Gateway: 6, ServiceEntry: 1, VirtualService: 29,
	}
	for k, n := range want {
		if counts[k] != n {
			t.Errorf("%s: decoded %d, want %d", k, counts[k], n)
		}
	}
	for k, n := range counts {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected %d objects of kind %s", n, k)
		}
	}
}

func decodeFile(t *testing.T, path string) []*Object {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	objs, errs := Decode(data, path)
	if len(errs) > 0 {
		t.Fatalf("errors: %v", errs)
	}
	return objs
}

func TestDecodeSampleValues(t *testing.T) {
	objs := decodeFile(t, samplesDir+"/bookinfo/networking/virtual-service-reviews-80-20.yaml")
	if len(objs) != 1 {
		t.Fatalf("got %d objects", len(objs))
	}
	vs := objs[0]
	if vs.Key() != (Key{VirtualService, "default", "reviews"}) {
		t.Errorf("key %v", vs.Key())
	}
	spec := vs.Spec.(*networking.VirtualService)
	route := spec.Http[0].Route
	if len(route) != 2 || route[0].Destination.Host != "reviews" || route[0].Destination.Subset != "v1" ||
		route[0].Weight != 80 || route[1].Destination.Subset != "v2" || route[1].Weight != 20 {
		t.Errorf("route %v", route)
	}
	if got := vs.FieldLine("spec.http[0].route[1].weight"); got != 17 {
		t.Errorf("line of the second weight: %d, want 17", got)
	}

	objs = decodeFile(t, samplesDir+"/bookinfo/platform/kube/bookinfo.yaml")
	svc := objs[0].Spec.(*corev1.Service)
	if objs[0].Key() != (Key{Service, "default", "details"}) || svc.Spec.Ports[0].Port != 9080 ||
		svc.Spec.Ports[0].Name != "http" || svc.Spec.Selector["app"] != "details" {
		t.Errorf("details service: %v %+v", objs[0].Key(), svc.Spec)
	}
	if objs[0].Source.Line != 32 || svc.Namespace != "default" || svc.ResourceVersion != objs[0].Meta.ResourceVersion {
		t.Errorf("details service at line %d, meta %+v", objs[0].Source.Line, svc.ObjectMeta)
	}
	dep := objs[2].Spec.(*appsv1.Deployment)
	if objs[2].Key() != (Key{Deployment, "default", "details-v1"}) ||
		dep.Spec.Template.Labels["version"] != "v1" ||
		dep.Spec.Template.Spec.ServiceAccountName != "bookinfo-details" ||
		dep.Spec.Template.Spec.Containers[0].Ports[0].ContainerPort != 9080 {
		t.Errorf("details-v1: %+v", dep.Spec.Template)
	}

	objs = decodeFile(t, samplesDir+"/bookinfo/gateway-api/bookinfo-gateway.yaml")
	gw := objs[0].Spec.(*gatewayv1.GatewaySpec)
	if objs[0].Kind != KubeGateway || gw.GatewayClassName != "istio" || gw.Listeners[0].Port != 80 ||
		*gw.Listeners[0].AllowedRoutes.Namespaces.From != gatewayv1.NamespacesFromSame {
		t.Errorf("gateway %+v", gw)
	}
	hr := objs[1].Spec.(*gatewayv1.HTTPRouteSpec)
	if objs[1].Kind != HTTPRoute || hr.ParentRefs[0].Name != "bookinfo-gateway" ||
		*hr.Rules[0].Matches[0].Path.Type != gatewayv1.PathMatchExact || *hr.Rules[0].Matches[0].Path.Value != "/productpage" ||
		hr.Rules[0].BackendRefs[0].Name != "productpage" || *hr.Rules[0].BackendRefs[0].Port != 9080 {
		t.Errorf("httproute %+v", hr)
	}
}

// Each bad input yields exactly one error naming file:line, object and
// field path, as the user will read it.
func TestDecodeErrors(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{{
		name: "yaml syntax",
		yaml: `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews
  http: []
`,
		want: "bad.yaml:6: YAML syntax error: did not find expected ',' or ']'",
	}, {
		name: "unknown field in an Istio spec",
		yaml: `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 80
    - destination:
        hostt: reviews
`,
		want: `bad.yaml:15: VirtualService default/reviews: spec.http[0].route[1].destination.hostt: unknown field "hostt"`,
	}, {
		name: "wrong type in an Istio spec",
		yaml: `apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: reviews
  namespace: bookinfo
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: lots
`,
		want: `bad.yaml:11: DestinationRule bookinfo/reviews: spec.trafficPolicy.connectionPool.tcp.maxConnections: invalid value for int32 field maxConnections: "lots"`,
	}, {
		name: "unknown field in a Kubernetes object",
		yaml: `apiVersion: apps/v1
kind: Deployment
metadata:
  name: details-v1
spec:
  template:
    spec:
      containers:
      - name: details
        image: docker.io/istio/examples-bookinfo-details-v1:1.20.3
        imagePullPolicy: IfNotPresent
        portss:
        - containerPort: 9080
`,
		want: `bad.yaml:12: Deployment default/details-v1: spec.template.spec.containers[0].portss: unknown field "portss"`,
	}, {
		name: "wrong type in a Kubernetes object",
		yaml: `apiVersion: v1
kind: Service
metadata:
  name: details
spec:
  ports:
  - port: http
`,
		want: `bad.yaml:7: Service default/details: spec.ports[0].port: wrong type: got string, want int32`,
	}, {
		name: "unknown field in a Gateway API spec",
		yaml: `apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata:
  name: bookinfo
spec:
  parentRefs:
  - name: bookinfo-gateway
  rules:
  - backendRefs:
    - name: productpage
      prot: 9080
`,
		want: `bad.yaml:11: HTTPRoute default/bookinfo: spec.rules[0].backendRefs[0].prot: unknown field "prot"`,
	}, {
		name: "unknown metadata field",
		yaml: `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
  label:
    a: b
spec:
  mtls:
    mode: STRICT
`,
		want: `bad.yaml:6: PeerAuthentication istio-system/default: metadata.label: unknown field "label"`,
	}, {
		name: "unknown top-level field",
		yaml: `apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
specs:
  selector:
    istio: ingressgateway
`,
		want: `bad.yaml:5: Gateway default/gw: specs: unknown field "specs"; a Gateway has apiVersion, kind, metadata, spec and status`,
	}, {
		name: "field set twice",
		yaml: `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  hosts: [ratings]
`,
		want: `bad.yaml:7: VirtualService default/reviews: spec.hosts: field "hosts" is set twice (first at line 6); keep one`,
	}, {
		name: "unknown kind",
		yaml: `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: f
`,
		want: `bad.yaml:2: unknown kind "EnvoyFilter" (apiVersion "networking.istio.io/v1alpha3"); Skiff reads ` +
			`networking.istio.io: VirtualService, DestinationRule, Gateway, ServiceEntry, Sidecar, WorkloadEntry, WorkloadGroup; ` +
			`security.istio.io: PeerAuthentication, AuthorizationPolicy, RequestAuthentication; telemetry.istio.io: Telemetry; ` +
			`gateway.networking.k8s.io: Gateway, HTTPRoute, GRPCRoute, TCPRoute, ReferenceGrant, GatewayClass; ` +
			`core: Namespace, Service, ServiceAccount, Pod, Secret, ConfigMap; apps: Deployment; discovery.k8s.io: EndpointSlice`,
	}, {
		name: "version not served",
		yaml: `apiVersion: security.istio.io/v1alpha1
kind: AuthorizationPolicy
metadata:
  name: deny
`,
		want: `bad.yaml:2: apiVersion: AuthorizationPolicy is not served at security.istio.io/v1alpha1; use one of the versions v1, v1beta1`,
	}, {
		name: "no name",
		yaml: `apiVersion: v1
kind: ServiceAccount
metadata:
  namespace: x
`,
		want: `bad.yaml:3: metadata.name: missing; every ServiceAccount needs a name`,
	}, {
		name: "no kind",
		yaml: `apiVersion: v1
metadata:
  name: x
`,
		want: `bad.yaml:1: kind: missing; apiVersion v1 needs a kind`,
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			objs, errs := Decode([]byte(c.yaml), "bad.yaml")
			if len(objs) != 0 {
				t.Errorf("decoded %d objects from bad input", len(objs))
			}
			if len(errs) != 1 {
				t.Fatalf("got %d errors, want 1: %v", len(errs), errs)
			}
			if errs[0].Error() != c.want {
				t.Errorf("error\n got: %s\nwant: %s", errs[0], c.want)
			}
		})
	}
}

// A bad document costs only itself; the documents around it still decode,
// and a syntax error stops reading and says so.
func TestDecodeKeepsGoodDocuments(t *testing.T) {
	objs, errs := Decode([]byte(`apiVersion: v1
kind: Namespace
metadata:
  name: bookinfo
---
apiVersion: v1
kind: Service
metadata: {name: bad}
spec: {ports: [{port: x}]}
---
# only a comment
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec: {hosts: [reviews]}
`), "f.yaml")
	if len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), "f.yaml:9: Service default/bad: spec.ports[0].port:") {
		t.Errorf("errors: %v", errs)
	}
	if len(objs) != 2 {
		t.Fatalf("got %d objects", len(objs))
	}
	if objs[0].Key() != (Key{Namespace, "", "bookinfo"}) || objs[0].Source.Line != 1 {
		t.Errorf("namespace %v at %v", objs[0].Key(), objs[0].Source)
	}
	// An older version maps to the kind Skiff holds.
	if objs[1].Key() != (Key{VirtualService, "bookinfo", "reviews"}) || objs[1].Source.Line != 13 {
		t.Errorf("virtual service %v at %v", objs[1].Key(), objs[1].Source)
	}

	var oe *ObjectError
	_, errs = Decode([]byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkind: [\n"), "s.yaml")
	if len(errs) != 1 || !errorsAs(errs[0], &oe) || !oe.Unreadable || oe.Pos != (Position{"s.yaml", 6}) {
		t.Errorf("syntax error: %v", errs)
	}
}

func errorsAs(err error, target **ObjectError) bool {
	oe, ok := err.(*ObjectError)
	*target = oe
	return ok
}

func TestDecodeListJSONAndIgnoredKinds(t *testing.T) {
	objs, errs := Decode([]byte(`{
  "apiVersion": "v1",
  "kind": "List",
  "items": [
    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bookinfo-details"}},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r"}, "rules": []},
    {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "google"},
     "spec": {"hosts": ["www.google.com"], "ports": [{"number": 443, "name": "https", "protocol": "TLS"}],
              "resolution": "DNS", "location": "MESH_EXTERNAL"}}
  ]
}`), "list.json")
	if len(errs) != 0 {
		t.Fatalf("errors: %v", errs)
	}
	if len(objs) != 2 {
		t.Fatalf("got %d objects, want the ServiceAccount and the ServiceEntry (Role is ignored)", len(objs))
	}
	se := objs[1].Spec.(*networking.ServiceEntry)
	if objs[1].Source.Line != 7 || se.Resolution != networking.ServiceEntry_DNS ||
		se.Location != networking.ServiceEntry_MESH_EXTERNAL || se.Ports[0].Number != 443 {
		t.Errorf("service entry at %v: %v", objs[1].Source, se)
	}
	// A change of content changes the resource version; a move does not.
	a, _ := Decode([]byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n"), "x.yaml")
	b, _ := Decode([]byte("\n\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n"), "x.yaml")
	c, _ := Decode([]byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {x: y}}\n"), "x.yaml")
	if a[0].Meta.ResourceVersion != b[0].Meta.ResourceVersion || a[0].Meta.ResourceVersion == c[0].Meta.ResourceVersion {
		t.Errorf("resource versions %s %s %s", a[0].Meta.ResourceVersion, b[0].Meta.ResourceVersion, c[0].Meta.ResourceVersion)
	}
	if got := IgnoredKinds(); len(got) != 17 || got[0] != "ClusterRole.rbac.authorization.k8s.io" {
		t.Errorf("ignored kinds %v", got)
	}
}

// Every version Istio or the Gateway API serves for a kind decodes to the
// one Kind Skiff holds, with the Spec type object.go documents.
func TestDecodeEveryServedVersion(t *testing.T) {
	specTypes := map[Kind]string{
		VirtualService: "*v1alpha3.VirtualService", DestinationRule: "*v1alpha3.DestinationRule",
		Gateway: "*v1alpha3.Gateway", ServiceEntry: "*v1alpha3.ServiceEntry", Sidecar: "*v1alpha3.Sidecar",
		WorkloadEntry: "*v1alpha3.WorkloadEntry", WorkloadGroup: "*v1alpha3.WorkloadGroup",
		PeerAuthentication: "*v1beta1.PeerAuthentication", AuthorizationPolicy: "*v1beta1.AuthorizationPolicy",
		RequestAuthentication: "*v1beta1.RequestAuthentication", Telemetry: "*v1alpha1.Telemetry",
		KubeGateway: "*v1.GatewaySpec", HTTPRoute: "*v1.HTTPRouteSpec", GRPCRoute: "*v1.GRPCRouteSpec",
		TCPRoute: "*v1alpha2.TCPRouteSpec", ReferenceGrant: "*v1.ReferenceGrantSpec", GatewayClass: "*v1.GatewayClassSpec",
		Namespace: "*v1.Namespace", Service: "*v1.Service", ServiceAccount: "*v1.ServiceAccount", Pod: "*v1.Pod",
		Secret: "*v1.Secret", ConfigMap: "*v1.ConfigMap", Deployment: "*v1.Deployment", EndpointSlice: "*v1.EndpointSlice",
	}
	n := 0
	for _, ki := range kinds {
		for _, v := range ki.versions {
			apiVersion := v
			if ki.kind.Group != "" {
				apiVersion = ki.kind.Group + "/" + v
			}
			objs, errs := Decode([]byte(fmt.Sprintf("apiVersion: %s\nkind: %s\nmetadata: {name: x}\n", apiVersion, ki.kind.Kind)), "v.yaml")
			if len(errs) != 0 || len(objs) != 1 {
				t.Errorf("%s %s: %d objects, errors %v", apiVersion, ki.kind.Kind, len(objs), errs)
				continue
			}
			n++
			wantNS := "default"
			if !ki.namespaced {
				wantNS = ""
			}
			if got := fmt.Sprintf("%T", objs[0].Spec); objs[0].Kind != ki.kind || got != specTypes[ki.kind] || objs[0].Meta.Namespace != wantNS {
				t.Errorf("%s %s: kind %v, spec %s (want %s), namespace %q", apiVersion, ki.kind.Kind, objs[0].Kind, got, specTypes[ki.kind], objs[0].Meta.Namespace)
			}
		}
	}
	if len(specTypes) != len(kinds) || n != 50 {
		t.Errorf("%d kinds checked of %d, %d versions decoded", len(specTypes), len(kinds), n)
	}
}

// Durations in Istio's documented form ("5m", "30ms") load as protojson's
// seconds would, since Istio accepts both.
func TestDecodeGoStyleDurations(t *testing.T) {
	objs, errs := Decode([]byte(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    connectionPool: {tcp: {connectTimeout: 30ms}}
    outlierDetection: {interval: 5m, baseEjectionTime: 1h30m, consecutive5xxErrors: 3}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {outlierDetection: {interval: 2.5s}}
`), "dr.yaml")
	if len(errs) != 0 {
		t.Fatalf("errors: %v", errs)
	}
	dr := objs[0].Spec.(*networking.DestinationRule)
	od := dr.GetTrafficPolicy().GetOutlierDetection()
	if got := od.GetInterval().AsDuration(); got != 5*time.Minute {
		t.Errorf("interval = %v, want 5m", got)
	}
	if got := od.GetBaseEjectionTime().AsDuration(); got != 90*time.Minute {
		t.Errorf("baseEjectionTime = %v, want 1h30m", got)
	}
	if got := dr.GetTrafficPolicy().GetConnectionPool().GetTcp().GetConnectTimeout().AsDuration(); got != 30*time.Millisecond {
		t.Errorf("connectTimeout = %v, want 30ms", got)
	}
	if got := dr.GetSubsets()[0].GetTrafficPolicy().GetOutlierDetection().GetInterval().AsDuration(); got != 2500*time.Millisecond {
		t.Errorf("subset interval = %v, want 2.5s", got)
	}
	_, errs = Decode([]byte(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy: {outlierDetection: {interval: soon}}
`), "bad.yaml")
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "bad.yaml:6") || !strings.Contains(errs[0].Error(), "interval") {
		t.Fatalf("a non-duration: %v", errs)
	}
}
