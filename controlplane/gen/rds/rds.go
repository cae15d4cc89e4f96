// Package rds generates the RouteConfigurations (RDS) a proxy needs, as
// Istio's istiod does: for sidecars one route configuration per outbound
// HTTP port ("9080") with a virtual host per reachable service and the
// VirtualServices applied; for gateways one per server port
// ("http.8080", "https.443.https.gw.ns") with the VirtualServices bound
// to the gateway; for proxyless gRPC clients one per "host:port".
//
// Output is shared between proxies that would get the same answer. The
// cache key (within one index, i.e. one config version) is: proxy type
// (and whether proxyless),
// SidecarScope.Key() (namespace and Sidecar resource), the route name, and
// the proxy's values of the labels some VirtualService matches
// sourceLabels on (index.SourceLabelKeys), and the workload-selected
// DestinationRules that apply to it (for consistent-hash policies);
// gateways add their selected Gateway objects' names.
package rds

import (
	"slices"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/model"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// Generate returns the route configurations named in names (all the
// proxy's when names is nil), sorted by name. A name the proxy has no
// route configuration for gets an empty one, as Istio sends, so a proxy
// that asked for it does not wait for it forever. The messages are shared
// with other proxies and must not be modified.
func Generate(p *xds.Proxy, ix *index.Index, names []string) []xds.Resource {
	if names == nil {
		names = RouteNames(p, ix)
	}
	names = slices.Clone(names)
	slices.Sort(names)
	key := cacheKey(p, ix)
	out := make([]xds.Resource, 0, len(names))
	for _, name := range names {
		r := ix.Cached("rds|"+key+"|"+name, func() any {
			if port, ok := sidecarPort(p, name); ok {
				return xds.MustResource(name, encodeSidecar(p, ix, port, sourceLabelsKey(p, ix)))
			}
			rc := build(p, ix, name)
			if rc == nil {
				rc = &routev3.RouteConfiguration{Name: name, ValidateClusters: wrapperspb.Bool(false)}
			}
			return xds.MustResource(name, mustAny(rc)) // encoded once for every stream
		}).(xds.Resource)
		out = append(out, r)
	}
	return out
}

// cacheKey is what the route configurations depend on besides the name;
// see the package doc.
func cacheKey(p *xds.Proxy, ix *index.Index) string {
	var b strings.Builder
	b.WriteString(p.Type)
	if p.Proxyless {
		b.WriteString("/grpc")
	}
	b.WriteByte('|')
	b.WriteString(ix.SidecarScope(p).Key())
	b.WriteString(sourceLabelsKey(p, ix))
	for _, g := range ix.Gateways(p) {
		b.WriteString("|gw:" + index.GatewayName(g))
	}
	if p.Type == xds.RouterProxy {
		b.WriteString("|ports:" + GatewayPortKey(p, ix))
	}
	b.WriteString("|dr:" + ix.DestinationRuleSelectorKey(p.Namespace, p.Labels))
	return b.String()
}

// RouteNames lists the route configurations the proxy's listeners refer
// to, sorted.
func RouteNames(p *xds.Proxy, ix *index.Index) []string {
	var out []string
	switch {
	case p.Proxyless:
		for _, svc := range ix.SidecarScope(p).Services() {
			for _, sp := range svc.Ports {
				out = append(out, svc.Hostname+":"+strconv.Itoa(sp.Port))
			}
		}
	case p.Type == xds.RouterProxy:
		for _, s := range ServersFor(p, ix) {
			if n := s.RouteName(); n != "" && !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	default:
		for _, ps := range ix.SidecarScope(p).Ports() {
			if HTTPPort(ps) {
				out = append(out, strconv.Itoa(ps.Port))
			}
		}
		if p.HTTPProxyPort > 0 {
			out = append(out, HTTPProxyRoute)
		}
	}
	slices.Sort(out)
	return out
}

// HTTPPort reports whether a sidecar's outbound port carries HTTP: some
// service on it is HTTP, or undeclared (sniffed, which may be HTTP).
func HTTPPort(ps index.PortServices) bool {
	for _, svc := range ps.Services {
		if proto := svc.Port(ps.Port).Protocol; proto.IsHTTP() || proto.IsUnsupported() {
			return true
		}
	}
	return false
}

// sidecarPort reports whether name is one of a sidecar's outbound port
// route configurations, and its port.
func sidecarPort(p *xds.Proxy, name string) (int, bool) {
	if p.Type == xds.RouterProxy || p.Proxyless || name == HTTPProxyRoute {
		return 0, false
	}
	port, err := strconv.Atoi(name)
	return port, err == nil
}

func build(p *xds.Proxy, ix *index.Index, name string) *routev3.RouteConfiguration {
	if p.Type == xds.RouterProxy {
		return buildGateway(p, ix, name)
	}
	if p.Proxyless {
		return buildProxyless(p, ix, name)
	}
	if name == HTTPProxyRoute {
		return buildHTTPProxy(p, ix)
	}
	port, err := strconv.Atoi(name)
	if err != nil {
		return nil
	}
	return buildSidecar(p, ix, port)
}

// HTTPProxyRoute names the route configuration of a sidecar's explicit
// HTTP proxy listener (Istio's RDSHttpProxy).
const HTTPProxyRoute = "http_proxy"

// buildHTTPProxy is the route configuration behind HTTP_PROXY_PORT: one
// virtual host per service and HTTP port, matched by host and port
// together since requests of every port arrive on one listener (port 80
// also by bare host, as clients leave the default port out). Unknown
// hosts get 502: with nothing captured there is no original destination
// to pass them through to.
func buildHTTPProxy(p *xds.Proxy, ix *index.Index) *routev3.RouteConfiguration {
	scope := ix.SidecarScope(p)
	vss := NewVSLookup(ix, ix.VirtualServices(p, "mesh"))
	suffix := ix.Options().DomainSuffix
	seen := map[string]bool{}
	var vhosts []*routev3.VirtualHost
	for _, ps := range scope.Ports() {
		if !HTTPPort(ps) {
			continue
		}
		port := strconv.Itoa(ps.Port)
		for _, svc := range ps.Services {
			if sp := svc.Port(ps.Port); !sp.Protocol.IsHTTP() && !sp.Protocol.IsUnsupported() {
				continue
			}
			vh := &routev3.VirtualHost{Name: svc.Hostname + ":" + port, IncludeRequestAttemptCount: true}
			for _, d := range domains(svc, p.Namespace, suffix) {
				for _, dp := range []string{d + ":" + port, d} {
					if (dp == d && ps.Port != 80) || seen[dp] {
						continue
					}
					seen[dp] = true
					vh.Domains = append(vh.Domains, dp)
				}
			}
			if len(vh.Domains) == 0 {
				continue
			}
			vh.Routes = serviceRoutes(p, ix, vss, svc.Hostname, ps.Port, vh.Name+"/*")
			vhosts = append(vhosts, vh)
		}
	}
	vhosts = append(vhosts, catchAllVirtualHost("REGISTRY_ONLY"))
	return &routev3.RouteConfiguration{
		Name:                           HTTPProxyRoute,
		VirtualHosts:                   vhosts,
		ValidateClusters:               wrapperspb.Bool(false),
		MaxDirectResponseBodySizeBytes: wrapperspb.UInt32(maxDirectResponseBody),
	}
}

// buildSidecar is Istio's sidecar outbound route configuration for a port.
// Generate sends encodeSidecar's bytes, which equal this message's.
func buildSidecar(p *xds.Proxy, ix *index.Index, port int) *routev3.RouteConfiguration {
	vss := NewVSLookup(ix, ix.VirtualServices(p, "mesh"))
	var vhosts []*routev3.VirtualHost
	for _, h := range sidecarHosts(p, ix, port) {
		vhosts = append(vhosts, &routev3.VirtualHost{
			Name:                       h.name,
			Domains:                    h.domains,
			Routes:                     serviceRoutes(p, ix, vss, h.svc.Hostname, port, h.name+"/*"),
			IncludeRequestAttemptCount: true,
		})
	}
	vhosts = append(vhosts, catchAllVirtualHost(ix.SidecarScope(p).OutboundTrafficPolicy()))
	return &routev3.RouteConfiguration{
		Name:                           strconv.Itoa(port),
		VirtualHosts:                   vhosts,
		ValidateClusters:               wrapperspb.Bool(false),
		IgnorePortInHostMatching:       true,
		MaxDirectResponseBodySizeBytes: wrapperspb.UInt32(maxDirectResponseBody),
	}
}

// sidecarHost is a service's virtual host on a sidecar's outbound port,
// before its routes.
type sidecarHost struct {
	svc     *model.Service
	name    string   // "host:port"
	domains []string // those no earlier service of the port took
}

// sidecarHosts lists the virtual hosts of a sidecar's route configuration
// for port, in order: one per HTTP (or sniffed) service with a domain of
// its own left.
func sidecarHosts(p *xds.Proxy, ix *index.Index, port int) []sidecarHost {
	var services []*model.Service
	for _, ps := range ix.SidecarScope(p).Ports() {
		if ps.Port == port && HTTPPort(ps) {
			services = ps.Services
		}
	}
	suffix := ix.Options().DomainSuffix
	portStr := strconv.Itoa(port)
	seen := make(map[string]bool, 4*len(services))
	out := make([]sidecarHost, 0, len(services))
	for _, svc := range services {
		if sp := svc.Port(port); !sp.Protocol.IsHTTP() && !sp.Protocol.IsUnsupported() {
			continue
		}
		h := sidecarHost{svc: svc, name: svc.Hostname + ":" + portStr}
		for _, d := range domains(svc, p.Namespace, suffix) {
			if !seen[d] {
				seen[d] = true
				h.domains = append(h.domains, d)
			}
		}
		if len(h.domains) > 0 {
			out = append(out, h)
		}
	}
	return out
}

// serviceRoutes are the routes of a service's virtual host on a sidecar:
// its VirtualService's, or, when it has none or none of its routes apply
// to this proxy (as Istio falls back), the default route to the service.
func serviceRoutes(p *xds.Proxy, ix *index.Index, vss *VSLookup, host string, port int, operation string) []*routev3.Route {
	if vs := vss.For(host); vs != nil {
		routes := translateVirtualService(routeContext{
			ix: ix, vs: vs, port: port, gateways: []string{"mesh"}, labels: p.Labels, proxyNS: p.Namespace,
		})
		if len(routes) > 0 {
			return routes
		}
	}
	cluster := index.OutboundCluster(port, "", host)
	r := defaultRoute(cluster, operation)
	r.GetRoute().HashPolicy = destinationHashPolicy(ix, p.Namespace, p.Labels, cluster)
	return []*routev3.Route{r}
}

// VSLookup finds the VirtualService of a service host among those a proxy
// sees without scanning them all for every service: a sidecar's routes
// ask once per service, and a mesh has as many VirtualServices as
// services.
type VSLookup struct {
	exact    map[string]*config.Object // resolved host → first VirtualService naming it
	wildcard []wildcardVS              // wildcard hosts, in VirtualService order
}

type wildcardVS struct {
	pattern string
	vs      *config.Object
}

// NewVSLookup indexes vss (in precedence order, as ix.VirtualServices
// returns them).
func NewVSLookup(ix *index.Index, vss []*config.Object) *VSLookup {
	l := &VSLookup{exact: make(map[string]*config.Object, len(vss))}
	for _, o := range vss {
		for _, h := range o.Spec.(*networking.VirtualService).GetHosts() {
			h = ix.ResolveHost(h, o.Meta.Namespace)
			if strings.HasPrefix(h, "*") {
				l.wildcard = append(l.wildcard, wildcardVS{h, o})
			} else if _, ok := l.exact[h]; !ok {
				l.exact[h] = o
			}
		}
	}
	return l
}

// For picks the VirtualService for a service host: the first (oldest)
// naming it exactly, else the first whose wildcard host covers it.
func (l *VSLookup) For(host string) *config.Object {
	if o, ok := l.exact[host]; ok {
		return o
	}
	for _, w := range l.wildcard {
		if hostCovers(w.pattern, host) {
			return w.vs
		}
	}
	return nil
}

// hostCovers reports whether pattern ("*", "*.example.com" or a name)
// covers host (which may itself be a wildcard).
func hostCovers(pattern, host string) bool {
	switch {
	case pattern == "*":
		return true
	case strings.HasPrefix(pattern, "*"):
		return strings.HasSuffix(host, pattern[1:])
	}
	return pattern == host
}

// hostsIntersect reports whether two host patterns can name one host, and
// returns the more specific of the two.
func hostsIntersect(a, b string) (string, bool) {
	switch {
	case hostCovers(a, b):
		return b, true
	case hostCovers(b, a):
		return a, true
	}
	return "", false
}

// buildProxyless is the route configuration of one "host:port" API
// listener for a proxyless gRPC client, as Istio's grpcgen builds it: one
// virtual host whose domains carry the port (gRPC matches its dial target
// "host:port" against them), and gRPC's own timeout field.
func buildProxyless(p *xds.Proxy, ix *index.Index, name string) *routev3.RouteConfiguration {
	hostname, portStr, ok := strings.Cut(name, ":")
	port, err := strconv.Atoi(portStr)
	if !ok || err != nil {
		return nil
	}
	var svc *model.Service
	for _, s := range ix.SidecarScope(p).Services() {
		if s.Hostname == hostname && s.Port(port) != nil {
			svc = s
		}
	}
	if svc == nil {
		return nil
	}
	vh := &routev3.VirtualHost{Name: name}
	for _, d := range domains(svc, p.Namespace, ix.Options().DomainSuffix) {
		vh.Domains = append(vh.Domains, d, d+":"+portStr)
	}
	vh.Routes = serviceRoutes(p, ix, NewVSLookup(ix, ix.VirtualServices(p, "mesh")), hostname, port, name+"/*")
	for _, r := range vh.Routes {
		if a := r.GetRoute(); a != nil {
			a.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: a.GetTimeout()}
			a.MaxGrpcTimeout = nil
		}
	}
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{vh}}
}
