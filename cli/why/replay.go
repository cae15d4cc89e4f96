package why

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/skiff-mesh/skiff/cli/inspect"
	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/dataplane/filters/rbac"
	"github.com/skiff-mesh/skiff/dataplane/listener"
	"github.com/skiff-mesh/skiff/dataplane/route"
	"github.com/skiff-mesh/skiff/localmesh"
)

const (
	hcmFilter       = "envoy.filters.network.http_connection_manager"
	tcpProxyFilter  = "envoy.filters.network.tcp_proxy"
	netRBACFilter   = "envoy.filters.network.rbac"
	httpRBACFilter  = "envoy.filters.http.rbac"
	extAuthzFilter  = "envoy.filters.http.ext_authz"
	netAuthzFilter  = "envoy.filters.network.ext_authz"
	faultFilter     = "envoy.filters.http.fault"
	socketMatchMeta = "envoy.transport_socket_match"
	// sourcePort stands in for the ephemeral port of the application's
	// connection; no listener match Istio generates looks at it.
	sourcePort = 40000
)

// replay runs the steps; each stops the walk when the request ends there.
func replay(ctx context.Context, m *mesh, o Options) (*Report, error) {
	dst, err := parseDestination(o.Destination)
	if err != nil {
		return nil, err
	}
	src, err := m.findPod(o.Namespace, o.Source)
	if err != nil {
		return nil, err
	}
	if src.Admin == "" {
		return nil, fmt.Errorf("SOURCE pod %s.%s runs without a sidecar: its requests go out unchanged, there is nothing to replay", src.Name, src.Namespace)
	}
	pc, err := inspect.ReadProxyConfig(ctx, m.env, inspect.PodRef{Name: src.Name, Namespace: src.Namespace})
	if err != nil {
		return nil, err
	}
	capture := m.capture
	if src.HTTPProxy != "" {
		capture = "loopback"
	} else if src.NetNS != "" {
		capture = "netns"
	}
	rep := &Report{
		Source:  Source{Pod: src.Name, Namespace: src.Namespace, IP: src.IP, Identity: src.Identity, Capture: capture},
		Request: Request{Method: o.Method, Path: dst.path},
	}
	if len(o.Headers) > 0 {
		rep.Request.Headers = o.Headers
	}
	r := &replayer{m: m, src: src, pc: pc, rep: rep, dst: dst, hdr: canonicalHeaders(o.Headers)}
	r.resolve()
	r.run(ctx)
	return rep, nil
}

// replayer carries one replay's state from step to step.
type replayer struct {
	m   *mesh
	src localmesh.PodStatus
	pc  *inspect.ProxyConfig
	rep *Report
	dst destination
	hdr http.Header

	fqdn   string
	ip     netip.Addr // the address the application connects to
	port   int
	req    *http.Request
	http   bool // the chain is HTTP (else TCP)
	clus   *clusterv3.Cluster
	host   *adminv3.HostStatus // the endpoint steps 5 and 6 look at
	tlsCtx *tlsv3.UpstreamTlsContext

	inline       *routev3.RouteConfiguration // the chain's inline route configuration
	clusterName  string                      // the route's cluster
	inboundChain *listenerv3.FilterChain     // the destination's chain for the connection
}

// resolve turns the destination host into the service's FQDN, port and
// address as the application would reach them: its hosts file maps
// service names to cluster IPs, which the source proxy's route
// configurations list among each virtual host's domains.
func (r *replayer) resolve() {
	h := r.dst.host
	if a, err := netip.ParseAddr(h); err == nil {
		r.ip = a
	} else {
		switch parts := strings.Split(h, "."); {
		case len(parts) == 1:
			r.fqdn = h + "." + r.src.Namespace + ".svc.cluster.local"
		case len(parts) == 2:
			r.fqdn = h + ".svc.cluster.local"
		case strings.HasSuffix(h, ".svc"):
			r.fqdn = h + ".cluster.local"
		default:
			r.fqdn = h
		}
	}
	r.port = r.dst.port
	ports := map[int]bool{}
	for _, c := range r.pc.Clusters {
		p := strings.Split(c.GetName(), "|")
		if len(p) == 4 && p[0] == "outbound" && p[2] == "" && p[3] == r.fqdn {
			if n, err := strconv.Atoi(p[1]); err == nil {
				ports[n] = true
			}
		}
	}
	if r.port == 0 {
		r.port = 80
		if len(ports) == 1 {
			for p := range ports {
				r.port = p
			}
		}
	}
	if r.fqdn != "" && !r.ip.IsValid() {
		for _, rc := range r.pc.Routes {
			for _, vh := range rc.GetVirtualHosts() {
				if !slices.Contains(vh.GetDomains(), r.fqdn) {
					continue
				}
				for _, d := range vh.GetDomains() {
					if a, err := netip.ParseAddr(d); err == nil {
						r.ip = a
					}
				}
			}
		}
	}
	if len(ports) > 0 {
		r.rep.Request.Service = r.fqdn
	} else if r.fqdn != "" && !r.ip.IsValid() {
		r.rep.Notes = append(r.rep.Notes, fmt.Sprintf("%s is not a service the source proxy knows (no outbound cluster for it); the application's DNS lookup would fail unless it resolves elsewhere", r.fqdn))
	}
	authority := r.dst.host
	if r.dst.port != 0 || r.port != 80 {
		authority = net.JoinHostPort(r.dst.host, strconv.Itoa(r.port))
	}
	r.rep.Request.Authority = authority
	if r.ip.IsValid() {
		r.rep.Request.Address = netip.AddrPortFrom(r.ip, uint16(r.port)).String()
	}
}

