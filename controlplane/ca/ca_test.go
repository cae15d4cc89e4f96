package ca_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	securityapi "istio.io/api/security/v1alpha1"

	"github.com/skiff-mesh/skiff/controlplane/ca"
)

type fixture struct {
	ca     *ca.CA
	reg    *prometheus.Registry
	tokens *ca.BootstrapTokens
	dir    string
	clock  *clock
}

func newFixture(t *testing.T, mutate func(*ca.Options)) *fixture {
	t.Helper()
	f := &fixture{reg: prometheus.NewRegistry(), dir: t.TempDir(), clock: newClock()}
	f.tokens = ca.NewBootstrapTokens(f.clock.Now)
	opts := ca.Options{
		Store:         ca.DirStore{Dir: f.dir},
		RootKey:       ca.ECDSAP256,
		Authenticator: f.tokens,
		Registry:      f.reg,
		Now:           f.clock.Now,
		Logger:        testLogger(t),
	}
	if mutate != nil {
		mutate(&opts)
	}
	c, err := ca.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	f.ca = c
	return f
}

func (f *fixture) mint(t *testing.T, ns, sa string) string {
	t.Helper()
	tok, err := f.tokens.Mint(ca.Identity{Namespace: ns, ServiceAccount: sa}, 0)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// A proxy with a valid token and a CSR for its own identity gets, over TLS,
// a chain that verifies to the root and is shaped as istiod's.
func TestCreateCertificateOverTLS(t *testing.T) {
	f := newFixture(t, nil)
	client := dial(t, serve(t, f.ca), f.ca.TrustBundle())
	tok := f.mint(t, "default", "bookinfo-productpage")
	const id = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for name, csr := range map[string]string{"ecdsa": makeCSR(t, ecKey(t), id), "rsa": makeCSR(t, rsaKey, id)} {
		t.Run(name, func(t *testing.T) {
			resp, err := client.CreateCertificate(withToken(t, tok), &securityapi.IstioCertificateRequest{Csr: csr})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.CertChain) != 2 {
				t.Fatalf("self-signed CA returned %d chain elements, want [leaf, root]", len(resp.CertChain))
			}
			if root := parsePEM(t, resp.CertChain[1]); len(root) != 1 || !root[0].Equal(f.ca.TrustBundle()[0]) {
				t.Fatalf("last chain element is not the CA root")
			}
			leaf := verifyChain(t, resp.CertChain, time.Now())
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id {
				t.Fatalf("URI SANs %v, want exactly %s", leaf.URIs, id)
			}
			if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
				t.Fatalf("leaf has other SANs: %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
			}
			if life := leaf.NotAfter.Sub(leaf.NotBefore); life < 24*time.Hour || life > 24*time.Hour+2*time.Minute {
				t.Fatalf("validity %s, want about 24h", life)
			}
			if leaf.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment {
				t.Fatalf("key usage %b, want digitalSignature|keyEncipherment", leaf.KeyUsage)
			}
			if len(leaf.ExtKeyUsage) != 2 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
				t.Fatalf("ext key usage %v, want serverAuth, clientAuth", leaf.ExtKeyUsage)
			}
			if leaf.IsCA {
				t.Fatal("workload certificate is a CA")
			}
		})
	}
	if got := metric(t, f.reg, "citadel_server_csr_count"); got != 2 {
		t.Errorf("citadel_server_csr_count = %v, want 2", got)
	}
	if got := metric(t, f.reg, "citadel_server_success_cert_issuance_count"); got != 2 {
		t.Errorf("citadel_server_success_cert_issuance_count = %v, want 2", got)
	}
	rootExp := float64(f.ca.TrustBundle()[0].NotAfter.Unix())
	if got := metric(t, f.reg, "citadel_server_root_cert_expiry_timestamp"); got != rootExp {
		t.Errorf("citadel_server_root_cert_expiry_timestamp = %v, want %v", got, rootExp)
	}
	if got := metric(t, f.reg, "citadel_server_cert_chain_expiry_timestamp"); got != rootExp {
		t.Errorf("citadel_server_cert_chain_expiry_timestamp = %v, want %v", got, rootExp)
	}
}

