package route

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// corsFilterName is the HTTP filter whose typed_per_filter_config carries a
// route's CORS policy in current Envoy (and Istio) configuration.
const corsFilterName = "envoy.filters.http.cors"

const defaultRouteTimeout = 15 * time.Second

// globals is what every virtual host inherits from the route configuration.
type globals struct {
	rcPFC            map[string]*anypb.Any
	reqMut, respMut  *headerMutation
	mostSpecificWins bool
	internalOnly     []string
	maxBody          int
	mirrors          []Mirror
}

// vhostCtx is what every route inherits from its virtual host.
type vhostCtx struct {
	globals
	name         string
	pfc          map[string]*anypb.Any
	reqMut       *headerMutation
	respMut      *headerMutation
	retry        *RetryPolicy
	cors         *CorsPolicy
	mirrors      []Mirror
	attemptCount bool
	attemptResp  bool
	bufferLimit  uint64
}

func compileVhost(vh *routev3.VirtualHost, g globals) (*vhost, error) {
	v := &vhost{name: vh.GetName(), requireTLS: vh.GetRequireTls()}
	ctx := vhostCtx{
		globals: g, name: vh.GetName(),
		attemptCount: vh.GetIncludeRequestAttemptCount(), attemptResp: vh.GetIncludeAttemptCountInResponse(),
		bufferLimit: bufferLimit(vh.GetRequestBodyBufferLimit().GetValue(), vh.GetPerRequestBufferLimitBytes().GetValue()),
	}
	ctx.pfc = mergePFC(g.rcPFC, vh.GetTypedPerFilterConfig())
	var err error
	if ctx.reqMut, err = compileMutation(vh.GetRequestHeadersToAdd(), vh.GetRequestHeadersToRemove()); err != nil {
		return nil, fmt.Errorf("request_headers_to_add%w", err)
	}
	if ctx.respMut, err = compileMutation(vh.GetResponseHeadersToAdd(), vh.GetResponseHeadersToRemove()); err != nil {
		return nil, fmt.Errorf("response_headers_to_add%w", err)
	}
	if vh.GetRetryPolicy() != nil {
		if ctx.retry, err = compileRetry(vh.GetRetryPolicy()); err != nil {
			return nil, fmt.Errorf("retry_policy.%w", err)
		}
	}
	if ctx.cors, err = corsFrom(vh.GetCors(), ctx.pfc); err != nil {
		return nil, err
	}
	ctx.mirrors = g.mirrors
	if len(vh.GetRequestMirrorPolicies()) > 0 {
		if ctx.mirrors, err = compileMirrors(vh.GetRequestMirrorPolicies()); err != nil {
			return nil, err
		}
	}
	if vh.GetMatcher() != nil {
		return nil, errors.New("matcher: the generic matcher tree is not supported; use routes")
	}
	if v.requireTLS != routev3.VirtualHost_NONE {
		v.tlsRedir = &Entry{
			Name: "require_tls", VirtualHost: v.name, PerFilterConfig: ctx.pfc,
			Redirect: &Redirect{scheme: "https", code: http.StatusMovedPermanently},
		}
	}
	for i, r := range vh.GetRoutes() {
		cr, err := compileRoute(r, &ctx)
		switch {
		case err != nil && r.GetName() != "":
			return nil, fmt.Errorf("routes[%d] %q: %w", i, r.GetName(), err)
		case err != nil:
			return nil, fmt.Errorf("routes[%d].%w", i, err)
		}
		v.routes = append(v.routes, cr)
	}
	return v, nil
}

func mergePFC(base, over map[string]*anypb.Any) map[string]*anypb.Any {
	if len(over) == 0 {
		return base
	}
	out := make(map[string]*anypb.Any, len(base)+len(over))
	maps.Copy(out, base)
	maps.Copy(out, over)
	return out
}

