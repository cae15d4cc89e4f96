package memory

import (
	"context"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// A sink attached by Run first gets what the source already holds, then
// every change, synchronously.
func TestRunReplaysThenFollows(t *testing.T) {
	src := New()
	if errs := src.Apply("ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n"); len(errs) != 0 {
		t.Fatal(errs)
	}
	store := config.NewStore(nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, store) }()
	a := config.Key{Kind: config.Namespace, Name: "a"}
	for deadline := time.Now().Add(5 * time.Second); store.Snapshot().Get(a) == nil; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("replay not seen after 5s")
		}
	}
	src.Delete("ns.yaml", a)
	if store.Snapshot().Get(a) != nil {
		t.Error("delete not applied synchronously")
	}
	errs := src.Apply("bad.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: b, labelz: {}}\n")
	want := `bad.yaml:3: Namespace b: metadata.labelz: unknown field "labelz"`
	if len(errs) != 1 || errs[0].Error() != want || len(store.Errors()) != 1 || store.Errors()[0].Error() != want {
		t.Errorf("errors %v, store %v", errs, store.Errors())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(5 * time.Second):
		t.Error("Run did not return 5s after cancel")
	}
}
