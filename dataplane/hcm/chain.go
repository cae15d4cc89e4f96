package hcm

import (
	"errors"
	"fmt"
	"log/slog"

	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// buildChain compiles http_filters into one handler: each filter wraps the
// ones after it and the router is the terminal handler.
func buildChain(cfg *hcmv3.HttpConnectionManager, c *config, d Deps, st *stats.Store, logger *slog.Logger) (Handler, error) {
	fs := cfg.GetHttpFilters()
	if len(fs) == 0 {
		return nil, errors.New("http_filters: the last filter must be envoy.filters.http.router")
	}
	last := fs[len(fs)-1]
	if last.GetTypedConfig().GetTypeUrl() != RouterTypeURL {
		return nil, fmt.Errorf("http_filters[%d] %q: the last filter must be envoy.filters.http.router", len(fs)-1, last.GetName())
	}
	rc := &routerv3.Router{}
	if err := last.GetTypedConfig().UnmarshalTo(rc); err != nil {
		return nil, filterError(len(fs)-1, last.GetName(), "typed_config", err)
	}
	var h Handler = newRouter(c, d.Clusters, rc)
	for i := len(fs) - 2; i >= 0; i-- {
		f := fs[i]
		if f.GetConfigDiscovery() != nil {
			if f.GetIsOptional() {
				continue
			}
			return nil, filterError(i, f.GetName(), "config_discovery", errors.New("filter config discovery (ECDS) is not supported"))
		}
		tu := core.ConfigType(f.GetTypedConfig())
		if tu == RouterTypeURL {
			return nil, filterError(i, f.GetName(), "typed_config", errors.New("envoy.filters.http.router must be the last filter"))
		}
		fac := lookupFactory(tu)
		if fac == nil {
			if f.GetIsOptional() {
				continue
			}
			return nil, filterError(i, f.GetName(), "typed_config", fmt.Errorf("unknown filter type %q (set is_optional to skip it)", tu))
		}
		filter, err := fac(FilterConfig{
			Name: f.GetName(), TypedConfig: f.GetTypedConfig(), StatPrefix: c.statPrefix,
			Stats: st, Clusters: d.Clusters, Logger: logger, Direction: d.Direction, Node: d.Node,
			AddStreamHook: func(h DoneHook) { c.streamHooks = append(c.streamHooks, h) },
		})
		if err != nil {
			return nil, fmt.Errorf("http_filters[%d] %q: %w", i, f.GetName(), err)
		}
		next := h
		wrapped := filter(next)
		if f.GetDisabled() {
			wrapped = enabledPerRoute(f.GetName(), wrapped, next)
		}
		h = wrapped
	}
	return h, nil
}

// enabledPerRoute runs a filter marked disabled only on routes that carry
// per-filter config for it, as Envoy's disabled flag means.
func enabledPerRoute(name string, filter, next Handler) Handler {
	return HandlerFunc(func(s *Stream) {
		if s.PerFilterConfig(name) != nil {
			filter.ServeStream(s)
			return
		}
		next.ServeStream(s)
	})
}
