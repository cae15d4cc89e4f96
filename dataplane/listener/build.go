package listener

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/dataplane/tlsctx"
)

// Listener filter names and type URLs Skiff implements.
const (
	originalDstName    = "envoy.filters.listener.original_dst"
	tlsInspectorName   = "envoy.filters.listener.tls_inspector"
	httpInspectorName  = "envoy.filters.listener.http_inspector"
	originalDstType    = "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
	tlsInspectorType   = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
	httpInspectorType  = "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
	downstreamTLSType  = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
	rawBufferType      = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
	tlsTransportName   = "envoy.transport_sockets.tls"
	rawTransportName   = "envoy.transport_sockets.raw_buffer"
	defaultFiltersWait = 15 * time.Second
)

type filterKind int

const (
	filterOriginalDst filterKind = iota + 1
	filterTLSInspector
	filterHTTPInspector
)

// listenerFilter is one compiled listener filter.
type listenerFilter struct {
	kind     filterKind
	disabled *predicate // filter_disabled; nil: always runs
}

// chain is a compiled filter chain.
type chain struct {
	name  string
	match *chainMatch
	tls   *tls.Config // nil: plaintext
	// handshakeTimeout is transport_socket_connect_timeout; 0: none (the
	// drain force-close still ends a stalled handshake).
	handshakeTimeout time.Duration
	handler          core.ConnHandler
}

// compiled is one immutable version of a listener's config.
type compiled struct {
	cfg            *listenerv3.Listener
	addrs          []netip.AddrPort // address then additional_addresses
	bind           bool
	useOriginalDst bool
	filters        []listenerFilter
	filtersTimeout time.Duration // 0: none
	continueOnTO   bool
	selector       *chainSelector
	handlers       []core.ConnHandler // every chain's, for drain and close
}

func (m *Manager) compile(l *listenerv3.Listener) (*compiled, error) {
	// Keep a private copy: change detection compares against it, and the
	// caller may reuse its message.
	l = proto.Clone(l).(*listenerv3.Listener)
	name := l.GetName()
	if name == "" {
		return nil, errors.New("listener: name: empty")
	}
	errf := func(format string, a ...any) error {
		return fmt.Errorf("listener %q: "+format, append([]any{name}, a...)...)
	}
	if l.GetApiListener() != nil || l.GetInternalListener() != nil {
		return nil, errf("api_listener / internal_listener: not supported by skiff-proxy")
	}
	if l.GetFilterChainMatcher() != nil {
		return nil, errf("filter_chain_matcher: not supported; use filter_chains[].filter_chain_match")
	}
	c := &compiled{
		cfg:            l,
		bind:           l.GetBindToPort() == nil || l.GetBindToPort().GetValue(),
		useOriginalDst: l.GetUseOriginalDst().GetValue(),
		filtersTimeout: defaultFiltersWait,
		continueOnTO:   l.GetContinueOnListenerFiltersTimeout(),
	}
	a, err := socketAddr(l.GetAddress())
	if err != nil {
		return nil, errf("address.%v", err)
	}
	c.addrs = append(c.addrs, a)
	for i, aa := range l.GetAdditionalAddresses() {
		a, err := socketAddr(aa.GetAddress())
		if err != nil {
			return nil, errf("additional_addresses[%d].address.%v", i, err)
		}
		c.addrs = append(c.addrs, a)
	}
	if d := l.GetListenerFiltersTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return nil, errf("listener_filters_timeout: invalid duration")
		}
		c.filtersTimeout = d.AsDuration()
	}
	for i, lf := range l.GetListenerFilters() {
		f, err := compileListenerFilter(lf)
		if err != nil {
			return nil, errf("listener_filters[%d]: %v", i, err)
		}
		c.filters = append(c.filters, f)
	}
	var chains []*chain
	seen := map[string]int{}
	closeAll := func() {
		for _, h := range c.handlers {
			if cl, ok := h.(io.Closer); ok {
				cl.Close()
			}
		}
	}
	for i, fc := range l.GetFilterChains() {
		key, _ := proto.MarshalOptions{Deterministic: true}.Marshal(fc.GetFilterChainMatch())
		if j, dup := seen[string(key)]; dup {
			closeAll()
			return nil, errf("filter_chains[%d].filter_chain_match: same matching rules as filter_chains[%d]; Envoy requires them to differ", i, j)
		}
		seen[string(key)] = i
		ch, err := m.compileChain(l, fc)
		if err != nil {
			closeAll()
			return nil, errf("filter_chains[%d] (%q).%v", i, fc.GetName(), err)
		}
		chains = append(chains, ch)
		c.handlers = append(c.handlers, ch.handler)
	}
	var def *chain
	if fc := l.GetDefaultFilterChain(); fc != nil {
		if def, err = m.compileChain(l, fc); err != nil {
			closeAll()
			return nil, errf("default_filter_chain.%v", err)
		}
		c.handlers = append(c.handlers, def.handler)
	}
	if len(chains) == 0 && def == nil {
		return nil, errf("filter_chains: at least one filter chain or a default_filter_chain is required")
	}
	c.selector = newSelector(chains, def)
	return c, nil
}

