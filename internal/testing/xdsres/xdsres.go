// Package xdsres builds the Envoy v3 resources tests push to proxies, in
// the shapes Istio generates: EDS clusters, HTTP listeners with RDS, route
// configurations, TCP proxy listeners.
package xdsres

import (
	"fmt"
	"net"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Any wraps m, panicking on the impossible marshal error.
func Any(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

// Addr is a socket address from "host:port".
func Addr(hostport string) *corev3.Address {
	h, p, err := net.SplitHostPort(hostport)
	if err != nil {
		panic(err)
	}
	port, _ := strconv.Atoi(p)
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: h, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}}
}

// EDSCluster is an EDS cluster fed over ADS.
func EDSCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			ResourceApiVersion:    corev3.ApiVersion_V3}},
		ConnectTimeout: durationpb.New(time.Second),
	}
}

// HTTP2 marks a cluster as speaking HTTP/2 to its hosts (h2c or h2 over TLS).
func HTTP2(c *clusterv3.Cluster) *clusterv3.Cluster {
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{
		"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": Any(&httpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}}}}),
	}
	return c
}

// Endpoints is a ClusterLoadAssignment with the given "host:port" hosts in
// one locality.
func Endpoints(cluster string, hosts ...string) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: cluster}
	loc := &endpointv3.LocalityLbEndpoints{}
	for _, h := range hosts {
		loc.LbEndpoints = append(loc.LbEndpoints, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: Addr(h)}}})
	}
	cla.Endpoints = []*endpointv3.LocalityLbEndpoints{loc}
	return cla
}

// HCM is an HTTP connection manager that takes its routes from RDS over ADS,
// with the router as its only filter.
func HCM(statPrefix, routeName string) *hcmv3.HttpConnectionManager {
	return &hcmv3.HttpConnectionManager{
		StatPrefix: statPrefix,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: routeName,
			ConfigSource: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
				ResourceApiVersion: corev3.ApiVersion_V3}}},
		HttpFilters: []*hcmv3.HttpFilter{Router()},
	}
}

// Router is the terminal HTTP filter.
func Router() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: "envoy.filters.http.router",
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: Any(&routerv3.Router{})}}
}

// Listener is a listener on addr whose one filter chain runs the given
// network filter config (an HCM or a TcpProxy).
func Listener(name, addr string, terminal proto.Message) *listenerv3.Listener {
	fname := "envoy.filters.network.http_connection_manager"
	if _, ok := terminal.(*tcpv3.TcpProxy); ok {
		fname = "envoy.filters.network.tcp_proxy"
	}
	return &listenerv3.Listener{
		Name:    name,
		Address: Addr(addr),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: fname, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: Any(terminal)}}}}},
	}
}

// TCPProxy forwards to one cluster.
func TCPProxy(statPrefix, cluster string) *tcpv3.TcpProxy {
	return &tcpv3.TcpProxy{StatPrefix: statPrefix, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: cluster}}
}

// RouteConfig has one virtual host matching every domain with the given
// routes.
func RouteConfig(name string, routes ...*routev3.Route) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{
		Name: "all", Domains: []string{"*"}, Routes: routes}}}
}

// PrefixRoute sends a path prefix to a cluster.
func PrefixRoute(prefix, cluster string) *routev3.Route {
	return &routev3.Route{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
	}
}

// WeightedRoute splits a path prefix across clusters by weight.
func WeightedRoute(prefix string, weights map[string]uint32) *routev3.Route {
	wc := &routev3.WeightedCluster{}
	for c, w := range weights {
		wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: c, Weight: wrapU32(w)})
	}
	return &routev3.Route{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}}},
	}
}

func wrapU32(v uint32) *wrapperspb.UInt32Value { return wrapperspb.UInt32(v) }

// ADSBootstrap is an Envoy v3 bootstrap that points a proxy at the xDS
// server on xdsAddr over ADS (delta when asked), as node nodeID with the
// given node metadata (a YAML flow map, "{}" for none), with the admin API
// on a free loopback port.
func ADSBootstrap(xdsAddr, nodeID, metadata string, delta bool) string {
	api := "GRPC"
	if delta {
		api = "DELTA_GRPC"
	}
	host, port, err := net.SplitHostPort(xdsAddr)
	if err != nil {
		panic(err)
	}
	return fmt.Sprintf(`node:
  id: %s
  cluster: test
  metadata: %s
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
dynamic_resources:
  ads_config: {api_type: %s, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: xds}}]}
  cds_config: {ads: {}, resource_api_version: V3}
  lds_config: {ads: {}, resource_api_version: V3}
static_resources:
  clusters:
  - name: xds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: xds
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]
`, nodeID, metadata, api, host, port)
}