// Requested validity is honoured up to the maximum and capped there.
func TestValidityDuration(t *testing.T) {
	f := newFixture(t, func(o *ca.Options) { o.MaxWorkloadCertTTL = 48 * time.Hour })
	client := dial(t, serve(t, f.ca), f.ca.TrustBundle())
	tok := f.mint(t, "ns1", "sa1")
	csr := makeCSR(t, ecKey(t), "spiffe://cluster.local/ns/ns1/sa/sa1")
	for _, tc := range []struct {
		seconds int64
		want    time.Duration
	}{{3600, time.Hour}, {0, 24 * time.Hour}, {30 * 24 * 3600, 48 * time.Hour}} {
		resp, err := client.CreateCertificate(withToken(t, tok), &securityapi.IstioCertificateRequest{Csr: csr, ValidityDuration: tc.seconds})
		if err != nil {
			t.Fatal(err)
		}
		leaf := parsePEM(t, resp.CertChain[0])[0]
		if got := leaf.NotAfter.Sub(f.clock.Now()); math.Abs(float64(got-tc.want)) > float64(2*time.Second) {
			t.Errorf("validity_duration %d: certificate valid for %s, want %s", tc.seconds, got, tc.want)
		}
	}
}

// Every bad request is refused with a status that says what is wrong and is
// counted; a good request afterwards still succeeds.
func TestRefusals(t *testing.T) {
	f := newFixture(t, nil)
	client := dial(t, serve(t, f.ca), f.ca.TrustBundle())
	tok := f.mint(t, "default", "reviews")
	expiring, err := f.tokens.Mint(ca.Identity{Namespace: "default", ServiceAccount: "old"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	removed := f.mint(t, "default", "gone")
	f.tokens.Remove(removed)
	f.clock.Advance(2 * time.Minute)

	const id = "spiffe://cluster.local/ns/default/sa/reviews"
	key := ecKey(t)
	good := makeCSR(t, key, id)
	badSig := func() string {
		blk, _ := pem.Decode([]byte(good))
		der := append([]byte(nil), blk.Bytes...)
		der[len(der)-3] ^= 0xff // inside the signature BIT STRING, the last field
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	}()
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	dnsCSR := func() string {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"reviews.default.svc"}}, key)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	}()

	cases := []struct {
		name   string
		token  string
		csr    string
		code   codes.Code
		msg    string
		metric string
	}{
		{"other identity", tok, makeCSR(t, key, "spiffe://cluster.local/ns/kube-system/sa/admin"), codes.PermissionDenied,
			"asks for identity spiffe://cluster.local/ns/kube-system/sa/admin but the caller is authenticated as " + id, "citadel_server_id_extraction_err_count"},
		{"own and other identity", tok, makeCSR(t, key, id, "spiffe://cluster.local/ns/default/sa/ratings"), codes.PermissionDenied,
			"asks for identity spiffe://cluster.local/ns/default/sa/ratings", "citadel_server_id_extraction_err_count"},
		{"other trust domain", tok, makeCSR(t, key, "spiffe://evil.example/ns/default/sa/reviews"), codes.PermissionDenied,
			"asks for identity spiffe://evil.example/ns/default/sa/reviews", "citadel_server_id_extraction_err_count"},
		{"dns san", tok, dnsCSR, codes.PermissionDenied, "asks for DNS, IP or email SANs", "citadel_server_id_extraction_err_count"},
		{"not pem", tok, "hello", codes.InvalidArgument, "csr: not PEM", "citadel_server_csr_parsing_err_count"},
		{"empty", tok, "", codes.InvalidArgument, "csr: empty", "citadel_server_csr_parsing_err_count"},
		{"wrong pem type", tok, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2}})), codes.InvalidArgument,
			`PEM block is "CERTIFICATE", want CERTIFICATE REQUEST`, "citadel_server_csr_parsing_err_count"},
		{"bad der", tok, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{0x30, 0x03, 1, 2, 3}})), codes.InvalidArgument,
			"cannot parse the DER", "citadel_server_csr_parsing_err_count"},
		{"bad signature", tok, badSig, codes.InvalidArgument, "signature does not verify", "citadel_server_csr_parsing_err_count"},
		{"weak key", tok, makeCSR(t, weak, id), codes.InvalidArgument, "RSA key of 1024 bits", "citadel_server_csr_parsing_err_count"},
		{"unknown token", "not-a-token", good, codes.Unauthenticated, "unknown bootstrap token", "citadel_server_authentication_failure_count"},
		{"removed token", removed, good, codes.Unauthenticated, "unknown bootstrap token", "citadel_server_authentication_failure_count"},
		{"expired token", expiring, good, codes.Unauthenticated, "bootstrap token for default/old expired at", "citadel_server_authentication_failure_count"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := metric(t, f.reg, tc.metric)
			_, err := client.CreateCertificate(withToken(t, tc.token), &securityapi.IstioCertificateRequest{Csr: tc.csr})
			st, _ := status.FromError(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
				t.Fatalf("got %v %q, want %v containing %q", st.Code(), st.Message(), tc.code, tc.msg)
			}
			if got := metric(t, f.reg, tc.metric); got != before+1 {
				t.Fatalf("%s went from %v to %v, want +1", tc.metric, before, got)
			}
		})
	}
	t.Run("no token", func(t *testing.T) {
		_, err := client.CreateCertificate(t.Context(), &securityapi.IstioCertificateRequest{Csr: good})
		st, _ := status.FromError(err)
		if st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), "send `authorization: Bearer <token>`") {
			t.Fatalf("got %v %q", st.Code(), st.Message())
		}
	})
	if got := metric(t, f.reg, "citadel_server_success_cert_issuance_count"); got != 0 {
		t.Fatalf("%v certificates issued for refused requests", got)
	}
	resp, err := client.CreateCertificate(withToken(t, tok), &securityapi.IstioCertificateRequest{Csr: good})
	if err != nil {
		t.Fatalf("a good request after the refusals failed: %v", err)
	}
	verifyChain(t, resp.CertChain, f.clock.Now())
	if got, want := metric(t, f.reg, "citadel_server_csr_count"), float64(len(cases)+2); got != want {
		t.Errorf("citadel_server_csr_count = %v, want %v", got, want)
	}
}

