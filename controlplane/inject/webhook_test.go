package inject_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/skiff-mesh/skiff/controlplane/inject"
	"github.com/skiff-mesh/skiff/internal/testing/golden"
)

func webhookServer(t *testing.T, labels map[string]string) *httptest.Server {
	t.Helper()
	opts := inject.Options{Namespaces: func(name string) (*corev1.Namespace, error) {
		if name == "missing" {
			return nil, fmt.Errorf("namespace %q not found", name)
		}
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, nil
	}}
	srv := httptest.NewServer(inject.NewWebhook(opts))
	t.Cleanup(srv.Close)
	return srv
}

func readPod(t *testing.T, path string) (*corev1.Pod, []byte) {
	t.Helper()
	y, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := yaml.YAMLToJSON(y)
	if err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := json.Unmarshal(raw, &pod); err != nil {
		t.Fatal(err)
	}
	return &pod, raw
}

func postReview(t *testing.T, url string, raw []byte, uid string) *admissionv1.AdmissionResponse {
	t.Helper()
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID("uid-" + uid),
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: "default",
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: raw},
		},
	}
	body, _ := json.Marshal(review)
	resp, err := http.Post(url+"/inject", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("response is not an AdmissionReview: %v\n%s", err, b)
	}
	if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" || out.Response == nil {
		t.Fatalf("response %s", b)
	}
	if string(out.Response.UID) != "uid-"+uid {
		t.Fatalf("uid %q, want %q", out.Response.UID, "uid-"+uid)
	}
	return out.Response
}

// TestWebhookInjects sends the pod of testdata/pod.yaml through the webhook
// over HTTP, applies the returned JSONPatch to the pod as the API server
// would, and checks the result is the pod kube-inject produces.
func TestWebhookInjects(t *testing.T) {
	srv := webhookServer(t, map[string]string{"istio-injection": "enabled"})
	pod, raw := readPod(t, "testdata/pod.yaml")
	resp := postReview(t, srv.URL, raw, "1")
	if !resp.Allowed || resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("response %+v", resp)
	}
	patched, err := applyPatch(raw, resp.Patch)
	if err != nil {
		t.Fatalf("applying the patch: %v\npatch: %s", err, resp.Patch)
	}
	got, err := yaml.JSONToYAML(patched)
	if err != nil {
		t.Fatal(err)
	}
	golden.Compare(t, "testdata/webhook/pod.yaml.injected", got)

	want, d, err := inject.Pod(pod, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, inject.Options{EnableNamespacesByDefault: true})
	if err != nil || !d.Inject {
		t.Fatalf("Pod: %v %+v", err, d)
	}
	wantJSON, _ := json.Marshal(want)
	var a, b any
	_ = json.Unmarshal(wantJSON, &a)
	_ = json.Unmarshal(patched, &b)
	// The request carried no status; the typed pod writes an empty one.
	delete(a.(map[string]any), "status")
	aj, _ := json.MarshalIndent(a, "", " ")
	bj, _ := json.MarshalIndent(b, "", " ")
	if !bytes.Equal(aj, bj) {
		t.Errorf("patched pod differs from inject.Pod's:\n%s\nvs\n%s", bj, aj)
	}
}