func (m *Manager) compileChain(l *listenerv3.Listener, fc *listenerv3.FilterChain) (*chain, error) {
	ch := &chain{name: fc.GetName()}
	var err error
	if ch.match, err = compileMatch(fc.GetFilterChainMatch()); err != nil {
		return nil, fmt.Errorf("filter_chain_match.%v", err)
	}
	if ts := fc.GetTransportSocket(); ts != nil {
		typeURL := ts.GetTypedConfig().GetTypeUrl()
		switch {
		case typeURL == downstreamTLSType || (typeURL == "" && ts.GetName() == tlsTransportName):
			dtc := &tlsv3.DownstreamTlsContext{}
			if ts.GetTypedConfig() != nil {
				if err := ts.GetTypedConfig().UnmarshalTo(dtc); err != nil {
					return nil, fmt.Errorf("transport_socket.typed_config: %v", err)
				}
			}
			if ch.tls, err = tlsctx.ServerConfig(dtc, m.o.Secrets); err != nil {
				return nil, fmt.Errorf("transport_socket.typed_config.%v", err)
			}
			if d := fc.GetTransportSocketConnectTimeout(); d != nil {
				if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
					return nil, errors.New("transport_socket_connect_timeout: invalid duration")
				}
				ch.handshakeTimeout = d.AsDuration()
			}
		case typeURL == rawBufferType || (typeURL == "" && ts.GetName() == rawTransportName):
		default:
			return nil, fmt.Errorf("transport_socket: %q (%s) is not supported; use envoy.transport_sockets.tls or raw_buffer", ts.GetName(), typeURL)
		}
	}
	if m.o.Factory == nil {
		return nil, errors.New("filters: no network filter factory configured")
	}
	if ch.handler, err = m.o.Factory.NetworkFilters(l, fc); err != nil {
		return nil, fmt.Errorf("filters: %v", err)
	}
	if ch.handler == nil {
		return nil, errors.New("filters: the chain has no terminal network filter")
	}
	return ch, nil
}

func socketAddr(a *corev3.Address) (netip.AddrPort, error) {
	sa := a.GetSocketAddress()
	if sa == nil {
		return netip.AddrPort{}, errors.New("socket_address: required (pipe and internal addresses are not supported)")
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return netip.AddrPort{}, fmt.Errorf("socket_address.protocol: %s is not supported; only TCP", sa.GetProtocol())
	}
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("socket_address.address: %q is not an IP address", sa.GetAddress())
	}
	if sa.GetNamedPort() != "" {
		return netip.AddrPort{}, errors.New("socket_address.named_port: not supported; use port_value")
	}
	if sa.GetPortValue() > 65535 {
		return netip.AddrPort{}, fmt.Errorf("socket_address.port_value: %d is out of range", sa.GetPortValue())
	}
	return netip.AddrPortFrom(ip, uint16(sa.GetPortValue())), nil
}

