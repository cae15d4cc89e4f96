package rds

import (
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/gen/cds"
	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/model"
)

// HTTP filter names whose per-route config Istio sets.
const (
	FaultFilter = "envoy.filters.http.fault"
	CorsFilter  = "envoy.filters.http.cors"
)

// maxDirectResponseBody is Istio's limit on a directResponse body (1 MiB).
const maxDirectResponseBody = 1 << 20

// routeContext is what translating one VirtualService's routes needs to
// know about where they are applied.
type routeContext struct {
	ix       *index.Index
	vs       *config.Object
	port     int               // the listener (or gateway server) port
	gateways []string          // "mesh" for sidecars, "ns/name" for gateways
	labels   map[string]string // the proxy's labels, for sourceLabels
	proxyNS  string            // for sourceNamespace
}

// translateVirtualService turns one VirtualService's http routes into
// Envoy routes for one port, in order: one Envoy route per (route, match)
// pair that applies to this proxy. Routes after a catch-all are dropped,
// as Istio does, because they can never match.
func translateVirtualService(rc routeContext) []*routev3.Route {
	vs := rc.vs.Spec.(*networking.VirtualService)
	vsGateways := vs.GetGateways()
	var out []*routev3.Route
	for _, hr := range vs.GetHttp() {
		if len(hr.GetMatch()) == 0 {
			out = append(out, translateRoute(rc, hr, nil))
			return out
		}
		for _, m := range hr.GetMatch() {
			if !rc.matchApplies(m, vsGateways) {
				continue
			}
			out = append(out, translateRoute(rc, hr, m))
			if isCatchAll(m) {
				return out
			}
		}
	}
	return out
}

// matchApplies reports whether a match's proxy-side conditions hold:
// port, sourceLabels, sourceNamespace and gateways (the match's own, else
// the VirtualService's).
func (rc routeContext) matchApplies(m *networking.HTTPMatchRequest, vsGateways []string) bool {
	if m.GetPort() != 0 && int(m.GetPort()) != rc.port {
		return false
	}
	for k, v := range m.GetSourceLabels() {
		if lv, ok := rc.labels[k]; !ok || lv != v {
			return false
		}
	}
	if ns := m.GetSourceNamespace(); ns != "" && ns != rc.proxyNS {
		return false
	}
	gws := m.GetGateways()
	if len(gws) == 0 {
		gws = vsGateways
	}
	if len(gws) == 0 {
		gws = []string{"mesh"}
	}
	for _, g := range gws {
		q := g
		if g != "mesh" && !strings.Contains(g, "/") {
			q = rc.vs.Meta.Namespace + "/" + g
		}
		if slices.Contains(rc.gateways, q) {
			return true
		}
	}
	return false
}

// isCatchAll reports whether a match matches every request.
func isCatchAll(m *networking.HTTPMatchRequest) bool {
	if m == nil {
		return true
	}
	if u := m.GetUri(); u != nil && !(u.GetPrefix() == "/" || u.GetRegex() == "*" || u.GetRegex() == ".*") {
		return false
	}
	return m.GetScheme() == nil && m.GetMethod() == nil && m.GetAuthority() == nil &&
		len(m.GetHeaders()) == 0 && len(m.GetQueryParams()) == 0 && len(m.GetWithoutHeaders()) == 0
}

