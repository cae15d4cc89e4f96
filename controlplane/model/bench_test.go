package model

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// meshObjects is n services in one namespace, each with two ready pods
// behind it and, when withSlices, an EndpointSlice listing them.
func meshObjects(n int, withSlices bool) []*config.Object {
	var objs []*config.Object
	ready := true
	for i := range n {
		name := fmt.Sprintf("svc-%d", i)
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "bench"},
			Spec: corev1.ServiceSpec{
				ClusterIP: fmt.Sprintf("198.19.%d.%d", i/256, i%256),
				Selector:  map[string]string{"app": name},
				Ports:     []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
			},
		}
		objs = append(objs, &config.Object{Kind: config.Service, Meta: svc.ObjectMeta, Spec: svc})
		slice := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: name + "-x", Namespace: "bench", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: new("http"), Port: new(int32(8080))}},
		}
		for j := range 2 {
			ip := fmt.Sprintf("198.18.%d.%d", (2*i+j)/256, (2*i+j)%256)
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", name, j), Namespace: "bench",
					Labels: map[string]string{"app": name, "version": "v1"}},
				Spec: corev1.PodSpec{ServiceAccountName: name},
				Status: corev1.PodStatus{PodIP: ip, Phase: corev1.PodRunning,
					Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
			}
			objs = append(objs, &config.Object{Kind: config.Pod, Meta: pod.ObjectMeta, Spec: pod})
			slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
				Addresses:  []string{ip},
				Conditions: discoveryv1.EndpointConditions{Ready: &ready},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Name: pod.Name, Namespace: "bench"},
			})
		}
		if withSlices {
			objs = append(objs, &config.Object{Kind: config.EndpointSlice, Meta: slice.ObjectMeta, Spec: slice})
		}
	}
	return objs
}

// BenchmarkBuild builds the registry for 1000 services × 2 endpoints,
// from pods picked by selectors and from EndpointSlices.
func BenchmarkBuild(b *testing.B) {
	for _, c := range []struct {
		name   string
		slices bool
	}{{"pods", false}, {"endpointslices", true}} {
		b.Run("1000x2/"+c.name, func(b *testing.B) {
			objs := meshObjects(1000, c.slices)
			r := Build(objs, Options{})
			if got := len(r.Instances(r.Service("svc-999.bench.svc.cluster.local", "bench"), 80)); got != 2 {
				b.Fatalf("svc-999 has %d instances, want 2", got)
			}
			b.ReportAllocs()
			for b.Loop() {
				Build(objs, Options{})
			}
		})
	}
}

func TestMeshObjects(t *testing.T) {
	for _, withSlices := range []bool{false, true} {
		r := Build(meshObjects(50, withSlices), Options{})
		if n := len(r.Services()); n != 50 {
			t.Fatalf("%d services, want 50", n)
		}
		for _, s := range r.Services() {
			list := r.Instances(s, 80)
			if len(list) != 2 || list[0].Workload != s.Name+"-0" || list[1].ServiceAccount != s.Name || list[0].Port != 8080 {
				t.Errorf("slices=%t %s: %q", withSlices, s.Hostname, instanceLines(list))
			}
		}
	}
}
