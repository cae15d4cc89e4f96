package rbac

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/dataplane/hcm"
	"github.com/skiff-mesh/skiff/dataplane/route"
)

// attrs is what one decision looks at: the connection and, on the HTTP
// filter, the request and its stream. The peer identity is parsed on first
// use only.
type attrs struct {
	conn   *core.ConnInfo
	req    *http.Request // nil on the network filter
	stream *hcm.Stream   // nil on the network filter
	peer   *peerID
	peerOK bool
}

func (a *attrs) peerIdentity() *peerID {
	if !a.peerOK {
		a.peerOK = true
		if a.conn != nil && a.conn.TLS != nil {
			a.peer = peerOf(a.conn.TLS)
		}
	}
	return a.peer
}

// matcher is one compiled Permission or Principal.
type matcher interface {
	match(a *attrs) bool
}

type anyMatcher struct{}

func (anyMatcher) match(*attrs) bool { return true }

type andMatcher []matcher

func (m andMatcher) match(a *attrs) bool {
	for _, x := range m {
		if !x.match(a) {
			return false
		}
	}
	return true
}

type orMatcher []matcher

func (m orMatcher) match(a *attrs) bool {
	for _, x := range m {
		if x.match(a) {
			return true
		}
	}
	return false
}

type notMatcher struct{ m matcher }

func (m notMatcher) match(a *attrs) bool { return !m.m.match(a) }

// compileOptions say where a config is used: the network filter has no
// request, so request matchers are refused there rather than silently
// never matching.
type compileOptions struct {
	network bool
}

func compilePermission(p *rbacv3.Permission, o compileOptions) (matcher, error) {
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		if !r.Any {
			return nil, errors.New("any: must be true when set")
		}
		return anyMatcher{}, nil
	case *rbacv3.Permission_AndRules:
		ms, err := compilePermissions(r.AndRules.GetRules(), o, "and_rules.rules")
		return andMatcher(ms), err
	case *rbacv3.Permission_OrRules:
		ms, err := compilePermissions(r.OrRules.GetRules(), o, "or_rules.rules")
		return orMatcher(ms), err
	case *rbacv3.Permission_NotRule:
		m, err := compilePermission(r.NotRule, o)
		if err != nil {
			return nil, fmt.Errorf("not_rule.%w", err)
		}
		return notMatcher{m}, nil
	case *rbacv3.Permission_Header:
		if o.network {
			return nil, errors.New("header: request headers exist only in the HTTP filter (envoy.filters.http.rbac); remove the rule from the network filter")
		}
		m, err := compileHeader(r.Header)
		if err != nil {
			return nil, fmt.Errorf("header.%w", err)
		}
		return m, nil
	case *rbacv3.Permission_UrlPath:
		if o.network {
			return nil, errors.New("url_path: the URL path exists only in the HTTP filter (envoy.filters.http.rbac); remove the rule from the network filter")
		}
		m, err := compilePath(r.UrlPath)
		if err != nil {
			return nil, fmt.Errorf("url_path.%w", err)
		}
		return m, nil
	case *rbacv3.Permission_DestinationIp:
		pfx, err := compileCIDR(r.DestinationIp)
		if err != nil {
			return nil, fmt.Errorf("destination_ip: %w", err)
		}
		return ipMatcher{src: ipDestination, prefix: pfx}, nil
	case *rbacv3.Permission_DestinationPort:
		if r.DestinationPort > 65535 {
			return nil, fmt.Errorf("destination_port: %d is not a port (0-65535)", r.DestinationPort)
		}
		return portMatcher{lo: int(r.DestinationPort), hi: int(r.DestinationPort) + 1}, nil
	case *rbacv3.Permission_DestinationPortRange:
		lo, hi := r.DestinationPortRange.GetStart(), r.DestinationPortRange.GetEnd()
		if lo < 0 || lo > 65536 || hi < 0 || hi > 65536 {
			return nil, fmt.Errorf("destination_port_range: [%d, %d) is out of the port range [0, 65536)", lo, hi)
		}
		if lo >= hi {
			return nil, fmt.Errorf("destination_port_range: start %d must be less than end %d (end is exclusive)", lo, hi)
		}
		return portMatcher{lo: int(lo), hi: int(hi)}, nil
	case *rbacv3.Permission_RequestedServerName:
		sm, err := route.NewStringMatcher(r.RequestedServerName)
		if err != nil {
			return nil, fmt.Errorf("requested_server_name.%w", err)
		}
		return sniMatcher{sm}, nil
	case *rbacv3.Permission_Metadata:
		m, err := compileMetadata(r.Metadata)
		if err != nil {
			return nil, fmt.Errorf("metadata.%w", err)
		}
		return m, nil
	case *rbacv3.Permission_SourcedMetadata:
		m, err := compileSourcedMetadata(r.SourcedMetadata)
		if err != nil {
			return nil, fmt.Errorf("sourced_metadata.%w", err)
		}
		return m, nil
	case *rbacv3.Permission_UriTemplate:
		if o.network {
			return nil, errors.New("uri_template: the URL path exists only in the HTTP filter (envoy.filters.http.rbac); remove the rule from the network filter")
		}
		m, err := compileURITemplate(r.UriTemplate)
		if err != nil {
			return nil, fmt.Errorf("uri_template.%w", err)
		}
		return m, nil
	case *rbacv3.Permission_Matcher:
		return nil, fmt.Errorf("matcher: RBAC matcher extension %q is not supported by skiff-proxy; express the rule with the built-in permission fields", r.Matcher.GetName())
	case nil:
		return nil, errors.New("rule: one of any, and_rules, or_rules, not_rule, header, url_path, destination_ip, destination_port, destination_port_range, requested_server_name, metadata is required")
	default:
		return nil, fmt.Errorf("rule: %T is not supported by skiff-proxy", r)
	}
}

