package file

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// spy forwards to a store and remembers every call, so a test can prove a
// file's objects were never removed, not even for a moment.
type spy struct {
	config.Sink
	mu      sync.Mutex
	removed []string // origins replaced with nothing
	reads   map[string]int
}

func (s *spy) Replace(origin string, objs []*config.Object, errs []error) {
	s.mu.Lock()
	if len(objs) == 0 && len(errs) == 0 {
		s.removed = append(s.removed, origin)
	}
	s.reads[origin]++
	s.mu.Unlock()
	s.Sink.Replace(origin, objs, errs)
}

func (s *spy) removals() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.removed)
}

func (s *spy) readCount(origin string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads[origin]
}

func namespace(name string, labels string) string {
	return "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: " + name + "\n  labels: {" + labels + "}\n"
}

func nsKey(name string) config.Key { return config.Key{Kind: config.Namespace, Name: name} }

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond every 5ms for at most 5s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("after 5s: %s", what)
}

func start(t *testing.T, dir string) (*config.Store, *spy) {
	t.Helper()
	store := config.NewStore(nil, nil)
	sp := &spy{Sink: store, reads: map[string]int{}}
	src := New(dir, Options{Debounce: 20 * time.Millisecond, DeleteGrace: 300 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, sp) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return 5s after cancel")
		}
	})
	select {
	case <-src.Synced():
	case <-time.After(5 * time.Second):
		t.Fatal("not synced after 5s")
	}
	return store, sp
}

func label(s *config.Store, name string) string {
	o := s.Snapshot().Get(nsKey(name))
	if o == nil {
		return "<absent>"
	}
	return o.Meta.Labels["v"]
}

func TestFileSourceFollowsTheDirectory(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), namespace("a", "v: '1'"))
	write(t, filepath.Join(dir, "sub", "b.yml"), namespace("b", "v: '1'"))
	write(t, filepath.Join(dir, "notes.txt"), "not config")
	write(t, filepath.Join(dir, ".hidden.yaml"), namespace("hidden", ""))
	store, sp := start(t, dir)

	if label(store, "a") != "1" || label(store, "b") != "1" || len(store.Snapshot().All()) != 2 {
		t.Fatalf("initial objects: %v", store.Snapshot().All())
	}
	if o := store.Snapshot().Get(nsKey("b")); o.Source != (config.Position{File: filepath.Join(dir, "sub", "b.yml"), Line: 1}) {
		t.Errorf("b from %v", o.Source)
	}

	// Modify in place.
	write(t, filepath.Join(dir, "a.yaml"), namespace("a", "v: '2'"))
	eventually(t, "a.yaml modified", func() bool { return label(store, "a") == "2" })

	// Create, in a new subdirectory too.
	write(t, filepath.Join(dir, "c.json"), `{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "c"}}`)
	write(t, filepath.Join(dir, "new", "deeper", "d.yaml"), namespace("d", "v: '1'"))
	eventually(t, "c.json and new/deeper/d.yaml created", func() bool {
		return label(store, "c") == "" && label(store, "d") == "1"
	})

	// Rename: the object moves to its new file.
	if err := os.Rename(filepath.Join(dir, "a.yaml"), filepath.Join(dir, "renamed.yaml")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a.yaml renamed", func() bool {
		o := store.Snapshot().Get(nsKey("a"))
		return o != nil && o.Source.File == filepath.Join(dir, "renamed.yaml")
	})

	// Delete.
	if err := os.Remove(filepath.Join(dir, "sub", "b.yml")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b.yml deleted", func() bool { return label(store, "b") == "<absent>" })
	// The rename removed a.yaml's origin (its object now comes from renamed.yaml).
	if got := sp.removals(); !slices.Equal(got, []string{filepath.Join(dir, "a.yaml"), filepath.Join(dir, "sub", "b.yml")}) {
		t.Errorf("removed origins %v", got)
	}
	if sp.readCount(filepath.Join(dir, "c.json")) != 1 {
		t.Errorf("c.json read %d times; unchanged files must not be reread", sp.readCount(filepath.Join(dir, "c.json")))
	}
}

// Editors save by writing a temporary file and renaming it over the old
// one, or by moving the old one aside first; neither may remove the
// file's objects, even briefly.
func TestFileSourceEditorSaves(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ns.yaml")
	write(t, path, namespace("a", "v: '1'"))
	store, sp := start(t, dir)

	// Atomic rename save.
	write(t, filepath.Join(dir, ".ns.yaml.tmp"), namespace("a", "v: '2'"))
	if err := os.Rename(filepath.Join(dir, ".ns.yaml.tmp"), path); err != nil {
		t.Fatal(err)
	}
	eventually(t, "atomic save seen", func() bool { return label(store, "a") == "2" })

	// vim's backup dance: move aside, write anew, delete the backup.
	if err := os.Rename(path, path+"~"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // past the debounce, within the grace: a scan sees the file missing
	write(t, path, namespace("a", "v: '3'"))
	if err := os.Remove(path + "~"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "backup-style save seen", func() bool { return label(store, "a") == "3" })
	time.Sleep(400 * time.Millisecond) // past the grace, had a removal been pending
	if got := sp.removals(); len(got) != 0 {
		t.Errorf("objects removed during a save: %v", got)
	}
	if label(store, "a") != "3" {
		t.Errorf("label %q", label(store, "a"))
	}
}

// A file rewritten without pause is still read, at most ten debounce
// intervals after the writes began.
func TestFileSourceBusyWriter(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ns.yaml")
	write(t, path, namespace("a", "v: '0'"))
	store, _ := start(t, dir)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= 400; i++ { // 2s at most
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if err := os.WriteFile(path, []byte(namespace("a", "v: 'busy'")), 0o644); err != nil {
				t.Error(err) // not Fatal: this is not the test's goroutine
				return
			}
		}
	}()
	begin := time.Now()
	eventually(t, "busy file read", func() bool { return label(store, "a") == "busy" })
	close(stop)
	<-done
	if d := time.Since(begin); d > time.Second {
		t.Errorf("busy file read after %v", d)
	}
}

