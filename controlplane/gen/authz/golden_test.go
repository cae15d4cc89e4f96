package authz_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	"sigs.k8s.io/yaml"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/config/validation"
	"github.com/skiff-mesh/skiff/controlplane/gen/authz"
	"github.com/skiff-mesh/skiff/internal/testing/golden"
)

// testMesh has one provider of each kind, every field set.
const testMesh = `
trustDomain: cluster.local
rootNamespace: istio-system
extensionProviders:
- name: sample-ext-authz-http
  envoyExtAuthzHttp:
    service: ext-authz.foo.svc.cluster.local
    port: 8000
    pathPrefix: /check
    timeout: 10s
    failOpen: true
    statusOnError: "503"
    clearRouteCache: true
    includeRequestHeadersInCheck: ["x-ext-authz", "x-prefix-*", "*-suffix"]
    includeAdditionalHeadersInCheck: {x-b: "2", x-a: "1"}
    headersToUpstreamOnAllow: ["authorization"]
    headersToDownstreamOnDeny: ["set-cookie", "x-reason"]
    headersToDownstreamOnAllow: ["x-allowed"]
    includeRequestBodyInCheck: {maxRequestBytes: 2048, allowPartialMessage: true, packAsBytes: true}
- name: sample-ext-authz-grpc
  envoyExtAuthzGrpc:
    service: foo/ext-authz.foo.svc.cluster.local
    port: 9000
    timeout: 0.5s
    failOpen: false
    statusOnError: "403"
- name: zipkin
  zipkin:
    service: zipkin.istio-system.svc.cluster.local
    port: 9411
`

func parseMesh(t testing.TB, y string) *meshv1alpha1.MeshConfig {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	m := &meshv1alpha1.MeshConfig{}
	if err := protojson.Unmarshal(js, m); err != nil {
		t.Fatalf("mesh config: %v", err)
	}
	return m
}

// loadPolicies decodes a testdata file and checks every object passes
// Skiff's validation, so the cases are YAML a user can apply.
func loadPolicies(t testing.TB, file string) []*config.Object {
	t.Helper()
	return load(t, file, true)
}

func load(t testing.TB, file string, validate bool) []*config.Object {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	objs, errs := config.Decode(data, file)
	for _, e := range errs {
		t.Fatalf("decode: %v", e)
	}
	for _, o := range objs {
		if !validate {
			break
		}
		if bad, _ := validation.Split(validation.Validate(o)); len(bad) > 0 {
			t.Fatalf("%s is not valid Istio config: %v", o.Key(), bad[0])
		}
	}
	return objs
}

// render is the golden form: the HTTP and network filters as Envoy JSON
// and the warnings as text.
func render(t testing.TB, f authz.Filters) []byte {
	t.Helper()
	var http, network []proto.Message
	for _, h := range f.HTTP {
		http = append(http, h)
	}
	for _, n := range f.Network {
		network = append(network, n)
	}
	warnings := []string{}
	for _, w := range f.Warnings {
		warnings = append(warnings, w.String())
	}
	wj, _ := json.Marshal(warnings)
	var b bytes.Buffer
	b.WriteString(`{"http":`)
	b.Write(bytes.TrimSpace(golden.MarshalProtos(t, http)))
	b.WriteString(`,"network":`)
	b.Write(bytes.TrimSpace(golden.MarshalProtos(t, network)))
	b.WriteString(`,"warnings":`)
	b.Write(wj)
	b.WriteString("}")
	var out bytes.Buffer
	if err := json.Indent(&out, b.Bytes(), "", "  "); err != nil {
		t.Fatal(err)
	}
	out.WriteByte('\n')
	return out.Bytes()
}

