package lds

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/gen/rds"
	"github.com/skiff-mesh/skiff/controlplane/model"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// largeMesh is 1000 HTTP services in 10 namespaces, each with 2 pods,
// and one sidecar proxy per pod (2000).
func largeMesh() ([]*config.Object, []*xds.Proxy) {
	var objs []*config.Object
	var proxies []*xds.Proxy
	for i := 0; i < 1000; i++ {
		ns := fmt.Sprintf("ns%d", i%10)
		name := fmt.Sprintf("svc%d", i)
		labels := map[string]string{"app": name}
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.ServiceSpec{
				Selector:  labels,
				ClusterIP: fmt.Sprintf("198.19.%d.%d", i/250, i%250+1),
				Ports:     []corev1.ServicePort{{Name: "http", Port: 8080}},
			},
		}
		objs = append(objs, &config.Object{Kind: config.Service, Meta: svc.ObjectMeta, Spec: svc})
		for j := 0; j < 2; j++ {
			ip := fmt.Sprintf("198.18.%d.%d", (2*i+j)/250, (2*i+j)%250+1)
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", name, j), Namespace: ns, Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}},
				Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip,
					Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
			}
			objs = append(objs, &config.Object{Kind: config.Pod, Meta: pod.ObjectMeta, Spec: pod})
			proxies = append(proxies, &xds.Proxy{
				ID: pod.Name + "." + ns, Type: xds.SidecarProxy, IPs: []string{ip}, Namespace: ns, Labels: labels,
				DNSDomain: ns + ".svc.cluster.local",
			})
		}
	}
	return objs, proxies
}

// BenchmarkSidecarLDSRDS measures one config version's LDS and RDS for
// every proxy of a 1000-service, 2000-proxy mesh: a fresh index each
// iteration (as after a config change), then every proxy's listeners and
// its route configurations. It reports the time and allocations per
// proxy; sharing through the index cache is what keeps them small.
func BenchmarkSidecarLDSRDS(b *testing.B) {
	objs, proxies := largeMesh()
	reg := model.Build(objs, model.Options{SidecarByDefault: true})
	b.ReportAllocs()
	b.ResetTimer()
	var resources int
	for b.Loop() {
		ix := index.Build(objs, reg, index.Options{})
		resources = 0
		for _, p := range proxies {
			resources += len(Generate(p, ix))
			resources += len(rds.Generate(p, ix, []string{"8080"}))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(proxies)), "ns/proxy")
	b.ReportMetric(float64(resources)/float64(len(proxies)), "resources/proxy")
}
