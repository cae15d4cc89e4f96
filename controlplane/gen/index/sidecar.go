package index

import (
	"maps"
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/model"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// SidecarScope is what one proxy may reach and how its sidecar is shaped,
// from the Sidecar resource that applies to it: the one in its namespace
// whose workloadSelector matches it (oldest first), else its namespace's
// Sidecar without a selector, else the root namespace's, else the default
// (every service exported to the namespace, ALLOW_ANY).
type SidecarScope struct {
	key       string
	namespace string
	sidecar   *config.Object // nil for the default scope
	services  []*model.Service
	egress    []*EgressListener
	ports     []PortServices
	policy    string
}

// PortServices lists the reachable services that have one port number,
// and the egress listener that imports them on it.
type PortServices struct {
	Port     int
	Services []*model.Service // sorted by host name, then namespace
	Egress   *EgressListener
}

// Ports returns, by port number (ascending), the services reachable on
// it. A port an egress listener declares explicitly belongs to that
// listener's services alone, as in Istio the most specific port wins.
func (s *SidecarScope) Ports() []PortServices { return s.ports }

// EgressListener is one egress listener of the Sidecar resource with the
// services it imports. The default scope has one, with no port, importing
// everything visible.
type EgressListener struct {
	Spec     *networking.IstioEgressListener // nil for the default scope
	Services []*model.Service                // sorted by host name, then namespace
}

// Key identifies the scope: proxies whose scopes have equal keys reach the
// same services with the same Sidecar, so generated output may be shared.
// It is "namespace/sidecar-name", or "namespace/" for the default scope.
func (s *SidecarScope) Key() string { return s.key }

// Sidecar returns the Sidecar object that applies, nil for the default.
func (s *SidecarScope) Sidecar() *config.Object { return s.sidecar }

// Services returns the services this proxy may reach, sorted by host name
// then namespace; for one host only the service Istio would pick for the
// proxy's namespace.
func (s *SidecarScope) Services() []*model.Service { return s.services }

// EgressListeners returns the egress listeners with their imported services.
func (s *SidecarScope) EgressListeners() []*EgressListener { return s.egress }

// OutboundTrafficPolicy is "ALLOW_ANY" (the default: unknown destinations
// pass through) or "REGISTRY_ONLY" (they are refused).
func (s *SidecarScope) OutboundTrafficPolicy() string { return s.policy }

// IngressListeners returns the Sidecar's ingress listeners, nil when the
// inbound side follows the workload's services.
func (s *SidecarScope) IngressListeners() []*networking.IstioIngressListener {
	if s.sidecar == nil {
		return nil
	}
	return s.sidecar.Spec.(*networking.Sidecar).GetIngress()
}

// SidecarScope returns the scope of a proxy, computed once per (namespace,
// Sidecar) and shared. Router proxies get the default scope of their
// namespace: Sidecar resources do not apply to gateways.
func (ix *Index) SidecarScope(p *xds.Proxy) *SidecarScope {
	var sc *config.Object
	if p.Type != xds.RouterProxy {
		sc = ix.selectSidecar(p)
	}
	key := p.Namespace + "/"
	if sc != nil {
		key = p.Namespace + "/" + sc.Meta.Namespace + "." + sc.Meta.Name
	}
	ix.scopeMu.Lock()
	defer ix.scopeMu.Unlock()
	if s, ok := ix.scopes[key]; ok {
		return s
	}
	s := ix.buildScope(key, p.Namespace, sc)
	ix.scopes[key] = s
	return s
}

// selectSidecar finds the Sidecar that applies to a proxy.
func (ix *Index) selectSidecar(p *xds.Proxy) *config.Object {
	var nsDefault, rootDefault *config.Object
	for _, o := range ix.byKind[config.Sidecar] {
		sc, ok := o.Spec.(*networking.Sidecar)
		if !ok {
			continue
		}
		sel := sc.GetWorkloadSelector().GetLabels()
		switch {
		case o.Meta.Namespace == p.Namespace && len(sel) > 0:
			if labelsMatch(sel, p.Labels) {
				return o
			}
		case o.Meta.Namespace == p.Namespace:
			if nsDefault == nil {
				nsDefault = o
			}
		case o.Meta.Namespace == ix.opts.RootNamespace && len(sel) == 0:
			if rootDefault == nil {
				rootDefault = o
			}
		}
	}
	if nsDefault != nil {
		return nsDefault
	}
	return rootDefault
}

func (ix *Index) buildScope(key, ns string, sc *config.Object) *SidecarScope {
	s := &SidecarScope{key: key, namespace: ns, sidecar: sc, policy: "ALLOW_ANY"}
	visible := ix.visibleServices(ns)
	if sc == nil {
		s.services = visible
		s.egress = []*EgressListener{{Services: visible}}
		s.ports = portServices(s.egress)
		return s
	}
	spec := sc.Spec.(*networking.Sidecar)
	// REGISTRY_ONLY is the enum's zero value: only an explicit policy counts.
	if otp := spec.GetOutboundTrafficPolicy(); otp != nil && otp.GetMode() == networking.OutboundTrafficPolicy_REGISTRY_ONLY {
		s.policy = "REGISTRY_ONLY"
	}
	seen := make(map[*model.Service]bool)
	for _, el := range spec.GetEgress() {
		hosts := parseEgressHosts(el.GetHosts(), ns)
		var imported []*model.Service
		for _, svc := range visible {
			if hosts.match(svc.Namespace, svc.Hostname) {
				imported = append(imported, svc)
			}
		}
		imported = ix.addVirtualServiceDestinations(imported, hosts, ns)
		sortServices(imported)
		s.egress = append(s.egress, &EgressListener{Spec: el, Services: imported})
		for _, svc := range imported {
			if !seen[svc] {
				seen[svc] = true
				s.services = append(s.services, svc)
			}
		}
	}
	sortServices(s.services)
	s.ports = portServices(s.egress)
	return s
}

func portServices(egress []*EgressListener) []PortServices {
	explicit := map[int]*EgressListener{}
	for _, el := range egress {
		if n := int(el.Spec.GetPort().GetNumber()); n > 0 {
			if _, dup := explicit[n]; !dup {
				explicit[n] = el
			}
		}
	}
	byPort := map[int]*PortServices{}
	for _, el := range egress {
		own := int(el.Spec.GetPort().GetNumber())
		for _, svc := range el.Services {
			for _, sp := range svc.Ports {
				if own > 0 && sp.Port != own {
					continue
				}
				if x := explicit[sp.Port]; x != nil && x != el {
					continue
				}
				ps := byPort[sp.Port]
				if ps == nil {
					ps = &PortServices{Port: sp.Port, Egress: el}
					byPort[sp.Port] = ps
				}
				if !slices.Contains(ps.Services, svc) {
					ps.Services = append(ps.Services, svc)
				}
			}
		}
	}
	out := make([]PortServices, 0, len(byPort))
	for _, port := range slices.Sorted(maps.Keys(byPort)) {
		ps := byPort[port]
		sortServices(ps.Services)
		out = append(out, *ps)
	}
	return out
}

// visibleServices returns, per host name, the service Istio picks for a
// proxy in namespace ns (its own namespace's, else the first exported to
// it), sorted by host name.
func (ix *Index) visibleServices(ns string) []*model.Service {
	var out []*model.Service
	var last string
	for _, svc := range ix.reg.Services() {
		if svc.Hostname == last {
			continue
		}
		if pick := ix.reg.Service(svc.Hostname, ns); pick != nil {
			out = append(out, pick)
			last = svc.Hostname
		}
	}
	return out
}

func sortServices(list []*model.Service) {
	slices.SortFunc(list, func(a, b *model.Service) int {
		if c := strings.Compare(a.Hostname, b.Hostname); c != 0 {
			return c
		}
		return strings.Compare(a.Namespace, b.Namespace)
	})
}

// egressHost is one parsed "namespace/dnsName" of a Sidecar egress listener.
type egressHost struct {
	namespace string // "" for any namespace
	host      string // "*", "*.suffix" or an exact name
	exclude   bool
}

type egressHosts []egressHost

// parseEgressHosts reads Sidecar egress hosts, resolving "." to the
// proxy's namespace. A bare "~" namespace selects nothing ("~/*" is how
// users trim a receive-only sidecar); "~ns/host" excludes.
func parseEgressHosts(hosts []string, proxyNS string) egressHosts {
	var out egressHosts
	for _, h := range hosts {
		ns, name, ok := strings.Cut(h, "/")
		if !ok {
			ns, name = "*", h
		}
		eh := egressHost{host: name}
		switch {
		case ns == "*":
		case ns == ".":
			eh.namespace = proxyNS
		case ns == "~":
			continue
		case strings.HasPrefix(ns, "~"):
			eh.exclude = true
			eh.namespace = ns[1:]
		default:
			eh.namespace = ns
		}
		out = append(out, eh)
	}
	return out
}

// match reports whether a host declared in namespace ns is imported:
// some inclusion matches and no exclusion does.
func (hs egressHosts) match(ns, host string) bool {
	in := false
	for _, h := range hs {
		if h.namespace != "" && h.namespace != ns {
			continue
		}
		if !hostMatches(h.host, host) {
			continue
		}
		if h.exclude {
			return false
		}
		in = true
	}
	return in
}

// addVirtualServiceDestinations adds, as Istio does, the services that
// imported VirtualServices (mesh-bound, exported to ns, with a host the
// egress hosts import) send traffic to, so their routes have clusters.
func (ix *Index) addVirtualServiceDestinations(imported []*model.Service, hosts egressHosts, ns string) []*model.Service {
	have := make(map[*model.Service]bool, len(imported))
	for _, svc := range imported {
		have[svc] = true
	}
	for _, o := range ix.virtualServices {
		vs := o.Spec.(*networking.VirtualService)
		if !visibleTo(vs.GetExportTo(), o.Meta.Namespace, ns) || !slices.Contains(vsGateways(vs.GetGateways(), o.Meta.Namespace), "mesh") {
			continue
		}
		selected := false
		for _, h := range vs.GetHosts() {
			if hosts.match(o.Meta.Namespace, ix.ResolveHost(h, o.Meta.Namespace)) {
				selected = true
				break
			}
		}
		if !selected {
			continue
		}
		for _, d := range vsDestinations(vs) {
			svc := ix.reg.Service(ix.ResolveHost(d.GetHost(), o.Meta.Namespace), ns)
			if svc != nil && !have[svc] {
				have[svc] = true
				imported = append(imported, svc)
			}
		}
	}
	return imported
}

// vsDestinations lists every destination a VirtualService routes or
// mirrors to.
func vsDestinations(vs *networking.VirtualService) []*networking.Destination {
	var out []*networking.Destination
	for _, r := range vs.GetHttp() {
		for _, d := range r.GetRoute() {
			out = append(out, d.GetDestination())
		}
		if m := r.GetMirror(); m != nil {
			out = append(out, m)
		}
		for _, m := range r.GetMirrors() {
			out = append(out, m.GetDestination())
		}
	}
	for _, r := range vs.GetTcp() {
		for _, d := range r.GetRoute() {
			out = append(out, d.GetDestination())
		}
	}
	for _, r := range vs.GetTls() {
		for _, d := range r.GetRoute() {
			out = append(out, d.GetDestination())
		}
	}
	return out
}

// hostMatches reports whether pattern ("*", "*.example.com" or an exact
// name) covers host.
func hostMatches(pattern, host string) bool {
	switch {
	case pattern == "*":
		return true
	case strings.HasPrefix(pattern, "*"):
		return strings.HasSuffix(host, pattern[1:])
	}
	return pattern == host
}
