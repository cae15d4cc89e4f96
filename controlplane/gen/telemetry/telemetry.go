// Package telemetry adds a proxy's observability to its freshly built
// listeners, as istiod does from the Telemetry API (telemetry.istio.io)
// and the mesh config: Istio's metadata exchange and stats filters on
// every HTTP connection manager and TCP chain, tracing on HTTP
// connection managers, and access logs on both. It implements
// lds.Telemetry.
//
// The Telemetry objects that apply to a proxy are, as in Istio, the
// selector-less one of the root namespace (mesh), the selector-less one
// of the proxy's namespace, and the first of that namespace whose
// selector (or targetRef to a Gateway API gateway) picks the proxy;
// later levels override earlier ones. Their merged effect is computed
// once per config version and set of applicable objects (and proxy
// type) and shared; Key names that set, plus, only when tracing is on,
// the facts the spans carry (canonical service and revision, namespace,
// mesh and cluster ids).
package telemetry

import (
	"cmp"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	telemetryv1 "istio.io/api/telemetry/v1alpha1"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// Options configure a Generator.
type Options struct {
	// Mesh is the mesh config in force (nil: Istio's defaults). Istio's
	// built-in providers "prometheus" and "envoy" (file access log to
	// /dev/stdout) are added unless it names its own of that name, and
	// with no defaultProviders at all metrics default to "prometheus",
	// as Istio's installed mesh config has it.
	Mesh *meshv1alpha1.MeshConfig
	// Logger receives what is configured but cannot apply (a tracing
	// collector not in the registry, an unknown provider), once per
	// config version; nil discards it.
	Logger *slog.Logger
}

// Generator is the Telemetry of one mesh config. It is safe for
// concurrent use.
type Generator struct {
	mesh   *meshv1alpha1.MeshConfig
	log    *slog.Logger
	prefix string // names this generator's entries in each Index's cache
}

var generators atomic.Int64

// New returns a Generator.
func New(o Options) *Generator {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Generator{
		mesh:   effectiveMesh(o.Mesh),
		log:    log,
		prefix: "telemetry" + strconv.FormatInt(generators.Add(1), 10) + "|",
	}
}

// Mesh returns the effective mesh config (built-in providers added).
func (g *Generator) Mesh() *meshv1alpha1.MeshConfig { return g.mesh }

// builtinProviders are the extension providers istiod always has.
func builtinProviders() []*meshv1alpha1.MeshConfig_ExtensionProvider {
	return []*meshv1alpha1.MeshConfig_ExtensionProvider{
		{Name: "prometheus", Provider: &meshv1alpha1.MeshConfig_ExtensionProvider_Prometheus{
			Prometheus: &meshv1alpha1.MeshConfig_ExtensionProvider_PrometheusMetricsProvider{},
		}},
		{Name: "envoy", Provider: &meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyFileAccessLog{
			EnvoyFileAccessLog: &meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyFileAccessLogProvider{Path: "/dev/stdout"},
		}},
	}
}

// effectiveMesh merges Istio's built-in providers and default metrics
// provider into a copy of mc.
func effectiveMesh(mc *meshv1alpha1.MeshConfig) *meshv1alpha1.MeshConfig {
	if mc == nil {
		mc = &meshv1alpha1.MeshConfig{RootNamespace: "istio-system"}
	}
	mc = proto.Clone(mc).(*meshv1alpha1.MeshConfig)
	if mc.RootNamespace == "" {
		mc.RootNamespace = "istio-system"
	}
	for _, b := range builtinProviders() {
		found := false
		for _, p := range mc.ExtensionProviders {
			if p.GetName() == b.Name {
				found = true
				break
			}
		}
		if !found {
			mc.ExtensionProviders = append(mc.ExtensionProviders, b)
		}
	}
	if mc.DefaultProviders == nil {
		mc.DefaultProviders = &meshv1alpha1.MeshConfig_DefaultProviders{Metrics: []string{"prometheus"}}
	}
	return mc
}

// provider finds an extension provider by name, case-insensitively as
// Istio does.
func (g *Generator) provider(name string) *meshv1alpha1.MeshConfig_ExtensionProvider {
	for _, p := range g.mesh.GetExtensionProviders() {
		if strings.EqualFold(p.GetName(), name) {
			return p
		}
	}
	return nil
}

// HasProvider reports whether the mesh config defines a provider of this
// name (built-ins included): what Telemetry objects may name.
func (g *Generator) HasProvider(name string) bool { return g.provider(name) != nil }

// Labels of Gateway API gateways' pods, through which targetRefs attach.
const (
	gatewayNameLabel       = "gateway.networking.k8s.io/gateway-name"
	legacyGatewayNameLabel = "istio.io/gateway-name"
)

// scope is the Telemetry objects that apply to a proxy, by level.
type scope struct{ root, namespace, workload *config.Object }

// byNamespace indexes one config version's Telemetry objects.
type byNamespace struct {
	wide      map[string]*config.Object   // the oldest selector-less one per namespace
	selecting map[string][]*config.Object // those with a selector or targetRefs, oldest first
}

func (g *Generator) objects(ix *index.Index) *byNamespace {
	return ix.Cached(g.prefix+"objects", func() any {
		b := &byNamespace{wide: map[string]*config.Object{}, selecting: map[string][]*config.Object{}}
		for _, o := range ix.Objects(config.Telemetry) {
			t, ok := o.Spec.(*telemetryv1.Telemetry)
			if !ok {
				continue
			}
			ns := o.Meta.Namespace
			if len(t.GetSelector().GetMatchLabels()) == 0 && len(t.GetTargetRefs()) == 0 && t.GetTargetRef() == nil {
				if b.wide[ns] == nil {
					b.wide[ns] = o
				}
				continue
			}
			b.selecting[ns] = append(b.selecting[ns], o)
		}
		return b
	}).(*byNamespace)
}

// applicable picks the proxy's Telemetry objects as Istio does.
func (g *Generator) applicable(p *xds.Proxy, ix *index.Index) scope {
	b := g.objects(ix)
	root := g.mesh.GetRootNamespace()
	s := scope{root: b.wide[root]}
	if p.Namespace != root {
		s.namespace = b.wide[p.Namespace]
	}
	for _, o := range b.selecting[p.Namespace] {
		if selects(o.Spec.(*telemetryv1.Telemetry), p) {
			s.workload = o
			break
		}
	}
	return s
}

func selects(t *telemetryv1.Telemetry, p *xds.Proxy) bool {
	if sel := t.GetSelector().GetMatchLabels(); len(sel) > 0 {
		for k, v := range sel {
			if lv, ok := p.Labels[k]; !ok || lv != v {
				return false
			}
		}
		return true
	}
	gw := cmp.Or(p.Labels[gatewayNameLabel], p.Labels[legacyGatewayNameLabel])
	if gw == "" {
		return false
	}
	refs := t.GetTargetRefs()
	if r := t.GetTargetRef(); r != nil {
		refs = append(refs[:len(refs):len(refs)], r)
	}
	for _, r := range refs {
		if r.GetKind() == "Gateway" && r.GetGroup() == "gateway.networking.k8s.io" && r.GetName() == gw {
			return true
		}
	}
	return false
}

func writeObj(b *strings.Builder, o *config.Object) {
	if o == nil {
		b.WriteString("-")
		return
	}
	b.WriteString(o.Meta.Namespace)
	b.WriteByte('/')
	b.WriteString(o.Meta.Name)
	b.WriteByte('@')
	b.WriteString(o.Meta.ResourceVersion)
}

// scopeKey names what the merged configuration depends on: the proxy
// type (gateways report as clients and keep the host header) and the
// applicable objects.
func scopeKey(p *xds.Proxy, s scope) string {
	var b strings.Builder
	b.Grow(96)
	b.WriteString(p.Type)
	b.WriteByte('|')
	writeObj(&b, s.root)
	b.WriteByte('|')
	writeObj(&b, s.namespace)
	b.WriteByte('|')
	writeObj(&b, s.workload)
	return b.String()
}

// resolve returns the merged configuration of the proxy's scope, built
// once per config version and scope.
func (g *Generator) resolve(p *xds.Proxy, ix *index.Index) *resolved {
	s := g.applicable(p, ix)
	key := scopeKey(p, s)
	return ix.Cached(g.prefix+key, func() any {
		r := g.build(p.Type == xds.RouterProxy, s, ix)
		r.key = key
		for _, w := range r.warnings {
			g.log.Warn("telemetry not applied as configured", "scope", key, "warning", w)
		}
		return r
	}).(*resolved)
}

// Key implements lds.Telemetry.
func (g *Generator) Key(p *xds.Proxy, ix *index.Index) string {
	r := g.resolve(p, ix)
	if !r.tracingOn() {
		return r.key
	}
	id := identityOf(p)
	return r.key + "|" + id.key()
}

// Decorate implements lds.Telemetry.
func (g *Generator) Decorate(p *xds.Proxy, ix *index.Index, ls []*listenerv3.Listener) {
	r := g.resolve(p, ix)
	d := decorator{r: r, gateway: p.Type == xds.RouterProxy}
	if r.tracingOn() {
		d.id = identityOf(p)
	}
	for _, l := range ls {
		d.listener(l)
	}
}

// identity is what spans say about the proxy that made them.
type identity struct {
	service, revision, namespace, meshID, clusterID string
}

func identityOf(p *xds.Proxy) identity {
	l := p.Labels
	return identity{
		service:   cmp.Or(l["service.istio.io/canonical-name"], l["app.kubernetes.io/name"], l["app"], p.Workload, "unknown"),
		revision:  cmp.Or(l["service.istio.io/canonical-revision"], l["app.kubernetes.io/version"], l["version"], "latest"),
		namespace: cmp.Or(p.Namespace, "default"),
		meshID:    cmp.Or(p.MeshID, "unknown"),
		clusterID: cmp.Or(p.ClusterID, "unknown"),
	}
}

func (id identity) key() string {
	return id.service + "|" + id.revision + "|" + id.namespace + "|" + id.meshID + "|" + id.clusterID
}
