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

// Server is one server of an Istio Gateway a router proxy serves.
type Server struct {
	Gateway *config.Object
	Spec    *networking.Server
	// ListenPort is where the gateway listens for the server: the target
	// port of the gateway Service port numbered like the server (Istio's
	// ingress gateway Service maps 80 to 8080), else the server's port.
	ListenPort int
}

// ServersFor lists the servers of the Gateways selecting p, each with
// the port p listens on for it.
func ServersFor(p *xds.Proxy, ix *index.Index) []Server {
	targets := gatewayTargetPorts(p, ix)
	out := GatewayServers(ix.Gateways(p))
	for i := range out {
		out[i].ListenPort = out[i].Port()
		if t, ok := targets[out[i].Port()]; ok {
			out[i].ListenPort = t
		}
	}
	return out
}

// gatewayTargetPorts maps the service ports of the services p's pod
// serves to their target ports.
func gatewayTargetPorts(p *xds.Proxy, ix *index.Index) map[int]int {
	m := map[int]int{}
	for _, ip := range p.IPs {
		for _, in := range ix.Registry().InstancesByIP(ip) {
			if in.ServicePort != nil && in.Port != 0 {
				if _, dup := m[in.ServicePort.Port]; !dup {
					m[in.ServicePort.Port] = in.Port
				}
			}
		}
	}
	return m
}

// GatewayPortKey is the part of a router's cache keys its port mapping
// adds.
func GatewayPortKey(p *xds.Proxy, ix *index.Index) string {
	m := gatewayTargetPorts(p, ix)
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(strconv.Itoa(k) + ">" + strconv.Itoa(m[k]) + ",")
	}
	return b.String()
}

// BindPort is the port the gateway listens on for the server.
func (s Server) BindPort() int {
	if s.ListenPort != 0 {
		return s.ListenPort
	}
	return s.Port()
}

// GatewayServers lists the servers of the given gateways in order.
func GatewayServers(gws []*config.Object) []Server {
	var out []Server
	for _, g := range gws {
		for _, s := range g.Spec.(*networking.Gateway).GetServers() {
			out = append(out, Server{Gateway: g, Spec: s})
		}
	}
	return out
}

// Protocol is the server port's protocol.
func (s Server) Protocol() model.Protocol { return model.ParseProtocol(s.Spec.GetPort().GetProtocol()) }

// Port is the server's port number.
func (s Server) Port() int { return int(s.Spec.GetPort().GetNumber()) }

// TerminatesHTTP reports whether the gateway runs the HTTP connection
// manager for this server: plain HTTP, or HTTPS it terminates.
func (s Server) TerminatesHTTP() bool {
	proto := s.Protocol()
	if proto.IsHTTP() {
		return true
	}
	return proto == model.HTTPS && s.terminatesTLS()
}

func (s Server) terminatesTLS() bool {
	switch s.Spec.GetTls().GetMode() {
	case networking.ServerTLSSettings_PASSTHROUGH, networking.ServerTLSSettings_AUTO_PASSTHROUGH:
		return false
	}
	return s.Spec.GetTls() != nil
}

// RouteName is Istio's name for the server's route configuration:
// "http.PORT" for plain HTTP, "https.PORT.PORTNAME.GATEWAY.NAMESPACE" for
// terminated HTTPS, "" when the server is not HTTP. PORT is the port
// listened on ("http.8080" for a port-80 server behind Istio's gateway
// Service).
func (s Server) RouteName() string {
	switch {
	case s.Protocol().IsHTTP():
		return "http." + strconv.Itoa(s.BindPort())
	case s.TerminatesHTTP():
		return "https." + strconv.Itoa(s.BindPort()) + "." + s.Spec.GetPort().GetName() + "." +
			s.Gateway.Meta.Name + "." + s.Gateway.Meta.Namespace
	}
	return ""
}

// buildGateway is Istio's gateway route configuration: a virtual host per
// host a bound VirtualService declares within a server's hosts.
func buildGateway(p *xds.Proxy, ix *index.Index, name string) *routev3.RouteConfiguration {
	var servers []Server
	for _, s := range ServersFor(p, ix) {
		if s.RouteName() == name {
			servers = append(servers, s)
		}
	}
	if len(servers) == 0 {
		return nil
	}
	port := servers[0].Port()
	byHost := map[string]*routev3.VirtualHost{}
	var vhosts []*routev3.VirtualHost
	seen := map[string]bool{}
	for _, s := range servers {
		gw := index.GatewayName(s.Gateway)
		redirect := s.Protocol().IsHTTP() && s.Spec.GetTls().GetHttpsRedirect()
		for _, vsObj := range ix.VirtualServices(p, gw) {
			vs := vsObj.Spec.(*networking.VirtualService)
			for _, vh := range vs.GetHosts() {
				vh = ix.ResolveHost(vh, vsObj.Meta.Namespace)
				host, ok := serverSelects(s, vh, vsObj.Meta.Namespace)
				if !ok {
					continue
				}
				routes := translateVirtualService(routeContext{
					ix: ix, vs: vsObj, port: port, gateways: []string{gw},
					labels: p.Labels, proxyNS: p.Namespace,
				})
				if len(routes) == 0 {
					continue // Istio adds no virtual host for a VirtualService with nothing to route here
				}
				v := byHost[host]
				if v == nil {
					v = &routev3.VirtualHost{
						Name:                       host + ":" + strconv.Itoa(port),
						IncludeRequestAttemptCount: true,
					}
					for _, d := range gatewayDomains(host) {
						if !seen[d] {
							seen[d] = true
							v.Domains = append(v.Domains, d)
						}
					}
					if len(v.Domains) == 0 {
						continue
					}
					if redirect {
						v.RequireTls = routev3.VirtualHost_ALL
					}
					byHost[host] = v
					vhosts = append(vhosts, v)
				}
				v.Routes = append(v.Routes, routes...)
			}
		}
	}
	if len(vhosts) == 0 {
		vhosts = []*routev3.VirtualHost{{
			Name:    "blackhole:" + strconv.Itoa(port),
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Name:   "default",
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 404}},
			}},
		}}
	}
	return &routev3.RouteConfiguration{
		Name:                           name,
		VirtualHosts:                   vhosts,
		ValidateClusters:               wrapperspb.Bool(false),
		MaxDirectResponseBodySizeBytes: wrapperspb.UInt32(maxDirectResponseBody),
	}
}

// serverSelects reports whether a server's hosts ("host", "ns/host",
// "./host", "*/host") admit a VirtualService host from namespace vsNS,
// and returns the host the virtual host is for (the more specific one).
func serverSelects(s Server, vsHost, vsNS string) (string, bool) {
	for _, h := range s.Spec.GetHosts() {
		ns, host, ok := strings.Cut(h, "/")
		if !ok {
			ns, host = "*", h
		}
		switch ns {
		case "*":
		case ".":
			if vsNS != s.Gateway.Meta.Namespace {
				continue
			}
		default:
			if vsNS != ns {
				continue
			}
		}
		if got, ok := hostsIntersect(host, vsHost); ok {
			return got, true
		}
	}
	return "", false
}

// gatewayDomains is Istio's buildGatewayVirtualHostDomains: the host and
// the host with any port ("*" stays alone).
func gatewayDomains(host string) []string {
	if host == "*" {
		return []string{"*"}
	}
	return []string{host, host + ":*"}
}
