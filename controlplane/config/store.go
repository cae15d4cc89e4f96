package config

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Sink receives what a source reads. Every source (files, memory, the
// Kubernetes API) talks to the store through it. An origin names where a
// set of objects comes from (a file path, "kubernetes/VirtualService");
// each origin's objects are independent of the others'.
type Sink interface {
	// Replace sets everything one origin holds (a file; an informer's full
	// list), with the errors met reading it. An empty Replace (no objects,
	// no errors) removes the origin.
	Replace(origin string, objs []*Object, errs []error)
	// Upsert and Delete are the incremental changes an informer delivers.
	Upsert(origin string, o *Object)
	Delete(origin string, key Key)
}

// Source feeds a Sink until ctx is done.
type Source interface {
	Run(ctx context.Context, sink Sink) error
}

// Validator checks one decoded object. A nil error admits it. Otherwise
// each error (each member of an errors.Join) is reported; it rejects the
// object unless it is a warning: it implements interface{ IsWarning() bool }
// returning true, or its text starts with "warning: ". An error names its
// field with interface{ FieldPath() string } or by starting its text with
// "path: " (validation.FieldError does); the store then reports the line of
// that field in the user's file.
type Validator func(*Object) error

// Change tells subscribers what one applied change (or several merged)
// did: the snapshot version it produced and the keys whose objects were
// added, modified or removed.
type Change struct {
	Version uint64
	Keys    []Key
}

// Store holds the config every source declared, validated: for each key
// the one object in force. Readers take immutable snapshots.
//
// Rules: an invalid object is rejected and reported, and the previous valid
// version of its key from the same origin stays in force; an origin whose
// read failed as a whole (Unreadable, e.g. a YAML syntax error) keeps all
// its previous objects, and so does, for the keys it no longer declares,
// an origin with an error not tied to any object (a misspelt kind could
// hide any of them); a key declared by two origins is taken from a
// preferred origin (SetPreferred), else from the origin whose name sorts
// first (so the outcome does not depend on the
// order events arrived in) and the other declaration is reported. Calls
// for one origin must not overlap; calls for different origins may.
type Store struct {
	validate Validator
	log      *slog.Logger

	mu        sync.Mutex
	origins   map[string]*originState
	holders   map[Key][]string // origins holding a valid object for the key, in holderOrder
	conflicts map[Key][]ObjectError
	version   uint64
	subs      []*subscriber
	refCheck  func([]*Object) []ObjectError
	preferred func(origin string) bool
	refCache  struct {
		version uint64
		errs    []ObjectError
	}

	snap atomic.Pointer[Snapshot]
}

// originState is what one origin holds.
type originState struct {
	objs map[Key]*Object       // in force: valid, or the last valid version of a rejected key
	errs map[Key][]ObjectError // by object; Key{} for errors tied to no object
}

// NewStore returns an empty store that admits objects validate accepts;
// validate may be nil to admit everything decoded. log receives rejected
// objects as they appear; nil discards.
func NewStore(validate Validator, log *slog.Logger) *Store {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		validate:  validate,
		log:       log,
		origins:   make(map[string]*originState),
		holders:   make(map[Key][]string),
		conflicts: make(map[Key][]ObjectError),
	}
	s.snap.Store(&Snapshot{kinds: map[Kind]*kindTable{}})
	return s
}

// SetPreferred makes the origins for which prefer reports true win over
// the others when both declare an object: the local mesh's `skiff apply`
// over the directory it was started on, as kubectl apply replaces what a
// manifest created. Call it before objects arrive.
func (s *Store) SetPreferred(prefer func(origin string) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.preferred = prefer
}

// holderOrder sorts the origins declaring one key: preferred ones first,
// then by name.
func (s *Store) holderOrder(a, b string) int {
	if s.preferred != nil {
		pa, pb := s.preferred(a), s.preferred(b)
		if pa != pb {
			if pa {
				return -1
			}
			return 1
		}
	}
	return strings.Compare(a, b)
}

