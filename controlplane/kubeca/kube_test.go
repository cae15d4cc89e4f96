package kubeca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	securityapi "istio.io/api/security/v1alpha1"

	"github.com/skiff-mesh/skiff/controlplane/ca"
	"github.com/skiff-mesh/skiff/controlplane/kubeca"
	"github.com/skiff-mesh/skiff/internal/testing/kubetest"
)

const (
	istiodHost = "istiod.istio-system.svc"
	// skiffdUser is who skiffd runs as in the cluster; the tests act as it,
	// through impersonation, with only the RBAC rules kubeca documents.
	skiffdUser = "system:serviceaccount:istio-system:skiffd"
)

// fixture is one API server shared by the subtests: starting one costs
// seconds of the machine's two cores.
type fixture struct {
	env    *kubetest.Env
	admin  kubernetes.Interface
	skiffd *rest.Config // impersonates skiffdUser
	// reviews counts TokenReview calls made through skiffdClient.
	reviews atomic.Int64
}

func TestKubernetes(t *testing.T) {
	env := kubetest.Start(t, kubetest.Options{NoCRDs: true})
	f := &fixture{env: env, admin: env.Clientset(t)}
	f.grantSkiffd(t)
	f.createNamespace(t, "shop", nil)
	for _, sa := range []string{"reviews", "ratings", "gone"} {
		f.createServiceAccount(t, "shop", sa)
	}

	t.Run("TokenReview", f.testTokenReview)
	t.Run("TokenReviewWithoutRBAC", f.testTokenReviewWithoutRBAC)
	t.Run("TokenReviewCache", f.testTokenReviewCache)
	t.Run("DeletedServiceAccount", f.testDeletedServiceAccount)
	t.Run("CAEndToEnd", f.testCAEndToEnd)
	t.Run("RootCertPublisher", f.testPublisher)
}

