package model

import (
	"cmp"
	"slices"
	"sort"
	"strings"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// Options are the mesh-wide settings the model depends on.
type Options struct {
	// DomainSuffix ends Kubernetes service host names
	// (name.namespace.svc.<suffix>); default "cluster.local".
	DomainSuffix string
	// TrustDomain is the SPIFFE trust domain of workload identities;
	// default "cluster.local".
	TrustDomain string
	// Network is the network of pods and entries that name none.
	Network string
	// SidecarByDefault makes pods that carry no injection decision count
	// as having a sidecar. The local mesh sets it: it starts a sidecar
	// beside every pod unless the namespace or pod opts out, whereas in
	// Kubernetes the injector marks injected pods itself.
	SidecarByDefault bool
}

func (o Options) withDefaults() Options {
	if o.DomainSuffix == "" {
		o.DomainSuffix = "cluster.local"
	}
	if o.TrustDomain == "" {
		o.TrustDomain = "cluster.local"
	}
	return o
}

// Registry is the mesh model of one config version. It is immutable: every
// method may be called from any goroutine, and returned values must not be
// modified.
type Registry struct {
	opts      Options
	services  []*Service
	byHost    map[string][]*Service // in precedence order
	workloads []*Workload
	wlByNS    map[string][]*Workload
	wlByIP    map[string]*Workload
	instByIP  map[string][]*Instance
	templates []*WorkloadTemplate
	warnings  []string
}

// Build derives the mesh model from a snapshot's objects. Objects of kinds
// the model does not read are ignored. Build never fails: an object that
// cannot contribute (a second declaration of a host, a pod without an IP)
// is skipped, and conflicts are reported by Warnings.
func Build(objs []*config.Object, opts Options) *Registry {
	b := newBuilder(objs, opts.withDefaults())
	b.buildKube()
	b.buildServiceEntries()
	return b.finish()
}

// Options returns the options the registry was built with, defaults applied.
func (r *Registry) Options() Options { return r.opts }

// Services returns every service, sorted by host name then namespace.
func (r *Registry) Services() []*Service { return r.services }

// Service returns the service with this host name as seen from namespace
// ns: the one declared in ns if any, else the first (Kubernetes Services
// before ServiceEntries, then oldest, then by namespace) that is exported
// to ns. An empty ns means any namespace. It returns nil when none is.
func (r *Registry) Service(host, ns string) *Service {
	cands := r.byHost[host]
	if ns == "" {
		if len(cands) == 0 {
			return nil
		}
		return cands[0]
	}
	for _, s := range cands {
		if s.Namespace == ns {
			return s
		}
	}
	for _, s := range cands {
		if s.VisibleFrom(ns) {
			return s
		}
	}
	return nil
}

// Instances returns the endpoints of service port number port, sorted by
// address then port, unhealthy ones included.
func (r *Registry) Instances(s *Service, port int) []*Instance {
	if s == nil {
		return nil
	}
	return s.instances[port]
}

// WorkloadsFor returns the workloads in namespace ns whose labels include
// every given label (all of the namespace's for no labels), sorted by
// kind then name. A proxy uses it to learn which workload it fronts.
func (r *Registry) WorkloadsFor(ns string, labels map[string]string) []*Workload {
	var out []*Workload
	for _, w := range r.wlByNS[ns] {
		if selects(labels, w.Labels) {
			out = append(out, w)
		}
	}
	return out
}

// InstancesByIP returns every service instance at this address, sorted by
// service host name, namespace and port: what a proxy at that address
// serves inbound.
func (r *Registry) InstancesByIP(ip string) []*Instance { return r.instByIP[ip] }

// WorkloadByIP returns the workload with this address, or nil.
func (r *Registry) WorkloadByIP(ip string) *Workload { return r.wlByIP[ip] }

// Workloads returns every workload, sorted by namespace, kind and name.
func (r *Registry) Workloads() []*Workload { return r.workloads }

// WorkloadTemplates returns Deployments and WorkloadGroups as templates,
// sorted by namespace, kind and name.
func (r *Registry) WorkloadTemplates() []*WorkloadTemplate { return r.templates }

// Warnings describes declarations the model ignored and why, one sentence
// each naming the object, sorted.
func (r *Registry) Warnings() []string { return r.warnings }

// VisibleFrom reports whether the service is exported to namespace ns
// ("*" everywhere, "." its own namespace, "~" nowhere, else named ones).
func (s *Service) VisibleFrom(ns string) bool {
	if len(s.ExportTo) == 0 {
		return true
	}
	for _, e := range s.ExportTo {
		switch e {
		case "*":
			return true
		case ".":
			if ns == s.Namespace {
				return true
			}
		default:
			if e == ns {
				return true
			}
		}
	}
	return false
}

// Port returns the service's port with this number, or nil.
func (s *Service) Port(number int) *Port {
	for _, p := range s.Ports {
		if p.Port == number {
			return p
		}
	}
	return nil
}

// selects reports whether labels include every key and value of selector.
func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

// labelIndex finds the items of a namespace matched by a label selector
// without scanning the namespace: items are indexed by each label, and a
// query filters the shortest posting list of its selector.
type labelIndex[T any] struct {
	labels func(T) map[string]string
	byNS   map[string][]T
	byKV   map[string]map[label][]T // ns → label → items
}

type label struct{ key, value string }

func newLabelIndex[T any](labels func(T) map[string]string) *labelIndex[T] {
	return &labelIndex[T]{labels: labels, byNS: map[string][]T{}, byKV: map[string]map[label][]T{}}
}

func (x *labelIndex[T]) add(ns string, item T) {
	x.byNS[ns] = append(x.byNS[ns], item)
	m := x.byKV[ns]
	if m == nil {
		m = map[label][]T{}
		x.byKV[ns] = m
	}
	for k, v := range x.labels(item) {
		m[label{k, v}] = append(m[label{k, v}], item)
	}
}

// match returns the items in ns selected by a non-empty selector, in
// insertion order.
func (x *labelIndex[T]) match(ns string, selector map[string]string) []T {
	if len(selector) == 0 {
		return nil
	}
	var shortest []T
	first := true
	for k, v := range selector {
		list := x.byKV[ns][label{k, v}]
		if len(list) == 0 {
			return nil
		}
		if first || len(list) < len(shortest) {
			shortest, first = list, false
		}
	}
	var out []T
	for _, it := range shortest {
		if selects(selector, x.labels(it)) {
			out = append(out, it)
		}
	}
	return out
}

// builder holds the indexes one Build needs.
type builder struct {
	opts       Options
	namespaces map[string]*config.Object
	services   []*Service
	warnings   []string
	// ordered is every object of a kind the model reads, grouped by kind,
	// each group sorted by namespace and name so the result does not depend
	// on the snapshot's order.
	ordered map[config.Kind][]*config.Object
	nodes   map[string]*config.Object

	pods      *labelIndex[*Workload]
	podByName map[string]*Workload // namespace/name
	entries   *labelIndex[*Workload]
}

func newBuilder(objs []*config.Object, opts Options) *builder {
	b := &builder{
		opts:       opts,
		namespaces: map[string]*config.Object{},
		ordered:    map[config.Kind][]*config.Object{},
		nodes:      map[string]*config.Object{},
	}
	for _, o := range objs {
		switch o.Kind {
		case config.Namespace:
			b.namespaces[o.Meta.Name] = o
		case nodeKind:
			b.nodes[o.Meta.Name] = o
		case config.Service, config.Pod, config.Deployment, config.EndpointSlice,
			config.ServiceEntry, config.WorkloadEntry, config.WorkloadGroup:
			b.ordered[o.Kind] = append(b.ordered[o.Kind], o)
		}
	}
	for _, list := range b.ordered {
		sort.Slice(list, func(i, j int) bool {
			if a, b := namespaceOf(list[i]), namespaceOf(list[j]); a != b {
				return a < b
			}
			return list[i].Meta.Name < list[j].Meta.Name
		})
	}
	labelsOf := func(w *Workload) map[string]string { return w.Labels }
	b.pods, b.entries, b.podByName = newLabelIndex(labelsOf), newLabelIndex(labelsOf), map[string]*Workload{}
	deployments := map[string][]*config.Object{}
	for _, o := range b.ordered[config.Deployment] {
		deployments[namespaceOf(o)] = append(deployments[namespaceOf(o)], o)
	}
	for _, o := range b.ordered[config.Pod] {
		if w := b.podWorkload(o, deployments[namespaceOf(o)]); w != nil {
			b.pods.add(w.Namespace, w)
			b.podByName[w.Namespace+"/"+w.Name] = w
		}
	}
	for _, o := range b.ordered[config.WorkloadEntry] {
		if w := b.entryWorkload(o); w != nil {
			b.entries.add(w.Namespace, w)
		}
	}
	return b
}

// namespaceOf is the object's namespace; objects written without one live
// in "default", as kubectl would put them.
func namespaceOf(o *config.Object) string {
	if o.Meta.Namespace == "" {
		return "default"
	}
	return o.Meta.Namespace
}

func (b *builder) identity(ns, sa string) string {
	if sa == "" {
		return ""
	}
	return "spiffe://" + b.opts.TrustDomain + "/ns/" + ns + "/sa/" + sa
}

func (b *builder) warnf(o *config.Object, msg string) {
	b.warnings = append(b.warnings, o.Describe()+": "+msg)
}

func (b *builder) finish() *Registry {
	r := &Registry{
		opts:      b.opts,
		byHost:    map[string][]*Service{},
		wlByNS:    map[string][]*Workload{},
		wlByIP:    map[string]*Workload{},
		instByIP:  map[string][]*Instance{},
		templates: b.templates(),
	}
	// Precedence among declarations of one host: Kubernetes first (its
	// registry comes first in Istio's aggregate), then the oldest object,
	// then namespace and name for a stable answer.
	prec := slices.Clone(b.services)
	slices.SortStableFunc(prec, func(x, y *Service) int {
		if c := cmp.Compare(sourceRank(x), sourceRank(y)); c != 0 {
			return c
		}
		if c := compareAge(x.Source, y.Source); c != 0 {
			return c
		}
		if c := cmp.Compare(x.Namespace, y.Namespace); c != 0 {
			return c
		}
		return cmp.Compare(x.Name, y.Name)
	})
	for _, s := range prec {
		dup := false
		for _, o := range r.byHost[s.Hostname] {
			if o.Namespace == s.Namespace {
				b.warnf(s.Source, "host "+s.Hostname+" is already declared in namespace "+s.Namespace+
					" by "+o.Source.Describe()+"; this declaration is ignored. Declare each host once per namespace.")
				dup = true
				break
			}
		}
		if dup {
			continue
		}
		r.byHost[s.Hostname] = append(r.byHost[s.Hostname], s)
		r.services = append(r.services, s)
	}
	slices.SortFunc(r.services, func(x, y *Service) int {
		if c := strings.Compare(x.Hostname, y.Hostname); c != 0 {
			return c
		}
		return strings.Compare(x.Namespace, y.Namespace)
	})
	for _, s := range r.services {
		ids := slices.Clone(s.SubjectAltNames)
		for _, list := range s.instances {
			sortInstances(list)
			for _, in := range list {
				if in.Identity != "" {
					ids = append(ids, in.Identity)
				}
			}
		}
		slices.Sort(ids)
		s.identities = slices.Compact(ids)
		for _, p := range s.Ports { // services are sorted, so each address's list is too
			for _, in := range s.instances[p.Port] {
				r.instByIP[in.Address] = append(r.instByIP[in.Address], in)
			}
		}
	}
	r.workloads = b.workloads()
	for _, w := range r.workloads {
		r.wlByNS[w.Namespace] = append(r.wlByNS[w.Namespace], w)
		for _, ip := range w.IPs {
			if _, taken := r.wlByIP[ip]; !taken {
				r.wlByIP[ip] = w
			}
		}
	}
	sort.Strings(b.warnings)
	r.warnings = b.warnings
	return r
}

// compareAge orders objects oldest first; an object without a creation
// time (read from a file) counts as newer than any with one.
func compareAge(x, y *config.Object) int {
	tx, ty := x.Meta.CreationTimestamp, y.Meta.CreationTimestamp
	switch {
	case tx.IsZero() && ty.IsZero():
		return 0
	case tx.IsZero():
		return 1
	case ty.IsZero():
		return -1
	}
	return tx.Compare(ty.Time)
}

func sourceRank(s *Service) int {
	if s.Source.Kind == config.Service {
		return 0
	}
	return 1
}

func sortInstances(list []*Instance) {
	slices.SortStableFunc(list, func(x, y *Instance) int {
		if c := strings.Compare(x.Address, y.Address); c != 0 {
			return c
		}
		return cmp.Compare(x.Port, y.Port)
	})
}

func (s *Service) addInstance(in *Instance) {
	in.Service = s
	if s.instances == nil {
		s.instances = map[int][]*Instance{}
	}
	s.instances[in.ServicePort.Port] = append(s.instances[in.ServicePort.Port], in)
}
