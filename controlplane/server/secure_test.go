package server_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	securityapi "istio.io/api/security/v1alpha1"

	"github.com/skiff-mesh/skiff/controlplane/ca"
	"github.com/skiff-mesh/skiff/controlplane/server"
)

// secureFixture is skiffd in-process with its CA on 127.0.0.1, and the
// files a local-mesh supervisor would hand it.
type secureFixture struct {
	t          *testing.T
	opts       server.Options
	srv        *server.Server
	stop       func()
	rootOut    string
	tokensFile string
}

func newSecureOptions(t *testing.T) server.Options {
	state := t.TempDir()
	return server.Options{
		ConfigDir: t.TempDir(), XDSAddr: "127.0.0.1:0", MonitoringAddr: "127.0.0.1:0", SecureAddr: "127.0.0.1:0",
		CADir: filepath.Join(state, "ca"), BootstrapTokensFile: filepath.Join(state, "tokens.json"),
		RootCertOut: filepath.Join(state, "root-cert.pem"), RootKey: ca.ECDSAP256,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// start runs skiffd with o until the test ends (or stop is called) and
// waits for it to be ready.
func startSecure(t *testing.T, o server.Options) *secureFixture {
	t.Helper()
	srv, err := server.New(o)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	return runServer(t, o, srv)
}

// runServer runs a server made by server.New until the test ends (or stop
// is called) and waits for it to be ready.
func runServer(t *testing.T, o server.Options, srv *server.Server) *secureFixture {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	f := &secureFixture{t: t, opts: o, srv: srv, rootOut: o.RootCertOut, tokensFile: o.BootstrapTokensFile}
	var once bool
	f.stop = func() {
		if once {
			return
		}
		once = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("skiffd Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("skiffd did not stop within 10 s")
		}
	}
	t.Cleanup(f.stop)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get("http://" + srv.MonitoringAddr().String() + "/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("skiffd not ready within 10 s")
		}
	}
	return f
}

// conn dials 15012 as a proxy does: TLS verified against the bundle
// skiffd wrote, server name istiod.istio-system.svc.
func (f *secureFixture) conn() *grpc.ClientConn {
	f.t.Helper()
	pemRoots, err := os.ReadFile(f.rootOut)
	if err != nil {
		f.t.Fatalf("--root-cert-out: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemRoots) {
		f.t.Fatalf("--root-cert-out %s holds no PEM certificate", f.rootOut)
	}
	cc, err := grpc.NewClient(f.srv.SecureAddr().String(), grpc.WithTransportCredentials(
		credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "istiod.istio-system.svc"})))
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { cc.Close() })
	return cc
}

func csrFor(t *testing.T, spiffe string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(spiffe)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func createCert(cc *grpc.ClientConn, token, csr string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	resp, err := securityapi.NewIstioCertificateServiceClient(cc).CreateCertificate(ctx,
		&securityapi.IstioCertificateRequest{Csr: csr, ValidityDuration: 3600})
	return resp.GetCertChain(), err
}

// verifyChain checks a CreateCertificate response as a proxy would: the
// leaf carries exactly want and chains to a root in the last element.
func verifyChain(t *testing.T, chain []string, want string) (leaf, root *x509.Certificate) {
	t.Helper()
	if len(chain) < 2 {
		t.Fatalf("cert chain has %d elements, want leaf … roots", len(chain))
	}
	parse := func(s string) []*x509.Certificate {
		var out []*x509.Certificate
		for b := []byte(s); ; {
			var blk *pem.Block
			if blk, b = pem.Decode(b); blk == nil {
				return out
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, c)
		}
	}
	leaf = parse(chain[0])[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != want {
		t.Fatalf("leaf URI SANs %v, want exactly %s", leaf.URIs, want)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, s := range chain[1 : len(chain)-1] {
		for _, c := range parse(s) {
			inter.AddCert(c)
		}
	}
	for _, c := range parse(chain[len(chain)-1]) {
		roots.AddCert(c)
	}
	v, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatalf("issued leaf does not verify against the returned roots: %v", err)
	}
	return leaf, v[0][len(v[0])-1]
}

func writeTokens(t *testing.T, path string, recs ...ca.TokenRecord) {
	t.Helper()
	if err := ca.WriteTokenRecords(path, recs); err != nil {
		t.Fatal(err)
	}
}

func metricValues(t *testing.T, monAddr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + monAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = v
		}
	}
	return out
}