// A save with a syntax error keeps the previous objects and reports where.
func TestFileSourceBadEdit(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ns.yaml")
	write(t, path, namespace("a", "v: '1'")+"---\n"+namespace("b", "v: '1'"))
	store, _ := start(t, dir)

	write(t, path, namespace("a", "v: '2'")+"---\n"+strings.Replace(namespace("b", "v: '2'"), "name: b", "name: [b", 1))
	eventually(t, "syntax error reported", func() bool { return len(store.Errors()) == 1 })
	if got, want := store.Errors()[0].Error(), path+":10: YAML syntax error: did not find expected ',' or ']'"; got != want {
		t.Errorf("error\n got: %s\nwant: %s", got, want)
	}
	if label(store, "a") != "1" || label(store, "b") != "1" {
		t.Errorf("previous objects not kept: a=%s b=%s", label(store, "a"), label(store, "b"))
	}
	write(t, path, namespace("a", "v: '2'"))
	eventually(t, "fix applied", func() bool { return label(store, "a") == "2" && label(store, "b") == "<absent>" })
	if errs := store.Errors(); len(errs) != 0 {
		t.Errorf("errors after the fix: %v", errs)
	}
}

// A config directory that is a symlink (as a mounted volume often is) is
// followed; messages name files below the path as given.
func TestFileSourceSymlinkedDirectory(t *testing.T) {
	real := t.TempDir()
	write(t, filepath.Join(real, "ns.yaml"), namespace("a", "v: '1'"))
	link := filepath.Join(t.TempDir(), "config")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	store, _ := start(t, link)
	o := store.Snapshot().Get(nsKey("a"))
	if o == nil || o.Source.File != filepath.Join(link, "ns.yaml") {
		t.Fatalf("object %v", o)
	}
	write(t, filepath.Join(real, "ns.yaml"), namespace("a", "v: '2'"))
	eventually(t, "change seen through the link", func() bool { return label(store, "a") == "2" })
}

// A mounted ConfigMap is updated by writing a new hidden directory and
// swapping the ..data link to it; the visible files are links through
// ..data and are never written themselves.
func TestFileSourceConfigMapUpdate(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "..2026_01", "ns.yaml"), namespace("a", "v: '1'"))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink("..2026_01", filepath.Join(dir, "..data")))
	must(os.Symlink(filepath.Join("..data", "ns.yaml"), filepath.Join(dir, "ns.yaml")))
	store, sp := start(t, dir)
	if label(store, "a") != "1" {
		t.Fatalf("initial label %q", label(store, "a"))
	}
	write(t, filepath.Join(dir, "..2026_02", "ns.yaml"), namespace("a", "v: '2'"))
	must(os.Symlink("..2026_02", filepath.Join(dir, "..data_tmp")))
	must(os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	must(os.RemoveAll(filepath.Join(dir, "..2026_01")))
	eventually(t, "the swapped ConfigMap seen", func() bool { return label(store, "a") == "2" })
	if got := sp.removals(); len(got) != 0 {
		t.Errorf("origins removed during the swap: %v", got)
	}
}

func TestFileSourceMissingDirectory(t *testing.T) {
	err := New(filepath.Join(t.TempDir(), "nope"), Options{}).Run(context.Background(), config.NewStore(nil, nil))
	if err == nil || !strings.Contains(err.Error(), "no such file or directory") {
		t.Errorf("Run on a missing directory: %v", err)
	}
}

// Transform rewrites what the sink receives and drops what it returns nil
// for, on the first read and on an edit alike.
func TestTransform(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "ns.yaml"), namespace("keep", "")+"---\n"+namespace("drop", ""))
	store := config.NewStore(nil, nil)
	src := New(dir, Options{Debounce: 20 * time.Millisecond, Transform: func(o *config.Object) *config.Object {
		if o.Meta.Name == "drop" {
			return nil
		}
		c := *o
		c.Meta.Labels = map[string]string{"seen": "yes"}
		return &c
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, store) }()
	defer func() { cancel(); <-done }()
	<-src.Synced()
	if store.Snapshot().Get(nsKey("drop")) != nil {
		t.Error("the object Transform dropped is in the store")
	}
	if o := store.Snapshot().Get(nsKey("keep")); o == nil || o.Meta.Labels["seen"] != "yes" {
		t.Fatalf("kept object = %+v, want it with Transform's label", o)
	}
	write(t, filepath.Join(dir, "ns.yaml"), namespace("other", ""))
	eventually(t, "the edited file's object transformed", func() bool {
		o := store.Snapshot().Get(nsKey("other"))
		return o != nil && o.Meta.Labels["seen"] == "yes" && store.Snapshot().Get(nsKey("keep")) == nil
	})
}
