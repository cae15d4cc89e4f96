// Package eds generates the endpoints (Envoy EDS ClusterLoadAssignments)
// of outbound EDS clusters as Istio's istiod does: the service port's
// instances, narrowed to a DestinationRule subset's labels, grouped by
// locality, with health status, weights and the metadata auto mTLS and
// telemetry read; locality failover priorities and distribute weights
// follow the applicable DestinationRule's localityLbSetting.
//
// An assignment depends on the cluster name, the DestinationRule the
// proxy resolves for the host and, only when the rule uses locality
// settings, the proxy's locality (and, for failoverPriority, its labels);
// it is built once per such key and Index and shared, already marshalled.
package eds

import (
	"cmp"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiff-mesh/skiff/controlplane/gen/cds"
	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/model"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// ClusterID is the cluster name Istio writes into endpoint metadata for
// a single-cluster mesh.
const ClusterID = "Kubernetes"

// ixCache is one Index's shared output; it lives as long as the Index
// (see index.Cached).
type ixCache struct {
	// views holds, per (proxy namespace, workload-selected rules), what
	// each cluster name resolves to.
	views sync.Map // viewKey → *view
	// assignments holds the built assignments, shared across views.
	assignments sync.Map // assignmentKey → func() xds.Resource
	// wildcard holds the EDS cluster names of a wildcard subscription.
	wildcard sync.Map // viewKey (with scope) → func() []string
}

type viewKey struct{ scope, namespace, selected string }

type view struct {
	entries sync.Map // cluster name → *entry
}

// entry is what one cluster name resolves to for a view's proxies.
type entry struct {
	name string
	dr   *index.ResolvedDR
	svc  *model.Service
	port int
	ss   *networking.Subset
	tp   *networking.TrafficPolicy
	// localityAware entries depend on the proxy's locality (and labels);
	// the others use shared, one assignment for every proxy.
	localityAware bool
	shared        func() xds.Resource
}

// assignmentKey identifies an assignment's content: proxies that resolve
// a name to the same service (nil: none, an empty assignment) and rule
// and, when it matters, locality get the same assignment.
type assignmentKey struct {
	name     string
	svc      *model.Service
	dr       *index.ResolvedDR
	locality string // proxy locality and failover labels, when they matter
}

func cacheFor(ix *index.Index) *ixCache {
	return ix.Cached("eds", func() any { return &ixCache{} }).(*ixCache)
}

// Generate returns a ClusterLoadAssignment for each requested cluster
// name, in the order requested; a name the proxy has no endpoints for
// (unknown, not an EDS cluster, a subset no rule defines) gets an empty
// assignment, so the proxy's cluster stops waiting and has no hosts.
// names nil (a wildcard subscription) means every EDS cluster the proxy
// has.
func Generate(p *xds.Proxy, ix *index.Index, names []string) []xds.Resource {
	c := cacheFor(ix)
	vk := viewKey{namespace: p.Namespace, selected: ix.DestinationRuleSelectorKey(p.Namespace, p.Labels)}
	if names == nil {
		wk := vk
		wk.scope = ix.SidecarScope(p).Key()
		f, ok := c.wildcard.Load(wk)
		if !ok {
			f, _ = c.wildcard.LoadOrStore(wk, sync.OnceValue(func() []string { return edsClusters(p, ix) }))
		}
		names = f.(func() []string)()
	}
	v, ok := c.views.Load(vk)
	if !ok {
		v, _ = c.views.LoadOrStore(vk, &view{})
	}
	locality, haveLocality := "", false
	out := make([]xds.Resource, 0, len(names))
	for _, name := range names {
		e, ok := v.(*view).entries.Load(name)
		if !ok {
			e, _ = v.(*view).entries.LoadOrStore(name, resolve(p, ix, c, name))
		}
		en := e.(*entry)
		if !en.localityAware {
			out = append(out, en.shared())
			continue
		}
		if !haveLocality {
			locality, haveLocality = proxyLocality(p, ix), true
		}
		lp := localityPlan(en.tp, locality, p.Labels)
		out = append(out, c.assignment(assignmentKey{name: name, svc: en.svc, dr: en.dr, locality: lp.key()}, func() xds.Resource {
			return resource(assignment(ix, name, cds.SelectInstances(ix.Registry().Instances(en.svc, en.port), en.ss), lp))
		}))
	}
	return out
}

// assignment returns the shared assignment for k, building it once.
func (c *ixCache) assignment(k assignmentKey, build func() xds.Resource) xds.Resource {
	return c.assignmentFunc(k, build)()
}

func (c *ixCache) assignmentFunc(k assignmentKey, build func() xds.Resource) func() xds.Resource {
	f, ok := c.assignments.Load(k)
	if !ok {
		f, _ = c.assignments.LoadOrStore(k, sync.OnceValue(build))
	}
	return f.(func() xds.Resource)
}

// edsClusters lists the names of the proxy's EDS clusters, sorted.
func edsClusters(p *xds.Proxy, ix *index.Index) []string {
	var names []string
	for _, svc := range ix.SidecarScope(p).Services() {
		if svc.Resolution != model.ClientSideLB {
			continue
		}
		dr := ix.DestinationRule(p.Namespace, svc.Hostname, p.Labels)
		for _, port := range svc.Ports {
			if port.Protocol == model.UDP {
				continue
			}
			names = append(names, cds.ClusterName("outbound", port.Port, "", svc.Hostname))
			if dr != nil {
				for _, s := range dr.Rule.GetSubsets() {
					names = append(names, cds.ClusterName("outbound", port.Port, s.GetName(), svc.Hostname))
				}
			}
		}
	}
	slices.Sort(names)
	return names
}

// resolve finds what a cluster name means for the proxies of a view: the
// service, port, subset and DestinationRule, and whether the proxy's
// locality matters.
func resolve(p *xds.Proxy, ix *index.Index, c *ixCache, name string) *entry {
	e := &entry{name: name}
	empty := func() *entry {
		e.svc, e.dr = nil, nil
		e.shared = c.assignmentFunc(assignmentKey{name: name}, func() xds.Resource {
			return resource(&endpointv3.ClusterLoadAssignment{ClusterName: name})
		})
		return e
	}
	dir, port, subset, host, ok := cds.ParseClusterName(name)
	if !ok || dir != "outbound" {
		return empty()
	}
	svc := ix.Registry().Service(host, p.Namespace)
	if svc == nil || svc.Resolution != model.ClientSideLB || svc.Port(port) == nil {
		return empty()
	}
	e.svc, e.port = svc, port
	e.dr = ix.DestinationRule(p.Namespace, host, p.Labels)
	var rule *networking.DestinationRule
	if e.dr != nil {
		rule = e.dr.Rule
	}
	if subset != "" {
		for _, s := range rule.GetSubsets() {
			if s.GetName() == subset {
				e.ss = s
			}
		}
		if e.ss == nil {
			return empty()
		}
	}
	e.tp = cds.TrafficPolicyFor(rule, port, e.ss)
	e.localityAware = dependsOnProxy(e.tp)
	if !e.localityAware {
		e.shared = c.assignmentFunc(assignmentKey{name: name, svc: svc, dr: e.dr}, func() xds.Resource {
			return resource(assignment(ix, name, cds.SelectInstances(ix.Registry().Instances(svc, port), e.ss), plan{}))
		})
	}
	return e
}

func resource(cla *endpointv3.ClusterLoadAssignment) xds.Resource {
	a := &anypb.Any{}
	err := anypb.MarshalFrom(a, cla, proto.MarshalOptions{Deterministic: true}) // equal config → equal bytes (delta versions, sharing)
	if err != nil {
		// Marshalling a well-formed generated message cannot fail.
		panic(fmt.Sprintf("eds: marshal %q: %v", cla.GetClusterName(), err))
	}
	return xds.MustResource(cla.GetClusterName(), a) // encoded once for every stream
}

// proxyLocality is the proxy's locality, "region/zone/subzone": as its
// node says, else as its workload is registered.
func proxyLocality(p *xds.Proxy, ix *index.Index) string {
	if l := p.Locality; l != nil && (l.GetRegion() != "" || l.GetZone() != "" || l.GetSubZone() != "") {
		return l.GetRegion() + "/" + l.GetZone() + "/" + l.GetSubZone()
	}
	for _, ip := range p.IPs {
		if w := ix.Registry().WorkloadByIP(ip); w != nil {
			return w.Locality
		}
	}
	return ""
}

// assignment builds the load assignment: instances grouped by locality
// (sorted), each group weighted by the sum of its endpoints' weights.
func assignment(ix *index.Index, name string, insts []*model.Instance, lp plan) *endpointv3.ClusterLoadAssignment {
	type group struct {
		locality string
		priority uint32
	}
	groups := map[group]*endpointv3.LocalityLbEndpoints{}
	var order []group
	for _, in := range insts {
		if in.Port == 0 {
			continue // unix sockets: skiff-proxy clusters dial TCP only
		}
		if _, err := netip.ParseAddr(in.Address); err != nil {
			continue // EDS endpoints are addresses; names need a DNS cluster
		}
		g := group{locality: in.Locality, priority: lp.priority(in)}
		lle := groups[g]
		if lle == nil {
			lle = &endpointv3.LocalityLbEndpoints{Locality: parseLocality(in.Locality), Priority: g.priority, LoadBalancingWeight: wrapperspb.UInt32(0)}
			groups[g] = lle
			order = append(order, g)
		}
		w := max(in.Weight, 1)
		lle.LoadBalancingWeight.Value += w
		lle.LbEndpoints = append(lle.LbEndpoints, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
				Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: in.Address, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(in.Port)},
				}},
			}}},
			HealthStatus:        health(in),
			LoadBalancingWeight: wrapperspb.UInt32(w),
			Metadata:            metadata(in, ix.MTLSDisabled(in.Namespace, in.Labels, in.Port)),
		})
	}
	slices.SortFunc(order, func(a, b group) int {
		if c := cmp.Compare(a.priority, b.priority); c != 0 {
			return c
		}
		return strings.Compare(a.locality, b.locality)
	})
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	for _, g := range order {
		cla.Endpoints = append(cla.Endpoints, groups[g])
	}
	lp.applyDistribute(cla)
	normalizePriorities(cla)
	return cla
}

