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
