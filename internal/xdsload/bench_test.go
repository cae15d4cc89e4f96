package xdsload_test

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/internal/xdsload"
)

var (
	benchServices = flag.Int("load.services", 1000, "services in BenchmarkFleetSync's mesh")
	benchProxies  = flag.Int("load.proxies", 500, "proxies in BenchmarkFleetSync")
)

// BenchmarkFleetSync measures what the load tool itself costs: proxies
// syncing a mesh of -load.services services × 2 endpoints from
// go-control-plane's server in this process. It reports the heap per
// proxy of both sides (the server keeps each stream's last response), an
// upper bound on the tool's own; xds-load reports its own RSS and CPU
// against skiffd.
func BenchmarkFleetSync(b *testing.B) {
	dir := b.TempDir()
	m, err := xdsload.Generate(dir, xdsload.Spec{Services: *benchServices, Endpoints: 2, Namespaces: 10, SplitEvery: 2})
	if err != nil {
		b.Fatal(err)
	}
	var objs []*config.Object
	err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasPrefix(d.Name(), ".") {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		os, errs := config.Decode(data, p)
		if len(errs) > 0 {
			return errs[0]
		}
		objs = append(objs, os...)
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	srv := startReference(b)
	snap, err := cachev3.NewSnapshot("1", meshResources(objs))
	if err != nil {
		b.Fatal(err)
	}
	pods := m.Pods[:min(*benchProxies, len(m.Pods))]
	for _, p := range pods {
		if err := srv.cache.SetSnapshot(context.Background(), xdsload.NodeFor(p).GetId(), snap); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		f, err := xdsload.StartFleet(context.Background(), pods, xdsload.FleetOptions{Addr: srv.addr})
		if err != nil {
			b.Fatal(err)
		}
		sync, err := f.WaitSynced(context.Background(), 5*time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		st := f.Proxies[0].Status()
		b.ReportMetric(float64(sync.Milliseconds()), "sync-ms")
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/float64(len(pods))/1024, "heap-KB/proxy(tool+server)")
		b.ReportMetric(float64(st[0].Resources+st[1].Resources), "clusters+endpoints/proxy")
		f.Stop()
	}
}
