package compile

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/skiff-mesh/skiff/dataplane/xdstypes"
)

const (
	clusterType  = xdstypes.Cluster
	endpointType = xdstypes.ClusterLoadAssignment
	listenerType = xdstypes.Listener
	routeType    = xdstypes.RouteConfiguration
	secretType   = xdstypes.Secret

	hcmType      = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
	tcpProxyType = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
	hcmName      = "envoy.filters.network.http_connection_manager"
	tcpProxyName = "envoy.filters.network.tcp_proxy"
)

// resourceName is the name a resource carries in its own message.
func resourceName(m proto.Message) string {
	switch r := m.(type) {
	case *clusterv3.Cluster:
		return r.GetName()
	case *listenerv3.Listener:
		return r.GetName()
	case *routev3.RouteConfiguration:
		return r.GetName()
	case *endpointv3.ClusterLoadAssignment:
		return r.GetClusterName()
	case *tlsv3.Secret:
		return r.GetName()
	}
	return ""
}

// kind is how error messages name a resource type.
func kind(typeURL string) string {
	switch typeURL {
	case clusterType:
		return "cluster"
	case endpointType:
		return "cluster_load_assignment"
	case listenerType:
		return "listener"
	case routeType:
		return "route_configuration"
	case secretType:
		return "secret"
	}
	return typeURL
}
