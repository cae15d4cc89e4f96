package listener

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// chainMatch is a compiled FilterChainMatch.
type chainMatch struct {
	port        uint32 // 0: any
	prefixes    []netip.Prefix
	serverNames []string // lower case; "*.x" wildcards kept as written
	transport   string
	appProtos   []string
	directSrc   []netip.Prefix
	sourceType  listenerv3.FilterChainMatch_ConnectionSourceType
	sources     []netip.Prefix
	sourcePorts []uint32
}

func compileMatch(m *listenerv3.FilterChainMatch) (*chainMatch, error) {
	cm := &chainMatch{
		port:        m.GetDestinationPort().GetValue(),
		transport:   m.GetTransportProtocol(),
		appProtos:   m.GetApplicationProtocols(),
		sourceType:  m.GetSourceType(),
		sourcePorts: m.GetSourcePorts(),
	}
	var err error
	if cm.prefixes, err = compileCIDRs(m.GetPrefixRanges()); err != nil {
		return nil, fmt.Errorf("prefix_ranges%w", err)
	}
	if cm.directSrc, err = compileCIDRs(m.GetDirectSourcePrefixRanges()); err != nil {
		return nil, fmt.Errorf("direct_source_prefix_ranges%w", err)
	}
	if cm.sources, err = compileCIDRs(m.GetSourcePrefixRanges()); err != nil {
		return nil, fmt.Errorf("source_prefix_ranges%w", err)
	}
	for i, n := range m.GetServerNames() {
		if n == "" || strings.Contains(n[1:], "*") || (n[0] == '*' && !strings.HasPrefix(n, "*.")) {
			return nil, fmt.Errorf("server_names[%d]: %q: only a leading \"*.\" wildcard is allowed", i, n)
		}
		cm.serverNames = append(cm.serverNames, strings.ToLower(n))
	}
	return cm, nil
}

func compileCIDRs(rs []*corev3.CidrRange) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, r := range rs {
		a, err := netip.ParseAddr(r.GetAddressPrefix())
		if err != nil {
			return nil, fmt.Errorf("[%d].address_prefix: %q is not an IP address", i, r.GetAddressPrefix())
		}
		bits := int(r.GetPrefixLen().GetValue()) // unset: 0, as in Envoy
		p, err := a.Prefix(bits)
		if err != nil {
			return nil, fmt.Errorf("[%d].prefix_len: %d is too long for %s", i, bits, a)
		}
		out = append(out, p)
	}
	return out, nil
}

// matchInput is what the chain selection looks at for one connection.
type matchInput struct {
	dst       netip.AddrPort // original destination when present
	src       netip.AddrPort
	local     bool // source is the destination host or loopback
	sni       string
	transport string
	alpn      []string
}

func newMatchInput(ci *core.ConnInfo) matchInput {
	in := matchInput{sni: strings.ToLower(ci.SNI), transport: ci.TransportProtocol, alpn: ci.ALPN}
	in.dst = addrPort(ci.DestinationAddr())
	in.src = addrPort(ci.RemoteAddr)
	local := addrPort(ci.LocalAddr)
	in.local = in.src.Addr().IsLoopback() || (in.src.Addr().IsValid() && in.src.Addr() == local.Addr())
	return in
}

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// Each criterion scores a chain for a connection: -1 rules it out, 0 is a
// chain that does not constrain the criterion, higher is more specific.
// Selection keeps only the best-scoring chains at each step, in Envoy's
// order, so a specific match never falls back to a less specific chain at
// a later step (Envoy's filter chain match tree behaves the same way).
// destination_port, the first step, is a map lookup in chainSelector; the
// destination IP step must stay first in this list (selectChain skips it
// after an exact-address hit).
var criteria = []func(*chainMatch, *matchInput) int{
	func(m *chainMatch, in *matchInput) int { return prefixScore(m.prefixes, in.dst.Addr()) },
	func(m *chainMatch, in *matchInput) int { return serverNameScore(m.serverNames, in.sni) },
	func(m *chainMatch, in *matchInput) int { // transport_protocol
		if m.transport == "" {
			return 0
		}
		if m.transport == in.transport {
			return 1
		}
		return -1
	},
	func(m *chainMatch, in *matchInput) int { // application_protocols
		if len(m.appProtos) == 0 {
			return 0
		}
		for _, p := range in.alpn {
			if slices.Contains(m.appProtos, p) {
				return 1
			}
		}
		return -1
	},
	func(m *chainMatch, in *matchInput) int { return prefixScore(m.directSrc, in.src.Addr()) },
	func(m *chainMatch, in *matchInput) int { // source_type
		switch m.sourceType {
		case listenerv3.FilterChainMatch_SAME_IP_OR_LOOPBACK:
			if in.local {
				return 1
			}
			return -1
		case listenerv3.FilterChainMatch_EXTERNAL:
			if !in.local {
				return 1
			}
			return -1
		}
		return 0
	},
	func(m *chainMatch, in *matchInput) int { return prefixScore(m.sources, in.src.Addr()) },
	func(m *chainMatch, in *matchInput) int { // source_ports
		if len(m.sourcePorts) == 0 {
			return 0
		}
		if slices.Contains(m.sourcePorts, uint32(in.src.Port())) {
			return 1
		}
		return -1
	},
}

