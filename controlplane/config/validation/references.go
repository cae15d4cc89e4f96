package validation

import (
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// ObjectError is a problem found in one object by looking at others.
type ObjectError struct {
	Object *config.Object
	Err    *FieldError
}

func (e ObjectError) Error() string { return e.Object.Describe() + ": " + e.Err.Error() }

// defaultDomain is the cluster domain short service names expand into.
const defaultDomain = "svc.cluster.local"

// CheckReferences checks what one object cannot tell alone, as `istioctl
// analyze` does: a VirtualService bound to a Gateway that does not exist
// (error), an HTTPRoute or GRPCRoute whose parent Gateway or listener does
// not exist (error) or whose parent Service does not (warning), a route to
// a host no Service or ServiceEntry provides or to a subset no
// DestinationRule defines (warnings), and several DestinationRules for one
// host in one namespace (warning). Objects with the same key are taken as one object seen twice,
// never as duplicates. Results follow the order of objs.
func CheckReferences(objs []*config.Object) []ObjectError {
	ix := newIndex(objs)
	var out []ObjectError
	for _, o := range objs {
		v := &collector{}
		switch spec := o.Spec.(type) {
		case *networking.VirtualService:
			ix.virtualServiceRefs(v, o, spec)
		case *gatewayv1.HTTPRouteSpec:
			ix.routeParents(v, o, spec.ParentRefs)
		case *gatewayv1.GRPCRouteSpec:
			ix.routeParents(v, o, spec.ParentRefs)
		case *networking.DestinationRule:
			ix.duplicateRules(v, o, spec)
		}
		for _, e := range v.list {
			out = append(out, ObjectError{Object: o, Err: e.(*FieldError)})
		}
	}
	return out
}

type nsName struct{ ns, name string }

type index struct {
	istioGateways map[nsName]bool
	kubeGateways  map[nsName]*gatewayv1.GatewaySpec
	services      map[nsName]bool
	// serviceHosts are the Services' FQDNs; entryHosts the ServiceEntries'
	// hosts as written (resolved), wildcards included.
	serviceHosts map[string]bool
	entryHosts   []string
	// subsets maps a DestinationRule host (as resolved) to the subsets
	// defined for it, across all DestinationRules.
	subsets map[string]map[string]bool
	// rules lists DestinationRules by namespace and resolved host.
	rules map[nsName][]*config.Object
}

func newIndex(objs []*config.Object) *index {
	ix := &index{
		istioGateways: map[nsName]bool{},
		kubeGateways:  map[nsName]*gatewayv1.GatewaySpec{},
		services:      map[nsName]bool{},
		serviceHosts:  map[string]bool{},
		subsets:       map[string]map[string]bool{},
		rules:         map[nsName][]*config.Object{},
	}
	seen := map[config.Key]bool{}
	for _, o := range objs {
		k := nsName{namespace(o), o.Meta.Name}
		switch o.Kind {
		case config.Gateway:
			ix.istioGateways[k] = true
		case config.KubeGateway:
			if g, ok := o.Spec.(*gatewayv1.GatewaySpec); ok {
				ix.kubeGateways[k] = g
			}
		case config.Service:
			ix.services[k] = true
			ix.serviceHosts[resolveHost(k.name, k.ns)] = true
		case config.ServiceEntry:
			if se, ok := o.Spec.(*networking.ServiceEntry); ok {
				for _, h := range se.Hosts {
					ix.entryHosts = append(ix.entryHosts, resolveHost(h, k.ns))
				}
			}
		case config.DestinationRule:
			dr, ok := o.Spec.(*networking.DestinationRule)
			if !ok {
				continue
			}
			host := resolveHost(dr.Host, namespace(o))
			if ix.subsets[host] == nil {
				ix.subsets[host] = map[string]bool{}
			}
			for _, s := range dr.Subsets {
				if s != nil {
					ix.subsets[host][s.Name] = true
				}
			}
			if !seen[o.Key()] {
				hk := nsName{namespace(o), host}
				ix.rules[hk] = append(ix.rules[hk], o)
			}
		}
		seen[o.Key()] = true
	}
	return ix
}

func namespace(o *config.Object) string {
	if o.Meta.Namespace == "" {
		return "default"
	}
	return o.Meta.Namespace
}

// resolveHost expands a short name ("reviews") in namespace ns into the
// service's FQDN, as Istio does; names with a dot or a wildcard are kept.
func resolveHost(h, ns string) string {
	if h == "" || strings.Contains(h, ".") || strings.Contains(h, "*") {
		return h
	}
	return h + "." + ns + "." + defaultDomain
}

func (ix *index) virtualServiceRefs(v *collector, o *config.Object, vs *networking.VirtualService) {
	ns := namespace(o)
	ix.gatewayRefs(v, ns, "spec.gateways", vs.Gateways)
	for i, r := range vs.Http {
		if r == nil {
			continue
		}
		p := idx("spec.http", i)
		for j, m := range r.Match {
			if m != nil {
				ix.gatewayRefs(v, ns, field(idx(field(p, "match"), j), "gateways"), m.Gateways)
			}
		}
		for j, d := range r.Route {
			if d != nil {
				ix.destinationRef(v, ns, field(idx(field(p, "route"), j), "destination"), d.Destination)
			}
		}
		ix.destinationRef(v, ns, field(p, "mirror"), r.Mirror)
		for j, m := range r.Mirrors {
			if m != nil {
				ix.destinationRef(v, ns, field(idx(field(p, "mirrors"), j), "destination"), m.Destination)
			}
		}
	}
	for i, r := range vs.Tls {
		if r != nil {
			l4Refs(ix, v, ns, idx("spec.tls", i), r.Match, r.Route)
		}
	}
	for i, r := range vs.Tcp {
		if r != nil {
			l4Refs(ix, v, ns, idx("spec.tcp", i), r.Match, r.Route)
		}
	}
}

// l4Refs checks a tls or tcp route's gateways and destinations; the two
// kinds differ only in their match type.
func l4Refs[M interface {
	comparable
	GetGateways() []string
}](ix *index, v *collector, ns, p string, matches []M, routes []*networking.RouteDestination) {
	var none M
	for j, m := range matches {
		if m != none {
			ix.gatewayRefs(v, ns, field(idx(field(p, "match"), j), "gateways"), m.GetGateways())
		}
	}
	for j, d := range routes {
		if d != nil {
			ix.destinationRef(v, ns, field(idx(field(p, "route"), j), "destination"), d.Destination)
		}
	}
}

func (ix *index) gatewayRefs(v *collector, ns, path string, gws []string) {
	for i, g := range gws {
		if g == "mesh" {
			continue
		}
		k := nsName{ns, g}
		if gns, name, ok := strings.Cut(g, "/"); ok {
			k = nsName{gns, name}
		} else if parts := strings.Split(g, "."); len(parts) > 1 {
			// The legacy form name.namespace[.svc.cluster.local].
			k = nsName{parts[1], parts[0]}
		}
		if !ix.istioGateways[k] {
			v.add(idx(path, i), "gateway %q not found: there is no Gateway %s/%s; create it or fix the name (use namespace/name for a Gateway in another namespace)", g, k.ns, k.name)
		}
	}
}

// destinationRef checks that a route's destination host is a known
// service and its subset is defined. Both are warnings: the service may
// come from a registry these objects do not show, and a later change may
// add either.
func (ix *index) destinationRef(v *collector, ns, path string, d *networking.Destination) {
	if d == nil || d.Host == "" {
		return
	}
	host := resolveHost(d.Host, ns)
	if !ix.hostKnown(host) {
		v.warn(field(path, "host"), "host %s matches no Service or ServiceEntry; requests to it will fail with 503 until one exists", host)
	}
	if d.Subset == "" {
		return
	}
	for drHost, subsets := range ix.subsets {
		if subsets[d.Subset] && covers(drHost, host) {
			return
		}
	}
	v.warn(field(path, "subset"), "subset %q of host %s is not defined by any DestinationRule; traffic to it will fail with 503 until a DestinationRule for %s defines it", d.Subset, host, host)
}

// hostKnown reports whether a Service or a ServiceEntry host provides host.
func (ix *index) hostKnown(host string) bool {
	if ix.serviceHosts[host] {
		return true
	}
	for _, h := range ix.entryHosts {
		if covers(h, host) {
			return true
		}
	}
	return false
}

func (ix *index) routeParents(v *collector, o *config.Object, refs []gatewayv1.ParentReference) {
	for i, r := range refs {
		p := idx("spec.parentRefs", i)
		ns := namespace(o)
		if r.Namespace != nil && *r.Namespace != "" {
			ns = string(*r.Namespace)
		}
		k := nsName{ns, string(r.Name)}
		group, kind := "gateway.networking.k8s.io", "Gateway"
		if r.Group != nil {
			group = string(*r.Group)
		}
		if r.Kind != nil {
			kind = string(*r.Kind)
		}
		switch {
		case group == "gateway.networking.k8s.io" && kind == "Gateway":
			g, ok := ix.kubeGateways[k]
			if !ok {
				v.add(field(p, "name"), "parent Gateway %s/%s not found; create it or fix parentRefs", k.ns, k.name)
				continue
			}
			if r.SectionName != nil && !hasListener(g, *r.SectionName) {
				v.add(field(p, "sectionName"), "Gateway %s/%s has no listener %q; use one of its listener names", k.ns, k.name, *r.SectionName)
			}
		case (group == "" || group == "core") && kind == "Service":
			// The Service may come from a registry outside these objects, so
			// this is a warning where a missing Gateway is an error.
			if !ix.services[k] {
				v.warn(field(p, "name"), "parent Service %s/%s not found; create it or fix parentRefs", k.ns, k.name)
			}
		}
	}
}

func hasListener(g *gatewayv1.GatewaySpec, name gatewayv1.SectionName) bool {
	for _, l := range g.Listeners {
		if l.Name == name {
			return true
		}
	}
	return false
}

func (ix *index) duplicateRules(v *collector, o *config.Object, dr *networking.DestinationRule) {
	// A workloadSelector scopes a rule to some workloads, so only rules
	// without one collide.
	if dr.WorkloadSelector != nil {
		return
	}
	host := resolveHost(dr.Host, namespace(o))
	var others []string
	for _, other := range ix.rules[nsName{namespace(o), host}] {
		if other.Key() != o.Key() && other.Spec.(*networking.DestinationRule).WorkloadSelector == nil {
			others = append(others, other.Meta.Name)
		}
	}
	if len(others) > 0 {
		v.warn("spec.host", "host %s also has DestinationRule %s in namespace %s; Istio merges their subsets but applies only the oldest one's trafficPolicy, so keep one DestinationRule per host", host, strings.Join(others, ", "), namespace(o))
	}
}
