package config_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/config/memory"
)

// fieldErr is a validator error that names its field the structured way.
type fieldErr struct{ path, msg string }

func (e *fieldErr) Error() string     { return e.path + ": " + e.msg }
func (e *fieldErr) FieldPath() string { return e.path }

// warnErr is a finding that must not reject the object.
type warnErr struct{ msg string }

func (e *warnErr) Error() string   { return e.msg }
func (e *warnErr) IsWarning() bool { return true }

// validateWeights stands in for the validation package: weights of a
// split route must sum to 100 (reported as "path: message" text, as
// validation.FieldError renders), a subset named "bad" is refused through
// FieldPath, and a wildcard host is only a warning.
func validateWeights(o *config.Object) error {
	vs, ok := o.Spec.(*networking.VirtualService)
	if !ok {
		return nil
	}
	var errs []error
	for i, h := range vs.Http {
		sum := 0
		for j, r := range h.Route {
			sum += int(r.Weight)
			if r.Destination.GetSubset() == "bad" {
				errs = append(errs, &fieldErr{fmt.Sprintf("spec.http[%d].route[%d].destination.subset", i, j), `"bad" is not a subset name`})
			}
		}
		if len(h.Route) > 1 && sum != 100 {
			errs = append(errs, fmt.Errorf("spec.http[%d].route: weights sum to %d; make them sum to 100", i, sum))
		}
	}
	if slices.Contains(vs.Hosts, "*") {
		errs = append(errs, &warnErr{"spec.hosts[0]: a wildcard host matches every service"})
	}
	return errors.Join(errs...)
}

func vs(name string, w1, w2 int) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: %s
spec:
  hosts: [%s]
  http:
  - route:
    - destination: {host: %s, subset: v1}
      weight: %d
    - destination: {host: %s, subset: v2}
      weight: %d
