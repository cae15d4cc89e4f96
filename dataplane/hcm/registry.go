package hcm

import (
	"sort"
	"sync"
	"sync/atomic"

	"github.com/skiff-mesh/skiff/dataplane/route"
)

// RouteRegistry holds the RDS route tables by name. Connection managers
// that use RDS keep the slot for their name and load it per request, so an
// RDS update changes routing without rebuilding listeners.
type RouteRegistry struct {
	mu    sync.Mutex // guards slots (the map); never held on the request path
	slots map[string]*atomic.Pointer[route.Table]
}

// NewRouteRegistry returns an empty registry.
func NewRouteRegistry() *RouteRegistry {
	return &RouteRegistry{slots: map[string]*atomic.Pointer[route.Table]{}}
}

// slot returns the named slot, creating an empty one so a connection
// manager built before its RDS resource arrives starts serving it on Set.
func (r *RouteRegistry) slot(name string) *atomic.Pointer[route.Table] {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.slots[name]
	if !ok {
		s = new(atomic.Pointer[route.Table])
		r.slots[name] = s
	}
	return s
}

// Set installs (or replaces) the table of route configuration name.
func (r *RouteRegistry) Set(name string, t *route.Table) { r.slot(name).Store(t) }

// Get returns the current table of name, nil when none is known.
func (r *RouteRegistry) Get(name string) *route.Table {
	r.mu.Lock()
	s := r.slots[name]
	r.mu.Unlock()
	if s == nil {
		return nil
	}
	return s.Load()
}

// Remove forgets the table of name; managers using it answer 404 NR until
// it is set again.
func (r *RouteRegistry) Remove(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.slots[name]; ok {
		s.Store(nil)
	}
}

// Names lists the route configurations that currently have a table, sorted.
func (r *RouteRegistry) Names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.slots))
	for n, s := range r.slots {
		if s.Load() != nil {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}