func TestGolden(t *testing.T) {
	httpbin := map[string]string{"app": "httpbin", "version": "v1"}
	for _, tc := range []struct {
		name, file string
		ns         string
		labels     map[string]string
		gateway    bool
		mesh       string
		invalid    bool // Skiff's validation refuses it; Build must still cope
	}{
		{name: "all-fields", ns: "foo", labels: httpbin},
		{name: "order", ns: "foo", labels: httpbin},
		{name: "empty", ns: "foo", labels: httpbin, invalid: true},
		{name: "trust-domain", ns: "foo", labels: httpbin,
			mesh: "trustDomain: td-new\ntrustDomainAliases: [td-old, cluster.local]\n"},
		{name: "selection", ns: "foo", labels: httpbin},
		{name: "selection-gateway", file: "selection", ns: "foo", gateway: true,
			labels: map[string]string{"gateway.networking.k8s.io/gateway-name": "foo-gateway"}},
		{name: "jwt", ns: "foo", labels: httpbin},
		{name: "jwt-gateway", file: "jwt", ns: "foo", labels: httpbin, gateway: true},
		{name: "jwt-nokeys", ns: "foo", labels: httpbin},
		{name: "custom-http", ns: "foo", labels: httpbin},
		{name: "custom-grpc", ns: "foo", labels: httpbin},
		{name: "custom-unknown", ns: "foo", labels: httpbin},
		{name: "custom-two-providers", ns: "foo", labels: httpbin},
		{name: "task-http-productpage", file: "task-http", ns: "default", labels: map[string]string{"app": "productpage"}},
		{name: "task-http-ratings", file: "task-http", ns: "default", labels: map[string]string{"app": "ratings"}},
		{name: "task-tcp", ns: "foo", labels: map[string]string{"app": "tcp-echo"}},
		{name: "task-deny", ns: "foo", labels: httpbin},
		{name: "task-jwt", ns: "foo", labels: httpbin},
		{name: "task-jwt-ingress", file: "task-jwt", ns: "istio-system", gateway: true,
			labels: map[string]string{"istio": "ingressgateway"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := tc.file
			if file == "" {
				file = tc.name
			}
			mesh := parseMesh(t, testMesh)
			if tc.mesh != "" {
				proto.Merge(mesh, parseMesh(t, tc.mesh))
			}
			f := authz.Build(authz.Input{
				Namespace: tc.ns,
				Labels:    tc.labels,
				Gateway:   tc.gateway,
				Policies:  load(t, filepath.Join("testdata", file+".yaml"), !tc.invalid),
				Mesh:      mesh,
			})
			golden.Compare(t, filepath.Join("testdata", tc.name+".golden.json"), render(t, f))
		})
	}
}

// TestNoPolicies: nothing selected, nothing generated (everything allowed).
func TestNoPolicies(t *testing.T) {
	f := authz.Build(authz.Input{Namespace: "bar", Labels: map[string]string{"app": "x"},
		Policies: loadPolicies(t, "testdata/task-deny.yaml")})
	if len(f.HTTP)+len(f.Network)+len(f.Warnings) != 0 {
		t.Fatalf("got %d HTTP, %d network filters, warnings %v; want none", len(f.HTTP), len(f.Network), f.Warnings)
	}
}

// TestHasService: a provider or JWKS host the registry does not know is
// reported, and the CUSTOM policy turns into a DENY of what it matches.
func TestHasService(t *testing.T) {
	in := authz.Input{Namespace: "foo", Labels: map[string]string{"app": "httpbin"}, Mesh: parseMesh(t, testMesh),
		Policies:   append(loadPolicies(t, "testdata/custom-http.yaml"), loadPolicies(t, "testdata/task-jwt.yaml")...),
		HasService: func(ns, host string, port uint32) bool { return false }}
	f := authz.Build(in)
	var got []string
	for _, w := range f.Warnings {
		got = append(got, w.String())
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{
		"AuthorizationPolicy/foo/ext-authz: spec.provider.name: MeshConfig extensionProviders \"sample-ext-authz-http\": service ext-authz.foo.svc.cluster.local port 8000 is not in the mesh's service registry; requests the CUSTOM policies match are denied instead",
		"RequestAuthentication/foo/jwt-example: spec.jwtRules[0].jwksUri (http): no service raw.githubusercontent.com:443 in the mesh",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("warnings lack %q; got:\n%s", want, all)
		}
	}
	if len(f.HTTP) < 2 || f.HTTP[1].GetName() != authz.HTTPRBACFilter {
		t.Fatalf("want jwt_authn then the deny RBAC filter, got %v", f.HTTP)
	}
}

// BenchmarkBuild is one workload with every field, all actions and JWT.
func BenchmarkBuild(b *testing.B) {
	in := authz.Input{Namespace: "foo", Labels: map[string]string{"app": "httpbin"}, Mesh: parseMesh(b, testMesh),
		Policies: append(loadPolicies(b, "testdata/all-fields.yaml"), loadPolicies(b, "testdata/order.yaml")...)}
	b.ReportAllocs()
	for b.Loop() {
		authz.Build(in)
	}
}
