package tlsctx

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// testCA is a CA made in the test; issue signs leaves with the given SANs.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

var serial int64 = 100

func newCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns PEM chain and key for a leaf with dns and uri SANs.
func (ca *testCA) issue(t *testing.T, dns []string, uris ...string) (certPEM, keyPEM []byte, leaf *x509.Certificate) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "leaf"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: dns, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	leaf, _ = x509.ParseCertificate(der)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), leaf
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

func tlsCert(certPEM, keyPEM []byte) *tlsv3.TlsCertificate {
	return &tlsv3.TlsCertificate{CertificateChain: inline(certPEM), PrivateKey: inline(keyPEM)}
}

func uriExact(s string) *tlsv3.SubjectAltNameMatcher {
	return &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI,
		Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}}
}

func dnsExact(s string) *tlsv3.SubjectAltNameMatcher {
	return &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_DNS,
		Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}}
}

type result struct {
	clientErr, serverErr error
	client, server       tls.ConnectionState
	got                  string
}

// handshake runs a real TLS handshake over loopback; on success the server
// writes "hello" which the client reads.
func handshake(t *testing.T, scfg, ccfg *tls.Config) result {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var res result
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			res.serverErr = err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		sc := tls.Server(c, scfg)
		if res.serverErr = sc.Handshake(); res.serverErr != nil {
			return
		}
		res.server = sc.ConnectionState()
		// TLS 1.3 client certificate errors surface on the first read.
		sc.Write([]byte("hello"))
		sc.Read(make([]byte, 1))
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	cc := tls.Client(c, ccfg)
	res.clientErr = cc.Handshake()
	if res.clientErr == nil {
		res.client = cc.ConnectionState()
		b := make([]byte, 5)
		if _, err := io.ReadFull(cc, b); err != nil {
			res.clientErr = err
		}
		res.got = string(b)
	}
	cc.Close()
	wg.Wait()
	return res
}

type secretMap struct {
	mu sync.Mutex
	m  map[string]*tlsv3.Secret
}

func (s *secretMap) Secret(name string) *tlsv3.Secret {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[name]
}

func (s *secretMap) set(sec *tlsv3.Secret) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]*tlsv3.Secret{}
	}
	s.m[sec.Name] = sec
}

func mustServer(t *testing.T, c *tlsv3.DownstreamTlsContext, s *secretMap) *tls.Config {
	t.Helper()
	var sec interface{ Secret(string) *tlsv3.Secret }
	if s != nil {
		sec = s
	}
	cfg, err := ServerConfig(c, sec)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func mustClient(t *testing.T, c *tlsv3.UpstreamTlsContext, s *secretMap) *tls.Config {
	t.Helper()
	var sec interface{ Secret(string) *tlsv3.Secret }
	if s != nil {
		sec = s
	}
	cfg, err := ClientConfig(c, sec)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// A SPIFFE mTLS pair as Istio configures it: both sides verify the chain to
// the mesh CA and the peer's URI SAN; certificates carry no DNS SAN.
func TestMutualTLSSpiffe(t *testing.T) {
	ca := newCA(t, "mesh-ca")
	sCert, sKey, _ := ca.issue(t, nil, "spiffe://cluster.local/ns/default/sa/reviews")
	cCert, cKey, _ := ca.issue(t, nil, "spiffe://cluster.local/ns/default/sa/productpage")
	server := &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificates: []*tlsv3.TlsCertificate{tlsCert(sCert, sKey)},
			AlpnProtocols:   []string{"h2", "http/1.1"},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: inline(ca.certPEM),
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_URI,
					Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://cluster.local/"}}}},
			}},
		},
	}
	client := &tlsv3.UpstreamTlsContext{
		Sni: "outbound_.9080_._.reviews.default.svc.cluster.local",
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificates: []*tlsv3.TlsCertificate{tlsCert(cCert, cKey)},
			AlpnProtocols:   []string{"istio-peer-exchange", "h2"},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa:                 inline(ca.certPEM),
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{uriExact("spiffe://cluster.local/ns/default/sa/reviews")},
			}},
		},
	}
	res := handshake(t, mustServer(t, server, nil), mustClient(t, client, nil))
	if res.clientErr != nil || res.serverErr != nil {
		t.Fatalf("handshake failed: client %v, server %v", res.clientErr, res.serverErr)
	}
	if res.got != "hello" {
		t.Fatalf("client read %q", res.got)
	}
	if res.client.Version != tls.VersionTLS12 {
		t.Errorf("version %x: Envoy's client default maximum is TLS 1.2", res.client.Version)
	}
	client.CommonTlsContext.TlsParams = &tlsv3.TlsParameters{TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3}
	if res := handshake(t, mustServer(t, server, nil), mustClient(t, client, nil)); res.clientErr != nil || res.client.Version != tls.VersionTLS13 {
		t.Errorf("TLS 1.3 client: %v, version %x", res.clientErr, res.client.Version)
	}
	if res.client.NegotiatedProtocol != "h2" {
		t.Errorf("ALPN = %q, want h2", res.client.NegotiatedProtocol)
	}
	if res.server.ServerName != client.Sni {
		t.Errorf("server saw SNI %q, want %q", res.server.ServerName, client.Sni)
	}
	if len(res.server.PeerCertificates) == 0 || res.server.PeerCertificates[0].URIs[0].String() != "spiffe://cluster.local/ns/default/sa/productpage" {
		t.Errorf("server did not see the client's SPIFFE certificate")
	}
}

