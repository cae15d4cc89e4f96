// Package index owns the derived indexes every generator reads for one
// config version: which VirtualServices apply to a proxy (by host, by
// gateway, with exportTo visibility and delegates merged into their
// roots), which Gateways a router proxy serves, the Sidecar scope of each
// proxy (what it may reach), and DestinationRule resolution. An Index is
// built once per config version by Build and is immutable afterwards;
// per-proxy answers that depend only on a few proxy properties (namespace,
// selected Sidecar) are computed once and shared.
package index

import (
	"cmp"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/model"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// Options are the mesh-wide settings the index depends on.
type Options struct {
	// RootNamespace holds mesh-wide defaults (Sidecar, DestinationRule);
	// default "istio-system".
	RootNamespace string
	// DomainSuffix ends Kubernetes service host names; default "cluster.local".
	DomainSuffix string
}

func (o Options) withDefaults() Options {
	if o.RootNamespace == "" {
		o.RootNamespace = "istio-system"
	}
	if o.DomainSuffix == "" {
		o.DomainSuffix = "cluster.local"
	}
	return o
}

// Index is the derived view of one config version. It is safe for
// concurrent use; returned values are shared and must not be modified.
type Index struct {
	opts Options
	reg  *model.Registry
	seq  uint64 // see Seq

	// byKind holds the objects of each kind sorted in Istio's order
	// (oldest first, then namespace/name).
	byKind map[config.Kind][]*config.Object

	// virtualServices are the VirtualServices that apply directly (roots
	// with delegates merged in, and plain ones), in Istio's order;
	// delegates referenced by a root are not listed.
	virtualServices []*config.Object

	sourceLabelKeys []string

	scopeMu sync.Mutex
	scopes  map[string]*SidecarScope // by scope key

	cache sync.Map // string → *cacheEntry, see Cached
}

// ResolvedDR is the DestinationRule that applies to one (proxy, host) pair
// and the object it came from.
type ResolvedDR struct {
	Rule   *networking.DestinationRule
	Source *config.Object
}

// builds numbers the indexes built in this process.
var builds atomic.Uint64

// Seq orders indexes by when they were built: a later config version has
// a larger Seq. Caches that outlive one version use it to tell the newest.
func (ix *Index) Seq() uint64 { return ix.seq }

// Build derives the index from a snapshot's objects and the registry built
// from the same objects.
func Build(objs []*config.Object, reg *model.Registry, o Options) *Index {
	ix := &Index{
		opts:   o.withDefaults(),
		reg:    reg,
		seq:    builds.Add(1),
		byKind: make(map[config.Kind][]*config.Object),
		scopes: make(map[string]*SidecarScope),
	}
	for _, obj := range objs {
		ix.byKind[obj.Kind] = append(ix.byKind[obj.Kind], obj)
	}
	for _, list := range ix.byKind {
		slices.SortFunc(list, compareAge)
	}
	ix.virtualServices = mergeDelegates(ix.byKind[config.VirtualService])
	ix.sourceLabelKeys = sourceLabelKeys(ix.virtualServices)
	return ix
}

// Options returns the options the index was built with, defaults applied.
func (ix *Index) Options() Options { return ix.opts }

// Registry returns the service registry the index was built with.
func (ix *Index) Registry() *model.Registry { return ix.reg }

// Objects returns the objects of one kind in Istio's order: creation time,
// then namespace and name.
func (ix *Index) Objects(k config.Kind) []*config.Object { return ix.byKind[k] }

// compareAge orders objects as Istio does when several could apply: the
// oldest wins, ties broken by namespace then name.
func compareAge(x, y *config.Object) int {
	if c := x.Meta.CreationTimestamp.Time.Compare(y.Meta.CreationTimestamp.Time); c != 0 {
		return c
	}
	if c := cmp.Compare(x.Meta.Namespace, y.Meta.Namespace); c != 0 {
		return c
	}
	return cmp.Compare(x.Meta.Name, y.Meta.Name)
}

// visibleTo applies an object's exportTo (as declared on a VirtualService,
// DestinationRule or ServiceEntry) to namespace ns: empty or "*" is every
// namespace, "." the object's own, "~" none, else the named ones.
func visibleTo(exportTo []string, objNS, ns string) bool {
	if len(exportTo) == 0 {
		return true
	}
	for _, e := range exportTo {
		switch e {
		case "*":
			return true
		case ".":
			if ns == objNS {
				return true
			}
		case "~":
		default:
			if e == ns {
				return true
			}
		}
	}
	return false
}

// labelsMatch reports whether labels include every key and value of selector.
func labelsMatch(selector, labels map[string]string) bool {
	for k, v := range selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

// Gateways returns the Istio Gateways whose selector matches a router
// proxy's labels, in Istio's order. Like Istio (without
// PILOT_SCOPE_GATEWAY_TO_NAMESPACE) the gateway's namespace does not
// limit which proxies it selects. Sidecars get none.
func (ix *Index) Gateways(p *xds.Proxy) []*config.Object {
	if p.Type != xds.RouterProxy {
		return nil
	}
	var out []*config.Object
	for _, o := range ix.byKind[config.Gateway] {
		gw, ok := o.Spec.(*networking.Gateway)
		if !ok {
			continue
		}
		if len(gw.GetSelector()) == 0 || labelsMatch(gw.GetSelector(), p.Labels) {
			out = append(out, o)
		}
	}
	return out
}

// GatewayName is how VirtualServices refer to a Gateway object: "ns/name".
func GatewayName(o *config.Object) string { return o.Meta.Namespace + "/" + o.Meta.Name }

// vsGateways returns the gateways a VirtualService binds to, each as
// "mesh" or "ns/name" (a bare name is in the VirtualService's namespace);
// none declared means "mesh".
func vsGateways(names []string, vsNS string) []string {
	if len(names) == 0 {
		return []string{"mesh"}
	}
	out := make([]string, 0, len(names))
	for _, g := range names {
		out = append(out, qualifyGateway(g, vsNS))
	}
	return out
}

// qualifyGateway turns a gateway reference into "mesh" or "ns/name".
func qualifyGateway(g, ns string) string {
	if g == "mesh" || strings.Contains(g, "/") {
		return g
	}
	// Istio also accepts "name.namespace.svc.cluster.local"-style names.
	if name, rest, ok := strings.Cut(g, "."); ok {
		gns, _, _ := strings.Cut(rest, ".")
		return gns + "/" + name
	}
	return ns + "/" + g
}

// VirtualServices returns the VirtualServices that apply to a proxy for a
// gateway ("mesh" for sidecars, "ns/name" for a gateway): those bound to
// that gateway and exported to the proxy's namespace, in Istio's order
// (PushContext.VirtualServicesForGateway): those private to the proxy's
// namespace first, then those exported to it by name, then public ones,
// each by creation time, then namespace and name. The first one naming a
// host wins it, so a namespace can override a public VirtualService with
// a private one. Delegates are merged into their roots and not returned
// by themselves.
func (ix *Index) VirtualServices(p *xds.Proxy, gateway string) []*config.Object {
	type ranked struct {
		o    *config.Object
		rank int
	}
	var out []ranked
	for _, o := range ix.virtualServices {
		vs := o.Spec.(*networking.VirtualService)
		rank := exportRank(vs.GetExportTo(), o.Meta.Namespace, p.Namespace)
		if rank < 0 {
			continue
		}
		if slices.Contains(vsGateways(vs.GetGateways(), o.Meta.Namespace), gateway) ||
			routesMention(vs, gateway, o.Meta.Namespace) {
			out = append(out, ranked{o, rank})
		}
	}
	slices.SortStableFunc(out, func(a, b ranked) int { return a.rank - b.rank })
	objs := make([]*config.Object, len(out))
	for i, r := range out {
		objs[i] = r.o
	}
	return objs
}

// exportRank places an object exported to exportTo from namespace objNS
// in the list a proxy of namespace ns sees: 0 private to ns ("." or its
// own name), 1 exported to ns by name, 2 public; -1 when ns does not see
// it.
func exportRank(exportTo []string, objNS, ns string) int {
	if len(exportTo) == 0 {
		return 2
	}
	rank := -1
	for _, e := range exportTo {
		r := -1
		switch {
		case e == "*":
			r = 2
		case e == "." || e == objNS:
			if ns == objNS {
				r = 0
			}
		case e == ns:
			r = 1
		}
		if r >= 0 && (rank < 0 || r < rank) {
			rank = r
		}
	}
	return rank
}

// routesMention reports whether a route match names the gateway while the
// VirtualService's own gateway list does not: Istio applies such a route
// only where the match's gateways say, so the VS must still be offered.
func routesMention(vs *networking.VirtualService, gateway, ns string) bool {
	for _, r := range vs.GetHttp() {
		for _, m := range r.GetMatch() {
			for _, g := range m.GetGateways() {
				if qualifyGateway(g, ns) == gateway {
					return true
				}
			}
		}
	}
	return false
}

// ResolveHost turns a host as written in an object of namespace ns into
// the registry's form: a short name ("reviews") is the Kubernetes service
// of that namespace ("reviews.default.svc.cluster.local"); names with a
// dot and wildcards are kept.
func (ix *Index) ResolveHost(host, ns string) string {
	if host == "*" || strings.Contains(host, ".") {
		return host
	}
	return host + "." + ns + ".svc." + ix.opts.DomainSuffix
}

// OutboundCluster names the cluster of a service port (and subset) as
// Istio does: "outbound|9080|v1|reviews.default.svc.cluster.local".
func OutboundCluster(port int, subset, host string) string {
	return "outbound|" + strconv.Itoa(port) + "|" + subset + "|" + host
}

// InboundCluster names the cluster of a workload port as Istio (≥1.10)
// does: "inbound|9080||".
func InboundCluster(port int) string { return "inbound|" + strconv.Itoa(port) + "||" }

// Names of the clusters every sidecar has.
const (
	PassthroughCluster        = "PassthroughCluster"
	BlackHoleCluster          = "BlackHoleCluster"
	InboundPassthroughCluster = "InboundPassthroughCluster"
)

// Cached returns the value built for key within this index, building it
// once. Generators use it to share output between proxies that would get
// the same answer; the cache lives and dies with the config version.
// Concurrent callers with one key wait for a single build, so a burst of
// proxies connecting after a config change builds each answer once.
func (ix *Index) Cached(key string, build func() any) any {
	e, ok := ix.cache.Load(key)
	if !ok {
		e, _ = ix.cache.LoadOrStore(key, &cacheEntry{})
	}
	ce := e.(*cacheEntry)
	ce.once.Do(func() { ce.v = build() })
	return ce.v
}

type cacheEntry struct {
	once sync.Once
	v    any
}

// SourceLabelKeys returns the label keys VirtualService routes match
// proxies on (sourceLabels), sorted: the only proxy labels that can
// change the routes a proxy gets.
func (ix *Index) SourceLabelKeys() []string { return ix.sourceLabelKeys }

func sourceLabelKeys(vss []*config.Object) []string {
	set := map[string]bool{}
	for _, o := range vss {
		vs := o.Spec.(*networking.VirtualService)
		for _, r := range vs.GetHttp() {
			for _, m := range r.GetMatch() {
				for k := range m.GetSourceLabels() {
					set[k] = true
				}
			}
		}
		for _, r := range vs.GetTcp() {
			for _, m := range r.GetMatch() {
				for k := range m.GetSourceLabels() {
					set[k] = true
				}
			}
		}
		for _, r := range vs.GetTls() {
			for _, m := range r.GetMatch() {
				for k := range m.GetSourceLabels() {
					set[k] = true
				}
			}
		}
	}
	return slices.Sorted(maps.Keys(set))
}
