// Package indextest builds indexes from Istio's samples for generator
// tests, as the local mesh would see them: one ready pod per Deployment
// with an address in 198.18.0.0/16 and a ClusterIP per Service in
// 198.19.0.0/16. It also runs generated resources through skiff-proxy's
// own compile checks, so a test fails on anything the proxy would NACK.
package indextest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/model"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// SamplesDir is where Istio's upstream samples are.
const SamplesDir = "/work/shared/istio-samples"

// Decode reads YAML (one or more documents) into objects, failing the
// test on any error. file names the source in messages.
func Decode(t testing.TB, file string, data []byte) []*config.Object {
	t.Helper()
	objs, errs := config.Decode(data, file)
	for _, err := range errs {
		t.Fatalf("decode %s: %v", file, err)
	}
	return objs
}

// Sample reads a file under SamplesDir.
func Sample(t testing.TB, rel string) []*config.Object {
	t.Helper()
	path := filepath.Join(SamplesDir, rel)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return Decode(t, rel, data)
}

// Testdata reads a file under the calling test's testdata directory.
func Testdata(t testing.TB, rel string) []*config.Object {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", rel))
	if err != nil {
		t.Fatal(err)
	}
	return Decode(t, rel, data)
}

// Mesh completes objects as the local mesh would: Services get ClusterIPs
// 198.19.0.N (in order of appearance) and every Deployment one ready pod
// "NAME-0" at 198.18.0.N (in the registry's template order, from 10).
func Mesh(objs []*config.Object) []*config.Object {
	n := 1
	out := make([]*config.Object, 0, len(objs))
	for _, o := range objs {
		if svc, ok := o.Spec.(*corev1.Service); ok && svc.Spec.ClusterIP == "" {
			cp := svc.DeepCopy()
			cp.Spec.ClusterIP = fmt.Sprintf("198.19.0.%d", n)
			n++
			oc := *o
			oc.Spec = cp
			o = &oc
		}
		out = append(out, o)
	}
	for i, tpl := range model.Build(out, model.Options{SidecarByDefault: true}).WorkloadTemplates() {
		if tpl.Pod == nil {
			continue
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: tpl.Name + "-0", Namespace: tpl.Namespace, Labels: tpl.Pod.Labels},
			Spec:       tpl.Pod.Spec,
			Status: corev1.PodStatus{
				Phase: corev1.PodRunning, PodIP: fmt.Sprintf("198.18.0.%d", 10+i),
				Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
			},
		}
		if pod.Namespace == "" {
			pod.Namespace = "default"
		}
		out = append(out, &config.Object{Kind: config.Pod, Meta: pod.ObjectMeta, Spec: pod})
	}
	return out
}

// Build builds the registry and index of objects (already completed by Mesh).
func Build(objs []*config.Object) *index.Index {
	reg := model.Build(objs, model.Options{SidecarByDefault: true})
	return index.Build(objs, reg, index.Options{})
}

// SidecarFor returns the sidecar proxy of the named pod.
func SidecarFor(t testing.TB, ix *index.Index, ns, pod string) *xds.Proxy {
	t.Helper()
	for _, w := range ix.Registry().Workloads() {
		if w.Namespace == ns && w.Name == pod {
			return &xds.Proxy{
				ID: pod + "." + ns, Type: xds.SidecarProxy, IPs: w.IPs, Namespace: ns,
				Labels: w.Labels, ServiceAccount: w.ServiceAccount, DNSDomain: ns + ".svc.cluster.local",
			}
		}
	}
	t.Fatalf("no workload %s/%s", ns, pod)
	return nil
}

// Router returns a gateway proxy with these labels.
func Router(ns string, labels map[string]string) *xds.Proxy {
	return &xds.Proxy{
		ID: "istio-ingressgateway-0." + ns, Type: xds.RouterProxy, IPs: []string{"198.18.1.1"},
		Namespace: ns, Labels: labels, DNSDomain: ns + ".svc.cluster.local",
	}
}