func TestClientRefusesWrongCAAndWrongSAN(t *testing.T) {
	ca, other := newCA(t, "mesh-ca"), newCA(t, "other-ca")
	sCert, sKey, _ := ca.issue(t, []string{"reviews.example.com"}, "spiffe://cluster.local/ns/default/sa/reviews")
	server := mustServer(t, &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificates: []*tlsv3.TlsCertificate{tlsCert(sCert, sKey)}}}, nil)
	cases := []struct {
		name    string
		vc      *tlsv3.CertificateValidationContext
		wantErr string
	}{
		{"right CA, right URI SAN", &tlsv3.CertificateValidationContext{TrustedCa: inline(ca.certPEM),
			MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{uriExact("spiffe://cluster.local/ns/default/sa/reviews")}}, ""},
		{"right CA, wildcard-free DNS SAN", &tlsv3.CertificateValidationContext{TrustedCa: inline(ca.certPEM),
			MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{dnsExact("reviews.example.com")}}, ""},
		{"wrong CA", &tlsv3.CertificateValidationContext{TrustedCa: inline(other.certPEM)}, "not trusted"},
		{"wrong CA, ACCEPT_UNTRUSTED, SAN still checked", &tlsv3.CertificateValidationContext{TrustedCa: inline(other.certPEM),
			TrustChainVerification:    tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED,
			MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{uriExact("spiffe://cluster.local/ns/default/sa/reviews")}}, ""},
		{"wrong URI SAN", &tlsv3.CertificateValidationContext{TrustedCa: inline(ca.certPEM),
			MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{uriExact("spiffe://cluster.local/ns/default/sa/ratings")}}, "match none"},
		{"DNS matcher does not match URI SAN", &tlsv3.CertificateValidationContext{TrustedCa: inline(ca.certPEM),
			MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{dnsExact("spiffe://cluster.local/ns/default/sa/reviews")}}, "match none"},
		{"untyped matcher sees every SAN", &tlsv3.CertificateValidationContext{TrustedCa: inline(ca.certPEM),
			MatchSubjectAltNames: []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: "/sa/reviews"}}}}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			client := mustClient(t, &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: tc.vc}}}, nil)
			res := handshake(t, server, client)
			if tc.wantErr == "" {
				if res.clientErr != nil || res.got != "hello" {
					t.Fatalf("want success, got client error %v", res.clientErr)
				}
				return
			}
			if res.clientErr == nil || !strings.Contains(res.clientErr.Error(), tc.wantErr) {
				t.Fatalf("client error = %v, want one containing %q", res.clientErr, tc.wantErr)
			}
		})
	}
}

