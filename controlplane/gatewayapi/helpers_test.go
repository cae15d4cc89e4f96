package gatewayapi

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

const samples = "/work/shared/istio-samples"

// load decodes YAML files with the config store's decoder; any error fails
// the test, since these inputs are meant to be valid.
func load(t *testing.T, files ...string) []*config.Object {
	t.Helper()
	var out []*config.Object
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, decode(t, string(data), filepath.Base(f))...)
	}
	return out
}

func decode(t *testing.T, doc, name string) []*config.Object {
	t.Helper()
	objs, errs := config.Decode([]byte(doc), name)
	for _, err := range errs {
		t.Fatalf("decode %s: %v", name, err)
	}
	return objs
}

// render prints synthesized objects as Kubernetes-style YAML documents, the
// form `kubectl get -o yaml` and Istio's own golden files use.
func render(t *testing.T, objs []*config.Object) []byte {
	t.Helper()
	var out bytes.Buffer
	for _, o := range objs {
		spec, err := protojson.Marshal(o.Spec.(proto.Message))
		if err != nil {
			t.Fatal(err)
		}
		doc := map[string]any{
			"apiVersion": o.Kind.APIVersion(),
			"kind":       o.Kind.Kind,
			"metadata": map[string]any{
				"name": o.Meta.Name, "namespace": o.Meta.Namespace, "annotations": o.Meta.Annotations,
			},
			"source": o.Source.String(),
			"spec":   json.RawMessage(spec),
		}
		j, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		y, err := yaml.JSONToYAML(j)
		if err != nil {
			t.Fatal(err)
		}
		out.WriteString("---\n")
		out.Write(y)
	}
	return out.Bytes()
}

// renderStatus prints statuses as YAML keyed by "Kind/namespace/name".
func renderStatus(t *testing.T, st map[config.Key]*Status) []byte {
	t.Helper()
	m := map[string]*Status{}
	for k, s := range st {
		m[k.String()] = s
	}
	y, err := yaml.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return y
}

// only returns the one synthesized object of kind k named name.
func only(t *testing.T, r *Result, k config.Kind, name string) *config.Object {
	t.Helper()
	var names []string
	for _, o := range r.Objects {
		if o.Kind == k && o.Meta.Name == name {
			return o
		}
		names = append(names, o.Kind.Kind+"/"+o.Meta.Name)
	}
	t.Fatalf("no %s %s among %v", k.Kind, name, names)
	return nil
}

// cond returns the condition t of the status's parent i (or, for i < 0,
// of the object itself) as "Status/Reason: message".
func cond(t *testing.T, r *Result, k config.Key, parent int, typ string) string {
	t.Helper()
	s := r.Status[k]
	if s == nil {
		t.Fatalf("no status for %v", k)
	}
	conds := s.Conditions
	if parent >= 0 {
		if parent >= len(s.Parents) {
			t.Fatalf("%v has %d parents, want index %d", k, len(s.Parents), parent)
		}
		conds = s.Parents[parent].Conditions
	}
	c := Condition(conds, typ)
	if c == nil {
		t.Fatalf("%v: no %s condition in %+v", k, typ, conds)
	}
	return string(c.Status) + "/" + c.Reason + ": " + c.Message
}

func key(k config.Kind, ns, name string) config.Key {
	return config.Key{Kind: k, Namespace: ns, Name: name}
}

// wantProto compares a proto with its expected protojson text.
func wantProto(t *testing.T, got proto.Message, want string) {
	t.Helper()
	exp := got.ProtoReflect().New().Interface()
	if err := protojson.Unmarshal([]byte(want), exp); err != nil {
		t.Fatalf("bad expectation %s: %v", want, err)
	}
	if !proto.Equal(got, exp) {
		g, _ := protojson.Marshal(got)
		w, _ := protojson.Marshal(exp)
		t.Errorf("got  %s\nwant %s", g, w)
	}
}
