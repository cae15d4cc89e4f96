package listener

import (
	"net"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// Selection on data alone (no sockets): IPv6 destinations and prefixes, and
// the longest server-name wildcard winning over a shorter one.
func TestSelectorIPv6AndWildcardLength(t *testing.T) {
	m := NewManager(Options{Factory: newFactory()})
	l := &listenerv3.Listener{Name: "l", Address: sockAddr("::", 443), FilterChains: []*listenerv3.FilterChain{
		fchain("v6-48", &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{cidr("2001:db8:1::", 48)}}),
		fchain("v6-host", &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{cidr("2001:db8:1::7", 128)}}),
		fchain("wild-short", &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{cidr("2001:db8:2::", 48)}, ServerNames: []string{"*.example.com"}}),
		fchain("wild-long", &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{cidr("2001:db8:2::", 48)}, ServerNames: []string{"*.b.example.com"}}),
		fchain("exact", &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{cidr("2001:db8:2::", 48)}, ServerNames: []string{"x.b.example.com"}}),
	}}
	c, err := m.compile(l)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ dst, sni, want string }{
		{"2001:db8:1::5", "", "v6-48"},
		{"2001:db8:1::7", "", "v6-host"},
		{"2001:db8:2::1", "a.example.com", "wild-short"},
		{"2001:db8:2::1", "a.b.example.com", "wild-long"},
		{"2001:db8:2::1", "x.b.example.com", "exact"},
		{"2001:db8:2::1", "example.com", ""}, // a wildcard needs a label in front
		{"2001:db8:3::1", "", ""},
	} {
		info := &core.ConnInfo{
			LocalAddr:   &net.TCPAddr{IP: net.ParseIP("::1"), Port: 15001},
			RemoteAddr:  &net.TCPAddr{IP: net.ParseIP("::1"), Port: 50000},
			OriginalDst: &net.TCPAddr{IP: net.ParseIP(tc.dst), Port: 443},
			SNI:         tc.sni,
		}
		in := newMatchInput(info)
		got := ""
		if ch := c.selector.selectChain(&in); ch != nil {
			got = ch.name
		}
		if got != tc.want {
			t.Errorf("%s SNI %q: chain %q, want %q", tc.dst, tc.sni, got, tc.want)
		}
	}
}
