package compile

import (
	"fmt"
	"log/slog"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/dataplane/hcm"
	"github.com/skiff-mesh/skiff/dataplane/l4"
	"github.com/skiff-mesh/skiff/dataplane/listener"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// ChainFactory builds a filter chain's terminal network filter: the HTTP
// connection manager or tcp_proxy. It is the listener manager's
// listener.ChainFactory.
type ChainFactory struct {
	Clusters core.ClusterSet
	Routes   *hcm.RouteRegistry
	Stats    *stats.Store
	Logger   *slog.Logger
}

// NetworkFilters implements listener.ChainFactory.
func (f *ChainFactory) NetworkFilters(l *listenerv3.Listener, fc *listenerv3.FilterChain) (core.ConnHandler, error) {
	filters := fc.GetFilters()
	if len(filters) == 0 {
		return nil, fmt.Errorf("no network filters; a filter chain needs a terminal filter (%s or %s)", hcmName, tcpProxyName)
	}
	for i, nf := range filters {
		tc := nf.GetTypedConfig()
		where := fmt.Sprintf("filters[%d] %q", i, nf.GetName())
		if tc == nil {
			return nil, fmt.Errorf("%s: typed_config is required", where)
		}
		last := i == len(filters)-1
		switch tc.GetTypeUrl() {
		case hcmType:
			if !last {
				return nil, fmt.Errorf("%s: the HTTP connection manager is a terminal filter and must be last", where)
			}
			var cfg hcmv3.HttpConnectionManager
			if err := tc.UnmarshalTo(&cfg); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			cm, err := hcm.New(&cfg, hcm.Deps{Clusters: f.Clusters, Routes: f.Routes, Stats: f.Stats, Logger: f.Logger})
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			return cm, nil
		case tcpProxyType:
			if !last {
				return nil, fmt.Errorf("%s: tcp_proxy is a terminal filter and must be last", where)
			}
			var cfg tcpv3.TcpProxy
			if err := tc.UnmarshalTo(&cfg); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			p, err := l4.NewTCPProxy(&cfg, f.Clusters, f.Stats)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			return p, nil
		default:
			return nil, fmt.Errorf("%s: network filter type %s is not supported by skiff-proxy (supported: http_connection_manager, tcp_proxy)", where, tc.GetTypeUrl())
		}
	}
	return nil, fmt.Errorf("no terminal network filter")
}

var _ listener.ChainFactory = (*ChainFactory)(nil)