func compileRoute(r *routev3.Route, vc *vhostCtx) (*compiledRoute, error) {
	m, err := compileMatch(r.GetMatch())
	if err != nil {
		return nil, err
	}
	e := &Entry{
		Name: r.GetName(), VirtualHost: vc.name,
		PerFilterConfig:  mergePFC(vc.pfc, r.GetTypedPerFilterConfig()),
		Decorator:        r.GetDecorator().GetOperation(),
		mostSpecificWins: vc.mostSpecificWins,
		internalOnly:     vc.internalOnly,
	}
	switch m.kind {
	case pPrefix, pSeparatedPrefix:
		e.prefix = m.path
	default:
		e.wholePath = true
	}
	rq, err := compileMutation(r.GetRequestHeadersToAdd(), r.GetRequestHeadersToRemove())
	if err != nil {
		return nil, fmt.Errorf("request_headers_to_add%w", err)
	}
	rs, err := compileMutation(r.GetResponseHeadersToAdd(), r.GetResponseHeadersToRemove())
	if err != nil {
		return nil, fmt.Errorf("response_headers_to_add%w", err)
	}
	e.reqMut = nonNil(rq, vc.reqMut, vc.globals.reqMut)
	e.respMut = nonNil(rs, vc.respMut, vc.globals.respMut)

	switch a := r.GetAction().(type) {
	case *routev3.Route_Route:
		if e.Action, err = compileAction(a.Route, e, vc); err != nil {
			return nil, fmt.Errorf("route.%w", err)
		}
		if l := bufferLimit(r.GetRequestBodyBufferLimit().GetValue(), r.GetPerRequestBufferLimitBytes().GetValue()); l > 0 {
			e.Action.BufferLimit = l
		}
	case *routev3.Route_Redirect:
		if e.Redirect, err = compileRedirect(a.Redirect, e); err != nil {
			return nil, fmt.Errorf("redirect.%w", err)
		}
	case *routev3.Route_DirectResponse:
		if e.Direct, err = compileDirect(a.DirectResponse, vc.maxBody); err != nil {
			return nil, fmt.Errorf("direct_response.%w", err)
		}
	case nil:
		return nil, errors.New("action: one of route, redirect, direct_response is required")
	default:
		return nil, fmt.Errorf("action: %T is not supported", a)
	}
	return &compiledRoute{match: m, entry: e}, nil
}

func nonNil(ms ...*headerMutation) []*headerMutation {
	var out []*headerMutation
	for _, m := range ms {
		if m != nil {
			out = append(out, m)
		}
	}
	return out
}

