package gatewayapi

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1alpha2 "sigs.k8s.io/gateway-api/apis/v1alpha2"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// binding is the outcome of one parentRef of a route.
type binding struct {
	ref       gatewayv1.ParentReference
	mesh      bool
	meshHost  string
	listeners []*listener // the listeners that accepted the route
	// reason and message, when reason is set, say why the parent did not
	// accept the route (Accepted=False).
	reason, message string
}

// bindParents resolves a route's parentRefs. References this controller
// does not handle (another class's Gateway, unknown kinds) are left out.
func (c *converter) bindParents(o *config.Object, refs []gatewayv1.ParentReference, hostnames []gatewayv1.Hostname) []*binding {
	var out []*binding
	for i, ref := range refs {
		if slices.ContainsFunc(refs[:i], func(r gatewayv1.ParentReference) bool { return sameRef(r, ref) }) {
			continue
		}
		group := string(deref(ref.Group, gatewayv1.GroupName))
		kind := string(deref(ref.Kind, "Gateway"))
		ns := string(deref(ref.Namespace, gatewayv1.Namespace(o.Meta.Namespace)))
		b := &binding{ref: ref}
		switch {
		case group == "" && kind == "Service":
			b.mesh = true
			b.meshHost = fmt.Sprintf("%s.%s.svc.%s", ref.Name, ns, c.opts.DomainSuffix)
			if c.services[nsName{ns, string(ref.Name)}] == nil {
				b.reason = string(gatewayv1.RouteReasonNoMatchingParent)
				b.message = fmt.Sprintf("parentRef Service %s/%s not found", ns, ref.Name)
			}
		case group == gatewayv1.GroupName && kind == "Gateway":
			key := nsName{ns, string(ref.Name)}
			if c.foreign[key] {
				continue
			}
			c.bindGateway(o, b, key, hostnames)
		default:
			continue
		}
		out = append(out, b)
	}
	return out
}

func sameRef(a, b gatewayv1.ParentReference) bool {
	return deref(a.Group, gatewayv1.GroupName) == deref(b.Group, gatewayv1.GroupName) &&
		deref(a.Kind, "Gateway") == deref(b.Kind, "Gateway") && deref(a.Namespace, "") == deref(b.Namespace, "") &&
		a.Name == b.Name && deref(a.SectionName, "") == deref(b.SectionName, "") && deref(a.Port, 0) == deref(b.Port, 0)
}

// bindGateway applies a Gateway's listeners to a route: sectionName and
// port narrow the candidates; each must be valid, allow the route's kind
// and namespace, and share a hostname with it.
func (c *converter) bindGateway(o *config.Object, b *binding, key nsName, hostnames []gatewayv1.Hostname) {
	all, ok := c.listeners[key]
	if !ok {
		b.reason = string(gatewayv1.RouteReasonNoMatchingParent)
		b.message = fmt.Sprintf("Gateway %s/%s not found", key.ns, key.name)
		return
	}
	var candidates []*listener
	for _, l := range all {
		if b.ref.SectionName != nil && l.spec.Name != *b.ref.SectionName {
			continue
		}
		if b.ref.Port != nil && l.spec.Port != *b.ref.Port {
			continue
		}
		candidates = append(candidates, l)
	}
	if len(candidates) == 0 {
		b.reason = string(gatewayv1.RouteReasonNoMatchingParent)
		var want []string
		if b.ref.SectionName != nil {
			want = append(want, fmt.Sprintf("named %q", *b.ref.SectionName))
		}
		if b.ref.Port != nil {
			want = append(want, fmt.Sprintf("on port %d", *b.ref.Port))
		}
		b.message = fmt.Sprintf("Gateway %s/%s has no listener %s", key.ns, key.name, strings.Join(want, " "))
		return
	}
	hostMismatch := false
	var listenerHosts []string
	for _, l := range candidates {
		if !l.valid || !l.allowsKind(o.Kind) || !l.allowsNamespace(c, o.Meta.Namespace) {
			continue
		}
		if len(intersectHosts(hostnames, l.hostname())) == 0 {
			hostMismatch = true
			listenerHosts = append(listenerHosts, l.hostname())
			continue
		}
		b.listeners = append(b.listeners, l)
		l.attached++
	}
	switch {
	case len(b.listeners) > 0:
	case hostMismatch:
		b.reason = string(gatewayv1.RouteReasonNoMatchingListenerHostname)
		b.message = fmt.Sprintf("spec.hostnames %v do not intersect the hostnames of Gateway %s/%s's listeners %v",
			hostnames, key.ns, key.name, listenerHosts)
	default:
		b.reason = string(gatewayv1.RouteReasonNotAllowedByListeners)
		b.message = fmt.Sprintf("no valid listener of Gateway %s/%s allows a %s from namespace %q: check its allowedRoutes",
			key.ns, key.name, o.Kind.Kind, o.Meta.Namespace)
	}
}