func translateRoute(rc routeContext, hr *networking.HTTPRoute, m *networking.HTTPMatchRequest) *routev3.Route {
	name := hr.GetName()
	if m.GetName() != "" {
		name = name + "." + m.GetName()
	}
	r := &routev3.Route{
		Name:     name,
		Match:    translateMatch(m, gatewaySemantics(rc.vs)),
		Metadata: configMetadata(rc.vs),
	}
	if hs := hr.GetHeaders(); hs != nil {
		r.RequestHeadersToAdd = headerOptions(hs.GetRequest())
		r.RequestHeadersToRemove = hs.GetRequest().GetRemove()
		r.ResponseHeadersToAdd = headerOptions(hs.GetResponse())
		r.ResponseHeadersToRemove = hs.GetResponse().GetRemove()
	}
	switch {
	case hr.GetRedirect() != nil:
		r.Action = &routev3.Route_Redirect{Redirect: translateRedirect(hr.GetRedirect(), rc.port)}
	case hr.GetDirectResponse() != nil:
		r.Action = &routev3.Route_DirectResponse{DirectResponse: translateDirect(hr.GetDirectResponse())}
	default:
		r.Action = &routev3.Route_Route{Route: rc.translateAction(hr, m, r)}
	}
	pfc := map[string]*anypb.Any{}
	if f := translateFault(hr.GetFault()); f != nil {
		pfc[FaultFilter] = mustAny(f)
	}
	if c := translateCors(hr.GetCorsPolicy()); c != nil {
		pfc[CorsFilter] = mustAny(c)
	}
	if len(pfc) > 0 {
		r.TypedPerFilterConfig = pfc
	}
	r.Decorator = &routev3.Decorator{Operation: operation(r, rc.vs.Meta.Name, rc.port)}
	return r
}

// operation is the tracing operation name Istio gives a route:
// "host:port/path*" when it goes to one cluster, else "vsname:port/path*".
func operation(r *routev3.Route, vsName string, port int) string {
	path := "/*"
	switch ps := r.GetMatch().GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		path = ps.Prefix + "*"
	case *routev3.RouteMatch_Path:
		path = ps.Path
	case *routev3.RouteMatch_SafeRegex:
		path = ps.SafeRegex.GetRegex()
	}
	if c := r.GetRoute().GetCluster(); strings.HasPrefix(c, "outbound|") {
		parts := strings.SplitN(c, "|", 4)
		return parts[3] + ":" + parts[1] + path
	}
	return vsName + ":" + strconv.Itoa(port) + path
}

// configMetadata tags a route with the object it came from, as Istio does,
// so a proxy's config dump leads back to the VirtualService.
func configMetadata(o *config.Object) *corev3.Metadata {
	path := "/apis/" + o.Kind.Group + "/" + o.Kind.Version + "/namespaces/" + o.Meta.Namespace +
		"/virtual-service/" + o.Meta.Name
	s, _ := structpb.NewStruct(map[string]any{"config": path})
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": s}}
}

// Markers of VirtualServices converted from the Gateway API: Istio's
// route-semantics annotation, or the parents annotation the converter
// (controlplane/gatewayapi) sets.
const (
	routeSemanticsAnnotation = "internal.istio.io/route-semantics"
	parentsAnnotation        = "internal.istio.io/parents"
)

// gatewaySemantics reports whether a VirtualService follows Gateway API
// path semantics (a prefix matches whole path segments), as Istio's
// UseGatewaySemantics.
func gatewaySemantics(o *config.Object) bool {
	a := o.Meta.Annotations
	return a[routeSemanticsAnnotation] == "gateway" || a[parentsAnnotation] != ""
}

// translateMatch is Istio's TranslateRouteMatch for a VirtualService.
func translateMatch(m *networking.HTTPMatchRequest, gatewaySemantics bool) *routev3.RouteMatch {
	out := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	if m == nil {
		return out
	}
	switch u := m.GetUri().GetMatchType().(type) {
	case *networking.StringMatch_Exact:
		out.PathSpecifier = &routev3.RouteMatch_Path{Path: u.Exact}
	case *networking.StringMatch_Prefix:
		if gatewaySemantics && u.Prefix != "/" {
			out.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: strings.TrimSuffix(u.Prefix, "/")}
		} else {
			out.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: u.Prefix}
		}
	case *networking.StringMatch_Regex:
		out.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: u.Regex}}
	}
	if m.GetIgnoreUriCase() {
		out.CaseSensitive = wrapperspb.Bool(false)
	}
	for _, name := range slices.Sorted(maps.Keys(m.GetHeaders())) {
		out.Headers = append(out.Headers, headerMatcher(name, m.GetHeaders()[name], false))
	}
	for _, name := range slices.Sorted(maps.Keys(m.GetWithoutHeaders())) {
		out.Headers = append(out.Headers, headerMatcher(name, m.GetWithoutHeaders()[name], true))
	}
	if m.GetMethod() != nil {
		out.Headers = append(out.Headers, headerMatcher(":method", m.GetMethod(), false))
	}
	if m.GetAuthority() != nil {
		out.Headers = append(out.Headers, headerMatcher(":authority", m.GetAuthority(), false))
	}
	if m.GetScheme() != nil {
		out.Headers = append(out.Headers, headerMatcher(":scheme", m.GetScheme(), false))
	}
	for _, name := range slices.Sorted(maps.Keys(m.GetQueryParams())) {
		out.QueryParameters = append(out.QueryParameters, queryMatcher(name, m.GetQueryParams()[name]))
	}
	return out
}