// SetReferenceChecker installs fn, which looks across all objects (a
// VirtualService naming a missing Gateway, …); its findings are reported
// by Errors but reject nothing, since the objects are each valid. fn runs
// lazily, at most once per snapshot version. ErrorAt builds its results
// from an object and an error naming a field.
func (s *Store) SetReferenceChecker(fn func([]*Object) []ObjectError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refCheck = fn
	s.refCache.errs, s.refCache.version = nil, 0
}

// Snapshot returns the current config. It is immutable and cheap to take.
func (s *Store) Snapshot() *Snapshot { return s.snap.Load() }

// validated is one incoming object with what the validator said.
type validated struct {
	obj      *Object
	errs     []ObjectError
	rejected bool
}

func (s *Store) check(o *Object) validated {
	v := validated{obj: o}
	if s.validate == nil {
		return v
	}
	err := s.validate(o)
	if err == nil {
		return v
	}
	list := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	}
	for _, e := range list {
		oe := ErrorAt(o, e)
		if !oe.Warning {
			v.rejected = true
		}
		v.errs = append(v.errs, oe)
	}
	return v
}

// leadingPathRE matches a field path at the start of a validator's message.
var leadingPathRE = regexp.MustCompile(`^((?:metadata|spec|status|apiVersion|kind)(?:[.\[][^:\s]*)?): (.*)$`)

// ErrorAt turns an error about o into an ObjectError placed on the line of
// the field it names. The field comes from interface{ FieldPath() string }
// or from the text ("spec.http[0].route: weights sum to 90"); the error is
// a warning if it says so through interface{ IsWarning() bool } or a
// leading "warning: ". validation.FieldError works either way.
func ErrorAt(o *Object, e error) ObjectError {
	oe := ObjectError{Pos: o.Source, Key: o.Key(), Message: e.Error()}
	var w interface{ IsWarning() bool }
	if errors.As(e, &w) && w.IsWarning() {
		oe.Warning = true
	}
	if rest, ok := strings.CutPrefix(oe.Message, "warning: "); ok {
		oe.Warning, oe.Message = true, rest
	}
	var fp interface{ FieldPath() string }
	if errors.As(e, &fp) {
		oe.Path = fp.FieldPath()
		oe.Message = strings.TrimPrefix(oe.Message, oe.Path+": ")
	} else if m := leadingPathRE.FindStringSubmatch(oe.Message); m != nil {
		oe.Path, oe.Message = m[1], m[2]
	}
	if l := o.FieldLine(oe.Path); l != 0 {
		oe.Pos.Line = l
	}
	return oe
}

// Replace implements Sink.
func (s *Store) Replace(origin string, objs []*Object, errs []error) {
	checked := make([]validated, len(objs))
	for i, o := range objs {
		checked[i] = s.check(o)
	}

	s.mu.Lock()
	st := s.origins[origin]
	if st == nil {
		st = &originState{objs: map[Key]*Object{}, errs: map[Key][]ObjectError{}}
	}
	newErrs := map[Key][]ObjectError{}
	unreadable, unattributed := false, false
	failed := map[Key]bool{}
	for _, err := range errs {
		oe := asObjectError(err)
		unreadable = unreadable || oe.Unreadable
		k := Key{}
		if oe.Key.Name != "" {
			k = oe.Key
			failed[k] = true
		} else {
			unattributed = true
		}
		newErrs[k] = append(newErrs[k], oe)
	}
	var changed []Key
	if unreadable {
		// Keep everything the origin held; only its errors are news.
		s.setErrors(origin, st, newErrs)
		s.origins[origin] = st
	} else {
		newObjs := make(map[Key]*Object, len(objs))
		for _, v := range checked {
			k := v.obj.Key()
			if prev, dup := newObjs[k]; dup {
				newErrs[k] = append(newErrs[k], duplicateError(v.obj, prev, origin))
				continue
			}
			newErrs[k] = append(newErrs[k], v.errs...)
			if v.rejected {
				failed[k] = true
				continue
			}
			if old := st.objs[k]; old != nil && sameContent(old, v.obj) && old.Source == v.obj.Source {
				v.obj = old // an unchanged document of a reread file
			}
			newObjs[k] = v.obj
		}
		for k, o := range st.objs {
			// A document that failed without a name (a misspelt kind, …)
			// may be any of the origin's objects: keep them all until the
			// origin reads cleanly.
			if _, ok := newObjs[k]; !ok && (failed[k] || unattributed) {
				newObjs[k] = o
			}
		}
		for k, o := range st.objs {
			if newObjs[k] != o {
				changed = append(changed, k)
			}
		}
		for k := range newObjs {
			if st.objs[k] == nil {
				changed = append(changed, k)
			}
		}
		for _, k := range changed {
			s.setHolder(k, origin, newObjs[k] != nil)
		}
		st.objs = newObjs
		s.setErrors(origin, st, newErrs)
		if len(objs) == 0 && len(errs) == 0 {
			delete(s.origins, origin)
		} else {
			s.origins[origin] = st
		}
	}
	s.apply(changed)
}

