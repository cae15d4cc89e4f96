package authz

import (
	"fmt"
	"net/netip"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The string forms of Istio's AuthorizationPolicy values: "*" is presence
// (a regex .+, since Envoy refuses an empty prefix), "*x" a suffix, "x*" a
// prefix, anything else exact.

func exactMatch(v string, ignoreCase bool) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{IgnoreCase: ignoreCase, MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}}
}

func prefixMatch(v string, ignoreCase bool) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{IgnoreCase: ignoreCase, MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: v}}
}

func suffixMatch(v string, ignoreCase bool) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{IgnoreCase: ignoreCase, MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: v}}
}

func regexMatch(re string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}}
}

var matchAny = regexMatch(".+")

// stringMatch is v as a string matcher, with prefix (spiffe://) put in
// front of the non-wildcard part.
func stringMatch(v, prefix string) *matcherv3.StringMatcher {
	switch {
	case v == "*":
		return regexMatch(".+")
	case strings.HasPrefix(v, "*"):
		if prefix == "" {
			return suffixMatch(v[1:], false)
		}
		return regexMatch(prefix + ".*" + v[1:])
	case strings.HasSuffix(v, "*"):
		return prefixMatch(prefix+v[:len(v)-1], false)
	default:
		return exactMatch(prefix+v, false)
	}
}

// headerMatch matches a request header; "*" is presence.
func headerMatch(name, v string, ignoreCase bool) *routev3.HeaderMatcher {
	h := &routev3.HeaderMatcher{Name: name}
	switch {
	case v == "*":
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
	case strings.HasPrefix(v, "*"):
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: suffixMatch(v[1:], ignoreCase)}
	case strings.HasSuffix(v, "*"):
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: prefixMatch(v[:len(v)-1], ignoreCase)}
	default:
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: exactMatch(v, ignoreCase)}
	}
	return h
}

// cidr reads an address or CIDR as Istio does: a bare address is /32 or
// /128, a prefix keeps its address as written.
func cidr(v string) (*corev3.CidrRange, error) {
	var p netip.Prefix
	var err error
	if strings.Contains(v, "/") {
		p, err = netip.ParsePrefix(v)
	} else {
		var a netip.Addr
		a, err = netip.ParseAddr(v)
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if err != nil || v == "" {
		return nil, fmt.Errorf("%q is not an IP address or CIDR range (e.g. 10.1.2.3 or 10.1.0.0/16)", v)
	}
	return &corev3.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}, nil
}

func port(v string) (uint32, error) {
	var n uint64
	if v == "" {
		return 0, fmt.Errorf("%q is not a port number (0-65535)", v)
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not a port number (0-65535)", v)
		}
		n = n*10 + uint64(c-'0')
		if n > 65535 {
			return 0, fmt.Errorf("%q is not a port number (0-65535)", v)
		}
	}
	return uint32(n), nil
}

// pathTemplate reports whether an AuthorizationPolicy path uses Istio's
// {*} or {**} operators, which become Envoy uri_template matchers.
func pathTemplate(p string) bool {
	return strings.Contains(p, "{*}") || strings.Contains(p, "{**}")
}

var templateReplacer = strings.NewReplacer("{**}", "**", "{*}", "*")

func permAny() *rbacv3.Permission { return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}} }
func permAnd(ps []*rbacv3.Permission) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: ps}}}
}
func permOr(ps []*rbacv3.Permission) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: ps}}}
}
func permNot(p *rbacv3.Permission) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: p}}
}

func prinAny() *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
}
func prinAnd(ps []*rbacv3.Principal) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ps}}}
}
func prinOr(ps []*rbacv3.Principal) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ps}}}
}
func prinNot(p *rbacv3.Principal) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: p}}
}
func prinAuthenticated(m *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: m}}}
}
func prinMetadata(m *matcherv3.MetadataMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: m}}
}

// jwtPayload is where jwt_authn puts verified claims (Istio sets
// payload_in_metadata to it) and where RBAC rules on request.auth.* look.
const jwtPayload = "payload"

func metadataPath(filter string, keys []string, v *matcherv3.ValueMatcher) *matcherv3.MetadataMatcher {
	m := &matcherv3.MetadataMatcher{Filter: filter, Value: v}
	for _, k := range keys {
		m.Path = append(m.Path, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: k}})
	}
	return m
}

func valueString(m *matcherv3.StringMatcher) *matcherv3.ValueMatcher {
	return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: m}}
}

// valueOr is one matcher, or an or_match of several.
func valueOr(vs []*matcherv3.ValueMatcher) *matcherv3.ValueMatcher {
	if len(vs) == 1 {
		return vs[0]
	}
	return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{ValueMatchers: vs}}}
}

func stringsOr(values []string) *matcherv3.ValueMatcher {
	var vs []*matcherv3.ValueMatcher
	for _, v := range values {
		vs = append(vs, valueString(stringMatch(v, "")))
	}
	return valueOr(vs)
}

// claimMatcher matches a JWT claim whether it is a list holding the value
// or the value itself, as Istio matches request.auth.claims.
func claimMatcher(claims []string, v *matcherv3.ValueMatcher) *matcherv3.MetadataMatcher {
	list := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{
		MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: v}}}}
	or := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{
		ValueMatchers: []*matcherv3.ValueMatcher{list, v}}}}
	return metadataPath(JWTAuthnFilter, append([]string{jwtPayload}, claims...), or)
}

// claimNames reads [a][b]… into its names.
func claimNames(s string) ([]string, error) {
	var out []string
	for s != "" {
		if s[0] != '[' {
			return nil, fmt.Errorf("expecting format [<NAME>] or [<NAME>][<NESTED>]…, found %q", s)
		}
		end := strings.IndexByte(s, ']')
		if end < 2 {
			return nil, fmt.Errorf("expecting format [<NAME>] or [<NAME>][<NESTED>]…, found %q", s)
		}
		out = append(out, s[1:end])
		s = s[end+1:]
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("expecting format [<NAME>], found nothing")
	}
	return out, nil
}
