package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/server"
	"github.com/skiff-mesh/skiff/internal/testing/kubetest"
)

// Two replicas in Kubernetes mode: they make one root between them (kept
// in istio-ca-secret, even when both start at once), exactly one holds
// the Lease and publishes istio-ca-root-cert, and when it stops the other
// takes over and does that job.
func TestReplicasShareRootAndElectOneLeader(t *testing.T) {
	env := kubetest.Start(t, kubetest.Options{})
	cs := env.Clientset(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, ns := range []string{"istio-system", "shop"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	opts := make([]server.Options, 2)
	for i := range opts {
		o := newSecureOptions(t)
		o.ConfigDir, o.Kubeconfig, o.CADir, o.WebhookAddr = "", env.Kubeconfig, "", ""
		o.BootstrapTokensFile, o.RootCertOut = "", ""
		o.LeaderElection = server.LeaderElection{LeaseDuration: 2 * time.Second, RenewDeadline: 1500 * time.Millisecond,
			RetryPeriod: 200 * time.Millisecond, Identity: fmt.Sprintf("replica-%d", i)}
		opts[i] = o
	}
	// Both replicas start at once: one creates the Secret, the other
	// finds it taken and loads that root instead of its own.
	srvs, errs := make([]*server.Server, 2), make([]error, 2)
	var wg sync.WaitGroup
	for i := range opts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			srvs[i], errs[i] = server.New(opts[i])
		}()
	}
	wg.Wait()
	fixtures := make([]*secureFixture, 2)
	for i := range opts {
		if errs[i] != nil {
			t.Fatalf("replica %d: server.New: %v", i, errs[i])
		}
		fixtures[i] = runServer(t, opts[i], srvs[i])
	}
	a, b := fixtures[0].srv.CA().TrustBundlePEM(), fixtures[1].srv.CA().TrustBundlePEM()
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Fatalf("the replicas trust different roots:\n%s\n%s", a, b)
	}
	sec, err := cs.CoreV1().Secrets("istio-system").Get(ctx, "istio-ca-secret", metav1.GetOptions{})
	if err != nil || !bytes.Equal(sec.Data["root-cert.pem"], a) {
		t.Fatalf("istio-ca-secret: %v; root-cert.pem equal to the replicas' bundle: %v", err, err == nil && bytes.Equal(sec.Data["root-cert.pem"], a))
	}

	var lead, other *secureFixture
	eventually(t, 30*time.Second, "exactly one replica leading", func() error {
		l0, l1 := fixtures[0].srv.Leading(), fixtures[1].srv.Leading()
		if l0 == l1 {
			return fmt.Errorf("leading: %v %v", l0, l1)
		}
		lead, other = fixtures[0], fixtures[1]
		if l1 {
			lead, other = fixtures[1], fixtures[0]
		}
		return nil
	})
	lease, err := cs.CoordinationV1().Leases("istio-system").Get(ctx, "istio-leader", metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != lead.opts.LeaderElection.Identity {
		t.Fatalf("lease istio-system/istio-leader: %v, holder %v, want %s", err, lease.Spec.HolderIdentity, lead.opts.LeaderElection.Identity)
	}
	rootCert := func() error {
		cm, err := cs.CoreV1().ConfigMaps("shop").Get(ctx, "istio-ca-root-cert", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cm.Data["root-cert.pem"] != string(a) {
			return errors.New("root-cert.pem is not the mesh's root")
		}
		return nil
	}
	eventually(t, 30*time.Second, "istio-ca-root-cert published in shop by the leader", rootCert)

	lead.stop()
	eventually(t, 30*time.Second, "the other replica leading after the leader stopped", func() error {
		if !other.srv.Leading() {
			return errors.New("not leading")
		}
		return nil
	})
	if err := cs.CoreV1().ConfigMaps("shop").Delete(ctx, "istio-ca-root-cert", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "istio-ca-root-cert published again by the new leader", rootCert)
}

// skiffd in Kubernetes mode restarts and resumes: what changed in the API
// while it was down is what it holds afterwards (nothing lost, nothing
// stale), and it signs with the same root, kept in istio-ca-secret.
func TestKubernetesModeRestartResumes(t *testing.T) {
	env := kubetest.Start(t, kubetest.Options{})
	cs := env.Clientset(t)
	dyn := env.Dynamic(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, ns := range []string{"istio-system", "shop"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	vsr := schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"}
	createVS := func(name string) {
		t.Helper()
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
			"metadata": map[string]any{"name": name, "namespace": "shop"},
			"spec": map[string]any{"hosts": []any{name + ".example.com"},
				"http": []any{map[string]any{"route": []any{map[string]any{"destination": map[string]any{"host": "reviews"}}}}}},
		}}
		if _, err := dyn.Resource(vsr).Namespace("shop").Create(ctx, u, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	createVS("before")
	createVS("kept")
	opts := func() server.Options {
		o := newSecureOptions(t)
		o.ConfigDir, o.Kubeconfig, o.CADir, o.WebhookAddr = "", env.Kubeconfig, "", ""
		o.BootstrapTokensFile, o.RootCertOut = "", ""
		return o
	}
	has := func(f *secureFixture, name string) bool {
		return f.srv.Store().Snapshot().Get(config.Key{Kind: config.VirtualService, Namespace: "shop", Name: name}) != nil
	}
	first := startSecure(t, opts())
	eventually(t, 30*time.Second, "both VirtualServices in the first skiffd", func() error {
		if !has(first, "before") || !has(first, "kept") {
			return errors.New("not yet")
		}
		return nil
	})
	root := first.srv.CA().TrustBundlePEM()
	first.stop()

	// While skiffd is down: one VirtualService deleted, one created.
	if err := dyn.Resource(vsr).Namespace("shop").Delete(ctx, "before", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	createVS("while-down")

	second := startSecure(t, opts())
	eventually(t, 30*time.Second, "the second skiffd holding exactly the API's VirtualServices", func() error {
		if has(second, "before") || !has(second, "kept") || !has(second, "while-down") {
			return fmt.Errorf("before %v kept %v while-down %v", has(second, "before"), has(second, "kept"), has(second, "while-down"))
		}
		return nil
	})
	if got := second.srv.CA().TrustBundlePEM(); !bytes.Equal(got, root) {
		t.Errorf("the restarted skiffd trusts another root: the mesh's root must survive a restart (istio-ca-secret)")
	}
}