// Upsert implements Sink.
func (s *Store) Upsert(origin string, o *Object) {
	v := s.check(o)
	k := o.Key()
	s.mu.Lock()
	st := s.origins[origin]
	if st == nil {
		st = &originState{objs: map[Key]*Object{}, errs: map[Key][]ObjectError{}}
		s.origins[origin] = st
	}
	errs := copyErrs(st.errs)
	delete(errs, k)
	if len(v.errs) > 0 {
		errs[k] = v.errs
	}
	s.setErrors(origin, st, errs)
	var changed []Key
	if !v.rejected && st.objs[k] != o {
		st.objs[k] = o
		s.setHolder(k, origin, true)
		changed = []Key{k}
	}
	s.apply(changed)
}

// Delete implements Sink.
func (s *Store) Delete(origin string, k Key) {
	s.mu.Lock()
	var changed []Key
	if st := s.origins[origin]; st != nil {
		errs := copyErrs(st.errs)
		delete(errs, k)
		s.setErrors(origin, st, errs)
		if _, ok := st.objs[k]; ok {
			delete(st.objs, k)
			s.setHolder(k, origin, false)
			changed = []Key{k}
		}
		if len(st.objs) == 0 && len(st.errs) == 0 {
			delete(s.origins, origin)
		}
	}
	s.apply(changed)
}

