package ca_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	securityapi "istio.io/api/security/v1alpha1"

	"github.com/skiff-mesh/skiff/controlplane/ca"
)

// What the Authenticator returns is checked too: another trust domain, an
// incomplete identity and impersonation requests are refused.
func TestCallerIdentityChecks(t *testing.T) {
	var (
		mu sync.Mutex
		id ca.Identity
	)
	f := newFixture(t, func(o *ca.Options) {
		o.Authenticator = ca.AuthenticatorFunc(func(context.Context) (ca.Identity, error) {
			mu.Lock()
			defer mu.Unlock()
			return id, nil
		})
	})
	client := dial(t, serve(t, f.ca), f.ca.TrustBundle())
	csr := makeCSR(t, ecKey(t))
	call := func(who ca.Identity, md map[string]any) error {
		mu.Lock()
		id = who
		mu.Unlock()
		req := &securityapi.IstioCertificateRequest{Csr: csr}
		if md != nil {
			s, err := structpb.NewStruct(md)
			if err != nil {
				t.Fatal(err)
			}
			req.Metadata = s
		}
		_, err := client.CreateCertificate(t.Context(), req)
		return err
	}
	for _, tc := range []struct {
		name string
		who  ca.Identity
		md   map[string]any
		code codes.Code
		msg  string
	}{
		{"other trust domain", ca.Identity{TrustDomain: "other.org", Namespace: "a", ServiceAccount: "b"}, nil, codes.PermissionDenied, `spiffe://other.org/ns/a/sa/b is not in this CA's trust domain "cluster.local"`},
		{"no service account", ca.Identity{Namespace: "a"}, nil, codes.PermissionDenied, `credential names no workload (namespace "a", service account "")`},
		{"impersonation", ca.Identity{Namespace: "a", ServiceAccount: "b"}, map[string]any{"ImpersonatedIdentity": "spiffe://cluster.local/ns/x/sa/y"}, codes.PermissionDenied, "may not request certificates for another identity"},
		{"fine", ca.Identity{Namespace: "a", ServiceAccount: "b"}, nil, codes.OK, ""},
	} {
		err := call(tc.who, tc.md)
		if st, _ := status.FromError(err); st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
			t.Errorf("%s: got %v %q, want %v containing %q", tc.name, st.Code(), st.Message(), tc.code, tc.msg)
		}
	}
}