// Istio's sample cacerts load; certificates chain leaf → ca-cert → root-cert
// and the 15012 serving certificate verifies against root-cert.pem.
func TestPluggedCACerts(t *testing.T) {
	const dir = "../../../shared/istio-samples/certs"
	rootPEM, err := os.ReadFile(filepath.Join(dir, "root-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	interPEM, err := os.ReadFile(filepath.Join(dir, "ca-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	root, inter := parsePEM(t, string(rootPEM))[0], parsePEM(t, string(interPEM))[0]
	f := newFixture(t, func(o *ca.Options) { o.Store = nil; o.PluggedCertsDir = dir })
	if b := f.ca.TrustBundle(); len(b) != 1 || !b[0].Equal(root) {
		t.Fatalf("trust bundle is not root-cert.pem")
	}
	client := dial(t, serve(t, f.ca), []*x509.Certificate{root})
	const id = "spiffe://cluster.local/ns/foo/sa/foo"
	resp, err := client.CreateCertificate(withToken(t, f.mint(t, "foo", "foo")), &securityapi.IstioCertificateRequest{Csr: makeCSR(t, ecKey(t), id)})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.CertChain) != 3 {
		t.Fatalf("chain has %d elements, want [leaf, ca-cert, root-cert]", len(resp.CertChain))
	}
	if !parsePEM(t, resp.CertChain[1])[0].Equal(inter) || !parsePEM(t, resp.CertChain[2])[0].Equal(root) {
		t.Fatal("chain is not [leaf, ca-cert.pem, root-cert.pem]")
	}
	leaf := verifyChain(t, resp.CertChain, time.Now())
	if leaf.URIs[0].String() != id || string(leaf.RawIssuer) != string(inter.RawSubject) {
		t.Fatalf("leaf %v issued by %v", leaf.URIs, leaf.Issuer)
	}
	if err := f.ca.RotateRoot(time.Hour); err == nil || !strings.Contains(err.Error(), "replace the files there") {
		t.Fatalf("RotateRoot on a plugged CA: %v", err)
	}
}

// A broken cacerts directory is refused at start with the file named.
func TestPluggedCACertsErrors(t *testing.T) {
	src := "../../../shared/istio-samples/certs"
	copyDir := func(t *testing.T) string {
		d := t.TempDir()
		for _, n := range []string{"ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"} {
			b, err := os.ReadFile(filepath.Join(src, n))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(d, n), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	otherKey := func() []byte {
		der, _ := x509.MarshalPKCS8PrivateKey(ecKey(t))
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}()
	for _, tc := range []struct {
		name   string
		damage func(d string) error
		msg    string
	}{
		{"missing key", func(d string) error { return os.Remove(filepath.Join(d, "ca-key.pem")) }, "ca-key.pem: no such file"},
		{"wrong key", func(d string) error { return os.WriteFile(filepath.Join(d, "ca-key.pem"), otherKey, 0o600) }, "ca-key.pem does not hold the key of"},
		{"garbage root", func(d string) error { return os.WriteFile(filepath.Join(d, "root-cert.pem"), []byte("x"), 0o600) }, "root-cert.pem: no PEM CERTIFICATE block"},
		{"foreign root", func(d string) error {
			c := newFixture(t, nil).ca.TrustBundlePEM()
			return os.WriteFile(filepath.Join(d, "root-cert.pem"), c, 0o600)
		}, "does not chain to"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := copyDir(t)
			if err := tc.damage(d); err != nil {
				t.Fatal(err)
			}
			_, err := ca.New(ca.Options{PluggedCertsDir: d, Authenticator: ca.NewBootstrapTokens(nil), Logger: testLogger(t)})
			if err == nil || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), d) {
				t.Fatalf("got %v, want an error naming %s containing %q", err, d, tc.msg)
			}
		})
	}
}
