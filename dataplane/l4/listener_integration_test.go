package l4

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/dataplane/listener"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// proxyFactory serves every filter chain with one tcp_proxy.
type proxyFactory struct{ p *TCPProxy }

func (f proxyFactory) NetworkFilters(*listenerv3.Listener, *listenerv3.FilterChain) (core.ConnHandler, error) {
	return f.p, nil
}

// A listener with tls_inspector in front of tcp_proxy: TLS terminated by
// the listener on one chain, plaintext replayed after inspection on the
// other; in both, a 200 KB payload is echoed whole and the client's
// half-close travels to the upstream and back.
func TestListenerToTCPProxy(t *testing.T) {
	st := stats.New()
	cs := clusterMap{"echo": newCluster(st, "echo", echoServer(t, ""))}
	p, err := NewTCPProxy(cluster("echo"), cs, st)
	if err != nil {
		t.Fatal(err)
	}
	m := listener.NewManager(listener.Options{Stats: st, Factory: proxyFactory{p}})
	t.Cleanup(m.Close)

	certPEM, keyPEM := selfSigned(t, "echo.local")
	tlsCtx, _ := anypb.New(&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificates: []*tlsv3.TlsCertificate{{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: certPEM}},
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: keyPEM}},
		}}}})
	insp, _ := anypb.New(&tlsinspv3.TlsInspector{})
	if err := m.AddOrUpdate(&listenerv3.Listener{
		Name:    "echo",
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{}}}},
		ListenerFilters: []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.tls_inspector",
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: insp}}},
		FilterChains: []*listenerv3.FilterChain{
			{Name: "tls", FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: "tls"},
				TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tlsCtx}}},
			{Name: "plain", FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"}},
		},
	}); err != nil {
		t.Fatal(err)
	}
	addr := m.Addr("echo").String()
	payload := bytes.Repeat([]byte("skiff-"), 200_000/6)

	roundTrip := func(name string, c net.Conn, closeWrite func() error) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			c.Write(payload)
			closeWrite()
		}()
		got, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(got, payload) {
			t.Errorf("%s: echoed %d of %d bytes, err %v", name, len(got), len(payload), err)
		}
		c.Close()
	}
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip("plaintext", raw, raw.(*net.TCPConn).CloseWrite)

	rawTLS, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(rawTLS, &tls.Config{ServerName: "echo.local", InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	roundTrip("tls", tc, tc.CloseWrite)

	if got := st.CounterValue("tcp.echo.downstream_cx_rx_bytes_total"); got != 2*uint64(len(payload)) {
		t.Errorf("downstream_cx_rx_bytes_total = %d, want %d", got, 2*len(payload))
	}
}

func selfSigned(t *testing.T, name string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}
