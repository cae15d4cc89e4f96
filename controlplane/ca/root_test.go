package ca_test

import (
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	securityapi "istio.io/api/security/v1alpha1"

	"github.com/skiff-mesh/skiff/controlplane/ca"
)

// The self-signed root is made once, kept with a 0600 key, and the same
// root comes back on the next start; Istio's default key type is RSA 2048.
func TestSelfSignedRootPersists(t *testing.T) {
	dir := t.TempDir()
	opts := func() ca.Options {
		return ca.Options{Store: ca.DirStore{Dir: dir}, Authenticator: ca.NewBootstrapTokens(nil), Logger: testLogger(t), TrustDomain: "example.org"}
	}
	first, err := ca.New(opts())
	if err != nil {
		t.Fatal(err)
	}
	root := first.TrustBundle()[0]
	if k, ok := root.PublicKey.(*rsa.PublicKey); !ok || k.N.BitLen() != 2048 {
		t.Fatalf("default root key is %v, want RSA 2048 as istiod makes", root.PublicKeyAlgorithm)
	}
	if root.Subject.Organization[0] != "example.org" || !root.IsCA {
		t.Fatalf("root subject %v IsCA %v, want O=example.org and a CA", root.Subject, root.IsCA)
	}
	fi, err := os.Stat(filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("ca-key.pem mode %v, want 0600", fi.Mode().Perm())
	}
	for _, n := range []string{"ca-cert.pem", "root-cert.pem"} {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			t.Fatalf("%s not kept: %v", n, err)
		}
	}
	second, err := ca.New(opts())
	if err != nil {
		t.Fatal(err)
	}
	if !second.TrustBundle()[0].Equal(root) {
		t.Fatal("a restart made a new root instead of reloading the kept one")
	}
	// A certificate from the restarted CA verifies against the first root.
	chain, err := second.SignCSR([]byte(makeCSR(t, ecKey(t))), ca.Identity{Namespace: "a", ServiceAccount: "b"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	leaf := parsePEM(t, chain[0])[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatal(err)
	}
	if got := leaf.URIs[0].String(); got != "spiffe://example.org/ns/a/sa/b" {
		t.Fatalf("SAN %s for a CSR without SANs, want the caller's identity", got)
	}
}

// Unreadable, missing or mismatched files stop the start with the file named.
func TestSelfSignedRootErrors(t *testing.T) {
	otherKey := func() []byte {
		der, _ := x509.MarshalPKCS8PrivateKey(ecKey(t))
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}()
	for _, tc := range []struct {
		name   string
		damage func(dir string) error
		msg    string
	}{
		{"key missing", func(d string) error { return os.Remove(filepath.Join(d, "ca-key.pem")) }, "ca-key.pem is missing"},
		{"cert missing", func(d string) error { return os.Remove(filepath.Join(d, "ca-cert.pem")) }, "ca-cert.pem is missing"},
		{"key mismatched", func(d string) error { return os.WriteFile(filepath.Join(d, "ca-key.pem"), otherKey, 0o600) }, "does not hold the key of"},
		{"key garbage", func(d string) error { return os.WriteFile(filepath.Join(d, "ca-key.pem"), []byte("junk"), 0o600) }, "ca-key.pem: no PEM block found"},
		{"cert garbage", func(d string) error { return os.WriteFile(filepath.Join(d, "ca-cert.pem"), []byte("junk"), 0o600) }, "ca-cert.pem: no PEM CERTIFICATE block"},
		{"root-cert differs", func(d string) error {
			other := newFixture(t, nil).ca.TrustBundlePEM()
			return os.WriteFile(filepath.Join(d, "root-cert.pem"), other, 0o644)
		}, "root-cert.pem is not the root in"},
		{"key unreadable", func(d string) error {
			// A directory in the key's place cannot be read, even by root.
			if err := os.Remove(filepath.Join(d, "ca-key.pem")); err != nil {
				return err
			}
			return os.Mkdir(filepath.Join(d, "ca-key.pem"), 0o700)
		}, "is a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			o := ca.Options{Store: ca.DirStore{Dir: dir}, RootKey: ca.ECDSAP256, Authenticator: ca.NewBootstrapTokens(nil), Logger: testLogger(t)}
			if _, err := ca.New(o); err != nil {
				t.Fatal(err)
			}
			if err := tc.damage(dir); err != nil {
				t.Fatal(err)
			}
			_, err := ca.New(o)
			if err == nil || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("got %v, want an error naming %s containing %q", err, dir, tc.msg)
			}
		})
	}
}

