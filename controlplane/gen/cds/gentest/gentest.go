// Package gentest builds generator inputs for the cds and eds tests: the
// shared Istio samples decoded by the config store's decoder, the pods the
// local mesh would start for their Deployments (addresses in
// 198.18.0.0/16), the Index over them, and proxies as they would connect.
// It also checks generated clusters and endpoints with skiff-proxy's own
// cluster manager, so anything the proxy would NACK fails a test.
package gentest

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/model"
	"github.com/skiff-mesh/skiff/controlplane/xds"
	"github.com/skiff-mesh/skiff/dataplane/upstream"

	// The proxy links Istio's upstream metadata exchange (Cluster.filters
	// on mesh mTLS clusters); so must its validation here.
	_ "github.com/skiff-mesh/skiff/dataplane/filters/istiostats"
)

// Samples is the directory of the shared upstream Istio samples.
func Samples() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "../../../../../shared/istio-samples")
}

// Decode decodes YAML text as the config store does, failing on any error.
func Decode(t testing.TB, file, text string) []*config.Object {
	t.Helper()
	objs, errs := config.Decode([]byte(text), file)
	for _, err := range errs {
		t.Errorf("%v", err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	return objs
}

// Sample decodes a file under Samples ("bookinfo/platform/kube/bookinfo.yaml").
func Sample(t testing.TB, rel string) []*config.Object {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(Samples(), rel))
	if err != nil {
		t.Fatal(err)
	}
	return Decode(t, rel, string(data))
}

// Load decodes a file (a path from the test's directory).
func Load(t testing.TB, path string) []*config.Object {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return Decode(t, filepath.ToSlash(path), string(data))
}

// WithPods adds one ready pod per Deployment, as the local mesh starts
// them: named <deployment>-0, addressed 198.18.0.10, .11, … in the
// registry's template order.
func WithPods(objs []*config.Object) []*config.Object {
	for i, tpl := range model.Build(objs, model.Options{SidecarByDefault: true}).WorkloadTemplates() {
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
		objs = append(objs, &config.Object{Kind: config.Pod, Meta: pod.ObjectMeta, Spec: pod})
	}
	return objs
}

// Index builds the registry and index as skiffd does for the local mesh.
func Index(objs []*config.Object) *index.Index {
	reg := model.Build(objs, model.Options{SidecarByDefault: true})
	return index.Build(objs, reg, index.Options{})
}

// Bookinfo is the Bookinfo sample with its pods plus the given sample
// files (paths under Samples), indexed.
func Bookinfo(t testing.TB, extra ...string) *index.Index {
	t.Helper()
	objs := Sample(t, "bookinfo/platform/kube/bookinfo.yaml")
	for _, f := range extra {
		objs = append(objs, Sample(t, f)...)
	}
	return Index(WithPods(objs))
}

// Sidecar is the proxy of the pod with this name in namespace ns, as
// pilot-agent would describe it.
func Sidecar(t testing.TB, ix *index.Index, ns, pod string) *xds.Proxy {
	t.Helper()
	for _, w := range ix.Registry().Workloads() {
		if w.Namespace == ns && w.Name == pod {
			return &xds.Proxy{
				ID: pod + "." + ns, Type: xds.SidecarProxy, IPs: w.IPs, Namespace: ns,
				Labels: w.Labels, ServiceAccount: w.ServiceAccount, Workload: w.WorkloadName, PodName: pod,
			}
		}
	}
	t.Fatalf("no workload %s/%s", ns, pod)
	return nil
}

// Messages unwraps generated resources for golden files.
func Messages(t testing.TB, res []xds.Resource) []proto.Message {
	t.Helper()
	out := make([]proto.Message, 0, len(res))
	for _, r := range res {
		m := r.Message
		if a, ok := m.(*anypb.Any); ok {
			var err error
			if m, err = a.UnmarshalNew(); err != nil {
				t.Fatalf("%s: %v", r.Name, err)
			}
		}
		if n := nameOf(m); n != r.Name {
			t.Errorf("resource named %q holds %q", r.Name, n)
		}
		out = append(out, m)
	}
	return out
}

func nameOf(m proto.Message) string {
	switch m := m.(type) {
	case *clusterv3.Cluster:
		return m.GetName()
	case *endpointv3.ClusterLoadAssignment:
		return m.GetClusterName()
	}
	return ""
}

// noSecrets is an SDS source that has nothing yet, as at a proxy's start:
// skiff-proxy resolves SDS names at handshake time, so config still loads.
type noSecrets struct{}

func (noSecrets) Secret(string) *tlsv3.Secret { return nil }

// Accept feeds clusters to skiff-proxy's cluster manager as its xDS
// client would, then the assignments eds returns for the names the
// manager asks for: every cluster must pass Validate, every non-DNS
// cluster must apply (DNS clusters would resolve names, and tests touch
// no network beyond loopback), every assignment must apply, and
// afterwards no EDS cluster may still be waiting for endpoints.
func Accept(t testing.TB, clusters []xds.Resource, eds func(names []string) []xds.Resource) {
	t.Helper()
	m := upstream.NewManager(upstream.Options{Secrets: noSecrets{}})
	defer m.Close()
	for _, msg := range Messages(t, clusters) {
		c := msg.(*clusterv3.Cluster)
		if err := m.Validate(c); err != nil {
			t.Errorf("skiff-proxy rejects cluster: %v", err)
			continue
		}
		if c.GetType() == clusterv3.Cluster_STRICT_DNS || c.GetType() == clusterv3.Cluster_LOGICAL_DNS {
			continue
		}
		if err := m.AddOrUpdate(c); err != nil {
			t.Errorf("skiff-proxy rejects cluster: %v", err)
		}
	}
	names := m.EDSNames()
	res := eds(names)
	if len(res) != len(names) {
		t.Errorf("EDS answered %d of %d requested names", len(res), len(names))
	}
	for _, msg := range Messages(t, res) {
		if err := m.SetEndpoints(msg.(*endpointv3.ClusterLoadAssignment)); err != nil {
			t.Errorf("skiff-proxy rejects endpoints: %v", err)
		}
	}
	if w := m.Warming(); len(w) > 0 {
		t.Errorf("clusters still warming after EDS: %v", w)
	}
}