// intersectHosts is the set of hostnames a route serves on a listener: the
// route's hostnames the listener's matches, narrowed to the more specific
// of the two when one is a wildcard.
func intersectHosts(route []gatewayv1.Hostname, lh string) []string {
	if len(route) == 0 {
		return []string{lh}
	}
	var out []string
	for _, r := range route {
		h := string(r)
		var got string
		switch {
		case lh == "*" || h == lh:
			got = h
		case wildcardMatches(h, lh):
			got = lh
		case wildcardMatches(lh, h):
			got = h
		}
		if got != "" && !slices.Contains(out, got) {
			out = append(out, got)
		}
	}
	return out
}

// wildcardMatches reports whether pattern "*.suffix" covers h (one or more
// labels before the suffix, as the Gateway API defines).
func wildcardMatches(pattern, h string) bool {
	return strings.HasPrefix(pattern, "*.") && len(h) > len(pattern)-1 && strings.HasSuffix(h, pattern[1:])
}

// refError is an unresolved reference: ResolvedRefs=False with this reason.
type refError struct{ reason, msg string }

// ruleSet is a route's rules converted for one kind of parent.
type ruleSet struct {
	http   []*networking.HTTPRoute
	tcp    []*networking.TCPRoute
	refErr *refError
	// invalid, when set, says why the route cannot be served at all
	// (Accepted=False, reason invalidReason or UnsupportedValue); nothing
	// is generated from it.
	invalid, invalidReason string
}

// vsBucket collects the routes of every xRoute for one (Istio gateway,
// host): a VirtualService is first-match, so all routes of a host must be
// in one object, ordered by Gateway API precedence.
type vsBucket struct {
	vs      *config.Object
	parents []*config.Object
}

func (c *converter) convertRoutes() {
	buckets := map[string]*vsBucket{}
	var order []string
	routes := append(slices.Clone(c.http), c.grpc...)
	slices.SortStableFunc(routes, byAge)
	for _, o := range routes {
		var refs []gatewayv1.ParentReference
		var hostnames []gatewayv1.Hostname
		var convert func(enforceGrants bool) ruleSet
		switch spec := o.Spec.(type) {
		case *gatewayv1.HTTPRouteSpec:
			refs, hostnames = spec.ParentRefs, spec.Hostnames
			convert = func(g bool) ruleSet { return c.httpRules(o, spec.Rules, g) }
		case *gatewayv1.GRPCRouteSpec:
			refs, hostnames = spec.ParentRefs, spec.Hostnames
			convert = func(g bool) ruleSet { return c.grpcRules(o, spec.Rules, g) }
		default:
			continue
		}
		bindings := c.bindParents(o, refs, hostnames)
		if len(bindings) == 0 {
			continue
		}
		// Mesh routes skip ReferenceGrant checks, as Istio's do.
		gw, mesh := c.convertFor(bindings, convert)
		c.reportRoute(o, bindings, gw, mesh)
		count := 0
		for _, b := range bindings {
			set := gw
			if b.mesh {
				set = mesh
			}
			if b.reason != "" || set.invalid != "" || len(set.http) == 0 {
				continue
			}
			for _, t := range c.targets(o, b, hostnames) {
				rs := set.http
				if b.mesh && b.ref.Port != nil {
					rs = withPort(rs, uint32(*b.ref.Port))
				}
				bk := buckets[t.key]
				if bk == nil {
					bk = &vsBucket{vs: &config.Object{
						Kind: config.VirtualService,
						Meta: metav1.ObjectMeta{
							Name:      vsName(o, count),
							Namespace: o.Meta.Namespace,
						},
						Spec:   &networking.VirtualService{Hosts: []string{t.host}, Gateways: []string{t.gateway}},
						Source: o.Source,
					}}
					count++
					buckets[t.key] = bk
					order = append(order, t.key)
				}
				vs := bk.vs.Spec.(*networking.VirtualService)
				vs.Http = append(vs.Http, cloneRoutes(rs)...)
				if !slices.Contains(bk.parents, o) {
					bk.parents = append(bk.parents, o)
				}
			}
		}
	}
	for _, k := range order {
		bk := buckets[k]
		sortHTTPRoutes(bk.vs.Spec.(*networking.VirtualService).Http)
		bk.vs.Meta.Annotations = parentsAnnotation(bk.parents...)
		c.out = append(c.out, bk.vs)
	}
	c.convertTCPRoutes()
}