// A rotated root: new certificates come from the new root, both roots are
// in the trust bundle (and in the response's last element) for the overlap,
// old certificates keep verifying, the 15012 endpoint stays reachable for
// clients that only know the old root, and the overlap survives a restart.
// When the overlap ends the old root leaves the bundle and subscribers hear.
func TestRootRotationOverlap(t *testing.T) {
	f := newFixture(t, nil)
	addr := serve(t, f.ca)
	oldRoot := f.ca.TrustBundle()[0]
	tok := f.mint(t, "default", "details")
	csr := makeCSR(t, ecKey(t), "spiffe://cluster.local/ns/default/sa/details")
	oldClient := dial(t, addr, []*x509.Certificate{oldRoot})
	before, err := oldClient.CreateCertificate(withToken(t, tok), &securityapi.IstioCertificateRequest{Csr: csr})
	if err != nil {
		t.Fatal(err)
	}
	changed, cancel := f.ca.Subscribe()
	defer cancel()

	const overlap = 400 * time.Millisecond
	if err := f.ca.RotateRoot(overlap); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("no change notification after RotateRoot")
	}
	bundle := f.ca.TrustBundle()
	if len(bundle) != 2 || bundle[0].Equal(oldRoot) || !bundle[1].Equal(oldRoot) {
		t.Fatalf("trust bundle during overlap has %d roots, want [new, old]", len(bundle))
	}
	newRoot := bundle[0]

	// A new connection from a client that only knows the old root still
	// reaches 15012 and learns both roots.
	during, err := dial(t, addr, []*x509.Certificate{oldRoot}).CreateCertificate(withToken(t, tok), &securityapi.IstioCertificateRequest{Csr: csr})
	if err != nil {
		t.Fatalf("client trusting the old root during the overlap: %v", err)
	}
	if got := parsePEM(t, during.CertChain[len(during.CertChain)-1]); len(got) != 2 || !got[0].Equal(newRoot) || !got[1].Equal(oldRoot) {
		t.Fatalf("response's last element has %d roots, want [new, old]", len(got))
	}
	newLeaf := parsePEM(t, during.CertChain[0])[0]
	if err := newLeaf.CheckSignatureFrom(newRoot); err != nil {
		t.Fatalf("certificate after rotation not signed by the new root: %v", err)
	}
	verifyChain(t, []string{before.CertChain[0], string(f.ca.TrustBundlePEM())}, f.clock.Now())

	restarted, err := ca.New(ca.Options{
		Store: ca.DirStore{Dir: f.dir}, Authenticator: f.tokens, Registry: prometheus.NewRegistry(), Now: f.clock.Now, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer restarted.Close()
	if b := restarted.TrustBundle(); len(b) != 2 || !b[0].Equal(newRoot) || !b[1].Equal(oldRoot) {
		t.Fatalf("after a restart during the overlap the bundle has %d roots, want [new, old]", len(b))
	}

	// End of the overlap: the CA's timer drops the old root and tells subscribers.
	f.clock.Advance(overlap)
	deadline := time.After(10 * time.Second)
	for len(f.ca.TrustBundle()) != 1 {
		select {
		case <-changed:
		case <-deadline:
			t.Fatal("old root still trusted after the overlap")
		}
	}
	select {
	case <-changed:
	case <-deadline:
		t.Fatal("no change notification at the end of the overlap")
	}
	if _, err := os.Stat(filepath.Join(f.dir, "previous-roots.pem")); !os.IsNotExist(err) {
		t.Fatalf("previous-roots.pem still kept after the overlap: %v", err)
	}
	// 15012 now presents a certificate from the new root only.
	if _, err := dial(t, addr, []*x509.Certificate{newRoot}).CreateCertificate(withToken(t, tok), &securityapi.IstioCertificateRequest{Csr: csr}); err != nil {
		t.Fatalf("client trusting the new root after the overlap: %v", err)
	}
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: poolOf(oldRoot), ServerName: istiodHost, NextProtos: []string{"h2"}})
	if err == nil {
		conn.Close()
		t.Fatal("a client trusting only the old root still completes a handshake after the overlap")
	}
}

func poolOf(cs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range cs {
		p.AddCert(c)
	}
	return p
}

// The serving certificate is renewed after half its life, not before.
func TestServingCertRenewal(t *testing.T) {
	f := newFixture(t, nil)
	sc, err := f.ca.ServingCertificate([]string{istiodHost, "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	first, err := sc.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{istiodHost, "127.0.0.1"} {
		if err := first.Leaf.VerifyHostname(h); err != nil {
			t.Fatal(err)
		}
	}
	f.clock.Advance(20 * time.Minute)
	same, _ := sc.GetCertificate(nil)
	if same != first {
		t.Fatal("serving certificate renewed before half its life")
	}
	f.clock.Advance(15 * time.Minute)
	renewed, _ := sc.GetCertificate(nil)
	if renewed == first || !renewed.Leaf.NotAfter.After(first.Leaf.NotAfter) {
		t.Fatal("serving certificate not renewed after half its life")
	}
	if _, err := renewed.Leaf.Verify(x509.VerifyOptions{Roots: poolOf(f.ca.TrustBundle()...), DNSName: istiodHost, CurrentTime: f.clock.Now()}); err != nil {
		t.Fatal(err)
	}
}
