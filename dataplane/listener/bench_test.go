package listener

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// BenchmarkSelectChain measures filter chain selection on an Istio-like
// outbound listener: 200 chains, one per service VIP, on one port.
func BenchmarkSelectChain(b *testing.B) {
	m := NewManager(Options{Factory: newFactory()})
	l := &listenerv3.Listener{Name: "0.0.0.0_80", Address: sockAddr("0.0.0.0", 80)}
	for i := range 200 {
		l.FilterChains = append(l.FilterChains, fchain(fmt.Sprintf("vip-%d", i), &listenerv3.FilterChainMatch{
			DestinationPort: wrapperspb.UInt32(80),
			PrefixRanges:    []*corev3.CidrRange{cidr(fmt.Sprintf("198.19.%d.%d", i/250, i%250), 32)},
		}))
	}
	c, err := m.compile(l)
	if err != nil {
		b.Fatal(err)
	}
	info := &core.ConnInfo{
		LocalAddr:   &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 15001},
		RemoteAddr:  &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000},
		OriginalDst: &net.TCPAddr{IP: net.IPv4(198, 19, 0, 199), Port: 80},
	}
	b.ReportAllocs()
	for b.Loop() {
		in := newMatchInput(info)
		if ch := c.selector.selectChain(&in); ch == nil || ch.name != "vip-199" {
			b.Fatalf("selected %v", ch)
		}
	}
}

// BenchmarkTLSInspector measures tls_inspector on a real ClientHello (SNI
// and ALPN extraction, bytes kept for replay).
func BenchmarkTLSInspector(b *testing.B) {
	hello := recordClientHello(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(hello)))
	for b.Loop() {
		pc := &peekConn{Conn: &helloConn{data: hello}}
		isTLS, sni, alpn, err := inspectTLS(pc)
		if err != nil || !isTLS || sni != "reviews.default.svc.cluster.local" || len(alpn) != 2 {
			b.Fatalf("inspect: %v %v %q %v", err, isTLS, sni, alpn)
		}
	}
}

// recordClientHello captures the first flight of a crypto/tls client.
func recordClientHello(b *testing.B) []byte {
	c1, c2 := net.Pipe()
	go tls.Client(c1, &tls.Config{ServerName: "reviews.default.svc.cluster.local", NextProtos: []string{"istio-peer-exchange", "h2"}}).Handshake()
	buf := make([]byte, 64*1024)
	n, err := c2.Read(buf)
	if err != nil {
		b.Fatal(err)
	}
	c1.Close()
	c2.Close()
	return buf[:n]
}

// helloConn reads out fixed bytes, then blocks nowhere: EOF.
type helloConn struct {
	net.Conn
	data []byte
}

func (h *helloConn) Read(p []byte) (int, error) {
	if len(h.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, h.data)
	h.data = h.data[n:]
	return n, nil
}
