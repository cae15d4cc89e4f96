package route

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/skiff-mesh/skiff/dataplane/core"
)

// Choose picks a weighted cluster with probability weight/total from a
// uniformly random rnd. It returns nil when the route names a cluster
// directly (Cluster or ClusterHeader).
func (a *Action) Choose(rnd uint64) *WeightedCluster {
	if len(a.Weighted) == 0 {
		return nil
	}
	x := rnd % a.totalWeight
	for i := range a.Weighted {
		w := uint64(a.Weighted[i].Weight)
		if x < w {
			return &a.Weighted[i]
		}
		x -= w
	}
	return &a.Weighted[len(a.Weighted)-1]
}

// ClusterName resolves the upstream cluster for one request: the chosen
// weighted cluster, the cluster header's value, or the fixed cluster. ""
// means a cluster header was absent (Envoy answers 503 with flag NC).
func (a *Action) ClusterName(r *http.Request, wc *WeightedCluster) string {
	switch {
	case wc != nil && wc.Name != "":
		return wc.Name
	case wc != nil:
		return r.Header.Get(wc.ClusterHeader)
	case a.ClusterHeader != "":
		return r.Header.Get(a.ClusterHeader)
	}
	return a.Cluster
}

// RewritePath applies prefix_rewrite (replacing the part of the path the
// route matched) or regex_rewrite to r.URL, recording the original path and
// query in x-envoy-original-path (overwriting any value the client sent).
// The query string is never rewritten.
func (a *Action) RewritePath(r *http.Request, matched *Entry) {
	if a.PrefixRewrite == "" && a.RegexRewrite == nil {
		return
	}
	old := r.URL.EscapedPath()
	var p string
	switch {
	case a.RegexRewrite != nil:
		p = a.RegexRewrite.ReplaceAllString(old, a.RegexSubstitution)
	case matched == nil || matched.wholePath:
		p = a.PrefixRewrite
	default:
		n := min(len(matched.prefix), len(old))
		p = a.PrefixRewrite + old[n:]
	}
	if p == old {
		return
	}
	r.Header.Set("X-Envoy-Original-Path", r.URL.RequestURI())
	setEscapedPath(r.URL, p)
}

func setEscapedPath(u *url.URL, p string) {
	dec, err := url.PathUnescape(p)
	if err != nil {
		u.Path, u.RawPath = p, ""
		return
	}
	u.Path = dec
	if u.EscapedPath() != p {
		u.RawPath = p
	} else {
		u.RawPath = ""
	}
}

// HostRewrite returns the authority to send upstream when the route (or the
// chosen weighted cluster) rewrites it with a literal, a header or a path
// regex. auto_host_rewrite is left to the caller, which knows the host.
func (a *Action) HostRewrite(r *http.Request, wc *WeightedCluster) (string, bool) {
	switch {
	case wc != nil && wc.HostRewriteLiteral != "":
		return wc.HostRewriteLiteral, true
	case a.HostRewriteLiteral != "":
		return a.HostRewriteLiteral, true
	case a.HostRewriteHeader != "":
		v := r.Header.Get(a.HostRewriteHeader)
		return v, v != ""
	case a.HostRewritePathRegex != nil:
		return a.HostRewritePathRegex.ReplaceAllString(r.URL.EscapedPath(), a.HostRewritePathSubstitution), true
	}
	return "", false
}

// Mirror is one request_mirror_policies entry: a copy of the request goes
// to Cluster (fire and forget) for a fraction of requests.
type Mirror struct {
	Cluster       string
	ClusterHeader string // canonical key; the mirror cluster comes from this request header
	// Numerator / Denominator is the sampled fraction; Denominator 0
	// means every request.
	Numerator, Denominator uint32
	// TraceSampled, when set, overrides the trace decision for the copy.
	TraceSampled *bool
	// DisableShadowHostSuffix keeps the Host as is instead of appending
	// "-shadow".
	DisableShadowHostSuffix bool
	HostRewriteLiteral      string
}

// Sampled reports whether this request is mirrored, from a uniformly
// random rnd.
func (m *Mirror) Sampled(rnd uint64) bool {
	if m.Denominator == 0 {
		return true
	}
	return rnd%uint64(m.Denominator) < uint64(m.Numerator)
}

func compileMirrors(ps []*routev3.RouteAction_RequestMirrorPolicy) ([]Mirror, error) {
	var out []Mirror
	for i, p := range ps {
		m := Mirror{Cluster: p.GetCluster(), DisableShadowHostSuffix: p.GetDisableShadowHostSuffixAppend(), HostRewriteLiteral: p.GetHostRewriteLiteral()}
		if p.GetClusterHeader() != "" {
			m.ClusterHeader = http.CanonicalHeaderKey(p.GetClusterHeader())
		}
		if (m.Cluster == "") == (m.ClusterHeader == "") {
			return nil, fmt.Errorf("request_mirror_policies[%d]: exactly one of cluster and cluster_header is required", i)
		}
		if rf := p.GetRuntimeFraction(); rf != nil {
			m.Numerator, m.Denominator = uint32(scaleFraction(rf.GetDefaultValue())), fracScale
		}
		if p.GetTraceSampled() != nil {
			v := p.GetTraceSampled().GetValue()
			m.TraceSampled = &v
		}
		out = append(out, m)
	}
	return out, nil
}