// A proxy's view of 15012: a certificate for exactly its identity with its
// token; another identity, an unknown token and a malformed CSR refused
// with the codes istiod uses, each counted; ADS works over the same TLS.
func TestSecureServesCAAndADS(t *testing.T) {
	o := newSecureOptions(t)
	const tokA = "token-for-reviews"
	writeTokens(t, o.BootstrapTokensFile, ca.TokenRecord{SHA256: ca.HashToken(tokA), Namespace: "default", ServiceAccount: "reviews"})
	f := startSecure(t, o)
	cc := f.conn()
	me := "spiffe://cluster.local/ns/default/sa/reviews"

	chain, err := createCert(cc, tokA, csrFor(t, me))
	if err != nil {
		t.Fatalf("CreateCertificate with the pod's token: %v", err)
	}
	_, root := verifyChain(t, chain, me)
	bundle, _ := os.ReadFile(f.rootOut)
	if !strings.Contains(string(bundle), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw}))) {
		t.Errorf("the issuing root is not in --root-cert-out %s", f.rootOut)
	}

	other := "spiffe://cluster.local/ns/default/sa/ratings"
	_, err = createCert(cc, tokA, csrFor(t, other))
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), other) || !strings.Contains(err.Error(), me) {
		t.Errorf("CSR for another service account: %v; want PermissionDenied naming %s and %s", err, other, me)
	}
	_, err = createCert(cc, "not-a-known-token", csrFor(t, me))
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("unknown token: %v; want Unauthenticated", err)
	}
	_, err = createCert(cc, tokA, "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("malformed CSR: %v; want InvalidArgument", err)
	}
	if chain, err = createCert(cc, tokA, csrFor(t, me)); err != nil {
		t.Fatalf("a good request after the refusals: %v", err)
	}
	verifyChain(t, chain, me)

	m := metricValues(t, f.srv.MonitoringAddr().String())
	for name, want := range map[string]float64{
		"citadel_server_csr_count": 5, "citadel_server_success_cert_issuance_count": 2,
		"citadel_server_authentication_failure_count": 1, "citadel_server_csr_parsing_err_count": 1,
		"citadel_server_id_extraction_err_count": 1,
	} {
		if m[name] != want {
			t.Errorf("/metrics %s = %v, want %v", name, m[name], want)
		}
	}
	if m["citadel_server_root_cert_expiry_timestamp"] < float64(time.Now().Unix()) {
		t.Errorf("/metrics citadel_server_root_cert_expiry_timestamp = %v, want the root's expiry", m["citadel_server_root_cert_expiry_timestamp"])
	}

	// ADS over the same TLS port: only with the workload's credential, and
	// only as a proxy of the credential's namespace.
	ads := func(token, namespace string) (*discoveryv3.DiscoveryResponse, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if token != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
		}
		stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
		if err != nil {
			return nil, err
		}
		md, _ := structpb.NewStruct(map[string]any{"NAMESPACE": namespace, "SERVICE_ACCOUNT": "reviews", "LABELS": map[string]any{"app": "reviews"}})
		// A stream the server ended at once makes Send return io.EOF; the
		// status is Recv's to tell.
		_ = stream.Send(&discoveryv3.DiscoveryRequest{
			Node:    &corev3.Node{Id: "sidecar~127.10.0.5~reviews-1." + namespace + "~" + namespace + ".svc.cluster.local", Cluster: "reviews." + namespace, Metadata: md},
			TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster",
		})
		return stream.Recv()
	}
	if _, err := ads("", "default"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("ADS over 15012 without a credential: %v, want Unauthenticated", err)
	}
	if _, err := ads(tokA, "shop"); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "its own namespace") {
		t.Errorf("ADS over 15012 as a proxy of shop with a default/reviews token: %v, want PermissionDenied", err)
	}
	resp, err := ads(tokA, "default")
	if err != nil {
		t.Fatalf("ADS over 15012 with the pod's token: %v", err)
	}
	if resp.GetTypeUrl() != "type.googleapis.com/envoy.config.cluster.v3.Cluster" || resp.GetNonce() == "" {
		t.Errorf("ADS over 15012 answered %s nonce %q, want a CDS response", resp.GetTypeUrl(), resp.GetNonce())
	}

	// The tokens file is followed: a new pod's token is honoured; a
	// malformed rewrite keeps the table last read.
	const tokB = "token-for-ratings"
	writeTokens(t, o.BootstrapTokensFile,
		ca.TokenRecord{SHA256: ca.HashToken(tokA), Namespace: "default", ServiceAccount: "reviews"},
		ca.TokenRecord{SHA256: ca.HashToken(tokB), Namespace: "default", ServiceAccount: "ratings"})
	eventually(t, 5*time.Second, "a token added to the file is accepted", func() error {
		_, err := createCert(cc, tokB, csrFor(t, other))
		return err
	})
	bad := fmt.Sprintf("{\"sha256\":%q,\"namespace\":\"default\",\"serviceAccount\":\"reviews\"}\n{not json\n", ca.HashToken(tokA))
	if err := os.WriteFile(o.BootstrapTokensFile, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // well past the 20 ms debounce
	if _, err := createCert(cc, tokB, csrFor(t, other)); err != nil {
		t.Errorf("after a malformed tokens file, a token of the last good one: %v; want it kept", err)
	}
	writeTokens(t, o.BootstrapTokensFile, ca.TokenRecord{SHA256: ca.HashToken(tokA), Namespace: "default", ServiceAccount: "reviews"})
	eventually(t, 5*time.Second, "a token removed from the file is refused", func() error {
		if _, err := createCert(cc, tokB, csrFor(t, other)); status.Code(err) != codes.Unauthenticated {
			return fmt.Errorf("got %v, want Unauthenticated", err)
		}
		return nil
	})
}