func (r *replayer) end(step string, status int, flags, reason string) {
	r.rep.Verdict = Verdict{Step: step, Status: status, Flags: flags, Reason: reason}
}

func (r *replayer) run(ctx context.Context) {
	if !r.listenerStep() {
		return
	}
	if r.http {
		if !r.routeStep() {
			return
		}
	}
	if !r.clusterStep() || !r.endpointsStep() {
		return
	}
	dpc, ok := r.mtlsStep(ctx)
	if !ok {
		return
	}
	if !r.authzStep(dpc) {
		return
	}
	ep := r.rep.MTLS.DestPod
	if ep == "" {
		ep = r.rep.MTLS.Endpoint
	}
	r.end("delivered", 0, "", "the request reaches "+ep+"; the answer is the application's")
}

// listenerStep finds the listener and filter chain the application's
// connection lands on.
func (r *replayer) listenerStep() bool {
	ls := &ListenerStep{ChainIndex: -1}
	r.rep.Listener = ls
	var l *listenerv3.Listener
	var dstAddr netip.AddrPort
	switch {
	case r.src.HTTPProxy != "":
		u, err := url.Parse(r.src.HTTPProxy)
		if err == nil {
			dstAddr, _ = netip.ParseAddrPort(u.Host)
		}
		r.rep.Request.Address = u.Host
		l = r.listenerAt(dstAddr, false)
		if l == nil {
			r.end("listener", 0, "", fmt.Sprintf("the source proxy has no listener on its HTTP_PROXY address %s: the application's connection is refused", u.Host))
			return false
		}
	default:
		if !r.ip.IsValid() {
			r.end("listener", 0, "", fmt.Sprintf("cannot tell the address of %q: give a mesh service name or an IP", r.dst.host))
			return false
		}
		dstAddr = netip.AddrPortFrom(r.ip, uint16(r.port))
		var vo *listenerv3.Listener
		for _, x := range r.pc.Listeners {
			if x.GetUseOriginalDst().GetValue() {
				vo = x
			}
		}
		if vo == nil {
			r.end("listener", 0, "", "the source proxy has no capture listener (virtualOutbound): the application's traffic does not go through it")
			return false
		}
		ls.Via = vo.GetName()
		// The capture listener hands the connection to the listener of
		// its original destination, exact address first, then 0.0.0.0.
		if l = r.listenerAt(dstAddr, true); l == nil {
			l = vo
		}
	}
	ls.Listener = l.GetName()
	ci := &core.ConnInfo{
		LocalAddr:         net.TCPAddrFromAddrPort(dstAddr),
		OriginalDst:       net.TCPAddrFromAddrPort(dstAddr),
		RemoteAddr:        &net.TCPAddr{IP: net.ParseIP(r.src.IP), Port: sourcePort},
		TransportProtocol: "raw_buffer",
		ALPN:              []string{"http/1.1"}, // http_inspector's reading of a plaintext HTTP/1.1 request
	}
	i, err := listener.MatchFilterChain(l, ci)
	if err != nil {
		r.end("listener", 0, "", err.Error())
		return false
	}
	if i < 0 {
		r.end("listener", 0, "", fmt.Sprintf("no filter chain of listener %s matches %s: the source proxy closes the connection", l.GetName(), dstAddr))
		return false
	}
	fc := l.GetDefaultFilterChain()
	if i < len(l.GetFilterChains()) {
		fc = l.GetFilterChains()[i]
	}
	ls.ChainIndex = i
	ls.FilterChain = chainName(l, fc, i)
	ls.Match = describeMatch(fc.GetFilterChainMatch())
	for _, f := range fc.GetFilters() {
		if h := unpack(f, hcmFilter, &hcmv3.HttpConnectionManager{}); h != nil {
			ls.Terminal = "http_connection_manager"
			r.http = true
			if rds := h.GetRds(); rds != nil {
				ls.RouteConfig = rds.GetRouteConfigName()
			} else if rc := h.GetRouteConfig(); rc != nil {
				ls.RouteConfig = rc.GetName()
				if ls.RouteConfig == "" {
					ls.RouteConfig = "(inline)"
				}
				r.inline = rc
			}
		}
		if t := unpack(f, tcpProxyFilter, &tcpv3.TcpProxy{}); t != nil {
			ls.Terminal = "tcp_proxy"
			ls.Cluster = t.GetCluster()
			if wc := t.GetWeightedClusters(); wc != nil && len(wc.GetClusters()) > 0 {
				ls.Cluster = wc.GetClusters()[0].GetName()
			}
		}
	}
	if ls.Terminal == "" {
		r.end("listener", 0, "", fmt.Sprintf("filter chain %s of listener %s ends in neither an HTTP connection manager nor tcp_proxy", ls.FilterChain, l.GetName()))
		return false
	}
	return true
}

// listenerAt is the source proxy's listener bound to a, else (wildcard)
// the one on 0.0.0.0 with a's port.
func (r *replayer) listenerAt(a netip.AddrPort, wildcard bool) *listenerv3.Listener {
	var any *listenerv3.Listener
	for _, l := range r.pc.Listeners {
		sa := l.GetAddress().GetSocketAddress()
		if sa == nil || int(sa.GetPortValue()) != int(a.Port()) || l.GetUseOriginalDst().GetValue() {
			continue
		}
		if ip, err := netip.ParseAddr(sa.GetAddress()); err == nil && ip == a.Addr() {
			return l
		}
		if sa.GetAddress() == "0.0.0.0" || sa.GetAddress() == "::" {
			any = l
		}
	}
	if wildcard {
		return any
	}
	return nil
}

