package xds

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// A held list kept as shared runs holds exactly what the plain sorted list
// would, through every merge, and proxies that hold the same share runs.
func TestHeldListMatchesPlainList(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	enc := func(name, version string) *encoding { return &encoding{name: name, version: version} }
	var all []*encoding
	for i := range 3000 {
		kind := "outbound"
		if i%500 == 7 {
			kind = "inbound"
		}
		all = append(all, enc(fmt.Sprintf("%s|8080||svc-%04d", kind, i), "1"))
	}
	slices.SortFunc(all, byName)
	for round := range 200 {
		// A random subset held…
		var plain []*encoding
		for _, e := range all {
			if rng.IntN(4) > 0 {
				plain = append(plain, e)
			}
		}
		h := packHeld(plain)
		if got := h.flat(); !slices.Equal(got, plain) || h.len() != len(plain) {
			t.Fatalf("round %d: packed list holds %d, want %d", round, len(got), len(plain))
		}
		// …then a few changed or new resources merged in.
		var res []*encoding
		for range rng.IntN(5) {
			e := all[rng.IntN(len(all))]
			if !slices.ContainsFunc(res, func(x *encoding) bool { return x.name == e.name }) {
				res = append(res, enc(e.name, fmt.Sprint(round)))
			}
		}
		slices.SortFunc(res, byName)
		want := mergeHeld(plain, res)
		got := h.merge(res)
		if !slices.Equal(got.flat(), want) || got.len() != len(want) {
			t.Fatalf("round %d: merging %d into %d: got %d resources, want %d", round, len(res), len(plain), got.len(), len(want))
		}
		for _, e := range res {
			if f, ok := got.find(e.name); !ok || f != e {
				t.Fatalf("round %d: %s not found after merge", round, e.name)
			}
		}
		for _, e := range plain[:min(len(plain), 50)] {
			if f, ok := h.find(e.name); !ok || f != e {
				t.Fatalf("round %d: %s not found", round, e.name)
			}
		}
		if _, ok := h.find("outbound|8080||svc-9999"); ok {
			t.Fatalf("round %d: found a name not held", round)
		}
		// Another proxy holding the same list shares every run.
		other := packHeld(slices.Clone(plain))
		for i := range other.runs {
			if other.runs[i] != h.runs[i] {
				t.Fatalf("round %d: run %d not shared between equal lists", round, i)
			}
		}
	}
}