// skiffd restarted on the same files keeps its root and honours the
// tokens issued before.
func TestSecureTokensAndRootSurviveRestart(t *testing.T) {
	o := newSecureOptions(t)
	const tok = "pod-token"
	writeTokens(t, o.BootstrapTokensFile, ca.TokenRecord{SHA256: ca.HashToken(tok), Namespace: "shop", ServiceAccount: "cart",
		Expires: time.Now().Add(time.Hour)})
	me := "spiffe://cluster.local/ns/shop/sa/cart"
	f := startSecure(t, o)
	chain, err := createCert(f.conn(), tok, csrFor(t, me))
	if err != nil {
		t.Fatal(err)
	}
	_, root1 := verifyChain(t, chain, me)
	f.stop()

	g := startSecure(t, o)
	chain, err = createCert(g.conn(), tok, csrFor(t, me))
	if err != nil {
		t.Fatalf("after a restart, the token issued before: %v", err)
	}
	if _, root2 := verifyChain(t, chain, me); !root1.Equal(root2) {
		t.Errorf("the root changed across a restart on the same --ca-dir")
	}
}

// Istio's sample cacerts: skiffd signs as their intermediate and the chain
// ends at their root.
func TestSecurePluggedCACerts(t *testing.T) {
	samples := "../../../shared/istio-samples/certs"
	rootPEM, err := os.ReadFile(filepath.Join(samples, "root-cert.pem"))
	if err != nil {
		t.Fatalf("Istio's sample certs: %v", err)
	}
	blk, _ := pem.Decode(rootPEM)
	sampleRoot, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	o := newSecureOptions(t)
	o.CACertsDir = samples
	const tok = "t"
	writeTokens(t, o.BootstrapTokensFile, ca.TokenRecord{SHA256: ca.HashToken(tok), Namespace: "default", ServiceAccount: "sleep"})
	f := startSecure(t, o)
	me := "spiffe://cluster.local/ns/default/sa/sleep"
	chain, err := createCert(f.conn(), tok, csrFor(t, me))
	if err != nil {
		t.Fatal(err)
	}
	leaf, root := verifyChain(t, chain, me)
	if !root.Equal(sampleRoot) {
		t.Errorf("issued chain ends at %s, want the sample root %s", root.Subject, sampleRoot.Subject)
	}
	if leaf.Issuer.CommonName != "Istio CA" {
		t.Errorf("leaf issued by %s, want the sample intermediate (CN=Istio CA)", leaf.Issuer)
	}
	if _, err := os.Stat(filepath.Join(o.CADir, "ca-key.pem")); err == nil {
		t.Errorf("a self-signed root was made in --ca-dir although cacerts were plugged in")
	}
}

