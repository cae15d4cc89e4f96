package proxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"golang.org/x/net/http2"

	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
)

// Scenario 11: request mirroring at 100% — the shadow gets a copy with
// "-shadow" on its Host, the client gets the primary's answer, and a slow
// shadow does not slow the client.
func TestScenarioRequestMirroring(t *testing.T) {
	primary, _ := echoBackend(t, "primary", nil)
	type copyOf struct{ host, body string }
	copies := make(chan copyOf, 16)
	mirror, _ := echoBackend(t, "mirror", func(w http.ResponseWriter, r *http.Request) bool {
		b, _ := io.ReadAll(r.Body)
		copies <- copyOf{r.Host, string(b)}
		time.Sleep(time.Second) // a slow shadow
		return true
	})
	listen := freeAddr(t)
	r := to(prefix("/"), "primary")
	r.GetRoute().RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{Cluster: "m",
		RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 100}}}}
	scenario(t, httpStack(listen, map[string][]string{"primary": {primary}, "m": {mirror}}, r)...)

	req, _ := http.NewRequest("POST", "http://"+listen+"/reviews", strings.NewReader("the-body"))
	req.Host = "reviews.local:9080"
	start := time.Now()
	c, body, _ := send(t, req)
	took := time.Since(start)
	if c != 200 || body != "primary /reviews" {
		t.Fatalf("mirrored request: %d %q, want the primary's answer", c, body)
	}
	if took > 700*time.Millisecond {
		t.Errorf("the client waited %v: the slow shadow held it up", took)
	}
	select {
	case got := <-copies:
		if got.host != "reviews.local-shadow:9080" || got.body != "the-body" {
			t.Fatalf("the shadow saw Host %q body %q, want reviews.local-shadow:9080 and the-body", got.host, got.body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the shadow cluster received no copy")
	}
}

// testCA is a certificate authority for one test.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leaf issues a server certificate for dnsName, as PEM.
func (ca *testCA) leaf(t *testing.T, dnsName string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: dnsName},
		DNSNames: []string{dnsName}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// tlsBackend is an HTTPS backend with a certificate for dnsName from ca;
// it reports the SNI it was asked for.
func tlsBackend(t *testing.T, name string, ca *testCA, dnsName string) string {
	t.Helper()
	certPEM, keyPEM := ca.leaf(t, dnsName)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-upstream", name)
		w.Header().Set("x-seen-sni", r.TLS.ServerName)
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// Scenario 12: downstream TLS with ALPN and SNI-selected filter chains,
// upstream TLS with SNI and CA validation, and a backend from another CA
// refused.
func TestScenarioTLS(t *testing.T) {
	ca, other := newCA(t, "mesh root"), newCA(t, "stranger root")
	a, _ := echoBackend(t, "a", nil)
	b, _ := echoBackend(t, "b", nil)
	secure := tlsBackend(t, "secure", ca, "backend.local")
	rogue := tlsBackend(t, "rogue", other, "backend.local")
	aCert, aKey := ca.leaf(t, "a.example")
	bCert, bKey := ca.leaf(t, "b.example")
	listen, plain := freeAddr(t), freeAddr(t)

	tlsListener := &listenerv3.Listener{Name: "tls", Address: xdsres.Addr(listen),
		ListenerFilters: []*listenerv3.ListenerFilter{xdsres.TLSInspector()},
		FilterChains: []*listenerv3.FilterChain{
			xdsres.FilterChain("a", []string{"a.example"}, xdsres.DownstreamTLS(aCert, aKey, "h2", "http/1.1"), xdsres.HCM("tls_a", "routes-a")),
			xdsres.FilterChain("b", []string{"b.example"}, xdsres.DownstreamTLS(bCert, bKey, "h2", "http/1.1"), xdsres.HCM("tls_b", "routes-b")),
		}}
	_, p := scenario(t,
		xdsres.EDSCluster("a"), xdsres.Endpoints("a", a), xdsres.EDSCluster("b"), xdsres.Endpoints("b", b),
		xdsres.UpstreamTLS(xdsres.EDSCluster("secure"), "backend.local", ca.certPEM), xdsres.Endpoints("secure", secure),
		xdsres.UpstreamTLS(xdsres.EDSCluster("rogue"), "backend.local", ca.certPEM), xdsres.Endpoints("rogue", rogue),
		tlsListener,
		xdsres.RouteConfig("routes-a", to(prefix("/"), "a")), xdsres.RouteConfig("routes-b", to(prefix("/"), "b")),
		xdsres.Listener("plain", plain, xdsres.HCM("plain", "routes-up")),
		xdsres.RouteConfig("routes-up", to(prefix("/secure"), "secure"), to(prefix("/rogue"), "rogue")))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t.Run("SNI a.example over h2", func(t *testing.T) {
		conn, err := tlsDial(ctx, listen, &tls.Config{ServerName: "a.example", RootCAs: ca.pool(), NextProtos: []string{"h2", "http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		st := conn.ConnectionState()
		if st.NegotiatedProtocol != "h2" || st.PeerCertificates[0].Subject.CommonName != "a.example" {
			t.Fatalf("ALPN %q certificate %q, want h2 and a.example", st.NegotiatedProtocol, st.PeerCertificates[0].Subject.CommonName)
		}
		cc, err := (&http2.Transport{}).NewClientConn(conn)
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("GET", "https://a.example/x", nil)
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "a /x" || resp.ProtoMajor != 2 {
			t.Fatalf("through chain a: %d %q %s", resp.StatusCode, body, resp.Proto)
		}
	})
	t.Run("SNI b.example over http/1.1", func(t *testing.T) {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: ca.pool(), NextProtos: []string{"http/1.1"}},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, listen)
			}}}
		resp, err := c.Get("https://b.example/y")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		c.CloseIdleConnections()
		if resp.StatusCode != 200 || string(body) != "b /y" || resp.ProtoMajor != 1 ||
			resp.TLS.PeerCertificates[0].Subject.CommonName != "b.example" {
			t.Fatalf("through chain b: %d %q %s", resp.StatusCode, body, resp.Proto)
		}
	})
	t.Run("upstream TLS with SNI and trusted CA", func(t *testing.T) {
		c, body, h := get(t, "http://"+plain+"/secure")
		if c != 200 || body != "secure /secure" || h.Get("x-seen-sni") != "backend.local" {
			t.Fatalf("to the TLS backend: %d %q SNI %q", c, body, h.Get("x-seen-sni"))
		}
	})
	t.Run("backend from another CA refused", func(t *testing.T) {
		c, _, h := get(t, "http://"+plain+"/rogue")
		if c != 503 || !strings.Contains(flags(h), "UF") {
			t.Fatalf("to a backend with a stranger's certificate: %d flags %q, want 503 UF", c, flags(h))
		}
	})
	page := adminStats(t, p)
	for _, name := range []string{"http.tls_a.downstream_rq_total", "http.tls_b.downstream_rq_total"} {
		if v := statValue(page, name); v != 1 {
			t.Errorf("%s = %d, want 1", name, v)
		}
	}
}