func compilePermissions(ps []*rbacv3.Permission, o compileOptions, field string) ([]matcher, error) {
	if len(ps) == 0 {
		return nil, fmt.Errorf("%s: at least one rule is required", field)
	}
	out := make([]matcher, 0, len(ps))
	for i, p := range ps {
		m, err := compilePermission(p, o)
		if err != nil {
			return nil, fmt.Errorf("%s[%d].%w", field, i, err)
		}
		out = append(out, m)
	}
	return out, nil
}

func compilePrincipal(p *rbacv3.Principal, o compileOptions) (matcher, error) {
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		if !id.Any {
			return nil, errors.New("any: must be true when set")
		}
		return anyMatcher{}, nil
	case *rbacv3.Principal_AndIds:
		ms, err := compilePrincipals(id.AndIds.GetIds(), o, "and_ids.ids")
		return andMatcher(ms), err
	case *rbacv3.Principal_OrIds:
		ms, err := compilePrincipals(id.OrIds.GetIds(), o, "or_ids.ids")
		return orMatcher(ms), err
	case *rbacv3.Principal_NotId:
		m, err := compilePrincipal(id.NotId, o)
		if err != nil {
			return nil, fmt.Errorf("not_id.%w", err)
		}
		return notMatcher{m}, nil
	case *rbacv3.Principal_Authenticated_:
		am := authMatcher{}
		if pn := id.Authenticated.GetPrincipalName(); pn != nil {
			sm, err := route.NewStringMatcher(pn)
			if err != nil {
				return nil, fmt.Errorf("authenticated.principal_name.%w", err)
			}
			am.name, am.hasName = sm, true
		}
		return am, nil
	case *rbacv3.Principal_SourceIp:
		pfx, err := compileCIDR(id.SourceIp)
		if err != nil {
			return nil, fmt.Errorf("source_ip: %w", err)
		}
		return ipMatcher{src: ipDirectRemote, prefix: pfx}, nil
	case *rbacv3.Principal_DirectRemoteIp:
		pfx, err := compileCIDR(id.DirectRemoteIp)
		if err != nil {
			return nil, fmt.Errorf("direct_remote_ip: %w", err)
		}
		return ipMatcher{src: ipDirectRemote, prefix: pfx}, nil
	case *rbacv3.Principal_RemoteIp:
		pfx, err := compileCIDR(id.RemoteIp)
		if err != nil {
			return nil, fmt.Errorf("remote_ip: %w", err)
		}
		return ipMatcher{src: ipRemote, prefix: pfx}, nil
	case *rbacv3.Principal_Header:
		if o.network {
			return nil, errors.New("header: request headers exist only in the HTTP filter (envoy.filters.http.rbac); remove the rule from the network filter")
		}
		m, err := compileHeader(id.Header)
		if err != nil {
			return nil, fmt.Errorf("header.%w", err)
		}
		return m, nil
	case *rbacv3.Principal_UrlPath:
		if o.network {
			return nil, errors.New("url_path: the URL path exists only in the HTTP filter (envoy.filters.http.rbac); remove the rule from the network filter")
		}
		m, err := compilePath(id.UrlPath)
		if err != nil {
			return nil, fmt.Errorf("url_path.%w", err)
		}
		return m, nil
	case *rbacv3.Principal_Metadata:
		m, err := compileMetadata(id.Metadata)
		if err != nil {
			return nil, fmt.Errorf("metadata.%w", err)
		}
		return m, nil
	case *rbacv3.Principal_SourcedMetadata:
		m, err := compileSourcedMetadata(id.SourcedMetadata)
		if err != nil {
			return nil, fmt.Errorf("sourced_metadata.%w", err)
		}
		return m, nil
	case *rbacv3.Principal_FilterState:
		m, err := compileFilterState(id.FilterState)
		if err != nil {
			return nil, fmt.Errorf("filter_state.%w", err)
		}
		return m, nil
	case *rbacv3.Principal_Custom:
		return nil, fmt.Errorf("custom: principal extension %q is not supported by skiff-proxy; use authenticated.principal_name", id.Custom.GetName())
	case nil:
		return nil, errors.New("identifier: one of any, and_ids, or_ids, not_id, authenticated, direct_remote_ip, remote_ip, header, url_path, metadata, filter_state is required")
	default:
		return nil, fmt.Errorf("identifier: %T is not supported by skiff-proxy", id)
	}
}