// stringMatcher converts an Istio StringMatch; nil when it is empty.
func stringMatcher(sm *networking.StringMatch) *matcherv3.StringMatcher {
	switch v := sm.GetMatchType().(type) {
	case *networking.StringMatch_Exact:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v.Exact}}
	case *networking.StringMatch_Prefix:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: v.Prefix}}
	case *networking.StringMatch_Regex:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: v.Regex}}}
	}
	return nil
}

// headerMatcher is Istio's translateHeaderMatch: an empty match (or an
// empty prefix) only requires the header to be present.
func headerMatcher(name string, sm *networking.StringMatch, invert bool) *routev3.HeaderMatcher {
	hm := &routev3.HeaderMatcher{Name: strings.ToLower(name), InvertMatch: invert}
	s := stringMatcher(sm)
	if s == nil || (sm.GetPrefix() == "" && sm.GetExact() == "" && sm.GetRegex() == "") {
		hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
		return hm
	}
	hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: s}
	return hm
}

func queryMatcher(name string, sm *networking.StringMatch) *routev3.QueryParameterMatcher {
	qm := &routev3.QueryParameterMatcher{Name: name}
	s := stringMatcher(sm)
	if s == nil || (sm.GetPrefix() == "" && sm.GetExact() == "" && sm.GetRegex() == "") {
		qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		return qm
	}
	qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{StringMatch: s}
	return qm
}

// headerOptions converts set (overwrite) and add (append) header operations,
// in sorted order so output is stable.
func headerOptions(op *networking.Headers_HeaderOperations) []*corev3.HeaderValueOption {
	var out []*corev3.HeaderValueOption
	for _, k := range slices.Sorted(maps.Keys(op.GetSet())) {
		out = append(out, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: k, Value: op.GetSet()[k]},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	for _, k := range slices.Sorted(maps.Keys(op.GetAdd())) {
		out = append(out, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: k, Value: op.GetAdd()[k]},
			AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD,
		})
	}
	return out
}

