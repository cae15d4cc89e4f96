package compile

import (
	"fmt"
	"log/slog"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
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
	Node     *corev3.Node // this proxy's node, for filters that report it
}

// NetworkFilters implements listener.ChainFactory. The last filter is the
// terminal one (the HTTP connection manager or tcp_proxy); the filters
// before it are non-terminal network filters registered with
// listener.RegisterNetworkFilter (envoy.filters.network.rbac and the like),
// wrapped around the terminal one so that a connection meets them in the
// order they are listed.
func (f *ChainFactory) NetworkFilters(l *listenerv3.Listener, fc *listenerv3.FilterChain) (core.ConnHandler, error) {
	filters := fc.GetFilters()
	if len(filters) == 0 {
		return nil, fmt.Errorf("no network filters; a filter chain needs a terminal filter (%s or %s)", hcmName, tcpProxyName)
	}
	wrappers := make([]listener.NetworkFilter, 0, len(filters)-1)
	for i, nf := range filters[:len(filters)-1] {
		where := fmt.Sprintf("filters[%d] %q", i, nf.GetName())
		tc := nf.GetTypedConfig()
		if tc == nil {
			return nil, fmt.Errorf("%s: typed_config is required", where)
		}
		switch tc.GetTypeUrl() {
		case hcmType:
			return nil, fmt.Errorf("%s: the HTTP connection manager is a terminal filter and must be last", where)
		case tcpProxyType:
			return nil, fmt.Errorf("%s: tcp_proxy is a terminal filter and must be last", where)
		}
		fac := listener.LookupNetworkFilter(core.ConfigType(tc))
		if fac == nil {
			return nil, fmt.Errorf("%s: network filter type %s is not supported by skiff-proxy (supported: http_connection_manager, tcp_proxy, rbac, ext_authz)", where, tc.GetTypeUrl())
		}
		w, err := fac(listener.NetworkFilterConfig{Name: nf.GetName(), TypedConfig: tc, Stats: f.Stats, Logger: f.Logger, Clusters: f.Clusters,
			Direction: l.GetTrafficDirection(), Node: f.Node})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		wrappers = append(wrappers, w)
	}
	h, err := f.terminal(l, len(filters)-1, filters[len(filters)-1])
	if err != nil {
		return nil, err
	}
	for i := len(wrappers) - 1; i >= 0; i-- {
		h = wrappers[i](h)
	}
	return h, nil
}

// terminal builds the chain's last filter.
func (f *ChainFactory) terminal(l *listenerv3.Listener, i int, nf *listenerv3.Filter) (core.ConnHandler, error) {
	where := fmt.Sprintf("filters[%d] %q", i, nf.GetName())
	tc := nf.GetTypedConfig()
	if tc == nil {
		return nil, fmt.Errorf("%s: typed_config is required", where)
	}
	switch tc.GetTypeUrl() {
	case hcmType:
		var cfg hcmv3.HttpConnectionManager
		if err := tc.UnmarshalTo(&cfg); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		cm, err := hcm.New(&cfg, hcm.Deps{Clusters: f.Clusters, Routes: f.Routes, Stats: f.Stats, Logger: f.Logger,
			Direction: l.GetTrafficDirection(), Node: f.Node})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		return cm, nil
	case tcpProxyType:
		var cfg tcpv3.TcpProxy
		if err := tc.UnmarshalTo(&cfg); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		p, err := l4.NewTCPProxy(&cfg, f.Clusters, f.Stats)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		return p, nil
	}
	if listener.LookupNetworkFilter(core.ConfigType(tc)) != nil {
		return nil, fmt.Errorf("%s: %s is not a terminal filter; a filter chain ends with %s or %s", where, tc.GetTypeUrl(), hcmName, tcpProxyName)
	}
	return nil, fmt.Errorf("%s: network filter type %s is not supported by skiff-proxy (supported: http_connection_manager, tcp_proxy)", where, tc.GetTypeUrl())
}

var _ listener.ChainFactory = (*ChainFactory)(nil)