// vsName is "<route>-<n>-istio-autogenerated-k8s-gateway" as Istio names
// them; GRPCRoutes get "-grpc" so an HTTPRoute of the same name cannot clash.
func vsName(o *config.Object, n int) string {
	if o.Kind == config.GRPCRoute {
		return fmt.Sprintf("%s-grpc-%d-%s", o.Meta.Name, n, autogenerated)
	}
	return fmt.Sprintf("%s-%d-%s", o.Meta.Name, n, autogenerated)
}

// convertFor converts the rules once per kind of parent present.
func (c *converter) convertFor(bindings []*binding, convert func(bool) ruleSet) (gw, mesh ruleSet) {
	if slices.ContainsFunc(bindings, func(b *binding) bool { return !b.mesh }) {
		gw = convert(true)
	}
	if slices.ContainsFunc(bindings, func(b *binding) bool { return b.mesh }) {
		mesh = convert(false)
	}
	return gw, mesh
}

type target struct{ key, host, gateway string }

// targets lists the (Istio gateway, host) pairs a bound route serves. Mesh
// routes are also kept apart by namespace: a route in a client's namespace
// applies to that namespace's clients, as Istio keys them.
func (c *converter) targets(o *config.Object, b *binding, hostnames []gatewayv1.Hostname) []target {
	if b.mesh {
		port := ""
		if b.ref.Port != nil {
			port = strconv.Itoa(int(*b.ref.Port))
		}
		return []target{{key: "mesh|" + o.Meta.Namespace + "|" + port + "|" + b.meshHost, host: b.meshHost, gateway: meshGateway}}
	}
	var out []target
	for _, l := range b.listeners {
		for _, h := range intersectHosts(hostnames, l.hostname()) {
			out = append(out, target{key: l.internalName + "|" + h, host: h, gateway: l.internalName})
		}
	}
	return out
}

func (c *converter) reportRoute(o *config.Object, bindings []*binding, gw, mesh ruleSet) {
	st := c.statusOf(o)
	gen := o.Meta.Generation
	for _, b := range bindings {
		set := gw
		if b.mesh {
			set = mesh
		}
		accepted := condition(gen, string(gatewayv1.RouteConditionAccepted), true, string(gatewayv1.RouteReasonAccepted), "Route was valid")
		switch {
		case b.reason != "":
			accepted = condition(gen, string(gatewayv1.RouteConditionAccepted), false, b.reason, b.message)
		case set.invalid != "":
			accepted = condition(gen, string(gatewayv1.RouteConditionAccepted), false,
				cmp.Or(set.invalidReason, string(gatewayv1.RouteReasonUnsupportedValue)), set.invalid)
		}
		resolved := condition(gen, string(gatewayv1.RouteConditionResolvedRefs), true, string(gatewayv1.RouteReasonResolvedRefs), "All references resolved")
		if set.refErr != nil {
			resolved = condition(gen, string(gatewayv1.RouteConditionResolvedRefs), false, set.refErr.reason, set.refErr.msg)
		}
		st.Parents = append(st.Parents, gatewayv1.RouteParentStatus{
			ParentRef:      b.ref,
			ControllerName: gatewayv1.GatewayController(c.opts.ControllerName),
			Conditions:     []metav1.Condition{accepted, resolved},
		})
	}
}

// convertTCPRoutes makes one VirtualService per TCPRoute for its Gateway
// parents (hosts "*": a TCP listener has no hostname) and one per Service
// parent.
func (c *converter) convertTCPRoutes() {
	for _, o := range c.tcp {
		spec, ok := o.Spec.(*gatewayv1alpha2.TCPRouteSpec)
		if !ok {
			continue
		}
		bindings := c.bindParents(o, spec.ParentRefs, nil)
		if len(bindings) == 0 {
			continue
		}
		gw, mesh := c.convertFor(bindings, func(g bool) ruleSet { return c.tcpRules(o, spec.Rules, g) })
		c.reportRoute(o, bindings, gw, mesh)
		var gateways []string
		meshCount := 0
		for _, b := range bindings {
			if b.reason != "" {
				continue
			}
			if !b.mesh {
				for _, l := range b.listeners {
					if !slices.Contains(gateways, l.internalName) {
						gateways = append(gateways, l.internalName)
					}
				}
				continue
			}
			if len(mesh.tcp) == 0 {
				continue
			}
			rs := withTCPPort(mesh.tcp, b.ref.Port)
			c.out = append(c.out, &config.Object{
				Kind: config.VirtualService,
				Meta: metav1.ObjectMeta{
					Name:        fmt.Sprintf("%s-tcp-%d-%s", o.Meta.Name, meshCount, autogenerated),
					Namespace:   o.Meta.Namespace,
					Annotations: parentsAnnotation(o),
				},
				Spec:   &networking.VirtualService{Hosts: []string{b.meshHost}, Gateways: []string{meshGateway}, Tcp: rs},
				Source: o.Source,
			})
			meshCount++
		}
		if len(gateways) == 0 || len(gw.tcp) == 0 {
			continue
		}
		slices.Sort(gateways)
		c.out = append(c.out, &config.Object{
			Kind: config.VirtualService,
			Meta: metav1.ObjectMeta{
				Name:        fmt.Sprintf("%s-tcp-%s", o.Meta.Name, autogenerated),
				Namespace:   o.Meta.Namespace,
				Annotations: parentsAnnotation(o),
			},
			Spec:   &networking.VirtualService{Hosts: []string{"*"}, Gateways: gateways, Tcp: gw.tcp},
			Source: o.Source,
		})
	}
}

