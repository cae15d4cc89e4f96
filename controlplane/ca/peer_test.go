package ca_test

import (
	"crypto/tls"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	securityapi "istio.io/api/security/v1alpha1"

	"github.com/skiff-mesh/skiff/controlplane/ca"
)

func TestParseSPIFFEID(t *testing.T) {
	id, err := ca.ParseSPIFFEID("spiffe://cluster.local/ns/default/sa/sleep")
	if err != nil || id != (ca.Identity{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "sleep"}) {
		t.Fatalf("got %+v, %v", id, err)
	}
	if id.SPIFFEID() != "spiffe://cluster.local/ns/default/sa/sleep" {
		t.Fatalf("round trip gave %s", id.SPIFFEID())
	}
	for _, bad := range []string{"", "https://cluster.local/ns/a/sa/b", "spiffe://cluster.local/ns/a", "spiffe://cluster.local/ns//sa/b", "spiffe:///ns/a/sa/b", "spiffe://td/ns/a/sa/b/c", "spiffe://td/sa/a/ns/b"} {
		if _, err := ca.ParseSPIFFEID(bad); err == nil {
			t.Errorf("ParseSPIFFEID(%q) accepted", bad)
		}
	}
}

// A proxy whose bootstrap token is gone renews with the certificate it
// holds; a client certificate from another CA gets no certificate.
func TestRenewWithClientCertificate(t *testing.T) {
	tokens := ca.NewBootstrapTokens(nil)
	f := newFixture(t, func(o *ca.Options) { o.Authenticator = ca.FirstOf(tokens, ca.ClientCertAuthenticator{}) })
	f.tokens = tokens
	addr := serve(t, f.ca)
	const id = "spiffe://cluster.local/ns/default/sa/ratings"
	key := ecKey(t)
	csr := makeCSR(t, key, id)
	tok := f.mint(t, "default", "ratings")
	resp, err := dial(t, addr, f.ca.TrustBundle()).CreateCertificate(withToken(t, tok), &securityapi.IstioCertificateRequest{Csr: csr})
	if err != nil {
		t.Fatal(err)
	}
	tokens.Remove(tok)

	withCert := func(cert tls.Certificate) securityapi.IstioCertificateServiceClient {
		cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			RootCAs: poolOf(f.ca.TrustBundle()...), ServerName: istiodHost, Certificates: []tls.Certificate{cert},
		})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return securityapi.NewIstioCertificateServiceClient(cc)
	}
	leaf := parsePEM(t, resp.CertChain[0])[0]
	renewed, err := withCert(tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}).
		CreateCertificate(t.Context(), &securityapi.IstioCertificateRequest{Csr: csr})
	if err != nil {
		t.Fatalf("renewal with the held certificate: %v", err)
	}
	if got := verifyChain(t, renewed.CertChain, f.clock.Now()).URIs[0].String(); got != id {
		t.Fatalf("renewed certificate is for %s, want %s", got, id)
	}
	// Renewing with the held certificate does not allow asking for another identity.
	_, err = withCert(tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}).
		CreateCertificate(t.Context(), &securityapi.IstioCertificateRequest{Csr: makeCSR(t, key, "spiffe://cluster.local/ns/default/sa/reviews")})
	if st, _ := status.FromError(err); st.Code() != codes.PermissionDenied {
		t.Fatalf("renewal asking for another identity: %v", err)
	}

	// A certificate from a foreign CA is refused at the handshake.
	foreign := newFixture(t, nil)
	fChain, err := foreign.ca.SignCSR([]byte(csr), ca.Identity{Namespace: "default", ServiceAccount: "ratings"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	fLeaf := parsePEM(t, fChain[0])[0]
	_, err = withCert(tls.Certificate{Certificate: [][]byte{fLeaf.Raw}, PrivateKey: key, Leaf: fLeaf}).
		CreateCertificate(t.Context(), &securityapi.IstioCertificateRequest{Csr: csr})
	if err == nil {
		t.Fatal("a certificate from another CA obtained a certificate")
	}
	// Without token or certificate, the status gives both reasons.
	_, err = dial(t, addr, f.ca.TrustBundle()).CreateCertificate(t.Context(), &securityapi.IstioCertificateRequest{Csr: csr})
	st, _ := status.FromError(err)
	if st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), "no authorization metadata") || !strings.Contains(st.Message(), "no verified client certificate") {
		t.Fatalf("got %v %q", st.Code(), st.Message())
	}
}
