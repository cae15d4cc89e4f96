// Package memory is a config source held in memory, for tests: a test
// pushes YAML text or objects, and they reach the store before the call
// returns.
package memory

import (
	"context"
	"maps"
	"slices"
	"sync"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// Source holds objects by origin and passes every change to its sinks.
type Source struct {
	mu      sync.Mutex
	sinks   []config.Sink
	origins map[string]*held
}

type held struct {
	objs map[config.Key]*config.Object
	errs []error
}

// New returns a source feeding sinks (typically one *config.Store).
// Further sinks may attach with Run.
func New(sinks ...config.Sink) *Source {
	return &Source{sinks: sinks, origins: map[string]*held{}}
}

// Apply decodes yaml as the file named origin and replaces what that
// origin held, as saving the file would. It returns the decode errors.
func (s *Source) Apply(origin, yaml string) []error {
	objs, errs := config.Decode([]byte(yaml), origin)
	s.Set(origin, objs, errs...)
	return errs
}

// Set replaces what origin holds with objs (and the errors met reading
// them); no objects and no errors removes the origin.
func (s *Source) Set(origin string, objs []*config.Object, errs ...error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(objs) == 0 && len(errs) == 0 {
		delete(s.origins, origin)
	} else {
		o := &held{objs: map[config.Key]*config.Object{}, errs: errs}
		for _, obj := range objs {
			o.objs[obj.Key()] = obj
		}
		s.origins[origin] = o
	}
	for _, sink := range s.sinks {
		sink.Replace(origin, objs, errs)
	}
}

// Remove deletes everything origin holds, as deleting the file would.
func (s *Source) Remove(origin string) { s.Set(origin, nil) }

// Upsert adds or replaces one object of origin.
func (s *Source) Upsert(origin string, obj *config.Object) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.origins[origin]
	if o == nil {
		o = &held{objs: map[config.Key]*config.Object{}}
		s.origins[origin] = o
	}
	o.objs[obj.Key()] = obj
	for _, sink := range s.sinks {
		sink.Upsert(origin, obj)
	}
}

// Delete removes one object of origin.
func (s *Source) Delete(origin string, key config.Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o := s.origins[origin]; o != nil {
		delete(o.objs, key)
	}
	for _, sink := range s.sinks {
		sink.Delete(origin, key)
	}
}

// Run gives sink everything the source holds, then every later change,
// until ctx is done.
func (s *Source) Run(ctx context.Context, sink config.Sink) error {
	s.mu.Lock()
	for _, name := range slices.Sorted(maps.Keys(s.origins)) {
		o := s.origins[name]
		sink.Replace(name, slices.Collect(maps.Values(o.objs)), o.errs)
	}
	s.sinks = append(slices.Clone(s.sinks), sink)
	s.mu.Unlock()

	<-ctx.Done()

	s.mu.Lock()
	defer s.mu.Unlock()
	if i := slices.Index(s.sinks, sink); i >= 0 {
		s.sinks = slices.Delete(slices.Clone(s.sinks), i, i+1)
	}
	return nil
}

// Interface guard.
var _ config.Source = (*Source)(nil)