// health maps an instance's state: ready → HEALTHY, shutting down →
// DRAINING, else UNHEALTHY (sent, not dropped, so the proxy knows the
// host; it takes no traffic outside panic mode, which cds turns off).
func health(in *model.Instance) corev3.HealthStatus {
	switch {
	case in.Terminating:
		return corev3.HealthStatus_DRAINING
	case in.Healthy:
		return corev3.HealthStatus_HEALTHY
	}
	return corev3.HealthStatus_UNHEALTHY
}

// metadata is what Istio attaches to an endpoint: its workload for
// telemetry ("name;namespace;canonical service;canonical revision;cluster")
// and, for endpoints with a sidecar that accepts mTLS (not under
// PeerAuthentication DISABLE), the tlsMode auto mTLS matches on.
func metadata(in *model.Instance, mtlsDisabled bool) *corev3.Metadata {
	canonical := cmp.Or(in.Labels["service.istio.io/canonical-name"], in.Labels["app.kubernetes.io/name"], in.Labels["app"], in.Workload)
	revision := cmp.Or(in.Labels["service.istio.io/canonical-revision"], in.Labels["app.kubernetes.io/version"], in.Labels["version"], "latest")
	md := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"istio": {Fields: map[string]*structpb.Value{
			"workload": structpb.NewStringValue(in.Workload + ";" + in.Namespace + ";" + canonical + ";" + revision + ";" + ClusterID),
		}},
	}}
	if in.TLSMode == "istio" && !mtlsDisabled {
		md.FilterMetadata["envoy.transport_socket_match"] = &structpb.Struct{Fields: map[string]*structpb.Value{
			"tlsMode": structpb.NewStringValue("istio"),
		}}
	}
	return md
}

