package inspect

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Filter names and config types that make a filter chain HTTP or TCP.
const (
	hcmName      = "envoy.filters.network.http_connection_manager"
	hcmType      = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
	tcpProxyName = "envoy.filters.network.tcp_proxy"
	tcpProxyType = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
	// blackHole is Istio's cluster that drops traffic; istioctl does not
	// count a tcp_proxy to it as TCP.
	blackHole = "BlackHoleCluster"
)

// activeListeners are the serving listeners, static and dynamic; warming
// and draining copies are left out, as istioctl does.
func activeListeners(d *configDump) []*listenerv3.Listener {
	var out []*listenerv3.Listener
	for _, r := range d.listeners {
		if l, ok := r.msg.(*listenerv3.Listener); ok && r.state == "ACTIVE" {
			out = append(out, l)
		}
	}
	return out
}

// listenerAddresses are the listener's address then its additional ones.
func listenerAddresses(l *listenerv3.Listener) []string {
	out := []string{addressString(l.GetAddress(), false)}
	for _, a := range l.GetAdditionalAddresses() {
		out = append(out, addressString(a.GetAddress(), false))
	}
	return out
}

// addressString renders an Envoy address: the IP (with its port when
// withPort), a unix socket path, or an internal listener name.
func addressString(a *corev3.Address, withPort bool) string {
	switch {
	case a.GetSocketAddress() != nil:
		sa := a.GetSocketAddress()
		if !withPort {
			return sa.GetAddress()
		}
		host := sa.GetAddress()
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		return host + ":" + strconv.Itoa(int(sa.GetPortValue()))
	case a.GetPipe() != nil:
		return "unix://" + a.GetPipe().GetPath()
	case a.GetEnvoyInternalAddress() != nil:
		return "envoy://" + a.GetEnvoyInternalAddress().GetServerListenerName()
	}
	return ""
}

// listenerPort is the port of the listener's socket address (0 for others).
func listenerPort(l *listenerv3.Listener) uint32 {
	return l.GetAddress().GetSocketAddress().GetPortValue()
}

// unpackFilter decodes f's config into m when f is the filter called name
// or configured by typeURL; ok is false for any other filter.
func unpackFilter[T proto.Message](f *listenerv3.Filter, name, typeURL string, m T) (T, bool) {
	tc := f.GetTypedConfig()
	if f.GetName() != name && tc.GetTypeUrl() != typeURL {
		return m, false
	}
	if tc == nil {
		return m, true
	}
	if err := anypb.UnmarshalTo(tc, m, proto.UnmarshalOptions{DiscardUnknown: true, Resolver: lenient}); err != nil {
		return m, false
	}
	return m, true
}

// chains are the listener's filter chains, its default chain last.
func chains(l *listenerv3.Listener) []*listenerv3.FilterChain {
	out := slices.Clone(l.GetFilterChains())
	if dc := l.GetDefaultFilterChain(); dc != nil {
		out = append(out, dc)
	}
	return out
}

// listenerType is istioctl's classification: HTTP, TCP, HTTP+TCP or UNKNOWN.
func listenerType(l *listenerv3.Listener) string {
	var nHTTP, nTCP int
	for _, fc := range chains(l) {
		for _, f := range fc.GetFilters() {
			if _, ok := unpackFilter(f, hcmName, hcmType, &hcmv3.HttpConnectionManager{}); ok {
				nHTTP++
			} else if tp, ok := unpackFilter(f, tcpProxyName, tcpProxyType, &tcpv3.TcpProxy{}); ok && tp.GetCluster() != blackHole {
				nTCP++
			}
		}
	}
	switch {
	case nHTTP > 0 && nTCP > 0:
		return "HTTP+TCP"
	case nHTTP > 0:
		return "HTTP"
	case nTCP > 0:
		return "TCP"
	}
	return "UNKNOWN"
}

// ALPN lists Istio sets on filter chains, named as istioctl names them.
var alpnNames = []struct {
	name  string
	alpns []string
}{
	{"App: HTTP TLS", []string{"http/1.0", "http/1.1", "h2c", "istio-http/1.0", "istio-http/1.1", "istio-h2"}},
	{"App: Istio HTTP Plain", []string{"istio", "istio-http/1.0", "istio-http/1.1", "istio-h2"}},
	{"App: TCP TLS", []string{"istio-peer-exchange", "istio"}},
	{"App: HTTP", []string{"http/1.0", "http/1.1", "h2c"}},
}

