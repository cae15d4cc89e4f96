package kube_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/config/kube"
	"github.com/skiff-mesh/skiff/controlplane/config/validation"
	"github.com/skiff-mesh/skiff/internal/testing/kubetest"
)

const (
	benchServices = 1000
	benchPods     = 2000
)

// BenchmarkSourceSync measures a source syncing 1000 Services and 2000
// Pods (and the EndpointSlices the controller-manager makes for them) into
// a store: the time to sync and the Go heap the source and store hold
// afterwards.
func BenchmarkSourceSync(b *testing.B) {
	env := kubetest.Start(b, kubetest.Options{ControllerManager: true})
	cs := env.Clientset(b)
	kubetest.Populate(b, cs, "load", benchServices, benchPods)

	var heap, objs float64
	b.ResetTimer()
	for range b.N {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		start := time.Now()
		src, err := kube.New(env.RESTConfig(), kube.Options{})
		if err != nil {
			b.Fatal(err)
		}
		store := config.NewStore(validation.Validate, nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); src.Run(ctx, store) }()
		select {
		case <-src.Synced():
		case <-time.After(2 * time.Minute):
			b.Fatal("source did not sync within 2 minutes")
		}
		b.StopTimer()
		elapsed := time.Since(start)
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		snap := store.Snapshot()
		if p, e := len(snap.List(config.Pod)), len(snap.List(config.EndpointSlice)); p < benchPods || e < benchServices {
			b.Fatalf("store has %d Pods and %d EndpointSlices, want %d and %d", p, e, benchPods, benchServices)
		}
		heap = float64(after.HeapAlloc) - float64(before.HeapAlloc)
		objs = float64(len(snap.All()))
		b.Logf("synced %d objects in %v; heap held %.1f MiB", len(snap.All()), elapsed.Round(time.Millisecond), heap/(1<<20))
		runtime.KeepAlive(store)
		cancel()
		<-done
		b.StartTimer()
	}
	b.ReportMetric(heap/(1<<20), "heap-MiB")
	b.ReportMetric(heap/objs, "heap-B/object")
}