func TestServerRequiresAndVerifiesClientCertificate(t *testing.T) {
	ca, other := newCA(t, "mesh-ca"), newCA(t, "other-ca")
	sCert, sKey, _ := ca.issue(t, []string{"server"})
	goodCert, goodKey, _ := ca.issue(t, nil, "spiffe://cluster.local/ns/a/sa/good")
	badSANCert, badSANKey, _ := ca.issue(t, nil, "spiffe://cluster.local/ns/a/sa/evil")
	otherCert, otherKey, _ := other.issue(t, nil, "spiffe://cluster.local/ns/a/sa/good")
	server := mustServer(t, &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificates: []*tlsv3.TlsCertificate{tlsCert(sCert, sKey)},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa:                 inline(ca.certPEM),
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{uriExact("spiffe://cluster.local/ns/a/sa/good")},
			}},
		}}, nil)
	clientWith := func(cert, key []byte) *tls.Config {
		ctc := &tlsv3.CommonTlsContext{}
		if cert != nil {
			ctc.TlsCertificates = []*tlsv3.TlsCertificate{tlsCert(cert, key)}
		}
		return mustClient(t, &tlsv3.UpstreamTlsContext{CommonTlsContext: ctc}, nil)
	}
	if res := handshake(t, server, clientWith(goodCert, goodKey)); res.serverErr != nil || res.got != "hello" {
		t.Fatalf("good client refused: server %v client %v", res.serverErr, res.clientErr)
	}
	for name, cfg := range map[string]*tls.Config{
		"no certificate": clientWith(nil, nil),
		"wrong SAN":      clientWith(badSANCert, badSANKey),
		"wrong CA":       clientWith(otherCert, otherKey),
	} {
		res := handshake(t, server, cfg)
		if res.serverErr == nil {
			t.Errorf("%s: server accepted the client", name)
		}
		if res.got == "hello" {
			t.Errorf("%s: client received application data", name)
		}
	}
}

// SDS certificates are resolved per handshake: a rotated secret is served on
// the next connection with no new tls.Config; a combined validation context
// takes trusted_ca from SDS and SAN matchers from the default context.
func TestSDSRotationAndCombinedValidation(t *testing.T) {
	ca := newCA(t, "mesh-ca")
	secrets := &secretMap{}
	c1, k1, leaf1 := ca.issue(t, nil, "spiffe://td/ns/a/sa/srv")
	secrets.set(&tlsv3.Secret{Name: "default", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: tlsCert(c1, k1)}})
	secrets.set(&tlsv3.Secret{Name: "ROOTCA", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: inline(ca.certPEM)}}})
	sds := func(n string) *tlsv3.SdsSecretConfig { return &tlsv3.SdsSecretConfig{Name: n} }
	server := mustServer(t, &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sds("default")}}}, secrets)
	client := mustClient(t, &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{uriExact("spiffe://td/ns/a/sa/srv")}},
			ValidationContextSdsSecretConfig: sds("ROOTCA"),
		}}}}, secrets)

	res := handshake(t, server, client)
	if res.clientErr != nil || res.client.PeerCertificates[0].SerialNumber.Cmp(leaf1.SerialNumber) != 0 {
		t.Fatalf("first handshake: err %v", res.clientErr)
	}
	c2, k2, leaf2 := ca.issue(t, nil, "spiffe://td/ns/a/sa/srv")
	secrets.set(&tlsv3.Secret{Name: "default", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: tlsCert(c2, k2)}})
	res = handshake(t, server, client)
	if res.clientErr != nil || res.client.PeerCertificates[0].SerialNumber.Cmp(leaf2.SerialNumber) != 0 {
		t.Fatalf("after rotation: err %v, want the rotated certificate", res.clientErr)
	}
	// Rotating the root to another CA makes the same server untrusted.
	other := newCA(t, "other")
	secrets.set(&tlsv3.Secret{Name: "ROOTCA", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: inline(other.certPEM)}}})
	if res = handshake(t, server, client); res.clientErr == nil {
		t.Fatal("server still trusted after the root secret changed")
	}
	// A missing secret fails the handshake, naming it.
	server2 := mustServer(t, &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sds("absent")}}}, secrets)
	if res = handshake(t, server2, &tls.Config{InsecureSkipVerify: true}); res.serverErr == nil || !strings.Contains(res.serverErr.Error(), `"absent"`) {
		t.Fatalf("server error = %v, want one naming the absent secret", res.serverErr)
	}
}