func compileAction(ra *routev3.RouteAction, e *Entry, vc *vhostCtx) (*Action, error) {
	a := &Action{
		Timeout: defaultRouteTimeout, ClusterNotFoundStatus: http.StatusServiceUnavailable,
		IncludeAttemptCount: vc.attemptCount, IncludeAttemptCountInResponse: vc.attemptResp,
		BufferLimit: vc.bufferLimit,
	}
	switch ra.GetClusterNotFoundResponseCode() {
	case routev3.RouteAction_NOT_FOUND:
		a.ClusterNotFoundStatus = http.StatusNotFound
	case routev3.RouteAction_INTERNAL_SERVER_ERROR:
		a.ClusterNotFoundStatus = http.StatusInternalServerError
	}
	switch cs := ra.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		if cs.Cluster == "" {
			return nil, errors.New("cluster: must not be empty")
		}
		a.Cluster = cs.Cluster
	case *routev3.RouteAction_ClusterHeader:
		if cs.ClusterHeader == "" {
			return nil, errors.New("cluster_header: must not be empty")
		}
		a.ClusterHeader = http.CanonicalHeaderKey(cs.ClusterHeader)
	case *routev3.RouteAction_WeightedClusters:
		if err := compileWeighted(a, cs.WeightedClusters, e); err != nil {
			return nil, err
		}
	case nil:
		return nil, errors.New("cluster_specifier: one of cluster, cluster_header, weighted_clusters is required")
	default:
		return nil, fmt.Errorf("cluster_specifier: %T is not supported", cs)
	}
	a.PrefixRewrite = ra.GetPrefixRewrite()
	if rr := ra.GetRegexRewrite(); rr != nil {
		if a.PrefixRewrite != "" {
			return nil, errors.New("regex_rewrite: cannot be combined with prefix_rewrite")
		}
		re, sub, err := compileRewrite(rr)
		if err != nil {
			return nil, fmt.Errorf("regex_rewrite.%w", err)
		}
		a.RegexRewrite, a.RegexSubstitution = re, sub
	}
	if ra.GetPathRewritePolicy() != nil || ra.GetPathRewrite() != "" {
		return nil, errors.New("path_rewrite: is not supported; use prefix_rewrite or regex_rewrite")
	}
	switch h := ra.GetHostRewriteSpecifier().(type) {
	case *routev3.RouteAction_HostRewriteLiteral:
		a.HostRewriteLiteral = h.HostRewriteLiteral
	case *routev3.RouteAction_AutoHostRewrite:
		a.AutoHostRewrite = h.AutoHostRewrite.GetValue()
	case *routev3.RouteAction_HostRewriteHeader:
		a.HostRewriteHeader = http.CanonicalHeaderKey(h.HostRewriteHeader)
	case *routev3.RouteAction_HostRewritePathRegex:
		re, sub, err := compileRewrite(h.HostRewritePathRegex)
		if err != nil {
			return nil, fmt.Errorf("host_rewrite_path_regex.%w", err)
		}
		a.HostRewritePathRegex, a.HostRewritePathSubstitution = re, sub
	case nil:
	default:
		return nil, fmt.Errorf("host_rewrite_specifier: %T is not supported", h)
	}
	a.AppendXForwardedHost = ra.GetAppendXForwardedHost()
	if ra.GetTimeout() != nil {
		d, err := duration(ra.GetTimeout(), "timeout")
		if err != nil {
			return nil, err
		}
		a.Timeout = d
	}
	if ra.GetIdleTimeout() != nil {
		d, err := duration(ra.GetIdleTimeout(), "idle_timeout")
		if err != nil {
			return nil, err
		}
		a.IdleTimeout = d
	}
	a.Retry = vc.retry
	if ra.GetRetryPolicy() != nil {
		p, err := compileRetry(ra.GetRetryPolicy())
		if err != nil {
			return nil, fmt.Errorf("retry_policy.%w", err)
		}
		a.Retry = p
	}
	if ra.GetRetryPolicyTypedConfig() != nil {
		return nil, errors.New("retry_policy_typed_config: is not supported; use retry_policy")
	}
	a.Mirrors = vc.mirrors
	if len(ra.GetRequestMirrorPolicies()) > 0 {
		ms, err := compileMirrors(ra.GetRequestMirrorPolicies())
		if err != nil {
			return nil, err
		}
		a.Mirrors = ms
	}
	for i, hp := range ra.GetHashPolicy() {
		p, err := compileHashPolicy(hp)
		if err != nil {
			return nil, fmt.Errorf("hash_policy[%d].%w", i, err)
		}
		a.HashPolicies = append(a.HashPolicies, p)
	}
	for i, u := range ra.GetUpgradeConfigs() {
		if u.GetUpgradeType() == "" {
			return nil, fmt.Errorf("upgrade_configs[%d].upgrade_type: must not be empty", i)
		}
		if a.Upgrades == nil {
			a.Upgrades = map[string]bool{}
		}
		a.Upgrades[strings.ToLower(u.GetUpgradeType())] = u.GetEnabled() == nil || u.GetEnabled().GetValue()
	}
	if msd := ra.GetMaxStreamDuration(); msd != nil {
		var err error
		if msd.GetMaxStreamDuration() != nil {
			if a.MaxStreamDuration, err = duration(msd.GetMaxStreamDuration(), "max_stream_duration.max_stream_duration"); err != nil {
				return nil, err
			}
		}
		if msd.GetGrpcTimeoutHeaderMax() != nil {
			d, err := duration(msd.GetGrpcTimeoutHeaderMax(), "max_stream_duration.grpc_timeout_header_max")
			if err != nil {
				return nil, err
			}
			a.MaxGRPCTimeout = &d
		}
		if msd.GetGrpcTimeoutHeaderOffset() != nil {
			if a.GRPCTimeoutOffset, err = duration(msd.GetGrpcTimeoutHeaderOffset(), "max_stream_duration.grpc_timeout_header_offset"); err != nil {
				return nil, err
			}
		}
	} else if ra.GetMaxGrpcTimeout() != nil {
		d, err := duration(ra.GetMaxGrpcTimeout(), "max_grpc_timeout")
		if err != nil {
			return nil, err
		}
		a.MaxGRPCTimeout = &d
		if ra.GetGrpcTimeoutOffset() != nil {
			if a.GRPCTimeoutOffset, err = duration(ra.GetGrpcTimeoutOffset(), "grpc_timeout_offset"); err != nil {
				return nil, err
			}
		}
	}
	a.Cors = vc.cors
	if ra.GetCors() != nil || e.PerFilterConfig[corsFilterName] != nil {
		c, err := corsFrom(ra.GetCors(), e.PerFilterConfig)
		if err != nil {
			return nil, err
		}
		if c != nil {
			a.Cors = c
		}
	}
	return a, nil
}

// bufferLimit prefers the newer 64-bit request_body_buffer_limit over
// per_request_buffer_limit_bytes, as Envoy does.
func bufferLimit(body uint64, perRequest uint32) uint64 {
	if body > 0 {
		return body
	}
	return uint64(perRequest)
}

func duration(d *durationpb.Duration, field string) (time.Duration, error) {
	if err := d.CheckValid(); err != nil {
		return 0, fmt.Errorf("%s: %w", field, err)
	}
	v := d.AsDuration()
	if v < 0 {
		return 0, fmt.Errorf("%s: must not be negative, got %s", field, v)
	}
	return v, nil
}