// prefixScore is 1 + the longest matching prefix length, so a /0 range
// still beats a chain with no ranges.
func prefixScore(ps []netip.Prefix, a netip.Addr) int {
	if len(ps) == 0 {
		return 0
	}
	best := -1
	for _, p := range ps {
		if p.Contains(a) && p.Bits()+1 > best {
			best = p.Bits() + 1
		}
	}
	return best
}

// serverNameScore ranks an exact name above any wildcard, and a longer
// wildcard suffix above a shorter one.
func serverNameScore(names []string, sni string) int {
	if len(names) == 0 {
		return 0
	}
	best := -1
	for _, n := range names {
		switch {
		case n == sni:
			return 1 << 20
		case strings.HasPrefix(n, "*.") && sni != "" && strings.HasSuffix(sni, n[1:]) && len(sni) > len(n)-1:
			best = max(best, len(n))
		}
	}
	return best
}

// chainSelector picks a filter chain; built once per listener config.
type chainSelector struct {
	chains []*chain
	byPort map[uint32]*portBucket // chains naming a destination port
	noPort *portBucket            // chains without one
	def    *chain
}

// portBucket holds the chains of one destination port. Chains whose
// prefix_ranges include a single address (Istio's per-VIP outbound chains
// use /32) are also indexed by that address: an exact hit is the longest
// possible prefix, so the destination IP step becomes a map lookup.
type portBucket struct {
	all   []int
	hosts map[netip.Addr][]int
}

func newSelector(chains []*chain, def *chain) *chainSelector {
	s := &chainSelector{chains: chains, byPort: map[uint32]*portBucket{}, noPort: &portBucket{}, def: def}
	for i, c := range chains {
		b := s.noPort
		if c.match.port != 0 {
			if b = s.byPort[c.match.port]; b == nil {
				b = &portBucket{}
				s.byPort[c.match.port] = b
			}
		}
		b.all = append(b.all, i)
		for _, p := range c.match.prefixes {
			if p.IsSingleIP() {
				if b.hosts == nil {
					b.hosts = map[netip.Addr][]int{}
				}
				b.hosts[p.Addr()] = append(b.hosts[p.Addr()], i)
			}
		}
	}
	return s
}

// selectChain runs Envoy's filter chain match; nil when nothing matches and
// there is no default chain.
func (s *chainSelector) selectChain(in *matchInput) *chain {
	b, ok := s.byPort[uint32(in.dst.Port())]
	if !ok {
		b = s.noPort
	}
	cands, steps := b.all, criteria
	if hit, ok := b.hosts[in.dst.Addr()]; ok {
		cands, steps = hit, criteria[1:]
	}
	var buf, scores [16]int
	cur := append(buf[:0], cands...)
	for _, crit := range steps {
		if len(cur) == 0 {
			break
		}
		best := -1
		sc := scores[:0]
		for _, i := range cur {
			v := crit(s.chains[i].match, in)
			sc = append(sc, v)
			best = max(best, v)
		}
		next := cur[:0]
		for k, i := range cur {
			if sc[k] == best && best >= 0 {
				next = append(next, i)
			}
		}
		cur = next
	}
	if len(cur) > 0 {
		return s.chains[cur[0]]
	}
	return s.def
}
