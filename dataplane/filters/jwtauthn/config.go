package jwtauthn

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/dataplane/route"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// defaultClockSkew is jwt_verify_lib's kClockSkewInSecond, used when
// clock_skew_seconds is 0.
const defaultClockSkew = 60 * time.Second

// defaultTokenCache is Envoy's jwt_cache_size default, per provider; the
// filter's one cache holds the sum over its providers.
const defaultTokenCache = 100

// provider is one compiled JwtProvider.
type provider struct {
	issuer               string
	audiences            []string
	subjects             *route.StringMatcher
	requireExp           bool
	forward              bool
	forwardPayloadHeader string // canonical header key
	padPayloadHeader     bool
	payloadInMetadata    string
	spaceDelimited       []string // claims split on spaces in the metadata copy of the payload
	headerInMetadata     string
	clockSkew            time.Duration
	claimToHeaders       []claimHeader
	fromHeaders          []headerLoc
	fromParams           []string
	fromCookies          []string
	locs                 locations
	keys                 keySource
}

type claimHeader struct{ claim, header string }

// keySource yields a provider's verification keys: inline ones, or a
// remote JWKS cache.
type keySource interface {
	keys() ([]*jwk, status)
}

// localKeys is an inline JWKS. An unusable one is kept, not refused, as
// Envoy keeps it: its tokens then fail with the JWKS status.
type localKeys struct {
	set []*jwk
	st  status
}

func (l *localKeys) keys() ([]*jwk, status) { return l.set, l.st }

// config is a compiled JwtAuthentication.
type config struct {
	providers      map[string]*provider
	ordered        []*provider // by name, for issuer lookup
	rules          *route.Table
	ruleVerifiers  []verifier
	requirements   map[string]verifier
	bypassCORS     bool
	stripFailure   bool
	remoteFetchers []*remoteJWKS
	// outputs are the headers this filter writes (forward_payload_header,
	// claim_to_headers); they are stripped from requests first so a client
	// cannot forge them.
	outputs []string
	tokens  tokenCache

	cacheHit, cacheMiss *stats.Counter
}

// compile validates a JwtAuthentication; errors name the field.
func compile(pb *jwtv3.JwtAuthentication, env fetchEnv) (*config, error) {
	if pb.GetFilterStateRules() != nil {
		return nil, errors.New("filter_state_rules: is not supported (Istio does not use it); select requirements with rules or per-route requirement_name")
	}
	c := &config{
		providers:    map[string]*provider{},
		requirements: map[string]verifier{},
		bypassCORS:   pb.GetBypassCorsPreflight(),
		stripFailure: pb.GetStripFailureResponse(),
		cacheHit:     env.cacheHit,
		cacheMiss:    env.cacheMiss,
	}
	names := make([]string, 0, len(pb.GetProviders()))
	for n := range pb.GetProviders() {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		p, err := compileProvider(n, pb.GetProviders()[n], env)
		if err != nil {
			return nil, fmt.Errorf("providers[%q]: %w", n, err)
		}
		if r, ok := p.keys.(*remoteJWKS); ok {
			c.remoteFetchers = append(c.remoteFetchers, r)
		}
		c.providers[n] = p
		size := int64(defaultTokenCache)
		if cc := pb.GetProviders()[n].GetJwtCacheConfig(); cc != nil && cc.GetJwtCacheSize() > 0 {
			size = int64(cc.GetJwtCacheSize())
		}
		c.tokens.max += size
		if p.forwardPayloadHeader != "" {
			c.outputs = append(c.outputs, p.forwardPayloadHeader)
		}
		for _, ch := range p.claimToHeaders {
			c.outputs = append(c.outputs, ch.header)
		}
		c.ordered = append(c.ordered, p)
	}
	reqNames := make([]string, 0, len(pb.GetRequirementMap()))
	for n := range pb.GetRequirementMap() {
		reqNames = append(reqNames, n)
	}
	slices.Sort(reqNames)
	for _, n := range reqNames {
		v, err := c.compileRequirement(pb.GetRequirementMap()[n], nil)
		if err != nil {
			return nil, fmt.Errorf("requirement_map[%q]: %w", n, err)
		}
		c.requirements[n] = v
	}
	if len(pb.GetRules()) > 0 {
		vh := &routev3.VirtualHost{Name: "jwt_authn", Domains: []string{"*"}}
		for i, r := range pb.GetRules() {
			where := fmt.Sprintf("rules[%d]", i)
			var v verifier
			switch {
			case r.GetRequirementName() != "":
				var ok bool
				if v, ok = c.requirements[r.GetRequirementName()]; !ok {
					return nil, fmt.Errorf("%s.requirement_name: %q is not in requirement_map", where, r.GetRequirementName())
				}
			case r.GetRequires() != nil:
				var err error
				if v, err = c.compileRequirement(r.GetRequires(), nil); err != nil {
					return nil, fmt.Errorf("%s.requires: %w", where, err)
				}
			default:
				v = allowAll{} // a rule without requirement exempts the requests it matches
			}
			if r.GetMatch() == nil {
				return nil, fmt.Errorf("%s.match: is required", where)
			}
			c.ruleVerifiers = append(c.ruleVerifiers, v)
			// The rules become routes of a table so every RouteMatch field
			// matches exactly as in route selection.
			vh.Routes = append(vh.Routes, &routev3.Route{
				Name:   fmt.Sprint(i),
				Match:  r.GetMatch(),
				Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200}},
			})
		}
		t, err := route.Compile(&routev3.RouteConfiguration{Name: "jwt_authn rules", VirtualHosts: []*routev3.VirtualHost{vh}})
		if err != nil {
			return nil, fmt.Errorf("rules: %w", err)
		}
		c.rules = t
	}
	return c, nil
}