func chainName(l *listenerv3.Listener, fc *listenerv3.FilterChain, i int) string {
	if fc.GetName() != "" {
		return fmt.Sprintf("%s (filter_chains[%d])", fc.GetName(), i)
	}
	if i == len(l.GetFilterChains()) {
		return "default_filter_chain"
	}
	return fmt.Sprintf("filter_chains[%d]", i)
}

func describeMatch(m *listenerv3.FilterChainMatch) string {
	var parts []string
	if p := m.GetDestinationPort(); p != nil {
		parts = append(parts, "port "+strconv.Itoa(int(p.GetValue())))
	}
	for _, c := range m.GetPrefixRanges() {
		parts = append(parts, fmt.Sprintf("addr %s/%d", c.GetAddressPrefix(), c.GetPrefixLen().GetValue()))
	}
	if t := m.GetTransportProtocol(); t != "" {
		parts = append(parts, t)
	}
	if a := m.GetApplicationProtocols(); len(a) > 0 {
		parts = append(parts, strings.Join(a, ","))
	}
	if len(parts) == 0 {
		return "any"
	}
	return strings.Join(parts, "; ")
}

// unpack decodes f's typed config into m when f is the filter called name
// (or configured with m's type); nil otherwise.
func unpack[T proto.Message](f *listenerv3.Filter, name string, m T) T {
	var zero T
	tc := f.GetTypedConfig()
	if f.GetName() != name && (tc == nil || tc.MessageName() != m.ProtoReflect().Descriptor().FullName()) {
		return zero
	}
	if tc == nil || tc.UnmarshalTo(m) != nil {
		return zero
	}
	return m
}

// routeStep compiles the route configuration the chain names with the
// proxy's route table and selects the route for the request.
func (r *replayer) routeStep() bool {
	ls := r.rep.Listener
	rs := &RouteStep{RouteConfig: ls.RouteConfig, RouteIndex: -1, HTTPRoute: -1}
	r.rep.Route = rs
	rc := r.inline
	if rc == nil {
		for _, x := range r.pc.Routes {
			if x.GetName() == ls.RouteConfig {
				rc = x
			}
		}
	}
	if rc == nil {
		r.end("route", http.StatusNotFound, "NR", fmt.Sprintf("route configuration %q is not on the source proxy (not sent or not yet ACKed; see skiff proxy-status): 404 NR", ls.RouteConfig))
		return false
	}
	t, err := route.Compile(rc)
	if err != nil {
		r.end("route", 0, "", fmt.Sprintf("route configuration %q does not compile: %v", rc.GetName(), err))
		return false
	}
	req, _ := http.NewRequest(r.rep.Request.Method, "http://"+r.rep.Request.Authority+r.dst.path, nil)
	req.Host = r.rep.Request.Authority
	for k, vs := range r.hdr {
		req.Header[k] = vs
	}
	r.req = req
	e, idx := t.SelectIndex(req)
	if e == nil {
		r.end("route", http.StatusNotFound, "NR", fmt.Sprintf("no route matched in route configuration %s for %s %s%s → 404 NR", rc.GetName(), req.Method, req.Host, r.dst.path))
		return false
	}
	rs.Matched = true
	rs.VirtualHost = e.VirtualHost
	rs.RouteIndex = idx
	var raw *routev3.Route
	for _, vh := range rc.GetVirtualHosts() {
		if vh.GetName() == e.VirtualHost && idx >= 0 && idx < len(vh.GetRoutes()) {
			raw = vh.GetRoutes()[idx]
			r.vsRoute(rs, vh, idx)
		}
	}
	rs.Route = e.Name
	if rs.Route == "" && idx >= 0 {
		rs.Route = fmt.Sprintf("routes[%d]", idx)
	}
	switch {
	case e.Redirect != nil:
		code, loc := e.Redirect.Location(req)
		rs.Redirect = loc
		r.end("route", code, "", fmt.Sprintf("the route redirects to %s (%d)", loc, code))
		return false
	case e.Direct != nil:
		rs.DirectStatus = e.Direct.Status
		r.end("route", e.Direct.Status, "", fmt.Sprintf("route %s of virtual host %s answers directly with %d: the source proxy replies itself", rs.Route, e.VirtualHost, e.Direct.Status))
		return false
	}
	a := e.Action
	rs.Timeout = "none"
	if a.Timeout > 0 {
		rs.Timeout = a.Timeout.String()
	}
	if rp := raw.GetRoute().GetRetryPolicy(); rp != nil && a.Retry != nil {
		rs.Retries = &Retries{Attempts: a.Retry.NumRetries, On: rp.GetRetryOn()}
		if a.Retry.PerTryTimeout > 0 {
			rs.Retries.PerTryTimeout = a.Retry.PerTryTimeout.String()
		}
	}
	var chosen string
	var best uint32
	if len(a.Weighted) > 0 {
		var total uint64
		for _, w := range a.Weighted {
			total += uint64(w.Weight)
		}
		for _, w := range a.Weighted {
			pct := uint32(0)
			if total > 0 {
				pct = uint32(uint64(w.Weight) * 100 / total)
			}
			rs.Destinations = append(rs.Destinations, WeightedCluster{Cluster: w.Name, Weight: pct})
			if chosen == "" || w.Weight > best {
				chosen, best = w.Name, w.Weight
			}
		}
		if len(a.Weighted) > 1 {
			r.rep.Notes = append(r.rep.Notes, fmt.Sprintf("the route splits traffic over %d clusters; the steps below follow the heaviest, %s", len(a.Weighted), chosen))
		}
	} else {
		chosen = a.ClusterName(req, nil)
		rs.Destinations = []WeightedCluster{{Cluster: chosen, Weight: 100}}
	}
	if f := faultOf(e.FilterConfig(faultFilter, nil)); f != nil {
		rs.Fault = f
		if f.AbortStatus != 0 && f.AbortPercent >= 100 {
			r.end("route", f.AbortStatus, "FI", fmt.Sprintf("fault injection aborts %g%% of requests on this route with %d: the source proxy answers %d (response flag FI) without contacting %s", f.AbortPercent, f.AbortStatus, f.AbortStatus, chosen))
			return false
		}
	}
	if chosen == "" {
		r.end("route", http.StatusServiceUnavailable, "NC", "the route names its cluster by a request header the request does not have: 503 NC")
		return false
	}
	r.clusterName = chosen
	// What the destination's inbound sees: the path after rewrites.
	a.RewritePath(req, e)
	return true
}