// grantSkiffd binds skiffd's user to exactly the rules kubeca's package
// documentation asks for.
func (f *fixture) grantSkiffd(t *testing.T) {
	ctx := t.Context()
	subj := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "skiffd", Namespace: "istio-system"}}
	rbac := f.admin.RbacV1()
	_, err := rbac.ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "skiffd-kubeca"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "watch", "create", "update"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for name, role := range map[string]string{"skiffd-kubeca": "skiffd-kubeca", "skiffd-auth-delegator": "system:auth-delegator"} {
		_, err := rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   subj,
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	f.skiffd = f.env.RESTConfig()
	f.skiffd.Impersonate = rest.ImpersonationConfig{UserName: skiffdUser}
	f.skiffd.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/tokenreviews") {
				f.reviews.Add(1)
			}
			return rt.RoundTrip(r)
		})
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (f *fixture) skiffdClient(t *testing.T) kubernetes.Interface {
	c, err := kubernetes.NewForConfig(f.skiffd)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (f *fixture) createNamespace(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	_, err := f.admin.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) createServiceAccount(t *testing.T, ns, name string) {
	t.Helper()
	_, err := f.admin.CoreV1().ServiceAccounts(ns).Create(t.Context(), &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: name},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// token asks the TokenRequest API for a token of ns/sa, as the kubelet does
// for a pod's projected istio-token volume.
func (f *fixture) token(t *testing.T, ns, sa, audience string) string {
	t.Helper()
	exp := int64(600)
	tr, err := f.admin.CoreV1().ServiceAccounts(ns).CreateToken(t.Context(), sa, &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &exp},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// call is the context a CreateCertificate handler sees for a caller that
// sent `authorization: Bearer tok`.
func call(t *testing.T, tok string) context.Context {
	return metadata.NewIncomingContext(t.Context(), metadata.Pairs("authorization", "Bearer "+tok))
}

func wantRefused(t *testing.T, err error, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("authenticated; want refused with %q", substr)
	}
	if !errors.Is(err, ca.ErrUnauthenticated) {
		t.Errorf("error %v does not wrap ca.ErrUnauthenticated", err)
	}
	if !strings.Contains(err.Error(), substr) {
		t.Errorf("error %q does not say %q", err, substr)
	}
}

func (f *fixture) testTokenReview(t *testing.T) {
	a := kubeca.NewTokenReviewAuthenticator(f.skiffdClient(t), kubeca.TokenReviewOptions{TrustDomain: "cluster.local"})

	id, err := a.Authenticate(call(t, f.token(t, "shop", "reviews", "istio-ca")))
	if err != nil {
		t.Fatalf("token of shop/reviews for istio-ca: %v", err)
	}
	if got, want := id.SPIFFEID(), "spiffe://cluster.local/ns/shop/sa/reviews"; got != want {
		t.Errorf("identity %s, want %s", got, want)
	}

	_, err = a.Authenticate(call(t, f.token(t, "shop", "reviews", "other")))
	wantRefused(t, err, "token is for audience other, want istio-ca")

	_, err = a.Authenticate(call(t, "not-a-token"))
	wantRefused(t, err, "token review: not authenticated: ")

	_, err = a.Authenticate(t.Context())
	wantRefused(t, err, "no authorization metadata")

	// Another audience configured: the istio-ca token is now the wrong one.
	b := kubeca.NewTokenReviewAuthenticator(f.skiffdClient(t), kubeca.TokenReviewOptions{Audiences: []string{"skiff-ca"}})
	_, err = b.Authenticate(call(t, f.token(t, "shop", "reviews", "istio-ca")))
	wantRefused(t, err, "token is for audience istio-ca, want skiff-ca")
}

// Without system:auth-delegator the API server refuses skiffd's
// TokenReview; the error says which grant is missing.
func (f *fixture) testTokenReviewWithoutRBAC(t *testing.T) {
	cfg := f.env.RESTConfig()
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:istio-system:nobody"}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a := kubeca.NewTokenReviewAuthenticator(c, kubeca.TokenReviewOptions{})
	_, err = a.Authenticate(call(t, f.token(t, "shop", "reviews", "istio-ca")))
	wantRefused(t, err, "system:auth-delegator")
}

func (f *fixture) testTokenReviewCache(t *testing.T) {
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	a := kubeca.NewTokenReviewAuthenticator(f.skiffdClient(t), kubeca.TokenReviewOptions{CacheTTL: time.Minute, Now: clock})
	tok := f.token(t, "shop", "ratings", "istio-ca")

	before := f.reviews.Load()
	for i := range 3 {
		id, err := a.Authenticate(call(t, tok))
		if err != nil || id.ServiceAccount != "ratings" {
			t.Fatalf("call %d: %+v, %v", i, id, err)
		}
	}
	if n := f.reviews.Load() - before; n != 1 {
		t.Errorf("3 calls with one token made %d TokenReviews, want 1 (cached)", n)
	}

	// Refusals are not remembered: each is asked again.
	before = f.reviews.Load()
	for range 2 {
		_, err := a.Authenticate(call(t, "garbage"))
		wantRefused(t, err, "not authenticated")
	}
	if n := f.reviews.Load() - before; n != 2 {
		t.Errorf("2 refused calls made %d TokenReviews, want 2 (refusals not cached)", n)
	}

	// Past the TTL the token is reviewed again.
	mu.Lock()
	now = now.Add(time.Minute + time.Second)
	mu.Unlock()
	before = f.reviews.Load()
	if _, err := a.Authenticate(call(t, tok)); err != nil {
		t.Fatal(err)
	}
	if n := f.reviews.Load() - before; n != 1 {
		t.Errorf("after the TTL: %d TokenReviews, want 1", n)
	}
}

// A bound token stops authenticating once its service account is deleted.
func (f *fixture) testDeletedServiceAccount(t *testing.T) {
	a := kubeca.NewTokenReviewAuthenticator(f.skiffdClient(t), kubeca.TokenReviewOptions{CacheTTL: -1})
	tok := f.token(t, "shop", "gone", "istio-ca")
	if _, err := a.Authenticate(call(t, tok)); err != nil {
		t.Fatalf("before deletion: %v", err)
	}
	if err := f.admin.CoreV1().ServiceAccounts("shop").Delete(t.Context(), "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The API server reads service accounts through its informer cache,
	// so the deletion takes effect a moment later.
	var err error
	eventuallyWithin(t, 40*time.Second, "token of the deleted service account refused", func() error {
		if _, err = a.Authenticate(call(t, tok)); err == nil {
			return errors.New("still authenticated")
		}
		return nil
	})
	wantRefused(t, err, "token review: not authenticated: ")
	t.Logf("refusal after deletion: %v", err)
}

func (f *fixture) testCAEndToEnd(t *testing.T) {
	auth := kubeca.NewTokenReviewAuthenticator(f.skiffdClient(t), kubeca.TokenReviewOptions{})
	c, err := ca.New(ca.Options{
		Store:         ca.DirStore{Dir: t.TempDir()},
		RootKey:       ca.ECDSAP256,
		Authenticator: ca.FirstOf(auth, ca.ClientCertAuthenticator{}),
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	client := dialCA(t, serveCA(t, c), c.TrustBundle())
	tok := f.token(t, "shop", "reviews", "istio-ca")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+tok)

	const own = "spiffe://cluster.local/ns/shop/sa/reviews"
	res, err := client.CreateCertificate(ctx, &securityapi.IstioCertificateRequest{Csr: csrFor(t, key, own), ValidityDuration: 3600})
	if err != nil {
		t.Fatalf("CSR for the token's own service account: %v", err)
	}
	leaf := verify(t, res.GetCertChain(), c.TrustBundle())
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != own {
		t.Errorf("certificate URIs %v, want [%s]", leaf.URIs, own)
	}

	const other = "spiffe://cluster.local/ns/shop/sa/ratings"
	_, err = client.CreateCertificate(ctx, &securityapi.IstioCertificateRequest{Csr: csrFor(t, key, other)})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("CSR for another service account: %v, want PermissionDenied", err)
	}
	if msg := status.Convert(err).Message(); !strings.Contains(msg, own) || !strings.Contains(msg, other) {
		t.Errorf("refusal %q does not name both %s and %s", msg, own, other)
	}

	bad := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+f.token(t, "shop", "reviews", "other"))
	_, err = client.CreateCertificate(bad, &securityapi.IstioCertificateRequest{Csr: csrFor(t, key, own)})
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "want istio-ca") {
		t.Errorf("token for audience other: %v, want Unauthenticated naming the audience", err)
	}
}

func serveCA(t *testing.T, c *ca.CA) string {
	sc, err := c.ServingCertificate([]string{istiodHost}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(sc.TLSConfig())))
	c.Register(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func dialCA(t *testing.T, addr string, roots []*x509.Certificate) securityapi.IstioCertificateServiceClient {
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: pool, ServerName: istiodHost, MinVersion: tls.VersionTLS12,
	})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return securityapi.NewIstioCertificateServiceClient(cc)
}