func compileProvider(name string, pb *jwtv3.JwtProvider, env fetchEnv) (*provider, error) {
	p := &provider{
		issuer:            pb.GetIssuer(),
		audiences:         pb.GetAudiences(),
		requireExp:        pb.GetRequireExpiration(),
		forward:           pb.GetForward(),
		padPayloadHeader:  pb.GetPadForwardPayloadHeader(),
		payloadInMetadata: pb.GetPayloadInMetadata(),
		headerInMetadata:  pb.GetHeaderInMetadata(),
		spaceDelimited:    pb.GetNormalizePayloadInMetadata().GetSpaceDelimitedClaims(),
		clockSkew:         defaultClockSkew,
	}
	if pb.GetFailedStatusInMetadata() != "" {
		return nil, errors.New("failed_status_in_metadata: is not supported (Istio does not use it)")
	}
	// clear_route_cache (Istio sets it so routes can match on claims copied
	// to headers) asks the connection manager to select the route again
	// after this filter; hcm selects it once, before the chain, so it is
	// accepted and the first selection stands.
	if pb.GetMaxLifetime() != nil {
		return nil, errors.New("max_lifetime: is not supported; drop it or bound token lifetime at the issuer")
	}
	if s := pb.GetSubjects(); s != nil {
		m, err := route.NewStringMatcher(s)
		if err != nil {
			return nil, fmt.Errorf("subjects: %w", err)
		}
		p.subjects = &m
	}
	if s := pb.GetClockSkewSeconds(); s > 0 {
		p.clockSkew = time.Duration(s) * time.Second
	}
	if h := pb.GetForwardPayloadHeader(); h != "" {
		p.forwardPayloadHeader = http.CanonicalHeaderKey(h)
	}
	for i, ch := range pb.GetClaimToHeaders() {
		if len(ch.GetClaimPath()) > 0 {
			return nil, fmt.Errorf("claim_to_headers[%d].claim_path: is not supported; use claim_name with dots for nested claims", i)
		}
		if ch.GetHeaderName() == "" || ch.GetClaimName() == "" {
			return nil, fmt.Errorf("claim_to_headers[%d]: header_name and claim_name are required", i)
		}
		p.claimToHeaders = append(p.claimToHeaders, claimHeader{claim: ch.GetClaimName(), header: http.CanonicalHeaderKey(ch.GetHeaderName())})
	}
	for i, h := range pb.GetFromHeaders() {
		if h.GetName() == "" {
			return nil, fmt.Errorf("from_headers[%d].name: is required", i)
		}
		p.fromHeaders = append(p.fromHeaders, headerLoc{key: http.CanonicalHeaderKey(h.GetName()), prefix: h.GetValuePrefix()})
	}
	p.fromParams = pb.GetFromParams()
	p.fromCookies = pb.GetFromCookies()
	p.locs.add(p)
	switch src := pb.GetJwksSourceSpecifier().(type) {
	case *jwtv3.JwtProvider_LocalJwks:
		data, err := core.ReadDataSource(src.LocalJwks)
		if err != nil {
			return nil, fmt.Errorf("local_jwks: %w", err)
		}
		lk := &localKeys{}
		lk.set, lk.st = parseJWKS(data)
		if lk.st != statusOK && env.logger != nil {
			env.logger.Warn("jwt_authn: local_jwks has no usable key; tokens of this provider will fail", "provider", name, "status", lk.st.String())
		}
		p.keys = lk
	case *jwtv3.JwtProvider_RemoteJwks:
		r, err := newRemoteJWKS(src.RemoteJwks, env)
		if err != nil {
			return nil, fmt.Errorf("remote_jwks.%w", err)
		}
		p.keys = r
	default:
		return nil, errors.New("one of local_jwks or remote_jwks is required")
	}
	return p, nil
}