// parseLocality converts "region/zone/subzone". An unknown locality is an
// empty one, never nil: Istio sends it so, and grpc-go's xDS client cannot
// build its balancer tree from a locality-less group.
func parseLocality(s string) *corev3.Locality {
	if s == "" {
		return &corev3.Locality{}
	}
	parts := strings.SplitN(s, "/", 3)
	parts = append(parts, "", "")
	return &corev3.Locality{Region: parts[0], Zone: parts[1], SubZone: parts[2]}
}

// normalizePriorities renumbers priorities 0..N without gaps, as Envoy
// requires, keeping their order.
func normalizePriorities(cla *endpointv3.ClusterLoadAssignment) {
	var seen []uint32
	for _, l := range cla.Endpoints {
		if !slices.Contains(seen, l.Priority) {
			seen = append(seen, l.Priority)
		}
	}
	slices.Sort(seen)
	for _, l := range cla.Endpoints {
		l.Priority = uint32(slices.Index(seen, l.Priority))
	}
}

// plan is how locality settings shape one proxy's view of a cluster.
type plan struct {
	proxy      string // the proxy's locality
	failover   bool   // locality failover priorities apply
	rules      []*networking.LocalityLoadBalancerSetting_Failover
	byLabels   []string // failoverPriority: priorities by these labels instead
	labels     map[string]string
	distribute *networking.LocalityLoadBalancerSetting_Distribute // the rule matching the proxy
}