func (c *converter) tcpRules(o *config.Object, rules []gatewayv1alpha2.TCPRouteRule, enforce bool) ruleSet {
	var set ruleSet
	for i, r := range rules {
		var dests []*networking.RouteDestination
		for _, d := range c.weighted(o, toBackends(r.BackendRefs), fmt.Sprintf("spec.rules[%d]", i), enforce, &set) {
			dests = append(dests, &networking.RouteDestination{Destination: d.dest, Weight: d.weight})
		}
		if len(dests) > 0 {
			set.tcp = append(set.tcp, &networking.TCPRoute{Route: dests})
		}
	}
	return set
}

func toBackends(refs []gatewayv1.BackendRef) []gatewayv1.HTTPBackendRef {
	out := make([]gatewayv1.HTTPBackendRef, len(refs))
	for i, r := range refs {
		out[i] = gatewayv1.HTTPBackendRef{BackendRef: r}
	}
	return out
}

func withPort(rs []*networking.HTTPRoute, port uint32) []*networking.HTTPRoute {
	out := cloneRoutes(rs)
	for _, r := range out {
		if len(r.Match) == 0 {
			r.Match = []*networking.HTTPMatchRequest{{}}
		}
		for _, m := range r.Match {
			m.Port = port
		}
	}
	return out
}

// withTCPPort copies routes, matching the parentRef's port when it names one.
func withTCPPort(rs []*networking.TCPRoute, port *gatewayv1.PortNumber) []*networking.TCPRoute {
	out := make([]*networking.TCPRoute, len(rs))
	for i, r := range rs {
		out[i] = r.DeepCopy()
		if port != nil {
			out[i].Match = []*networking.L4MatchAttributes{{Port: uint32(*port)}}
		}
	}
	return out
}

func cloneRoutes(rs []*networking.HTTPRoute) []*networking.HTTPRoute {
	out := make([]*networking.HTTPRoute, len(rs))
	for i, r := range rs {
		out[i] = r.DeepCopy()
	}
	return out
}

// sortHTTPRoutes orders a host's routes by Gateway API precedence, since a
// VirtualService is first-match: exact path, then longer prefix (regex
// last), then a method match, more header matches, more query matches.
// The sort is stable, so ties keep route age, then rule order.
func sortHTTPRoutes(rs []*networking.HTTPRoute) {
	slices.SortStableFunc(rs, func(a, b *networking.HTTPRoute) int {
		if len(a.Match) == 0 || len(b.Match) == 0 {
			switch {
			case len(a.Match) == len(b.Match):
				return 0
			case len(a.Match) == 0:
				return 1
			default:
				return -1
			}
		}
		m1, m2 := a.Match[0], b.Match[0]
		r1, l1 := uriRank(m1)
		r2, l2 := uriRank(m2)
		switch {
		case r1 != r2:
			return r2 - r1
		case l1 != l2:
			return l2 - l1
		case (m1.Method == nil) != (m2.Method == nil):
			if m1.Method != nil {
				return -1
			}
			return 1
		case len(m1.Headers) != len(m2.Headers):
			return len(m2.Headers) - len(m1.Headers)
		default:
			return len(m2.QueryParams) - len(m1.QueryParams)
		}
	})
}

// uriRank ranks exact over prefix over regex over none, with the length.
func uriRank(m *networking.HTTPMatchRequest) (rank, length int) {
	switch u := m.GetUri().GetMatchType().(type) {
	case *networking.StringMatch_Exact:
		return 3, len(u.Exact)
	case *networking.StringMatch_Prefix:
		return 2, len(u.Prefix)
	case *networking.StringMatch_Regex:
		return 1, len(u.Regex)
	}
	return 0, 0
}