// Bad settings stop skiffd at start with what, where and what to do.
func TestSecureStartupErrors(t *testing.T) {
	brokenCerts := t.TempDir()
	os.WriteFile(filepath.Join(brokenCerts, "ca-cert.pem"), []byte("not pem"), 0o644)
	badMesh := filepath.Join(t.TempDir(), "mesh.yaml")
	os.WriteFile(badMesh, []byte("trustDomain: example.org\nextensionProviders:\n- name: authz\n  envoyExtAuthzHttp:\n    servise: authz.foo.svc.cluster.local\n"), 0o644)
	goodMesh := filepath.Join(t.TempDir(), "mesh.yaml")
	os.WriteFile(goodMesh, []byte("trustDomain: example.org\n"), 0o644)
	badTokens := filepath.Join(t.TempDir(), "tokens.json")
	os.WriteFile(badTokens, []byte("{\"sha256\":\"abc\",\"namespace\":\"a\",\"serviceAccount\":\"b\"}\n"), 0o600)
	for _, tc := range []struct {
		name string
		edit func(*server.Options)
		want []string
	}{
		{"ttl over max", func(o *server.Options) { o.WorkloadCertTTL, o.MaxWorkloadCertTTL = 48*time.Hour, 24*time.Hour },
			[]string{"--workload-cert-ttl 48h0m0s exceeds --max-workload-cert-ttl 24h0m0s"}},
		{"negative ttl", func(o *server.Options) { o.WorkloadCertTTL = -time.Hour }, []string{"--workload-cert-ttl -1h0m0s: must be positive"}},
		{"broken cacerts", func(o *server.Options) { o.CACertsDir = brokenCerts }, []string{"--cacerts-dir", brokenCerts, "ca-key.pem"}},
		{"unknown meshconfig field", func(o *server.Options) { o.MeshConfigFile = badMesh },
			[]string{"--meshconfig " + badMesh, "extensionProviders[0].envoyExtAuthzHttp.servise: unknown field"}},
		{"trust domain conflict", func(o *server.Options) { o.MeshConfigFile, o.TrustDomain = goodMesh, "cluster.local" },
			[]string{`--trust-domain "cluster.local" contradicts --meshconfig ` + goodMesh + `, whose trustDomain is "example.org"`}},
		{"malformed tokens", func(o *server.Options) { o.BootstrapTokensFile = badTokens },
			[]string{"--bootstrap-tokens", badTokens + " line 1", ".sha256"}},
		{"root out over the CA's root", func(o *server.Options) { o.RootCertOut = filepath.Join(o.CADir, "root-cert.pem") },
			[]string{"--root-cert-out", "is the CA's own root-cert.pem"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newSecureOptions(t)
			tc.edit(&o)
			s, err := server.New(o)
			if err == nil {
				t.Fatalf("server.New accepted it")
			}
			_ = s
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// The mesh config's trust domain is the CA's and the registry's.
func TestSecureMeshConfigTrustDomain(t *testing.T) {
	mesh := filepath.Join(t.TempDir(), "mesh.yaml")
	os.WriteFile(mesh, []byte("trustDomain: example.org\nrootNamespace: mesh-root\n"), 0o644)
	o := newSecureOptions(t)
	o.MeshConfigFile = mesh
	const tok = "t"
	writeTokens(t, o.BootstrapTokensFile, ca.TokenRecord{SHA256: ca.HashToken(tok), Namespace: "default", ServiceAccount: "sleep"})
	f := startSecure(t, o)
	if got := f.srv.MeshConfig().GetRootNamespace(); got != "mesh-root" {
		t.Errorf("MeshConfig().RootNamespace = %q, want mesh-root", got)
	}
	me := "spiffe://example.org/ns/default/sa/sleep"
	chain, err := createCert(f.conn(), tok, csrFor(t, me))
	if err != nil {
		t.Fatal(err)
	}
	verifyChain(t, chain, me)
}

func eventually(t *testing.T, limit time.Duration, what string, f func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if err = f(); err == nil {
			return
		}
	}
	t.Fatalf("after %s, %s: %v", limit, what, err)
}

// A proxy renews with the certificate it holds, over mTLS and without a
// token (FirstOf: tokens, then the client certificate); a root rotation
// rewrites --root-cert-out with both roots.
func TestSecureRenewalAndRootRotation(t *testing.T) {
	o := newSecureOptions(t)
	const tok = "t"
	writeTokens(t, o.BootstrapTokensFile, ca.TokenRecord{SHA256: ca.HashToken(tok), Namespace: "default", ServiceAccount: "sleep"})
	f := startSecure(t, o)
	me := "spiffe://cluster.local/ns/default/sa/sleep"
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(me)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	chain, err := createCert(f.conn(), tok, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})))
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := verifyChain(t, chain, me)
	writeTokens(t, o.BootstrapTokensFile) // the bootstrap token is gone
	eventually(t, 5*time.Second, "the token revoked", func() error {
		if _, err := createCert(f.conn(), tok, csrFor(t, me)); status.Code(err) != codes.Unauthenticated {
			return fmt.Errorf("got %v, want Unauthenticated", err)
		}
		return nil
	})

	roots := x509.NewCertPool()
	b, _ := os.ReadFile(f.rootOut)
	roots.AppendCertsFromPEM(b)
	cc, err := grpc.NewClient(f.srv.SecureAddr().String(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: roots, ServerName: "istiod.istio-system.svc",
		Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}},
	})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if chain, err = createCert(cc, "", csrFor(t, me)); err != nil {
		t.Fatalf("renewal with the workload certificate over mTLS: %v", err)
	}
	verifyChain(t, chain, me)
	if _, err := createCert(cc, "", csrFor(t, "spiffe://cluster.local/ns/default/sa/other")); status.Code(err) != codes.PermissionDenied {
		t.Errorf("mTLS caller asking for another identity: %v; want PermissionDenied", err)
	}

	if err := f.srv.CA().RotateRoot(time.Hour); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "--root-cert-out rewritten with the old and new roots", func() error {
		b, _ := os.ReadFile(f.rootOut)
		if n := strings.Count(string(b), "BEGIN CERTIFICATE"); n != 2 {
			return fmt.Errorf("%d certificates in %s", n, f.rootOut)
		}
		return nil
	})
}