// vsRoute fills in the VirtualService the route came from (Istio's
// metadata istio.config) and which of its http routes: each http route
// becomes one Envoy route per match (one without matches), in order.
func (r *replayer) vsRoute(rs *RouteStep, vh *routev3.VirtualHost, idx int) {
	ref := func(rt *routev3.Route) string {
		return rt.GetMetadata().GetFilterMetadata()["istio"].GetFields()["config"].GetStringValue()
	}
	path := ref(vh.GetRoutes()[idx])
	kind, ns, name, ok := parseConfigPath(path)
	if !ok || kind != "virtual-service" {
		return
	}
	vs := r.m.objectRef("VirtualService", ns, name)
	rs.VirtualService = &vs
	k := 0 // this route's position among the VirtualService's routes here
	for _, rt := range vh.GetRoutes()[:idx] {
		if ref(rt) == path {
			k++
		}
	}
	spec, ok := readSpec[struct {
		HTTP []struct {
			Name  string            `json:"name"`
			Match []json.RawMessage `json:"match"`
		} `json:"http"`
	}](vs.Source)
	if !ok {
		return
	}
	for i, h := range spec.HTTP {
		n := max(1, len(h.Match))
		if k < n {
			rs.HTTPRoute, rs.HTTPRouteName = i, h.Name
			return
		}
		k -= n
	}
}

// parseConfigPath takes Istio's "/apis/GROUP/VERSION/namespaces/NS/KIND/NAME" apart.
func parseConfigPath(p string) (kind, ns, name string, ok bool) {
	s := strings.Split(p, "/")
	if len(s) == 8 && s[0] == "" && s[1] == "apis" && s[4] == "namespaces" {
		return s[6], s[5], s[7], true
	}
	return "", "", "", false
}

// readSpec reads the spec of a config object from the file skiffd loaded
// it from (the local mesh's mirrored JSON). ok is false when the file is
// not at hand; callers then leave out what the spec would add.
func readSpec[T any](source string) (T, bool) {
	var out struct {
		Spec T `json:"spec"`
	}
	file := source
	if i := strings.LastIndexByte(source, ':'); i > 0 {
		if _, err := strconv.Atoi(source[i+1:]); err == nil {
			file = source[:i]
		}
	}
	if file == "" || !strings.HasSuffix(file, ".json") {
		return out.Spec, false
	}
	b, err := os.ReadFile(file)
	if err != nil || json.Unmarshal(b, &out) != nil {
		return out.Spec, false
	}
	return out.Spec, true
}

func faultOf(a *anypb.Any) *Fault {
	if a == nil {
		return nil
	}
	hf := &faultv3.HTTPFault{}
	if a.UnmarshalTo(hf) != nil {
		return nil
	}
	f := &Fault{}
	if ab := hf.GetAbort(); ab != nil && ab.GetHttpStatus() != 0 {
		f.AbortStatus = int(ab.GetHttpStatus())
		f.AbortPercent = percent(ab.GetPercentage())
	}
	if d := hf.GetDelay(); d != nil && d.GetFixedDelay() != nil {
		f.Delay = d.GetFixedDelay().AsDuration().String()
		f.DelayPercent = percent(d.GetPercentage())
	}
	if f.AbortStatus == 0 && f.Delay == "" {
		return nil
	}
	return f
}

// percent is a FractionalPercent as a percentage; absent is 100%, as in Envoy.
func percent(p *typev3.FractionalPercent) float64 {
	if p == nil {
		return 100
	}
	d := 100.0
	switch p.GetDenominator() {
	case typev3.FractionalPercent_TEN_THOUSAND:
		d = 10000
	case typev3.FractionalPercent_MILLION:
		d = 1000000
	}
	return float64(p.GetNumerator()) * 100 / d
}

