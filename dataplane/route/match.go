package route

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

type stringKind uint8

const (
	smExact stringKind = iota + 1
	smPrefix
	smSuffix
	smContains
	smRegex
)

// StringMatcher is a compiled envoy.type.matcher.v3.StringMatcher. The zero
// value matches nothing.
type StringMatcher struct {
	kind       stringKind
	pattern    string
	ignoreCase bool
	re         *regexp.Regexp
}

// NewStringMatcher compiles m. safe_regex must match the whole string
// (RE2 full match); ignore_case does not apply to it, as in Envoy.
func NewStringMatcher(m *matcherv3.StringMatcher) (StringMatcher, error) {
	sm := StringMatcher{ignoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		sm.kind, sm.pattern = smExact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		if p.Prefix == "" {
			return sm, errors.New("prefix: must not be empty")
		}
		sm.kind, sm.pattern = smPrefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		if p.Suffix == "" {
			return sm, errors.New("suffix: must not be empty")
		}
		sm.kind, sm.pattern = smSuffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		if p.Contains == "" {
			return sm, errors.New("contains: must not be empty")
		}
		sm.kind, sm.pattern = smContains, p.Contains
		if sm.ignoreCase {
			sm.pattern = strings.ToLower(p.Contains)
		}
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := compileFullRegex(p.SafeRegex)
		if err != nil {
			return sm, fmt.Errorf("safe_regex: %w", err)
		}
		sm.kind, sm.re, sm.ignoreCase = smRegex, re, false
	case nil:
		return sm, errors.New("match_pattern: one of exact, prefix, suffix, contains, safe_regex is required")
	default:
		return sm, fmt.Errorf("match_pattern: %T is not supported", p)
	}
	return sm, nil
}

// Match reports whether s matches.
func (m StringMatcher) Match(s string) bool {
	switch m.kind {
	case smExact:
		if m.ignoreCase {
			return strings.EqualFold(s, m.pattern)
		}
		return s == m.pattern
	case smPrefix:
		if m.ignoreCase {
			return len(s) >= len(m.pattern) && strings.EqualFold(s[:len(m.pattern)], m.pattern)
		}
		return strings.HasPrefix(s, m.pattern)
	case smSuffix:
		if m.ignoreCase {
			return len(s) >= len(m.pattern) && strings.EqualFold(s[len(s)-len(m.pattern):], m.pattern)
		}
		return strings.HasSuffix(s, m.pattern)
	case smContains:
		if m.ignoreCase {
			return containsFold(s, m.pattern)
		}
		return strings.Contains(s, m.pattern)
	case smRegex:
		return m.re.MatchString(s)
	}
	return false
}

// containsFold is strings.Contains ignoring ASCII case, without lowering s;
// lower must already be lower-case.
func containsFold(s, lower string) bool {
	n := len(lower)
	for i := 0; i+n <= len(s); i++ {
		if strings.EqualFold(s[i:i+n], lower) {
			return true
		}
	}
	return false
}

// compileFullRegex compiles an RE2 pattern anchored at both ends, as Envoy's
// safe_regex matches the whole input.
func compileFullRegex(m *matcherv3.RegexMatcher) (*regexp.Regexp, error) {
	if m == nil {
		return nil, errors.New("regex is required")
	}
	return regexp.Compile(`^(?:` + m.GetRegex() + `)$`)
}

// compileRewrite compiles a RegexMatchAndSubstitute: the pattern is searched
// (not anchored) and every match replaced; RE2's \N backreferences become
// Go's ${N}.
func compileRewrite(m *matcherv3.RegexMatchAndSubstitute) (*regexp.Regexp, string, error) {
	if m.GetPattern() == nil {
		return nil, "", errors.New("pattern: is required")
	}
	re, err := regexp.Compile(m.GetPattern().GetRegex())
	if err != nil {
		return nil, "", fmt.Errorf("pattern: %w", err)
	}
	return re, convertSubstitution(m.GetSubstitution()), nil
}

