package analyze

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// gatewayRef resolves a VirtualService's gateway reference written in ns
// ("name", "namespace/name", or the legacy "name.namespace[.svc…]").
func gatewayRef(ref, ns string) nsName {
	if gns, name, ok := strings.Cut(ref, "/"); ok {
		return nsName{gns, name}
	}
	if parts := strings.Split(ref, "."); len(parts) > 1 {
		return nsName{parts[1], parts[0]}
	}
	return nsName{ns, ref}
}

// routeDestination is one destination of a VirtualService with its path.
type routeDestination struct {
	path string
	d    *networking.Destination
}

func destinations(vs *networking.VirtualService) []routeDestination {
	var out []routeDestination
	add := func(path string, d *networking.Destination) {
		if d != nil && d.Host != "" {
			out = append(out, routeDestination{path, d})
		}
	}
	for i, r := range vs.Http {
		p := idx("spec.http", i)
		for j, rd := range r.GetRoute() {
			add(idx(p+".route", j)+".destination", rd.GetDestination())
		}
		add(p+".mirror", r.GetMirror())
		for j, m := range r.GetMirrors() {
			add(idx(p+".mirrors", j)+".destination", m.GetDestination())
		}
	}
	for i, r := range vs.Tcp {
		for j, rd := range r.GetRoute() {
			add(idx(idx("spec.tcp", i)+".route", j)+".destination", rd.GetDestination())
		}
	}
	for i, r := range vs.Tls {
		for j, rd := range r.GetRoute() {
			add(idx(idx("spec.tls", i)+".route", j)+".destination", rd.GetDestination())
		}
	}
	return out
}

// gatewayRefs lists every gateway a VirtualService names, with its path.
func gatewayRefs(vs *networking.VirtualService) (paths, refs []string) {
	for i, g := range vs.Gateways {
		paths, refs = append(paths, idx("spec.gateways", i)), append(refs, g)
	}
	for i, r := range vs.Http {
		for j, m := range r.GetMatch() {
			for k, g := range m.GetGateways() {
				paths, refs = append(paths, idx(idx(idx("spec.http", i)+".match", j)+".gateways", k)), append(refs, g)
			}
		}
	}
	for i, r := range vs.Tcp {
		for j, m := range r.GetMatch() {
			for k, g := range m.GetGateways() {
				paths, refs = append(paths, idx(idx(idx("spec.tcp", i)+".match", j)+".gateways", k)), append(refs, g)
			}
		}
	}
	for i, r := range vs.Tls {
		for j, m := range r.GetMatch() {
			for k, g := range m.GetGateways() {
				paths, refs = append(paths, idx(idx(idx("spec.tls", i)+".match", j)+".gateways", k)), append(refs, g)
			}
		}
	}
	return paths, refs
}

// virtualServiceReferences reports a VirtualService naming a Gateway, a
// host, or a host's subset that does not exist (IST0101).
func virtualServiceReferences(ix *index) []Message {
	var out []Message
	for _, o := range ix.of(config.VirtualService) {
		vs, ok := o.Spec.(*networking.VirtualService)
		if !ok {
			continue
		}
		ns := o.Meta.Namespace
		paths, refs := gatewayRefs(vs)
		for i, g := range refs {
			if g == "mesh" {
				continue
			}
			k := gatewayRef(g, ns)
			if ix.gateways[k] == nil {
				out = append(out, report(ReferencedResourceNotFound, o, paths[i],
					fmt.Sprintf("Create a Gateway named %q in namespace %q, or change %s to the name of an existing Gateway (namespace/name for one in another namespace).", k.name, k.ns, paths[i]),
					"Referenced gateway not found: %q", g))
			}
		}
		for _, rd := range destinations(vs) {
			host := ix.fqdn(rd.d.Host, ns)
			if strings.Contains(host, "*") {
				continue
			}
			if ix.lookup(host, ns) == nil {
				out = append(out, report(ReferencedResourceNotFound, o, rd.path+".host",
					fmt.Sprintf("Create a Service or ServiceEntry for %s, or change %s.host to an existing one (short names resolve in namespace %s).", host, rd.path, ns),
					"Referenced host not found: %q", rd.d.Host))
				continue
			}
			if rd.d.Subset != "" && !ix.subsetDefined(host, rd.d.Subset) {
				out = append(out, report(ReferencedResourceNotFound, o, rd.path+".subset",
					fmt.Sprintf("Add a subset named %q to a DestinationRule for host %s, or change %s.subset.", rd.d.Subset, host, rd.path),
					"Referenced host+subset in destinationrule not found: %q", rd.d.Host+"+"+rd.d.Subset))
			}
		}
	}
	return out
}