func TestWebhookSkipsAndRefuses(t *testing.T) {
	srv := webhookServer(t, nil) // namespace without an injection label
	_, raw := readPod(t, "testdata/pod.yaml")
	if resp := postReview(t, srv.URL, raw, "2"); !resp.Allowed || resp.Patch != nil {
		t.Errorf("pod in an unlabeled namespace: %+v, want allowed without patch", resp)
	}

	enabled := webhookServer(t, map[string]string{"istio-injection": "enabled"})
	bad := strings.Replace(string(raw), `"labels":{`, `"annotations":{"traffic.sidecar.istio.io/excludeOutboundPorts":"5432,http"},"labels":{`, 1)
	resp := postReview(t, enabled.URL, []byte(bad), "3")
	if resp.Allowed || resp.Result == nil || !strings.Contains(resp.Result.Message, `metadata.annotations["traffic.sidecar.istio.io/excludeOutboundPorts"]: "http" is not a port`) {
		t.Errorf("bad annotation: %+v, want refused naming the annotation", resp.Result)
	}

	missing := strings.Replace(string(raw), `"namespace":"default"`, `"namespace":"missing"`, 1)
	if resp := postReview(t, enabled.URL, []byte(missing), "4"); resp.Allowed || !strings.Contains(resp.Result.Message, "looking up namespace missing") {
		t.Errorf("unknown namespace: %+v", resp.Result)
	}

	for _, c := range []struct {
		method, ctype, body string
		want                int
	}{
		{"GET", "", "", http.StatusMethodNotAllowed},
		{"POST", "text/plain", "{}", http.StatusUnsupportedMediaType},
		{"POST", "application/json", "{not json", http.StatusBadRequest},
		{"POST", "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, http.StatusBadRequest},
	} {
		req, _ := http.NewRequest(c.method, enabled.URL+"/inject", strings.NewReader(c.body))
		if c.ctype != "" {
			req.Header.Set("Content-Type", c.ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s %s %q: status %d, want %d", c.method, c.ctype, c.body, resp.StatusCode, c.want)
		}
	}
}

// applyPatch is a small RFC 6902 implementation (add, remove, replace),
// written here so the test does not trust the webhook's own code.
func applyPatch(doc, patch []byte) ([]byte, error) {
	var root any
	if err := json.Unmarshal(doc, &root); err != nil {
		return nil, err
	}
	var ops []map[string]any
	if err := json.Unmarshal(patch, &ops); err != nil {
		return nil, err
	}
	for _, op := range ops {
		path, _ := op["path"].(string)
		kind, _ := op["op"].(string)
		value, hasValue := op["value"]
		if kind != "remove" && !hasValue {
			return nil, fmt.Errorf("%s %s without a value", kind, path)
		}
		var err error
		root, err = applyOp(root, splitPointer(path), kind, value)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %v", kind, path, err)
		}
	}
	return json.Marshal(root)
}

func splitPointer(p string) []string {
	if p == "" {
		return nil
	}
	parts := strings.Split(p[1:], "/")
	for i, s := range parts {
		parts[i] = strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
	}
	return parts
}

func applyOp(node any, path []string, kind string, value any) (any, error) {
	if len(path) == 0 {
		if kind == "remove" {
			return nil, fmt.Errorf("cannot remove the root")
		}
		return value, nil
	}
	key, last := path[0], len(path) == 1
	switch n := node.(type) {
	case map[string]any:
		child, ok := n[key]
		if last {
			switch {
			case kind == "add":
				n[key] = value
			case !ok:
				return nil, fmt.Errorf("no member %q", key)
			case kind == "remove":
				delete(n, key)
			default:
				n[key] = value
			}
			return n, nil
		}
		if !ok {
			return nil, fmt.Errorf("no member %q", key)
		}
		c, err := applyOp(child, path[1:], kind, value)
		n[key] = c
		return n, err
	case []any:
		i := len(n)
		if key != "-" {
			var err error
			if i, err = strconv.Atoi(key); err != nil || i < 0 || i > len(n) {
				return nil, fmt.Errorf("bad index %q", key)
			}
		}
		if last {
			switch kind {
			case "add":
				return append(n[:i], append([]any{value}, n[i:]...)...), nil
			case "remove":
				if i == len(n) {
					return nil, fmt.Errorf("index %d out of range", i)
				}
				return append(n[:i], n[i+1:]...), nil
			default:
				if i == len(n) {
					return nil, fmt.Errorf("index %d out of range", i)
				}
				n[i] = value
				return n, nil
			}
		}
		if i == len(n) {
			return nil, fmt.Errorf("index %d out of range", i)
		}
		c, err := applyOp(n[i], path[1:], kind, value)
		n[i] = c
		return n, err
	}
	return nil, fmt.Errorf("cannot step into %T at %q", node, key)
}
