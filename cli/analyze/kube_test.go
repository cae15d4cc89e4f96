package analyze

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/skiff-mesh/skiff/internal/testing/kubetest"
)

// `skiff analyze --kubeconfig` reads a real API server as istioctl
// analyze does: a VirtualService bound to a Gateway that exists nowhere is
// reported with its namespace and name, the namespace without injection
// is named, and a file given beside the cluster is analyzed against it (it
// declares the Gateway, and that message goes away).
func TestAnalyzeLiveCluster(t *testing.T) {
	env := kubetest.Start(t, kubetest.Options{})
	cs := env.Clientset(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Services("shop").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "reviews"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "reviews"}, Ports: []corev1.ServicePort{{Name: "http", Port: 9080}}}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// No controller-manager here: the default service account by hand.
	if _, err := cs.CoreV1().ServiceAccounts("shop").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Pods("shop").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "reviews-1", Labels: map[string]string{"app": "reviews"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "reviews", Image: "reviews:v1"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	vs := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
		"metadata": map[string]any{"name": "reviews", "namespace": "shop"},
		"spec": map[string]any{"hosts": []any{"reviews"}, "gateways": []any{"shop-gateway"},
			"http": []any{map[string]any{"route": []any{map[string]any{"destination": map[string]any{"host": "reviews"}}}}}},
	}}
	gvr := schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"}
	if _, err := env.Dynamic(t).Resource(gvr).Namespace("shop").Create(ctx, vs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	var out, errb bytes.Buffer
	code := Run(ctx, []string{"--kubeconfig", env.Kubeconfig}, &out, &errb)
	if code != exitFoundIssues {
		t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, exitFoundIssues, out.String(), errb.String())
	}
	for _, want := range []string{
		`Error [IST0101] (VirtualService shop/reviews) Referenced gateway not found: "shop-gateway"`,
		`[IST0102] (Namespace shop) The namespace is not enabled for Istio injection`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if !strings.Contains(errb.String(), "cluster "+env.Kubeconfig) {
		t.Errorf("stderr does not name the cluster analyzed:\n%s", errb.String())
	}

	gw := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(gw, []byte(`apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: shop-gateway
  namespace: shop
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errb.Reset()
	Run(ctx, []string{"--kubeconfig", env.Kubeconfig, gw}, &out, &errb)
	if strings.Contains(out.String(), "Referenced gateway not found") {
		t.Errorf("with the Gateway given as a file, the reference is still reported:\n%s", out.String())
	}

	// An API server that does not answer: one clear error, exit 1.
	bad := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(bad, []byte("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"https://127.0.0.1:1\"}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\nusers:\n- name: u\n  user: {token: x}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	errb.Reset()
	if code := Run(ctx, []string{"--kubeconfig", bad, "--timeout", "5s"}, &out, &errb); code != exitError || !strings.Contains(errb.String(), "127.0.0.1:1") {
		t.Errorf("unreachable API server: exit %d, stderr %q; want 1 naming the server", code, errb.String())
	}
}
