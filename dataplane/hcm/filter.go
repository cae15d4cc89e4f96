package hcm

import (
	"fmt"
	"log/slog"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// Handler serves one stream. The router is the terminal handler; filters
// wrap it.
type Handler interface {
	ServeStream(s *Stream)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(s *Stream)

// ServeStream calls f(s).
func (f HandlerFunc) ServeStream(s *Stream) { f(s) }

// Filter is one HTTP filter instance: it wraps the rest of the chain. A
// filter answers locally with s.SendLocalReply (and does not call next) or
// passes the stream on by calling next.ServeStream(s).
type Filter func(next Handler) Handler

// FilterConfig is what a FilterFactory gets to build a filter.
type FilterConfig struct {
	// Name is the filter's name in http_filters; it is also the key of its
	// per-route config in Entry.PerFilterConfig (see PerRoute).
	Name string
	// TypedConfig is the filter's typed_config (nil when absent).
	TypedConfig *anypb.Any
	StatPrefix  string // the HCM's stat_prefix
	Stats       *stats.Store
	Clusters    core.ClusterSet
	Logger      *slog.Logger
	// Direction is the listener's traffic_direction (Istio's stats infer
	// the reporter from it); Node is this proxy's node (its metadata).
	Direction corev3.TrafficDirection
	Node      *corev3.Node
	// AddStreamHook registers h to run when every stream of this
	// connection manager finishes, including streams an earlier filter
	// answered: Envoy calls every filter's log callbacks (istio.stats
	// counts fault aborts so).
	AddStreamHook func(h DoneHook)
}

// FilterFactory validates a filter's config and builds it. Errors name the
// field; New prefixes the filter's position.
type FilterFactory func(fc FilterConfig) (Filter, error)

var (
	factoriesMu sync.RWMutex
	factories   = map[string]FilterFactory{}
)

// RegisterFilter registers the factory for filters whose typed_config has
// typeURL ("type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault").
// Packages call it from init. A TypedStruct-wrapped typed_config is looked
// up by its inner type_url (see core.ConfigType).
func RegisterFilter(typeURL string, f FilterFactory) {
	factoriesMu.Lock()
	defer factoriesMu.Unlock()
	factories[typeURL] = f
}

func lookupFactory(typeURL string) FilterFactory {
	factoriesMu.RLock()
	defer factoriesMu.RUnlock()
	return factories[typeURL]
}

// PerRouteCache parses a filter's typed_per_filter_config once per
// compiled route entry and remembers the result, so filters do not
// unmarshal protos on the request path. The zero value is ready to use.
type PerRouteCache[T any] struct {
	m    sync.Map // *anypb.Any → perRouteResult[T]
	size int64
	mu   sync.Mutex
}

type perRouteResult[T any] struct {
	v   T
	err error
}

// perRouteCacheMax bounds a cache across many RDS updates: stale entries
// (of replaced tables) are dropped wholesale when it is reached.
const perRouteCacheMax = 4096

// Get returns the parsed per-route config of filter name for s's route;
// ok is false when the route has none.
func (c *PerRouteCache[T]) Get(s *Stream, name string, parse func(*anypb.Any) (T, error)) (v T, ok bool, err error) {
	a := s.PerFilterConfig(name)
	if a == nil {
		return v, false, nil
	}
	if r, hit := c.m.Load(a); hit {
		pr := r.(perRouteResult[T])
		return pr.v, true, pr.err
	}
	pv, perr := parse(a)
	c.mu.Lock()
	c.size++
	if c.size > perRouteCacheMax {
		c.m.Clear()
		c.size = 1
	}
	c.mu.Unlock()
	c.m.Store(a, perRouteResult[T]{v: pv, err: perr})
	return pv, true, perr
}

func filterError(i int, name, field string, err error) error {
	return fmt.Errorf("http_filters[%d] %q: %s: %w", i, name, field, err)
}