// translateAction builds the forwarding action: destinations, rewrite,
// timeout, retries and mirrors.
func (rc routeContext) translateAction(hr *networking.HTTPRoute, m *networking.HTTPMatchRequest, r *routev3.Route) *routev3.RouteAction {
	a := &routev3.RouteAction{}
	var dests []*networking.HTTPRouteDestination
	for _, d := range hr.GetRoute() {
		if d.GetWeight() == 0 && len(hr.GetRoute()) > 1 {
			continue
		}
		dests = append(dests, d)
	}
	if len(dests) == 1 {
		d := dests[0]
		a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: rc.cluster(d.GetDestination())}
		if hs := d.GetHeaders(); hs != nil {
			r.RequestHeadersToAdd = append(r.RequestHeadersToAdd, headerOptions(hs.GetRequest())...)
			r.RequestHeadersToRemove = append(r.RequestHeadersToRemove, hs.GetRequest().GetRemove()...)
			r.ResponseHeadersToAdd = append(r.ResponseHeadersToAdd, headerOptions(hs.GetResponse())...)
			r.ResponseHeadersToRemove = append(r.ResponseHeadersToRemove, hs.GetResponse().GetRemove()...)
		}
	} else {
		wc := &routev3.WeightedCluster{}
		for _, d := range dests {
			c := &routev3.WeightedCluster_ClusterWeight{
				Name:   rc.cluster(d.GetDestination()),
				Weight: wrapperspb.UInt32(uint32(d.GetWeight())),
			}
			if hs := d.GetHeaders(); hs != nil {
				c.RequestHeadersToAdd = headerOptions(hs.GetRequest())
				c.RequestHeadersToRemove = hs.GetRequest().GetRemove()
				c.ResponseHeadersToAdd = headerOptions(hs.GetResponse())
				c.ResponseHeadersToRemove = hs.GetResponse().GetRemove()
			}
			wc.Clusters = append(wc.Clusters, c)
		}
		a.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	if rw := hr.GetRewrite(); rw != nil {
		a.PrefixRewrite = rw.GetUri()
		if p := m.GetUri().GetPrefix(); rw.GetUri() == "/" && p != "" && p != "/" && gatewaySemantics(rc.vs) {
			// Replacing a whole-segment prefix by "/" must not leave "//x":
			// Istio drops the prefix and the slash after it instead.
			a.PrefixRewrite = ""
			a.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
				Pattern:      &matcherv3.RegexMatcher{Regex: "^" + regexp.QuoteMeta(strings.TrimSuffix(p, "/")) + `(/?)(.*)`},
				Substitution: `/\2`,
			}
		}
		if rr := rw.GetUriRegexRewrite(); rr != nil {
			a.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
				Pattern:      &matcherv3.RegexMatcher{Regex: rr.GetMatch()},
				Substitution: rr.GetRewrite(),
			}
		}
		if rw.GetAuthority() != "" {
			a.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: rw.GetAuthority()}
		}
	}
	a.HashPolicy = rc.hashPolicy(dests)
	setTimeout(a, hr.GetTimeout())
	a.RetryPolicy = retryPolicy(hr.GetRetries())
	a.RequestMirrorPolicies = rc.mirrors(hr)
	return a
}

// cluster names the cluster of a destination. Without a port the
// service's only port is meant, else the port being routed.
func (rc routeContext) cluster(d *networking.Destination) string {
	host := rc.ix.ResolveHost(d.GetHost(), rc.vs.Meta.Namespace)
	port := int(d.GetPort().GetNumber())
	if port == 0 {
		port = rc.port
		if svc := rc.ix.Registry().Service(host, rc.proxyNS); svc != nil && len(svc.Ports) == 1 {
			port = svc.Ports[0].Port
		}
	}
	return index.OutboundCluster(port, d.GetSubset(), host)
}

// hashPolicy is the consistent-hash policy the destinations' rules ask
// for; with several destinations only one they all agree on, as Istio
// cannot hash differently per weighted cluster.
func (rc routeContext) hashPolicy(dests []*networking.HTTPRouteDestination) []*routev3.RouteAction_HashPolicy {
	var out []*routev3.RouteAction_HashPolicy
	for i, d := range dests {
		hp := destinationHashPolicy(rc.ix, rc.proxyNS, rc.labels, rc.cluster(d.GetDestination()))
		if i == 0 {
			out = hp
			continue
		}
		if len(hp) != len(out) {
			return nil
		}
		for j := range hp {
			if !proto.Equal(hp[j], out[j]) {
				return nil
			}
		}
	}
	return out
}

// destinationHashPolicy looks up the DestinationRule for an outbound
// cluster and returns its hash policy for that port and subset.
func destinationHashPolicy(ix *index.Index, proxyNS string, labels map[string]string, cluster string) []*routev3.RouteAction_HashPolicy {
	_, port, subset, host, ok := cds.ParseClusterName(cluster)
	if !ok {
		return nil
	}
	dr := ix.DestinationRule(proxyNS, host, labels)
	if dr == nil {
		return nil
	}
	if subset != "" {
		return cds.SubsetHashPolicy(dr.Rule, port, subset)
	}
	return cds.HashPolicy(dr.Rule, port)
}

