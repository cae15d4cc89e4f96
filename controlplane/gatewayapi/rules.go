package gatewayapi

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// httpRules converts an HTTPRoute's rules. A rule with several matches
// becomes one Istio route per match, so that each can be ordered by its
// own precedence.
func (c *converter) httpRules(o *config.Object, rules []gatewayv1.HTTPRouteRule, enforce bool) ruleSet {
	var set ruleSet
	for i, r := range rules {
		path := fmt.Sprintf("spec.rules[%d]", i)
		base := &networking.HTTPRoute{Name: routeName(o, r.Name, i)}
		if r.SessionPersistence != nil {
			// Refused rather than ignored: clients would silently lose stickiness.
			return ruleSet{invalid: path + ".sessionPersistence: not supported: remove it, or use an Istio DestinationRule with consistentHash"}
		}
		if msg := c.applyFilters(o, base, r.Filters, path, enforce, &set); msg != "" {
			return ruleSet{invalid: msg}
		}
		if base.Redirect != nil && base.Rewrite != nil {
			return ruleSet{invalid: path + ".filters: RequestRedirect and URLRewrite cannot be combined: keep one", invalidReason: string(gatewayv1.RouteReasonIncompatibleFilters)}
		}
		if msg := applyTimeouts(base, r.Timeouts, r.Retry, path); msg != "" {
			return ruleSet{invalid: msg}
		}
		if msg := c.applyBackends(o, base, r.BackendRefs, path, enforce, &set); msg != "" {
			return ruleSet{invalid: msg}
		}
		if msg := expandMatches(&set, base, r.Matches, path, httpMatch); msg != "" {
			return ruleSet{invalid: msg}
		}
	}
	return set
}

// grpcRules converts a GRPCRoute's rules; gRPC service and method matches
// become matches on the request path "/<service>/<method>".
func (c *converter) grpcRules(o *config.Object, rules []gatewayv1.GRPCRouteRule, enforce bool) ruleSet {
	var set ruleSet
	for i, r := range rules {
		path := fmt.Sprintf("spec.rules[%d]", i)
		base := &networking.HTTPRoute{Name: routeName(o, r.Name, i)}
		if r.SessionPersistence != nil {
			// Refused rather than ignored: clients would silently lose stickiness.
			return ruleSet{invalid: path + ".sessionPersistence: not supported: remove it, or use an Istio DestinationRule with consistentHash"}
		}
		if msg := c.applyFilters(o, base, grpcFilters(r.Filters), path, enforce, &set); msg != "" {
			return ruleSet{invalid: msg}
		}
		backends := make([]gatewayv1.HTTPBackendRef, len(r.BackendRefs))
		for k, b := range r.BackendRefs {
			backends[k] = gatewayv1.HTTPBackendRef{BackendRef: b.BackendRef, Filters: grpcFilters(b.Filters)}
		}
		if msg := c.applyBackends(o, base, backends, path, enforce, &set); msg != "" {
			return ruleSet{invalid: msg}
		}
		if msg := expandMatches(&set, base, r.Matches, path, grpcMatch); msg != "" {
			return ruleSet{invalid: msg}
		}
	}
	return set
}

// expandMatches adds one Istio route per Gateway API match, or base itself
// when the rule has none. Each copy keeps a single match so that the
// precedence sort can order them one by one, as the Gateway API orders
// matches rather than rules.
func expandMatches[M any](set *ruleSet, base *networking.HTTPRoute, matches []M, path string,
	conv func(M, string) (*networking.HTTPMatchRequest, string)) string {
	if len(matches) == 0 {
		set.http = append(set.http, base)
		return ""
	}
	for j, m := range matches {
		mr, msg := conv(m, fmt.Sprintf("%s.matches[%d]", path, j))
		if msg != "" {
			return msg
		}
		rt := base.DeepCopy()
		rt.Match = []*networking.HTTPMatchRequest{mr}
		set.http = append(set.http, rt)
	}
	return ""
}

