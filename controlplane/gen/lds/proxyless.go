package lds

import (
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// proxylessListeners are what a proxyless gRPC client (grpc-go's xds
// resolver) dials through, as Istio's grpcgen builds them: an API
// listener per reachable service port, named "host:port" like the dial
// target, whose connection manager takes routes from RDS under the same
// name. grpc-go runs only the router filter.
func proxylessListeners(p *xds.Proxy, ix *index.Index) []*listenerv3.Listener {
	var out []*listenerv3.Listener
	for _, svc := range ix.SidecarScope(p).Services() {
		for _, sp := range svc.Ports {
			name := svc.Hostname + ":" + strconv.Itoa(sp.Port)
			h := &hcmv3.HttpConnectionManager{
				StatPrefix: name,
				HttpFilters: []*hcmv3.HttpFilter{{
					Name:       "envoy.filters.http.router",
					ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})},
				}},
				RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
					RouteConfigName: name,
					ConfigSource: &corev3.ConfigSource{
						ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
						ResourceApiVersion:    corev3.ApiVersion_V3,
					},
				}},
			}
			out = append(out, &listenerv3.Listener{
				Name:        name,
				ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(h)},
			})
		}
	}
	return out
}
