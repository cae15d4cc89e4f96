package analyze

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skiff-mesh/skiff/controlplane/analyze"
	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/config/validation"
)

const samples = "../../../shared/istio-samples"

// analyzeFiles runs the CLI's loading and the analyzers over files, as
// Run does, and returns the messages.
func analyzeFiles(t *testing.T, opts analyze.Options, files ...string) []analyze.Message {
	t.Helper()
	var paths []string
	for _, f := range files {
		p := filepath.Join(samples, f)
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("sample missing: %v", err)
		}
		paths = append(paths, p)
	}
	files, err := gather(paths, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	objs, schema, parse := load(config.NewStore(validation.Validate, nil), files)
	if len(parse) > 0 {
		t.Fatalf("samples do not parse: %v", parse)
	}
	return append(analyze.SchemaMessages(schema), analyze.Analyze(objs, opts)...)
}

func codes(ms []analyze.Message, min analyze.Level) []string {
	var out []string
	for _, m := range ms {
		if m.Type.Level >= min {
			out = append(out, m.String())
		}
	}
	return out
}

var bookinfoBase = []string{
	"bookinfo/platform/kube/bookinfo.yaml",
	"bookinfo/platform/kube/bookinfo-ratings-v2.yaml",
	"bookinfo/platform/kube/bookinfo-details-v2.yaml",
	"bookinfo/networking/destination-rule-all.yaml",
	"bookinfo/networking/bookinfo-gateway.yaml",
}

// Consistent sets of Istio's samples: no Errors on the local mesh.
func TestSamplesConsistentSetsHaveNoErrors(t *testing.T) {
	sets := [][]string{
		{"bookinfo/platform/kube/bookinfo.yaml", "bookinfo/networking/destination-rule-all.yaml", "bookinfo/networking/virtual-service-all-v1.yaml"},
		{"bookinfo/platform/kube/bookinfo.yaml", "bookinfo/networking/destination-rule-all-mtls.yaml", "bookinfo/networking/virtual-service-all-v1.yaml", "bookinfo/networking/bookinfo-gateway.yaml"},
		{"helloworld"}, {"httpbin/httpbin.yaml", "httpbin/httpbin-gateway.yaml"}, {"curl"}, {"grpc-echo"}, {"websockets"},
		{"tcp-echo/tcp-echo-services.yaml", "tcp-echo/tcp-echo-all-v1.yaml"},
	}
	for _, vs := range []string{
		"virtual-service-all-v1.yaml", "virtual-service-details-v2.yaml", "virtual-service-ratings-db.yaml",
		"virtual-service-ratings-test-abort.yaml", "virtual-service-ratings-test-delay.yaml",
		"virtual-service-reviews-50-v3.yaml", "virtual-service-reviews-80-20.yaml", "virtual-service-reviews-90-10.yaml",
		"virtual-service-reviews-jason-v2-v3.yaml", "virtual-service-reviews-test-v2.yaml",
		"virtual-service-reviews-v2-v3.yaml", "virtual-service-reviews-v3.yaml", "egress-rule-google-apis.yaml",
	} {
		sets = append(sets, append(append([]string{}, bookinfoBase...), "bookinfo/networking/"+vs))
	}
	for _, set := range sets {
		t.Run(strings.Join(set, "+"), func(t *testing.T) {
			if errs := codes(analyzeFiles(t, analyze.Options{LocalMesh: true}, set...), analyze.Error); len(errs) > 0 {
				t.Errorf("false errors:\n%s", strings.Join(errs, "\n"))
			}
		})
	}
	// The first set is clean of warnings too, but for the local mesh's
	// note that the images' entrypoints are not run (IST0133).
	for _, m := range analyzeFiles(t, analyze.Options{LocalMesh: true}, sets[0]...) {
		if m.Type != analyze.SchemaWarning {
			t.Errorf("bookinfo + destination-rule-all + virtual-service-all-v1: unexpected %s", m)
		}
	}
}

