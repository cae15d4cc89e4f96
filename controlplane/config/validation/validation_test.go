package validation

import (
	"strings"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// doc builds a YAML document of the given apiVersion and kind around a
// spec written at column zero.
func doc(apiVersion, kind, spec string) string {
	return "apiVersion: " + apiVersion + "\nkind: " + kind + "\nmetadata:\n  name: x\n  namespace: default\nspec:\n" + indent(spec, "  ")
}

func indent(s, by string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = by + l
	}
	return strings.Join(lines, "\n") + "\n"
}

func vsDoc(spec string) string  { return doc("networking.istio.io/v1", "VirtualService", spec) }
func drDoc(spec string) string  { return doc("networking.istio.io/v1", "DestinationRule", spec) }
func gwDoc(spec string) string  { return doc("networking.istio.io/v1", "Gateway", spec) }
func seDoc(spec string) string  { return doc("networking.istio.io/v1", "ServiceEntry", spec) }
func scDoc(spec string) string  { return doc("networking.istio.io/v1", "Sidecar", spec) }
func weDoc(spec string) string  { return doc("networking.istio.io/v1", "WorkloadEntry", spec) }
func wgDoc(spec string) string  { return doc("networking.istio.io/v1", "WorkloadGroup", spec) }
func paDoc(spec string) string  { return doc("security.istio.io/v1", "PeerAuthentication", spec) }
func apDoc(spec string) string  { return doc("security.istio.io/v1", "AuthorizationPolicy", spec) }
func raDoc(spec string) string  { return doc("security.istio.io/v1", "RequestAuthentication", spec) }
func telDoc(spec string) string { return doc("telemetry.istio.io/v1", "Telemetry", spec) }
func kgwDoc(spec string) string { return doc("gateway.networking.k8s.io/v1", "Gateway", spec) }
func hrDoc(spec string) string  { return doc("gateway.networking.k8s.io/v1", "HTTPRoute", spec) }
func grDoc(spec string) string  { return doc("gateway.networking.k8s.io/v1", "GRPCRoute", spec) }
func tcpDoc(spec string) string { return doc("gateway.networking.k8s.io/v1alpha2", "TCPRoute", spec) }
func rgDoc(spec string) string {
	return doc("gateway.networking.k8s.io/v1beta1", "ReferenceGrant", spec)
}
func svcDoc(spec string) string { return doc("v1", "Service", spec) }
func podDoc(spec string) string { return doc("v1", "Pod", spec) }
func depDoc(spec string) string { return doc("apps/v1", "Deployment", spec) }

// route is a valid http route body to which cases add one bad field.
const okRoute = "route:\n- destination:\n    host: reviews\n"

func decodeOne(t *testing.T, y string) *config.Object {
	t.Helper()
	objs, err := decodeYAML("test.yaml", []byte(y))
	if err != nil {
		t.Fatalf("decode: %v\n%s", err, y)
	}
	if len(objs) != 1 {
		t.Fatalf("decoded %d objects, want 1", len(objs))
	}
	return objs[0]
}

// problems renders Validate's result one line per FieldError, in order.
func problems(o *config.Object) []string {
	errs, warns := Split(Validate(o))
	var out []string
	for _, e := range append(errs, warns...) {
		out = append(out, e.Error())
	}
	return out
}

type vcase struct {
	name string
	yaml string
	want []string
}

func runCases(t *testing.T, cases []vcase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := problems(decodeOne(t, c.yaml))
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("got:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(c.want, "\n  "))
			}
		})
	}
}

// TestSpecOfWrongType: a decoder bug shows as an error on the object, not
// a panic in the control plane.
func TestSpecOfWrongType(t *testing.T) {
	for _, spec := range []any{"not a spec", (*networking.VirtualService)(nil), nil} {
		o := &config.Object{Kind: config.VirtualService, Meta: metav1.ObjectMeta{Name: "x"}, Spec: spec}
		errs, warns := Split(Validate(o))
		if len(errs) != 1 || len(warns) != 0 || errs[0].Path != "spec" ||
			!strings.HasSuffix(errs[0].Message, "a VirtualService needs *v1alpha3.VirtualService (the decoder produced the wrong type)") {
			t.Errorf("spec %#v: got errors %v, warnings %v", spec, errs, warns)
		}
	}
}

// TestSplit: warnings alone leave an object valid; Split tells them apart.
func TestSplit(t *testing.T) {
	o := decodeOne(t, podDoc("containers:\n- name: app\n  image: example/app\n"))
	err := Validate(o)
	if err == nil {
		t.Fatal("want the missing-command warning")
	}
	errs, warns := Split(err)
	if len(errs) != 0 || len(warns) != 1 || !warns[0].Warning || warns[0].Path != "spec.containers[0].command" {
		t.Errorf("got errors %v, warnings %v", errs, warns)
	}
	if w := warns[0]; w.FieldPath() != w.Path || !w.IsWarning() {
		t.Errorf("FieldPath() = %q, IsWarning() = %v", w.FieldPath(), w.IsWarning())
	}
	if errs, warns := Split(nil); errs != nil || warns != nil {
		t.Errorf("Split(nil) = %v, %v", errs, warns)
	}
}

// TestEveryKindHasAValidator: each kind whose Spec object.go documents is
// checked, so a new kind cannot slip through unvalidated.
func TestEveryKindHasAValidator(t *testing.T) {
	for _, k := range []config.Kind{
		config.VirtualService, config.DestinationRule, config.Gateway, config.ServiceEntry, config.Sidecar,
		config.WorkloadEntry, config.WorkloadGroup, config.PeerAuthentication, config.AuthorizationPolicy,
		config.RequestAuthentication, config.Telemetry, config.KubeGateway, config.HTTPRoute, config.GRPCRoute,
		config.TCPRoute, config.ReferenceGrant, config.GatewayClass, config.Service, config.Pod, config.Deployment,
	} {
		if validators[k] == nil {
			t.Errorf("no validator for %s", k)
		}
	}
}
