package authz

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	security "istio.io/api/security/v1beta1"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// emptyJWKS stands in for keys istiod could not get (no jwks, no jwksUri):
// every token of the issuer then fails (401), a request without one passes.
const emptyJWKS = `{"keys":[]}`

type jwtRule struct {
	key  config.Key
	path string
	rule *security.JWTRule
}

// jwtFilter compiles the RequestAuthentications into one jwt_authn filter,
// as Istio does: one provider per jwtRule (origins-i, in issuer order),
// and a requirement that lets a request without a token through while a
// token that is present must verify (401 otherwise).
func (b *builder) jwtFilter(ras []*config.Object) *hcmv3.HttpFilter {
	var rules []jwtRule
	for _, o := range ras {
		spec, _ := o.Spec.(*security.RequestAuthentication)
		for i, r := range spec.GetJwtRules() {
			if r == nil {
				continue
			}
			rules = append(rules, jwtRule{key: o.Key(), path: fmt.Sprintf("spec.jwtRules[%d]", i), rule: r})
		}
	}
	if len(rules) == 0 {
		return nil
	}
	slices.SortStableFunc(rules, func(a, c jwtRule) int {
		switch {
		case a.rule.GetIssuer() < c.rule.GetIssuer():
			return -1
		case a.rule.GetIssuer() > c.rule.GetIssuer():
			return 1
		}
		return 0
	})
	cfg := &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{}, BypassCorsPreflight: true}
	var inner, outer []*jwtv3.JwtRequirement
	for i, jr := range rules {
		name := "origins-" + strconv.Itoa(i)
		cfg.Providers[name] = b.jwtProvider(jr)
		inner = append(inner, requiresAny(providerReq(name), &jwtv3.JwtRequirement{
			RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}}))
		outer = append(outer, providerReq(name))
	}
	req := inner[0]
	if len(inner) > 1 {
		// Any provider's valid token, or for every provider a valid token or
		// none at its location: providers sharing a location still pass.
		outer = append(outer, &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAll{
			RequiresAll: &jwtv3.JwtRequirementAndList{Requirements: inner}}})
		req = requiresAny(outer...)
	}
	cfg.Rules = []*jwtv3.RequirementRule{{
		Match:           &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		RequirementType: &jwtv3.RequirementRule_Requires{Requires: req},
	}}
	return httpFilter(JWTAuthnFilter, cfg)
}

func providerReq(name string) *jwtv3.JwtRequirement {
	return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: name}}
}

func requiresAny(rs ...*jwtv3.JwtRequirement) *jwtv3.JwtRequirement {
	return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAny{
		RequiresAny: &jwtv3.JwtRequirementOrList{Requirements: rs}}}
}

func (b *builder) jwtProvider(jr jwtRule) *jwtv3.JwtProvider {
	r := jr.rule
	p := &jwtv3.JwtProvider{
		Issuer:                     r.GetIssuer(),
		Audiences:                  r.GetAudiences(),
		Forward:                    r.GetForwardOriginalToken(),
		ForwardPayloadHeader:       r.GetOutputPayloadToHeader(),
		PayloadInMetadata:          jwtPayload,
		NormalizePayloadInMetadata: &jwtv3.JwtProvider_NormalizePayload{SpaceDelimitedClaims: spaceDelimitedClaims(r.GetSpaceDelimitedClaims())},
		ClearRouteCache:            b.in.Gateway,
		FromParams:                 r.GetFromParams(),
		FromCookies:                r.GetFromCookies(),
	}
	for _, c := range r.GetOutputClaimToHeaders() {
		p.ClaimToHeaders = append(p.ClaimToHeaders, &jwtv3.JwtClaimToHeader{HeaderName: c.GetHeader(), ClaimName: c.GetClaim()})
	}
	for _, h := range r.GetFromHeaders() {
		p.FromHeaders = append(p.FromHeaders, &jwtv3.JwtHeader{Name: h.GetName(), ValuePrefix: h.GetPrefix()})
	}
	timeout := r.GetTimeout()
	if timeout == nil {
		timeout = durationpb.New(5e9)
	}
	switch {
	case r.GetJwks() != "":
		p.JwksSourceSpecifier = inlineJWKS(r.GetJwks())
	case r.GetJwksUri() != "":
		host, port, err := jwksHost(r.GetJwksUri())
		if err != nil {
			b.warn(jr.key, jr.path+".jwksUri", "http", "%v; tokens of issuer %q fail until it is fixed", err, r.GetIssuer())
			p.JwksSourceSpecifier = inlineJWKS(emptyJWKS)
			break
		}
		if b.in.HasService != nil && !b.in.HasService("", host, port) {
			b.warn(jr.key, jr.path+".jwksUri", "http", "no service %s:%d in the mesh to fetch the JWKS through; add a ServiceEntry for it (until then tokens of issuer %q fail)", host, port, r.GetIssuer())
		}
		// skiff-proxy (like Envoy) fetches the keys through the cluster of
		// the JWKS host, as Istio configures in its envoy fetch mode.
		p.JwksSourceSpecifier = &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{
			HttpUri: &corev3.HttpUri{
				Uri:              r.GetJwksUri(),
				HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: outboundCluster(host, port)},
				Timeout:          timeout,
			},
			CacheDuration: durationpb.New(300e9),
		}}
	default:
		b.warn(jr.key, jr.path, "http", "neither jwks nor jwksUri is set and Skiff does not discover keys from the issuer's OpenID configuration; tokens of issuer %q fail until one is set", r.GetIssuer())
		p.JwksSourceSpecifier = inlineJWKS(emptyJWKS)
	}
	return p
}

func inlineJWKS(s string) *jwtv3.JwtProvider_LocalJwks {
	return &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: s}}}
}

// jwksHost is the host and port of a JWKS URI (443 for https, 80 for
// http when the URI names none).
func jwksHost(uri string) (string, uint32, error) {
	u, err := url.Parse(uri)
	if err != nil || u.Hostname() == "" {
		return "", 0, fmt.Errorf("%q is not an http(s) URL with a host", uri)
	}
	var port uint32
	switch u.Scheme {
	case "https":
		port = 443
	case "http":
		port = 80
	default:
		return "", 0, fmt.Errorf("%q: scheme must be http or https", uri)
	}
	if p := u.Port(); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return "", 0, fmt.Errorf("%q: port %q is not 1-65535", uri, p)
		}
		port = uint32(n)
	}
	return u.Hostname(), port, nil
}

// outboundCluster is Istio's name of the outbound cluster of host:port.
func outboundCluster(host string, port uint32) string {
	return fmt.Sprintf("outbound|%d||%s", port, host)
}

// spaceDelimitedClaims are scope and permission (always) and the rule's
// own, sorted and without duplicates, as Istio sets them.
func spaceDelimitedClaims(extra []string) []string {
	out := []string{"permission", "scope"}
	if extra == nil {
		return out
	}
	for _, c := range extra {
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out
}
