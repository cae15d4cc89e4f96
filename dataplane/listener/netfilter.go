package listener

import (
	"log/slog"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// NetworkFilter is a non-terminal network filter (envoy.filters.network.rbac
// and the like): it wraps the handler made of the filters after it. The
// returned handler should pass core.Drainer and io.Closer on to next.
type NetworkFilter func(next core.ConnHandler) core.ConnHandler

// NetworkFilterConfig is what a NetworkFilterFactory gets to build a filter.
type NetworkFilterConfig struct {
	Name        string     // the filter's name in the chain's filters
	TypedConfig *anypb.Any // its typed_config
	Stats       *stats.Store
	Logger      *slog.Logger
	// Clusters lets a filter call out through the proxy's clusters
	// (envoy.filters.network.ext_authz reaches its authorizer so).
	Clusters core.ClusterSet
	// Direction is the listener's traffic_direction; Node this proxy's node.
	Direction corev3.TrafficDirection
	Node      *corev3.Node
}

// NetworkFilterFactory validates a network filter's config and builds it.
// Errors name the field; the chain factory prefixes the filter's position.
type NetworkFilterFactory func(NetworkFilterConfig) (NetworkFilter, error)

var (
	netFiltersMu sync.RWMutex
	netFilters   = map[string]NetworkFilterFactory{}
)

// RegisterNetworkFilter registers the factory for network filters whose
// typed_config has typeURL. Packages call it from init, so a binary links a
// filter by importing its package. A TypedStruct-wrapped typed_config is
// looked up by its inner type_url (core.ConfigType).
func RegisterNetworkFilter(typeURL string, f NetworkFilterFactory) {
	netFiltersMu.Lock()
	defer netFiltersMu.Unlock()
	netFilters[typeURL] = f
}

// LookupNetworkFilter returns the factory registered for typeURL, nil when
// none is.
func LookupNetworkFilter(typeURL string) NetworkFilterFactory {
	netFiltersMu.RLock()
	defer netFiltersMu.RUnlock()
	return netFilters[typeURL]
}
