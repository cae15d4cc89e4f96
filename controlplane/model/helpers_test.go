package model

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

const samples = "../../../shared/istio-samples"

// loadFile decodes a sample file; see decode.
func loadFile(t testing.TB, path string) []*config.Object {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(samples, path))
	if err != nil {
		t.Fatal(err)
	}
	return decode(t, path, string(data))
}

// decode is the tests' stand-in for the config store: it splits
// multi-document YAML and decodes, strictly, the kinds the model reads
// into their published types (Kubernetes kinds whole, Istio kinds' spec
// with protojson). Other kinds are skipped.
func decode(t testing.TB, file, text string) []*config.Object {
	t.Helper()
	var out []*config.Object
	line := 1
	for _, doc := range splitDocs(text) {
		start := line
		line += strings.Count(doc, "\n") + 2 // the document and its "---"
		var head struct {
			APIVersion string            `json:"apiVersion"`
			Kind       string            `json:"kind"`
			Metadata   metav1.ObjectMeta `json:"metadata"`
			Spec       json.RawMessage   `json:"spec"`
		}
		js, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatalf("%s:%d: %v", file, start, err)
		}
		if string(js) == "null" {
			continue
		}
		if err := json.Unmarshal(js, &head); err != nil {
			t.Fatalf("%s:%d: %v", file, start, err)
		}
		o := &config.Object{Meta: head.Metadata, Source: config.Position{File: file, Line: start}}
		kube := func(k config.Kind, obj interface{ GetObjectMeta() metav1.Object }) {
			if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
				t.Fatalf("%s:%d: %v", file, start, err)
			}
			o.Kind, o.Spec = k, obj
		}
		istio := func(k config.Kind, m proto.Message) {
			if err := protojson.Unmarshal(head.Spec, m); err != nil {
				t.Fatalf("%s:%d: %v", file, start, err)
			}
			o.Kind, o.Spec = k, m
		}
		group, _, _ := strings.Cut(head.APIVersion, "/")
		switch {
		case head.APIVersion == "v1" && head.Kind == "Service":
			kube(config.Service, &corev1.Service{})
		case head.APIVersion == "v1" && head.Kind == "Pod":
			kube(config.Pod, &corev1.Pod{})
		case head.APIVersion == "v1" && head.Kind == "Namespace":
			kube(config.Namespace, &corev1.Namespace{})
		case head.APIVersion == "v1" && head.Kind == "Node":
			kube(nodeKind, &corev1.Node{})
		case head.APIVersion == "apps/v1" && head.Kind == "Deployment":
			kube(config.Deployment, &appsv1.Deployment{})
		case head.APIVersion == "discovery.k8s.io/v1" && head.Kind == "EndpointSlice":
			kube(config.EndpointSlice, &discoveryv1.EndpointSlice{})
		case group == "networking.istio.io" && head.Kind == "ServiceEntry":
			istio(config.ServiceEntry, &networking.ServiceEntry{})
		case group == "networking.istio.io" && head.Kind == "WorkloadEntry":
			istio(config.WorkloadEntry, &networking.WorkloadEntry{})
		case group == "networking.istio.io" && head.Kind == "WorkloadGroup":
			istio(config.WorkloadGroup, &networking.WorkloadGroup{})
		default:
			continue
		}
		if m, ok := o.Spec.(interface{ GetObjectMeta() metav1.Object }); ok {
			// Kubernetes kinds: Meta equals the typed object's metadata.
			o.Meta = *m.GetObjectMeta().(*metav1.ObjectMeta)
		}
		out = append(out, o)
	}
	return out
}

// splitDocs splits YAML at "---" lines, keeping each document's lines so
// line numbers can be counted.
func splitDocs(text string) []string {
	var docs []string
	var cur []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "---") && strings.TrimSpace(strings.TrimPrefix(l, "---")) == "" {
			docs = append(docs, strings.Join(cur, "\n"))
			cur = nil
			continue
		}
		cur = append(cur, l)
	}
	return append(docs, strings.Join(cur, "\n"))
}

// instanceLines renders instances one per line with the fields a
// generator reads, so tests compare whole endpoint sets at once.
func instanceLines(list []*Instance) []string {
	var out []string
	for _, in := range list {
		out = append(out, fmt.Sprintf("%s:%d healthy=%t term=%t sa=%s tls=%s wl=%s loc=%s net=%s w=%d labels=%s",
			in.Address, in.Port, in.Healthy, in.Terminating, in.ServiceAccount, in.TLSMode, in.Workload, in.Locality, in.Network, in.Weight, labelString(in.Labels)))
	}
	return out
}

func labelString(m map[string]string) string {
	var keys []string
	for k, v := range m {
		keys = append(keys, k+"="+v)
	}
	sortStrings(keys)
	return strings.Join(keys, ",")
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func diffLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s:\ngot:\n\t%s\nwant:\n\t%s", what, strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}
