package route

import (
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// CorsPolicy is a compiled CORS policy for the cors filter to enforce.
type CorsPolicy struct {
	AllowOrigins                              []StringMatcher
	AllowMethods, AllowHeaders, ExposeHeaders string
	MaxAge                                    string
	AllowCredentials                          *bool
	AllowPrivateNetworkAccess                 *bool
	ForwardNotMatchingPreflights              *bool
	// Enabled is false when filter_enabled is 0%; EnabledFraction is the
	// share (parts per million) of requests the policy is enforced on, used
	// by EnabledFor. ShadowEnabled likewise for evaluating without enforcing.
	Enabled, ShadowEnabled                 bool
	EnabledFraction, ShadowEnabledFraction uint64
}

// EnabledFor reports whether the policy is enforced for a request, from a
// uniformly random rnd.
func (c *CorsPolicy) EnabledFor(rnd uint64) bool {
	return c.EnabledFraction >= fracScale || rnd%fracScale < c.EnabledFraction
}

// ShadowFor reports whether the policy is evaluated in shadow mode.
func (c *CorsPolicy) ShadowFor(rnd uint64) bool {
	return c.ShadowEnabledFraction > 0 && rnd%fracScale < c.ShadowEnabledFraction
}

// OriginAllowed reports whether origin matches one of the allowed origins.
func (c *CorsPolicy) OriginAllowed(origin string) bool {
	if origin == "" {
		return false
	}
	for i := range c.AllowOrigins {
		if c.AllowOrigins[i].Match(origin) {
			return true
		}
	}
	return false
}

func compileLegacyCors(p *routev3.CorsPolicy) (*CorsPolicy, error) {
	var enabled *corev3.RuntimeFractionalPercent
	if fe, ok := p.GetEnabledSpecifier().(*routev3.CorsPolicy_FilterEnabled); ok {
		enabled = fe.FilterEnabled
	}
	return buildCors(p.GetAllowOriginStringMatch(), p.GetAllowMethods(), p.GetAllowHeaders(), p.GetExposeHeaders(), p.GetMaxAge(),
		p.GetAllowCredentials(), p.GetAllowPrivateNetworkAccess(), p.GetForwardNotMatchingPreflights(), enabled, p.GetShadowEnabled())
}

func compileCors(p *corsv3.CorsPolicy) (*CorsPolicy, error) {
	return buildCors(p.GetAllowOriginStringMatch(), p.GetAllowMethods(), p.GetAllowHeaders(), p.GetExposeHeaders(), p.GetMaxAge(),
		p.GetAllowCredentials(), p.GetAllowPrivateNetworkAccess(), p.GetForwardNotMatchingPreflights(), p.GetFilterEnabled(), p.GetShadowEnabled())
}

func buildCors(origins []*matcherv3.StringMatcher, methods, headers, expose, maxAge string,
	creds, pna, fwd *wrapperspb.BoolValue, enabled, shadow *corev3.RuntimeFractionalPercent) (*CorsPolicy, error) {
	c := &CorsPolicy{AllowMethods: methods, AllowHeaders: headers, ExposeHeaders: expose, MaxAge: maxAge}
	for i, o := range origins {
		m, err := NewStringMatcher(o)
		if err != nil {
			return nil, fmt.Errorf("allow_origin_string_match[%d].%w", i, err)
		}
		c.AllowOrigins = append(c.AllowOrigins, m)
	}
	c.AllowCredentials = boolPtr(creds)
	c.AllowPrivateNetworkAccess = boolPtr(pna)
	c.ForwardNotMatchingPreflights = boolPtr(fwd)
	c.EnabledFraction, _ = fractionOf(enabled)
	c.Enabled = c.EnabledFraction > 0
	if shadow != nil {
		c.ShadowEnabledFraction, _ = fractionOf(shadow)
		c.ShadowEnabled = c.ShadowEnabledFraction > 0
	}
	return c, nil
}

func boolPtr(b *wrapperspb.BoolValue) *bool {
	if b == nil {
		return nil
	}
	v := b.GetValue()
	return &v
}
