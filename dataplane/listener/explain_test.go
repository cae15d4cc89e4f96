package listener

import (
	"net"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// MatchFilterChain on a virtualInbound-shaped listener: a port's TLS and
// plaintext chains (PERMISSIVE), a catch-all, and nothing for TLS on a
// STRICT-only port when the client sends plaintext.
func TestMatchFilterChain(t *testing.T) {
	port := func(p uint32, transport string, alpn ...string) *listenerv3.FilterChainMatch {
		return &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(p), TransportProtocol: transport, ApplicationProtocols: alpn}
	}
	l := &listenerv3.Listener{Name: "virtualInbound", Address: sockAddr("0.0.0.0", 15006), FilterChains: []*listenerv3.FilterChain{
		fchain("9080-tls", port(9080, "tls", "istio", "istio-http/1.1")),
		fchain("9080-plain", port(9080, "raw_buffer")),
		fchain("8443-tls", port(8443, "tls")),
		fchain("catchall", &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"}),
	}}
	conn := func(p int, transport string, alpn ...string) *core.ConnInfo {
		dst := &net.TCPAddr{IP: net.ParseIP("198.18.0.6"), Port: p}
		return &core.ConnInfo{LocalAddr: dst, OriginalDst: dst, RemoteAddr: &net.TCPAddr{IP: net.ParseIP("198.18.0.4"), Port: 40000},
			TransportProtocol: transport, ALPN: alpn}
	}
	for _, tc := range []struct {
		name string
		ci   *core.ConnInfo
		want int
	}{
		{"mTLS to 9080", conn(9080, "tls", "istio-peer-exchange", "istio"), 0},
		{"plaintext to 9080", conn(9080, "raw_buffer", "http/1.1"), 1},
		{"plaintext to STRICT 8443", conn(8443, "raw_buffer"), -1},
		{"plaintext elsewhere", conn(7000, "raw_buffer"), 3},
	} {
		got, err := MatchFilterChain(l, tc.ci)
		if err != nil || got != tc.want {
			t.Errorf("%s: chain %d, %v; want %d", tc.name, got, err, tc.want)
		}
	}
	l.DefaultFilterChain = &listenerv3.FilterChain{Name: "default"}
	if got, _ := MatchFilterChain(l, conn(8443, "raw_buffer")); got != len(l.FilterChains) {
		t.Errorf("with a default chain: %d, want %d (the default_filter_chain)", got, len(l.FilterChains))
	}
	l.FilterChains[0].FilterChainMatch.ServerNames = []string{"a*b"}
	if _, err := MatchFilterChain(l, conn(9080, "tls")); err == nil {
		t.Error("an invalid server name compiled")
	}
}