// routeName names an Istio route "<namespace>.<route>.<rule name or index>",
// as Istio does, so access logs and stats name the rule.
func routeName(o *config.Object, name *gatewayv1.SectionName, i int) string {
	if name != nil && *name != "" {
		return fmt.Sprintf("%s.%s.%s", o.Meta.Namespace, o.Meta.Name, *name)
	}
	return fmt.Sprintf("%s.%s.%d", o.Meta.Namespace, o.Meta.Name, i)
}

// grpcFilters maps GRPCRoute filters onto the HTTPRoute filters of the same
// name, whose fields they share.
func grpcFilters(fs []gatewayv1.GRPCRouteFilter) []gatewayv1.HTTPRouteFilter {
	out := make([]gatewayv1.HTTPRouteFilter, len(fs))
	for i, f := range fs {
		out[i] = gatewayv1.HTTPRouteFilter{
			Type:                   gatewayv1.HTTPRouteFilterType(f.Type),
			RequestHeaderModifier:  f.RequestHeaderModifier,
			ResponseHeaderModifier: f.ResponseHeaderModifier,
			RequestMirror:          f.RequestMirror,
			ExtensionRef:           f.ExtensionRef,
		}
	}
	return out
}

func httpMatch(m gatewayv1.HTTPRouteMatch, path string) (*networking.HTTPMatchRequest, string) {
	out := &networking.HTTPMatchRequest{}
	pt, pv := gatewayv1.PathMatchPathPrefix, "/"
	if m.Path != nil {
		pt, pv = deref(m.Path.Type, gatewayv1.PathMatchPathPrefix), deref(m.Path.Value, "/")
	}
	switch pt {
	case gatewayv1.PathMatchPathPrefix:
		out.Uri = &networking.StringMatch{MatchType: &networking.StringMatch_Prefix{Prefix: pv}}
	case gatewayv1.PathMatchExact:
		out.Uri = &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: pv}}
	case gatewayv1.PathMatchRegularExpression:
		if msg := checkRegex(pv, path+".path.value"); msg != "" {
			return nil, msg
		}
		out.Uri = &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: pv}}
	default:
		return nil, fmt.Sprintf("%s.path.type: %q is not supported: use Exact, PathPrefix or RegularExpression", path, pt)
	}
	for i, h := range m.Headers {
		sm, msg := stringMatch(string(deref(h.Type, gatewayv1.HeaderMatchExact)), h.Value, fmt.Sprintf("%s.headers[%d]", path, i))
		if msg != "" {
			return nil, msg
		}
		out.Headers = addMatch(out.Headers, strings.ToLower(string(h.Name)), sm)
	}
	for i, q := range m.QueryParams {
		sm, msg := stringMatch(string(deref(q.Type, gatewayv1.QueryParamMatchExact)), q.Value, fmt.Sprintf("%s.queryParams[%d]", path, i))
		if msg != "" {
			return nil, msg
		}
		out.QueryParams = addMatch(out.QueryParams, string(q.Name), sm)
	}
	if m.Method != nil {
		out.Method = &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: string(*m.Method)}}
	}
	return out, ""
}

func grpcMatch(m gatewayv1.GRPCRouteMatch, path string) (*networking.HTTPMatchRequest, string) {
	out := &networking.HTTPMatchRequest{}
	if mm := m.Method; mm != nil {
		svc, method := deref(mm.Service, ""), deref(mm.Method, "")
		switch t := deref(mm.Type, gatewayv1.GRPCMethodMatchExact); t {
		case gatewayv1.GRPCMethodMatchExact:
			switch {
			case svc != "" && method != "":
				out.Uri = &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: "/" + svc + "/" + method}}
			case svc != "":
				out.Uri = &networking.StringMatch{MatchType: &networking.StringMatch_Prefix{Prefix: "/" + svc + "/"}}
			case method != "":
				out.Uri = &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: "/[^/]+/" + regexp.QuoteMeta(method)}}
			}
		case gatewayv1.GRPCMethodMatchRegularExpression:
			re := "/" + cmpOrDefault(svc, "[^/]+") + "/" + cmpOrDefault(method, "[^/]+")
			if msg := checkRegex(re, path+".method"); msg != "" {
				return nil, msg
			}
			out.Uri = &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: re}}
		default:
			return nil, fmt.Sprintf("%s.method.type: %q is not supported: use Exact or RegularExpression", path, t)
		}
	}
	for i, h := range m.Headers {
		sm, msg := stringMatch(string(deref(h.Type, gatewayv1.GRPCHeaderMatchExact)), h.Value, fmt.Sprintf("%s.headers[%d]", path, i))
		if msg != "" {
			return nil, msg
		}
		out.Headers = addMatch(out.Headers, strings.ToLower(string(h.Name)), sm)
	}
	return out, ""
}

func cmpOrDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// addMatch keeps the first of several matches on one name, as the Gateway
// API requires.
func addMatch(m map[string]*networking.StringMatch, name string, sm *networking.StringMatch) map[string]*networking.StringMatch {
	if m == nil {
		m = map[string]*networking.StringMatch{}
	}
	if _, dup := m[name]; !dup {
		m[name] = sm
	}
	return m
}

func stringMatch(typ, value, path string) (*networking.StringMatch, string) {
	switch typ {
	case "Exact":
		return &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: value}}, ""
	case "RegularExpression":
		if msg := checkRegex(value, path+".value"); msg != "" {
			return nil, msg
		}
		return &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: value}}, ""
	}
	return nil, fmt.Sprintf("%s.type: %q is not supported: use Exact or RegularExpression", path, typ)
}

// checkRegex rejects what the proxy's RE2 engine would; Go's regexp is RE2.
func checkRegex(re, path string) string {
	if _, err := regexp.Compile(re); err != nil {
		return fmt.Sprintf("%s: invalid regular expression %q: %v", path, re, err)
	}
	return ""
}

// applyFilters converts a rule's filters onto the Istio route. It returns a
// message when a filter cannot be served at all.
func (c *converter) applyFilters(o *config.Object, rt *networking.HTTPRoute, fs []gatewayv1.HTTPRouteFilter, path string, enforce bool, set *ruleSet) string {
	for i, f := range fs {
		at := fmt.Sprintf("%s.filters[%d]", path, i)
		switch f.Type {
		case gatewayv1.HTTPRouteFilterRequestHeaderModifier:
			if f.RequestHeaderModifier != nil {
				if rt.Headers == nil {
					rt.Headers = &networking.Headers{}
				}
				rt.Headers.Request = headerOps(f.RequestHeaderModifier)
			}
		case gatewayv1.HTTPRouteFilterResponseHeaderModifier:
			if f.ResponseHeaderModifier != nil {
				if rt.Headers == nil {
					rt.Headers = &networking.Headers{}
				}
				rt.Headers.Response = headerOps(f.ResponseHeaderModifier)
			}
		case gatewayv1.HTTPRouteFilterRequestRedirect:
			if f.RequestRedirect != nil {
				rt.Redirect = redirect(f.RequestRedirect)
			}
		case gatewayv1.HTTPRouteFilterURLRewrite:
			if f.URLRewrite != nil {
				rt.Rewrite = rewrite(f.URLRewrite)
			}
		case gatewayv1.HTTPRouteFilterCORS:
			if f.CORS != nil {
				rt.CorsPolicy = cors(f.CORS)
			}
		case gatewayv1.HTTPRouteFilterRequestMirror:
			if f.RequestMirror == nil {
				continue
			}
			dest, refErr := c.destination(o, f.RequestMirror.BackendRef, at+".requestMirror.backendRef", enforce)
			if refErr != nil {
				if set.refErr == nil {
					set.refErr = refErr
				}
				continue
			}
			m := &networking.HTTPMirrorPolicy{Destination: dest}
			switch {
			case f.RequestMirror.Percent != nil:
				m.Percentage = &networking.Percent{Value: float64(*f.RequestMirror.Percent)}
			case f.RequestMirror.Fraction != nil:
				den := float64(deref(f.RequestMirror.Fraction.Denominator, 100))
				m.Percentage = &networking.Percent{Value: float64(f.RequestMirror.Fraction.Numerator) * 100 / den}
			}
			rt.Mirrors = append(rt.Mirrors, m)
		default:
			return fmt.Sprintf("%s.type: filter %s is not supported: remove it or use RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite, RequestMirror or CORS", at, f.Type)
		}
	}
	return ""
}

