package listener

import (
	"fmt"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// MatchFilterChain replays the filter chain match of listener l for one
// connection, as the proxy does when it accepts one, for tools that explain
// a dumped config (skiff why). ci carries what the listener filters would
// have learned: destination (OriginalDst or LocalAddr), source, SNI, ALPN
// and transport protocol. It returns the index into l.FilterChains of the
// chain chosen, len(l.FilterChains) for the default_filter_chain, and -1
// when none matches (the proxy closes the connection).
func MatchFilterChain(l *listenerv3.Listener, ci *core.ConnInfo) (int, error) {
	chains := make([]*chain, 0, len(l.GetFilterChains()))
	index := map[*chain]int{}
	for i, fc := range l.GetFilterChains() {
		m, err := compileMatch(fc.GetFilterChainMatch())
		if err != nil {
			return -1, fmt.Errorf("listener %q: filter_chains[%d].filter_chain_match.%v", l.GetName(), i, err)
		}
		c := &chain{name: fc.GetName(), match: m}
		chains = append(chains, c)
		index[c] = i
	}
	var def *chain
	if dc := l.GetDefaultFilterChain(); dc != nil {
		def = &chain{name: dc.GetName(), match: &chainMatch{}}
		index[def] = len(chains)
	}
	in := newMatchInput(ci)
	c := newSelector(chains, def).selectChain(&in)
	if c == nil {
		return -1, nil
	}
	return index[c], nil
}