// writeCACerts writes a fresh root and intermediate in the cacerts layout,
// with cert-chain.pem ending in the root as some operators' tools write it.
func writeCACerts(t *testing.T, dir string) (root, inter *x509.Certificate) {
	t.Helper()
	rootKey, interKey := ecKey(t), ecKey(t)
	now := time.Now()
	mk := func(tmpl, parent *x509.Certificate, pub, priv any) *x509.Certificate {
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, priv)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	caTmpl := func(cn string, serial int64) *x509.Certificate {
		return &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(48 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		}
	}
	rt := caTmpl("test root", 1)
	root = mk(rt, rt, rootKey.Public(), rootKey)
	inter = mk(caTmpl("test intermediate", 2), root, interKey.Public(), rootKey)
	keyDER, err := x509.MarshalECPrivateKey(interKey)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(cs ...*x509.Certificate) []byte {
		var b []byte
		for _, c := range cs {
			b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		return b
	}
	for name, b := range map[string][]byte{
		"ca-cert.pem":    enc(inter),
		"ca-key.pem":     pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		"root-cert.pem":  enc(root),
		"cert-chain.pem": enc(inter, root),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return root, inter
}

// Replacing the cacerts files and reloading moves signing to the new
// intermediate and keeps the old root trusted for the overlap; a broken
// replacement is refused and the CA keeps signing with what it had.
func TestReloadPlugged(t *testing.T) {
	dir := t.TempDir()
	oldRoot, _ := writeCACerts(t, dir)
	f := newFixture(t, func(o *ca.Options) { o.Store = nil; o.PluggedCertsDir = dir })
	newRoot, newInter := writeCACerts(t, dir)
	if err := f.ca.ReloadPlugged(time.Hour); err != nil {
		t.Fatal(err)
	}
	b := f.ca.TrustBundle()
	if len(b) != 2 || !b[0].Equal(newRoot) || !b[1].Equal(oldRoot) {
		t.Fatalf("bundle after reload has %d roots, want [new, old]", len(b))
	}
	chain, err := f.ca.SignCSR([]byte(makeCSR(t, ecKey(t))), ca.Identity{Namespace: "n", ServiceAccount: "s"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 3 || !parsePEM(t, chain[1])[0].Equal(newInter) {
		t.Fatalf("chain after reload is not [leaf, new intermediate, bundle]")
	}
	verifyChain(t, chain, time.Now())

	if err := os.WriteFile(filepath.Join(dir, "ca-key.pem"), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.ca.ReloadPlugged(time.Hour); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "ca-key.pem")) {
		t.Fatalf("reload of a broken key: %v, want an error naming the file", err)
	}
	chain, err = f.ca.SignCSR([]byte(makeCSR(t, ecKey(t))), ca.Identity{Namespace: "n", ServiceAccount: "s"}, 0)
	if err != nil || !parsePEM(t, chain[1])[0].Equal(newInter) {
		t.Fatalf("after a failed reload the CA stopped signing with the last good intermediate: %v", err)
	}
}

// Concurrent issuance over gRPC while the root rotates: no request fails and
// every certificate verifies against the bundle it came with.
func TestIssuanceDuringRotation(t *testing.T) {
	f := newFixture(t, nil)
	addr := serve(t, f.ca)
	client := dial(t, addr, f.ca.TrustBundle())
	tok := f.mint(t, "load", "client")
	csr := makeCSR(t, ecKey(t), "spiffe://cluster.local/ns/load/sa/client")
	const workers, perWorker = 4, 40
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perWorker {
				resp, err := client.CreateCertificate(withToken(t, tok), &securityapi.IstioCertificateRequest{Csr: csr})
				if err == nil {
					err = verifyResp(resp.CertChain)
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	for range 3 {
		if err := f.ca.RotateRoot(time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d issuances failed during rotation, first: %v", len(errs), workers*perWorker, errs[0])
	}
	if got := len(f.ca.TrustBundle()); got != 4 {
		t.Fatalf("after 3 rotations with 1h overlap the bundle has %d roots, want 4", got)
	}
}

// verifyResp is verifyChain without testing.T, for worker goroutines.
func verifyResp(chain []string) error {
	leafBlk, _ := pem.Decode([]byte(chain[0]))
	if leafBlk == nil {
		return errors.New("leaf is not PEM")
	}
	leaf, err := x509.ParseCertificate(leafBlk.Bytes)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(chain[len(chain)-1])) {
		return errors.New("no roots in the last element")
	}
	_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err
}

// BenchmarkSignCSR is one issuance without transport: parse, check, sign.
func BenchmarkSignCSR(b *testing.B) {
	for _, alg := range []ca.KeyAlgorithm{ca.ECDSAP256, ca.RSA2048} {
		b.Run(string(alg), func(b *testing.B) {
			c, err := ca.New(ca.Options{Store: ca.DirStore{Dir: b.TempDir()}, RootKey: alg, Authenticator: ca.NewBootstrapTokens(nil), Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			csr := []byte(makeCSR(b, ecKey(b), "spiffe://cluster.local/ns/a/sa/b"))
			id := ca.Identity{Namespace: "a", ServiceAccount: "b"}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.SignCSR(csr, id, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCreateCertificate is one issuance as a proxy sees it: a unary
// gRPC call over an established TLS connection, token lookup included.
func BenchmarkCreateCertificate(b *testing.B) {
	tokens := ca.NewBootstrapTokens(nil)
	c, err := ca.New(ca.Options{Store: ca.DirStore{Dir: b.TempDir()}, RootKey: ca.ECDSAP256, Authenticator: tokens, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	tok, err := tokens.Mint(ca.Identity{Namespace: "a", ServiceAccount: "b"}, 0)
	if err != nil {
		b.Fatal(err)
	}
	client := dial(b, serve(b, c), c.TrustBundle())
	req := &securityapi.IstioCertificateRequest{Csr: makeCSR(b, ecKey(b), "spiffe://cluster.local/ns/a/sa/b")}
	ctx := withToken(b, tok)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := client.CreateCertificate(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// A root-cert.pem listing several roots (Istio's root-cert-combined.pem) puts
// all of them in the trust bundle and in the response's last element.
func TestPluggedCombinedRoots(t *testing.T) {
	dir := t.TempDir()
	root, _ := writeCACerts(t, dir)
	otherRoot, _ := writeCACerts(t, t.TempDir())
	combined := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: otherRoot.Raw})...)
	if err := os.WriteFile(filepath.Join(dir, "root-cert.pem"), combined, 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(o *ca.Options) { o.Store = nil; o.PluggedCertsDir = dir })
	if b := f.ca.TrustBundle(); len(b) != 2 || !b[0].Equal(root) || !b[1].Equal(otherRoot) {
		t.Fatalf("bundle has %d roots, want [signing root, other root]", len(b))
	}
	chain, err := f.ca.SignCSR([]byte(makeCSR(t, ecKey(t))), ca.Identity{Namespace: "n", ServiceAccount: "s"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := parsePEM(t, chain[len(chain)-1]); len(got) != 2 {
		t.Fatalf("response's last element has %d roots, want 2", len(got))
	}
	verifyChain(t, chain, time.Now())
}

// Files replaced under a watched cacerts directory are picked up.
func TestWatchPlugged(t *testing.T) {
	dir := t.TempDir()
	oldRoot, _ := writeCACerts(t, dir)
	f := newFixture(t, func(o *ca.Options) { o.Store = nil; o.PluggedCertsDir = dir })
	changed, cancel := f.ca.Subscribe()
	defer cancel()
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { f.ca.WatchPlugged(ctx, 10*time.Millisecond, time.Hour); close(done) }()
	defer func() { stop(); <-done }()

	newRoot, _ := writeCACerts(t, dir)
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("replaced cacerts files not reloaded")
	}
	if b := f.ca.TrustBundle(); len(b) != 2 || !b[0].Equal(newRoot) || !b[1].Equal(oldRoot) {
		t.Fatalf("bundle after the watched reload has %d roots, want [new, old]", len(b))
	}
}