func csrFor(t *testing.T, key *ecdsa.PrivateKey, id string) string {
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// verify checks the chain as a peer would and returns the leaf.
func verify(t *testing.T, chain []string, roots []*x509.Certificate) *x509.Certificate {
	t.Helper()
	if len(chain) < 2 {
		t.Fatalf("cert_chain has %d elements, want leaf ... roots", len(chain))
	}
	blk, _ := pem.Decode([]byte(chain[0]))
	if blk == nil {
		t.Fatalf("leaf is not PEM: %q", chain[0])
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("leaf does not verify against the CA's roots: %v", err)
	}
	return leaf
}

func (f *fixture) testPublisher(t *testing.T) {
	c, err := ca.New(ca.Options{
		Store: ca.DirStore{Dir: t.TempDir()}, RootKey: ca.ECDSAP256,
		Authenticator: ca.ClientCertAuthenticator{}, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	const excludeLabel = "skiff-test/outside-mesh"
	filter, err := kubeca.SelectorFilter([]metav1.LabelSelector{{
		MatchExpressions: []metav1.LabelSelectorRequirement{{Key: excludeLabel, Operator: metav1.LabelSelectorOpDoesNotExist}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	f.createNamespace(t, "outside", map[string]string{excludeLabel: "yes"})
	f.createNamespace(t, "doomed", nil)

	changed, cancel := c.Subscribe()
	t.Cleanup(cancel)
	p, err := kubeca.NewRootCertPublisher(f.skiffdClient(t), kubeca.PublisherOptions{
		Bundle: c.TrustBundlePEM, Changed: changed, NamespaceFilter: filter,
		Log: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return 10s after its context ended")
		}
	})

	bundle := string(c.TrustBundlePEM())
	for _, ns := range []string{"shop", "default", "kube-system", "doomed"} {
		f.waitConfigMap(t, ns, bundle)
	}
	cm := f.getConfigMap(t, "shop")
	if cm.Labels["istio.io/config"] != "true" {
		t.Errorf("ConfigMap labels %v, want istio.io/config=true", cm.Labels)
	}

	f.createNamespace(t, "late", nil)
	f.waitConfigMap(t, "late", bundle)

	// A user's edit is put back; keys of their own are left alone, as istiod does.
	cm.Data = map[string]string{kubeca.RootCertKey: "tampered", "note": "mine"}
	if _, err := f.admin.CoreV1().ConfigMaps("shop").Update(t.Context(), cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitConfigMap(t, "shop", bundle)
	if got := f.getConfigMap(t, "shop").Data["note"]; got != "mine" {
		t.Errorf("user's own key note = %q after the revert, want kept", got)
	}
	// A deleted one is made again.
	if err := f.admin.CoreV1().ConfigMaps("late").Delete(t.Context(), kubeca.DefaultConfigMapName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitConfigMap(t, "late", bundle)

	// doomed is deleted: without a namespace controller it stays
	// Terminating, and the publisher must leave it alone.
	if err := f.admin.CoreV1().Namespaces().Delete(t.Context(), "doomed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "namespace doomed terminating", func() error {
		ns, err := f.admin.CoreV1().Namespaces().Get(t.Context(), "doomed", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if ns.Status.Phase != corev1.NamespaceTerminating {
			return fmt.Errorf("phase %s", ns.Status.Phase)
		}
		return nil
	})

	if err := c.RotateRoot(time.Hour); err != nil {
		t.Fatal(err)
	}
	rotated := string(c.TrustBundlePEM())
	if rotated == bundle || len(c.TrustBundle()) != 2 {
		t.Fatalf("rotation left the bundle with %d roots", len(c.TrustBundle()))
	}
	for _, ns := range []string{"shop", "default", "kube-system", "late"} {
		f.waitConfigMap(t, ns, rotated)
	}

	// One worker takes namespaces in order: once "last" has its ConfigMap,
	// every namespace queued before it has been handled.
	f.createNamespace(t, "outside-late", map[string]string{excludeLabel: "yes"})
	f.createNamespace(t, "last", nil)
	f.waitConfigMap(t, "last", rotated)
	for _, ns := range []string{"outside", "outside-late", "kube-public", "kube-node-lease"} {
		if _, err := f.admin.CoreV1().ConfigMaps(ns).Get(t.Context(), kubeca.DefaultConfigMapName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("namespace %s (not selected): ConfigMap get = %v, want NotFound", ns, err)
		}
	}
	if got := f.getConfigMap(t, "doomed").Data[kubeca.RootCertKey]; got != bundle {
		t.Errorf("terminating namespace doomed: ConfigMap was rewritten; want it left alone")
	}
}

func (f *fixture) getConfigMap(t *testing.T, ns string) *corev1.ConfigMap {
	t.Helper()
	cm, err := f.admin.CoreV1().ConfigMaps(ns).Get(t.Context(), kubeca.DefaultConfigMapName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cm
}

func (f *fixture) waitConfigMap(t *testing.T, ns, bundle string) {
	t.Helper()
	eventually(t, "ConfigMap "+ns+"/"+kubeca.DefaultConfigMapName+" holding the trust bundle", func() error {
		cm, err := f.admin.CoreV1().ConfigMaps(ns).Get(t.Context(), kubeca.DefaultConfigMapName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if got := cm.Data[kubeca.RootCertKey]; got != bundle {
			return fmt.Errorf("data %s is %d bytes, not the %d of the bundle", kubeca.RootCertKey, len(got), len(bundle))
		}
		return nil
	})
}

func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	eventuallyWithin(t, 20*time.Second, what, cond)
}

func eventuallyWithin(t *testing.T, limit time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}