func convertSubstitution(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '$':
			b.WriteString("$$")
		case c == '\\' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9':
			b.WriteString("${")
			b.WriteByte(s[i+1])
			b.WriteString("}")
			i++
		case c == '\\' && i+1 < len(s) && s[i+1] == '\\':
			b.WriteByte('\\')
			i++
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

type headerKind uint8

const (
	hmPresent headerKind = iota + 1
	hmString
	hmRange
)

// headerMatcher is a compiled HeaderMatcher. Pseudo-headers (:authority,
// :method, :path, :scheme) read the request fields they stand for.
type headerMatcher struct {
	key          string // canonical key, or the pseudo-header name
	pseudo       bool
	kind         headerKind
	present      bool
	str          StringMatcher
	start, end   int64
	invert       bool
	missingEmpty bool
}

func compileHeaderMatcher(h *routev3.HeaderMatcher) (headerMatcher, error) {
	hm := headerMatcher{invert: h.GetInvertMatch(), missingEmpty: h.GetTreatMissingHeaderAsEmpty()}
	name := strings.ToLower(h.GetName())
	if name == "" {
		return hm, errors.New("name: is required")
	}
	if name[0] == ':' {
		switch name {
		case ":authority", ":method", ":path", ":scheme", ":status":
		default:
			return hm, fmt.Errorf("name: pseudo-header %q is not supported", name)
		}
		hm.key, hm.pseudo = name, true
	} else {
		hm.key = http.CanonicalHeaderKey(name)
	}
	var err error
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case nil:
		hm.kind, hm.present = hmPresent, true
	case *routev3.HeaderMatcher_PresentMatch:
		hm.kind, hm.present = hmPresent, s.PresentMatch
	case *routev3.HeaderMatcher_ExactMatch:
		hm.kind, hm.str = hmString, StringMatcher{kind: smExact, pattern: s.ExactMatch}
	case *routev3.HeaderMatcher_PrefixMatch:
		hm.kind, hm.str = hmString, StringMatcher{kind: smPrefix, pattern: s.PrefixMatch}
	case *routev3.HeaderMatcher_SuffixMatch:
		hm.kind, hm.str = hmString, StringMatcher{kind: smSuffix, pattern: s.SuffixMatch}
	case *routev3.HeaderMatcher_ContainsMatch:
		hm.kind, hm.str = hmString, StringMatcher{kind: smContains, pattern: s.ContainsMatch}
	case *routev3.HeaderMatcher_SafeRegexMatch:
		re, rerr := compileFullRegex(s.SafeRegexMatch)
		if rerr != nil {
			return hm, fmt.Errorf("safe_regex_match: %w", rerr)
		}
		hm.kind, hm.str = hmString, StringMatcher{kind: smRegex, re: re}
	case *routev3.HeaderMatcher_StringMatch:
		hm.kind = hmString
		if hm.str, err = NewStringMatcher(s.StringMatch); err != nil {
			return hm, fmt.Errorf("string_match.%w", err)
		}
	case *routev3.HeaderMatcher_RangeMatch:
		hm.kind, hm.start, hm.end = hmRange, s.RangeMatch.GetStart(), s.RangeMatch.GetEnd()
		if hm.start >= hm.end {
			return hm, fmt.Errorf("range_match: start %d must be less than end %d", hm.start, hm.end)
		}
	default:
		return hm, fmt.Errorf("header_match_specifier: %T is not supported", s)
	}
	return hm, nil
}

// value returns the header's value as Envoy sees it: several values joined
// with ",".
func (hm *headerMatcher) value(r *http.Request, h http.Header) (string, bool) {
	if hm.pseudo {
		if r == nil {
			return "", false
		}
		switch hm.key {
		case ":authority":
			return r.Host, true
		case ":method":
			return r.Method, true
		case ":path":
			if strings.HasPrefix(r.RequestURI, "/") {
				return r.RequestURI, true
			}
			return r.URL.RequestURI(), true
		case ":scheme":
			return requestScheme(r), true
		}
		return "", false
	}
	vs := h[hm.key]
	switch len(vs) {
	case 0:
		return "", false
	case 1:
		return vs[0], true
	}
	return strings.Join(vs, ","), true
}

func (hm *headerMatcher) matchRequest(r *http.Request) bool {
	v, ok := hm.value(r, r.Header)
	return hm.matchValue(v, ok)
}

func (hm *headerMatcher) matchHeader(h http.Header) bool {
	v, ok := hm.value(nil, h)
	return hm.matchValue(v, ok)
}

// matchValue follows Envoy: a value matcher on a missing header fails even
// when inverted (unless treat_missing_header_as_empty); present_match
// compares presence and then honours invert_match.
func (hm *headerMatcher) matchValue(v string, present bool) bool {
	var ok bool
	switch {
	case hm.kind == hmPresent:
		ok = present == hm.present
	case !present && !hm.missingEmpty:
		return false
	case hm.kind == hmString:
		ok = hm.str.Match(v)
	case hm.kind == hmRange:
		n, err := strconv.ParseInt(v, 10, 64)
		ok = err == nil && n >= hm.start && n < hm.end
	}
	return ok != hm.invert
}

// requestScheme is the :scheme of the request as received.
func requestScheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	if r.URL != nil && r.URL.Scheme != "" {
		return r.URL.Scheme
	}
	return "http"
}

// forwardedProto is the scheme the client used, behind any TLS-terminating
// proxy: x-forwarded-proto when present, as Envoy's redirects use.
func forwardedProto(r *http.Request) string {
	if vs := r.Header["X-Forwarded-Proto"]; len(vs) > 0 && vs[0] != "" {
		return vs[0]
	}
	return requestScheme(r)
}