func headerOps(f *gatewayv1.HTTPHeaderFilter) *networking.Headers_HeaderOperations {
	return &networking.Headers_HeaderOperations{Set: headerMap(f.Set), Add: headerMap(f.Add), Remove: f.Remove}
}

func headerMap(hs []gatewayv1.HTTPHeader) map[string]string {
	if len(hs) == 0 {
		return nil
	}
	m := map[string]string{}
	for _, h := range hs {
		k := strings.ToLower(string(h.Name))
		if _, dup := m[k]; !dup {
			m[k] = h.Value
		}
	}
	return m
}

func redirect(f *gatewayv1.HTTPRequestRedirectFilter) *networking.HTTPRedirect {
	r := &networking.HTTPRedirect{RedirectCode: uint32(deref(f.StatusCode, 302))}
	if f.Scheme != nil {
		r.Scheme = *f.Scheme
	}
	if f.Hostname != nil {
		r.Authority = string(*f.Hostname)
	}
	switch {
	case f.Port != nil:
		r.RedirectPort = &networking.HTTPRedirect_Port{Port: uint32(*f.Port)}
	case f.Scheme == nil:
		// The Gateway API keeps the request's port when neither is set;
		// with a new scheme the port follows the scheme.
		r.RedirectPort = &networking.HTTPRedirect_DerivePort{DerivePort: networking.HTTPRedirect_FROM_REQUEST_PORT}
	}
	if p := f.Path; p != nil {
		switch p.Type {
		case gatewayv1.FullPathHTTPPathModifier:
			r.Uri = deref(p.ReplaceFullPath, "")
		case gatewayv1.PrefixMatchHTTPPathModifier:
			// Istio's marker for "the matched prefix replaced by".
			r.Uri = "%PREFIX()%" + deref(p.ReplacePrefixMatch, "")
		}
	}
	return r
}

func rewrite(f *gatewayv1.HTTPURLRewriteFilter) *networking.HTTPRewrite {
	r := &networking.HTTPRewrite{}
	if f.Hostname != nil {
		r.Authority = string(*f.Hostname)
	}
	if p := f.Path; p != nil {
		switch p.Type {
		case gatewayv1.PrefixMatchHTTPPathModifier:
			// Without the trailing slash, so "/old/x" becomes "/new/x"; a
			// bare "/" removes the prefix.
			r.Uri = strings.TrimSuffix(deref(p.ReplacePrefixMatch, "/"), "/")
			if r.Uri == "" {
				r.Uri = "/"
			}
		case gatewayv1.FullPathHTTPPathModifier:
			r.UriRegexRewrite = &networking.RegexRewrite{Match: "/.*", Rewrite: deref(p.ReplaceFullPath, "/")}
		}
	}
	return r
}

// anyOrigin matches every serialized origin ("scheme://host[:port]"),
// Istio's form of the Gateway API's "*".
const anyOrigin = `^[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s?#]+$`

func cors(f *gatewayv1.HTTPCORSFilter) *networking.CorsPolicy {
	p := &networking.CorsPolicy{UnmatchedPreflights: networking.CorsPolicy_IGNORE}
	for _, o := range f.AllowOrigins {
		switch o := string(o); {
		case o == "*":
			p.AllowOrigins = append(p.AllowOrigins, &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: anyOrigin}})
		case strings.Contains(o, "*"):
			re := "^" + strings.ReplaceAll(regexp.QuoteMeta(o), `\*`, ".*") + "$"
			p.AllowOrigins = append(p.AllowOrigins, &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: re}})
		case o != "":
			p.AllowOrigins = append(p.AllowOrigins, &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: o}})
		}
	}
	if deref(f.AllowCredentials, false) {
		p.AllowCredentials = wrapperspb.Bool(true)
	}
	for _, m := range f.AllowMethods {
		p.AllowMethods = append(p.AllowMethods, string(m))
	}
	for _, h := range f.AllowHeaders {
		p.AllowHeaders = append(p.AllowHeaders, string(h))
	}
	for _, h := range f.ExposeHeaders {
		p.ExposeHeaders = append(p.ExposeHeaders, string(h))
	}
	if f.MaxAge > 0 {
		p.MaxAge = durationpb.New(time.Duration(f.MaxAge) * time.Second)
	}
	return p
}