// localityPlan reads the policy as Istio does. Locality load balancing
// is on unless the rule disables it; failover priorities need outlier
// detection (without it an unhealthy locality would never be left), and
// distribute, which sets weights instead, takes precedence.
func localityPlan(tp *networking.TrafficPolicy, proxy string, labels map[string]string) plan {
	l := tp.GetLoadBalancer().GetLocalityLbSetting()
	if l.GetEnabled() != nil && !l.GetEnabled().GetValue() {
		return plan{}
	}
	if len(l.GetDistribute()) > 0 {
		for _, d := range l.GetDistribute() {
			if localityMatch(proxy, d.GetFrom()) {
				return plan{proxy: proxy, distribute: d}
			}
		}
		return plan{}
	}
	if tp.GetOutlierDetection() == nil {
		return plan{}
	}
	return plan{proxy: proxy, failover: true, rules: l.GetFailover(), byLabels: l.GetFailoverPriority(), labels: labels}
}

// dependsOnProxy reports whether localityPlan would give proxies in
// different localities different plans.
func dependsOnProxy(tp *networking.TrafficPolicy) bool {
	l := tp.GetLoadBalancer().GetLocalityLbSetting()
	if l.GetEnabled() != nil && !l.GetEnabled().GetValue() {
		return false
	}
	return len(l.GetDistribute()) > 0 || tp.GetOutlierDetection() != nil
}

// key is the part of the cache key the plan adds: empty when the
// assignment does not depend on the proxy.
func (lp plan) key() string {
	switch {
	case lp.distribute != nil:
		return "d\x00" + lp.proxy
	case lp.failover && len(lp.byLabels) > 0:
		var b strings.Builder
		b.WriteString("p\x00" + lp.proxy)
		for _, k := range lp.byLabels {
			b.WriteString("\x00" + lp.labels[k])
		}
		return b.String()
	case lp.failover:
		return "f\x00" + lp.proxy
	}
	return ""
}