// clusterStep finds the cluster and what shaped it.
func (r *replayer) clusterStep() bool {
	name := r.clusterName
	if !r.http {
		name = r.rep.Listener.Cluster
	}
	cs := &ClusterStep{Name: name}
	r.rep.Cluster = cs
	for _, c := range r.pc.Clusters {
		if c.GetName() == name {
			r.clus = c
		}
	}
	if r.clus == nil {
		r.end("cluster", http.StatusServiceUnavailable, "NC", fmt.Sprintf("cluster %s is not on the source proxy: 503 NC (cluster not found); a DestinationRule subset the route names may not exist", name))
		return false
	}
	c := r.clus
	cs.Found = true
	md := c.GetMetadata().GetFilterMetadata()["istio"].GetFields()
	if kind, ns, n, ok := parseConfigPath(md["config"].GetStringValue()); ok && kind == "destination-rule" {
		dr := r.m.objectRef("DestinationRule", ns, n)
		cs.DestinationRule = &dr
	}
	cs.Subset = md["subset"].GetStringValue()
	cs.LB = c.GetLbPolicy().String()
	if c.GetConnectTimeout() != nil {
		cs.ConnectTimeout = c.GetConnectTimeout().AsDuration().String()
	}
	for _, th := range c.GetCircuitBreakers().GetThresholds() {
		if th.GetPriority() != corev3.RoutingPriority_DEFAULT {
			continue
		}
		// Envoy's defaults when a threshold is left out.
		cs.CircuitBreakers = map[string]uint32{
			"max_connections":      orDefault(th.GetMaxConnections().GetValue(), th.GetMaxConnections() != nil, 1024),
			"max_pending_requests": orDefault(th.GetMaxPendingRequests().GetValue(), th.GetMaxPendingRequests() != nil, 1024),
			"max_requests":         orDefault(th.GetMaxRequests().GetValue(), th.GetMaxRequests() != nil, 1024),
			"max_retries":          orDefault(th.GetMaxRetries().GetValue(), th.GetMaxRetries() != nil, 3),
		}
	}
	if od := c.GetOutlierDetection(); od != nil {
		cs.OutlierDetection = map[string]string{}
		if v := od.GetConsecutive_5Xx(); v != nil {
			cs.OutlierDetection["consecutive_5xx"] = strconv.Itoa(int(v.GetValue()))
		}
		if v := od.GetConsecutiveGatewayFailure(); v != nil {
			cs.OutlierDetection["consecutive_gateway_failure"] = strconv.Itoa(int(v.GetValue()))
		}
		if v := od.GetInterval(); v != nil {
			cs.OutlierDetection["interval"] = v.AsDuration().String()
		}
		if v := od.GetBaseEjectionTime(); v != nil {
			cs.OutlierDetection["base_ejection_time"] = v.AsDuration().String()
		}
		if v := od.GetMaxEjectionPercent(); v != nil {
			cs.OutlierDetection["max_ejection_percent"] = strconv.Itoa(int(v.GetValue()))
		}
	}
	if c.GetName() == "BlackHoleCluster" {
		r.end("cluster", http.StatusBadGateway, "", "the request goes to BlackHoleCluster: outbound traffic policy REGISTRY_ONLY drops destinations outside the mesh registry")
		return false
	}
	if c.GetType() == clusterv3.Cluster_ORIGINAL_DST {
		r.end("cluster", 0, "", fmt.Sprintf("%s forwards to the original destination %s as is: not a mesh service, no mTLS, no mesh policy", c.GetName(), r.rep.Request.Address))
		return false
	}
	return true
}

func orDefault(v uint32, set bool, def uint32) uint32 {
	if set {
		return v
	}
	return def
}

// endpointsStep lists the cluster's hosts and their health as the source
// proxy's /clusters shows them.
func (r *replayer) endpointsStep() bool {
	es := &EndpointsStep{Hosts: []Endpoint{}}
	r.rep.Endpoints = es
	var hosts []*adminv3.HostStatus
	for _, c := range r.pc.Hosts.GetClusterStatuses() {
		if c.GetName() == r.clus.GetName() {
			hosts = c.GetHostStatuses()
		}
	}
	for _, h := range hosts {
		sa := h.GetAddress().GetSocketAddress()
		e := Endpoint{Address: net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))), Health: inspect.HostHealth(h)}
		e.Outlier = h.GetHealthStatus().GetFailedOutlierCheck()
		if p, ok := r.m.podByIP(sa.GetAddress()); ok {
			e.Pod = p.Name + "." + p.Namespace
		}
		healthy := (e.Health == "HEALTHY" || e.Health == "DEGRADED") && !e.Outlier && !h.GetHealthStatus().GetFailedActiveHealthCheck()
		if healthy {
			es.Healthy++
			if r.host == nil {
				r.host = h
			}
		} else {
			es.Unhealthy++
		}
		es.Hosts = append(es.Hosts, e)
	}
	if r.host == nil {
		reason := fmt.Sprintf("cluster %s has no endpoints: 503 UH (no healthy upstream); no running pod backs the service or subset (check the subset's labels and skiff status)", r.clus.GetName())
		if len(hosts) > 0 {
			reason = fmt.Sprintf("none of the %d endpoints of cluster %s is healthy: 503 UH (no healthy upstream)", len(hosts), r.clus.GetName())
		}
		r.end("endpoints", http.StatusServiceUnavailable, "UH", reason)
		return false
	}
	return true
}