// Deliberately broken sets: the findings Istio's analyzers make.
func TestSamplesBrokenSets(t *testing.T) {
	cases := []struct {
		name  string
		opts  analyze.Options
		files []string
		want  []string // substrings of the Error and Warning messages, in order
	}{{
		name:  "gateway and routes without the app or an ingress gateway (kubernetes)",
		files: []string{"bookinfo/networking/bookinfo-gateway.yaml"},
		want: []string{
			`Error [IST0101] (Gateway default/bookinfo-gateway ../../../shared/istio-samples/bookinfo/networking/bookinfo-gateway.yaml:9) Referenced selector not found: "istio=ingressgateway"`,
			`Error [IST0101] (VirtualService default/bookinfo ../../../shared/istio-samples/bookinfo/networking/bookinfo-gateway.yaml:41) Referenced host not found: "productpage"`,
		},
	}, {
		name:  "routes to subsets no DestinationRule defines",
		opts:  analyze.Options{LocalMesh: true},
		files: []string{"bookinfo/platform/kube/bookinfo.yaml", "bookinfo/networking/virtual-service-reviews-50-v3.yaml"},
		want: []string{
			`Error [IST0101] (VirtualService default/reviews ../../../shared/istio-samples/bookinfo/networking/virtual-service-reviews-50-v3.yaml:12) Referenced host+subset in destinationrule not found: "reviews+v1"`,
			`Error [IST0101] (VirtualService default/reviews ../../../shared/istio-samples/bookinfo/networking/virtual-service-reviews-50-v3.yaml:16) Referenced host+subset in destinationrule not found: "reviews+v3"`,
		},
	}, {
		name:  "route to a subset whose pods are not deployed",
		opts:  analyze.Options{LocalMesh: true},
		files: append(append([]string{}, bookinfoBase...), "bookinfo/networking/virtual-service-ratings-mysql.yaml"),
		want: []string{
			`Error [IST0173] (DestinationRule default/ratings ../../../shared/istio-samples/bookinfo/networking/destination-rule-all.yaml:42) The Subset v2-mysql defined in the DestinationRule does not select any pods.`,
		},
	}, {
		name:  "a rule after a catch-all",
		opts:  analyze.Options{LocalMesh: true},
		files: []string{"bookinfo/platform/kube/bookinfo.yaml", "bookinfo/networking/fault-injection-details-v1.yaml"},
		want: []string{
			`Warning [IST0130] (VirtualService default/details ../../../shared/istio-samples/bookinfo/networking/fault-injection-details-v1.yaml:18) VirtualService rule #1 not used (only the last rule can have no matches).`,
		},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := codes(analyzeFiles(t, c.opts, c.files...), analyze.Warning)
			var filtered []string
			for _, g := range got {
				if !strings.Contains(g, "[IST0133]") {
					filtered = append(filtered, g)
				}
			}
			if len(filtered) != len(c.want) {
				t.Fatalf("got %d messages, want %d:\n%s", len(filtered), len(c.want), strings.Join(filtered, "\n"))
			}
			for i, w := range c.want {
				if !strings.HasPrefix(filtered[i], w) {
					t.Errorf("message %d:\n got %s\nwant %s…", i, filtered[i], w)
				}
			}
		})
	}
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const brokenVS = `apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  gateways: [bookinfo-gateway]
  http:
  - route:
    - destination: {host: reviews}
`

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestRunReportsErrorsWithExitCode79(t *testing.T) {
	dir := writeFiles(t, map[string]string{"bookinfo.yaml": brokenVS, "notes.txt": "not yaml"})
	code, out, errOut := runCLI(t, dir)
	if code != 79 {
		t.Errorf("exit code %d, want 79; stderr:\n%s", code, errOut)
	}
	file := filepath.Join(dir, "bookinfo.yaml")
	want := `Error [IST0101] (VirtualService default/reviews ` + file + `:13) Referenced gateway not found: "bookinfo-gateway"
  Fix: Create a Gateway named "bookinfo-gateway" in namespace "default", or change spec.gateways[0] to the name of an existing Gateway (namespace/name for one in another namespace).
`
	if out != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}
	if !strings.Contains(errOut, "Analyzers found issues") {
		t.Errorf("stderr lacks the summary: %s", errOut)
	}

	// Below the failure threshold: exit 0; the message still printed.
	if code, out, _ := runCLI(t, "--failure-threshold", "ERROR", "-S", "IST0101=VirtualService reviews.*", dir); code != 0 || out != "" {
		t.Errorf("suppressed: exit %d, stdout %q; want 0 and nothing", code, out)
	}
	// Output threshold hides Info and Warning, never the exit code's cause.
	if code, out, _ := runCLI(t, "--output-threshold", "Error", dir); code != 79 || !strings.Contains(out, "IST0101") {
		t.Errorf("output-threshold Error: exit %d, stdout %q", code, out)
	}
}

