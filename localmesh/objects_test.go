package localmesh

import (
	"net/netip"
	"regexp"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

func decodeOne(t *testing.T, yaml string) *config.Object {
	t.Helper()
	objs, errs := config.Decode([]byte(yaml), "test.yaml")
	if len(errs) > 0 || len(objs) != 1 {
		t.Fatalf("decode: %v", errs)
	}
	return objs[0]
}

// Services without a cluster IP get one from 198.19.0.0/16, the same each
// time, never shared; a bare Pod is kept as a PodTemplate.
func TestTransform(t *testing.T) {
	v := newServiceVIPs()
	svc := decodeOne(t, "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\nspec:\n  ports: [{port: 9080}]\n")
	got := v.transform(svc)
	ip := got.Spec.(*corev1.Service).Spec.ClusterIP
	if a, err := netip.ParseAddr(ip); err != nil || !netip.MustParsePrefix("198.19.0.0/16").Contains(a) {
		t.Fatalf("cluster IP %q, want one in 198.19.0.0/16", ip)
	}
	if svc.Spec.(*corev1.Service).Spec.ClusterIP != "" {
		t.Error("transform modified the decoded object (snapshots share objects)")
	}
	if again := v.transform(svc).Spec.(*corev1.Service).Spec.ClusterIP; again != ip {
		t.Errorf("second read got %s, want the same %s", again, ip)
	}
	seen := map[string]string{ip: "default/reviews"}
	for i := range 2000 {
		name := "svc" + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676))
		a := v.get("default", name).String()
		if other, dup := seen[a]; dup {
			t.Fatalf("%s given to both %s and default/%s", a, other, name)
		}
		seen[a] = "default/" + name
	}
	fixed := decodeOne(t, "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec:\n  clusterIP: None\n  ports: [{port: 5432}]\n")
	if v.transform(fixed) != fixed {
		t.Error("a Service that names its cluster IP (None) was changed")
	}

	pod := decodeOne(t, "apiVersion: v1\nkind: Pod\nmetadata: {name: solo, labels: {app: solo}}\nspec:\n  containers:\n  - name: c\n    command: [hello]\n")
	tp := v.transform(pod)
	pt, ok := tp.Spec.(*corev1.PodTemplate)
	if tp.Kind != PodTemplateKind || !ok || pt.Template.Labels["app"] != "solo" || pt.Template.Spec.Containers[0].Command[0] != "hello" {
		t.Fatalf("bare Pod became %v %+v, want a PodTemplate with its labels and spec", tp.Kind, tp.Spec)
	}
	if tp.FieldLine("spec.containers[0].command") != 7 {
		t.Errorf("the template lost the Pod's line numbers: command at line %d, want 7", tp.FieldLine("spec.containers[0].command"))
	}
}

// Pod names read as Kubernetes': DEPLOYMENT-HASH-xxxxx, the hash stable
// for a template and different for another.
func TestPodNames(t *testing.T) {
	a := corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Command: []string{"x"}}}}}
	b := *a.DeepCopy()
	b.Spec.Containers[0].Command = []string{"y"}
	if again := *a.DeepCopy(); templateHash(&a) != templateHash(&again) || templateHash(&a) == templateHash(&b) {
		t.Errorf("hashes: %s, %s (a copy), %s (another command)", templateHash(&a), templateHash(&again), templateHash(&b))
	}
	name := "reviews-v1-" + templateHash(&a) + "-" + randomSuffix(5)
	if !regexp.MustCompile(`^reviews-v1-[bcdfghjklmnpqrstvwxz2456789]{6,10}-[bcdfghjklmnpqrstvwxz2456789]{5}$`).MatchString(name) {
		t.Errorf("pod name %q does not look like Kubernetes'", name)
	}
}

func TestProductPagePath(t *testing.T) {
	bound := decodeOne(t, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
  - match: [{uri: {exact: /productpage}}, {uri: {prefix: /static}}]
    route: [{destination: {host: productpage, port: {number: 9080}}}]
`)
	meshOnly := decodeOne(t, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: internal}
spec:
  hosts: [productpage]
  http:
  - match: [{uri: {exact: /productpage}}]
    route: [{destination: {host: productpage}}]
`)
	if !routesOnGateway(bound, "/productpage") {
		t.Error("Bookinfo's gateway VirtualService not recognised")
	}
	if routesOnGateway(meshOnly, "/productpage") {
		t.Error("a mesh-only VirtualService counted as reachable from the ingress")
	}
}

func TestObjectData(t *testing.T) {
	objs, errs := config.Decode([]byte(`apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data: {mode: fast}
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: shop}
data: {password: aHVudGVyMg==}
stringData: {user: admin}
`), "data.yaml")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	store := config.NewStore(nil, nil)
	store.Replace("data.yaml", objs, nil)
	snap := store.Snapshot()
	if d, ok := objectData(snap, "ConfigMap", "shop", "settings"); !ok || d["mode"] != "fast" {
		t.Errorf("ConfigMap data = %v, %v", d, ok)
	}
	if d, ok := objectData(snap, "Secret", "shop", "creds"); !ok || d["password"] != "hunter2" || d["user"] != "admin" {
		t.Errorf("Secret data = %v, %v; want the decoded password and stringData's user", d, ok)
	}
	if _, ok := objectData(snap, "ConfigMap", "default", "settings"); ok {
		t.Error("a ConfigMap of another namespace was found")
	}
}
