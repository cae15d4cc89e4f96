package server

import (
	"maps"
	"slices"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/gen"
	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/model"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// classify decides what a change pushes. A change of endpoints only (pods,
// EndpointSlices, WorkloadEntries) that leaves the set of services as it
// was pushes EDS alone; a change of Istio config pushes the types that kind
// feeds; anything else is a full push.
//
// The push reaches only the proxies the changed objects can affect
// (index.Affects, Istio's ProxyNeedsPush): another namespace's private
// VirtualService or DestinationRule, a Sidecar of another namespace, a
// Gateway, or a VirtualService bound to gateways alone leave a sidecar's
// config as it was.
func classify(c config.Change, prevSnap, snap *config.Snapshot, prevIx, nextIx *index.Index) *xds.PushRequest {
	prev, next := prevIx.Registry(), nextIx.Registry()
	req := &xds.PushRequest{Types: map[string]bool{}}
	trace := len(c.Keys) <= maxTracedKeys
	// A Sidecar imports the services its VirtualServices route to, so with
	// one anywhere a VirtualService change can add or drop clusters,
	// endpoints and listeners as well as routes.
	sidecars := len(prevSnap.List(config.Sidecar)) > 0 || len(snap.List(config.Sidecar)) > 0
	var reach []func(*xds.Proxy) bool // nil once a key reaches every proxy
	// Scoping asks each key of each proxy at dispatch; a change of more
	// keys than are traced (a directory replaced wholesale) reaches every
	// proxy instead.
	scoped := trace
	for _, k := range c.Keys {
		if scoped {
			if f := affected(k, prevSnap, snap, nextIx); f != nil {
				reach = append(reach, f)
			} else {
				scoped, reach = false, nil
			}
		}
		ck := xds.ConfigKey{Kind: k.Kind.Kind, Namespace: k.Namespace, Name: k.Name}
		if o := snap.Get(k); o != nil {
			ck.ResourceVersion = o.Meta.ResourceVersion // traceable: which proxies ACKed this version
		}
		if trace {
			req.ConfigsUpdated = append(req.ConfigsUpdated, ck)
		}
		switch k.Kind {
		case config.Pod, config.EndpointSlice, config.WorkloadEntry:
			req.Types[gen.EndpointType] = true
		case config.VirtualService:
			req.Types[gen.RouteType] = true
			// Listeners read a VirtualService only for its tcp and tls
			// routes (filter chains by port and SNI): a change between
			// versions that have neither cannot change a listener, and
			// leaving LDS out spares regenerating every sidecar's.
			if sidecars || hasL4Routes(prevSnap, k) || hasL4Routes(snap, k) {
				req.Types[gen.ListenerType] = true
			}
			if sidecars {
				req.Types[gen.ClusterType], req.Types[gen.EndpointType] = true, true
			}
		case config.DestinationRule:
			req.Types[gen.ClusterType], req.Types[gen.EndpointType], req.Types[gen.RouteType] = true, true, true
		case config.Gateway, config.KubeGateway, config.HTTPRoute, config.GRPCRoute, config.TCPRoute, config.ReferenceGrant, config.GatewayClass:
			req.Types[gen.ListenerType], req.Types[gen.RouteType], req.Types[gen.ClusterType] = true, true, true
		default:
			req.Full = true
		}
	}
	switch {
	case req.Full:
		req.Types, req.Reason = nil, "full" // every type
	case len(req.Types) == 1 && req.Types[gen.EndpointType]:
		if sameServices(prev, next) {
			req.Reason = "endpoint"
			req.EndpointsOf = changedEndpoints(prev, next)
		} else {
			req.Full, req.Types, req.Reason = true, nil, "service"
		}
	default:
		req.Full, req.Reason = true, "config"
	}
	if scoped && len(reach) > 0 {
		req.Proxies = func(p *xds.Proxy) bool {
			for _, f := range reach {
				if f(p) {
					return true
				}
			}
			return false
		}
	}
	return req
}

// affected is which proxies a change of the object k can reach: those its
// old or its new version affects. nil means every proxy (the kinds
// index.Affects does not scope).
//
// Both versions are judged in the new index. That is sound: what else
// decides a version's reach (the proxy's Sidecar, the Gateways selecting
// it, the services hosts resolve to) is the same in both indexes unless it
// changed too, and then its own key reaches those proxies (this change's
// keys, or a merged request's). And it keeps the push from holding the old
// index, with every resource generated from it, until the push ends.
func affected(k config.Key, prevSnap, snap *config.Snapshot, nextIx *index.Index) func(*xds.Proxy) bool {
	switch k.Kind {
	case config.VirtualService, config.DestinationRule, config.Sidecar, config.Gateway:
	default:
		return nil
	}
	old, cur := prevSnap.Get(k), snap.Get(k)
	return func(p *xds.Proxy) bool {
		return (old != nil && nextIx.Affects(p, old)) || (cur != nil && nextIx.Affects(p, cur))
	}
}

// sameServices reports whether two registries hold the same services with
// the same ports and addresses: then only endpoints differ.
func sameServices(a, b *model.Registry) bool {
	as, bs := a.Services(), b.Services()
	if len(as) != len(bs) {
		return false
	}
	for i := range as {
		x, y := as[i], bs[i]
		if x.Hostname != y.Hostname || x.Namespace != y.Namespace || !slices.Equal(x.Addresses, y.Addresses) || len(x.Ports) != len(y.Ports) {
			return false
		}
		for j := range x.Ports {
			if *x.Ports[j] != *y.Ports[j] {
				return false
			}
		}
	}
	return true
}

// maxTracedKeys bounds the config keys a push carries for tracing: every
// proxy records each key's version per xDS type, so a push listing the whole
// mesh (the first load, a directory swapped wholesale) would cost memory per
// proxy per object. Such pushes are traced by their config version alone.
const maxTracedKeys = 100

// changedEndpoints names the services (by host name) whose endpoints
// differ between two registries holding the same services, so an
// endpoint change sends only their ClusterLoadAssignments.
func changedEndpoints(prev, next *model.Registry) map[string]bool {
	out := map[string]bool{}
	ps, ns := prev.Services(), next.Services()
	for i, s := range ns {
		for _, p := range s.Ports {
			if !sameInstances(prev.Instances(ps[i], p.Port), next.Instances(s, p.Port)) {
				out[s.Hostname] = true
				break
			}
		}
	}
	return out
}

// sameInstances compares what a ClusterLoadAssignment is made of.
func sameInstances(a, b []*model.Instance) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Address != y.Address || x.Port != y.Port || x.Healthy != y.Healthy || x.Terminating != y.Terminating ||
			x.Weight != y.Weight || x.Locality != y.Locality || x.ServiceAccount != y.ServiceAccount ||
			x.Identity != y.Identity || x.TLSMode != y.TLSMode || x.Network != y.Network || x.Workload != y.Workload ||
			x.Namespace != y.Namespace || !maps.Equal(x.Labels, y.Labels) {
			return false
		}
	}
	return true
}

// hasL4Routes reports whether the snapshot's version of the VirtualService
// key (if any) has tcp or tls routes.
func hasL4Routes(snap *config.Snapshot, k config.Key) bool {
	if snap == nil {
		return true // unknown: assume the worst
	}
	o := snap.Get(k)
	if o == nil {
		return false
	}
	vs, ok := o.Spec.(*networking.VirtualService)
	return !ok || len(vs.GetTcp()) > 0 || len(vs.GetTls()) > 0
}
