package install

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/config/kube"
	"github.com/skiff-mesh/skiff/controlplane/webhook"
	inst "github.com/skiff-mesh/skiff/install"
	"github.com/skiff-mesh/skiff/internal/testing/kubetest"
)

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, verb string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	code := Run(ctx, verb, args, &out, &errb)
	return result{code, out.String(), errb.String()}
}

func TestManifestGenerate(t *testing.T) {
	r := run(t, "manifest", "generate", "--profile", "demo")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if n := strings.Count(r.stdout, "\nkind: CustomResourceDefinition\n"); n != 25 {
		t.Errorf("%d CRDs printed, want 25", n)
	}
	if !strings.Contains(r.stdout, "image: ghcr.io/skiff-mesh/skiff-proxy:") || !strings.Contains(r.stdout, "name: istio-egressgateway\n") {
		t.Error("the demo manifest lacks the gateways")
	}
	file := filepath.Join(t.TempDir(), "m.yaml")
	if r := run(t, "manifest", "generate", "--profile=demo", "-o", file); r.code != 0 {
		t.Fatalf("-o: exit %d: %s", r.code, r.stderr)
	}
	if b, _ := os.ReadFile(file); string(b) != r.stdout {
		t.Error("-o FILE differs from standard output")
	}
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"generate", "--profile", "preview"}, 2, `profile "preview": unknown; use one of ambient, default, demo, minimal`},
		{[]string{"generate", "--set", "meshConfig.acessLogFile=x"}, 2, "meshConfig.acessLogFile: unknown field"},
		{[]string{"generate", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"render"}, 2, "usage: skiff manifest generate"},
	} {
		r := run(t, "manifest", c.args...)
		if r.code != c.code || !strings.Contains(r.stderr, c.msg) {
			t.Errorf("manifest %v: exit %d, stderr %q; want %d and %q", c.args, r.code, r.stderr, c.code, c.msg)
		}
	}
	r = run(t, "manifest", "generate", "--profile", "ambient")
	if r.code != 0 || !strings.Contains(r.stderr, "warning: profile ambient: ztunnel") {
		t.Errorf("ambient: exit %d, stderr %q; want 0 and the ztunnel warning", r.code, r.stderr)
	}
}