// priority is an instance's failover priority. By locality (Istio's
// applyLocalityFailover): 0 same subzone, 1 same zone, 2 same region,
// 3 elsewhere, except that when a failover rule names the proxy's region
// only its "to" region stays at 3 and the rest drop to 4. By labels
// (failoverPriority): 0 when the instance matches the proxy on every
// listed label, one more for each trailing label that differs.
func (lp plan) priority(in *model.Instance) uint32 {
	if !lp.failover {
		return 0
	}
	if len(lp.byLabels) > 0 {
		for i, k := range lp.byLabels {
			if lp.labelOf(in, k) != lp.labels[k] {
				return uint32(len(lp.byLabels) - i)
			}
		}
		return 0
	}
	pr, pz, ps := split3(lp.proxy)
	r, z, s := split3(in.Locality)
	switch {
	case r == pr && z == pz && s == ps:
		return 0
	case r == pr && z == pz:
		return 1
	case r == pr:
		return 2
	}
	for _, f := range lp.rules {
		if f.GetFrom() == pr {
			if r != f.GetTo() {
				return 4
			}
			break
		}
	}
	return 3
}

// labelOf reads a failoverPriority label of an instance; the topology
// labels Istio knows come from the instance's locality and network.
func (lp plan) labelOf(in *model.Instance, key string) string {
	r, z, s := split3(in.Locality)
	switch key {
	case "topology.kubernetes.io/region":
		return r
	case "topology.kubernetes.io/zone":
		return z
	case "topology.istio.io/subzone":
		return s
	case "topology.istio.io/network":
		return in.Network
	}
	return in.Labels[key]
}

func split3(loc string) (string, string, string) {
	p := strings.SplitN(loc, "/", 3)
	p = append(p, "", "", "")
	return p[0], p[1], p[2]
}

// localityMatch reports whether a locality matches a pattern
// "region/zone/subzone" where "*" or a missing segment matches anything.
func localityMatch(loc, pattern string) bool {
	if pattern == "*" || pattern == "" {
		return true
	}
	r, z, s := split3(loc)
	have := []string{r, z, s}
	for i, want := range strings.SplitN(pattern, "/", 3) {
		if want != "*" && want != have[i] {
			return false
		}
	}
	return true
}

// applyDistribute applies the matching distribute rule (Istio's
// applyLocalityWeights): each "to" pattern's weight is shared among the
// localities it matches in proportion to their own weights, and
// localities no pattern matches get no traffic (they are removed).
// Patterns are applied most specific first so overlaps resolve the same
// way every time.
func (lp plan) applyDistribute(cla *endpointv3.ClusterLoadAssignment) {
	if lp.distribute == nil {
		return
	}
	to := make([]string, 0, len(lp.distribute.GetTo()))
	for k := range lp.distribute.GetTo() {
		to = append(to, k)
	}
	slices.SortFunc(to, func(a, b string) int {
		if c := cmp.Compare(strings.Count(a, "*"), strings.Count(b, "*")); c != 0 {
			return c
		}
		if c := cmp.Compare(len(b), len(a)); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	matched := make([]bool, len(cla.Endpoints))
	for _, pat := range to {
		weight := lp.distribute.GetTo()[pat]
		var idx []int
		total := uint64(0)
		for i, l := range cla.Endpoints {
			if matched[i] || !localityMatch(localityString(l.Locality), pat) {
				continue
			}
			matched[i] = true
			idx = append(idx, i)
			total += uint64(l.LoadBalancingWeight.GetValue())
		}
		for _, i := range idx {
			l := cla.Endpoints[i]
			w := math.Ceil(float64(uint64(l.LoadBalancingWeight.GetValue())*uint64(weight)) / float64(total))
			if w < 1 {
				matched[i] = false // a zero share means no traffic: drop it below
				continue
			}
			l.LoadBalancingWeight = wrapperspb.UInt32(uint32(w))
		}
	}
	kept := cla.Endpoints[:0]
	for i, l := range cla.Endpoints {
		if matched[i] {
			kept = append(kept, l)
		}
	}
	cla.Endpoints = kept
}

func localityString(l *corev3.Locality) string {
	if l == nil {
		return ""
	}
	return l.GetRegion() + "/" + l.GetZone() + "/" + l.GetSubZone()
}