// compileRequirement builds the verifier of one JwtRequirement. siblings
// are the providers named next to an allow_missing(_or_failed) in a
// requires_any; it extracts tokens from their locations only.
func (c *config) compileRequirement(r *jwtv3.JwtRequirement, siblings []string) (verifier, error) {
	switch t := r.GetRequiresType().(type) {
	case nil:
		return allowAll{}, nil
	case *jwtv3.JwtRequirement_ProviderName:
		p, ok := c.providers[t.ProviderName]
		if !ok {
			return nil, fmt.Errorf("provider_name: %q is not in providers", t.ProviderName)
		}
		return &authVerifier{cfg: c, provider: p, locs: &p.locs}, nil
	case *jwtv3.JwtRequirement_ProviderAndAudiences:
		p, ok := c.providers[t.ProviderAndAudiences.GetProviderName()]
		if !ok {
			return nil, fmt.Errorf("provider_and_audiences.provider_name: %q is not in providers", t.ProviderAndAudiences.GetProviderName())
		}
		aud := t.ProviderAndAudiences.GetAudiences()
		return &authVerifier{cfg: c, provider: p, locs: &p.locs, audiences: aud, audOverride: true}, nil
	case *jwtv3.JwtRequirement_RequiresAny:
		return c.compileAny(t.RequiresAny.GetRequirements())
	case *jwtv3.JwtRequirement_RequiresAll:
		all := &allVerifier{}
		for i, sub := range t.RequiresAll.GetRequirements() {
			v, err := c.compileRequirement(sub, nil)
			if err != nil {
				return nil, fmt.Errorf("requires_all.requirements[%d].%w", i, err)
			}
			all.children = append(all.children, v)
		}
		return all, nil
	case *jwtv3.JwtRequirement_AllowMissing:
		return &authVerifier{cfg: c, locs: c.locationsOf(siblings), allowMissing: true}, nil
	case *jwtv3.JwtRequirement_AllowMissingOrFailed:
		return &authVerifier{cfg: c, locs: c.locationsOf(siblings), allowMissing: true, allowFailed: true}, nil
	case *jwtv3.JwtRequirement_ExtractOnlyWithoutValidation:
		return nil, errors.New("extract_only_without_validation: is not supported")
	}
	return nil, fmt.Errorf("requires type %T is not supported", r.GetRequiresType())
}

// compileAny follows Envoy: the regular requirements are tried in order,
// then at most one allow_missing / allow_missing_or_failed (the latter
// wins) over the locations of the providers the list names.
func (c *config) compileAny(reqs []*jwtv3.JwtRequirement) (verifier, error) {
	av := &anyVerifier{}
	var bypass *jwtv3.JwtRequirement
	var used []string
	for i, sub := range reqs {
		switch t := sub.GetRequiresType().(type) {
		case *jwtv3.JwtRequirement_AllowMissing:
			if bypass == nil {
				bypass = sub
			}
			continue
		case *jwtv3.JwtRequirement_AllowMissingOrFailed:
			bypass = sub
			continue
		case *jwtv3.JwtRequirement_ProviderName:
			used = append(used, t.ProviderName)
		case *jwtv3.JwtRequirement_ProviderAndAudiences:
			used = append(used, t.ProviderAndAudiences.GetProviderName())
		}
		v, err := c.compileRequirement(sub, nil)
		if err != nil {
			return nil, fmt.Errorf("requires_any.requirements[%d].%w", i, err)
		}
		av.children = append(av.children, v)
	}
	if bypass != nil {
		v, err := c.compileRequirement(bypass, used)
		if err != nil {
			return nil, fmt.Errorf("requires_any: %w", err)
		}
		av.children = append(av.children, v)
	}
	return av, nil
}

// locationsOf merges the token locations of the named providers; with
// none named (a top-level allow_missing) it takes every provider's.
func (c *config) locationsOf(names []string) *locations {
	l := &locations{}
	if len(names) == 0 {
		for _, p := range c.ordered {
			l.add(p)
		}
		return l
	}
	for _, n := range names {
		if p := c.providers[n]; p != nil {
			l.add(p)
		}
	}
	return l
}

// providerFor finds the provider for a token verified without a fixed
// provider (allow_missing*): the first with the token's issuer, else the
// first without an issuer.
func (c *config) providerFor(iss string) *provider {
	for _, p := range c.ordered {
		if p.issuer == iss {
			return p
		}
	}
	for _, p := range c.ordered {
		if p.issuer == "" {
			return p
		}
	}
	return nil
}

// normAudience strips the scheme and a trailing slash, as jwt_verify_lib
// compares audiences.
func normAudience(a string) string {
	a = strings.TrimPrefix(strings.TrimPrefix(a, "https://"), "http://")
	return strings.TrimSuffix(a, "/")
}
