package kubelet

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestDefaultImages(t *testing.T) {
	for image, want := range map[string][]string{
		"registry.istio.io/release/examples-bookinfo-reviews-v2:1.20.3": {"bookinfo", "reviews", "--version=v2"},
		"docker.io/istio/examples-bookinfo-productpage-v1:1.18.0":       {"bookinfo", "productpage"},
		"examples-bookinfo-details-v1":                                  {"bookinfo", "details"},
		"ghcr.io/skiff-mesh/skiff-proxy:0.1.0-dev":                      {"skiff-proxy"},
		"docker.io/istio/proxyv2:1.24.0":                                {"skiff-proxy"},
		"docker.io/library/nginx:1.27":                                  nil,
		"docker.io/istio/examples-bookinfo-reviews-vx:1":                nil,
	} {
		got, ok := DefaultImages(image)
		if ok != (want != nil) || !slices.Equal(got, want) {
			t.Errorf("DefaultImages(%q) = %q, %v; want %q", image, got, ok, want)
		}
	}
}

func TestResourceValue(t *testing.T) {
	c := corev1.Container{Name: "app", Resources: corev1.ResourceRequirements{
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1500m"), corev1.ResourceMemory: resource.MustParse("1Gi")},
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")},
	}}
	p := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{c, {Name: "other"}}}}
	for _, tc := range []struct {
		ref  corev1.ResourceFieldSelector
		want string
	}{
		{corev1.ResourceFieldSelector{Resource: "limits.cpu"}, "2"}, // rounded up, as the kubelet does
		{corev1.ResourceFieldSelector{Resource: "limits.cpu", Divisor: resource.MustParse("1m")}, "1500"},
		{corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}, "1024"},
		{corev1.ResourceFieldSelector{Resource: "requests.cpu", Divisor: resource.MustParse("1m")}, "100"},
		{corev1.ResourceFieldSelector{Resource: "limits.memory", ContainerName: "other"}, "8589934592"}, // the node's allocatable
	} {
		got, err := resourceValue(p, &p.Spec.Containers[0], &tc.ref)
		if err != nil || got != tc.want {
			t.Errorf("%+v: %q, %v; want %q", tc.ref, got, err, tc.want)
		}
	}
	if _, err := resourceValue(p, &c, &corev1.ResourceFieldSelector{Resource: "limits.gpu"}); err == nil {
		t.Errorf("limits.gpu: no error")
	}
	if _, err := resourceValue(p, &c, &corev1.ResourceFieldSelector{Resource: "limits.cpu", ContainerName: "nope"}); err == nil {
		t.Errorf("an unknown containerName: no error")
	}
}

func TestFormatMap(t *testing.T) {
	got := formatMap(map[string]string{"b": `say "hi"`, "a": "1"})
	if want := "a=\"1\"\nb=\"say \\\"hi\\\"\""; got != want {
		t.Errorf("formatMap = %q, want %q (the downward API's key=\"value\" lines, sorted)", got, want)
	}
}