func compileWeighted(a *Action, wc *routev3.WeightedCluster, e *Entry) error {
	if len(wc.GetClusters()) == 0 {
		return errors.New("weighted_clusters.clusters: at least one cluster is required")
	}
	if _, ok := wc.GetRandomValueSpecifier().(*routev3.WeightedCluster_HeaderName); ok {
		return errors.New("weighted_clusters.header_name: is not supported")
	}
	for i, c := range wc.GetClusters() {
		if c.GetName() == "" && c.GetClusterHeader() == "" {
			return fmt.Errorf("weighted_clusters.clusters[%d]: name or cluster_header is required", i)
		}
		w := WeightedCluster{Name: c.GetName(), Weight: c.GetWeight().GetValue()}
		if c.GetName() == "" {
			w.ClusterHeader = http.CanonicalHeaderKey(c.GetClusterHeader())
		}
		w.PerFilterConfig = mergePFC(e.PerFilterConfig, c.GetTypedPerFilterConfig())
		w.HostRewriteLiteral = c.GetHostRewriteLiteral()
		var err error
		if w.reqMut, err = compileMutation(c.GetRequestHeadersToAdd(), c.GetRequestHeadersToRemove()); err != nil {
			return fmt.Errorf("weighted_clusters.clusters[%d].request_headers_to_add%w", i, err)
		}
		if w.respMut, err = compileMutation(c.GetResponseHeadersToAdd(), c.GetResponseHeadersToRemove()); err != nil {
			return fmt.Errorf("weighted_clusters.clusters[%d].response_headers_to_add%w", i, err)
		}
		a.totalWeight += uint64(w.Weight)
		a.Weighted = append(a.Weighted, w)
	}
	if a.totalWeight == 0 {
		return errors.New("weighted_clusters.clusters: the sum of weights must be greater than 0")
	}
	if tw := wc.GetTotalWeight(); tw != nil && uint64(tw.GetValue()) != a.totalWeight {
		return fmt.Errorf("weighted_clusters.total_weight: %d does not equal the sum of cluster weights %d", tw.GetValue(), a.totalWeight)
	}
	return nil
}

func compileDirect(d *routev3.DirectResponseAction, maxBody int) (*DirectResponse, error) {
	if d.GetStatus() < 200 || d.GetStatus() > 599 {
		return nil, fmt.Errorf("status: %d is not in [200, 599]", d.GetStatus())
	}
	out := &DirectResponse{Status: int(d.GetStatus())}
	if b := d.GetBody(); b != nil {
		switch {
		case b.GetFilename() != "":
			data, err := os.ReadFile(b.GetFilename())
			if err != nil {
				return nil, fmt.Errorf("body.filename: %w", err)
			}
			out.Body = data
		case b.GetInlineBytes() != nil:
			out.Body = b.GetInlineBytes()
		case b.GetInlineString() != "":
			out.Body = []byte(b.GetInlineString())
		case b.GetEnvironmentVariable() != "":
			out.Body = []byte(os.Getenv(b.GetEnvironmentVariable()))
		}
		if len(out.Body) > maxBody {
			return nil, fmt.Errorf("body: %d bytes exceeds max_direct_response_body_size_bytes %d", len(out.Body), maxBody)
		}
	}
	if d.GetBodyFormat() != nil {
		return nil, errors.New("body_format: is not supported")
	}
	return out, nil
}

// corsFrom compiles the route or virtual host cors field, or failing that
// the envoy.filters.http.cors entry of typed_per_filter_config.
func corsFrom(legacy *routev3.CorsPolicy, pfc map[string]*anypb.Any) (*CorsPolicy, error) {
	if legacy != nil {
		c, err := compileLegacyCors(legacy)
		if err != nil {
			return nil, fmt.Errorf("cors.%w", err)
		}
		return c, nil
	}
	anyCfg := pfc[corsFilterName]
	if anyCfg == nil {
		return nil, nil
	}
	if anyCfg.MessageIs((*routev3.FilterConfig)(nil)) {
		// The FilterConfig wrapper (is_optional / disabled) carries the
		// policy in its config field.
		var fc routev3.FilterConfig
		if err := anyCfg.UnmarshalTo(&fc); err != nil {
			return nil, fmt.Errorf("typed_per_filter_config[%q]: %w", corsFilterName, err)
		}
		if fc.GetDisabled() || fc.GetConfig() == nil {
			return nil, nil
		}
		anyCfg = fc.GetConfig()
	}
	var p corsv3.CorsPolicy
	if err := anyCfg.UnmarshalTo(&p); err != nil {
		return nil, fmt.Errorf("typed_per_filter_config[%q]: %w", corsFilterName, err)
	}
	c, err := compileCors(&p)
	if err != nil {
		return nil, fmt.Errorf("typed_per_filter_config[%q].%w", corsFilterName, err)
	}
	return c, nil
}