// subsetDefined reports whether a DestinationRule whose host covers host
// (a FQDN) defines subset.
func (ix *index) subsetDefined(host, subset string) bool {
	for _, o := range ix.of(config.DestinationRule) {
		dr, ok := o.Spec.(*networking.DestinationRule)
		if !ok || !hostCovers(ix.fqdn(dr.Host, o.Meta.Namespace), host) {
			continue
		}
		for _, s := range dr.Subsets {
			if s.GetName() == subset {
				return true
			}
		}
	}
	return false
}

// virtualServiceGatewayHosts reports VirtualService hosts that no server
// of a bound Gateway accepts (IST0132).
func virtualServiceGatewayHosts(ix *index) []Message {
	var out []Message
	for _, o := range ix.of(config.VirtualService) {
		vs, ok := o.Spec.(*networking.VirtualService)
		if !ok {
			continue
		}
		ns := o.Meta.Namespace
		for i, g := range vs.Gateways {
			if g == "mesh" {
				continue
			}
			k := gatewayRef(g, ns)
			gw := ix.gateways[k]
			if gw == nil {
				continue // reported as IST0101
			}
			spec, _ := gw.Spec.(*networking.Gateway)
			var missing []string
			for _, h := range vs.Hosts {
				if !gatewayAccepts(spec, k.ns, ns, h) {
					missing = append(missing, h)
				}
			}
			if len(missing) > 0 {
				out = append(out, report(VirtualServiceHostNotFoundInGateway, o, idx("spec.gateways", i),
					fmt.Sprintf("Add the hosts to a server of Gateway %s/%s, or remove them from spec.hosts.", k.ns, k.name),
					"one or more host %v defined in VirtualService %s/%s not found in Gateway %s/%s.", missing, ns, o.Meta.Name, k.ns, k.name))
			}
		}
	}
	return out
}

// gatewayAccepts reports whether a server of gw (in gwNS) takes host for
// a VirtualService in vsNS. Server hosts may be "host", "ns/host",
// "./host" or "*/host".
func gatewayAccepts(gw *networking.Gateway, gwNS, vsNS, host string) bool {
	for _, s := range gw.GetServers() {
		for _, sh := range s.GetHosts() {
			hns, h, ok := strings.Cut(sh, "/")
			if !ok {
				h, hns = sh, "*"
			}
			if hns == "." {
				hns = gwNS
			}
			if hns != "*" && hns != vsNS {
				continue
			}
			if hostCovers(h, host) || hostCovers(host, h) {
				return true
			}
		}
	}
	return false
}

// virtualServiceRules reports rules that can never match because an
// earlier rule takes all their traffic (IST0130) and single matches that
// repeat an earlier one (IST0131).
func virtualServiceRules(ix *index) []Message {
	var out []Message
	for _, o := range ix.of(config.VirtualService) {
		vs, ok := o.Spec.(*networking.VirtualService)
		if !ok {
			continue
		}
		out = append(out, unreachable(o, "spec.http", vs.Http, (*networking.HTTPRoute).GetName, httpMatches)...)
		out = append(out, unreachable(o, "spec.tcp", vs.Tcp, func(*networking.TCPRoute) string { return "" }, tcpMatches)...)
		out = append(out, unreachable(o, "spec.tls", vs.Tls, func(*networking.TLSRoute) string { return "" }, tlsMatches)...)
	}
	return out
}

// match is one match of a rule: its name and a canonical form (the match
// without its name) to compare with others; catchAll when it takes every
// request.
type match struct {
	name     string
	key      string
	catchAll bool
}

func canonical(m proto.Message) string {
	b, _ := protojson.MarshalOptions{}.Marshal(m)
	return string(b)
}

