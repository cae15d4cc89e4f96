package server_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/internal/testing/kubetest"
)

// skiffd in Kubernetes mode against a real API server: what is created
// through the API reaches skiffd's store, a pod created in an
// istio-injection=enabled namespace comes back with the sidecar from
// skiffd's own webhook, and an invalid VirtualService is refused by its
// validating webhook once Istio's fail-closed probe has passed.
func TestKubernetesMode(t *testing.T) {
	env := kubetest.Start(t, kubetest.Options{})
	o := newSecureOptions(t)
	o.ConfigDir = ""
	o.Kubeconfig = env.Kubeconfig
	port := freeTCPPort(t)
	o.WebhookAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	o.WebhookURL = "https://" + o.WebhookAddr
	f := startSecure(t, o)
	cs := env.Clientset(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The root namespace, as `skiff install` makes it: the replicas'
	// leader Lease lives there.
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: "shop", Labels: map[string]string{"istio-injection": "enabled"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// No controller-manager here: the namespace's default service account
	// is made by hand.
	if _, err := cs.CoreV1().ServiceAccounts("shop").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Services("shop").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "reviews"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "reviews"}, Ports: []corev1.ServicePort{{Name: "http", Port: 9080}}}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "Service shop/reviews in skiffd's store", func() error {
		if f.srv.Store().Snapshot().Get(config.Key{Kind: config.Service, Namespace: "shop", Name: "reviews"}) == nil {
			return errors.New("not there")
		}
		return nil
	})

	// Identity: the CA takes a pod's projected token (audience istio-ca)
	// through a TokenReview, and each namespace gets the roots.
	if _, err := cs.CoreV1().ServiceAccounts("shop").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "reviews"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts("shop").CreateToken(ctx, "reviews", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"istio-ca"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	chain, err := createCert(f.conn(), tr.Status.Token, csrFor(t, "spiffe://cluster.local/ns/shop/sa/reviews"))
	if err != nil || len(chain) < 2 {
		t.Fatalf("CreateCertificate with the pod's service-account token: %v (chain of %d)", err, len(chain))
	}
	if _, err := createCert(f.conn(), tr.Status.Token, csrFor(t, "spiffe://cluster.local/ns/shop/sa/ratings")); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a CSR for another service account with reviews' token: %v, want PermissionDenied", err)
	}
	eventually(t, 60*time.Second, "the istio-ca-root-cert ConfigMap in shop", func() error {
		cm, err := cs.CoreV1().ConfigMaps("shop").Get(ctx, "istio-ca-root-cert", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !strings.Contains(cm.Data["root-cert.pem"], "BEGIN CERTIFICATE") {
			return fmt.Errorf("data %v", cm.Data)
		}
		return nil
	})

	// The injection webhook: the configuration is written by skiffd once
	// it serves; until then a pod comes back without a sidecar.
	var containers []string
	eventually(t, 60*time.Second, "a pod in shop injected with istio-proxy by skiffd's webhook", func() error {
		p, err := cs.CoreV1().Pods("shop").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "reviews-", Labels: map[string]string{"app": "reviews"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "reviews", Image: "reviews:v1"}}}}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		containers = nil
		for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
			containers = append(containers, c.Name)
		}
		if !slices.Contains(containers, "istio-proxy") {
			return fmt.Errorf("containers %v", containers)
		}
		return nil
	})
	t.Logf("injected pod's containers: %v", containers)

	// The validating webhook: Istio's validator starts failing open and
	// closes once it is seen refusing a dry-run invalid Gateway.
	vs := schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"}
	bad := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
		"metadata": map[string]any{"name": "reviews", "namespace": "shop"},
		"spec": map[string]any{"hosts": []any{"reviews"}, "http": []any{map[string]any{"route": []any{
			map[string]any{"destination": map[string]any{"host": "reviews", "subset": "v1"}, "weight": int64(60)},
			map[string]any{"destination": map[string]any{"host": "reviews", "subset": "v2"}, "weight": int64(30)},
		}}}},
	}}
	var refusal error
	eventually(t, 60*time.Second, "the invalid VirtualService refused by skiffd's validating webhook", func() error {
		_, refusal = env.Dynamic(t).Resource(vs).Namespace("shop").Create(ctx, bad, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if refusal == nil {
			return errors.New("accepted")
		}
		return nil
	})
	if !strings.Contains(refusal.Error(), "weights sum to 90") {
		t.Errorf("refusal %q does not carry skiffd's validation message", refusal)
	}
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