func compileListenerFilter(lf *listenerv3.ListenerFilter) (listenerFilter, error) {
	var f listenerFilter
	key := lf.GetTypedConfig().GetTypeUrl()
	if key == "" {
		key = lf.GetName()
	}
	switch key {
	case originalDstType, originalDstName:
		f.kind = filterOriginalDst
	case tlsInspectorType, tlsInspectorName:
		f.kind = filterTLSInspector
	case httpInspectorType, httpInspectorName:
		f.kind = filterHTTPInspector
	default:
		return f, fmt.Errorf("%q (%s): not supported; skiff-proxy implements original_dst, tls_inspector and http_inspector", lf.GetName(), lf.GetTypedConfig().GetTypeUrl())
	}
	if fd := lf.GetFilterDisabled(); fd != nil {
		p, err := compilePredicate(fd)
		if err != nil {
			return f, fmt.Errorf("filter_disabled.%v", err)
		}
		f.disabled = p
	}
	return f, nil
}

// predicate is a compiled ListenerFilterChainMatchPredicate.
type predicate struct {
	any        bool
	not        *predicate
	and, or    []*predicate
	start, end int32 // destination_port_range [start, end); end 0: unused
}

func compilePredicate(p *listenerv3.ListenerFilterChainMatchPredicate) (*predicate, error) {
	out := &predicate{}
	switch r := p.GetRule().(type) {
	case *listenerv3.ListenerFilterChainMatchPredicate_AnyMatch:
		out.any = r.AnyMatch
	case *listenerv3.ListenerFilterChainMatchPredicate_NotMatch:
		n, err := compilePredicate(r.NotMatch)
		if err != nil {
			return nil, fmt.Errorf("not_match.%v", err)
		}
		out.not = n
	case *listenerv3.ListenerFilterChainMatchPredicate_AndMatch, *listenerv3.ListenerFilterChainMatchPredicate_OrMatch:
		rules, field := p.GetAndMatch().GetRules(), "and_match"
		if p.GetOrMatch() != nil {
			rules, field = p.GetOrMatch().GetRules(), "or_match"
		}
		for i, sub := range rules {
			c, err := compilePredicate(sub)
			if err != nil {
				return nil, fmt.Errorf("%s.rules[%d].%v", field, i, err)
			}
			if field == "and_match" {
				out.and = append(out.and, c)
			} else {
				out.or = append(out.or, c)
			}
		}
		if field == "and_match" && out.and == nil {
			out.and = []*predicate{}
		}
	case *listenerv3.ListenerFilterChainMatchPredicate_DestinationPortRange:
		out.start, out.end = r.DestinationPortRange.GetStart(), r.DestinationPortRange.GetEnd()
		if out.end <= out.start {
			return nil, fmt.Errorf("destination_port_range: end %d must be above start %d", out.end, out.start)
		}
	default:
		return nil, errors.New("rule: required")
	}
	return out, nil
}

func (p *predicate) matches(dstPort int) bool {
	switch {
	case p.any:
		return true
	case p.not != nil:
		return !p.not.matches(dstPort)
	case p.and != nil:
		for _, s := range p.and {
			if !s.matches(dstPort) {
				return false
			}
		}
		return true
	case p.or != nil:
		for _, s := range p.or {
			if s.matches(dstPort) {
				return true
			}
		}
		return false
	case p.end > 0:
		return int32(dstPort) >= p.start && int32(dstPort) < p.end
	}
	return false
}

// statName is Envoy's listener stat scope: stat_prefix, else the address
// as "0.0.0.0_15001".
func statName(l *listenerv3.Listener, a netip.AddrPort) string {
	if l.GetStatPrefix() != "" {
		return l.GetStatPrefix()
	}
	return a.Addr().String() + "_" + strconv.Itoa(int(a.Port()))
}

// tcpAddr converts for net APIs.
func tcpAddr(a netip.AddrPort) *net.TCPAddr { return net.TCPAddrFromAddrPort(a) }
