package upstream

import (
	"context"
	"fmt"
	"net"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// ConnFilter is one upstream network filter (Envoy's Cluster.filters)
// instance: it sees each new upstream connection of its cluster once the
// transport socket is up, and returns the connection to use in its place.
// ctx carries the downstream connection when there is one
// (core.ConnInfoFrom).
type ConnFilter func(ctx context.Context, c net.Conn) (net.Conn, error)

// ConnFilterConfig is what a ConnFilterFactory gets to build a filter.
type ConnFilterConfig struct {
	Name        string
	TypedConfig *anypb.Any
	Cluster     *clusterv3.Cluster // the cluster the filter belongs to
	Node        *corev3.Node       // this proxy's node
	Stats       *stats.Store
}

// ConnFilterFactory validates an upstream network filter's config and
// builds it. Errors name the field.
type ConnFilterFactory func(ConnFilterConfig) (ConnFilter, error)

var (
	connFiltersMu sync.RWMutex
	connFilters   = map[string]ConnFilterFactory{}
)

// RegisterConnFilter registers the factory for Cluster.filters entries
// whose typed_config has typeURL (the inner type_url of a TypedStruct).
// Packages call it from init.
func RegisterConnFilter(typeURL string, f ConnFilterFactory) {
	connFiltersMu.Lock()
	defer connFiltersMu.Unlock()
	connFilters[typeURL] = f
}

func lookupConnFilter(typeURL string) ConnFilterFactory {
	connFiltersMu.RLock()
	defer connFiltersMu.RUnlock()
	return connFilters[typeURL]
}

// buildConnFilters compiles Cluster.filters.
func buildConnFilters(src *clusterv3.Cluster, o Options) ([]ConnFilter, error) {
	var out []ConnFilter
	for i, f := range src.GetFilters() {
		tu := core.ConfigType(f.GetTypedConfig())
		fac := lookupConnFilter(tu)
		if fac == nil {
			return nil, fmt.Errorf("filters[%d] %q: typed_config: upstream network filter type %q is not supported by skiff-proxy", i, f.GetName(), tu)
		}
		cf, err := fac(ConnFilterConfig{Name: f.GetName(), TypedConfig: f.GetTypedConfig(), Cluster: src, Node: o.Node, Stats: o.Stats})
		if err != nil {
			return nil, fmt.Errorf("filters[%d] %q: %w", i, f.GetName(), err)
		}
		out = append(out, cf)
	}
	return out, nil
}

// applyConnFilters runs a fresh connection through the cluster's filters.
func (c *cluster) applyConnFilters(ctx context.Context, nc net.Conn) (net.Conn, error) {
	for _, f := range c.connFilters {
		var err error
		if nc, err = f(ctx, nc); err != nil {
			return nil, err
		}
	}
	return nc, nil
}

// Metadata is the cluster's metadata (Istio's filter_metadata.istio
// services, read by the stats filters).
func (c *cluster) Metadata() *corev3.Metadata { return c.src.GetMetadata() }
