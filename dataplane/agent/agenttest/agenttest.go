// Package agenttest runs the mesh CA (controlplane/ca's real gRPC service
// over TLS on 127.0.0.1, as skiffd serves 15012) for tests of the identity
// agent and of what uses its certificates. Tests only: skiff-proxy never
// links it.
package agenttest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/skiff-mesh/skiff/controlplane/ca"
)

// ServerName is the name in the CA's serving certificate.
const ServerName = "istiod.istio-system.svc"

// CA is a running CA with a token for one workload identity.
type CA struct {
	*ca.CA
	Addr      string
	RootFile  string // the trust bundle at start, PEM (--ca-root-cert)
	TokenFile string // a valid token for ID, mode 0600 (--ca-token-file)
	Token     string
	Tokens    *ca.BootstrapTokens
	ID        ca.Identity
}

// StartCA starts a CA with a self-signed ECDSA root in t.TempDir() and
// registers a token for spiffe://cluster.local/ns/NS/sa/SA. It stops when
// the test ends.
func StartCA(t testing.TB, ns, sa string) *CA {
	t.Helper()
	dir := t.TempDir()
	tokens := ca.NewBootstrapTokens(nil)
	c, err := ca.New(ca.Options{Store: ca.DirStore{Dir: filepath.Join(dir, "ca")}, RootKey: ca.ECDSAP256,
		Authenticator: tokens, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	id := ca.Identity{Namespace: ns, ServiceAccount: sa}
	tok, err := tokens.Mint(id, 0)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := c.ServingCertificate([]string{ServerName}, time.Hour)
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
	out := &CA{CA: c, Addr: lis.Addr().String(), Token: tok, Tokens: tokens, ID: id,
		RootFile: filepath.Join(dir, "root-cert.pem"), TokenFile: filepath.Join(dir, "token")}
	if err := os.WriteFile(out.RootFile, c.TrustBundlePEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out.TokenFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// ClientCert signs a certificate for spiffe://cluster.local/ns/NS/sa/SA
// directly (no gRPC), for a test client talking to a proxy's mTLS listener.
func (c *CA) ClientCert(t testing.TB, ns, sa string, ttl time.Duration) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := ca.Identity{TrustDomain: c.TrustDomain(), Namespace: ns, ServiceAccount: sa}
	u, _ := url.Parse(id.SPIFFEID())
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := c.SignCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), id, ttl)
	if err != nil {
		t.Fatal(err)
	}
	var certPEM []byte
	for _, s := range chain[:len(chain)-1] {
		certPEM = append(certPEM, s...)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	cert, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// RootPool is the CA's current trust bundle.
func (c *CA) RootPool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, r := range c.TrustBundle() {
		p.AddCert(r)
	}
	return p
}
