package config_test

import (
	"fmt"
	"os"
	"runtime"
	"testing"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

func BenchmarkDecodeBookinfo(b *testing.B) {
	data, err := os.ReadFile("/work/shared/istio-samples/bookinfo/platform/kube/bookinfo.yaml")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, errs := config.Decode(data, "bookinfo.yaml"); len(errs) != 0 {
			b.Fatal(errs)
		}
	}
}

func serviceFile(i int) []byte {
	return fmt.Appendf(nil, `apiVersion: v1
kind: Service
metadata: {name: svc-%d, labels: {app: svc-%d}}
spec:
  selector: {app: svc-%d}
  ports: [{name: http, port: 9080}]
---
`, i, i, i)
}

func vsFile(i, weight int) []byte {
	return append(serviceFile(i), fmt.Appendf(nil, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: svc-%d}
spec:
  hosts: [svc-%d]
  http:
  - route:
    - destination: {host: svc-%d, subset: v1}
      weight: %d
    - destination: {host: svc-%d, subset: v2}
      weight: %d
`, i, i, i, weight, i, 100-weight)...)
}

// BenchmarkStoreFileChange measures one edited file (a Service and a
// VirtualService) reaching a new snapshot in a store holding 1000 such
// files, and reports the store's heap per object.
func BenchmarkStoreFileChange(b *testing.B) {
	const files = 1000
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	store := config.NewStore(nil, nil)
	for i := range files {
		name := fmt.Sprintf("f%d.yaml", i)
		objs, errs := config.Decode(vsFile(i, 50), name)
		store.Replace(name, objs, errs)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	heap := float64(after.HeapAlloc-before.HeapAlloc) / (2 * files)

	b.ResetTimer()
	n := 0
	for b.Loop() {
		n++
		i := n % files
		objs, errs := config.Decode(vsFile(i, n%100), fmt.Sprintf("f%d.yaml", i))
		store.Replace(fmt.Sprintf("f%d.yaml", i), objs, errs)
	}
	if len(store.Snapshot().List(config.VirtualService)) != files {
		b.Fatal("objects lost")
	}
	b.ReportMetric(heap, "heap-bytes/object") // after the loop: ResetTimer clears metrics
}