func TestFilesPinsVersionsAndSNI(t *testing.T) {
	ca := newCA(t, "ca")
	sCert, sKey, leaf := ca.issue(t, []string{"*.example.com"})
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "cert.pem"), sCert, 0o600)
	os.WriteFile(filepath.Join(dir, "key.pem"), sKey, 0o600)
	file := func(n string) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: filepath.Join(dir, n)}}
	}
	server := mustServer(t, &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: file("cert.pem"), PrivateKey: file("key.pem")}},
		TlsParams:       &tlsv3.TlsParameters{TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_2},
	}}, nil)
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	client := mustClient(t, &tlsv3.UpstreamTlsContext{Sni: "api.example.com", CommonTlsContext: &tlsv3.CommonTlsContext{
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: string(ca.certPEM)}},
			// The certificate's *.example.com satisfies an exact DNS matcher.
			MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{dnsExact("api.example.com")},
			VerifyCertificateSpki:     []string{base64.StdEncoding.EncodeToString(spki[:])},
		}}}}, nil)
	res := handshake(t, server, client)
	if res.clientErr != nil {
		t.Fatalf("handshake: %v", res.clientErr)
	}
	if res.client.Version != tls.VersionTLS12 {
		t.Errorf("version = %x, want TLS 1.2 (server max)", res.client.Version)
	}
	if res.server.ServerName != "api.example.com" {
		t.Errorf("SNI = %q", res.server.ServerName)
	}
	wrongPin := mustClient(t, &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			VerifyCertificateHash: []string{strings.Repeat("ab", 32)},
		}}}}, nil)
	if res := handshake(t, server, wrongPin); res.clientErr == nil || !strings.Contains(res.clientErr.Error(), "verify_certificate_hash") {
		t.Fatalf("wrong pin: client error %v", res.clientErr)
	}
}

// With several certificates the one naming the client's SNI is served.
func TestCertificateSelectionBySNI(t *testing.T) {
	ca := newCA(t, "ca")
	ca1, ka, leafA := ca.issue(t, []string{"a.example.com"})
	cb, kb, leafB := ca.issue(t, []string{"b.example.com"})
	server := mustServer(t, &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificates: []*tlsv3.TlsCertificate{tlsCert(ca1, ka), tlsCert(cb, kb)}}}, nil)
	for sni, want := range map[string]*x509.Certificate{"a.example.com": leafA, "b.example.com": leafB, "c.example.com": leafA} {
		res := handshake(t, server, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		if res.clientErr != nil || res.client.PeerCertificates[0].SerialNumber.Cmp(want.SerialNumber) != 0 {
			t.Errorf("SNI %q: err %v or wrong certificate", sni, res.clientErr)
		}
	}
}

