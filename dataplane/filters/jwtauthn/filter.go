package jwtauthn

import (
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/dataplane/hcm"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

const (
	// TypeURL is the typed_config type of envoy.filters.http.jwt_authn.
	TypeURL = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
	// PerRouteTypeURL is its typed_per_filter_config type.
	PerRouteTypeURL = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig"
	// MetadataNamespace is the dynamic metadata namespace verified tokens
	// are written under: a map[string]any from payload_in_metadata (Istio
	// sets it to the issuer) to the payload as a map[string]any, whose
	// numbers are float64 as in a protobuf Struct. Payloads of cached
	// tokens are shared between requests: readers must not modify them.
	MetadataNamespace = "envoy.filters.http.jwt_authn"
)

// maxRealmLen is Envoy's MaximumUriLength for the www-authenticate realm.
const maxRealmLen = 256

func init() { hcm.RegisterFilter(TypeURL, New) }

type filter struct {
	name     string
	cfg      *config
	perRoute hcm.PerRouteCache[*jwtv3.PerRouteConfig]
	now      func() time.Time

	allowed, denied, corsBypassed *stats.Counter
}

// New builds a jwt_authn filter from its JwtAuthentication config. Remote
// JWKS are fetched through fc.Clusters.
func New(fc hcm.FilterConfig) (hcm.Filter, error) {
	pb := &jwtv3.JwtAuthentication{}
	if fc.TypedConfig != nil {
		if err := fc.TypedConfig.UnmarshalTo(pb); err != nil {
			return nil, fmt.Errorf("typed_config: %w", err)
		}
	}
	prefix := "http." + fc.StatPrefix + ".jwt_authn"
	if p := pb.GetStatPrefix(); p != "" {
		prefix += "." + p
	}
	sc := fc.Stats.Scope(prefix, "http.jwt_authn", stats.Tag{Name: "envoy_http_conn_manager_prefix", Value: fc.StatPrefix})
	env := fetchEnv{
		clusters: fc.Clusters, logger: fc.Logger, now: time.Now,
		fetchOK: sc.Counter("jwks_fetch_success"), fetchF: sc.Counter("jwks_fetch_failed"),
		cacheHit: sc.Counter("jwt_cache_hit"), cacheMiss: sc.Counter("jwt_cache_miss"),
	}
	if env.logger == nil {
		env.logger = slog.Default()
	}
	cfg, err := compile(pb, env)
	if err != nil {
		return nil, err
	}
	f := &filter{
		name: fc.Name, cfg: cfg, now: time.Now,
		allowed: sc.Counter("allowed"), denied: sc.Counter("denied"), corsBypassed: sc.Counter("cors_preflight_bypassed"),
	}
	for _, r := range cfg.remoteFetchers {
		r.start()
	}
	return func(next hcm.Handler) hcm.Handler {
		return hcm.HandlerFunc(func(s *hcm.Stream) { f.serve(s, next) })
	}, nil
}

func parsePerRoute(a *anypb.Any) (*jwtv3.PerRouteConfig, error) {
	pb := &jwtv3.PerRouteConfig{}
	if err := a.UnmarshalTo(pb); err != nil {
		return nil, err
	}
	return pb, nil
}

func (f *filter) serve(s *hcm.Stream, next hcm.Handler) {
	r := s.Req
	if f.cfg.bypassCORS && r.Method == http.MethodOptions && r.Header.Get("Origin") != "" && r.Header.Get("Access-Control-Request-Method") != "" {
		// A CORS preflight carries no credentials whatever the requirement.
		f.corsBypassed.Inc()
		f.allowed.Inc()
		next.ServeStream(s)
		return
	}
	v, msg := f.verifierFor(s)
	if msg != "" {
		f.denied.Inc()
		if f.cfg.stripFailure {
			msg = ""
		}
		s.SendLocalReply(http.StatusForbidden, msg, core.ResponseFlags(0))
		return
	}
	if v == nil {
		f.allowed.Inc()
		next.ServeStream(s)
		return
	}
	for _, h := range f.cfg.outputs {
		delete(r.Header, h)
	}
	rc := reqCtx{r: r, now: f.now()}
	st := v.verify(&rc)
	if rc.meta != nil {
		s.SetMetadata(MetadataNamespace, rc.meta)
	}
	if st != statusOK {
		f.denied.Inc()
		code := http.StatusUnauthorized
		if st == statusAudienceNotAllowed {
			code = http.StatusForbidden
		}
		if f.cfg.stripFailure {
			s.SendLocalReply(code, "", core.ResponseFlags(0))
			return
		}
		wa := `Bearer realm="` + f.realm(r) + `"`
		if st != statusMissing {
			wa += `, error="invalid_token"`
		}
		s.Header()["Www-Authenticate"] = []string{wa}
		s.SendLocalReply(code, st.String(), core.ResponseFlags(0))
		return
	}
	f.allowed.Inc()
	next.ServeStream(s)
}

// verifierFor picks the requirement of this request: the route's
// PerRouteConfig when it has one, else the first matching rule. A non-empty
// message means the per-route config is wrong and the request is refused.
func (f *filter) verifierFor(s *hcm.Stream) (verifier, string) {
	pr, ok, err := f.perRoute.Get(s, f.name, parsePerRoute)
	if ok {
		if err != nil {
			return nil, "Failed JWT authentication: invalid per-route config: " + err.Error()
		}
		if pr.GetDisabled() {
			return nil, ""
		}
		if v, found := f.cfg.requirements[pr.GetRequirementName()]; found {
			return v, ""
		}
		names := make([]string, 0, len(f.cfg.requirements))
		for n := range f.cfg.requirements {
			names = append(names, n)
		}
		slices.Sort(names)
		return nil, fmt.Sprintf("Failed JWT authentication: Wrong requirement_name: %s. It should be one of [%s]", pr.GetRequirementName(), strings.Join(names, ","))
	}
	if f.cfg.rules == nil {
		return nil, ""
	}
	e := f.cfg.rules.Select(s.Req)
	if e == nil {
		return nil, ""
	}
	i, _ := strconv.Atoi(e.Name)
	return f.cfg.ruleVerifiers[i], ""
}

// realm is the request's original URI without its query, as Envoy puts it
// in www-authenticate.
func (f *filter) realm(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p != "" {
		scheme = p
	}
	u := scheme + "://" + r.Host + r.URL.Path
	if len(u) > maxRealmLen {
		u = u[:maxRealmLen]
	}
	return u
}
