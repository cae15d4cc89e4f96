package kubetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
)

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

const crdEstablishTimeout = 2 * time.Minute

// CRDFiles lists the CRD manifests Start installs: Istio's
// (../shared/istio-crds/crd-all.gen.yaml beside the repository) and the
// Gateway API's of the channel ("experimental" or "standard") from the
// sigs.k8s.io/gateway-api module that go.mod pins.
func CRDFiles(channel string) ([]string, error) {
	if channel == "" {
		channel = "experimental"
	}
	if channel != "experimental" && channel != "standard" {
		return nil, fmt.Errorf("Options.GatewayAPIChannel %q: want \"experimental\" or \"standard\"", channel)
	}
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	istio := filepath.Join(root, "..", "shared", "istio-crds", "crd-all.gen.yaml")
	if _, err := os.Stat(istio); err != nil {
		return nil, fmt.Errorf("Istio CRDs: %v (expected beside the repository at ../shared/istio-crds)", err)
	}
	files := []string{istio}

	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("locating sigs.k8s.io/gateway-api: go list -m: %v: %s", err, stderr.String())
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return nil, fmt.Errorf("sigs.k8s.io/gateway-api is not in the module cache: run 'go mod download sigs.k8s.io/gateway-api' in %s", root)
	}
	gw, err := filepath.Glob(filepath.Join(dir, "config", "crd", channel, "*.yaml"))
	if err != nil || len(gw) == 0 {
		return nil, fmt.Errorf("no Gateway API CRDs in %s", filepath.Join(dir, "config", "crd", channel))
	}
	sort.Strings(gw)
	return append(files, gw...), nil
}

// installCRDs creates every CustomResourceDefinition in the CRD files (other
// documents, such as kustomization files or admission policies, are left out)
// and waits until all are Established.
func (e *Env) installCRDs(channel string) (int, error) {
	files, err := CRDFiles(channel)
	if err != nil {
		return 0, err
	}
	dyn, err := dynamic.NewForConfig(e.RESTConfig())
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), crdEstablishTimeout)
	defer cancel()
	var names []string
	for _, f := range files {
		crds, err := readCRDs(f)
		if err != nil {
			return 0, err
		}
		for _, crd := range crds {
			_, err := dyn.Resource(crdGVR).Create(ctx, crd, metav1.CreateOptions{FieldManager: "kubetest"})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				return 0, fmt.Errorf("creating CRD %s from %s: %v", crd.GetName(), f, err)
			}
			names = append(names, crd.GetName())
		}
	}
	return len(names), waitEstablished(ctx, dyn, names)
}

func readCRDs(path string) ([]*unstructured.Unstructured, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 64<<10)
	var crds []*unstructured.Unstructured
	for i := 1; ; i++ {
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			if errors.Is(err, io.EOF) {
				return crds, nil
			}
			return nil, fmt.Errorf("%s: document %d: %v", path, i, err)
		}
		u := &unstructured.Unstructured{Object: obj}
		if obj == nil || u.GetKind() != "CustomResourceDefinition" {
			continue
		}
		crds = append(crds, u)
	}
}

func waitEstablished(ctx context.Context, dyn dynamic.Interface, names []string) error {
	pending := map[string]string{}
	for _, n := range names {
		pending[n] = "not listed yet"
	}
	for {
		list, err := dyn.Resource(crdGVR).List(ctx, metav1.ListOptions{})
		if err == nil {
			for _, item := range list.Items {
				if _, ok := pending[item.GetName()]; !ok {
					continue
				}
				if established, why := crdEstablished(&item); established {
					delete(pending, item.GetName())
				} else {
					pending[item.GetName()] = why
				}
			}
			if len(pending) == 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			var lines []string
			for n, why := range pending {
				lines = append(lines, n+": "+why)
			}
			sort.Strings(lines)
			return fmt.Errorf("CRDs not Established within %v (list error: %v):\n%s", crdEstablishTimeout, err, strings.Join(lines, "\n"))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func crdEstablished(crd *unstructured.Unstructured) (bool, string) {
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	why := "no Established condition"
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" {
			if m["status"] == "True" {
				return true, ""
			}
			why = fmt.Sprintf("Established=%v: %v", m["status"], m["message"])
		}
		if m["type"] == "NamesAccepted" && m["status"] == "False" {
			return false, fmt.Sprintf("NamesAccepted=False: %v", m["message"])
		}
	}
	return false, why
}
