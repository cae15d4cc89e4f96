package inject_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/skiff-mesh/skiff/cli/kubeinject"
	"github.com/skiff-mesh/skiff/controlplane/inject"
	"github.com/skiff-mesh/skiff/internal/testing/golden"
)

const samples = "../../../shared/istio-samples"

// optionsFor reads the variant from the file name: NAME.native.yaml is
// injected with native sidecars, cni.yaml with the CNI option.
func optionsFor(name string) inject.Options {
	var o inject.Options
	o.NativeSidecar = strings.Contains(name, ".native.")
	o.CNI = strings.HasPrefix(filepath.Base(name), "cni")
	return o
}

// TestGolden runs kube-inject over every testdata/*.yaml and pins the
// output in NAME.yaml.injected (go test -update rewrites them).
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) < 10 {
		t.Fatalf("testdata inputs: %v (%d files)", err, len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			in, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out, _, err := kubeinject.Inject(f, in, optionsFor(f))
			if err != nil {
				t.Fatal(err)
			}
			golden.Compare(t, f+".injected", out)
		})
	}
}

// TestSamples injects Istio's sample manifests: every Deployment gets the
// sidecar, every other document comes out exactly as it went in.
func TestSamples(t *testing.T) {
	for _, s := range []string{
		"bookinfo/platform/kube/bookinfo.yaml",
		"httpbin/httpbin.yaml",
		"curl/curl.yaml",
		"helloworld/helloworld.yaml",
		"tcp-echo/tcp-echo.yaml",
	} {
		t.Run(s, func(t *testing.T) {
			in, err := os.ReadFile(filepath.Join(samples, s))
			if err != nil {
				t.Fatal(err)
			}
			out, warnings, err := kubeinject.Inject(s, in, inject.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if len(warnings) > 0 {
				t.Errorf("warnings: %q", warnings)
			}
			inDocs, outDocs := docs(t, in), docs(t, out)
			if len(inDocs) != len(outDocs) {
				t.Fatalf("%d documents in, %d out", len(inDocs), len(outDocs))
			}
			deployments := 0
			for i, d := range inDocs {
				o := outDocs[i]
				if d["kind"] != "Deployment" {
					if !equalYAML(t, d, o) {
						t.Errorf("document %d (%v) changed", i, d["kind"])
					}
					continue
				}
				deployments++
				spec := o["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
				containers := spec["containers"].([]any)
				if first := containers[0].(map[string]any); first["name"] != "istio-proxy" {
					t.Errorf("document %d: first container %v, want istio-proxy", i, first["name"])
				}
				if ic := spec["initContainers"].([]any); ic[0].(map[string]any)["name"] != "istio-init" {
					t.Errorf("document %d: no istio-init", i)
				}
			}
			if deployments == 0 {
				t.Fatal("sample has no Deployment")
			}
			golden.Compare(t, filepath.Join("testdata", "samples", filepath.Base(s)+".injected"), out)
		})
	}
}

func docs(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, part := range strings.Split("\n"+string(b), "\n---") {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(part), &m); err != nil {
			t.Fatal(err)
		}
		if m != nil {
			out = append(out, m)
		}
	}
	return out
}

func equalYAML(t *testing.T, a, b map[string]any) bool {
	ja, _ := yaml.Marshal(a)
	jb, _ := yaml.Marshal(b)
	return string(ja) == string(jb)
}