// TestInstallLifecycle installs the demo profile into a real API server
// with no CRDs, verifies it, installs again (no change), switches to the
// minimal profile (gateways pruned), checks istiod's RBAC as its service
// account, and uninstalls with --purge.
func TestInstallLifecycle(t *testing.T) {
	env := kubetest.Start(t, kubetest.Options{NoCRDs: true, ControllerManager: true, Controllers: []string{"namespace-controller"}})
	kc := "--kubeconfig=" + env.Kubeconfig
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	client := env.Clientset(t)

	r := run(t, "install", "--profile", "demo", kc, "-y")
	if r.code != 0 {
		t.Fatalf("install: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{
		"created CustomResourceDefinition virtualservices.networking.istio.io\n",
		"created CustomResourceDefinition httproutes.gateway.networking.k8s.io\n",
		"created Namespace istio-system\n",
		"created ClusterRole istiod-clusterrole-istio-system\n",
		"created Deployment istio-system/istiod\n",
		"created Deployment istio-system/istio-egressgateway\n",
		"created Service istio-system/istio-ingressgateway\n",
		"Installed profile demo (revision default): 40 created, 0 configured, 0 unchanged, 0 pruned.",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("install output lacks %q:\n%s", want, r.stdout)
		}
	}
	svc, err := client.CoreV1().Services("istio-system").Get(ctx, "istio-ingressgateway", metav1.GetOptions{})
	if err != nil || svc.Spec.Type != "LoadBalancer" || svc.Spec.Ports[1].Port != 80 || svc.Spec.Ports[1].TargetPort.IntValue() != 8080 {
		t.Errorf("ingress gateway Service: %v %+v", err, svc)
	}

	t.Run("second install changes nothing", func(t *testing.T) {
		r := run(t, "install", "--profile", "demo", kc, "-y")
		if r.code != 0 || !strings.Contains(r.stdout, "0 created, 0 configured, 40 unchanged, 0 pruned") ||
			strings.Contains(r.stdout, "created ") {
			t.Errorf("second install: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("verify-install", func(t *testing.T) {
		if r := run(t, "verify-install", "--profile", "demo", kc, "--objects-only"); r.code != 0 ||
			!strings.Contains(r.stdout, "is installed (objects only; availability not checked): 40 objects checked") {
			t.Errorf("--objects-only: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		// No kubelet here: the Deployments exist but run nothing.
		r := run(t, "verify-install", "--profile", "demo", kc)
		if r.code != 1 || !strings.Contains(r.stdout, "NOT READY  Deployment istio-system/istiod: 0/1 replicas available") ||
			!strings.Contains(r.stderr, "every object of profile demo exists, but 5 are not ready") || strings.Contains(r.stdout, "MISSING") {
			t.Errorf("before availability: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		for _, name := range []string{"istiod", "istio-ingressgateway", "istio-egressgateway"} {
			d, err := client.AppsV1().Deployments("istio-system").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			d.Status.Replicas, d.Status.ReadyReplicas, d.Status.AvailableReplicas = 1, 1, 1
			d.Status.ObservedGeneration = d.Generation
			if _, err := client.AppsV1().Deployments("istio-system").UpdateStatus(ctx, d, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		r = run(t, "verify-install", "--profile", "demo", kc)
		if r.code != 1 || !strings.Contains(r.stdout, "NOT READY  MutatingWebhookConfiguration istio-sidecar-injector: not written yet") ||
			!strings.Contains(r.stdout, "ok         Deployment istio-system/istiod: 1/1 replicas available") {
			t.Errorf("without webhooks: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		// istiod writes its webhook configurations once it runs.
		if err := webhook.EnsureConfigurations(ctx, client, webhook.ConfigOptions{CABundle: testCA(t), Namespace: "istio-system"}); err != nil {
			t.Fatal(err)
		}
		r = run(t, "verify-install", "--profile", "demo", kc)
		if r.code != 0 || !strings.Contains(r.stdout, "Skiff profile demo (revision default) is installed and running: 42 objects checked.") {
			t.Errorf("available: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		if err := client.CoreV1().Services("istio-system").Delete(ctx, "istio-egressgateway", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		r = run(t, "verify-install", "--profile", "demo", kc)
		if r.code != 1 || !strings.Contains(r.stdout, "MISSING    Service istio-system/istio-egressgateway") ||
			!strings.Contains(r.stderr, "1 of 42 objects of profile demo (revision default) are missing: the install is incomplete; run skiff install --profile demo") {
			t.Errorf("missing Service: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		r = run(t, "install", "--profile", "demo", kc, "-y")
		if r.code != 0 || !strings.Contains(r.stdout, "created Service istio-system/istio-egressgateway\n") ||
			!strings.Contains(r.stdout, "1 created, 0 configured, 39 unchanged") {
			t.Errorf("repair: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("istiod RBAC", func(t *testing.T) {
		testIstiodRBAC(t, env)
	})

	t.Run("profile change prunes", func(t *testing.T) {
		r := run(t, "install", "--profile", "minimal", kc, "-y")
		for _, want := range []string{"pruned Deployment istio-system/istio-ingressgateway\n", "pruned Service istio-system/istio-egressgateway\n",
			"pruned ServiceAccount istio-system/istio-egressgateway-service-account\n",
			"configured ConfigMap istio-system/istio\n", "0 created, 1 configured, 33 unchanged, 6 pruned"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("install minimal over demo lacks %q: exit %d\n%s\n%s", want, r.code, r.stdout, r.stderr)
			}
		}
		if r := run(t, "verify-install", "--profile", "minimal", kc); r.code != 0 {
			t.Errorf("verify minimal: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("uninstall one revision", func(t *testing.T) {
		r := run(t, "uninstall", kc, "-y")
		if r.code != 0 || !strings.Contains(r.stdout, "removed Deployment istio-system/istiod\n") ||
			!strings.Contains(r.stdout, "removed ClusterRole istiod-clusterrole-istio-system\n") ||
			!strings.Contains(r.stdout, "removed MutatingWebhookConfiguration istio-sidecar-injector\n") ||
			strings.Contains(r.stdout, "CustomResourceDefinition") || strings.Contains(r.stdout, "Namespace") {
			t.Fatalf("uninstall: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		if _, err := client.CoreV1().Namespaces().Get(ctx, "istio-system", metav1.GetOptions{}); err != nil {
			t.Errorf("the shared namespace went with the revision: %v", err)
		}
		if _, err := env.Dynamic(t).Resource(crdGVR).Get(ctx, "virtualservices.networking.istio.io", metav1.GetOptions{}); err != nil {
			t.Errorf("the shared CRDs went with the revision: %v", err)
		}
		if r := run(t, "install", "--profile", "minimal", kc, "-y"); r.code != 0 || !strings.Contains(r.stdout, "created Deployment istio-system/istiod\n") {
			t.Fatalf("reinstall: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		if err := webhook.EnsureConfigurations(ctx, client, webhook.ConfigOptions{CABundle: testCA(t), Namespace: "istio-system"}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("uninstall --purge", func(t *testing.T) {
		r := run(t, "uninstall", "--purge", kc, "-y")
		if r.code != 0 || !strings.Contains(r.stdout, "removed CustomResourceDefinition gateways.networking.istio.io\n") ||
			!strings.Contains(r.stdout, "removed MutatingWebhookConfiguration istio-sidecar-injector\n") ||
			!strings.Contains(r.stdout, "removed Namespace istio-system\n") {
			t.Fatalf("uninstall: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		c, err := newClientFor(env.RESTConfig())
		if err != nil {
			t.Fatal(err)
		}
		left, err := c.listOwned(ctx, inst.LabelOwner+"="+inst.OwnerValue, func(string) bool { return true })
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range left {
			t.Errorf("left behind: %s", describe(o))
		}
		hooks, _ := c.listOwned(ctx, webhookManagedBy, func(string) bool { return true })
		for _, o := range hooks {
			t.Errorf("left behind: %s", describe(o))
		}
		crds, err := env.Dynamic(t).Resource(crdGVR).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, crd := range crds.Items {
			if strings.HasSuffix(crd.GetName(), ".istio.io") || strings.HasSuffix(crd.GetName(), ".gateway.networking.k8s.io") {
				t.Errorf("CRD left behind: %s", crd.GetName())
			}
		}
		if r := run(t, "uninstall", "--purge", kc, "-y"); r.code != 0 || !strings.Contains(r.stdout, "Nothing to remove") {
			t.Errorf("second uninstall: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		if r := run(t, "verify-install", "--profile", "minimal", kc, "--objects-only"); r.code != 1 || !strings.Contains(r.stderr, "are missing") {
			t.Errorf("verify after uninstall: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
	})
}

// testIstiodRBAC acts as istiod's service account: its Kubernetes source
// must list and watch every kind it reads, it must be able to write its
// webhook configurations and probe validation, and it must not be able to
// do what it has no reason to.
func testIstiodRBAC(t *testing.T, env *kubetest.Env) {
	const user = "system:serviceaccount:istio-system:istiod"
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:istio-system", "system:authenticated"}
	cfg := env.RESTConfig()
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var logs lockedBuffer
	src, err := kube.New(cfg, kube.Options{GatewaySecretsOnly: true, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- src.Run(runCtx, config.NewStore(nil, nil)) }()
	select {
	case <-src.Synced():
	case err := <-done:
		t.Fatalf("the Kubernetes source as istiod stopped: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("the Kubernetes source as istiod did not sync in 30s (forbidden?):\n%s", logs.String())
	}
	stop()
	<-done
	if strings.Contains(logs.String(), "forbidden") {
		t.Errorf("the source logged forbidden errors:\n%s", logs.String())
	}

	sa, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	o := webhook.ConfigOptions{CABundle: testCA(t), Namespace: "istio-system"}
	if err := webhook.EnsureConfigurations(ctx, sa, o); err != nil {
		t.Errorf("istiod cannot keep its webhook configurations: %v", err)
	}
	if _, why := webhook.ValidationRefuses(ctx, dyn, o); strings.Contains(why, "forbidden") {
		t.Errorf("istiod cannot probe validation with a dry-run Gateway: %s", why)
	}

	admin := env.Clientset(t)
	can := func(verb, group, resource, ns, name, sub string) bool {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user, Groups: groups,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: verb, Group: group, Resource: resource, Namespace: ns, Name: name, Subresource: sub},
		}}
		res, err := admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return res.Status.Allowed
	}
	for _, c := range []struct {
		verb, group, resource, ns, name, sub string
		want                                 bool
	}{
		{"create", "authentication.k8s.io", "tokenreviews", "", "", "", true},
		{"watch", "", "secrets", "default", "", "", true},
		{"update", "networking.istio.io", "virtualservices", "default", "r", "status", true},
		{"update", "gateway.networking.k8s.io", "httproutes", "default", "r", "status", true},
		{"create", "", "configmaps", "default", "", "", true},
		{"update", "", "configmaps", "default", "istio-ca-root-cert", "", true},
		{"create", "coordination.k8s.io", "leases", "istio-system", "", "", true},
		{"patch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "istio-sidecar-injector", "", true},
		// What istiod has no reason to do.
		{"delete", "", "namespaces", "", "default", "", false},
		{"create", "", "secrets", "default", "", "", false},
		{"update", "", "secrets", "istio-system", "cacerts", "", false},
		{"delete", "", "secrets", "default", "x", "", false},
		{"update", "", "configmaps", "default", "app-config", "", false},
		{"update", "networking.istio.io", "virtualservices", "default", "r", "", false},
		{"delete", "networking.istio.io", "virtualservices", "default", "r", "", false},
		{"create", "", "pods", "default", "", "", false},
		{"create", "coordination.k8s.io", "leases", "default", "", "", false},
		{"patch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", "other-injector", "", false},
		{"delete", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "", "istio-validator-istio-system", "", false},
		{"create", "apiextensions.k8s.io", "customresourcedefinitions", "", "", "", false},
	} {
		if got := can(c.verb, c.group, c.resource, c.ns, c.name, c.sub); got != c.want {
			t.Errorf("istiod may %s %s.%s/%s %s/%s: %v, want %v", c.verb, c.resource, c.group, c.sub, c.ns, c.name, got, c.want)
		}
	}
}

// lockedBuffer collects a logger's output from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// testCA is a self-signed CA certificate in PEM, as a webhook caBundle.
func testCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