func TestRequireSNI(t *testing.T) {
	ca := newCA(t, "ca")
	c, k, _ := ca.issue(t, []string{"*.example.com"})
	server := mustServer(t, &tlsv3.DownstreamTlsContext{RequireSni: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificates: []*tlsv3.TlsCertificate{tlsCert(c, k)}}}, nil)
	for sni, ok := range map[string]bool{"a.example.com": true, "": false, "other.org": false} {
		res := handshake(t, server, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		if ok != (res.serverErr == nil && res.got == "hello") {
			t.Errorf("SNI %q: server error %v, want accepted=%v", sni, res.serverErr, ok)
		}
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	ca := newCA(t, "ca")
	c, k, _ := ca.issue(t, []string{"x"})
	cases := []struct {
		name string
		err  func() error
		want string
	}{
		{"no server cert", func() error {
			_, err := ServerConfig(&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{}}, nil)
			return err
		}, "a server needs a certificate"},
		{"missing file", func() error {
			_, err := ServerConfig(&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificates: []*tlsv3.TlsCertificate{{
				CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/nonexistent/cert.pem"}}, PrivateKey: inline(k)}}}}, nil)
			return err
		}, "tls_certificates[0]: certificate_chain: filename"},
		{"bad trusted_ca", func() error {
			_, err := ClientConfig(&tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{
				ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: inline([]byte("junk"))}}}}, nil)
			return err
		}, "validation_context.trusted_ca: no PEM certificate"},
		{"require without validation", func() error {
			_, err := ServerConfig(&tlsv3.DownstreamTlsContext{RequireClientCertificate: wrapperspb.Bool(true),
				CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificates: []*tlsv3.TlsCertificate{tlsCert(c, k)}}}, nil)
			return err
		}, "require_client_certificate"},
		{"SAN match without CA", func() error {
			_, err := ClientConfig(&tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{
				ValidationContext: &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{uriExact("spiffe://x")}}}}}, nil)
			return err
		}, "validation_context.match_typed_subject_alt_names / match_subject_alt_names: need trusted_ca"},
		{"bad cipher", func() error {
			_, err := ClientConfig(&tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsParams: &tlsv3.TlsParameters{CipherSuites: []string{"RC4-MD5"}}}}, nil)
			return err
		}, `tls_params.cipher_suites: "RC4-MD5"`},
		{"sds without source", func() error {
			_, err := ClientConfig(&tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
				TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "default"}}}}, nil)
			return err
		}, `tls_certificate_sds_secret_configs[0]: secret "default"`},
	}
	for _, tc := range cases {
		err := tc.err()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	// Istio's cipher list with an equal-preference group is accepted.
	if _, err := ClientConfig(&tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsParams: &tlsv3.TlsParameters{
		CipherSuites: []string{"[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]", "ECDHE-RSA-AES256-GCM-SHA384"}}}}, nil); err != nil {
		t.Errorf("cipher list refused: %v", err)
	}
}

// A client whose ALPN offer shares nothing with the server's list still
// completes the handshake, with no protocol selected, as in Envoy: Istio's
// sidecars offer "istio-peer-exchange" and "istio" to inbound chains that
// list h2 and http/1.1. A shared protocol is still selected.
func TestServerALPNWithoutOverlap(t *testing.T) {
	ca := newCA(t, "mesh-ca")
	sCert, sKey, _ := ca.issue(t, []string{"server"})
	server := mustServer(t, &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		AlpnProtocols:   []string{"h2", "http/1.1"},
		TlsCertificates: []*tlsv3.TlsCertificate{tlsCert(sCert, sKey)},
	}}, nil)
	for _, tc := range []struct {
		offer []string
		want  string
	}{
		{[]string{"istio-peer-exchange", "istio"}, ""},
		{[]string{"istio", "http/1.1"}, "http/1.1"},
		{nil, ""},
	} {
		client := mustClient(t, &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols: tc.offer,
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: inline(ca.certPEM)}},
		}, Sni: "server"}, nil)
		res := handshake(t, server, client)
		if res.serverErr != nil || res.clientErr != nil {
			t.Errorf("offer %v: server %v, client %v; want a handshake", tc.offer, res.serverErr, res.clientErr)
			continue
		}
		if got := res.client.NegotiatedProtocol; got != tc.want {
			t.Errorf("offer %v: negotiated %q, want %q", tc.offer, got, tc.want)
		}
	}
}