// setTimeout applies Istio's timeout: the VirtualService's, else 0 (none);
// the gRPC timeout header is honoured up to the same bound.
func setTimeout(a *routev3.RouteAction, t *durationpb.Duration) {
	a.Timeout = durationpb.New(0)
	if t != nil {
		a.Timeout = t
	}
	a.MaxGrpcTimeout = a.Timeout
}

// DefaultRetryPolicy is the retry policy Istio gives routes whose
// VirtualService sets none (meshConfig.defaultHttpRetryPolicy unset).
func DefaultRetryPolicy() *routev3.RetryPolicy {
	return &routev3.RetryPolicy{
		RetryOn:              "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
		NumRetries:           wrapperspb.UInt32(2),
		RetriableStatusCodes: []uint32{503},
		RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{
			Name:       "envoy.retry_host_predicates.previous_hosts",
			ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: mustAny(&previoushostsv3.PreviousHostsPredicate{})},
		}},
		HostSelectionRetryMaxAttempts: 5,
	}
}

// retryPolicy is Istio's retry.ConvertPolicy: the default when none is
// given, no retries for attempts 0, else the default adjusted.
func retryPolicy(in *networking.HTTPRetry) *routev3.RetryPolicy {
	p := DefaultRetryPolicy()
	if in == nil {
		return p
	}
	if in.GetAttempts() <= 0 {
		return nil
	}
	p.NumRetries = wrapperspb.UInt32(uint32(in.GetAttempts()))
	if on := in.GetRetryOn(); on != "" {
		p.RetryOn, p.RetriableStatusCodes = parseRetryOn(on)
	}
	if in.GetPerTryTimeout() != nil {
		p.PerTryTimeout = in.GetPerTryTimeout()
	}
	if v := in.GetRetryIgnorePreviousHosts(); v != nil && !v.GetValue() {
		p.RetryHostPredicate = nil
	}
	if b := in.GetBackoff(); b != nil {
		p.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{BaseInterval: b}
	}
	return p
}

// parseRetryOn splits Istio's retryOn: numbers are retriable status codes
// (and imply "retriable-status-codes"), the rest are Envoy conditions.
func parseRetryOn(s string) (string, []uint32) {
	var on []string
	var codes []uint32
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if n, err := strconv.ParseUint(part, 10, 32); err == nil {
			codes = append(codes, uint32(n))
			continue
		}
		on = append(on, part)
	}
	if len(codes) > 0 && !slices.Contains(on, "retriable-status-codes") {
		on = append(on, "retriable-status-codes")
	}
	return strings.Join(on, ","), codes
}

// mirrors converts mirror / mirrorPercentage and mirrors.
func (rc routeContext) mirrors(hr *networking.HTTPRoute) []*routev3.RouteAction_RequestMirrorPolicy {
	var out []*routev3.RouteAction_RequestMirrorPolicy
	if m := hr.GetMirror(); m != nil {
		pct := 100.0
		if hr.GetMirrorPercentage() != nil {
			pct = hr.GetMirrorPercentage().GetValue()
		} else if hr.GetMirrorPercent() != nil {
			pct = float64(hr.GetMirrorPercent().GetValue())
		}
		out = append(out, rc.mirror(m, pct))
	}
	for _, mp := range hr.GetMirrors() {
		pct := 100.0
		if mp.GetPercentage() != nil {
			pct = mp.GetPercentage().GetValue()
		}
		out = append(out, rc.mirror(mp.GetDestination(), pct))
	}
	return out
}

func (rc routeContext) mirror(d *networking.Destination, pct float64) *routev3.RouteAction_RequestMirrorPolicy {
	return &routev3.RouteAction_RequestMirrorPolicy{
		Cluster:         rc.cluster(d),
		RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: fraction(pct)},
		TraceSampled:    wrapperspb.Bool(false),
	}
}