func copyErrs(m map[Key][]ObjectError) map[Key][]ObjectError {
	out := make(map[Key][]ObjectError, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func asObjectError(err error) ObjectError {
	var oe *ObjectError
	if errors.As(err, &oe) {
		return *oe
	}
	var v ObjectError
	if errors.As(err, &v) {
		return v
	}
	return ObjectError{Message: err.Error()}
}

func duplicateError(dup, first *Object, origin string) ObjectError {
	return ObjectError{Pos: dup.Source, Key: dup.Key(),
		Message: "also declared at " + where(first, origin) + ", which is in force; this one is ignored: rename or delete one of them"}
}

// where names an object's place for messages: its file position, or the
// origin it came from.
func where(o *Object, origin string) string {
	if p := o.Source.String(); p != "" {
		return p
	}
	return origin
}

// setErrors replaces an origin's errors, logging those that are new.
func (s *Store) setErrors(origin string, st *originState, errs map[Key][]ObjectError) {
	for k, list := range errs {
		if len(list) == 0 {
			delete(errs, k)
			continue
		}
		for _, e := range list {
			if !slices.Contains(st.errs[k], e) {
				s.log.Warn("config problem", "origin", origin, "error", e.Error())
			}
		}
	}
	st.errs = errs
}

// setHolder records whether origin holds a valid object for k.
func (s *Store) setHolder(k Key, origin string, holds bool) {
	h := s.holders[k]
	i, found := slices.BinarySearchFunc(h, origin, s.holderOrder)
	switch {
	case holds && !found:
		h = slices.Insert(slices.Clone(h), i, origin)
	case !holds && found:
		h = slices.Delete(slices.Clone(h), i, i+1)
	}
	if len(h) == 0 {
		delete(s.holders, k)
	} else {
		s.holders[k] = h
	}
}

// apply settles which object is in force for each key in keys, publishes a
// new snapshot if anything changed, and unlocks s.mu.
func (s *Store) apply(keys []Key) {
	old := s.snap.Load()
	var next map[Kind]*kindTable
	var changed []Key
	for _, k := range keys {
		var winner *Object
		delete(s.conflicts, k)
		if h := s.holders[k]; len(h) > 0 {
			winner = s.origins[h[0]].objs[k]
			for _, other := range h[1:] {
				o := s.origins[other].objs[k]
				if s.preferred != nil && s.preferred(h[0]) && !s.preferred(other) {
					s.conflicts[k] = append(s.conflicts[k], ObjectError{Pos: o.Source, Key: k,
						Message: "replaced by the one applied from " + where(winner, h[0]) + ", which is in force; deleting that one restores this"})
					continue
				}
				s.conflicts[k] = append(s.conflicts[k], duplicateError(o, winner, h[0]))
			}
		}
		prev := old.Get(k)
		if prev == winner {
			continue
		}
		if next == nil {
			next = make(map[Kind]*kindTable, len(old.kinds)+1)
			for kk, t := range old.kinds {
				next[kk] = t
			}
		}
		t := next[k.Kind]
		if t == nil || t == old.kinds[k.Kind] {
			nt := &kindTable{objs: make(map[Key]*Object, len(objsOf(t))+1)}
			for kk, o := range objsOf(t) {
				nt.objs[kk] = o
			}
			t = nt
			next[k.Kind] = t
		}
		if winner == nil {
			delete(t.objs, k)
		} else {
			t.objs[k] = winner
		}
		if winner == nil || prev == nil || !sameContent(prev, winner) {
			changed = append(changed, k)
		}
	}
	if next == nil {
		s.mu.Unlock()
		return
	}
	for k, t := range next {
		if len(t.objs) == 0 {
			delete(next, k)
		}
	}
	s.version++
	snap := &Snapshot{Version: s.version, kinds: next}
	s.snap.Store(snap)
	// Notifying under the lock keeps changes in version order; notify
	// itself never waits for a subscriber.
	if len(changed) > 0 { // else only positions moved (same content): nothing to push
		slices.SortFunc(changed, compareKeys)
		for _, sub := range s.subs {
			sub.notify(Change{Version: snap.Version, Keys: changed})
		}
	}
	s.mu.Unlock()
}

// sameContent reports whether two versions of an object are known to be
// equal: both carry the same non-empty resource version.
func sameContent(a, b *Object) bool {
	return a.Meta.ResourceVersion != "" && a.Meta.ResourceVersion == b.Meta.ResourceVersion
}

func objsOf(t *kindTable) map[Key]*Object {
	if t == nil {
		return nil
	}
	return t.objs
}

func compareKeys(a, b Key) int {
	return cmp.Or(
		cmp.Compare(a.Kind.Group, b.Kind.Group),
		cmp.Compare(a.Kind.Kind, b.Kind.Kind),
		cmp.Compare(a.Kind.Version, b.Kind.Version),
		cmp.Compare(a.Namespace, b.Namespace),
		cmp.Compare(a.Name, b.Name))
}

// Errors returns every current problem, sorted by file and line: objects
// rejected (their previous version, if any, still in force), origins that
// could not be read, keys declared twice, warnings, and the reference
// checker's findings for the current snapshot.
func (s *Store) Errors() []ObjectError {
	s.mu.Lock()
	var out []ObjectError
	for _, st := range s.origins {
		for _, list := range st.errs {
			out = append(out, list...)
		}
	}
	for _, list := range s.conflicts {
		out = append(out, list...)
	}
	snap := s.snap.Load()
	check := s.refCheck
	refs, fresh := s.refCache.errs, s.refCache.version == snap.Version && s.refCache.errs != nil
	s.mu.Unlock()
	if check != nil && !fresh {
		// Run outside the lock: a slow checker must not hold up sources.
		refs = append([]ObjectError{}, check(snap.All())...)
		s.mu.Lock()
		s.refCache.version, s.refCache.errs = snap.Version, refs
		s.mu.Unlock()
	}
	if check != nil {
		out = append(out, refs...)
	}
	slices.SortFunc(out, func(a, b ObjectError) int {
		return cmp.Or(
			cmp.Compare(a.Pos.File, b.Pos.File),
			cmp.Compare(a.Pos.Line, b.Pos.Line),
			compareKeys(a.Key, b.Key),
			cmp.Compare(a.Error(), b.Error()))
	})
	return out
}

// Subscribe calls fn after each applied change. Contract: fn never blocks
// the store: each subscriber has its own delivery goroutine, started when
// there is something to deliver and gone when there is not, so fn may take
// its time; changes that arrive meanwhile are merged into one Change (the
// latest Version, the union of Keys), so fn sees every changed key, in
// order, though not every intermediate version. fn should read the config
// from Snapshot(), whose Version is at least Change.Version.
func (s *Store) Subscribe(fn func(Change)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subs = append(slices.Clone(s.subs), &subscriber{fn: fn})
}

type subscriber struct {
	fn      func(Change)
	mu      sync.Mutex
	pending *Change
	running bool
}

func (sub *subscriber) notify(c Change) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if sub.pending == nil {
		sub.pending = &c
	} else {
		sub.pending.Version = c.Version
		sub.pending.Keys = mergeKeys(sub.pending.Keys, c.Keys)
	}
	if !sub.running {
		sub.running = true
		go sub.drain()
	}
}

func (sub *subscriber) drain() {
	for {
		sub.mu.Lock()
		c := sub.pending
		sub.pending = nil
		if c == nil {
			sub.running = false
			sub.mu.Unlock()
			return
		}
		sub.mu.Unlock()
		sub.fn(*c)
	}
}

// mergeKeys returns the sorted union of two sorted key lists.
func mergeKeys(a, b []Key) []Key {
	out := make([]Key, 0, len(a)+len(b))
	out = append(out, a...)
	out = append(out, b...)
	slices.SortFunc(out, compareKeys)
	return slices.Compact(out)
}

// Snapshot is the config in force at one version. It is immutable: its
// objects are shared and must not be modified.
type Snapshot struct {
	Version uint64
	kinds   map[Kind]*kindTable
}

type kindTable struct {
	objs   map[Key]*Object
	once   sync.Once
	sorted []*Object
}

// List returns the objects of kind k sorted by namespace and name. The
// slice is shared: do not modify it.
func (s *Snapshot) List(k Kind) []*Object {
	t := s.kinds[k]
	if t == nil {
		return nil
	}
	t.once.Do(func() {
		t.sorted = make([]*Object, 0, len(t.objs))
		for _, o := range t.objs {
			t.sorted = append(t.sorted, o)
		}
		slices.SortFunc(t.sorted, func(a, b *Object) int {
			return cmp.Or(cmp.Compare(a.Meta.Namespace, b.Meta.Namespace), cmp.Compare(a.Meta.Name, b.Meta.Name))
		})
	})
	return t.sorted
}

// Get returns the object with key k, or nil.
func (s *Snapshot) Get(k Key) *Object {
	if t := s.kinds[k.Kind]; t != nil {
		return t.objs[k]
	}
	return nil
}

// All returns every object, by kind (in the order of their names) and then
// by namespace and name, in a new slice.
func (s *Snapshot) All() []*Object {
	ks := make([]Kind, 0, len(s.kinds))
	n := 0
	for k, t := range s.kinds {
		ks = append(ks, k)
		n += len(t.objs)
	}
	slices.SortFunc(ks, func(a, b Kind) int { return compareKeys(Key{Kind: a}, Key{Kind: b}) })
	out := make([]*Object, 0, n)
	for _, k := range ks {
		out = append(out, s.List(k)...)
	}
	return out
}

// Interface guard: the store is what sources feed.
var _ Sink = (*Store)(nil)