type queryMatcher struct {
	name    string
	present bool // match on presence only
	str     StringMatcher
}

func compileQueryMatcher(q *routev3.QueryParameterMatcher) (queryMatcher, error) {
	qm := queryMatcher{name: q.GetName()}
	if qm.name == "" {
		return qm, errors.New("name: is required")
	}
	switch s := q.GetQueryParameterMatchSpecifier().(type) {
	case nil:
		qm.present = true
	case *routev3.QueryParameterMatcher_PresentMatch:
		if !s.PresentMatch {
			return qm, errors.New("present_match: only true is meaningful")
		}
		qm.present = true
	case *routev3.QueryParameterMatcher_StringMatch:
		sm, err := NewStringMatcher(s.StringMatch)
		if err != nil {
			return qm, fmt.Errorf("string_match.%w", err)
		}
		qm.str = sm
	}
	return qm, nil
}

func (qm *queryMatcher) match(rawQuery string) bool {
	v, ok := queryValue(rawQuery, qm.name)
	if !ok {
		return false
	}
	return qm.present || qm.str.Match(v)
}

// queryValue finds the first value of name in a raw query without parsing
// the whole query into a map; it decodes only when escapes are present.
func queryValue(q, name string) (string, bool) {
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(kv, "=")
		if strings.ContainsAny(k, "%+") {
			if dk, err := url.QueryUnescape(k); err == nil {
				k = dk
			}
		}
		if k != name {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			if dv, err := url.QueryUnescape(v); err == nil {
				v = dv
			}
		}
		return v, true
	}
	return "", false
}

// cookieMatcher matches one cookie's value; an absent cookie does not
// match, so invert_match succeeds when it is absent.
type cookieMatcher struct {
	name   string
	str    StringMatcher
	invert bool
}

func (cm *cookieMatcher) match(h http.Header) bool {
	v, ok := cookieValue(h, cm.name)
	return (ok && cm.str.Match(v)) != cm.invert
}

// cookieValue scans the Cookie headers for name without parsing every
// cookie into a slice, as http.Request.Cookie would.
func cookieValue(h http.Header, name string) (string, bool) {
	for _, line := range h["Cookie"] {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
			if k == name {
				if len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"' {
					v = v[1 : len(v)-1]
				}
				return v, true
			}
		}
	}
	return "", false
}

type pathKind uint8

const (
	pPrefix pathKind = iota + 1
	pExact
	pRegex
	pSeparatedPrefix
	pConnect
)

// matcher is a compiled RouteMatch.
type matcher struct {
	kind     pathKind
	path     string
	fold     bool // case_sensitive: false
	re       *regexp.Regexp
	headers  []headerMatcher
	queries  []queryMatcher
	cookies  []cookieMatcher
	grpc     bool
	fraction uint64 // numerator scaled to fracScale; 0 with hasFrac means never
	hasFrac  bool
	tlsPres  *bool
	tlsValid *bool
}

const fracScale = 1_000_000

func compileMatch(m *routev3.RouteMatch) (matcher, error) {
	var c matcher
	if m == nil {
		return c, errors.New("match: is required")
	}
	c.fold = m.GetCaseSensitive() != nil && !m.GetCaseSensitive().GetValue()
	switch p := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		c.kind, c.path = pPrefix, p.Prefix
	case *routev3.RouteMatch_Path:
		c.kind, c.path = pExact, p.Path
	case *routev3.RouteMatch_SafeRegex:
		re, err := compileFullRegex(p.SafeRegex)
		if err != nil {
			return c, fmt.Errorf("match.safe_regex: %w", err)
		}
		c.kind, c.re = pRegex, re
	case *routev3.RouteMatch_PathSeparatedPrefix:
		if strings.ContainsAny(p.PathSeparatedPrefix, "?#") || strings.HasSuffix(p.PathSeparatedPrefix, "/") {
			return c, fmt.Errorf("match.path_separated_prefix: %q must not contain ? or # nor end in /", p.PathSeparatedPrefix)
		}
		c.kind, c.path = pSeparatedPrefix, p.PathSeparatedPrefix
	case *routev3.RouteMatch_ConnectMatcher_:
		c.kind = pConnect
	case nil:
		return c, errors.New("match.path_specifier: one of prefix, path, safe_regex, path_separated_prefix, connect_matcher is required")
	default:
		return c, fmt.Errorf("match.path_specifier: %T is not supported", p)
	}
	for i, h := range m.GetHeaders() {
		hm, err := compileHeaderMatcher(h)
		if err != nil {
			return c, fmt.Errorf("match.headers[%d].%w", i, err)
		}
		c.headers = append(c.headers, hm)
	}
	for i, q := range m.GetQueryParameters() {
		qm, err := compileQueryMatcher(q)
		if err != nil {
			return c, fmt.Errorf("match.query_parameters[%d].%w", i, err)
		}
		c.queries = append(c.queries, qm)
	}
	for i, ck := range m.GetCookies() {
		if ck.GetName() == "" {
			return c, fmt.Errorf("match.cookies[%d].name: is required", i)
		}
		sm, err := NewStringMatcher(ck.GetStringMatch())
		if err != nil {
			return c, fmt.Errorf("match.cookies[%d].string_match.%w", i, err)
		}
		c.cookies = append(c.cookies, cookieMatcher{name: ck.GetName(), str: sm, invert: ck.GetInvertMatch()})
	}
	c.grpc = m.GetGrpc() != nil
	if rf := m.GetRuntimeFraction(); rf != nil {
		c.hasFrac = true
		c.fraction = scaleFraction(rf.GetDefaultValue())
	}
	if tc := m.GetTlsContext(); tc != nil {
		if tc.GetPresented() != nil {
			v := tc.GetPresented().GetValue()
			c.tlsPres = &v
		}
		if tc.GetValidated() != nil {
			v := tc.GetValidated().GetValue()
			c.tlsValid = &v
		}
	}
	switch {
	case len(m.GetDynamicMetadata()) > 0:
		return c, errors.New("match.dynamic_metadata: is not supported")
	case len(m.GetFilterState()) > 0:
		return c, errors.New("match.filter_state: is not supported")
	}
	return c, nil
}