// describeChainMatch renders a filter chain match as istioctl's MATCH.
func describeChainMatch(m *listenerv3.FilterChainMatch) string {
	var d []string
	if sn := m.GetServerNames(); len(sn) > 0 {
		d = append(d, "SNI: "+strings.Join(sn, ","))
	}
	if tp := m.GetTransportProtocol(); tp != "" {
		d = append(d, "Trans: "+tp)
	}
	if alpn := m.GetApplicationProtocols(); len(alpn) > 0 {
		desc := "App: " + strings.Join(alpn, ",")
		for _, n := range alpnNames {
			if slices.Equal(alpn, n.alpns) {
				desc = n.name
			}
		}
		d = append(d, desc)
	}
	port := ""
	if m.GetDestinationPort() != nil {
		port = ":" + strconv.Itoa(int(m.GetDestinationPort().GetValue()))
	}
	if pr := m.GetPrefixRanges(); len(pr) > 0 {
		cidrs := make([]string, len(pr))
		for i, p := range pr {
			cidrs[i] = fmt.Sprintf("%s/%d", p.GetAddressPrefix(), p.GetPrefixLen().GetValue())
		}
		d = append(d, "Addr: "+strings.Join(cidrs, ",")+port)
	} else if port != "" {
		d = append(d, "Addr: *"+port)
	}
	if len(d) == 0 {
		return "ALL"
	}
	return strings.Join(d, "; ")
}

// describeChainDestination renders where a filter chain sends traffic, as
// istioctl's DESTINATION.
func describeChainDestination(fc *listenerv3.FilterChain) string {
	for _, f := range fc.GetFilters() {
		if h, ok := unpackFilter(f, hcmName, hcmType, &hcmv3.HttpConnectionManager{}); ok {
			if rc := h.GetRouteConfig(); rc != nil {
				return describeInlineRoutes(rc)
			}
			if n := h.GetRds().GetRouteConfigName(); n != "" {
				return "Route: " + n
			}
			return "HTTP"
		}
		if tp, ok := unpackFilter(f, tcpProxyName, tcpProxyType, &tcpv3.TcpProxy{}); ok {
			c := tp.GetCluster()
			if c == blackHole {
				continue
			}
			if wc := tp.GetWeightedClusters().GetClusters(); len(wc) > 0 {
				parts := make([]string, len(wc))
				for i, w := range wc {
					parts[i] = fmt.Sprintf("%s (%d)", w.GetName(), w.GetWeight())
				}
				return "WeightedClusters: " + strings.Join(parts, ", ")
			}
			// Istio's own clusters (PassthroughCluster, ...) stand alone.
			if strings.Contains(c, "Cluster") {
				return c
			}
			return "Cluster: " + c
		}
	}
	return "Non-HTTP/Non-TCP"
}

// describeInlineRoutes renders a route configuration carried in the
// listener: each virtual host's domains (unless "*") and path matches.
func describeInlineRoutes(rc *routev3.RouteConfiguration) string {
	var vhs []string
	for _, vh := range rc.GetVirtualHosts() {
		var ms []string
		for _, r := range vh.GetRoutes() {
			ms = append(ms, describeMatch(r.GetMatch()))
		}
		routes := strings.Join(ms, ", ")
		if d := vh.GetDomains(); !(len(d) == 1 && d[0] == "*") {
			routes = strings.Join(d, "/") + " " + routes
		}
		vhs = append(vhs, routes)
	}
	return "Inline Route: " + strings.Join(vhs, "; ")
}

func printListeners(d *configDump, o configOpts, w io.Writer) error {
	var ls []*listenerv3.Listener
	for _, l := range activeListeners(d) {
		if o.address != "" && !slices.ContainsFunc(listenerAddresses(l), func(a string) bool { return strings.EqualFold(a, o.address) }) {
			continue
		}
		if o.port != 0 && uint(listenerPort(l)) != o.port {
			continue
		}
		if o.typ != "" && !strings.EqualFold(listenerType(l), o.typ) {
			continue
		}
		ls = append(ls, l)
	}
	slices.SortStableFunc(ls, func(a, b *listenerv3.Listener) int {
		return cmp.Or(cmp.Compare(listenerPort(a), listenerPort(b)),
			strings.Compare(addressString(a.GetAddress(), false), addressString(b.GetAddress(), false)),
			strings.Compare(listenerType(a), listenerType(b)))
	})
	if o.output != "short" {
		msgs := make([]proto.Message, len(ls))
		for i, l := range ls {
			msgs[i] = l
		}
		return writeMessages(w, msgs, o.output)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 1, ' ', 0)
	if !o.verbose {
		fmt.Fprintln(tw, "ADDRESSES\tPORT\tTYPE")
		for _, l := range ls {
			fmt.Fprintf(tw, "%s\t%d\t%s\n", strings.Join(listenerAddresses(l), ","), listenerPort(l), listenerType(l))
		}
		return tw.Flush()
	}
	fmt.Fprintln(tw, "ADDRESSES\tPORT\tMATCH\tDESTINATION")
	for _, l := range ls {
		type row struct{ match, dest string }
		var rows []row
		for _, fc := range chains(l) {
			rows = append(rows, row{describeChainMatch(fc.GetFilterChainMatch()), describeChainDestination(fc)})
		}
		// istioctl lists a listener's chains by destination, descending.
		slices.SortStableFunc(rows, func(a, b row) int { return strings.Compare(b.dest, a.dest) })
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", strings.Join(listenerAddresses(l), ","), listenerPort(l), r.match, r.dest)
		}
	}
	return tw.Flush()
}
