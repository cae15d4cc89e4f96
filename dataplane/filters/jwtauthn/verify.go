package jwtauthn

import (
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// issuerSet says which issuers may use a token location: a location named
// by several providers serves all their issuers; one named by a provider
// without an issuer serves any.
type issuerSet struct {
	all bool
	set []string
}

func (s *issuerSet) add(iss string) {
	if iss == "" {
		s.all = true
		return
	}
	if !slices.Contains(s.set, iss) {
		s.set = append(s.set, iss)
	}
}

func (s *issuerSet) allows(iss string) bool { return s.all || slices.Contains(s.set, iss) }

type headerLoc struct {
	key, prefix string
	issuers     issuerSet
}

type namedLoc struct {
	name    string
	issuers issuerSet
}

// locations are where an extractor looks for tokens, with the issuers each
// location serves.
type locations struct {
	headers []*headerLoc
	params  []*namedLoc
	cookies []*namedLoc
}

// add merges p's token locations; a provider naming none uses Envoy's
// defaults, "Authorization: Bearer <token>" and ?access_token=.
func (l *locations) add(p *provider) {
	hs, ps, cs := p.fromHeaders, p.fromParams, p.fromCookies
	if len(hs) == 0 && len(ps) == 0 && len(cs) == 0 {
		hs = []headerLoc{{key: "Authorization", prefix: "Bearer "}}
		ps = []string{"access_token"}
	}
	for _, h := range hs {
		i := slices.IndexFunc(l.headers, func(x *headerLoc) bool { return x.key == h.key && x.prefix == h.prefix })
		if i < 0 {
			l.headers = append(l.headers, &headerLoc{key: h.key, prefix: h.prefix})
			i = len(l.headers) - 1
		}
		l.headers[i].issuers.add(p.issuer)
	}
	addNamed := func(list *[]*namedLoc, names []string) {
		for _, n := range names {
			i := slices.IndexFunc(*list, func(x *namedLoc) bool { return x.name == n })
			if i < 0 {
				*list = append(*list, &namedLoc{name: n})
				i = len(*list) - 1
			}
			(*list)[i].issuers.add(p.issuer)
		}
	}
	addNamed(&l.params, ps)
	addNamed(&l.cookies, cs)
}

// tokenLoc is one extracted token and where it came from.
type tokenLoc struct {
	value   string
	issuers *issuerSet
	header  string // canonical key when from a header
	param   string // when from a query parameter
}

// jwtChars are the characters of a base64url JWT plus the dots; a header
// token starts at the first of them after the prefix, as Envoy extracts.
const jwtChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."

func (l *locations) extract(r *http.Request) []tokenLoc {
	var out []tokenLoc
	for _, hl := range l.headers {
		for _, v := range r.Header[hl.key] {
			if hl.prefix != "" {
				i := strings.Index(v, hl.prefix)
				if i < 0 {
					continue
				}
				rest := v[i+len(hl.prefix):]
				if j := strings.IndexAny(rest, jwtChars); j >= 0 {
					v = rest[j:]
				}
			}
			out = append(out, tokenLoc{value: v, issuers: &hl.issuers, header: hl.key})
		}
	}
	if len(l.params) > 0 && r.URL.RawQuery != "" {
		q := r.URL.Query()
		for _, pl := range l.params {
			if vs := q[pl.name]; len(vs) > 0 {
				out = append(out, tokenLoc{value: vs[0], issuers: &pl.issuers, param: pl.name})
			}
		}
	}
	for _, cl := range l.cookies {
		if c, err := r.Cookie(cl.name); err == nil {
			out = append(out, tokenLoc{value: c.Value, issuers: &cl.issuers})
		}
	}
	return out
}

// remove takes the token out of the request when forward is false. Cookies
// stay, as in Envoy.
func (t *tokenLoc) remove(r *http.Request) {
	switch {
	case t.header != "":
		delete(r.Header, t.header)
	case t.param != "":
		q := r.URL.Query()
		q.Del(t.param)
		r.URL.RawQuery = q.Encode()
		r.RequestURI = r.URL.RequestURI()
	}
}

// reqCtx is one request's verification: the request, the clock, and the
// metadata gathered from verified tokens.
type reqCtx struct {
	r    *http.Request
	now  time.Time
	meta map[string]any
	// seen remembers each (provider, token) outcome: Istio's
	// {provider OR allow_missing} looks at the same token twice, and a
	// failing JWKS fetch must not be tried twice for one request.
	seen []seenToken
}

type seenToken struct {
	p   *provider
	tok string
	st  status
}

func (rc *reqCtx) seenStatus(p *provider, tok string) (status, bool) {
	for _, s := range rc.seen {
		if s.p == p && s.tok == tok {
			return s.st, true
		}
	}
	return 0, false
}

func (rc *reqCtx) setMeta(k string, v any) {
	if rc.meta == nil {
		rc.meta = map[string]any{}
	}
	rc.meta[k] = v
}

// verifier is a node of the requirement tree.
type verifier interface {
	verify(rc *reqCtx) status
}

type allowAll struct{}

func (allowAll) verify(*reqCtx) status { return statusOK }

// anyVerifier succeeds when a child does (the rest are not tried); when
// all fail it reports the most telling failure: a bad token over a missing
// one.
type anyVerifier struct{ children []verifier }

func (a *anyVerifier) verify(rc *reqCtx) status {
	final := statusMissing
	for _, c := range a.children {
		st := c.verify(rc)
		if st == statusOK {
			return statusOK
		}
		if st != statusMissing {
			final = st
		}
	}
	if len(a.children) == 0 {
		return statusOK
	}
	return final
}

// allVerifier succeeds when every child does, stopping at the first
// failure.
type allVerifier struct{ children []verifier }

func (a *allVerifier) verify(rc *reqCtx) status {
	for _, c := range a.children {
		if st := c.verify(rc); st != statusOK {
			return st
		}
	}
	return statusOK
}

// authVerifier verifies the tokens found at locs: for one provider, or
// (provider nil) for whichever provider the token's issuer names, as
// allow_missing and allow_missing_or_failed do.
type authVerifier struct {
	cfg          *config
	provider     *provider
	locs         *locations
	audiences    []string
	audOverride  bool
	allowMissing bool
	allowFailed  bool
}

func (v *authVerifier) verify(rc *reqCtx) status {
	toks := v.locs.extract(rc.r)
	if len(toks) == 0 {
		if v.allowMissing || v.allowFailed {
			return statusOK
		}
		return statusMissing
	}
	// Every token present must verify, so a request cannot pair a good
	// token with a bad one the backend might read instead. Envoy checks
	// them last first.
	st := statusOK
	for i := len(toks) - 1; i >= 0; i-- {
		st = v.one(rc, &toks[i])
		if st != statusOK && !v.allowFailed && !v.allowMissing {
			return st
		}
	}
	if v.allowFailed {
		return statusOK
	}
	return st
}

func (v *authVerifier) one(rc *reqCtx, t *tokenLoc) status {
	var j *jwt
	var key *jwk
	st := statusOK
	if c := v.cfg.tokens.get(t.value); c != nil {
		v.cfg.cacheHit.Inc()
		j, key = c.j, c.key
	} else {
		v.cfg.cacheMiss.Inc()
		if j, st = parseJWT(t.value); st != statusOK {
			return st
		}
	}
	if !t.issuers.allows(j.iss) {
		return statusUnknownIssuer
	}
	p := v.provider
	if p == nil {
		if p = v.cfg.providerFor(j.iss); p == nil {
			return statusUnknownIssuer
		}
	}
	aud := p.audiences
	if v.audOverride {
		aud = v.audiences
	} else if st, ok := rc.seenStatus(p, t.value); ok {
		return st
	}
	st = v.check(rc, p, j, key, t, aud)
	if !v.audOverride {
		rc.seen = append(rc.seen, seenToken{p, t.value, st})
	}
	return st
}

// check verifies a parsed token for provider p; cachedKey is the key that
// verified it on an earlier request, if any.
func (v *authVerifier) check(rc *reqCtx, p *provider, j *jwt, cachedKey *jwk, t *tokenLoc, aud []string) status {
	now := rc.now.Unix()
	skew := int64(p.clockSkew / time.Second)
	if j.nbf != 0 && now+skew < j.nbf {
		return statusNotYetValid
	}
	if (j.exp != 0 && now > j.exp+skew) || (p.requireExp && j.exp == 0) {
		return statusExpired
	}
	if !audienceAllowed(aud, j.aud) {
		return statusAudienceNotAllowed
	}
	keys, st := p.keys.keys()
	if st != statusOK {
		return st
	}
	if cachedKey == nil || !slices.Contains(keys, cachedKey) {
		var key *jwk
		st, key = verifySignature(j, keys)
		if st == statusJwksKidAlgMismatch {
			if r, ok := p.keys.(*remoteJWKS); ok {
				if fresh, ok := r.renewStale(keys); ok {
					st, key = verifySignature(j, fresh)
				}
			}
		}
		if st != statusOK {
			return st
		}
		v.cfg.tokens.put(t.value, &cachedJWT{j: j, key: key})
	}
	if p.subjects != nil && !p.subjects.Match(j.sub) {
		return statusVerificationFail
	}
	p.good(rc, j, t)
	return statusOK
}

// tokenCache remembers verified tokens so a client sending the same token
// on every request costs a map lookup instead of a parse and a signature
// check (Envoy's jwt_cache). An entry holds the key that verified it and
// is used only while that key is still in its provider's JWKS; time and
// audience are checked on every request. When full it is cleared
// wholesale, which keeps the request path lock-free.
type tokenCache struct {
	m   sync.Map // token → *cachedJWT
	n   atomic.Int64
	max int64
}

type cachedJWT struct {
	j   *jwt
	key *jwk
}

// maxCachedToken is Envoy's default jwt_max_token_size.
const maxCachedToken = 4096

func (c *tokenCache) get(tok string) *cachedJWT {
	if c.max <= 0 {
		return nil
	}
	if v, ok := c.m.Load(tok); ok {
		return v.(*cachedJWT)
	}
	return nil
}

func (c *tokenCache) put(tok string, e *cachedJWT) {
	if c.max <= 0 || len(tok) > maxCachedToken {
		return
	}
	if c.n.Add(1) > c.max {
		c.m.Clear()
		c.n.Store(1)
	}
	c.m.Store(tok, e)
}

func audienceAllowed(allowed, got []string) bool {
	if len(allowed) == 0 {
		return true
	}
	for _, a := range allowed {
		na := normAudience(a)
		for _, g := range got {
			if normAudience(g) == na {
				return true
			}
		}
	}
	return false
}

// good applies a verified token's outputs: payload header, claim headers,
// token removal and metadata.
func (p *provider) good(rc *reqCtx, j *jwt, t *tokenLoc) {
	h := rc.r.Header
	if p.forwardPayloadHeader != "" {
		v := j.payloadB64
		if p.padPayloadHeader {
			if n := len(v) % 4; n != 0 {
				v += strings.Repeat("=", 4-n)
			}
		}
		h[p.forwardPayloadHeader] = append(h[p.forwardPayloadHeader], v)
	}
	for _, ch := range p.claimToHeaders {
		if s, ok := claimString(j.payload, ch.claim); ok {
			h[ch.header] = append(h[ch.header], s)
		}
	}
	if !p.forward {
		t.remove(rc.r)
	}
	if p.headerInMetadata != "" {
		rc.setMeta(p.headerInMetadata, j.header)
	}
	if p.payloadInMetadata != "" {
		rc.setMeta(p.payloadInMetadata, p.normalize(j.payload))
	}
}

// normalize applies normalize_payload_in_metadata: each listed claim that
// is a string becomes the list of its space-separated words (Istio lists
// "scope" and "permission", so AuthorizationPolicy can match one scope).
// The payload is copied only when a claim changes, since it may be shared
// through the token cache.
func (p *provider) normalize(payload map[string]any) map[string]any {
	out, copied := payload, false
	for _, c := range p.spaceDelimited {
		s, ok := payload[c].(string)
		if !ok {
			continue
		}
		if !copied {
			out, copied = maps.Clone(payload), true
		}
		words := strings.Fields(s)
		list := make([]any, len(words))
		for i, w := range words {
			list[i] = w
		}
		out[c] = list
	}
	return out
}

// claimString reads a primitive claim (dots reach into nested objects) as
// Envoy's claim_to_headers writes it: integers without a fraction.
func claimString(payload map[string]any, name string) (string, bool) {
	var cur any = payload
	for _, part := range strings.Split(name, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false
		}
		if cur, ok = m[part]; !ok {
			return "", false
		}
	}
	switch v := cur.(type) {
	case string:
		return v, v != ""
	case bool:
		return strconv.FormatBool(v), true
	case float64:
		if v >= 0 && v < 1<<63 && v == float64(int64(v)) {
			return strconv.FormatInt(int64(v), 10), true
		}
		return strconv.FormatFloat(v, 'f', 6, 64), true
	}
	return "", false
}