func TestRunJSON(t *testing.T) {
	dir := writeFiles(t, map[string]string{"a.yaml": brokenVS})
	code, out, _ := runCLI(t, "-o", "json", dir)
	if code != 0 { // istioctl sets the exit code for the log format only
		t.Errorf("exit code %d, want 0", code)
	}
	var got []map[string]string
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("stdout is not a JSON list: %v\n%s", err, out)
	}
	if len(got) != 1 || got[0]["code"] != "IST0101" || got[0]["level"] != "Error" ||
		got[0]["origin"] != "VirtualService default/reviews" || got[0]["reference"] != filepath.Join(dir, "a.yaml")+":13" ||
		got[0]["message"] != `Referenced gateway not found: "bookinfo-gateway"` ||
		got[0]["documentationUrl"] != "https://istio.io/latest/docs/reference/config/analysis/ist0101/" {
		t.Errorf("json: %v", got)
	}
}

func TestRunCleanInvalidAndUsage(t *testing.T) {
	clean := writeFiles(t, map[string]string{"svc.yaml": `apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80}]
`})
	code, out, errOut := runCLI(t, clean)
	if code != 0 || out != "" || !strings.Contains(errOut, "No validation issues found") {
		t.Errorf("clean: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	invalid := writeFiles(t, map[string]string{"dr.yaml": `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  trafficPolicy:
    loadBalancer: {simple: FASTEST}
`})
	code, out, _ = runCLI(t, invalid)
	if code != 79 || !strings.HasPrefix(out, "Error [IST0106] (DestinationRule default/web "+filepath.Join(invalid, "dr.yaml")+":7) Schema validation error: spec.trafficPolicy.loadBalancer.simple") {
		t.Errorf("invalid: exit %d, stdout %q", code, out)
	}

	syntax := writeFiles(t, map[string]string{"bad.yaml": "kind: [\n"})
	if code, _, errOut := runCLI(t, syntax); code != 65 || !strings.Contains(errOut, "could not be parsed") {
		t.Errorf("syntax error: exit %d, stderr %q; want 65", code, errOut)
	}
	if code, _, _ := runCLI(t, "--ignore-unknown", syntax); code != 0 {
		t.Errorf("syntax error with --ignore-unknown: exit %d, want 0", code)
	}

	for _, args := range [][]string{{}, {"-o", "xml", clean}, {"--failure-threshold", "fatal", clean}, {"--mesh", "cloud", clean}} {
		if code, _, errOut := runCLI(t, args...); code != 64 || errOut == "" {
			t.Errorf("%q: exit %d, stderr %q; want 64 and a message", args, code, errOut)
		}
	}
	if code, _, _ := runCLI(t, filepath.Join(clean, "missing")); code != 1 {
		t.Errorf("missing file: exit %d, want 1", code)
	}
}

// A container without a command is a local-mesh concern (IST0133 warns
// that skiff up cannot run it); for a Kubernetes cluster it is normal, so
// --mesh kubernetes does not report it.
func TestLocalMeshWarningsOnlyForTheLocalMesh(t *testing.T) {
	file := filepath.Join(samples, "bookinfo/platform/kube/bookinfo.yaml")
	for _, tc := range []struct {
		mesh string
		want bool
	}{{"local", true}, {"kubernetes", false}} {
		var out bytes.Buffer
		Run(context.Background(), []string{"--mesh", tc.mesh, file}, &out, io.Discard)
		if got := strings.Contains(out.String(), "[IST0133]"); got != tc.want {
			t.Errorf("--mesh %s: IST0133 reported %v, want %v:\n%s", tc.mesh, got, tc.want, out.String())
		}
	}
}
