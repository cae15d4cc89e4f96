// Package xdstypes owns the set of Envoy v3 protos the data plane understands:
// the xDS type URLs it subscribes to, and blank imports that register every
// message it can meet inside a typed_config Any, so that protojson and
// anypb resolve them through the global registry. Keep the list here and only
// here: a message not registered is one the proxy cannot decode.
package xdstypes

import (
	// Bootstrap and the xDS resources themselves.
	_ "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/core/v3" // also HealthCheck (http, tcp, grpc health checkers)
	_ "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	// Network filters.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	// HTTP filters: only those skiff-proxy implements (each linked proto
	// costs resident memory in every sidecar; local rate limit joins with
	// its filter).
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"

	// Listener filters.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"

	// Transport sockets (tls/v3 also holds the SDS Secret).
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	// Access loggers.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"

	// Upstreams: HttpProtocolOptions, how a cluster asks for HTTP/2.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	// Path matchers (RBAC's url_path with Istio's path templates).
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/path/match/uri_template/v3"

	// Retry host predicates.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"

	// TypedStruct (both wrappers: Istio's metadata exchange configs) and
	// Istio's stats.PluginConfig (istio.stats).
	_ "github.com/cncf/xds/go/udpa/type/v1"
	_ "github.com/cncf/xds/go/xds/type/v3"
	_ "istio.io/api/envoy/extensions/stats"
)

// Type URLs of the xDS v3 resources the data plane subscribes to.
const (
	Listener              = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RouteConfiguration    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	Cluster               = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	ClusterLoadAssignment = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	Secret                = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
)

// Ordered lists the type URLs in the order Envoy subscribes to them on an ADS
// stream: clusters before the endpoints they name, listeners before the
// routes they name, secrets last.
var Ordered = []string{Cluster, ClusterLoadAssignment, Listener, RouteConfiguration, Secret}

// IsWildcard reports whether Envoy subscribes to typeURL with a wildcard
// (all resources of the type) rather than by name.
func IsWildcard(typeURL string) bool {
	return typeURL == Listener || typeURL == Cluster
}
