package install

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/skiff-mesh/skiff/controlplane/server"
	"github.com/skiff-mesh/skiff/internal/testing/golden"
)

func generate(t *testing.T, profile string, sets ...string) *Manifest {
	t.Helper()
	v, err := ProfileValues(profile)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sets {
		if err := v.Set(s); err != nil {
			t.Fatalf("Set(%q): %v", s, err)
		}
	}
	m, err := Generate(v)
	if err != nil {
		t.Fatalf("Generate(%s): %v", profile, err)
	}
	return m
}

// TestGolden pins each profile's manifest; the CRDs, copied verbatim, are
// pinned by name only.
func TestGolden(t *testing.T) {
	for _, p := range Profiles {
		t.Run(p, func(t *testing.T) {
			m := generate(t, p)
			var crds bytes.Buffer
			for _, c := range m.CRDs {
				fmt.Fprintln(&crds, c.GetName())
			}
			golden.Compare(t, filepath.Join("testdata", "crds.golden.txt"), crds.Bytes())
			m.CRDs = nil
			var out bytes.Buffer
			if err := m.WriteYAML(&out); err != nil {
				t.Fatal(err)
			}
			golden.Compare(t, filepath.Join("testdata", p+".golden.yaml"), out.Bytes())
		})
	}
	t.Run("revision", func(t *testing.T) {
		m := generate(t, "minimal", "revision=canary", "hub=registry.example/mesh", "tag=1.2.3")
		m.CRDs = nil
		var out bytes.Buffer
		if err := m.WriteYAML(&out); err != nil {
			t.Fatal(err)
		}
		golden.Compare(t, filepath.Join("testdata", "minimal-canary.golden.yaml"), out.Bytes())
	})
}

func TestDeterministic(t *testing.T) {
	var first []byte
	for i := 0; i < 3; i++ {
		var out bytes.Buffer
		if err := generate(t, "demo").WriteYAML(&out); err != nil {
			t.Fatal(err)
		}
		if i > 0 && !bytes.Equal(out.Bytes(), first) {
			t.Fatal("two renderings of the demo profile differ")
		}
		first = out.Bytes()
	}
}

// TestObjectsDecodeStrictly: every object is a valid Kubernetes object of
// its kind, with no misspelt field, and carries the owner label.
func TestObjectsDecodeStrictly(t *testing.T) {
	typed := map[string]func() any{
		// CRDs are copied verbatim and applied by the cluster tests.
		"CustomResourceDefinition": func() any { return &map[string]any{} },
		"Namespace":                func() any { return &corev1.Namespace{} },
		"ServiceAccount":           func() any { return &corev1.ServiceAccount{} },
		"ConfigMap":                func() any { return &corev1.ConfigMap{} },
		"Service":                  func() any { return &corev1.Service{} },
		"Deployment":               func() any { return &appsv1.Deployment{} },
		"ClusterRole":              func() any { return &rbacv1.ClusterRole{} },
		"ClusterRoleBinding":       func() any { return &rbacv1.ClusterRoleBinding{} },
		"Role":                     func() any { return &rbacv1.Role{} },
		"RoleBinding":              func() any { return &rbacv1.RoleBinding{} },
	}
	for _, p := range Profiles {
		for _, o := range generate(t, p).All() {
			mk, ok := typed[o.GetKind()]
			if !ok {
				t.Fatalf("%s: %s %s: kind not expected in a manifest", p, o.GetKind(), o.GetName())
			}
			b, _ := json.Marshal(o.Object)
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.DisallowUnknownFields()
			if err := dec.Decode(mk()); err != nil {
				t.Errorf("%s: %s %s: %v", p, o.GetKind(), o.GetName(), err)
			}
			if o.GetLabels()[LabelOwner] != OwnerValue || o.GetLabels()[LabelComponent] == "" {
				t.Errorf("%s: %s %s: labels %v lack the install labels", p, o.GetKind(), o.GetName(), o.GetLabels())
			}
			_, hasRev := o.GetLabels()[LabelRev]
			if want := o.GetKind() != "Namespace" && o.GetKind() != "CustomResourceDefinition"; hasRev != want {
				t.Errorf("%s: %s %s: istio.io/rev label present=%v, want %v", p, o.GetKind(), o.GetName(), hasRev, want)
			}
		}
	}
}