// scaleFraction converts a FractionalPercent to parts per million.
func scaleFraction(f *typev3.FractionalPercent) uint64 {
	n := uint64(f.GetNumerator())
	switch f.GetDenominator() {
	case typev3.FractionalPercent_HUNDRED:
		n *= 10_000
	case typev3.FractionalPercent_TEN_THOUSAND:
		n *= 100
	}
	return min(n, fracScale)
}

func fractionOf(rf *corev3.RuntimeFractionalPercent) (uint64, bool) {
	if rf == nil {
		return fracScale, false
	}
	return scaleFraction(rf.GetDefaultValue()), true
}

func (c *matcher) match(r *http.Request, path string) bool {
	switch c.kind {
	case pPrefix:
		if len(path) < len(c.path) {
			return false
		}
		if c.fold {
			if !strings.EqualFold(path[:len(c.path)], c.path) {
				return false
			}
		} else if path[:len(c.path)] != c.path {
			return false
		}
	case pExact:
		if c.fold {
			if !strings.EqualFold(path, c.path) {
				return false
			}
		} else if path != c.path {
			return false
		}
	case pRegex:
		if !c.re.MatchString(path) {
			return false
		}
	case pSeparatedPrefix:
		if len(path) < len(c.path) {
			return false
		}
		if c.fold {
			if !strings.EqualFold(path[:len(c.path)], c.path) {
				return false
			}
		} else if path[:len(c.path)] != c.path {
			return false
		}
		if len(path) > len(c.path) && path[len(c.path)] != '/' {
			return false
		}
	case pConnect:
		if r.Method != http.MethodConnect {
			return false
		}
	}
	if c.kind != pConnect && r.Method == http.MethodConnect && path == "" {
		return false
	}
	if c.grpc && !isGRPC(r.Header) {
		return false
	}
	for i := range c.headers {
		if !c.headers[i].matchRequest(r) {
			return false
		}
	}
	if len(c.queries) > 0 {
		q := ""
		if r.URL != nil {
			q = r.URL.RawQuery
		}
		for i := range c.queries {
			if !c.queries[i].match(q) {
				return false
			}
		}
	}
	for i := range c.cookies {
		if !c.cookies[i].match(r.Header) {
			return false
		}
	}
	if c.tlsPres != nil && *c.tlsPres != (r.TLS != nil && len(r.TLS.PeerCertificates) > 0) {
		return false
	}
	if c.tlsValid != nil && *c.tlsValid != (r.TLS != nil && len(r.TLS.VerifiedChains) > 0) {
		return false
	}
	if c.hasFrac && random()%fracScale >= c.fraction {
		return false
	}
	return true
}

// isGRPC reports a gRPC content-type: application/grpc, optionally followed
// by +proto, +json or ;parameters.
func isGRPC(h http.Header) bool {
	vs := h["Content-Type"]
	if len(vs) == 0 {
		return false
	}
	ct := vs[0]
	const g = "application/grpc"
	if len(ct) < len(g) || !strings.EqualFold(ct[:len(g)], g) {
		return false
	}
	return len(ct) == len(g) || ct[len(g)] == '+' || ct[len(g)] == ';'
}