func compilePrincipals(ps []*rbacv3.Principal, o compileOptions, field string) ([]matcher, error) {
	if len(ps) == 0 {
		return nil, fmt.Errorf("%s: at least one identifier is required", field)
	}
	out := make([]matcher, 0, len(ps))
	for i, p := range ps {
		m, err := compilePrincipal(p, o)
		if err != nil {
			return nil, fmt.Errorf("%s[%d].%w", field, i, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// headerMatcher is an RBAC header rule. Pseudo-headers read the request
// fields they stand for; several values of one header are joined with ","
// as Envoy does before matching.
type headerMatcher struct {
	key          string // canonical header key, or the pseudo-header
	pseudo       bool
	present      bool // for present matching: the presence wanted
	isPresent    bool // the rule is a present match
	str          route.StringMatcher
	isRange      bool
	start, end   int64
	invert       bool
	missingEmpty bool
}

func compileHeader(h *routev3.HeaderMatcher) (*headerMatcher, error) {
	hm := &headerMatcher{invert: h.GetInvertMatch(), missingEmpty: h.GetTreatMissingHeaderAsEmpty()}
	name := strings.ToLower(h.GetName())
	switch {
	case name == "":
		return nil, errors.New("name: is required")
	case name == "host" || name == ":authority":
		hm.key, hm.pseudo = ":authority", true
	case name[0] == ':':
		switch name {
		case ":method", ":path", ":scheme":
		default:
			return nil, fmt.Errorf("name: pseudo-header %q is not one a request has (:authority, :method, :path, :scheme)", name)
		}
		hm.key, hm.pseudo = name, true
	default:
		hm.key = http.CanonicalHeaderKey(name)
	}
	var sm *matcherv3.StringMatcher
	field := ""
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case nil:
		hm.isPresent, hm.present = true, true
	case *routev3.HeaderMatcher_PresentMatch:
		hm.isPresent, hm.present = true, s.PresentMatch
	case *routev3.HeaderMatcher_ExactMatch:
		sm, field = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s.ExactMatch}}, "exact_match"
	case *routev3.HeaderMatcher_PrefixMatch:
		sm, field = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s.PrefixMatch}}, "prefix_match"
	case *routev3.HeaderMatcher_SuffixMatch:
		sm, field = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: s.SuffixMatch}}, "suffix_match"
	case *routev3.HeaderMatcher_ContainsMatch:
		sm, field = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: s.ContainsMatch}}, "contains_match"
	case *routev3.HeaderMatcher_SafeRegexMatch:
		sm, field = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: s.SafeRegexMatch}}, "safe_regex_match"
	case *routev3.HeaderMatcher_StringMatch:
		sm, field = s.StringMatch, "string_match"
	case *routev3.HeaderMatcher_RangeMatch:
		hm.isRange, hm.start, hm.end = true, s.RangeMatch.GetStart(), s.RangeMatch.GetEnd()
		if hm.start >= hm.end {
			return nil, fmt.Errorf("range_match: start %d must be less than end %d", hm.start, hm.end)
		}
	default:
		return nil, fmt.Errorf("header_match_specifier: %T is not supported by skiff-proxy", s)
	}
	if sm != nil {
		var err error
		if hm.str, err = route.NewStringMatcher(sm); err != nil {
			// The deprecated single-pattern fields carry the pattern
			// themselves; say which field, not the synthesized one.
			if field != "string_match" {
				_, msg, _ := strings.Cut(err.Error(), ": ")
				return nil, fmt.Errorf("%s: %s", field, msg)
			}
			return nil, fmt.Errorf("string_match.%w", err)
		}
	}
	return hm, nil
}