// retryOn is what Istio retries on for a Gateway API retry, before the
// route's own status codes.
const retryOn = "connect-failure,refused-stream,unavailable,cancelled"

func applyTimeouts(rt *networking.HTTPRoute, t *gatewayv1.HTTPRouteTimeouts, retry *gatewayv1.HTTPRouteRetry, path string) string {
	if retry != nil {
		rt.Retries = &networking.HTTPRetry{}
		if n := deref(retry.Attempts, 2); n > 0 {
			on := retryOn
			for _, code := range retry.Codes {
				on += "," + strconv.Itoa(int(code))
			}
			rt.Retries = &networking.HTTPRetry{Attempts: int32(n), RetryOn: on}
			if retry.Backoff != nil {
				d, err := time.ParseDuration(string(*retry.Backoff))
				if err != nil {
					return fmt.Sprintf("%s.retry.backoff: %q is not a duration (e.g. 100ms, 1s)", path, *retry.Backoff)
				}
				rt.Retries.Backoff = durationpb.New(d)
			}
		}
	}
	if t == nil {
		return ""
	}
	if t.Request != nil {
		d, err := time.ParseDuration(string(*t.Request))
		if err != nil {
			return fmt.Sprintf("%s.timeouts.request: %q is not a duration (e.g. 10s, 500ms)", path, *t.Request)
		}
		if d != 0 { // 0s means no timeout, which is also Istio's default
			rt.Timeout = durationpb.New(d)
		}
	}
	if t.BackendRequest != nil {
		d, err := time.ParseDuration(string(*t.BackendRequest))
		if err != nil {
			return fmt.Sprintf("%s.timeouts.backendRequest: %q is not a duration (e.g. 10s, 500ms)", path, *t.BackendRequest)
		}
		if d != 0 {
			// Per try when retrying, else it bounds the one upstream request.
			if rt.Retries != nil && rt.Retries.Attempts > 0 {
				rt.Retries.PerTryTimeout = durationpb.New(d)
			} else {
				rt.Timeout = durationpb.New(d)
			}
		}
	}
	return ""
}

// applyBackends sets the route's weighted destinations. With no usable
// backend (none listed, all weight 0, or none resolvable) and no redirect,
// the route answers 500, as the Gateway API requires.
func (c *converter) applyBackends(o *config.Object, rt *networking.HTTPRoute, refs []gatewayv1.HTTPBackendRef, path string, enforce bool, set *ruleSet) string {
	if rt.Redirect != nil {
		return ""
	}
	for _, d := range c.weighted(o, refs, path, enforce, set) {
		hd := &networking.HTTPRouteDestination{Destination: d.dest, Weight: d.weight}
		for i, f := range d.ref.Filters {
			at := fmt.Sprintf("%s.backendRefs[%d].filters[%d]", path, d.index, i)
			switch f.Type {
			case gatewayv1.HTTPRouteFilterRequestHeaderModifier, gatewayv1.HTTPRouteFilterResponseHeaderModifier:
				if hd.Headers == nil {
					hd.Headers = &networking.Headers{}
				}
				if f.RequestHeaderModifier != nil {
					hd.Headers.Request = headerOps(f.RequestHeaderModifier)
				}
				if f.ResponseHeaderModifier != nil {
					hd.Headers.Response = headerOps(f.ResponseHeaderModifier)
				}
			default:
				return fmt.Sprintf("%s.type: filter %s is not supported on a backendRef: use RequestHeaderModifier or ResponseHeaderModifier", at, f.Type)
			}
		}
		rt.Route = append(rt.Route, hd)
	}
	if len(rt.Route) == 0 {
		// Nothing is forwarded, so what shapes a forwarded request goes.
		rt.DirectResponse = &networking.HTTPDirectResponse{Status: 500}
		rt.Rewrite, rt.Mirrors, rt.Retries = nil, nil, nil
	}
	return ""
}

