package xds

import (
	"runtime"
	"slices"
	"sort"
	"sync"
	"unsafe"
	"weak"
)

// What a delta proxy holds of a type is a sorted list of thousands of
// encodings (every cluster and load assignment of the mesh), nearly the
// same for every sidecar: 2000 proxies × 4000 pointers was 64 MB. A held
// list is therefore kept as runs cut where body cuts chunks (content-
// defined, and never across two kinds of name), each run interned and
// shared by every proxy holding the same one; a proxy's own resources
// (its inbound clusters) make a run of their own.

// run is a shared, immutable piece of a held list.
type run struct{ encs []*encoding }

// heldList is a sorted list of encodings as shared runs.
type heldList struct {
	runs []*run
	n    int
}

// runs interns runs by a hash of their encodings' identities; entries
// hold weak pointers, as chunks do.
var runs sync.Map // uint64 → weak.Pointer[run]

// packHeld returns sorted as a held list (sorted itself is not kept).
func packHeld(sorted []*encoding) heldList {
	h := heldList{n: len(sorted)}
	for _, r := range cutRuns(sorted) {
		h.runs = append(h.runs, runOf(r))
	}
	return h
}

// cutRuns splits res where body cuts chunks.
func cutRuns(res []*encoding) [][]*encoding {
	var out [][]*encoding
	for start := 0; start < len(res); {
		end := start
		for end < len(res) {
			h := ptrHash(res[end])
			end++
			if h%chunkEvery == 0 || end-start == chunkMax ||
				(end < len(res) && kindOf(res[end].name) != kindOf(res[end-1].name)) {
				break
			}
		}
		out = append(out, res[start:end])
		start = end
	}
	return out
}

func runOf(res []*encoding) *run {
	const offset, prime = 14695981039346656037, 1099511628211 // FNV-1a over pointers
	key := uint64(offset)
	for _, e := range res {
		key = (key ^ uint64(uintptr(unsafe.Pointer(e)))) * prime
	}
	if v, ok := runs.Load(key); ok {
		if r := v.(weak.Pointer[run]).Value(); r != nil && slices.Equal(r.encs, res) {
			return r
		}
	}
	r := &run{encs: slices.Clone(res)}
	wp := weak.Make(r)
	runs.Store(key, wp)
	runtime.AddCleanup(r, func(key uint64) { runs.CompareAndDelete(key, wp) }, key)
	return r
}

// len is the number of encodings held.
func (h heldList) len() int { return h.n }

// flat returns the held encodings as one new slice.
func (h heldList) flat() []*encoding {
	out := make([]*encoding, 0, h.n)
	for _, r := range h.runs {
		out = append(out, r.encs...)
	}
	return out
}

// find returns the held encoding named name.
func (h heldList) find(name string) (*encoding, bool) {
	i := sort.Search(len(h.runs), func(i int) bool {
		encs := h.runs[i].encs
		return encs[len(encs)-1].name >= name
	})
	if i == len(h.runs) {
		return nil, false
	}
	encs := h.runs[i].encs
	j, ok := slices.BinarySearchFunc(encs, name, func(e *encoding, n string) int { return cmpString(e.name, n) })
	if !ok {
		return nil, false
	}
	return encs[j], true
}

// merge returns h with res's encodings (sorted) added or replacing those of
// the same name. Runs no name of res falls into are kept as they are; the
// region that changed is cut into runs again, as other proxies' lists
// changed the same way are, so it is shared too.
func (h heldList) merge(res []*encoding) heldList {
	if len(res) == 0 {
		return h
	}
	out := heldList{runs: make([]*run, 0, len(h.runs)+2)}
	var pending []*encoding // runs touched by res, flattened, with res merged in
	flush := func() {
		for _, r := range cutRuns(pending) {
			out.runs = append(out.runs, runOf(r))
		}
		pending = pending[:0]
	}
	k := 0 // next of res
	for i, r := range h.runs {
		last := r.encs[len(r.encs)-1].name
		// res names up to this run's last (or all the rest, for the last run)
		j := k
		for j < len(res) && (res[j].name <= last || i == len(h.runs)-1) {
			j++
		}
		touches := j > k
		// A run right after a touched one is recut with it: content-
		// defined cuts may move across the old boundary.
		if !touches && len(pending) == 0 {
			out.runs = append(out.runs, r)
			continue
		}
		pending = mergeHeld(append(pending, r.encs...), res[k:j])
		k = j
		if !touches {
			flush()
		}
	}
	pending = mergeHeld(pending, res[k:])
	flush()
	for _, r := range out.runs {
		out.n += len(r.encs)
	}
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
