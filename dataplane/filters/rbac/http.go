package rbac

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/dataplane/hcm"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// Type URLs and names of the HTTP filter.
const (
	HTTPTypeURL         = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
	HTTPPerRouteTypeURL = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
	// HTTPFilterName is the filter's name and the dynamic metadata
	// namespace of its shadow results.
	HTTPFilterName = "envoy.filters.http.rbac"
	// DeniedBody is the body of Envoy's 403 for a denied request.
	DeniedBody = "RBAC: access denied"
)

// Dynamic metadata the filter sets, with Envoy's names.
const (
	commonNamespace       = "envoy.common"
	accessLogHintKey      = "access_log_hint"
	shadowPolicyIDKey     = "shadow_effective_policy_id"
	shadowEngineResultKey = "shadow_engine_result"
)

// The access_log_hint values are shared and must not be modified by
// readers.
var (
	logHintTrue  = map[string]any{accessLogHintKey: true}
	logHintFalse = map[string]any{accessLogHintKey: false}
)

func init() { hcm.RegisterFilter(HTTPTypeURL, newHTTPFilter) }

// httpConfig is a compiled RBAC: the enforced and the shadow engine, each
// nil when absent.
type httpConfig struct {
	engine, shadow *engine
	shadowPrefix   string
	// The metadata keys of the shadow result, with
	// shadow_rules_stat_prefix in front as Envoy writes them.
	shadowPolicyKey, shadowResultKey string
}

func compileHTTP(pb *httprbacv3.RBAC) (*httpConfig, error) {
	if pb.GetMatcher() != nil {
		return nil, errors.New("matcher: the RBAC matcher tree is not supported by skiff-proxy; use rules")
	}
	if pb.GetShadowMatcher() != nil {
		return nil, errors.New("shadow_matcher: the RBAC matcher tree is not supported by skiff-proxy; use shadow_rules")
	}
	c := &httpConfig{shadowPrefix: pb.GetShadowRulesStatPrefix()}
	c.shadowPolicyKey = c.shadowPrefix + shadowPolicyIDKey
	c.shadowResultKey = c.shadowPrefix + shadowEngineResultKey
	var err error
	if pb.GetRules() != nil {
		if c.engine, err = compileEngine(pb.GetRules(), compileOptions{}); err != nil {
			return nil, fmt.Errorf("rules.%w", err)
		}
	}
	if pb.GetShadowRules() != nil {
		if c.shadow, err = compileEngine(pb.GetShadowRules(), compileOptions{}); err != nil {
			return nil, fmt.Errorf("shadow_rules.%w", err)
		}
	}
	return c, nil
}

// parsePerRoute compiles an RBACPerRoute; an absent rbac disables the
// filter on the route (an empty httpConfig).
func parsePerRoute(a *anypb.Any) (*httpConfig, error) {
	pr := &httprbacv3.RBACPerRoute{}
	if err := a.UnmarshalTo(pr); err != nil {
		return nil, fmt.Errorf("typed_per_filter_config: want %s: %v", HTTPPerRouteTypeURL, err)
	}
	if pr.GetRbac() == nil {
		return &httpConfig{}, nil
	}
	c, err := compileHTTP(pr.GetRbac())
	if err != nil {
		return nil, fmt.Errorf("typed_per_filter_config: rbac.%w", err)
	}
	return c, nil
}

type httpFilter struct {
	name     string
	cfg      *httpConfig
	perRoute hcm.PerRouteCache[*httpConfig]
	rules    counters // allowed / denied
	shadow   counters // shadow_allowed / shadow_denied
	log      *slog.Logger
}

func newHTTPFilter(fc hcm.FilterConfig) (hcm.Filter, error) {
	pb := &httprbacv3.RBAC{}
	if fc.TypedConfig != nil {
		if err := fc.TypedConfig.UnmarshalTo(pb); err != nil {
			return nil, fmt.Errorf("typed_config: %w", err)
		}
	}
	cfg, err := compileHTTP(pb)
	if err != nil {
		return nil, err
	}
	st := fc.Stats
	if st == nil {
		st = stats.New()
	}
	sc := st.Scope("http."+fc.StatPrefix+".rbac", "http.rbac", stats.Tag{Name: "envoy_http_conn_manager_prefix", Value: fc.StatPrefix})
	f := &httpFilter{name: fc.Name, cfg: cfg, log: fc.Logger}
	if f.name == "" {
		f.name = HTTPFilterName
	}
	if f.log == nil {
		f.log = slog.Default()
	}
	f.rules = newCounters(sc, pb.GetRulesStatPrefix(), "allowed", "denied", cfg.engine, pb.GetTrackPerRuleStats())
	f.shadow = newCounters(sc, cfg.shadowPrefix, "shadow_allowed", "shadow_denied", cfg.shadow, pb.GetTrackPerRuleStats())
	return func(next hcm.Handler) hcm.Handler {
		return hcm.HandlerFunc(func(s *hcm.Stream) { f.serve(s, next) })
	}, nil
}

var attrsPool = sync.Pool{New: func() any { return new(attrs) }}

// noConn stands in for a stream without connection facts, so matchers need
// no nil checks; nothing writes to it.
var noConn core.ConnInfo

func (f *httpFilter) serve(s *hcm.Stream, next hcm.Handler) {
	cfg := f.cfg
	perRoute := false
	if pr, ok, err := f.perRoute.Get(s, f.name, parsePerRoute); ok {
		if err != nil {
			// A broken per-route policy must not open the route: refuse
			// the request and say why in the log.
			f.log.Error("rbac: invalid per-route config; denying", "route", routeName(s), "error", err)
			f.rules.denied.Inc()
			s.SendLocalReply(http.StatusForbidden, DeniedBody, 0)
			return
		}
		cfg, perRoute = pr, true
	}
	if cfg.engine == nil && cfg.shadow == nil {
		next.ServeStream(s)
		return
	}
	conn := s.Conn
	if conn == nil {
		conn = &noConn
	}
	a := attrsPool.Get().(*attrs)
	*a = attrs{conn: conn, req: s.Req, stream: s}
	allowed := true
	if cfg.shadow != nil {
		ok, matched := cfg.shadow.decide(a)
		f.recordShadow(s, cfg, ok, matched, perRoute)
	}
	if e := cfg.engine; e != nil {
		var matched int
		allowed, matched = e.decide(a)
		if e.action == rbacv3.RBAC_LOG {
			if matched >= 0 {
				s.SetMetadata(commonNamespace, logHintTrue)
			} else {
				s.SetMetadata(commonNamespace, logHintFalse)
			}
		}
		if perRoute {
			matched = -1 // per-policy counters belong to the filter's own rules
		}
		f.rules.record(allowed, matched)
	}
	*a = attrs{}
	attrsPool.Put(a)
	if !allowed {
		s.SendLocalReply(http.StatusForbidden, DeniedBody, 0)
		return
	}
	next.ServeStream(s)
}

func (f *httpFilter) recordShadow(s *hcm.Stream, cfg *httpConfig, ok bool, matched int, perRoute bool) {
	md := map[string]any{}
	if ok {
		md[cfg.shadowResultKey] = "allowed"
	} else {
		md[cfg.shadowResultKey] = "denied"
	}
	if matched >= 0 {
		md[cfg.shadowPolicyKey] = cfg.shadow.policies[matched].name
	}
	s.SetMetadata(HTTPFilterName, md)
	if perRoute {
		matched = -1
	}
	f.shadow.record(ok, matched)
}

func routeName(s *hcm.Stream) string {
	if s.Route == nil {
		return ""
	}
	return s.Route.Name
}