`, name, name, name, w1, name, w2)
}

func vsKey(name string) config.Key {
	return config.Key{Kind: config.VirtualService, Namespace: "default", Name: name}
}

func weights(t *testing.T, s *config.Snapshot, name string) [2]uint32 {
	t.Helper()
	o := s.Get(vsKey(name))
	if o == nil {
		t.Fatalf("%s not in snapshot %d", name, s.Version)
	}
	r := o.Spec.(*networking.VirtualService).Http[0].Route
	return [2]uint32{uint32(r[0].Weight), uint32(r[1].Weight)}
}

func errorStrings(errs []config.ObjectError) []string {
	out := make([]string, len(errs))
	for i, e := range errs {
		out[i] = e.Error()
	}
	return out
}

func TestStoreKeepsPreviousGoodObject(t *testing.T) {
	store := config.NewStore(validateWeights, nil)
	src := memory.New(store)
	if errs := src.Apply("vs.yaml", vs("reviews", 80, 20)+"---\n"+vs("ratings", 50, 50)); len(errs) != 0 {
		t.Fatal(errs)
	}
	first := store.Snapshot()

	// Break reviews, change ratings: ratings applies, reviews keeps 80/20.
	src.Apply("vs.yaml", vs("reviews", 80, 10)+"---\n"+vs("ratings", 30, 70))
	snap := store.Snapshot()
	if got := weights(t, snap, "reviews"); got != [2]uint32{80, 20} {
		t.Errorf("reviews: %v, want the previous 80/20", got)
	}
	if got := weights(t, snap, "ratings"); got != [2]uint32{30, 70} {
		t.Errorf("ratings: %v, want 30/70", got)
	}
	want := []string{"vs.yaml:8: VirtualService default/reviews: spec.http[0].route: weights sum to 90; make them sum to 100"}
	if got := errorStrings(store.Errors()); !slices.Equal(got, want) {
		t.Errorf("errors\n got: %q\nwant: %q", got, want)
	}
	// The old snapshot is untouched.
	if got := weights(t, first, "ratings"); got != [2]uint32{50, 50} || snap.Version <= first.Version {
		t.Errorf("old snapshot changed: %v, versions %d → %d", got, first.Version, snap.Version)
	}

	// An unknown field is a decode error: reviews still keeps 80/20.
	src.Apply("vs.yaml", strings.Replace(vs("reviews", 60, 40), "subset: v1", "subsett: v1", 1)+"---\n"+vs("ratings", 30, 70))
	if got := weights(t, store.Snapshot(), "reviews"); got != [2]uint32{80, 20} {
		t.Errorf("reviews after a decode error: %v", got)
	}
	want = []string{`vs.yaml:9: VirtualService default/reviews: spec.http[0].route[0].destination.subsett: unknown field "subsett"`}
	if got := errorStrings(store.Errors()); !slices.Equal(got, want) {
		t.Errorf("errors\n got: %q\nwant: %q", got, want)
	}

	// A misspelt kind could be any object of the file: all stay, and the
	// removal of ratings waits until the file reads cleanly.
	src.Apply("vs.yaml", strings.Replace(vs("reviews", 60, 40), "kind: VirtualService", "kind: VirtualServce", 1))
	if got := weights(t, store.Snapshot(), "reviews"); got != [2]uint32{80, 20} || store.Snapshot().Get(vsKey("ratings")) == nil {
		t.Errorf("after a misspelt kind: reviews %v, ratings %v", got, store.Snapshot().Get(vsKey("ratings")))
	}
	if got := errorStrings(store.Errors()); len(got) != 1 || !strings.HasPrefix(got[0], `vs.yaml:2: unknown kind "VirtualServce"`) {
		t.Errorf("errors %q", got)
	}

	// A YAML syntax error keeps every object of the file.
	before := store.Snapshot()
	src.Apply("vs.yaml", "apiVersion: v1\nkind: [\n")
	if store.Snapshot() != before {
		t.Errorf("a syntax error changed the config")
	}
	want = []string{"vs.yaml:3: YAML syntax error: did not find expected node content"}
	if got := errorStrings(store.Errors()); !slices.Equal(got, want) {
		t.Errorf("errors\n got: %q\nwant: %q", got, want)
	}

	// Fixing the file clears the errors; removing it removes its objects.
	src.Apply("vs.yaml", vs("reviews", 60, 40))
	if got := weights(t, store.Snapshot(), "reviews"); got != [2]uint32{60, 40} || store.Snapshot().Get(vsKey("ratings")) != nil {
		t.Errorf("after the fix: reviews %v, ratings %v", got, store.Snapshot().Get(vsKey("ratings")))
	}
	if errs := store.Errors(); len(errs) != 0 {
		t.Errorf("errors after the fix: %v", errs)
	}
	src.Remove("vs.yaml")
	if all := store.Snapshot().All(); len(all) != 0 {
		t.Errorf("objects after removal: %d", len(all))
	}
}

func TestStoreFieldPathsAndWarnings(t *testing.T) {
	store := config.NewStore(validateWeights, nil)
	src := memory.New(store)
	src.Apply("a.yaml", strings.Replace(vs("reviews", 50, 50), "hosts: [reviews]", "hosts: ['*']", 1)+"---\n"+
		strings.Replace(vs("ratings", 50, 50), "subset: v2", "subset: bad", 1))
	want := []string{
		"a.yaml:6: warning: VirtualService default/reviews: spec.hosts[0]: a wildcard host matches every service",
		`a.yaml:24: VirtualService default/ratings: spec.http[0].route[1].destination.subset: "bad" is not a subset name`,
	}
	if got := errorStrings(store.Errors()); !slices.Equal(got, want) {
		t.Errorf("errors\n got: %q\nwant: %q", got, want)
	}
	snap := store.Snapshot()
	if snap.Get(vsKey("reviews")) == nil || snap.Get(vsKey("ratings")) != nil {
		t.Errorf("a warning must admit reviews and an error reject ratings: %v", snap.All())
	}
}

func TestStoreSameKeyInTwoFiles(t *testing.T) {
	store := config.NewStore(nil, nil)
	src := memory.New(store)
	src.Apply("b.yaml", vs("reviews", 10, 90))
	src.Apply("a.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n"+vs("reviews", 20, 80))
	// a.yaml sorts first, so it wins whichever arrived first.
	if got := weights(t, store.Snapshot(), "reviews"); got != [2]uint32{20, 80} {
		t.Errorf("in force: %v, want a.yaml's 20/80", got)
	}
	want := []string{"b.yaml:1: VirtualService default/reviews: also declared at a.yaml:5, which is in force; this one is ignored: rename or delete one of them"}
	if got := errorStrings(store.Errors()); !slices.Equal(got, want) {
		t.Errorf("errors\n got: %q\nwant: %q", got, want)
	}
	// Within one file, the first declaration wins.
	src.Apply("c.yaml", vs("details", 50, 50)+"---\n"+vs("details", 0, 100))
	if got := weights(t, store.Snapshot(), "details"); got != [2]uint32{50, 50} {
		t.Errorf("details %v", got)
	}
	if got := errorStrings(store.Errors()); len(got) != 2 || got[1] != "c.yaml:14: VirtualService default/details: also declared at c.yaml:1, which is in force; this one is ignored: rename or delete one of them" {
		t.Errorf("errors %q", got)
	}
	src.Remove("c.yaml")

	// Removing a.yaml hands reviews to b.yaml.
	src.Remove("a.yaml")
	if got := weights(t, store.Snapshot(), "reviews"); got != [2]uint32{10, 90} {
		t.Errorf("after removing a.yaml: %v", got)
	}
	if errs := store.Errors(); len(errs) != 0 {
		t.Errorf("errors: %v", errs)
	}
}

// A preferred origin wins over the others whatever the names, as the
// local mesh's `skiff apply` replaces what its directory declared; when
// it lets go, the other declaration is in force again.
func TestStorePreferredOriginWins(t *testing.T) {
	store := config.NewStore(nil, nil)
	store.SetPreferred(func(origin string) bool { return strings.HasPrefix(origin, "z-applied") })
	src := memory.New(store)
	src.Apply("a.yaml", vs("reviews", 10, 90))
	src.Apply("z-applied.yaml", vs("reviews", 70, 30))
	if got := weights(t, store.Snapshot(), "reviews"); got != [2]uint32{70, 30} {
		t.Errorf("in force: %v, want the preferred origin's 70/30", got)
	}
	want := []string{"a.yaml:1: VirtualService default/reviews: replaced by the one applied from z-applied.yaml:1, which is in force; deleting that one restores this"}
	if got := errorStrings(store.Errors()); !slices.Equal(got, want) {
		t.Errorf("errors\n got: %q\nwant: %q", got, want)
	}
	src.Remove("z-applied.yaml")
	if got := weights(t, store.Snapshot(), "reviews"); got != [2]uint32{10, 90} {
		t.Errorf("after the preferred origin let go: %v, want a.yaml's 10/90", got)
	}
}

// recorder collects the changes a subscriber sees.
type recorder struct {
	mu      sync.Mutex
	changes []config.Change
	got     chan struct{} // wake-ups for waitFor
}

func newRecorder(s *config.Store) *recorder {
	r := &recorder{got: make(chan struct{}, 1)}
	s.Subscribe(func(c config.Change) {
		r.mu.Lock()
		r.changes = append(r.changes, c)
		r.mu.Unlock()
		select {
		case r.got <- struct{}{}:
		default: // a wake-up is already pending
		}
	})
	return r
}

// waitFor returns every change seen once one with version v arrived, or
// fails after 5s.
func (r *recorder) waitFor(t *testing.T, v uint64) []config.Change {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		r.mu.Lock()
		got := slices.Clone(r.changes)
		r.mu.Unlock()
		if len(got) > 0 && got[len(got)-1].Version == v {
			return got
		}
		select {
		case <-r.got:
		case <-deadline:
			t.Fatalf("waited 5s for version %d; got %+v", v, got)
		}
	}
}

func TestStoreChangesListOnlyWhatChanged(t *testing.T) {
	store := config.NewStore(nil, nil)
	rec := newRecorder(store)
	src := memory.New(store)
	src.Apply("f.yaml", vs("reviews", 50, 50)+"---\n"+vs("ratings", 50, 50))
	rec.waitFor(t, 1)
	src.Apply("f.yaml", vs("reviews", 50, 50)+"---\n"+vs("ratings", 40, 60))
	rec.waitFor(t, 2)
	// Same content moved down two lines: a new snapshot, nothing to push.
	src.Apply("f.yaml", "\n\n"+vs("reviews", 50, 50)+"---\n"+vs("ratings", 40, 60))
	if o := store.Snapshot().Get(vsKey("ratings")); store.Snapshot().Version != 3 || o.Source.Line != 16 {
		t.Errorf("version %d, ratings at %v", store.Snapshot().Version, o.Source)
	}
	src.Apply("f.yaml", vs("ratings", 40, 60))
	got := rec.waitFor(t, 4)
	want := []config.Change{
		{Version: 1, Keys: []config.Key{vsKey("ratings"), vsKey("reviews")}},
		{Version: 2, Keys: []config.Key{vsKey("ratings")}},
		{Version: 4, Keys: []config.Key{vsKey("reviews")}},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("changes\n got: %+v\nwant: %+v", got, want)
	}
	// Reapplying identical content is no change at all.
	v := store.Snapshot()
	src.Apply("f.yaml", vs("ratings", 40, 60))
	if store.Snapshot() != v {
		t.Errorf("identical content made a new snapshot")
	}
}

// A subscriber that takes its time holds up neither sources nor readers;
// what changed meanwhile reaches it merged.
func TestStoreSlowSubscriber(t *testing.T) {
	store := config.NewStore(nil, nil)
	release := make(chan struct{})
	var mu sync.Mutex
	var seen []config.Change
	done := make(chan struct{}, 10)
	store.Subscribe(func(c config.Change) {
		<-release
		mu.Lock()
		seen = append(seen, c)
		mu.Unlock()
		done <- struct{}{}
	})
	src := memory.New(store)
	applied := make(chan struct{})
	go func() {
		src.Apply("a.yaml", vs("a", 50, 50))
		src.Apply("b.yaml", vs("b", 50, 50))
		src.Apply("c.yaml", vs("c", 50, 50))
		close(applied)
	}()
	select {
	case <-applied:
	case <-time.After(5 * time.Second):
		t.Fatal("a blocked subscriber blocked the store")
	}
	close(release)
	deadline := time.After(5 * time.Second)
	for {
		mu.Lock()
		n, last := len(seen), config.Change{}
		if n > 0 {
			last = seen[n-1]
		}
		mu.Unlock()
		if last.Version == 3 {
			var keys []config.Key
			for i, c := range seen {
				if i > 0 && c.Version <= seen[i-1].Version {
					t.Errorf("versions out of order: %+v", seen)
				}
				keys = append(keys, c.Keys...)
			}
			if !slices.Equal(keys, []config.Key{vsKey("a"), vsKey("b"), vsKey("c")}) {
				t.Errorf("deliveries %+v", seen)
			}
			return
		}
		select {
		case <-done:
		case <-deadline:
			t.Fatalf("deliveries after 5s: %+v", seen)
		}
	}
}

func TestStoreIncrementalUpserts(t *testing.T) {
	store := config.NewStore(validateWeights, nil)
	src := memory.New(store)
	good, _ := config.Decode([]byte(vs("reviews", 50, 50)), "")
	bad, _ := config.Decode([]byte(vs("reviews", 50, 40)), "")
	good[0].Source, bad[0].Source = config.Position{}, config.Position{}
	src.Upsert("kubernetes", good[0])
	src.Upsert("kubernetes", bad[0])
	if got := weights(t, store.Snapshot(), "reviews"); got != [2]uint32{50, 50} {
		t.Errorf("after a bad upsert: %v", got)
	}
	want := []string{"VirtualService default/reviews: spec.http[0].route: weights sum to 90; make them sum to 100"}
	if got := errorStrings(store.Errors()); !slices.Equal(got, want) {
		t.Errorf("errors %q", got)
	}
	src.Delete("kubernetes", vsKey("reviews"))
	if store.Snapshot().Get(vsKey("reviews")) != nil || len(store.Errors()) != 0 {
		t.Errorf("after delete: %v, %v", store.Snapshot().All(), store.Errors())
	}
}

func TestStoreReferenceChecker(t *testing.T) {
	store := config.NewStore(nil, nil)
	calls := 0
	store.SetReferenceChecker(func(objs []*config.Object) []config.ObjectError {
		calls++
		var errs []config.ObjectError
		for _, o := range objs {
			if gws := o.Spec.(*networking.VirtualService).Gateways; len(gws) > 0 {
				errs = append(errs, config.ErrorAt(o, fmt.Errorf("spec.gateways[0]: gateway %q not found", gws[0])))
			}
		}
		return errs
	})
	src := memory.New(store)
	src.Apply("g.yaml", strings.Replace(vs("reviews", 50, 50), "  http:", "  gateways: [bookinfo-gateway]\n  http:", 1))
	want := []string{`g.yaml:7: VirtualService default/reviews: spec.gateways[0]: gateway "bookinfo-gateway" not found`}
	for range 2 {
		if got := errorStrings(store.Errors()); !slices.Equal(got, want) {
			t.Errorf("errors %q", got)
		}
	}
	if calls != 1 || store.Snapshot().Get(vsKey("reviews")) == nil {
		t.Errorf("checker ran %d times for one snapshot; a reference error must not reject", calls)
	}
}

// Sources and readers at once: every reader sees a consistent snapshot and
// versions only grow; at the end each origin's last write is in force.
func TestStoreConcurrentSources(t *testing.T) {
	store := config.NewStore(validateWeights, nil)
	rec := newRecorder(store)
	const origins, rounds = 4, 50
	var wg sync.WaitGroup
	for g := range origins {
		wg.Go(func() {
			name := fmt.Sprintf("s%d", g)
			for r := range rounds {
				objs, errs := config.Decode([]byte(vs(name, r, 100-r)), name+".yaml")
				store.Replace(name+".yaml", objs, errs)
			}
		})
	}
	stop := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		var last uint64
		for i := 0; i < 100000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			snap := store.Snapshot()
			if snap.Version < last {
				t.Errorf("version went back from %d to %d", last, snap.Version)
				return
			}
			last = snap.Version
			for _, o := range snap.List(config.VirtualService) {
				if snap.Get(o.Key()) != o {
					t.Errorf("snapshot %d: List and Get disagree on %v", snap.Version, o.Key())
					return
				}
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-readerDone
	snap := store.Snapshot()
	for g := range origins {
		if got := weights(t, snap, fmt.Sprintf("s%d", g)); got != [2]uint32{rounds - 1, 101 - rounds} {
			t.Errorf("s%d: %v", g, got)
		}
	}
	if snap.Version != origins*rounds {
		t.Errorf("version %d, want one per applied change: %d", snap.Version, origins*rounds)
	}
	rec.waitFor(t, snap.Version)
}
