package telemetry_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	"sigs.k8s.io/yaml"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/gen/index/indextest"
	"github.com/skiff-mesh/skiff/controlplane/model"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// The helpers below do what controlplane/gen/index/indextest does,
// without its link to the data plane's validation.

const samples = "/work/shared/istio-samples"

func decodeFile(t testing.TB, path string) []*config.Object {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	objs, errs := config.Decode(data, filepath.Base(path))
	for _, err := range errs {
		t.Fatalf("decode %s: %v", path, err)
	}
	return objs
}

// bookinfo is Bookinfo, the trace collectors and the extra objects.
func bookinfo(t testing.TB, extra ...*config.Object) *index.Index {
	t.Helper()
	objs := decodeFile(t, filepath.Join(samples, "bookinfo/platform/kube/bookinfo.yaml"))
	objs = append(objs, decodeFile(t, filepath.Join(samples, "bookinfo/networking/bookinfo-gateway.yaml"))...)
	objs = append(objs, decodeFile(t, "testdata/collectors.yaml")...)
	objs = indextest.Mesh(append(objs, extra...))
	reg := model.Build(objs, model.Options{SidecarByDefault: true})
	return index.Build(objs, reg, index.Options{})
}

func sidecar(t testing.TB, ix *index.Index, ns, pod string) *xds.Proxy {
	t.Helper()
	for _, w := range ix.Registry().Workloads() {
		if w.Namespace == ns && w.Name == pod {
			return &xds.Proxy{
				ID: pod + "." + ns, Type: xds.SidecarProxy, IPs: w.IPs, Namespace: ns, Labels: w.Labels,
				ServiceAccount: w.ServiceAccount, DNSDomain: ns + ".svc.cluster.local",
				MeshID: "cluster.local", ClusterID: "Kubernetes",
			}
		}
	}
	t.Fatalf("no workload %s/%s", ns, pod)
	return nil
}

var ingress = &xds.Proxy{
	ID: "istio-ingressgateway-0.istio-system", Type: xds.RouterProxy, IPs: []string{"198.18.1.1"},
	Namespace: "istio-system", Labels: map[string]string{"istio": "ingressgateway", "app": "istio-ingressgateway"},
	DNSDomain: "istio-system.svc.cluster.local",
}

// meshConfig reads MeshConfig YAML; a missing file is the default.
func meshConfig(t testing.TB, path string) *meshv1alpha1.MeshConfig {
	t.Helper()
	mc := &meshv1alpha1.MeshConfig{RootNamespace: "istio-system"}
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return mc
	}
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(js, mc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return mc
}

// logBuffer collects a generator's warnings.
type logBuffer struct{ bytes.Buffer }

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(&b.Buffer, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))
}
