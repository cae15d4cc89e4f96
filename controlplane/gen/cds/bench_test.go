package cds_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/gen/cds"
	"github.com/skiff-mesh/skiff/controlplane/gen/cds/gentest"
	"github.com/skiff-mesh/skiff/controlplane/gen/eds"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// benchMesh is services × 2 ready pods spread over namespaces; every pod
// is also a connected proxy.
func benchMesh(services, namespaces int) ([]*config.Object, []*xds.Proxy) {
	var objs []*config.Object
	var proxies []*xds.Proxy
	for i := range services {
		ns := fmt.Sprintf("ns%d", i%namespaces)
		name := fmt.Sprintf("svc%d", i)
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.ServiceSpec{
				Selector:  map[string]string{"app": name},
				ClusterIP: fmt.Sprintf("198.19.%d.%d", i/250, i%250+1),
				Ports:     []corev1.ServicePort{{Name: "http", Port: 8080, TargetPort: intstr.FromInt32(8080)}},
			},
		}
		objs = append(objs, &config.Object{Kind: config.Service, Meta: svc.ObjectMeta, Spec: svc})
		for j := range 2 {
			n := 2*i + j
			ip := fmt.Sprintf("198.18.%d.%d", n/250, n%250+1)
			labels := map[string]string{"app": name, "version": fmt.Sprintf("v%d", j+1)}
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", name, j), Namespace: ns, Labels: labels},
				Spec:       corev1.PodSpec{ServiceAccountName: name, Containers: []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}},
				Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip,
					Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
			}
			objs = append(objs, &config.Object{Kind: config.Pod, Meta: pod.ObjectMeta, Spec: pod})
			proxies = append(proxies, &xds.Proxy{ID: pod.Name + "." + ns, Type: xds.SidecarProxy, IPs: []string{ip},
				Namespace: ns, Labels: labels, ServiceAccount: name})
		}
	}
	return objs, proxies
}

// BenchmarkGenerate measures CDS and EDS for every proxy of a mesh of 1000
// services × 2 endpoints with 2000 proxies in 10 namespaces. "new-config"
// starts each round from a fresh Index (a config change: shared output is
// built once, then reused by the other proxies); "same-config" pushes
// again on a warm Index. It reports time and allocations per proxy and the
// heap the generated config holds.
func BenchmarkGenerate(b *testing.B) {
	objs, proxies := benchMesh(1000, 10)
	for _, fresh := range []bool{true, false} {
		name := "same-config"
		if fresh {
			name = "new-config"
		}
		b.Run(name, func(b *testing.B) {
			ix := gentest.Index(objs)
			clusters, endpoints := 0, 0
			var ms0, ms1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms0)
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				if fresh {
					b.StopTimer()
					ix = gentest.Index(objs)
					b.StartTimer()
				}
				clusters, endpoints = 0, 0
				for _, p := range proxies {
					clusters += len(cds.Generate(p, ix))
					endpoints += len(eds.Generate(p, ix, nil))
				}
			}
			elapsed := time.Since(start)
			b.StopTimer()
			runtime.ReadMemStats(&ms1)
			per := float64(b.N * len(proxies))
			b.ReportMetric(float64(elapsed.Nanoseconds())/per, "ns/proxy")
			b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/per, "allocs/proxy")
			b.ReportMetric(float64(clusters)/float64(len(proxies)), "clusters/proxy")
			b.ReportMetric(float64(endpoints)/float64(len(proxies)), "assignments/proxy")
			runtime.GC()
			runtime.ReadMemStats(&ms1)
			b.ReportMetric(float64(ms1.HeapAlloc)/(1<<20), "MB-heap")
			runtime.KeepAlive(ix)
		})
	}
}

// BenchmarkEndpointPush measures what an endpoint change costs on a fresh
// Index when the ADS server asks EDS only for the changed service's
// clusters (EDS responses need not repeat unchanged assignments): per
// proxy, for the same 1000-service, 2000-proxy mesh.
func BenchmarkEndpointPush(b *testing.B) {
	objs, proxies := benchMesh(1000, 10)
	changed := []string{"outbound|8080||svc7.ns7.svc.cluster.local"}
	b.ReportAllocs()
	var elapsed time.Duration
	for range b.N {
		b.StopTimer()
		ix := gentest.Index(objs)
		b.StartTimer()
		start := time.Now()
		for _, p := range proxies {
			if res := eds.Generate(p, ix, changed); len(res) != 1 {
				b.Fatalf("%d assignments", len(res))
			}
		}
		elapsed += time.Since(start)
	}
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(b.N*len(proxies)), "ns/proxy")
}
