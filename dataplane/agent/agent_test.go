package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	securityapi "istio.io/api/security/v1alpha1"

	"github.com/skiff-mesh/skiff/dataplane/agent/agenttest"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// run starts an agent against addr and returns it with a stop func.
func run(t *testing.T, o Options) *Agent {
	t.Helper()
	if o.Logger == nil {
		o.Logger = quiet()
	}
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return a
}

func TestRSAKeyOnRequest(t *testing.T) {
	c := agenttest.StartCA(t, "ns1", "sa1")
	a := run(t, Options{CAAddr: c.Addr, CARootCertPath: c.RootFile, TokenPath: c.TokenFile,
		Namespace: "ns1", ServiceAccount: "sa1", KeyAlgorithm: "rsa", TTL: time.Hour})
	select {
	case <-a.Ready():
	case <-time.After(10 * time.Second):
		t.Fatalf("no certificate: %+v", a.State())
	}
	tc := a.Secret(WorkloadSecret).GetTlsCertificate()
	cert, err := tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := cert.PrivateKey.(*rsa.PrivateKey); !ok || k.N.BitLen() != 2048 {
		t.Fatalf("key %T, want RSA 2048", cert.PrivateKey)
	}
	if a.Secret("kubernetes://other") != nil || a.Provides("kubernetes://other") {
		t.Error("the agent answers for a secret that is not its")
	}
}

// fakeCA answers CreateCertificate with whatever chain respond makes from
// the CSR, over TLS as the real one; the agent must refuse bad answers.
func fakeCA(t *testing.T, respond func(csr *x509.CertificateRequest) []string) (addr, rootFile string) {
	t.Helper()
	real := agenttest.StartCA(t, "x", "y") // only for a serving certificate its root verifies
	sc, err := real.ServingCertificate([]string{agenttest.ServerName}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(sc.TLSConfig())))
	securityapi.RegisterIstioCertificateServiceServer(srv, &fakeService{respond: respond})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), real.RootFile
}

type fakeService struct {
	securityapi.UnimplementedIstioCertificateServiceServer
	respond func(*x509.CertificateRequest) []string
}

func (f *fakeService) CreateCertificate(_ context.Context, r *securityapi.IstioCertificateRequest) (*securityapi.IstioCertificateResponse, error) {
	b, _ := pem.Decode([]byte(r.GetCsr()))
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, err
	}
	return &securityapi.IstioCertificateResponse{CertChain: f.respond(csr)}, nil
}

type testRoot struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newRoot(t *testing.T) testRoot {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return testRoot{c, key}
}

func (r testRoot) sign(t *testing.T, pub any, uri string) string {
	u, _ := url.Parse(uri)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, r.cert, pub, r.key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func (r testRoot) pem() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.cert.Raw}))
}

func TestRefusesBadChains(t *testing.T) {
	const want = "spiffe://cluster.local/ns/ns1/sa/sa1"
	rootA, rootB := newRoot(t), newRoot(t)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cases := []struct {
		name, errWant string
		respond       func(csr *x509.CertificateRequest) []string
	}{
		{"other identity", "want exactly " + want, func(csr *x509.CertificateRequest) []string {
			return []string{rootA.sign(t, csr.PublicKey, "spiffe://cluster.local/ns/ns1/sa/admin"), rootA.pem()}
		}},
		{"other key", "not for the key", func(csr *x509.CertificateRequest) []string {
			return []string{rootA.sign(t, &other.PublicKey, want), rootA.pem()}
		}},
		{"untrusted root", "does not verify", func(csr *x509.CertificateRequest) []string {
			return []string{rootA.sign(t, csr.PublicKey, want), rootB.pem()}
		}},
		{"no root", "cert_chain has 1 elements", func(csr *x509.CertificateRequest) []string {
			return []string{rootA.sign(t, csr.PublicKey, want)}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, root := fakeCA(t, tc.respond)
			st := stats.New()
			a := run(t, Options{CAAddr: addr, CARootCertPath: root, Namespace: "ns1", ServiceAccount: "sa1", Stats: st})
			deadline := time.Now().Add(5 * time.Second)
			for a.State().LastError == "" && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			s := a.State()
			if !strings.Contains(s.LastError, tc.errWant) {
				t.Fatalf("last error %q, want it to say %q", s.LastError, tc.errWant)
			}
			if s.Serial != "" || a.Secret(WorkloadSecret) != nil {
				t.Fatal("the agent installed a certificate it should have refused")
			}
			if st.CounterValue("istio_agent.csr.num_failed_outgoing_requests") == 0 {
				t.Error("failure not counted")
			}
		})
	}
}

// The CA's serving certificate must verify against --ca-root-cert and
// carry the server name.
func TestVerifiesTheCA(t *testing.T) {
	c := agenttest.StartCA(t, "ns1", "sa1")
	other := agenttest.StartCA(t, "ns1", "sa1")
	for _, tc := range []struct{ name, root, server, errWant string }{
		{"wrong root", other.RootFile, "", "verifying the CA's serving certificate"},
		{"wrong name", c.RootFile, "evil.example", "evil.example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := run(t, Options{CAAddr: c.Addr, CARootCertPath: tc.root, CAServerName: tc.server, TokenPath: c.TokenFile, Namespace: "ns1", ServiceAccount: "sa1"})
			deadline := time.Now().Add(5 * time.Second)
			for a.State().LastError == "" && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if s := a.State(); !strings.Contains(s.LastError, tc.errWant) || s.Serial != "" {
				t.Fatalf("state %+v, want no certificate and an error naming %q", s, tc.errWant)
			}
		})
	}
}

func TestOptionErrorsNameTheSetting(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{}, "--ca-addr"},
		{Options{CAAddr: "nohost"}, "HOST:PORT"},
		{Options{CAAddr: "127.0.0.1:15012", Namespace: "ns"}, "SERVICE_ACCOUNT"},
		{Options{CAAddr: "127.0.0.1:15012", Namespace: "ns", ServiceAccount: "sa", GraceRatio: 1.5}, "SECRET_GRACE_PERIOD_RATIO"},
		{Options{CAAddr: "127.0.0.1:15012", Namespace: "ns", ServiceAccount: "sa", KeyAlgorithm: "DSA"}, "ECDSA or RSA"},
	} {
		if _, err := New(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): %v, want an error naming %s", tc.o, err, tc.want)
		}
	}
	a, err := New(Options{CAAddr: "127.0.0.1:15012", Namespace: "ns", ServiceAccount: "sa"})
	if err != nil {
		t.Fatal(err)
	}
	if a.o.CAServerName != DefaultServerName || a.o.TTL != DefaultTTL || a.o.GraceRatio != DefaultGraceRatio || a.o.SPIFFEID() != "spiffe://cluster.local/ns/ns/sa/sa" {
		t.Errorf("defaults: %+v", a.o)
	}
}