func TestProfiles(t *testing.T) {
	names := func(m *Manifest) string {
		var s []string
		for _, o := range m.Objects {
			if o.GetKind() == "Deployment" {
				s = append(s, o.GetName())
			}
		}
		return strings.Join(s, ",")
	}
	for p, want := range map[string]string{
		"minimal": "istiod",
		"default": "istio-ingressgateway,istiod",
		"demo":    "istio-egressgateway,istio-ingressgateway,istiod",
		"ambient": "istiod",
	} {
		m := generate(t, p)
		if got := names(m); got != want {
			t.Errorf("profile %s: Deployments %s, want %s", p, got, want)
		}
		if len(m.CRDs) != 25 {
			t.Errorf("profile %s: %d CRDs, want Istio's 15 and the Gateway API's 10", p, len(m.CRDs))
		}
	}
	if w := generate(t, "ambient").Warnings; len(w) != 1 || !strings.Contains(w[0], "ztunnel") {
		t.Errorf("ambient warnings = %q, want one saying ztunnel is not available", w)
	}
	if _, err := ProfileValues("preview"); err == nil || !strings.Contains(err.Error(), "ambient, default, demo, minimal") {
		t.Errorf("unknown profile: err = %v, want the list of profiles", err)
	}
	if got := names(generate(t, "default", "components.ingressGateways[0].enabled=false", "components.egressGateways[0].enabled=true")); got != "istio-egressgateway,istiod" {
		t.Errorf("gateways toggled by --set: Deployments %s", got)
	}
}

func meshOf(t *testing.T, m *Manifest) string {
	t.Helper()
	for _, o := range m.Objects {
		if o.GetKind() == "ConfigMap" {
			s, _, _ := unstructured.NestedString(o.Object, "data", "mesh")
			return s
		}
	}
	t.Fatal("no mesh ConfigMap")
	return ""
}

func TestSetMeshConfig(t *testing.T) {
	m := generate(t, "demo", "meshConfig.trustDomain=example.org", "meshConfig.defaultConfig.holdApplicationUntilProxyStarts=true")
	mc, err := server.ParseMeshConfig([]byte(meshOf(t, m)))
	if err != nil {
		t.Fatal(err)
	}
	if mc.GetTrustDomain() != "example.org" || !mc.GetDefaultConfig().GetHoldApplicationUntilProxyStarts().GetValue() ||
		mc.GetAccessLogFile() != "/dev/stdout" || mc.GetDefaultConfig().GetDiscoveryAddress() != "istiod.istio-system.svc:15012" {
		t.Errorf("mesh config: %v", mc)
	}
	for _, o := range m.Objects {
		if o.GetName() == "istio-ingressgateway" && o.GetKind() == "Deployment" {
			b, _ := json.Marshal(o.Object)
			if !bytes.Contains(b, []byte(`"name":"TRUST_DOMAIN","value":"example.org"`)) {
				t.Error("the gateway's TRUST_DOMAIN does not follow meshConfig.trustDomain")
			}
		}
	}
}

func TestSetErrors(t *testing.T) {
	for expr, want := range map[string]string{
		"meshConfig.acessLogFile=/dev/stdout":                "meshConfig.acessLogFile: unknown field",
		"values.pilot.replicaCount=two":                      "want a non-negative integer",
		"components.ingressGateways[0].enabled":              "want PATH=VALUE",
		"values.gateways.istio-ingressgateway.type=External": "LoadBalancer, NodePort or ClusterIP",
		"revision=Canary_1":                                  "DNS label",
		"values.global.proxy.image=x":                        "unknown path; settable are",
		"profile=demo":                                       "--profile demo",
	} {
		v, _ := ProfileValues("default")
		err := v.Set(expr)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Set(%q) = %v, want an error containing %q", expr, err, want)
		}
	}
}

func TestReplicasWarning(t *testing.T) {
	m := generate(t, "minimal", "values.pilot.replicaCount=3")
	if len(m.Warnings) != 1 || !strings.Contains(m.Warnings[0], "cacerts") {
		t.Errorf("warnings = %q, want one about the cacerts Secret", m.Warnings)
	}
}