// fraction is Istio's translatePercentToFractionalPercent: per million.
func fraction(pct float64) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: uint32(pct * 10000), Denominator: typev3.FractionalPercent_MILLION}
}

// prefixMarker starts a redirect uri that replaces only the matched
// prefix (Istio's marker, used for Gateway API ReplacePrefixMatch).
const prefixMarker = "%PREFIX()%"

// translateRedirect is Istio's redirect translation; port is the port
// the route serves, which derivePort FROM_REQUEST_PORT means.
func translateRedirect(in *networking.HTTPRedirect, port int) *routev3.RedirectAction {
	out := &routev3.RedirectAction{HostRedirect: in.GetAuthority()}
	if in.GetScheme() != "" {
		out.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: in.GetScheme()}
	}
	switch uri := in.GetUri(); {
	case strings.HasPrefix(uri, prefixMarker):
		out.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: strings.TrimPrefix(uri, prefixMarker)}
	case uri != "":
		out.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: uri}
	}
	switch {
	case in.GetPort() != 0:
		out.PortRedirect = in.GetPort()
	case in.GetDerivePort() == networking.HTTPRedirect_FROM_REQUEST_PORT && in.GetRedirectPort() != nil:
		out.PortRedirect = uint32(port)
	}
	switch in.GetRedirectCode() {
	case 0, 301:
		out.ResponseCode = routev3.RedirectAction_MOVED_PERMANENTLY
	case 302:
		out.ResponseCode = routev3.RedirectAction_FOUND
	case 303:
		out.ResponseCode = routev3.RedirectAction_SEE_OTHER
	case 307:
		out.ResponseCode = routev3.RedirectAction_TEMPORARY_REDIRECT
	case 308:
		out.ResponseCode = routev3.RedirectAction_PERMANENT_REDIRECT
	}
	return out
}

func translateDirect(in *networking.HTTPDirectResponse) *routev3.DirectResponseAction {
	out := &routev3.DirectResponseAction{Status: in.GetStatus()}
	switch b := in.GetBody().GetSpecifier().(type) {
	case *networking.HTTPBody_String_:
		out.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: b.String_}}
	case *networking.HTTPBody_Bytes:
		out.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b.Bytes}}
	}
	return out
}

// translateFault is Istio's translateFault: per-route HTTPFault config.
func translateFault(in *networking.HTTPFaultInjection) *faultv3.HTTPFault {
	if in == nil {
		return nil
	}
	out := &faultv3.HTTPFault{}
	if d := in.GetDelay(); d != nil {
		fd := &faultcommonv3.FaultDelay{Percentage: percent(d.GetPercentage(), d.GetPercent())}
		if fx := d.GetFixedDelay(); fx != nil {
			fd.FaultDelaySecifier = &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: fx}
		}
		out.Delay = fd
	}
	if a := in.GetAbort(); a != nil {
		fa := &faultv3.FaultAbort{Percentage: percent(a.GetPercentage(), 0)}
		switch e := a.GetErrorType().(type) {
		case *networking.HTTPFaultInjection_Abort_HttpStatus:
			fa.ErrorType = &faultv3.FaultAbort_HttpStatus{HttpStatus: uint32(e.HttpStatus)}
		case *networking.HTTPFaultInjection_Abort_GrpcStatus:
			fa.ErrorType = &faultv3.FaultAbort_GrpcStatus{GrpcStatus: grpcCode(e.GrpcStatus)}
		}
		out.Abort = fa
	}
	if out.Delay == nil && out.Abort == nil {
		return nil
	}
	return out
}

// percent converts a fault percentage: the Percent field, else the
// deprecated integer percent, else 100%.
func percent(p *networking.Percent, legacy int32) *typev3.FractionalPercent {
	switch {
	case p != nil:
		return fraction(p.GetValue())
	case legacy > 0:
		return &typev3.FractionalPercent{Numerator: uint32(legacy), Denominator: typev3.FractionalPercent_HUNDRED}
	}
	return fraction(100)
}

