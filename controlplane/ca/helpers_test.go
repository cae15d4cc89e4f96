package ca_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	securityapi "istio.io/api/security/v1alpha1"

	"github.com/skiff-mesh/skiff/controlplane/ca"
)

const istiodHost = "istiod.istio-system.svc"

// testLogger shows the CA's log only for failing or verbose tests.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// clock is a settable time source for the CA and the token table.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// serve runs the CA's gRPC service over TLS on 127.0.0.1 with its own
// serving certificate, as skiffd serves 15012, and returns the address.
func serve(t testing.TB, c *ca.CA) string {
	t.Helper()
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

// dial connects as a proxy would: trusting roots, checking the server name.
func dial(t testing.TB, addr string, roots []*x509.Certificate) securityapi.IstioCertificateServiceClient {
	t.Helper()
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

func withToken(t testing.TB, tok string) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}

// makeCSR returns a PEM CSR for the given SPIFFE IDs signed by key.
func makeCSR(t testing.TB, key crypto.Signer, ids ...string) string {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	for _, id := range ids {
		u, err := url.Parse(id)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func ecKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func parsePEM(t *testing.T, s string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	b := []byte(s)
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatalf("no certificate in %q", s)
	}
	return out
}

// verifyChain checks a CreateCertificate response as a peer would: the leaf
// chains through the intermediates to a root of the last element.
func verifyChain(t *testing.T, chain []string, at time.Time) *x509.Certificate {
	t.Helper()
	if len(chain) < 2 {
		t.Fatalf("cert_chain has %d elements, want leaf + ... + root", len(chain))
	}
	leaf := parsePEM(t, chain[0])[0]
	inter, roots := x509.NewCertPool(), x509.NewCertPool()
	for _, s := range chain[1 : len(chain)-1] {
		for _, c := range parsePEM(t, s) {
			inter.AddCert(c)
		}
	}
	for _, c := range parsePEM(t, chain[len(chain)-1]) {
		roots.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}); err != nil {
		t.Fatalf("issued certificate does not verify: %v", err)
	}
	return leaf
}

// metric reads one unlabelled counter or gauge, or a labelled counter's sum.
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
		for _, m := range mf.GetMetric() {
			sum += value(m)
		}
		return sum
	}
	return 0
}

func value(m *dto.Metric) float64 {
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}
