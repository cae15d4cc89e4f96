package telemetry_test

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/gen/lds"
	"github.com/skiff-mesh/skiff/controlplane/gen/telemetry"
	"github.com/skiff-mesh/skiff/controlplane/model"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// largeMesh is 1000 HTTP services in 10 namespaces, 2 pods each, one
// sidecar per pod (2000), as lds's benchmark, plus a namespace-level
// Telemetry in ns0 and a workload-level one for svc1.
func largeMesh() ([]*config.Object, []*xds.Proxy) {
	var objs []*config.Object
	var proxies []*xds.Proxy
	for i := range 1000 {
		ns := fmt.Sprintf("ns%d", i%10)
		name := fmt.Sprintf("svc%d", i)
		labels := map[string]string{"app": name}
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.ServiceSpec{Selector: labels, ClusterIP: fmt.Sprintf("198.19.%d.%d", i/250, i%250+1),
				Ports: []corev1.ServicePort{{Name: "http", Port: 8080}}},
		}
		objs = append(objs, &config.Object{Kind: config.Service, Meta: svc.ObjectMeta, Spec: svc})
		for j := range 2 {
			ip := fmt.Sprintf("198.18.%d.%d", (2*i+j)/250, (2*i+j)%250+1)
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", name, j), Namespace: ns, Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}},
				Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip,
					Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
			}
			objs = append(objs, &config.Object{Kind: config.Pod, Meta: pod.ObjectMeta, Spec: pod})
			proxies = append(proxies, &xds.Proxy{ID: pod.Name + "." + ns, Type: xds.SidecarProxy, IPs: []string{ip},
				Namespace: ns, Labels: labels, DNSDomain: ns + ".svc.cluster.local"})
		}
	}
	tel, errs := config.Decode([]byte(`apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ns0, namespace: ns0}
spec:
  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT}
      tagOverrides: {request_protocol: {operation: REMOVE}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: svc1, namespace: ns1}
spec:
  selector: {matchLabels: {app: svc1}}
  accessLogging: [{disabled: true}]
`), "bench.yaml")
	if len(errs) > 0 {
		panic(errs[0])
	}
	return append(objs, tel...), proxies
}

// BenchmarkGenerateLDS measures one config version's LDS for the 2000
// sidecars with and without the Telemetry decoration (a fresh index each
// iteration, as after a config change). The difference between the two
// ns/proxy figures is what Key and Decorate cost per proxy.
func BenchmarkGenerateLDS(b *testing.B) {
	objs, proxies := largeMesh()
	reg := model.Build(objs, model.Options{SidecarByDefault: true})
	for _, c := range []struct {
		name string
		tel  lds.Telemetry
	}{{"plain", nil}, {"telemetry", telemetry.New(telemetry.Options{})}} {
		b.Run(c.name, func(b *testing.B) {
			g := lds.New(lds.Options{Telemetry: c.tel})
			b.ReportAllocs()
			for b.Loop() {
				ix := index.Build(objs, reg, index.Options{})
				for _, p := range proxies {
					g.Generate(p, ix)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(proxies)), "ns/proxy")
		})
	}
}

// BenchmarkKey is the per-push cost of Key on a warm index: what every
// proxy pays on every push once its listeners are cached.
func BenchmarkKey(b *testing.B) {
	objs, proxies := largeMesh()
	ix := index.Build(objs, model.Build(objs, model.Options{SidecarByDefault: true}), index.Options{})
	tel := telemetry.New(telemetry.Options{})
	for _, p := range proxies {
		tel.Key(p, ix)
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, p := range proxies {
			tel.Key(p, ix)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(proxies)), "ns/proxy")
}
