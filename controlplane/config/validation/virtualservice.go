package validation

import (
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

func init() { register(config.VirtualService, (*collector).virtualService) }

func (v *collector) virtualService(vs *networking.VirtualService) {
	// A VirtualService without hosts is a delegate, reachable only from a
	// root's http[].delegate; it cannot carry what only a root can.
	delegate := len(vs.Hosts) == 0
	appliesToMesh := !appliesToGateway(vs.Gateways)
	if delegate {
		if len(vs.Gateways) > 0 {
			v.add("spec.gateways", "a delegate VirtualService (one with no hosts) must not name gateways; its root VirtualService binds it")
		}
		if len(vs.Tcp) > 0 {
			v.add("spec.tcp", "a delegate VirtualService (one with no hosts) can have only http routes")
		}
		if len(vs.Tls) > 0 {
			v.add("spec.tls", "a delegate VirtualService (one with no hosts) can have only http routes")
		}
	}
	hostsValid := true
	for i, h := range vs.Hosts {
		p := idx("spec.hosts", i)
		if _, err := netip.ParseAddr(h); err == nil {
			continue
		}
		if msg := hostProblem(h); msg != "" {
			v.add(p, "%s", msg)
			hostsValid = false
		} else if h == "*" && appliesToMesh {
			v.add(p, "host \"*\" is not allowed for a VirtualService bound to the mesh; list the service hosts, or bind it to a gateway only")
			hostsValid = false
		}
	}
	// Overlapping hosts ("*.example.com" and "a.example.com") would make
	// one VirtualService compete with itself.
	for i := 0; hostsValid && i < len(vs.Hosts); i++ {
		for j := i + 1; j < len(vs.Hosts); j++ {
			a, b := vs.Hosts[i], vs.Hosts[j]
			if covers(a, b) || covers(b, a) {
				v.add(idx("spec.hosts", j), "host %q overlaps spec.hosts[%d] %q; list each host once", b, i, a)
			}
		}
	}
	if !appliesToGateway(vs.Gateways) {
		for i, r := range vs.Http {
			for j, m := range r.GetMatch() {
				for _, kind := range []struct {
					name string
					m    map[string]*networking.StringMatch
				}{{"headers", m.GetHeaders()}, {"withoutHeaders", m.GetWithoutHeaders()}} {
					for _, name := range sortedKeys(kind.m) {
						if strings.HasPrefix(name, "@request.auth.claims") {
							v.add(key(field(idx(field(idx("spec.http", i), "match"), j), kind.name), name), "routing on JWT claims works only on gateways; bind this VirtualService to a gateway (not mesh)")
						}
					}
				}
			}
		}
	}
	v.gatewayNames("spec.gateways", vs.Gateways)
	if len(vs.Http) == 0 && len(vs.Tcp) == 0 && len(vs.Tls) == 0 {
		v.add("spec", "has no http, tcp or tls routes; add at least one route")
	}
	for i, r := range vs.Http {
		v.httpRoute(idx("spec.http", i), r, delegate)
	}
	v.unreachableRoutes(vs.Http)
	for i, r := range vs.Tls {
		v.tlsRoute(idx("spec.tls", i), r, vs.Hosts)
	}
	for i, r := range vs.Tcp {
		v.tcpRoute(idx("spec.tcp", i), r)
	}
	v.exportTo("spec.exportTo", vs.ExportTo, false)
}

// appliesToGateway reports whether a VirtualService binds only gateways
// (gateways listed, "mesh" not among them).
func appliesToGateway(gws []string) bool {
	return len(gws) > 0 && !slices.Contains(gws, "mesh")
}

// gatewayNames checks gateway references: "mesh", "name", "namespace/name",
// or the legacy "name.namespace[.svc.cluster.local]".
func (v *collector) gatewayNames(path string, gws []string) {
	for i, g := range gws {
		p := idx(path, i)
		if g == "mesh" {
			continue
		}
		ns, name, hasNS := strings.Cut(g, "/")
		if !hasNS {
			if msg := hostProblem(g); msg != "" || strings.Contains(g, "*") {
				v.add(p, "gateway %q is invalid; write namespace/name, name, or mesh", g)
			} else if parts := strings.Split(g, "."); len(parts) > 1 {
				v.warn(p, "gateway %q uses the legacy name.namespace form; write %s/%s", g, parts[1], parts[0])
			}
			continue
		}
		switch {
		case ns == "" || name == "":
			v.add(p, "gateway %q has an empty namespace or name; write namespace/name, name, or mesh", g)
		case dnsLabel(ns) != "":
			v.add(p, "gateway %q: namespace %q is invalid; %s", g, ns, labelRule)
		case dnsLabel(name) != "":
			v.add(p, "gateway %q: name %q is invalid; %s", g, name, labelRule)
		}
	}
}

// unreachableRoutes warns about rules after one that matches everything,
// as Istio does: they can never be reached.
func (v *collector) unreachableRoutes(routes []*networking.HTTPRoute) {
	for i, r := range routes {
		if r == nil || !catchAll(r.Match) {
			continue
		}
		for j := i + 1; j < len(routes); j++ {
			v.warn(idx("spec.http", j), "is never used: spec.http[%d] matches every request before it; move the catch-all rule last", i)
		}
		return
	}
}

// catchAll reports whether a match list matches every request.
func catchAll(ms []*networking.HTTPMatchRequest) bool {
	if len(ms) == 0 {
		return true
	}
	for _, m := range ms {
		if m == nil || proto.Equal(m, &networking.HTTPMatchRequest{Name: m.Name}) {
			return true
		}
	}
	return false
}

func (v *collector) httpRoute(path string, r *networking.HTTPRoute, delegate bool) {
	if r == nil {
		v.add(path, "is empty; give a route, redirect, directResponse or delegate")
		return
	}
	for i, m := range r.Match {
		v.httpMatch(idx(field(path, "match"), i), m)
	}
	actions := 0
	for _, set := range []bool{len(r.Route) > 0, r.Redirect != nil, r.DirectResponse != nil, r.Delegate != nil} {
		if set {
			actions++
		}
	}
	switch {
	case actions == 0:
		v.add(path, "has no route, redirect, directResponse or delegate; give exactly one")
	case actions > 1:
		v.add(path, "sets more than one of route, redirect, directResponse and delegate; keep exactly one")
	}
	if r.Delegate != nil {
		dp := field(path, "delegate")
		if delegate {
			v.add(dp, "a delegate VirtualService cannot delegate again; only a root VirtualService (one with hosts) may")
		}
		if r.Delegate.Name == "" {
			v.add(field(dp, "name"), "is empty; name the delegate VirtualService")
		} else if msg := dnsSubdomain(r.Delegate.Name); msg != "" {
			v.add(field(dp, "name"), "%q is invalid; %s", r.Delegate.Name, msg)
		}
		if ns := r.Delegate.Namespace; ns != "" {
			if msg := dnsLabel(ns); msg != "" {
				v.add(field(dp, "namespace"), "%q is invalid; %s", ns, msg)
			}
		}
	}
	v.httpDestinations(field(path, "route"), r.Route)
	// A redirect or direct response answers the client itself, so nothing
	// that shapes the forwarded request or injects faults applies.
	for _, answer := range []struct {
		name string
		set  bool
	}{{"redirect", r.Redirect != nil}, {"directResponse", r.DirectResponse != nil}} {
		if !answer.set {
			continue
		}
		if r.Rewrite != nil {
			v.add(field(path, "rewrite"), "cannot be combined with %s, which answers the client without forwarding", answer.name)
		}
		if r.Fault != nil {
			v.add(field(path, "fault"), "cannot be combined with %s, which answers the client without forwarding", answer.name)
		}
	}
	if r.Redirect != nil {
		v.redirect(field(path, "redirect"), r.Redirect)
	}
	if dr := r.DirectResponse; dr != nil {
		if s := dr.Status; s < 200 || s > 599 {
			v.add(field(path, "directResponse.status"), "status %d is out of range; use 200-599", s)
		}
		size := len(dr.Body.GetString_()) + len(dr.Body.GetBytes())
		switch {
		case size > maxBody:
			v.add(field(path, "directResponse.body"), "is %d bytes; the limit is 1 MiB, serve large bodies from a service", size)
		case size > bigBody:
			v.warn(field(path, "directResponse.body"), "is %d bytes; bodies over 100 KiB slow down every push of this route", size)
		}
	}
	if r.Rewrite != nil {
		v.rewrite(field(path, "rewrite"), r.Rewrite)
	}
	v.duration(field(path, "timeout"), r.Timeout, false)
	if r.Retries != nil {
		v.retries(field(path, "retries"), r.Retries)
	}
	if r.Fault != nil {
		v.fault(field(path, "fault"), r.Fault)
	}
	if r.Mirror != nil {
		if len(r.Mirrors) > 0 {
			v.add(field(path, "mirrors"), "cannot be combined with mirror; move mirror into mirrors")
		}
		v.destination(field(path, "mirror"), r.Mirror)
	}
	if r.MirrorPercent != nil {
		if r.MirrorPercent.Value > 100 {
			v.add(field(path, "mirrorPercent"), "percentage %d is out of range; use 0-100", r.MirrorPercent.Value)
		}
		v.warn(field(path, "mirrorPercent"), "is deprecated; use mirrorPercentage")
	}
	if r.MirrorPercentage != nil {
		v.percent(field(path, "mirrorPercentage.value"), r.MirrorPercentage.Value)
	}
	for i, m := range r.Mirrors {
		mp := idx(field(path, "mirrors"), i)
		if m == nil || m.Destination == nil {
			v.add(field(mp, "destination"), "is required")
			continue
		}
		v.destination(field(mp, "destination"), m.Destination)
		if m.Percentage != nil {
			v.percent(field(mp, "percentage.value"), m.Percentage.Value)
		}
	}
	if r.CorsPolicy != nil {
		v.cors(field(path, "corsPolicy"), r.CorsPolicy)
	}
	v.headers(field(path, "headers"), r.Headers)
	v.authorityOnce(path, r)
}

func (v *collector) httpMatch(path string, m *networking.HTTPMatchRequest) {
	if m == nil {
		return
	}
	v.stringMatch(field(path, "uri"), m.Uri, true)
	v.stringMatch(field(path, "scheme"), m.Scheme, false)
	v.stringMatch(field(path, "method"), m.Method, false)
	v.stringMatch(field(path, "authority"), m.Authority, false)
	for _, kind := range []struct {
		name string
		m    map[string]*networking.StringMatch
	}{{"headers", m.Headers}, {"withoutHeaders", m.WithoutHeaders}} {
		for _, name := range sortedKeys(kind.m) {
			hp := key(field(path, kind.name), name)
			// Istio routes on JWT claims through this pseudo header.
			if !strings.HasPrefix(name, "@request.auth.claims.") && !pseudoHeaders[name] {
				v.headerName(hp, name)
			}
			sm := kind.m[name]
			if sm == nil {
				if kind.name == "headers" {
					v.add(hp, "header match is empty; give exact, prefix or regex")
				}
				continue
			}
			// In withoutHeaders, regex "*" means "header present", not RE2.
			if kind.name == "withoutHeaders" && sm.GetRegex() == "*" {
				continue
			}
			v.stringMatch(hp, sm, false)
		}
	}
	for _, name := range sortedKeys(m.QueryParams) {
		qp := key(field(path, "queryParams"), name)
		if m.QueryParams[name] == nil {
			v.add(qp, "query parameter match is empty; give exact, prefix or regex")
			continue
		}
		v.stringMatch(qp, m.QueryParams[name], false)
	}
	if m.Port != 0 {
		v.port(field(path, "port"), m.Port)
	}
	v.labels(field(path, "sourceLabels"), m.SourceLabels)
	v.gatewayNames(field(path, "gateways"), m.Gateways)
	if ns := m.SourceNamespace; ns != "" {
		if msg := dnsLabel(ns); msg != "" {
			v.add(field(path, "sourceNamespace"), "%q is not a valid namespace; %s", ns, msg)
		}
	}
}

// pseudoHeaders are the HTTP/2 pseudo headers a match may name.
var pseudoHeaders = map[string]bool{":method": true, ":scheme": true, ":authority": true, ":path": true, ":status": true}

// stringMatch checks a StringMatch; only a URI may match an empty prefix
// (Envoy refuses empty prefixes elsewhere).
func (v *collector) stringMatch(path string, m *networking.StringMatch, emptyPrefixOK bool) {
	if m == nil {
		return
	}
	if p, ok := m.MatchType.(*networking.StringMatch_Prefix); ok && p.Prefix == "" && !emptyPrefixOK {
		v.add(field(path, "prefix"), "is empty; give a prefix, or remove the match to match everything")
	}
	if re, ok := m.MatchType.(*networking.StringMatch_Regex); ok {
		if re.Regex == "" {
			v.add(field(path, "regex"), "is empty; give a regex or use prefix/exact")
			return
		}
		v.regex(field(path, "regex"), re.Regex)
	}
}

func (v *collector) destination(path string, d *networking.Destination) {
	if d == nil {
		v.add(path, "is required")
		return
	}
	if d.Host == "*" {
		v.add(field(path, "host"), "\"*\" is not a destination; name the service")
	} else {
		v.host(field(path, "host"), d.Host)
	}
	if d.Subset != "" {
		if msg := dnsLabel(d.Subset); msg != "" {
			v.add(field(path, "subset"), "subset name %q is invalid; %s", d.Subset, msg)
		}
	}
	if d.Port != nil {
		v.port(field(path, "port.number"), d.Port.Number)
	}
}

func (v *collector) httpDestinations(path string, ds []*networking.HTTPRouteDestination) {
	total := int32(0)
	for i, d := range ds {
		p := idx(path, i)
		if d == nil {
			v.add(field(p, "destination"), "is required")
			continue
		}
		v.destination(field(p, "destination"), d.Destination)
		v.weight(field(p, "weight"), d.Weight)
		v.headers(field(p, "headers"), d.Headers)
		total += d.Weight
	}
	v.weightSum(path, len(ds), total)
}

func (v *collector) routeDestinations(path string, ds []*networking.RouteDestination) {
	total := int32(0)
	for i, d := range ds {
		p := idx(path, i)
		if d == nil {
			v.add(field(p, "destination"), "is required")
			continue
		}
		v.destination(field(p, "destination"), d.Destination)
		v.weight(field(p, "weight"), d.Weight)
		total += d.Weight
	}
	v.weightSum(path, len(ds), total)
}

func (v *collector) weight(path string, w int32) {
	if w < 0 || w > 100 {
		v.add(path, "weight %d is out of range; use 0-100", w)
	}
}

// weightSum applies Istio's rule: with more than one destination the
// weights must add up to exactly 100; a lone destination takes all traffic.
func (v *collector) weightSum(path string, n int, total int32) {
	if n > 1 && total != 100 {
		v.add(path, "weights sum to %d; the weights of a route's destinations must add up to 100", total)
	}
}

func (v *collector) redirect(path string, r *networking.HTTPRedirect) {
	if r.Uri == "" && r.Authority == "" && r.RedirectPort == nil && r.Scheme == "" && r.PrefixRewrite == "" {
		v.add(path, "changes nothing; set uri, authority, port, scheme or prefixRewrite")
	}
	if r.Uri != "" && r.PrefixRewrite != "" {
		v.add(path, "sets both uri and prefixRewrite; keep one")
	}
	if r.Scheme != "" && r.Scheme != "http" && r.Scheme != "https" {
		v.add(field(path, "scheme"), "%q is not http or https", r.Scheme)
	}
	if p, ok := r.RedirectPort.(*networking.HTTPRedirect_Port); ok {
		v.port(field(path, "port"), p.Port)
	}
	if c := r.RedirectCode; c != 0 && (c < 300 || c > 399) {
		v.add(field(path, "redirectCode"), "%d is not a redirect code; use a 3xx code such as 301 or 302", c)
	}
}

func (v *collector) rewrite(path string, r *networking.HTTPRewrite) {
	if r.Uri == "" && r.Authority == "" && r.UriRegexRewrite == nil {
		v.add(path, "changes nothing; set uri, authority or uriRegexRewrite")
	}
	if rr := r.UriRegexRewrite; rr != nil {
		if r.Uri != "" {
			v.add(path, "sets both uri and uriRegexRewrite; keep one")
		}
		if rr.Match == "" {
			v.add(field(path, "uriRegexRewrite.match"), "is empty; give the regex to match")
		} else {
			v.regex(field(path, "uriRegexRewrite.match"), rr.Match)
		}
		if rr.Rewrite == "" {
			v.add(field(path, "uriRegexRewrite.rewrite"), "is empty; give the replacement")
		}
	}
}

// Direct response bodies travel in every route push; Istio warns above
// 100 KiB and refuses above 1 MiB.
const (
	bigBody = 100 << 10
	maxBody = 1 << 20
)

// retryOnPolicies are the x-envoy-retry-on and x-envoy-retry-grpc-on
// conditions Envoy accepts; plain status codes are allowed too.
var retryOnPolicies = map[string]bool{
	"5xx": true, "gateway-error": true, "reset": true, "reset-before-request": true,
	"connect-failure": true, "envoy-ratelimited": true, "retriable-4xx": true,
	"refused-stream": true, "retriable-status-codes": true, "retriable-headers": true,
	"http3-post-connect-failure": true,
	"cancelled":                  true, "deadline-exceeded": true, "internal": true,
	"resource-exhausted": true, "unavailable": true,
}

func (v *collector) retries(path string, r *networking.HTTPRetry) {
	if r.Attempts < 0 {
		v.add(field(path, "attempts"), "%d is negative; use 0 to disable retries", r.Attempts)
	}
	if r.Attempts == 0 && (r.PerTryTimeout != nil || r.RetryOn != "" || r.RetryRemoteLocalities != nil) {
		v.add(field(path, "attempts"), "is 0, which disables retries, yet other retry settings are given; set attempts or remove retries")
	}
	v.duration(field(path, "perTryTimeout"), r.PerTryTimeout, false)
	v.duration(field(path, "backoff"), r.Backoff, false)
	if r.RetryOn == "" {
		return
	}
	for _, tok := range strings.Split(r.RetryOn, ",") {
		tok = strings.TrimSpace(tok)
		if retryOnPolicies[tok] {
			continue
		}
		if code, err := strconv.Atoi(tok); err == nil {
			if http.StatusText(code) == "" {
				v.add(field(path, "retryOn"), "%d is not an HTTP status code", code)
			}
			continue
		}
		v.add(field(path, "retryOn"), "%q is not a retry condition; use Envoy's (5xx, gateway-error, reset, connect-failure, retriable-4xx, refused-stream, retriable-status-codes, …), gRPC's (cancelled, deadline-exceeded, internal, resource-exhausted, unavailable) or a status code", tok)
	}
}

// grpcCodes are the gRPC status names Istio accepts for a gRPC abort.
var grpcCodes = map[string]bool{
	"OK": true, "CANCELLED": true, "UNKNOWN": true, "INVALID_ARGUMENT": true,
	"DEADLINE_EXCEEDED": true, "NOT_FOUND": true, "ALREADY_EXISTS": true,
	"PERMISSION_DENIED": true, "RESOURCE_EXHAUSTED": true, "FAILED_PRECONDITION": true,
	"ABORTED": true, "OUT_OF_RANGE": true, "UNIMPLEMENTED": true, "INTERNAL": true,
	"UNAVAILABLE": true, "DATA_LOSS": true, "UNAUTHENTICATED": true,
}

func (v *collector) fault(path string, f *networking.HTTPFaultInjection) {
	if f.Delay == nil && f.Abort == nil {
		v.add(path, "injects nothing; give delay, abort or both")
	}
	if d := f.Delay; d != nil {
		dp := field(path, "delay")
		if d.Percent < 0 || d.Percent > 100 {
			v.add(field(dp, "percent"), "percentage %d is out of range; use 0-100", d.Percent)
		}
		if d.Percentage != nil {
			v.percent(field(dp, "percentage.value"), d.Percentage.Value)
		}
		switch t := d.HttpDelayType.(type) {
		case *networking.HTTPFaultInjection_Delay_FixedDelay:
			if t.FixedDelay == nil {
				v.add(field(dp, "fixedDelay"), "is required")
			} else {
				v.duration(field(dp, "fixedDelay"), t.FixedDelay, false)
			}
		case *networking.HTTPFaultInjection_Delay_ExponentialDelay:
			v.add(field(dp, "exponentialDelay"), "is not supported; use fixedDelay")
		default:
			v.add(dp, "has no fixedDelay; give the delay to inject")
		}
	}
	if a := f.Abort; a != nil {
		ap := field(path, "abort")
		if a.Percentage != nil {
			v.percent(field(ap, "percentage.value"), a.Percentage.Value)
		}
		switch t := a.ErrorType.(type) {
		case *networking.HTTPFaultInjection_Abort_HttpStatus:
			if t.HttpStatus < 200 || t.HttpStatus > 599 {
				v.add(field(ap, "httpStatus"), "status %d is out of range; use 200-599", t.HttpStatus)
			}
		case *networking.HTTPFaultInjection_Abort_GrpcStatus:
			if !grpcCodes[t.GrpcStatus] {
				v.add(field(ap, "grpcStatus"), "%q is not a gRPC status name; use one such as UNAVAILABLE or DEADLINE_EXCEEDED", t.GrpcStatus)
			}
		default:
			v.warn(ap, "has no httpStatus or grpcStatus, so it aborts nothing; give the error to return")
		}
	}
}

var httpMethods = map[string]bool{
	"GET": true, "HEAD": true, "POST": true, "PUT": true, "DELETE": true,
	"CONNECT": true, "OPTIONS": true, "TRACE": true, "PATCH": true, "*": true,
}

func (v *collector) cors(path string, c *networking.CorsPolicy) {
	for i, o := range c.AllowOrigins {
		p := idx(field(path, "allowOrigins"), i)
		if o.GetExact() == "" && o.GetPrefix() == "" && o.GetRegex() == "" {
			v.add(p, "is empty; give exact, prefix or regex")
			continue
		}
		v.stringMatch(p, o, false)
	}
	for i, m := range c.AllowMethods {
		if !httpMethods[m] {
			v.add(idx(field(path, "allowMethods"), i), "%q is not an HTTP method; use an upper-case method such as GET", m)
		}
	}
	for _, list := range []struct {
		name string
		l    []string
	}{{"allowHeaders", c.AllowHeaders}, {"exposeHeaders", c.ExposeHeaders}} {
		for i, h := range list.l {
			// CORS header lists are case-insensitive, so only the token form matters.
			if h != "*" && !headerToken.MatchString(h) {
				v.add(idx(field(path, list.name), i), "%q is not a valid header name", h)
			}
		}
	}
	if c.MaxAge != nil {
		v.duration(field(path, "maxAge"), c.MaxAge, true)
		if c.MaxAge.Nanos != 0 {
			v.add(field(path, "maxAge"), "must be whole seconds; browsers cache preflights by the second")
		}
	}
}

func (v *collector) headers(path string, h *networking.Headers) {
	if h == nil {
		return
	}
	for _, op := range []struct {
		name string
		o    *networking.Headers_HeaderOperations
	}{{"request", h.Request}, {"response", h.Response}} {
		if op.o == nil {
			continue
		}
		p := field(path, op.name)
		// Only a request's authority may be set by a header operation.
		authorityOK := op.name == "request"
		for _, kind := range []struct {
			name string
			m    map[string]string
		}{{"set", op.o.Set}, {"add", op.o.Add}} {
			for _, n := range sortedKeys(kind.m) {
				v.headerOp(key(field(p, kind.name), n), n, authorityOK)
			}
		}
		for i, n := range op.o.Remove {
			v.headerOp(idx(field(p, "remove"), i), n, false)
		}
	}
}

// headerOp refuses what Envoy will not let a header operation touch:
// pseudo headers and Host, except that a request may set its authority.
func (v *collector) headerOp(path, name string, authorityOK bool) {
	authority := strings.EqualFold(name, ":authority") || strings.EqualFold(name, "host")
	if authority && authorityOK {
		return
	}
	if strings.HasPrefix(name, ":") || strings.EqualFold(name, "host") {
		v.add(path, "header %q cannot be changed here; only request set/add may change the authority (or use rewrite.authority)", name)
		return
	}
	v.headerName(path, name)
}

// authorityOnce refuses setting the authority in two places, which Envoy
// cannot honour both of.
func (v *collector) authorityOnce(path string, r *networking.HTTPRoute) {
	set := r.Rewrite.GetAuthority() != ""
	req := r.Headers.GetRequest()
	for _, kind := range []struct {
		name string
		m    map[string]string
	}{{"set", req.GetSet()}, {"add", req.GetAdd()}} {
		for _, n := range sortedKeys(kind.m) {
			if !strings.EqualFold(n, ":authority") && !strings.EqualFold(n, "host") {
				continue
			}
			if set {
				v.add(key(field(path, "headers.request."+kind.name), n), "sets the authority a second time; set it once, in rewrite.authority or one header operation")
			}
			set = true
		}
	}
}

func (v *collector) l4Match(path string, subnets []string, port uint32, labels map[string]string, gateways []string, sourceNS string) {
	for i, s := range subnets {
		v.cidr(idx(field(path, "destinationSubnets"), i), s)
	}
	if port != 0 {
		v.port(field(path, "port"), port)
	}
	v.labels(field(path, "sourceLabels"), labels)
	v.gatewayNames(field(path, "gateways"), gateways)
	if sourceNS != "" {
		if msg := dnsLabel(sourceNS); msg != "" {
			v.add(field(path, "sourceNamespace"), "%q is not a valid namespace; %s", sourceNS, msg)
		}
	}
}

func (v *collector) tlsRoute(path string, r *networking.TLSRoute, hosts []string) {
	if r == nil {
		v.add(path, "is empty; give match and route")
		return
	}
	if len(r.Match) == 0 {
		v.add(field(path, "match"), "is empty; a TLS route needs at least one match with sniHosts")
	}
	for i, m := range r.Match {
		mp := idx(field(path, "match"), i)
		if m == nil {
			continue
		}
		if len(m.SniHosts) == 0 {
			v.add(field(mp, "sniHosts"), "is empty; a TLS match needs at least one SNI host")
		}
		for j, sni := range m.SniHosts {
			sp := idx(field(mp, "sniHosts"), j)
			if _, err := netip.ParseAddr(sni); err == nil {
				v.warn(sp, "%q is an IP address; SNI carries host names and most clients never send an IP", sni)
				continue
			}
			if p := hostProblem(sni); p != "" {
				v.add(sp, "%s", p)
				continue
			}
			if !coveredByAny(sni, hosts) {
				v.add(sp, "SNI host %q is not within any of the VirtualService hosts %v; add it to spec.hosts or fix the name", sni, hosts)
			}
		}
		v.l4Match(mp, m.DestinationSubnets, m.Port, m.SourceLabels, m.Gateways, m.SourceNamespace)
	}
	if len(r.Route) == 0 {
		v.add(field(path, "route"), "is empty; a TLS route needs at least one destination")
	}
	v.routeDestinations(field(path, "route"), r.Route)
}

func (v *collector) tcpRoute(path string, r *networking.TCPRoute) {
	if r == nil {
		v.add(path, "is empty; give a route")
		return
	}
	for i, m := range r.Match {
		if m == nil {
			continue
		}
		v.l4Match(idx(field(path, "match"), i), m.DestinationSubnets, m.Port, m.SourceLabels, m.Gateways, m.SourceNamespace)
	}
	if len(r.Route) == 0 {
		v.add(field(path, "route"), "is empty; a TCP route needs at least one destination")
	}
	v.routeDestinations(field(path, "route"), r.Route)
}

// coveredByAny reports whether host h lies within one of hosts, honouring
// wildcards on either side ("*.example.com" covers "a.example.com").
func coveredByAny(h string, hosts []string) bool {
	for _, vh := range hosts {
		if covers(vh, h) {
			return true
		}
	}
	return false
}

func covers(outer, inner string) bool {
	if outer == "*" || outer == inner {
		return true
	}
	if suffix, ok := strings.CutPrefix(outer, "*"); ok {
		return strings.HasSuffix(inner, suffix)
	}
	return false
}