// grpcCodes maps gRPC status names to codes for abort.grpcStatus.
var grpcCodes = map[string]uint32{
	"OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4,
	"NOT_FOUND": 5, "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
	"FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12,
	"INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}

func grpcCode(s string) uint32 {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(n)
	}
	return grpcCodes[strings.ToUpper(s)]
}

// translateCors is Istio's translateCORSPolicy.
func translateCors(in *networking.CorsPolicy) *corsv3.CorsPolicy {
	if in == nil {
		return nil
	}
	out := &corsv3.CorsPolicy{
		AllowMethods:  strings.Join(in.GetAllowMethods(), ","),
		AllowHeaders:  strings.Join(in.GetAllowHeaders(), ","),
		ExposeHeaders: strings.Join(in.GetExposeHeaders(), ","),
		FilterEnabled: &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED}},
	}
	if in.GetMaxAge() != nil {
		out.MaxAge = strconv.FormatInt(in.GetMaxAge().GetSeconds(), 10)
	}
	if in.GetAllowCredentials() != nil {
		out.AllowCredentials = wrapperspb.Bool(in.GetAllowCredentials().GetValue())
	}
	for _, o := range in.GetAllowOrigin() {
		out.AllowOriginStringMatch = append(out.AllowOriginStringMatch,
			&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: o}})
	}
	for _, o := range in.GetAllowOrigins() {
		if s := stringMatcher(o); s != nil {
			out.AllowOriginStringMatch = append(out.AllowOriginStringMatch, s)
		}
	}
	return out
}

// defaultRoute is Istio's BuildDefaultHTTPOutboundRoute: everything to the
// service's cluster, no timeout, the default retry policy.
func defaultRoute(cluster, operation string) *routev3.Route {
	a := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}
	setTimeout(a, nil)
	a.RetryPolicy = DefaultRetryPolicy()
	return &routev3.Route{
		Name:      "default",
		Match:     &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Decorator: &routev3.Decorator{Operation: operation},
		Action:    &routev3.Route_Route{Route: a},
	}
}

// catchAllVirtualHost is Istio's buildCatchAllVirtualHost: unknown hosts
// pass through (ALLOW_ANY) or get 502 (REGISTRY_ONLY).
func catchAllVirtualHost(policy string) *routev3.VirtualHost {
	if policy == "REGISTRY_ONLY" {
		return &routev3.VirtualHost{
			Name:    "block_all",
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Name:   "block_all",
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 502}},
			}},
			IncludeRequestAttemptCount: true,
		}
	}
	return &routev3.VirtualHost{
		Name:    "allow_any",
		Domains: []string{"*"},
		Routes: []*routev3.Route{{
			Name:  "allow_any",
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: index.PassthroughCluster},
				Timeout:          durationpb.New(0),
				MaxGrpcTimeout:   durationpb.New(0),
			}},
		}},
		IncludeRequestAttemptCount: true,
	}
}

// mustAny marshals a message the generator built itself (failure would
// be a programming error), deterministically so equal config encodes to
// equal bytes across proxies and versions.
func mustAny(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		panic(err)
	}
	return a
}

// domains is Istio's generateVirtualHostDomains for a sidecar (which
// ignores the port in host matching): the host name, the short forms a
// client in the proxy's namespace may use, and the service's VIPs.
func domains(svc *model.Service, proxyNS, suffix string) []string {
	out := []string{svc.Hostname}
	kube := ".svc." + suffix
	if i := strings.Index(svc.Hostname, kube); i > 0 && strings.HasSuffix(svc.Hostname, kube) {
		nameNS := svc.Hostname[:i] // "reviews.default"
		name, ns, _ := strings.Cut(nameNS, ".")
		if ns == proxyNS {
			out = append(out, name, nameNS+".svc", nameNS)
		} else {
			out = append(out, nameNS, nameNS+".svc")
		}
	}
	for _, a := range svc.Addresses {
		if !strings.Contains(a, "/") {
			out = append(out, a)
		}
	}
	return out
}
