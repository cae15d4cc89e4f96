package index

import (
	"slices"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// Affects reports whether o, one version of a config object, can shape
// what p is generated from this index, so that a change of o must be
// pushed to p. It answers for the kinds whose reach Istio limits
// (ProxyNeedsPush with SidecarScope.DependsOnConfig): VirtualServices,
// DestinationRules, Sidecars and Gateways; for any other kind it is true.
// It may say true where nothing changes, never false where something may.
// A change is pushed to p when Affects holds for the object's old version
// or its new one.
func (ix *Index) Affects(p *xds.Proxy, o *config.Object) bool {
	switch spec := o.Spec.(type) {
	case *networking.VirtualService:
		return ix.vsAffects(p, o.Meta.Namespace, spec)
	case *networking.DestinationRule:
		return ix.drAffects(p, o.Meta.Namespace, spec)
	case *networking.Sidecar:
		// Routers take no Sidecar; a sidecar takes one of its namespace's
		// (a selecting one only if it matches) or the root namespace's.
		if p.Type == xds.RouterProxy {
			return false
		}
		if o.Meta.Namespace == ix.opts.RootNamespace {
			return true
		}
		if o.Meta.Namespace != p.Namespace {
			return false
		}
		sel := spec.GetWorkloadSelector().GetLabels()
		return len(sel) == 0 || labelsMatch(sel, p.Labels)
	case *networking.Gateway:
		// A Gateway shapes only the routers it selects; sidecars ignore
		// Gateways (Istio pushes Gateway changes to routers alone).
		return p.Type == xds.RouterProxy
	}
	return true
}

func (ix *Index) vsAffects(p *xds.Proxy, ns string, vs *networking.VirtualService) bool {
	if len(vs.GetHosts()) == 0 {
		return true // a delegate: its roots decide where it applies
	}
	gws := vsGateways(vs.GetGateways(), ns)
	if p.Type == xds.RouterProxy {
		for _, gw := range ix.Gateways(p) {
			if slices.Contains(gws, GatewayName(gw)) {
				return true
			}
		}
		return false
	}
	if !slices.Contains(gws, "mesh") || !visibleTo(vs.GetExportTo(), ns, p.Namespace) {
		return false
	}
	// selectSidecar, not SidecarScope: this runs for every proxy when a
	// push is dispatched, before any is sent, and a scope of a new index
	// is built on first use.
	sc := ix.selectSidecar(p)
	if sc == nil {
		return true // the proxy imports every visible host
	}
	// A Sidecar imports a VirtualService whose host an egress listener
	// names (and then the services it routes to).
	for _, el := range sc.Spec.(*networking.Sidecar).GetEgress() {
		hosts := parseEgressHosts(el.GetHosts(), p.Namespace)
		for _, h := range vs.GetHosts() {
			if hosts.match(ns, ix.ResolveHost(h, ns)) {
				return true
			}
		}
	}
	return false
}

func (ix *Index) drAffects(p *xds.Proxy, ns string, dr *networking.DestinationRule) bool {
	if p.Type == xds.RouterProxy {
		return true // gateways reach any service their routes name
	}
	if ns != p.Namespace && !visibleTo(dr.GetExportTo(), ns, p.Namespace) {
		return false
	}
	if sel := dr.GetWorkloadSelector().GetMatchLabels(); len(sel) > 0 && (ns != p.Namespace || !labelsMatch(sel, p.Labels)) {
		return false
	}
	if ix.selectSidecar(p) == nil {
		return true
	}
	scope := ix.SidecarScope(p)
	// With a Sidecar, only rules for the services it imports reach the
	// proxy's clusters.
	host := ix.ResolveHost(dr.GetHost(), ns)
	for _, svc := range scope.Services() {
		if hostMatches(host, svc.Hostname) {
			return true
		}
	}
	return false
}