type weightedDest struct {
	dest   *networking.Destination
	weight int32
	ref    gatewayv1.HTTPBackendRef
	index  int
}

// weighted resolves backendRefs with a weight above 0. A single destination
// gets weight 0 (Istio's "all traffic"); unresolvable ones are dropped and
// recorded in set.refErr.
func (c *converter) weighted(o *config.Object, refs []gatewayv1.HTTPBackendRef, path string, enforce bool, set *ruleSet) []weightedDest {
	var out []weightedDest
	for i, r := range refs {
		w := deref(r.Weight, 1)
		if w == 0 {
			continue
		}
		dest, refErr := c.destination(o, r.BackendObjectReference, fmt.Sprintf("%s.backendRefs[%d]", path, i), enforce)
		if refErr != nil {
			if set.refErr == nil {
				set.refErr = refErr
			}
			continue
		}
		out = append(out, weightedDest{dest: dest, weight: w, ref: r, index: i})
	}
	switch {
	case len(out) == 1:
		out[0].weight = 0
	case len(out) > 1:
		normalize(out)
	}
	return out
}

// normalize scales weights to sum to 100, as Istio's VirtualService wants,
// keeping the Gateway API's proportions up to rounding: each gets the floor
// of its share, and the points left go to the largest remainders.
func normalize(ds []weightedDest) {
	total := int64(0)
	for _, d := range ds {
		total += int64(d.weight)
	}
	if total == 100 {
		return
	}
	rem := make([]int64, len(ds))
	left := int32(100)
	for i := range ds {
		scaled := int64(ds[i].weight) * 100
		ds[i].weight = int32(scaled / total)
		rem[i] = scaled % total
		left -= ds[i].weight
	}
	for ; left > 0; left-- {
		best := 0
		for i := range rem {
			if rem[i] > rem[best] {
				best = i
			}
		}
		ds[best].weight++
		rem[best] = -1
	}
}

// destination resolves a backend reference to an Istio destination.
func (c *converter) destination(o *config.Object, ref gatewayv1.BackendObjectReference, path string, enforce bool) (*networking.Destination, *refError) {
	group, kind := string(deref(ref.Group, "")), string(deref(ref.Kind, "Service"))
	ns := string(deref(ref.Namespace, gatewayv1.Namespace(o.Meta.Namespace)))
	port := func() *networking.PortSelector {
		if ref.Port == nil {
			return nil
		}
		return &networking.PortSelector{Number: uint32(*ref.Port)}
	}
	switch {
	case group == "" && kind == "Service":
		if ref.Port == nil {
			return nil, &refError{string(gatewayv1.RouteReasonUnsupportedValue), path + ".port: required for a Service backend"}
		}
		if ns != o.Meta.Namespace && enforce && !c.granted(o.Kind, o.Meta.Namespace, "", "Service", ns, string(ref.Name)) {
			return nil, &refError{string(gatewayv1.RouteReasonRefNotPermitted),
				fmt.Sprintf("%s: Service %s/%s is in another namespace and no ReferenceGrant in %s allows %ss from %s to use it",
					path, ns, ref.Name, ns, o.Kind.Kind, o.Meta.Namespace)}
		}
		if c.services[nsName{ns, string(ref.Name)}] == nil {
			return nil, &refError{string(gatewayv1.RouteReasonBackendNotFound), fmt.Sprintf("%s: Service %s/%s not found", path, ns, ref.Name)}
		}
		return &networking.Destination{Host: fmt.Sprintf("%s.%s.svc.%s", ref.Name, ns, c.opts.DomainSuffix), Port: port()}, nil
	case group == "networking.istio.io" && kind == "Hostname":
		// Istio's extension: a ServiceEntry host, named as is.
		if ref.Port == nil {
			return nil, &refError{string(gatewayv1.RouteReasonUnsupportedValue), path + ".port: required for a Hostname backend"}
		}
		return &networking.Destination{Host: string(ref.Name), Port: port()}, nil
	}
	return nil, &refError{string(gatewayv1.RouteReasonInvalidKind),
		fmt.Sprintf("%s: backend kind %s/%s is not supported: refer to a Service", path, group, kind)}
}