// mtlsStep works out what the source sends to the endpoint and whether the
// destination's inbound listener accepts it. It returns the destination
// proxy's config for the authorization step (nil without a sidecar).
func (r *replayer) mtlsStep(ctx context.Context) (*inspect.ProxyConfig, bool) {
	sa := r.host.GetAddress().GetSocketAddress()
	ms := &MTLSStep{Endpoint: net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))}
	r.rep.MTLS = ms
	ms.SourceMode, ms.SourceReason = r.sourceTLS(sa.GetAddress(), int(sa.GetPortValue()))
	if r.tlsCtx != nil {
		ms.SNI = r.tlsCtx.GetSni()
	}
	dp, ok := r.m.podByIP(sa.GetAddress())
	if !ok {
		ms.DestMode = "NONE"
		ms.OK = ms.SourceMode == "DISABLE" || ms.SourceMode == "SIMPLE"
		if !ms.OK {
			ms.Problem = "the endpoint is not a pod of the mesh; it cannot take part in Istio mTLS"
		}
		return nil, r.mtlsVerdict(ms)
	}
	ms.DestPod = dp.Name + "." + dp.Namespace
	if dp.Admin == "" {
		ms.DestMode = "NONE"
		ms.OK = ms.SourceMode == "DISABLE"
		if !ms.OK {
			ms.Problem = fmt.Sprintf("%s runs without a sidecar and speaks plaintext, but the source sends %s", ms.DestPod, ms.SourceMode)
		}
		return nil, r.mtlsVerdict(ms)
	}
	dpc, err := inspect.ReadProxyConfig(ctx, r.m.env, inspect.PodRef{Name: dp.Name, Namespace: dp.Namespace})
	if err != nil {
		ms.Problem = "cannot read the destination proxy: " + err.Error()
		r.end("mtls", 0, "", ms.Problem)
		return nil, false
	}
	ms.PeerAuthentication = r.peerAuthentication(dp)
	var inbound *listenerv3.Listener
	for _, l := range dpc.Listeners {
		if l.GetName() == "virtualInbound" {
			inbound = l
		}
	}
	if inbound == nil {
		// No capture: the application listens on the pod address itself.
		ms.DestMode = "NONE"
		ms.OK = ms.SourceMode == "DISABLE"
		if !ms.OK {
			ms.Problem = fmt.Sprintf("%s has no inbound capture listener (virtualInbound): its application takes plaintext, but the source sends %s", ms.DestPod, ms.SourceMode)
		}
		return dpc, r.mtlsVerdict(ms)
	}
	ms.DestMode = inboundMode(inbound, int(sa.GetPortValue()))
	ci := r.inboundConn(sa.GetAddress(), int(sa.GetPortValue()), ms.SourceMode)
	i, err := listener.MatchFilterChain(inbound, ci)
	if err != nil {
		ms.Problem = err.Error()
		r.end("mtls", 0, "", ms.Problem)
		return nil, false
	}
	if i < 0 {
		ms.Problem = fmt.Sprintf("no filter chain of %s's virtualInbound accepts a %s connection on port %d", ms.DestPod, plainOrTLS(ms.SourceMode), sa.GetPortValue())
		return dpc, r.mtlsVerdict(ms)
	}
	fc := inbound.GetDefaultFilterChain()
	if i < len(inbound.GetFilterChains()) {
		fc = inbound.GetFilterChains()[i]
	}
	ms.InboundChain = chainName(inbound, fc, i)
	r.inboundChain = fc
	terminates := fc.GetTransportSocket() != nil && fc.GetTransportSocket().GetName() != "envoy.transport_sockets.raw_buffer" &&
		!strings.HasSuffix(fc.GetTransportSocket().GetTypedConfig().GetTypeUrl(), "RawBuffer")
	sendsTLS := ms.SourceMode != "DISABLE"
	switch {
	case sendsTLS && !terminates && ms.SourceMode == "ISTIO_MUTUAL":
		ms.Problem = fmt.Sprintf("the source sends Istio mTLS, but %s's inbound chain %s does not terminate TLS", ms.DestPod, ms.InboundChain)
	case !sendsTLS && terminates:
		ms.Problem = fmt.Sprintf("the source sends plaintext, but %s's inbound chain %s wants TLS", ms.DestPod, ms.InboundChain)
	default:
		ms.OK = true
	}
	return dpc, r.mtlsVerdict(ms)
}

func plainOrTLS(mode string) string {
	if mode == "DISABLE" {
		return "plaintext"
	}
	return "TLS"
}

func (r *replayer) mtlsVerdict(ms *MTLSStep) bool {
	if ms.OK {
		return true
	}
	if ms.Problem == "" {
		ms.Problem = fmt.Sprintf("the source sends %s, the destination accepts %s", ms.SourceMode, ms.DestMode)
	}
	src := plainOrTLS(ms.SourceMode)
	if ms.SourceMode == "ISTIO_MUTUAL" {
		src = "mTLS"
	}
	r.end("mtls", http.StatusServiceUnavailable, "UF,URX",
		fmt.Sprintf("mismatch: %s destination, %s source → connection reset (503 UF/URX): %s", ms.DestMode, src, ms.Problem))
	return false
}

// sourceTLS is the transport socket the cluster uses toward the endpoint:
// the first transport_socket_matches entry whose match the endpoint's
// envoy.transport_socket_match metadata satisfies (Istio's auto mTLS),
// else the cluster's transport_socket (a DestinationRule's tls).
func (r *replayer) sourceTLS(ip string, port int) (mode, reason string) {
	var meta map[string]*structpb.Value
	for _, cla := range r.pc.Endpoints {
		if cla.GetClusterName() != r.clus.GetName() && cla.GetClusterName() != r.clus.GetEdsClusterConfig().GetServiceName() {
			continue
		}
		for _, lle := range cla.GetEndpoints() {
			for _, le := range lle.GetLbEndpoints() {
				a := le.GetEndpoint().GetAddress().GetSocketAddress()
				if a.GetAddress() == ip && int(a.GetPortValue()) == port {
					meta = le.GetMetadata().GetFilterMetadata()[socketMatchMeta].GetFields()
				}
			}
		}
	}
	ts := r.clus.GetTransportSocket()
	how := "the cluster's transport socket"
	if dr := r.rep.Cluster.DestinationRule; dr != nil {
		how = "trafficPolicy.tls of DestinationRule " + dr.Namespace + "/" + dr.Name
	}
	for _, tm := range r.clus.GetTransportSocketMatches() {
		if matchesAll(tm.GetMatch().GetFields(), meta) {
			ts = tm.GetTransportSocket()
			how = fmt.Sprintf("auto mTLS: transport_socket_matches %q", tm.GetName())
			if len(tm.GetMatch().GetFields()) > 0 {
				how += " (the endpoint is labelled " + describeStruct(tm.GetMatch()) + ")"
			} else {
				how += " (the endpoint is not labelled tlsMode=istio)"
			}
			break
		}
	}
	r.tlsCtx = nil
	if ts == nil || ts.GetTypedConfig() == nil || !strings.HasSuffix(ts.GetTypedConfig().GetTypeUrl(), "UpstreamTlsContext") {
		switch dr := r.rep.Cluster.DestinationRule; {
		case ts == nil && dr != nil && len(r.clus.GetTransportSocketMatches()) == 0:
			how = "DestinationRule " + dr.Namespace + "/" + dr.Name + " turns auto mTLS off (trafficPolicy.tls)"
		case ts == nil:
			how = "no transport socket"
		}
		return "DISABLE", how + " → plaintext"
	}
	ctx := &tlsv3.UpstreamTlsContext{}
	if ts.GetTypedConfig().UnmarshalTo(ctx) != nil {
		return "SIMPLE", how
	}
	r.tlsCtx = ctx
	cc := ctx.GetCommonTlsContext()
	istio := false
	for _, s := range cc.GetTlsCertificateSdsSecretConfigs() {
		if s.GetName() == "default" {
			istio = true
		}
	}
	switch {
	case istio:
		return "ISTIO_MUTUAL", how
	case len(cc.GetTlsCertificates()) > 0 || len(cc.GetTlsCertificateSdsSecretConfigs()) > 0:
		return "MUTUAL", how
	}
	return "SIMPLE", how
}

func matchesAll(want, have map[string]*structpb.Value) bool {
	for k, v := range want {
		h, ok := have[k]
		if !ok || !proto.Equal(h, v) {
			return false
		}
	}
	return true
}

func describeStruct(s *structpb.Struct) string {
	var parts []string
	for k, v := range s.GetFields() {
		parts = append(parts, k+"="+v.GetStringValue())
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// inboundConn is the connection as the destination's virtualInbound sees
// it after tls_inspector and http_inspector, with the source's certificate
// when it sends one.
func (r *replayer) inboundConn(ip string, port int, mode string) *core.ConnInfo {
	dst := &net.TCPAddr{IP: net.ParseIP(ip), Port: port}
	ci := &core.ConnInfo{LocalAddr: dst, OriginalDst: dst, RemoteAddr: &net.TCPAddr{IP: net.ParseIP(r.src.IP), Port: sourcePort}}
	if mode == "DISABLE" {
		ci.TransportProtocol = "raw_buffer"
		if r.http {
			ci.ALPN = []string{"http/1.1"}
		}
		return ci
	}
	ci.TransportProtocol = "tls"
	ci.SNI = r.tlsCtx.GetSni()
	ci.ALPN = r.tlsCtx.GetCommonTlsContext().GetAlpnProtocols()
	if mode == "ISTIO_MUTUAL" && r.src.Identity != "" {
		if u, err := url.Parse(r.src.Identity); err == nil {
			ci.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{URIs: []*url.URL{u}}}}
		}
	}
	return ci
}

// inboundMode reads the PeerAuthentication mode off virtualInbound's
// chains for port (or its catch-all chains when the port has none): TLS
// and plaintext chains → PERMISSIVE, TLS only → STRICT, plaintext only →
// DISABLE.
func inboundMode(l *listenerv3.Listener, port int) string {
	mode := func(forPort bool) string {
		var tlsChain, plain bool
		for _, fc := range l.GetFilterChains() {
			m := fc.GetFilterChainMatch()
			p := int(m.GetDestinationPort().GetValue())
			if (forPort && p != port) || (!forPort && p != 0) {
				continue
			}
			switch m.GetTransportProtocol() {
			case "tls":
				if fc.GetTransportSocket() != nil {
					tlsChain = true
				}
			case "raw_buffer", "":
				plain = true
			}
		}
		switch {
		case tlsChain && plain:
			return "PERMISSIVE"
		case tlsChain:
			return "STRICT"
		case plain:
			return "DISABLE"
		}
		return ""
	}
	if m := mode(true); m != "" {
		return m
	}
	if m := mode(false); m != "" {
		return m
	}
	return "UNKNOWN"
}

// peerAuthentication names the PeerAuthentication that sets the
// destination's mode, Istio's precedence: one selecting the workload, else
// the namespace's, else the mesh's (root namespace istio-system).
func (r *replayer) peerAuthentication(dp localmesh.PodStatus) *ConfigRef {
	labels := r.m.labels[dp.Namespace+"/"+dp.Name]
	var ns, root *ConfigRef
	for _, o := range r.m.objects {
		if o.Kind != "PeerAuthentication" || (o.Namespace != dp.Namespace && o.Namespace != "istio-system") {
			continue
		}
		spec, _ := readSpec[struct {
			Selector *struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
		}](o.Source)
		ref := ConfigRef{Kind: o.Kind, Namespace: o.Namespace, Name: o.Name, Source: o.Source}
		switch {
		case spec.Selector != nil && len(spec.Selector.MatchLabels) > 0:
			if o.Namespace == dp.Namespace && selects(spec.Selector.MatchLabels, labels) {
				return &ref
			}
		case o.Namespace == dp.Namespace:
			ns = &ref
		default:
			root = &ref
		}
	}
	if ns != nil {
		return ns
	}
	return root
}