func (m *headerMatcher) value(a *attrs) (string, bool) {
	r := a.req
	if m.pseudo {
		switch m.key {
		case ":authority":
			return r.Host, true
		case ":method":
			return r.Method, true
		case ":path":
			return requestPath(r), true
		case ":scheme":
			if a.conn != nil && a.conn.TLS != nil {
				return "https", true
			}
			return "http", true
		}
		return "", false
	}
	vs := r.Header[m.key]
	switch len(vs) {
	case 0:
		return "", false
	case 1:
		return vs[0], true
	}
	return strings.Join(vs, ","), true
}

// match follows Envoy: a value rule on a missing header fails even when
// inverted (unless treat_missing_header_as_empty); a present rule compares
// presence and then honours invert_match.
func (m *headerMatcher) match(a *attrs) bool {
	if a.req == nil {
		return false
	}
	v, present := m.value(a)
	var ok bool
	switch {
	case m.isPresent:
		ok = present == m.present
	case !present && !m.missingEmpty:
		return false
	case m.isRange:
		n, err := strconv.ParseInt(v, 10, 64)
		ok = err == nil && n >= m.start && n < m.end
	default:
		ok = m.str.Match(v)
	}
	return ok != m.invert
}

// requestPath is :path as Envoy sees it: the (normalized) path with its
// query.
func requestPath(r *http.Request) string {
	if r.URL == nil {
		return r.RequestURI
	}
	if r.URL.RawQuery == "" && r.URL.RawPath == "" {
		return r.URL.Path
	}
	return r.URL.RequestURI()
}

// pathMatcher is url_path: the path without query and fragment.
type pathMatcher struct{ sm route.StringMatcher }

func compilePath(p *matcherv3.PathMatcher) (pathMatcher, error) {
	sp := p.GetPath()
	if sp == nil {
		return pathMatcher{}, errors.New("path: is required")
	}
	sm, err := route.NewStringMatcher(sp)
	if err != nil {
		return pathMatcher{}, fmt.Errorf("path.%w", err)
	}
	return pathMatcher{sm}, nil
}

func (m pathMatcher) match(a *attrs) bool {
	if a.req == nil {
		return false
	}
	return m.sm.Match(urlPath(a.req))
}

// urlPath is the request's path as sent (escaped), without the query.
func urlPath(r *http.Request) string {
	if r.URL == nil {
		p, _, _ := strings.Cut(r.RequestURI, "?")
		return p
	}
	if r.URL.RawPath == "" {
		return r.URL.Path
	}
	return r.URL.EscapedPath()
}

type ipSource uint8

const (
	ipDestination  ipSource = iota + 1 // the local (original destination) address
	ipDirectRemote                     // the physical peer
	ipRemote                           // the client as x-forwarded-for tells it
)

type ipMatcher struct {
	src    ipSource
	prefix netip.Prefix
}

func (m ipMatcher) match(a *attrs) bool {
	var ip netip.Addr
	switch m.src {
	case ipDestination:
		ip = addrIP(a.conn.DestinationAddr())
	case ipDirectRemote:
		ip = addrIP(a.conn.RemoteAddr)
	case ipRemote:
		ip = remoteIP(a)
	}
	return ip.IsValid() && m.prefix.Contains(ip)
}

