package xdstypes_test

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/skiff-mesh/skiff/dataplane/xdstypes"
)

// Every message a typed_config in skiffd's output (or an Envoy bootstrap the
// proxy accepts) may name resolves through the global registry once
// xdstypes is imported, and only through it: this package imports nothing
// else.
func TestRegistered(t *testing.T) {
	for _, name := range []string{
		xdstypes.Listener, xdstypes.RouteConfiguration, xdstypes.Cluster, xdstypes.ClusterLoadAssignment, xdstypes.Secret,
		"envoy.config.bootstrap.v3.Bootstrap",
		"envoy.config.core.v3.HealthCheck",
		"envoy.service.discovery.v3.Resource",
		"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
		"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
		"envoy.extensions.filters.http.router.v3.Router",
		"envoy.extensions.filters.http.fault.v3.HTTPFault",
		"envoy.extensions.filters.http.cors.v3.Cors",
		"envoy.extensions.filters.http.cors.v3.CorsPolicy",
		"envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
		"envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
		"envoy.extensions.filters.listener.original_dst.v3.OriginalDst",
		"envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
		"envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
		"envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer",
		"envoy.extensions.access_loggers.file.v3.FileAccessLog",
		"envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
		"envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
		"envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
		"envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate",
	} {
		url := name
		if !strings.HasPrefix(url, "type.googleapis.com/") {
			url = "type.googleapis.com/" + name
		}
		if _, err := protoregistry.GlobalTypes.FindMessageByURL(url); err != nil {
			t.Errorf("%s: %v", url, err)
		}
	}
}

func TestOrderAndWildcard(t *testing.T) {
	if xdstypes.Ordered[0] != xdstypes.Cluster || len(xdstypes.Ordered) != 5 {
		t.Errorf("Ordered = %v, want CDS first and all five types", xdstypes.Ordered)
	}
	for _, u := range xdstypes.Ordered {
		want := u == xdstypes.Listener || u == xdstypes.Cluster
		if xdstypes.IsWildcard(u) != want {
			t.Errorf("IsWildcard(%s) = %v", u, !want)
		}
	}
}