func selects(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// authzStep evaluates the policy filters of the destination's inbound
// chain, in order, with the proxy's own RBAC engine.
func (r *replayer) authzStep(dpc *inspect.ProxyConfig) bool {
	as := &AuthzStep{DestPod: r.rep.MTLS.DestPod, Allowed: true, Rule: -1}
	r.rep.Authz = as
	switch {
	case dpc == nil:
		as.Reason = "no sidecar at the destination: no AuthorizationPolicy is enforced"
		return true
	case r.inboundChain == nil:
		as.Reason = "the destination's sidecar does not intercept inbound traffic (no virtualInbound listener): the request goes straight to the application and no AuthorizationPolicy is enforced"
		return true
	}
	ci := r.inboundConn(r.host.GetAddress().GetSocketAddress().GetAddress(), int(r.host.GetAddress().GetSocketAddress().GetPortValue()), r.rep.MTLS.SourceMode)
	if ci.TLS != nil {
		as.Principal = strings.TrimPrefix(r.src.Identity, "spiffe://")
	}
	deny := func(f AuthzFilter) bool {
		as.Allowed = false
		if f.Policy != "" {
			ns, name, rule, ok := parsePolicyName(f.Policy)
			if ok {
				ref := r.m.objectRef("AuthorizationPolicy", ns, name)
				as.Policy, as.Rule = &ref, rule
			}
		}
		switch {
		case f.Action == "DENY" && as.Policy != nil:
			as.Reason = fmt.Sprintf("403 RBAC: access denied by AuthorizationPolicy %s/%s rule[%d] (action DENY, Envoy policy %s)", as.Policy.Namespace, as.Policy.Name, as.Rule, f.Policy)
		case f.Action == "DENY":
			as.Reason = "403 RBAC: access denied by DENY policy " + f.Policy
		default:
			as.Reason = "403 RBAC: access denied: no ALLOW policy matches the request (an ALLOW policy selects the workload, so everything it does not allow is denied)"
		}
		r.end("authorization", http.StatusForbidden, "", as.Reason)
		return false
	}
	for _, f := range r.inboundChain.GetFilters() {
		if nr := unpack(f, netRBACFilter, &netrbacv3.RBAC{}); nr != nil {
			d, err := rbac.EvaluateNetwork(nr, ci)
			af := AuthzFilter{Filter: netRBACFilter, Action: d.Action, Allowed: d.Allowed, Policy: d.Policy}
			if err != nil {
				af.Note = err.Error()
			}
			as.Filters = append(as.Filters, af)
			if d.Enforced && !d.Allowed {
				as.Allowed = false
				ok := deny(af)
				r.rep.Verdict.Status = 0
				r.rep.Verdict.Flags = "UC"
				r.rep.Verdict.Reason = strings.Replace(as.Reason, "403 RBAC: access denied", "connection closed by the destination's RBAC (TCP)", 1)
				return ok
			}
		}
		if unpack(f, netAuthzFilter, &anypb.Any{}) != nil || f.GetName() == netAuthzFilter {
			as.Filters = append(as.Filters, AuthzFilter{Filter: netAuthzFilter, Allowed: true, Note: "ext_authz (CUSTOM) asks an external authorizer at connection time: not replayed"})
		}
		h := unpack(f, hcmFilter, &hcmv3.HttpConnectionManager{})
		if h == nil {
			continue
		}
		for _, hf := range h.GetHttpFilters() {
			switch {
			case hf.GetName() == httpRBACFilter || strings.HasSuffix(hf.GetTypedConfig().GetTypeUrl(), "http.rbac.v3.RBAC"):
				cfg := &httprbacv3.RBAC{}
				if hf.GetTypedConfig() != nil && hf.GetTypedConfig().UnmarshalTo(cfg) != nil {
					continue
				}
				d, err := rbac.EvaluateHTTP(cfg, r.req, ci)
				af := AuthzFilter{Filter: hf.GetName(), Action: d.Action, Allowed: d.Allowed, Policy: d.Policy}
				if err != nil {
					af.Note = err.Error()
				}
				if !d.Enforced {
					af.Note = "no enforced rules (shadow rules only count)"
				}
				as.Filters = append(as.Filters, af)
				if d.Enforced && !d.Allowed {
					return deny(af)
				}
			case hf.GetName() == extAuthzFilter || strings.HasSuffix(hf.GetTypedConfig().GetTypeUrl(), "ext_authz.v3.ExtAuthz"):
				as.Filters = append(as.Filters, AuthzFilter{Filter: hf.GetName(), Allowed: true, Note: "ext_authz (CUSTOM) asks an external authorizer per request: not replayed"})
			}
		}
	}
	enforced := false
	for _, f := range as.Filters {
		if f.Action != "" {
			enforced = true
		}
	}
	switch {
	case !enforced:
		as.Reason = "no AuthorizationPolicy applies to the destination: ALLOW"
	default:
		as.Reason = "ALLOW"
		for _, f := range as.Filters {
			if f.Action == "ALLOW" && f.Policy != "" {
				as.Reason = "ALLOW: matched " + f.Policy
				if ns, name, rule, ok := parsePolicyName(f.Policy); ok {
					ref := r.m.objectRef("AuthorizationPolicy", ns, name)
					as.Policy, as.Rule = &ref, rule
					as.Reason = fmt.Sprintf("ALLOW: AuthorizationPolicy %s/%s rule[%d] matches", ns, name, rule)
				}
			}
		}
	}
	return true
}

// parsePolicyName takes Istio's RBAC policy name
// "ns[NS]-policy[NAME]-rule[N]" apart.
func parsePolicyName(s string) (ns, name string, rule int, ok bool) {
	rest, ok1 := strings.CutPrefix(s, "ns[")
	i := strings.Index(rest, "]-policy[")
	j := strings.LastIndex(rest, "]-rule[")
	if !ok1 || i < 0 || j < i || !strings.HasSuffix(rest, "]") {
		return "", "", -1, false
	}
	n, err := strconv.Atoi(rest[j+len("]-rule[") : len(rest)-1])
	if err != nil {
		return "", "", -1, false
	}
	return rest[:i], rest[i+len("]-policy[") : j], n, true
}
