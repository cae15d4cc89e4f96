package server_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/server"
	"github.com/skiff-mesh/skiff/internal/testing/kubetest"
)

// BenchmarkKubernetesModeMemory: skiffd in Kubernetes mode (informers,
// store, registry and index rebuilt, CA on) holding 1000 Services and 2000
// Pods with their EndpointSlices from a real API server. Reports the Go
// heap skiffd holds once synced and the test process's RSS (skiffd plus
// the test's own client; the API server and etcd are other processes).
//
//	go test -run '^$' -bench KubernetesModeMemory -benchtime 1x ./controlplane/server/
func BenchmarkKubernetesModeMemory(b *testing.B) {
	env := kubetest.Start(b, kubetest.Options{ControllerManager: true})
	kubetest.Populate(b, env.Clientset(b), "load", 1000, 2000)
	for range b.N {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		state := b.TempDir()
		srv, err := server.New(server.Options{
			Kubeconfig: env.Kubeconfig, XDSAddr: "127.0.0.1:0", MonitoringAddr: "127.0.0.1:0", SecureAddr: "127.0.0.1:0",
			CADir: filepath.Join(state, "ca"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		start, cpu0 := time.Now(), cpuSeconds()
		go func() { done <- srv.Run(ctx) }()
		for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
			snap := srv.Store().Snapshot()
			if len(snap.List(config.Pod)) >= 2000 && len(snap.List(config.EndpointSlice)) >= 1000 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("skiffd did not hold 2000 Pods and 1000 EndpointSlices within 3 minutes")
			}
		}
		synced := time.Since(start)
		time.Sleep(2 * time.Second) // the rebuild that follows the last change
		syncCPU := cpuSeconds() - cpu0
		// Steady state: the informers' watches open, nothing changing.
		cpu1 := cpuSeconds()
		time.Sleep(10 * time.Second)
		idle := (cpuSeconds() - cpu1) / 10
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		heap := float64(after.HeapAlloc-before.HeapAlloc) / (1 << 20)
		b.ReportMetric(heap, "skiffd-heap-MiB")
		b.ReportMetric(rssMiB(), "process-RSS-MiB")
		b.ReportMetric(synced.Seconds(), "sync-s")
		b.ReportMetric(syncCPU, "sync-CPU-s")
		b.ReportMetric(idle*1000, "idle-mCPU")
		b.Logf("synced in %v using %.2f CPU s: skiffd heap %.1f MiB, process RSS %.1f MiB; then %.1f mCPU idle", synced.Round(time.Millisecond), syncCPU, heap, rssMiB(), idle*1000)
		cancel()
		<-done
	}
}

func rssMiB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// cpuSeconds is this process's user+system CPU time so far (skiffd runs in
// it; the API server and etcd are other processes).
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
