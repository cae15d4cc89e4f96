package kube_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

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
	populate(b, cs)

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

// populate creates the Services and Pods with 16 requests in flight.
func populate(b *testing.B, cs kubernetes.Interface) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const ns = "load"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		b.Fatal(err)
	}
	start := time.Now()
	work := make(chan func() error)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for fn := range work {
				if err := fn(); err != nil {
					mu.Lock()
					first = cmpErr(first, err)
					mu.Unlock()
				}
			}
		}()
	}
	for i := range benchServices {
		work <- func() error {
			_, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d", i), Labels: map[string]string{"app": fmt.Sprintf("app-%d", i)}},
				Spec: corev1.ServiceSpec{Selector: map[string]string{"app": fmt.Sprintf("app-%d", i)},
					Ports: []corev1.ServicePort{{Name: "http", Port: 8080, TargetPort: intstr.FromInt32(8080)}, {Name: "grpc", Port: 9090}}},
			}, metav1.CreateOptions{})
			return err
		}
	}
	for i := range benchPods {
		work <- func() error {
			app := fmt.Sprintf("app-%d", i%benchServices)
			_, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", app, i), Labels: map[string]string{
					"app": app, "version": "v1", "pod-template-hash": "5d8f7c9b4"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "app", Image: "example.com/" + app + ":1",
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "grpc", ContainerPort: 9090}},
					Env:   []corev1.EnvVar{{Name: "MODE", Value: "production"}, {Name: "LOG_LEVEL", Value: "info"}},
				}}},
			}, metav1.CreateOptions{})
			return err
		}
	}
	close(work)
	wg.Wait()
	if first != nil {
		b.Fatal(first)
	}
	// The controller-manager makes one EndpointSlice per Service.
	for {
		l, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{ResourceVersion: "0"})
		if err == nil && len(l.Items) >= benchServices {
			break
		}
		if ctx.Err() != nil {
			b.Fatalf("EndpointSlices for %d Services not made in time: %v", benchServices, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.Logf("created %d Services and %d Pods (and their EndpointSlices) in %v", benchServices, benchPods, time.Since(start).Round(time.Millisecond))
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}