func httpMatches(r *networking.HTTPRoute) []match {
	var out []match
	for _, m := range r.GetMatch() {
		c := proto.Clone(m).(*networking.HTTPMatchRequest)
		c.Name = ""
		key := canonical(c)
		all := key == "{}"
		if p, ok := c.GetUri().GetMatchType().(*networking.StringMatch_Prefix); ok && p.Prefix == "/" {
			c.Uri = nil
			all = canonical(c) == "{}"
		}
		out = append(out, match{name: m.GetName(), key: key, catchAll: all})
	}
	return out
}

func tcpMatches(r *networking.TCPRoute) []match {
	var out []match
	for _, m := range r.GetMatch() {
		key := canonical(m)
		out = append(out, match{key: key, catchAll: key == "{}"})
	}
	return out
}

func tlsMatches(r *networking.TLSRoute) []match {
	var out []match
	for _, m := range r.GetMatch() {
		out = append(out, match{key: canonical(m)})
	}
	return out
}

func ruleName(name string, i int) string {
	if name != "" {
		return fmt.Sprintf("%q", name)
	}
	return "#" + strconv.Itoa(i)
}

func unreachable[R any](o *config.Object, path string, rules []R, name func(R) string, matches func(R) []match) []Message {
	var out []Message
	seen := map[string]int{}
	catchAll := -1
	for i, r := range rules {
		rn := ruleName(name(r), i)
		p := idx(path, i)
		if catchAll >= 0 {
			out = append(out, report(VirtualServiceUnreachableRule, o, p,
				fmt.Sprintf("Move rule %s before rule #%d, or give rule #%d a match; rules are tried in order and the first that matches wins.", rn, catchAll, catchAll),
				"VirtualService rule %s not used (only the last rule can have no matches).", rn))
			continue
		}
		ms := matches(r)
		if len(ms) == 0 {
			catchAll = i
			continue
		}
		dups := 0
		for j, m := range ms {
			if prev, ok := seen[m.key]; ok {
				dups++
				mn := ruleName(m.name, j)
				out = append(out, report(VirtualServiceIneffectiveMatch, o, idx(p+".match", j),
					fmt.Sprintf("Remove match %s from rule %s or make it differ from rule #%d's.", mn, rn, prev),
					"VirtualService rule %s match %s is not used (duplicate/overlapping match in rule #%d).", rn, mn, prev))
				continue
			}
			seen[m.key] = i
		}
		if dups == len(ms) {
			out = append(out, report(VirtualServiceUnreachableRule, o, p,
				fmt.Sprintf("Remove rule %s, or change its matches; earlier rules take all its traffic.", rn),
				"VirtualService rule %s not used (all matches used by prior rules).", rn))
		}
		if slices.ContainsFunc(ms, func(m match) bool { return m.catchAll }) {
			catchAll = i
		}
	}
	return out
}

// meshGatewayConflicts reports several VirtualServices for one host on
// the mesh gateway (sidecars), where only one takes effect (IST0109).
func meshGatewayConflicts(ix *index) []Message {
	type scoped struct{ scope, host string }
	byHost := map[scoped][]*config.Object{}
	var order []scoped
	for _, o := range ix.of(config.VirtualService) {
		vs, ok := o.Spec.(*networking.VirtualService)
		if !ok || !(len(vs.Gateways) == 0 || slices.Contains(vs.Gateways, "mesh")) {
			continue
		}
		scope := "*"
		if len(vs.ExportTo) == 1 && vs.ExportTo[0] == "." {
			scope = o.Meta.Namespace
		}
		for _, h := range vs.Hosts {
			k := scoped{scope, ix.fqdn(h, o.Meta.Namespace)}
			if byHost[k] == nil {
				order = append(order, k)
			}
			byHost[k] = append(byHost[k], o)
		}
	}
	var out []Message
	for _, k := range order {
		vss := byHost[k]
		if len(vss) < 2 {
			continue
		}
		names := make([]string, len(vss))
		for i, o := range vss {
			names[i] = o.Meta.Namespace + "/" + o.Meta.Name
		}
		for _, o := range vss {
			out = append(out, report(ConflictingMeshGatewayVirtualServiceHosts, o, "spec.hosts",
				fmt.Sprintf("Merge the routes of %s into one VirtualService for %s, or delete all but one.", strings.Join(names, ", "), k.host),
				"The VirtualServices %s associated with mesh gateway define the same host %s which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.",
				strings.Join(names, ","), k.host))
		}
	}
	return out
}
