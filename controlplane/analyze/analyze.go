// Package analyze is istioctl analyze's job for Skiff: checks across a
// whole config snapshot that no single object shows (a route to a missing
// Gateway, a subset that selects no pod, two VirtualServices for one host),
// each reported with Istio's message code, name and level, the object, its
// file and line, and what to change. Every analyzer is a pure function of
// the snapshot's objects and the Options; nothing here reads files or talks
// to a server.
package analyze

import (
	"cmp"
	"slices"
	"strconv"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// Options say what the mesh around the objects looks like.
type Options struct {
	// LocalMesh analyzes the objects as `skiff up` runs them: the built-in
	// ingress gateway (istio-system/istio-ingressgateway, labels
	// istio=ingressgateway, ports 80→8080 and 443→8443) exists although no
	// file declares it, and every pod gets a sidecar unless it opts out.
	LocalMesh bool
	// NamespaceInjection reports namespaces with workloads but without an
	// istio-injection (or istio.io/rev) label (IST0102). Kubernetes
	// injects only into labelled namespaces; the local mesh injects
	// everywhere, so the check is meaningless there and off by default.
	NamespaceInjection bool
	// RootNamespace is the mesh config root namespace, whose policies
	// apply mesh-wide; default "istio-system".
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

// Analyze runs every analyzer over objs (a snapshot's objects, each key
// once) and returns their findings sorted by file, line, object and code.
func Analyze(objs []*config.Object, opts Options) []Message {
	ix := newIndex(objs, opts.withDefaults())
	var out []Message
	for _, a := range analyzers {
		out = append(out, a(ix)...)
	}
	Sort(out)
	return out
}

// analyzers are the checks Analyze runs, each a pure function of the index.
var analyzers = []func(*index) []Message{
	virtualServiceReferences,
	virtualServiceGatewayHosts,
	virtualServiceRules,
	meshGatewayConflicts,
	destinationRules,
	gatewaySelectors,
	servicePortNames,
	policySelectors,
	namespaceInjection,
}

// Sort orders messages by file, line, object, code and text.
func Sort(ms []Message) {
	slices.SortStableFunc(ms, func(a, b Message) int {
		return cmp.Or(
			cmp.Compare(a.Pos.File, b.Pos.File),
			cmp.Compare(a.Pos.Line, b.Pos.Line),
			cmp.Compare(a.Object.Kind.Kind, b.Object.Kind.Kind),
			cmp.Compare(a.Object.Namespace, b.Object.Namespace),
			cmp.Compare(a.Object.Name, b.Object.Name),
			cmp.Compare(a.Type.Code, b.Type.Code),
			cmp.Compare(a.Text, b.Text))
	})
}

// workload is something a selector can pick: a Pod, a Deployment's pod
// template, a WorkloadEntry or a WorkloadGroup's template.
type workload struct {
	namespace string
	labels    labels.Set
}

// service is one host the mesh routes to.
type service struct {
	host      string
	namespace string
	// selector picks the service's workloads; nil selects none.
	selector labels.Set
	// targetPorts are the gateway ports a Kubernetes Service's TCP ports
	// carry traffic to: their numbers and target ports.
	targetPorts map[uint32]bool
	wildcard    bool // a ServiceEntry host like *.example.com
}

type index struct {
	opts      Options
	objs      []*config.Object
	workloads []workload
	services  []*service
	byHost    map[string][]*service
	gateways  map[nsName]*config.Object
	// namespaces are the declared Namespace objects.
	namespaces []*config.Object
}

type nsName struct{ ns, name string }

// The built-in ingress gateway of the local mesh, as localmesh creates it.
var (
	builtinGatewayLabels = labels.Set{"istio": "ingressgateway", "app": "istio-ingressgateway"}
	builtinGatewayNS     = "istio-system"
	builtinGatewayName   = "istio-ingressgateway"
)

func newIndex(objs []*config.Object, opts Options) *index {
	ix := &index{opts: opts, objs: objs, byHost: map[string][]*service{}, gateways: map[nsName]*config.Object{}}
	for _, o := range objs {
		ns := o.Meta.Namespace
		switch spec := o.Spec.(type) {
		case *corev1.Pod:
			ix.workloads = append(ix.workloads, workload{ns, labels.Set(o.Meta.Labels)})
		case *appsv1.Deployment:
			ix.workloads = append(ix.workloads, workload{ns, labels.Set(spec.Spec.Template.Labels)})
		case *networking.WorkloadEntry:
			ix.workloads = append(ix.workloads, workload{ns, labels.Set(spec.Labels)})
		case *networking.WorkloadGroup:
			ix.workloads = append(ix.workloads, workload{ns, labels.Set(spec.GetMetadata().GetLabels())})
		case *corev1.Service:
			s := &service{host: o.Meta.Name + "." + ns + ".svc." + opts.DomainSuffix, namespace: ns, targetPorts: map[uint32]bool{}}
			if spec.Spec.Selector != nil {
				s.selector = labels.Set(spec.Spec.Selector)
			}
			for _, p := range spec.Spec.Ports {
				if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
					continue
				}
				// A gateway server's port may be where its pods listen (the
				// targetPort, as Istio's analyzer expects) or the Service
				// port, which Istio and skiffd map to the targetPort.
				s.targetPorts[uint32(p.Port)] = true
				if tp := p.TargetPort.IntValue(); tp != 0 {
					s.targetPorts[uint32(tp)] = true
				}
			}
			ix.addService(s)
		case *networking.ServiceEntry:
			var sel labels.Set
			if ws := spec.GetWorkloadSelector(); ws != nil {
				sel = labels.Set(ws.GetLabels())
			}
			for _, h := range spec.Hosts {
				ix.addService(&service{host: h, namespace: ns, selector: sel, wildcard: strings.HasPrefix(h, "*")})
			}
		case *networking.Gateway:
			ix.gateways[nsName{ns, o.Meta.Name}] = o
		}
		if o.Kind == config.Namespace {
			ix.namespaces = append(ix.namespaces, o)
		}
	}
	if opts.LocalMesh {
		ix.workloads = append(ix.workloads, workload{builtinGatewayNS, builtinGatewayLabels})
		ix.addService(&service{
			host:      builtinGatewayName + "." + builtinGatewayNS + ".svc." + opts.DomainSuffix,
			namespace: builtinGatewayNS, selector: builtinGatewayLabels,
			targetPorts: map[uint32]bool{80: true, 443: true, 8080: true, 8443: true},
		})
	}
	return ix
}

func (ix *index) addService(s *service) {
	ix.services = append(ix.services, s)
	ix.byHost[s.host] = append(ix.byHost[s.host], s)
}

// fqdn expands a short host name written in namespace ns, as Istio does;
// names with a dot and wildcards are kept.
func (ix *index) fqdn(host, ns string) string {
	if host == "" || strings.Contains(host, ".") || strings.Contains(host, "*") {
		return host
	}
	return host + "." + ns + ".svc." + ix.opts.DomainSuffix
}

// lookup returns the service providing host (already a FQDN), preferring
// one declared in ns; nil when none does.
func (ix *index) lookup(host, ns string) *service {
	if ss := ix.byHost[host]; len(ss) > 0 {
		for _, s := range ss {
			if s.namespace == ns {
				return s
			}
		}
		return ss[0]
	}
	for _, s := range ix.services {
		if s.wildcard && hostCovers(s.host, host) {
			return s
		}
	}
	return nil
}

// hostCovers reports whether pattern (a host, possibly "*" or "*.suffix")
// includes host (possibly a wildcard itself).
func hostCovers(pattern, host string) bool {
	if pattern == "*" || pattern == host {
		return true
	}
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		if h, ok := strings.CutPrefix(host, "*"); ok {
			return strings.HasSuffix(h, suffix)
		}
		return strings.HasSuffix(host, suffix)
	}
	return false
}

// selects reports whether any workload in ns (any namespace for "")
// carries every label of sel.
func (ix *index) selects(ns string, sel labels.Set) bool {
	s := labels.SelectorFromSet(sel)
	for _, w := range ix.workloads {
		if (ns == "" || w.namespace == ns) && s.Matches(w.labels) {
			return true
		}
	}
	return false
}

// hasWorkloads reports whether namespace ns runs anything.
func (ix *index) hasWorkloads(ns string) bool {
	for _, w := range ix.workloads {
		if w.namespace == ns {
			return true
		}
	}
	return false
}

// of returns the objects of one kind, in snapshot order.
func (ix *index) of(k config.Kind) []*config.Object {
	var out []*config.Object
	for _, o := range ix.objs {
		if o.Kind == k {
			out = append(out, o)
		}
	}
	return out
}

func idx(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }
