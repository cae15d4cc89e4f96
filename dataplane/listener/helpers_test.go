package listener

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	httpinspv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	origdstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// seen is what a test chain's handler observed about one connection.
type seen struct {
	listener, chain string
	info            core.ConnInfo
}

// testFactory builds handlers that report each connection on a channel,
// write "<listener>/<chain>\n" and then echo lines until EOF.
type testFactory struct {
	seen chan seen
	// drainable, when set, makes handlers core.Drainers that end a
	// connection after answering the request in flight (HTTP/1 style).
	drainable bool
	mu        sync.Mutex
	drained   []string
}

func newFactory() *testFactory { return &testFactory{seen: make(chan seen, 256)} }

func (f *testFactory) NetworkFilters(l *listenerv3.Listener, fc *listenerv3.FilterChain) (core.ConnHandler, error) {
	h := &echoHandler{f: f, listener: l.GetName(), chain: fc.GetName()}
	if f.drainable {
		return &drainHandler{echoHandler: h, draining: make(chan struct{})}, nil
	}
	return h, nil
}

type echoHandler struct {
	f               *testFactory
	listener, chain string
}

func (h *echoHandler) ServeConn(c net.Conn, info *core.ConnInfo) {
	defer c.Close()
	h.f.seen <- seen{listener: info.ListenerName, chain: info.FilterChainName, info: *info}
	fmt.Fprintf(c, "%s/%s\n", h.listener, h.chain)
	io.Copy(c, c)
}

// drainHandler answers "req\n" lines with "resp\n"; once drained it
// answers the next request with "resp close\n" and closes, as HTTP/1 does
// with Connection: close.
type drainHandler struct {
	*echoHandler
	draining chan struct{}
	once     sync.Once
}

func (h *drainHandler) Drain() {
	h.f.mu.Lock()
	h.f.drained = append(h.f.drained, h.chain)
	h.f.mu.Unlock()
	h.once.Do(func() { close(h.draining) })
}

func (h *drainHandler) ServeConn(c net.Conn, info *core.ConnInfo) {
	defer c.Close()
	h.f.seen <- seen{listener: info.ListenerName, chain: info.FilterChainName, info: *info}
	r := bufio.NewReader(c)
	for {
		if _, err := r.ReadString('\n'); err != nil {
			return
		}
		select {
		case <-h.draining:
			io.WriteString(c, "resp close\n")
			return
		default:
			io.WriteString(c, "resp\n")
		}
	}
}

func (f *testFactory) next(t *testing.T) seen {
	t.Helper()
	select {
	case s := <-f.seen:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no connection reached a filter chain within 10s")
		return seen{}
	}
}

func sockAddr(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

func lf(name string) *listenerv3.ListenerFilter {
	var cfg proto.Message
	switch name {
	case originalDstName:
		cfg = &origdstv3.OriginalDst{}
	case tlsInspectorName:
		cfg = &tlsinspv3.TlsInspector{}
	case httpInspectorName:
		cfg = &httpinspv3.HttpInspector{}
	}
	return &listenerv3.ListenerFilter{Name: name, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(cfg)}}
}

func fchain(name string, m *listenerv3.FilterChainMatch) *listenerv3.FilterChain {
	return &listenerv3.FilterChain{Name: name, FilterChainMatch: m}
}

func cidr(p string, n uint32) *corev3.CidrRange {
	return &corev3.CidrRange{AddressPrefix: p, PrefixLen: wrapperspb.UInt32(n)}
}

func newTestManager(t *testing.T, f ChainFactory, o Options) *Manager {
	t.Helper()
	o.Factory = f
	if o.Stats == nil {
		o.Stats = stats.New()
	}
	m := NewManager(o)
	t.Cleanup(m.Close)
	return m
}

func dialListener(t *testing.T, m *Manager, name string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", m.Addr(name).String(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", name, err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// serverCert makes a self-signed certificate for names, as PEM.
func serverCert(t *testing.T, names ...string) (certPEM, keyPEM []byte, pool *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	c, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(c)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), pool
}

func tlsTransport(certPEM, keyPEM []byte, alpn ...string) *corev3.TransportSocket {
	ctx := &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		AlpnProtocols: alpn,
		TlsCertificates: []*tlsv3.TlsCertificate{{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: certPEM}},
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: keyPEM}},
		}},
	}}
	return &corev3.TransportSocket{Name: tlsTransportName, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
}

func readLine(t *testing.T, c net.Conn) string {
	t.Helper()
	s, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v (got %q)", err, s)
	}
	return strings.TrimSuffix(s, "\n")
}

// queueOriginalDst returns an injectable original-destination lookup that
// hands out the queued addresses in order, one per connection.
func queueOriginalDst() (func(net.Conn) (*net.TCPAddr, error), chan *net.TCPAddr) {
	q := make(chan *net.TCPAddr, 16)
	return func(net.Conn) (*net.TCPAddr, error) {
		select {
		case a := <-q:
			return a, nil
		default:
			return nil, fmt.Errorf("not redirected")
		}
	}, q
}
