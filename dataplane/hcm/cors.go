package hcm

import (
	"math/rand/v2"
	"net/http"

	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"

	"github.com/skiff-mesh/skiff/dataplane/route"
)

// CorsTypeURL is the typed_config type of envoy.filters.http.cors. The
// policy itself comes from the route (route / virtual host cors, or
// typed_per_filter_config, compiled by the route package).
const CorsTypeURL = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"

func init() { RegisterFilter(CorsTypeURL, newCorsFilter) }

type corsFilter struct{}

func newCorsFilter(fc FilterConfig) (Filter, error) {
	if fc.TypedConfig != nil {
		if err := fc.TypedConfig.UnmarshalTo(&corsv3.Cors{}); err != nil {
			return nil, err
		}
	}
	f := corsFilter{}
	return func(next Handler) Handler {
		return HandlerFunc(func(s *Stream) { f.serve(s, next) })
	}, nil
}

func corsPolicy(s *Stream) *route.CorsPolicy {
	if s.Route == nil || s.Route.Action == nil {
		return nil
	}
	return s.Route.Action.Cors
}

// serve answers allowed preflights itself and marks simple cross-origin
// requests so their response gets the CORS headers, as Envoy's filter does.
func (f corsFilter) serve(s *Stream, next Handler) {
	p := corsPolicy(s)
	origin := firstValue(s.Req.Header, hdrOrigin)
	if p == nil || origin == "" || !p.EnabledFor(rand.Uint64()) {
		next.ServeStream(s)
		return
	}
	allowed := p.OriginAllowed(origin)
	if s.Req.Method == http.MethodOptions && firstValue(s.Req.Header, hdrACRequestMethod) != "" {
		if !allowed {
			if p.ForwardNotMatchingPreflights == nil || *p.ForwardNotMatchingPreflights {
				next.ServeStream(s)
				return
			}
			s.WriteHeader(http.StatusOK)
			return
		}
		h := s.Header()
		h[hdrACAllowOrigin] = []string{origin}
		if p.AllowCredentials != nil && *p.AllowCredentials {
			h[hdrACAllowCredentials] = trueValue
		}
		if p.AllowMethods != "" {
			h[hdrACAllowMethods] = []string{p.AllowMethods}
		}
		if p.AllowHeaders != "" {
			h[hdrACAllowHeaders] = []string{p.AllowHeaders}
		}
		if p.MaxAge != "" {
			h[hdrACMaxAge] = []string{p.MaxAge}
		}
		if p.AllowPrivateNetworkAccess != nil && *p.AllowPrivateNetworkAccess && firstValue(s.Req.Header, hdrACRequestPrivateNet) == "true" {
			h[hdrACAllowPrivateNet] = trueValue
		}
		s.WriteHeader(http.StatusOK)
		return
	}
	if allowed {
		s.AddResponseHook(f)
	}
	next.ServeStream(s)
}

// OnResponseHeaders adds the CORS response headers of an allowed origin.
func (corsFilter) OnResponseHeaders(s *Stream, _ int) {
	p := corsPolicy(s)
	if p == nil {
		return
	}
	h := s.Header()
	h[hdrACAllowOrigin] = []string{firstValue(s.Req.Header, hdrOrigin)}
	if p.AllowCredentials != nil && *p.AllowCredentials {
		h[hdrACAllowCredentials] = trueValue
	}
	if p.ExposeHeaders != "" {
		h[hdrACExposeHeaders] = []string{p.ExposeHeaders}
	}
}