// remoteIP is Envoy's downstream remote address on an HCM with no trusted
// hops: the last x-forwarded-for entry when there is one (the HCM appends
// the peer itself when use_remote_address is set), else the peer.
func remoteIP(a *attrs) netip.Addr {
	if a.req != nil {
		if vs := a.req.Header["X-Forwarded-For"]; len(vs) > 0 {
			last := vs[len(vs)-1]
			if i := strings.LastIndexByte(last, ','); i >= 0 {
				last = last[i+1:]
			}
			if ip, err := netip.ParseAddr(strings.TrimSpace(last)); err == nil {
				return ip.Unmap()
			}
		}
	}
	return addrIP(a.conn.RemoteAddr)
}

func addrIP(addr net.Addr) netip.Addr {
	switch v := addr.(type) {
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(v.IP)
		return ip.Unmap()
	case nil:
		return netip.Addr{}
	default:
		ap, err := netip.ParseAddrPort(v.String())
		if err != nil {
			return netip.Addr{}
		}
		return ap.Addr().Unmap()
	}
}

func addrPort(addr net.Addr) int {
	switch v := addr.(type) {
	case *net.TCPAddr:
		return v.Port
	case nil:
		return -1
	default:
		ap, err := netip.ParseAddrPort(v.String())
		if err != nil {
			return -1
		}
		return int(ap.Port())
	}
}

func compileCIDR(c *corev3.CidrRange) (netip.Prefix, error) {
	if c == nil {
		return netip.Prefix{}, errors.New("is required")
	}
	ip, err := netip.ParseAddr(c.GetAddressPrefix())
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("address_prefix: %q is not an IP address", c.GetAddressPrefix())
	}
	ip = ip.Unmap()
	bits := int(c.GetPrefixLen().GetValue())
	if bits > ip.BitLen() {
		return netip.Prefix{}, fmt.Errorf("prefix_len: %d is longer than the %d bits of %s", bits, ip.BitLen(), ip)
	}
	return netip.PrefixFrom(ip, bits).Masked(), nil
}

// portMatcher is destination_port (hi = lo+1) or destination_port_range.
type portMatcher struct{ lo, hi int }

func (m portMatcher) match(a *attrs) bool {
	p := addrPort(a.conn.DestinationAddr())
	return p >= m.lo && p < m.hi
}

// sniMatcher is requested_server_name: the SNI the listener saw (set by
// tls_inspector), as Envoy's connection.requestedServerName().
type sniMatcher struct{ sm route.StringMatcher }

func (m sniMatcher) match(a *attrs) bool { return m.sm.Match(a.conn.SNI) }

// authMatcher is authenticated: a TLS connection whose peer certificate's
// URI SANs, DNS SANs or subject (in that order) match principal_name.
type authMatcher struct {
	name    route.StringMatcher
	hasName bool
}

func (m authMatcher) match(a *attrs) bool {
	if a.conn == nil || a.conn.TLS == nil {
		return false
	}
	if !m.hasName {
		return true
	}
	p := a.peerIdentity()
	if p == nil {
		return m.name.Match("")
	}
	for _, u := range p.uris {
		if m.name.Match(u) {
			return true
		}
	}
	for _, d := range p.dns {
		if m.name.Match(d) {
			return true
		}
	}
	return m.name.Match(p.subject)
}

// peerPrincipalKey is the filter state Istio's waypoints match peer
// identities with; in a sidecar it is the mTLS peer's URI SAN.
const peerPrincipalKey = "io.istio.peer_principal"

type filterStateMatcher struct{ sm route.StringMatcher }

func compileFilterState(f *matcherv3.FilterStateMatcher) (filterStateMatcher, error) {
	if f.GetKey() != peerPrincipalKey {
		return filterStateMatcher{}, fmt.Errorf("key: filter state %q is not provided by skiff-proxy (only %q, the mTLS peer identity)", f.GetKey(), peerPrincipalKey)
	}
	sp := f.GetStringMatch()
	if sp == nil {
		return filterStateMatcher{}, errors.New("matcher: only string_match is supported for " + peerPrincipalKey)
	}
	sm, err := route.NewStringMatcher(sp)
	if err != nil {
		return filterStateMatcher{}, fmt.Errorf("string_match.%w", err)
	}
	return filterStateMatcher{sm}, nil
}

func (m filterStateMatcher) match(a *attrs) bool {
	p := a.peerIdentity()
	if p == nil {
		return false
	}
	for _, u := range p.uris {
		if m.sm.Match(u) {
			return true
		}
	}
	return false
}