type hashKind uint8

const (
	hashHeader hashKind = iota + 1
	hashCookie
	hashSourceIP
	hashQuery
)

// HashPolicy is one hash_policy entry of a route.
type HashPolicy struct {
	kind     hashKind
	name     string // canonical header key, cookie or query parameter name
	rewrite  *regexp.Regexp
	sub      string
	Terminal bool
}

func compileHashPolicy(hp *routev3.RouteAction_HashPolicy) (HashPolicy, error) {
	p := HashPolicy{Terminal: hp.GetTerminal()}
	switch s := hp.GetPolicySpecifier().(type) {
	case *routev3.RouteAction_HashPolicy_Header_:
		if s.Header.GetHeaderName() == "" {
			return p, errors.New("header.header_name: is required")
		}
		p.kind, p.name = hashHeader, http.CanonicalHeaderKey(s.Header.GetHeaderName())
		if strings.HasPrefix(p.name, ":") {
			p.name = strings.ToLower(p.name)
		}
		if rr := s.Header.GetRegexRewrite(); rr != nil {
			re, sub, err := compileRewrite(rr)
			if err != nil {
				return p, fmt.Errorf("header.regex_rewrite.%w", err)
			}
			p.rewrite, p.sub = re, sub
		}
	case *routev3.RouteAction_HashPolicy_Cookie_:
		if s.Cookie.GetName() == "" {
			return p, errors.New("cookie.name: is required")
		}
		if s.Cookie.GetTtl() != nil {
			return p, fmt.Errorf("cookie.ttl: generated cookies (ttl set, cookie %q) are not supported; hash on an existing cookie", s.Cookie.GetName())
		}
		p.kind, p.name = hashCookie, s.Cookie.GetName()
	case *routev3.RouteAction_HashPolicy_ConnectionProperties_:
		if !s.ConnectionProperties.GetSourceIp() {
			return p, errors.New("connection_properties.source_ip: must be true")
		}
		p.kind = hashSourceIP
	case *routev3.RouteAction_HashPolicy_QueryParameter_:
		if s.QueryParameter.GetName() == "" {
			return p, errors.New("query_parameter.name: is required")
		}
		p.kind, p.name = hashQuery, s.QueryParameter.GetName()
	case *routev3.RouteAction_HashPolicy_FilterState_:
		return p, errors.New("filter_state: is not supported")
	default:
		return p, fmt.Errorf("policy_specifier: %T is not supported", s)
	}
	return p, nil
}

// Hash computes the consistent-hash key from the route's hash policies in
// order, combining as Envoy does (rotate left one bit, xor); a terminal
// policy that produced a hash ends the walk. ok is false when no policy
// applied.
func (a *Action) Hash(r *http.Request, ci *core.ConnInfo) (uint64, bool) {
	var h uint64
	ok := false
	for i := range a.HashPolicies {
		p := &a.HashPolicies[i]
		v, got := p.hash(r, ci)
		if !got {
			continue
		}
		if ok {
			h = (h<<1 | h>>63) ^ v
		} else {
			h = v
		}
		ok = true
		if p.Terminal {
			break
		}
	}
	return h, ok
}

func (p *HashPolicy) hash(r *http.Request, ci *core.ConnInfo) (uint64, bool) {
	switch p.kind {
	case hashHeader:
		if v, ok := pseudoValue(r, p.name); ok {
			return fnvString(fnvOffset, p.rewritten(v)), v != ""
		}
		vs := r.Header[p.name]
		if len(vs) == 0 {
			return 0, false
		}
		h := uint64(fnvOffset)
		for _, v := range vs {
			h = fnvString(h, p.rewritten(v))
		}
		return h, true
	case hashCookie:
		v, ok := cookieValue(r.Header, p.name)
		if !ok {
			return 0, false
		}
		return fnvString(fnvOffset, v), true
	case hashSourceIP:
		if ci == nil || ci.RemoteAddr == nil {
			return 0, false
		}
		s := ci.RemoteAddr.String()
		if host, _, err := net.SplitHostPort(s); err == nil {
			s = host
		}
		return fnvString(fnvOffset, s), true
	case hashQuery:
		if r.URL == nil {
			return 0, false
		}
		v, ok := queryValue(r.URL.RawQuery, p.name)
		if !ok {
			return 0, false
		}
		return fnvString(fnvOffset, v), true
	}
	return 0, false
}

func (p *HashPolicy) rewritten(v string) string {
	if p.rewrite == nil {
		return v
	}
	return p.rewrite.ReplaceAllString(v, p.sub)
}

// pseudoValue reads the request fields Go keeps outside r.Header under
// their HTTP/2 pseudo-header (or Host) names.
func pseudoValue(r *http.Request, name string) (string, bool) {
	switch name {
	case ":authority", "Host":
		return r.Host, true
	case ":path":
		return r.URL.RequestURI(), true
	case ":method":
		return r.Method, true
	}
	return "", false
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// fnvString is FNV-1a over s, continuing from h, without converting s to
// bytes.
func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}
