package validation

import (
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1alpha2 "sigs.k8s.io/gateway-api/apis/v1alpha2"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// The rules here are those of the Gateway API CRDs' OpenAPI schemas and CEL
// validations, which an API server would enforce before Istio sees the object.
func init() {
	register(config.KubeGateway, (*collector).kubeGateway)
	register(config.GatewayClass, (*collector).gatewayClass)
	register(config.HTTPRoute, (*collector).httpRouteSpec)
	register(config.GRPCRoute, (*collector).grpcRouteSpec)
	register(config.TCPRoute, (*collector).tcpRouteSpec)
	register(config.ReferenceGrant, (*collector).referenceGrant)
}

var (
	gwHostname    = regexp.MustCompile(`^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	gwSectionName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	gwDuration    = regexp.MustCompile(`^([0-9]{1,5}(h|m|s|ms)){1,4}$`)
	gwController  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/[A-Za-z0-9\/\-._~%!$&'()*+,;=:]+$`)
	gwPathChars   = regexp.MustCompile(`^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$`)
	grpcService   = regexp.MustCompile(`^[a-zA-Z0-9_]+(\.[a-zA-Z0-9_]+)*$`)
	grpcMethod    = regexp.MustCompile(`^[A-Za-z_][A-Za-z_0-9]*$`)
)

func (v *collector) gwHostname(path string, h string) {
	_, ipErr := netip.ParseAddr(h)
	if len(h) > 253 || !gwHostname.MatchString(h) || ipErr == nil {
		v.add(path, "%q is not a valid hostname; use lowercase DNS labels, optionally starting with \"*.\" (IP addresses are not allowed)", h)
	}
}

func (v *collector) gatewayClass(gc *gatewayv1.GatewayClassSpec) {
	if !gwController.MatchString(string(gc.ControllerName)) {
		v.add("spec.controllerName", "%q must be domain/path, e.g. istio.io/gateway-controller", gc.ControllerName)
	}
}

func (v *collector) kubeGateway(g *gatewayv1.GatewaySpec) {
	if g.GatewayClassName == "" {
		v.add("spec.gatewayClassName", "is empty; name the GatewayClass, e.g. istio")
	}
	if n := len(g.Listeners); n == 0 || n > 64 {
		v.add("spec.listeners", "has %d listeners; a Gateway needs 1 to 64", n)
	}
	names := map[gatewayv1.SectionName]int{}
	type combo struct {
		port     gatewayv1.PortNumber
		protocol gatewayv1.ProtocolType
		host     string
	}
	combos := map[combo]int{}
	for i, l := range g.Listeners {
		p := idx("spec.listeners", i)
		if !gwSectionName.MatchString(string(l.Name)) || len(l.Name) > 253 {
			v.add(field(p, "name"), "%q is not a valid listener name; use lowercase letters, digits, '-' and '.'", l.Name)
		}
		if first, dup := names[l.Name]; dup {
			v.add(field(p, "name"), "listener name %q is already used by spec.listeners[%d]; listener names must be unique", l.Name, first)
		} else {
			names[l.Name] = i
		}
		if l.Port < 1 || l.Port > 65535 {
			v.add(field(p, "port"), "port %d is out of range; use 1-65535", l.Port)
		}
		proto := l.Protocol
		switch proto {
		case gatewayv1.HTTPProtocolType, gatewayv1.HTTPSProtocolType, gatewayv1.TLSProtocolType, gatewayv1.TCPProtocolType, gatewayv1.UDPProtocolType:
		default:
			if !strings.Contains(string(proto), "/") {
				v.add(field(p, "protocol"), "%q is not a protocol; use HTTP, HTTPS, TLS, TCP, UDP or a domain-prefixed one", proto)
			}
		}
		host := ""
		if l.Hostname != nil {
			host = string(*l.Hostname)
			v.gwHostname(field(p, "hostname"), host)
			if proto == gatewayv1.TCPProtocolType || proto == gatewayv1.UDPProtocolType {
				v.add(field(p, "hostname"), "must not be set for protocol %s, which carries no host name", proto)
			}
		}
		c := combo{l.Port, proto, host}
		if first, dup := combos[c]; dup {
			v.add(p, "has the same port, protocol and hostname as spec.listeners[%d]; each listener needs a distinct combination", first)
		} else {
			combos[c] = i
		}
		switch proto {
		case gatewayv1.HTTPProtocolType, gatewayv1.TCPProtocolType, gatewayv1.UDPProtocolType:
			if l.TLS != nil {
				v.add(field(p, "tls"), "must not be set for protocol %s; use HTTPS or TLS to terminate TLS", proto)
			}
		case gatewayv1.HTTPSProtocolType, gatewayv1.TLSProtocolType:
			if proto == gatewayv1.TLSProtocolType && (l.TLS == nil || l.TLS.Mode == nil) {
				v.add(field(p, "tls.mode"), "must be set for protocol TLS; use Passthrough, or Terminate with certificateRefs")
			}
			if l.TLS == nil {
				if proto == gatewayv1.HTTPSProtocolType {
					v.add(field(p, "tls"), "is required for protocol HTTPS; give certificateRefs")
				}
				break
			}
			mode := gatewayv1.TLSModeTerminate
			if l.TLS.Mode != nil {
				mode = *l.TLS.Mode
			}
			if proto == gatewayv1.HTTPSProtocolType && mode != gatewayv1.TLSModeTerminate {
				v.add(field(p, "tls.mode"), "must be Terminate for protocol HTTPS; use protocol TLS to pass TLS through")
			}
			if mode == gatewayv1.TLSModeTerminate && len(l.TLS.CertificateRefs) == 0 && len(l.TLS.Options) == 0 {
				v.add(field(p, "tls.certificateRefs"), "is empty; mode Terminate needs a certificate Secret")
			}
			for j, ref := range l.TLS.CertificateRefs {
				if ref.Name == "" {
					v.add(field(idx(field(p, "tls.certificateRefs"), j), "name"), "is empty; name the Secret")
				}
			}
		}
	}
}

func (v *collector) parentRefs(path string, refs []gatewayv1.ParentReference) {
	if len(refs) > 32 {
		v.add(path, "has %d entries; at most 32 are allowed", len(refs))
	}
	// A parent named twice must be told apart by sectionName or port.
	type parent struct{ group, kind, ns, name string }
	type section struct {
		name string
		port int32
	}
	keyOf := func(r gatewayv1.ParentReference) parent {
		k := parent{name: string(r.Name)}
		if r.Group != nil {
			k.group = string(*r.Group)
		}
		if r.Kind != nil {
			k.kind = string(*r.Kind)
		}
		if r.Namespace != nil {
			k.ns = string(*r.Namespace)
		}
		return k
	}
	byParent := map[parent][]int{}
	for i, r := range refs {
		byParent[keyOf(r)] = append(byParent[keyOf(r)], i)
	}
	for i, r := range refs {
		same := byParent[keyOf(r)]
		if len(same) < 2 {
			continue
		}
		s := section{}
		if r.SectionName != nil {
			s.name = string(*r.SectionName)
		}
		if r.Port != nil {
			s.port = *r.Port
		}
		if s == (section{}) {
			v.add(idx(path, i), "names parent %q again without sectionName or port; say which listener or port of it each entry means", r.Name)
			continue
		}
		for _, j := range same {
			if j >= i {
				break
			}
			o := section{}
			if refs[j].SectionName != nil {
				o.name = string(*refs[j].SectionName)
			}
			if refs[j].Port != nil {
				o.port = *refs[j].Port
			}
			if o == s {
				v.add(idx(path, i), "repeats %s with the same sectionName and port; remove one", idx(path, j))
				break
			}
		}
	}
	for i, r := range refs {
		p := idx(path, i)
		if r.Name == "" {
			v.add(field(p, "name"), "is empty; name the parent Gateway or Service")
		}
		if r.Port != nil && (*r.Port < 1 || *r.Port > 65535) {
			v.add(field(p, "port"), "port %d is out of range; use 1-65535", *r.Port)
		}
		if r.SectionName != nil && !gwSectionName.MatchString(string(*r.SectionName)) {
			v.add(field(p, "sectionName"), "%q is not a valid listener name", *r.SectionName)
		}
	}
}

func (v *collector) routeHostnames(path string, hs []gatewayv1.Hostname) {
	if len(hs) > 16 {
		v.add(path, "has %d entries; at most 16 are allowed", len(hs))
	}
	seen := map[gatewayv1.Hostname]bool{}
	for i, h := range hs {
		v.gwHostname(idx(path, i), string(h))
		if seen[h] {
			v.add(idx(path, i), "%q is listed twice", h)
		}
		seen[h] = true
	}
}

// ruleNames checks that named rules have unique names.
func (v *collector) ruleNames(names []*gatewayv1.SectionName) {
	seen := map[gatewayv1.SectionName]int{}
	for i, n := range names {
		if n == nil {
			continue
		}
		p := field(idx("spec.rules", i), "name")
		if !gwSectionName.MatchString(string(*n)) {
			v.add(p, "%q is not a valid rule name; use lowercase letters, digits, '-' and '.'", *n)
		}
		if first, dup := seen[*n]; dup {
			v.add(p, "rule name %q is already used by spec.rules[%d]; rule names must be unique", *n, first)
		} else {
			seen[*n] = i
		}
	}
}

// isService reports whether a backend reference names a Kubernetes Service
// (the default group and kind), which needs a port.
func isService(group *gatewayv1.Group, kind *gatewayv1.Kind) bool {
	return (group == nil || *group == "" || *group == "core") && (kind == nil || *kind == "Service")
}

func (v *collector) backendObject(path string, r gatewayv1.BackendObjectReference) {
	if r.Name == "" {
		v.add(field(path, "name"), "is empty; name the backend Service")
	}
	if r.Port == nil {
		if isService(r.Group, r.Kind) {
			v.add(field(path, "port"), "is required for a Service backend; give the service port")
		}
	} else if *r.Port < 1 || *r.Port > 65535 {
		v.add(field(path, "port"), "port %d is out of range; use 1-65535", *r.Port)
	}
}

func (v *collector) backendRef(path string, r gatewayv1.BackendRef) {
	v.backendObject(path, r.BackendObjectReference)
	if r.Weight != nil && (*r.Weight < 0 || *r.Weight > 1000000) {
		v.add(field(path, "weight"), "weight %d is out of range; use 0-1000000", *r.Weight)
	}
}

func (v *collector) httpRouteSpec(s *gatewayv1.HTTPRouteSpec) {
	v.parentRefs("spec.parentRefs", s.ParentRefs)
	v.routeHostnames("spec.hostnames", s.Hostnames)
	if len(s.Rules) > 16 {
		v.add("spec.rules", "has %d rules; at most 16 are allowed", len(s.Rules))
	}
	names := make([]*gatewayv1.SectionName, len(s.Rules))
	total := 0
	for i, r := range s.Rules {
		names[i] = r.Name
		total += len(r.Matches)
	}
	v.ruleNames(names)
	if total > 128 {
		v.add("spec.rules", "have %d matches in all; at most 128 are allowed across a route's rules", total)
	}
	for i, r := range s.Rules {
		p := idx("spec.rules", i)
		if len(r.Matches) > 64 {
			v.add(field(p, "matches"), "has %d matches; at most 64 are allowed", len(r.Matches))
		}
		for j, m := range r.Matches {
			v.httpRouteMatch(idx(field(p, "matches"), j), m)
		}
		v.httpFilters(field(p, "filters"), r.Filters, r.Matches)
		hasRedirect := false
		for _, f := range r.Filters {
			hasRedirect = hasRedirect || f.Type == gatewayv1.HTTPRouteFilterRequestRedirect
		}
		if hasRedirect && len(r.BackendRefs) > 0 {
			v.add(field(p, "backendRefs"), "must be empty when the rule has a RequestRedirect filter; a redirect answers the client itself")
		}
		for j, b := range r.BackendRefs {
			bp := idx(field(p, "backendRefs"), j)
			v.backendRef(bp, b.BackendRef)
			v.httpFilters(field(bp, "filters"), b.Filters, r.Matches)
		}
		if t := r.Timeouts; t != nil {
			req := v.gwDuration(field(p, "timeouts.request"), t.Request)
			back := v.gwDuration(field(p, "timeouts.backendRequest"), t.BackendRequest)
			if req > 0 && back > req {
				v.add(field(p, "timeouts.backendRequest"), "%s is longer than timeouts.request %s; it must not exceed it", back, req)
			}
		}
		if rt := r.Retry; rt != nil {
			if rt.Attempts != nil && *rt.Attempts < 0 {
				v.add(field(p, "retry.attempts"), "%d is negative", *rt.Attempts)
			}
			for j, c := range rt.Codes {
				if c < 400 || c > 599 {
					v.add(idx(field(p, "retry.codes"), j), "status %d is out of range; use 400-599", c)
				}
			}
			v.gwDuration(field(p, "retry.backoff"), rt.Backoff)
		}
	}
}

// gwDuration checks a Gateway API duration (GEP-2257: "1h2m3s4ms") and
// returns its value, or 0 when absent or invalid.
func (v *collector) gwDuration(path string, d *gatewayv1.Duration) time.Duration {
	if d == nil {
		return 0
	}
	if !gwDuration.MatchString(string(*d)) {
		v.add(path, "%q is not a Gateway API duration; write e.g. 10s, 500ms or 1m30s", *d)
		return 0
	}
	du, err := time.ParseDuration(string(*d))
	if err != nil {
		v.add(path, "%q is not a duration: %v", *d, err)
		return 0
	}
	return du
}

func (v *collector) httpRouteMatch(path string, m gatewayv1.HTTPRouteMatch) {
	if pm := m.Path; pm != nil {
		typ := gatewayv1.PathMatchPathPrefix
		if pm.Type != nil {
			typ = *pm.Type
		}
		val := "/"
		if pm.Value != nil {
			val = *pm.Value
		}
		switch typ {
		case gatewayv1.PathMatchExact, gatewayv1.PathMatchPathPrefix:
			if !gwPathChars.MatchString(val) {
				v.add(field(path, "path.value"), "%q has characters a path cannot hold; percent-encode them", val)
			} else if msg := pathValueProblem(val); msg != "" {
				v.add(field(path, "path.value"), "%q %s", val, msg)
			}
		case gatewayv1.PathMatchRegularExpression:
			v.regex(field(path, "path.value"), val)
		default:
			v.add(field(path, "path.type"), "%q is not a path match type; use Exact, PathPrefix or RegularExpression", typ)
		}
	}
	seen := map[string]bool{}
	for i, h := range m.Headers {
		hp := idx(field(path, "headers"), i)
		v.gwHeaderName(field(hp, "name"), string(h.Name), seen)
		if h.Type != nil && *h.Type == gatewayv1.HeaderMatchRegularExpression {
			v.regex(field(hp, "value"), h.Value)
		}
	}
	seen = map[string]bool{}
	for i, q := range m.QueryParams {
		qp := idx(field(path, "queryParams"), i)
		v.gwHeaderName(field(qp, "name"), string(q.Name), seen)
		if q.Type != nil && *q.Type == gatewayv1.QueryParamMatchRegularExpression {
			v.regex(field(qp, "value"), q.Value)
		}
	}
	if m.Method != nil && !httpMethods[string(*m.Method)] {
		v.add(field(path, "method"), "%q is not an HTTP method; use an upper-case method such as GET", *m.Method)
	}
}

// pathValueProblem applies the CRD's CEL rules for Exact and PathPrefix paths.
func pathValueProblem(p string) string {
	switch {
	case !strings.HasPrefix(p, "/"):
		return "must be an absolute path starting with /"
	case strings.Contains(p, "//"):
		return "must not contain //"
	case strings.Contains(p, "/./"), strings.HasSuffix(p, "/."):
		return "must not contain /. segments"
	case strings.Contains(p, "/../"), strings.HasSuffix(p, "/.."):
		return "must not contain /.. segments"
	case strings.Contains(strings.ToLower(p), "%2f"):
		return "must not contain an encoded slash (%2f)"
	case strings.Contains(p, "#"):
		return "must not contain #"
	}
	return ""
}

// gwHeaderName checks a Gateway API header name (case-insensitive, so
// duplicates are compared lowercased).
func (v *collector) gwHeaderName(path, name string, seen map[string]bool) {
	if !headerToken.MatchString(name) || strings.HasPrefix(name, ":") {
		v.add(path, "%q is not a valid header name", name)
		return
	}
	lower := strings.ToLower(name)
	if seen[lower] {
		v.add(path, "%q is matched twice in one match; merge the conditions", name)
	}
	seen[lower] = true
}

func (v *collector) httpFilters(path string, fs []gatewayv1.HTTPRouteFilter, matches []gatewayv1.HTTPRouteMatch) {
	if len(fs) > 16 {
		v.add(path, "has %d filters; at most 16 are allowed", len(fs))
	}
	count := map[gatewayv1.HTTPRouteFilterType]int{}
	for i, f := range fs {
		p := idx(path, i)
		count[f.Type]++
		set := map[string]bool{
			string(gatewayv1.HTTPRouteFilterRequestHeaderModifier):  f.RequestHeaderModifier != nil,
			string(gatewayv1.HTTPRouteFilterResponseHeaderModifier): f.ResponseHeaderModifier != nil,
			string(gatewayv1.HTTPRouteFilterRequestMirror):          f.RequestMirror != nil,
			string(gatewayv1.HTTPRouteFilterRequestRedirect):        f.RequestRedirect != nil,
			string(gatewayv1.HTTPRouteFilterURLRewrite):             f.URLRewrite != nil,
			string(gatewayv1.HTTPRouteFilterCORS):                   f.CORS != nil,
			string(gatewayv1.HTTPRouteFilterExternalAuth):           f.ExternalAuth != nil,
			string(gatewayv1.HTTPRouteFilterExtensionRef):           f.ExtensionRef != nil,
		}
		if _, known := set[string(f.Type)]; !known {
			v.add(field(p, "type"), "%q is not a filter type; use RequestHeaderModifier, ResponseHeaderModifier, RequestMirror, RequestRedirect, URLRewrite, CORS, ExternalAuth or ExtensionRef", f.Type)
			continue
		}
		v.filterFields(p, string(f.Type), set)
		v.headerFilter(field(p, "requestHeaderModifier"), f.RequestHeaderModifier)
		v.headerFilter(field(p, "responseHeaderModifier"), f.ResponseHeaderModifier)
		v.mirror(field(p, "requestMirror"), f.RequestMirror)
		if rr := f.RequestRedirect; rr != nil {
			rp := field(p, "requestRedirect")
			if rr.Scheme != nil && *rr.Scheme != "http" && *rr.Scheme != "https" {
				v.add(field(rp, "scheme"), "%q is not http or https", *rr.Scheme)
			}
			if rr.Hostname != nil {
				v.gwHostname(field(rp, "hostname"), string(*rr.Hostname))
			}
			if rr.Port != nil && (*rr.Port < 1 || *rr.Port > 65535) {
				v.add(field(rp, "port"), "port %d is out of range; use 1-65535", *rr.Port)
			}
			if rr.StatusCode != nil {
				switch *rr.StatusCode {
				case 301, 302, 303, 307, 308:
				default:
					v.add(field(rp, "statusCode"), "%d is not a redirect code; use 301, 302, 303, 307 or 308", *rr.StatusCode)
				}
			}
			v.pathModifier(field(rp, "path"), rr.Path, matches)
		}
		if rw := f.URLRewrite; rw != nil {
			if rw.Hostname != nil {
				v.gwHostname(field(p, "urlRewrite.hostname"), string(*rw.Hostname))
			}
			v.pathModifier(field(p, "urlRewrite.path"), rw.Path, matches)
		}
		if er := f.ExtensionRef; er != nil && (er.Kind == "" || er.Name == "") {
			v.add(field(p, "extensionRef"), "needs kind and name")
		}
	}
	if count[gatewayv1.HTTPRouteFilterRequestRedirect] > 0 && count[gatewayv1.HTTPRouteFilterURLRewrite] > 0 {
		v.add(path, "has both RequestRedirect and URLRewrite; keep one")
	}
	for _, t := range []gatewayv1.HTTPRouteFilterType{gatewayv1.HTTPRouteFilterRequestHeaderModifier, gatewayv1.HTTPRouteFilterResponseHeaderModifier, gatewayv1.HTTPRouteFilterRequestRedirect, gatewayv1.HTTPRouteFilterURLRewrite} {
		if count[t] > 1 {
			v.add(path, "has %d %s filters; merge them into one", count[t], t)
		}
	}
}

// filterFields enforces that a filter sets the field of its type and no
// other; set maps each type to whether its field is present.
func (v *collector) filterFields(path, typ string, set map[string]bool) {
	for _, t := range slices.Sorted(maps.Keys(set)) {
		switch {
		case t == typ && !set[t]:
			v.add(path, "has type %s but no %s; give its settings", typ, filterField(t))
		case t != typ && set[t]:
			v.add(field(path, filterField(t)), "must not be set on a filter of type %s", typ)
		}
	}
}

// filterField is the field name that holds a filter type's settings.
func filterField(t string) string {
	switch t {
	case "URLRewrite":
		return "urlRewrite"
	case "CORS":
		return "cors"
	}
	return strings.ToLower(t[:1]) + t[1:]
}

func (v *collector) headerFilter(path string, h *gatewayv1.HTTPHeaderFilter) {
	if h == nil {
		return
	}
	if len(h.Set) == 0 && len(h.Add) == 0 && len(h.Remove) == 0 {
		v.add(path, "changes nothing; give set, add or remove")
	}
	for _, op := range []struct {
		name string
		l    []gatewayv1.HTTPHeader
	}{{"set", h.Set}, {"add", h.Add}} {
		seen := map[string]bool{}
		for i, hd := range op.l {
			v.gwHeaderName(field(idx(field(path, op.name), i), "name"), string(hd.Name), seen)
		}
	}
	seen := map[string]bool{}
	for i, n := range h.Remove {
		v.gwHeaderName(idx(field(path, "remove"), i), n, seen)
	}
}

func (v *collector) mirror(path string, m *gatewayv1.HTTPRequestMirrorFilter) {
	if m == nil {
		return
	}
	v.backendObject(field(path, "backendRef"), m.BackendRef)
	if m.Percent != nil && m.Fraction != nil {
		v.add(path, "sets both percent and fraction; keep one")
	}
	if m.Percent != nil && (*m.Percent < 0 || *m.Percent > 100) {
		v.add(field(path, "percent"), "%d is out of range; use 0-100", *m.Percent)
	}
	if f := m.Fraction; f != nil {
		den := int32(100)
		if f.Denominator != nil {
			den = *f.Denominator
		}
		if den < 1 {
			v.add(field(path, "fraction.denominator"), "%d must be at least 1", den)
		} else if f.Numerator < 0 || f.Numerator > den {
			v.add(field(path, "fraction.numerator"), "%d must be between 0 and the denominator %d", f.Numerator, den)
		}
	}
}

func (v *collector) pathModifier(path string, pm *gatewayv1.HTTPPathModifier, matches []gatewayv1.HTTPRouteMatch) {
	if pm == nil {
		return
	}
	switch pm.Type {
	case gatewayv1.FullPathHTTPPathModifier:
		if pm.ReplaceFullPath == nil {
			v.add(field(path, "replaceFullPath"), "is required with type ReplaceFullPath")
		}
		if pm.ReplacePrefixMatch != nil {
			v.add(field(path, "replacePrefixMatch"), "must not be set with type ReplaceFullPath")
		}
	case gatewayv1.PrefixMatchHTTPPathModifier:
		if pm.ReplacePrefixMatch == nil {
			v.add(field(path, "replacePrefixMatch"), "is required with type ReplacePrefixMatch")
		}
		if pm.ReplaceFullPath != nil {
			v.add(field(path, "replaceFullPath"), "must not be set with type ReplacePrefixMatch")
		}
		// The prefix to replace is the rule's one PathPrefix match.
		ok := len(matches) == 1 && matches[0].Path != nil && (matches[0].Path.Type == nil || *matches[0].Path.Type == gatewayv1.PathMatchPathPrefix)
		if !ok {
			v.add(path, "ReplacePrefixMatch needs the rule to have exactly one match, of type PathPrefix")
		}
	default:
		v.add(field(path, "type"), "%q is not a path modifier; use ReplaceFullPath or ReplacePrefixMatch", pm.Type)
	}
}

func (v *collector) grpcRouteSpec(s *gatewayv1.GRPCRouteSpec) {
	v.parentRefs("spec.parentRefs", s.ParentRefs)
	v.routeHostnames("spec.hostnames", s.Hostnames)
	if len(s.Rules) > 16 {
		v.add("spec.rules", "has %d rules; at most 16 are allowed", len(s.Rules))
	}
	names := make([]*gatewayv1.SectionName, len(s.Rules))
	for i, r := range s.Rules {
		names[i] = r.Name
	}
	v.ruleNames(names)
	for i, r := range s.Rules {
		p := idx("spec.rules", i)
		for j, m := range r.Matches {
			mp := idx(field(p, "matches"), j)
			if mm := m.Method; mm != nil {
				v.grpcMethodMatch(field(mp, "method"), mm)
			}
			seen := map[string]bool{}
			for k, h := range m.Headers {
				hp := idx(field(mp, "headers"), k)
				v.gwHeaderName(field(hp, "name"), string(h.Name), seen)
				if h.Type != nil && *h.Type == gatewayv1.GRPCHeaderMatchRegularExpression {
					v.regex(field(hp, "value"), h.Value)
				}
			}
		}
		v.grpcFilters(field(p, "filters"), r.Filters)
		for j, b := range r.BackendRefs {
			bp := idx(field(p, "backendRefs"), j)
			v.backendRef(bp, b.BackendRef)
			v.grpcFilters(field(bp, "filters"), b.Filters)
		}
	}
}

func (v *collector) grpcMethodMatch(path string, m *gatewayv1.GRPCMethodMatch) {
	regex := m.Type != nil && *m.Type == gatewayv1.GRPCMethodMatchRegularExpression
	if m.Service == nil && m.Method == nil {
		v.add(path, "needs service, method or both")
		return
	}
	for _, part := range []struct {
		name string
		val  *string
		re   *regexp.Regexp
	}{{"service", m.Service, grpcService}, {"method", m.Method, grpcMethod}} {
		if part.val == nil {
			continue
		}
		if regex {
			v.regex(field(path, part.name), *part.val)
		} else if !part.re.MatchString(*part.val) {
			v.add(field(path, part.name), "%q is not a valid gRPC %s name", *part.val, part.name)
		}
	}
}

func (v *collector) grpcFilters(path string, fs []gatewayv1.GRPCRouteFilter) {
	count := map[gatewayv1.GRPCRouteFilterType]int{}
	for i, f := range fs {
		p := idx(path, i)
		count[f.Type]++
		set := map[string]bool{
			string(gatewayv1.GRPCRouteFilterRequestHeaderModifier):  f.RequestHeaderModifier != nil,
			string(gatewayv1.GRPCRouteFilterResponseHeaderModifier): f.ResponseHeaderModifier != nil,
			string(gatewayv1.GRPCRouteFilterRequestMirror):          f.RequestMirror != nil,
			string(gatewayv1.GRPCRouteFilterExtensionRef):           f.ExtensionRef != nil,
		}
		if _, known := set[string(f.Type)]; !known {
			v.add(field(p, "type"), "%q is not a gRPC filter type; use RequestHeaderModifier, ResponseHeaderModifier, RequestMirror or ExtensionRef", f.Type)
			continue
		}
		v.filterFields(p, string(f.Type), set)
		v.headerFilter(field(p, "requestHeaderModifier"), f.RequestHeaderModifier)
		v.headerFilter(field(p, "responseHeaderModifier"), f.ResponseHeaderModifier)
		v.mirror(field(p, "requestMirror"), f.RequestMirror)
	}
	for _, t := range []gatewayv1.GRPCRouteFilterType{gatewayv1.GRPCRouteFilterRequestHeaderModifier, gatewayv1.GRPCRouteFilterResponseHeaderModifier} {
		if count[t] > 1 {
			v.add(path, "has %d %s filters; merge them into one", count[t], t)
		}
	}
}

func (v *collector) tcpRouteSpec(s *gatewayv1alpha2.TCPRouteSpec) {
	v.parentRefs("spec.parentRefs", s.ParentRefs)
	if n := len(s.Rules); n == 0 || n > 16 {
		v.add("spec.rules", "has %d rules; a TCPRoute needs 1 to 16", n)
	}
	names := make([]*gatewayv1.SectionName, len(s.Rules))
	for i, r := range s.Rules {
		names[i] = r.Name
	}
	v.ruleNames(names)
	for i, r := range s.Rules {
		p := idx("spec.rules", i)
		if n := len(r.BackendRefs); n == 0 || n > 16 {
			v.add(field(p, "backendRefs"), "has %d entries; a TCPRoute rule needs 1 to 16", n)
		}
		for j, b := range r.BackendRefs {
			v.backendRef(idx(field(p, "backendRefs"), j), b)
		}
	}
}

func (v *collector) referenceGrant(s *gatewayv1.ReferenceGrantSpec) {
	if n := len(s.From); n == 0 || n > 16 {
		v.add("spec.from", "has %d entries; a ReferenceGrant needs 1 to 16", n)
	}
	if n := len(s.To); n == 0 || n > 16 {
		v.add("spec.to", "has %d entries; a ReferenceGrant needs 1 to 16", n)
	}
	for i, f := range s.From {
		p := idx("spec.from", i)
		if f.Kind == "" {
			v.add(field(p, "kind"), "is empty; give the referring kind, e.g. HTTPRoute")
		}
		if f.Namespace == "" {
			v.add(field(p, "namespace"), "is empty; give the namespace of the referring objects")
		}
	}
	for i, t := range s.To {
		if t.Kind == "" {
			v.add(field(idx("spec.to", i), "kind"), "is empty; give the referred kind, e.g. Service")
		}
	}
}
