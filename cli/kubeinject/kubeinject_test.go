package kubeinject

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func run(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

const deployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: web:1
`

const service = `apiVersion: v1
kind: Service
metadata:
  name: web # a comment kept because the document passes through
spec:
  ports: [{port: 80, name: http}]
`

func TestRunStdinAndFiles(t *testing.T) {
	code, out, errs := run(t, service+"---\n"+deployment, "-f", "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	docs := strings.Split(out, "---\n")
	if len(docs) != 2 || docs[0] != service {
		t.Fatalf("service document changed or documents lost:\n%s", out)
	}
	for _, want := range []string{"name: istio-proxy", "name: istio-init", "ISTIO_META_OWNER", "kubernetes://apis/apps/v1/namespaces/default/deployments/web", "sidecar.istio.io/status"} {
		if !strings.Contains(docs[1], want) {
			t.Errorf("injected deployment lacks %q", want)
		}
	}

	dir := t.TempDir()
	in, outFile := filepath.Join(dir, "in.yaml"), filepath.Join(dir, "out.yaml")
	os.WriteFile(in, []byte(deployment), 0o644)
	cfg := filepath.Join(dir, "inject.yaml")
	os.WriteFile(cfg, []byte("nativeSidecar: true\nimage: registry.local/skiff-proxy:test\n"), 0o644)
	mesh := filepath.Join(dir, "mesh.yaml")
	os.WriteFile(mesh, []byte("trustDomain: example.org\ndefaultConfig:\n  discoveryAddress: skiffd.skiff-system.svc:15012\n"), 0o644)
	if code, _, errs := run(t, "", "-f", in, "-o", outFile, "--injectconfig", cfg, "--meshconfig", mesh); code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	b, err := os.ReadFile(outFile)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	for _, want := range []string{"restartPolicy: Always", "image: registry.local/skiff-proxy:test", "value: example.org", `{"discoveryAddress":"skiffd.skiff-system.svc:15012"}`} {
		if !strings.Contains(got, want) {
			t.Errorf("output with --injectconfig/--meshconfig lacks %q:\n%s", want, got)
		}
	}
	// Injecting the output again changes nothing (already injected).
	code, again, errs := run(t, got, "-f", "-")
	if code != 0 || again != got || !strings.Contains(errs, "already injected") {
		t.Errorf("re-injection: exit %d, changed=%v, stderr %q", code, again != got, errs)
	}
}

func TestRunErrors(t *testing.T) {
	for _, c := range []struct {
		name, stdin string
		args        []string
		code        int
		want        string
	}{
		{"no input", "", nil, 2, "give the input with -f"},
		{"unknown flag", "", []string{"--nope"}, 2, "flag provided but not defined"},
		{"missing file", "", []string{"-f", "/nonexistent/x.yaml"}, 1, "no such file"},
		{"bad yaml line", service + "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: [x\n", []string{"-f", "-"}, 1, "<stdin>:11: not valid YAML"},
		{"bad annotation line", service + "---\n" + strings.Replace(deployment, "      labels: {app: web}\n",
			"      labels: {app: web}\n      annotations:\n        traffic.sidecar.istio.io/includeOutboundIPRanges: 10.0.0.0/33\n", 1),
			[]string{"-f", "-"}, 1, `<stdin>:19: Deployment web: spec.template.metadata.annotations["traffic.sidecar.istio.io/includeOutboundIPRanges"]: "10.0.0.0/33" is not a CIDR`},
		{"wrong field type", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers: 3\n", []string{"-f", "-"}, 1, "<stdin>:1: Pod p:"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, errs := run(t, c.stdin, c.args...)
			if code != c.code || !strings.Contains(errs, c.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, errs, c.code, c.want)
			}
			if code != 0 && out != "" {
				t.Errorf("wrote output on failure: %q", out)
			}
		})
	}
}
