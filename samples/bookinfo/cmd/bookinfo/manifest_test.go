package main

import (
	"bytes"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

const (
	localManifest = "../../platform/local/bookinfo.yaml"
	istioManifest = "../../../../../shared/istio-samples/bookinfo/platform/kube/bookinfo.yaml"
)

type manifest struct {
	services    map[string]corev1.Service
	accounts    map[string]corev1.ServiceAccount
	deployments map[string]appsv1.Deployment
}

func readManifest(t *testing.T, path string) manifest {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := manifest{map[string]corev1.Service{}, map[string]corev1.ServiceAccount{}, map[string]appsv1.Deployment{}}
	for _, doc := range bytes.Split(data, []byte("\n---")) {
		var head struct{ Kind string }
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		var err error
		switch head.Kind {
		case "Service":
			var o corev1.Service
			err = yaml.UnmarshalStrict(doc, &o)
			m.services[o.Name] = o
		case "ServiceAccount":
			var o corev1.ServiceAccount
			err = yaml.UnmarshalStrict(doc, &o)
			m.accounts[o.Name] = o
		case "Deployment":
			var o appsv1.Deployment
			err = yaml.UnmarshalStrict(doc, &o)
			m.deployments[o.Name] = o
		}
		if err != nil {
			t.Fatalf("%s: %s: %v", path, head.Kind, err)
		}
	}
	return m
}

// TestLocalManifestMatchesIstios holds the local manifest to Istio's: the
// same objects, names, labels, ports and service accounts, so Istio's
// routing files and docs apply to it unchanged.
func TestLocalManifestMatchesIstios(t *testing.T) {
	local, istio := readManifest(t, localManifest), readManifest(t, istioManifest)
	if len(istio.deployments) != 6 || len(local.deployments) != len(istio.deployments) ||
		len(local.services) != len(istio.services) || len(local.accounts) != len(istio.accounts) {
		t.Fatalf("local has %d services, %d accounts, %d deployments; Istio's %d, %d, %d",
			len(local.services), len(local.accounts), len(local.deployments), len(istio.services), len(istio.accounts), len(istio.deployments))
	}
	for name, want := range istio.services {
		got := local.services[name]
		if !reflect.DeepEqual(got.Labels, want.Labels) || !reflect.DeepEqual(got.Spec, want.Spec) {
			t.Errorf("Service %s: %+v, want %+v", name, got, want)
		}
	}
	for name, want := range istio.accounts {
		if got := local.accounts[name]; !reflect.DeepEqual(got.Labels, want.Labels) {
			t.Errorf("ServiceAccount %s labels %v, want %v", name, got.Labels, want.Labels)
		}
	}
	for name, want := range istio.deployments {
		got, ok := local.deployments[name]
		if !ok {
			t.Errorf("Deployment %s missing", name)
			continue
		}
		g, w := got.Spec.Template, want.Spec.Template
		if !reflect.DeepEqual(got.Labels, want.Labels) || *got.Spec.Replicas != *want.Spec.Replicas ||
			!reflect.DeepEqual(got.Spec.Selector, want.Spec.Selector) || !reflect.DeepEqual(g.Labels, w.Labels) ||
			!reflect.DeepEqual(g.Annotations, w.Annotations) || g.Spec.ServiceAccountName != w.Spec.ServiceAccountName ||
			len(g.Spec.Containers) != 1 {
			t.Errorf("Deployment %s differs from Istio's", name)
			continue
		}
		gc, wc := g.Spec.Containers[0], w.Spec.Containers[0]
		if gc.Name != wc.Name || gc.Image != wc.Image || !reflect.DeepEqual(gc.Ports, wc.Ports) {
			t.Errorf("Deployment %s container %s/%s differs from Istio's %s/%s", name, gc.Name, gc.Image, wc.Name, wc.Image)
		}
		if len(gc.Command) < 2 || gc.Command[0] != "bookinfo" || gc.Command[1] != gc.Name {
			t.Errorf("Deployment %s command %q, want bookinfo %s ...", name, gc.Command, gc.Name)
		}
	}
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// TestLocalManifestCommandsRun starts every container of the local manifest
// as the local mesh would (env from the manifest, downward-API fields filled
// in, $(VAR) expanded) on 127.0.0.1 and asks each for /health.
func TestLocalManifestCommandsRun(t *testing.T) {
	for name, d := range readManifest(t, localManifest).deployments {
		c := d.Spec.Template.Spec.Containers[0]
		vars := map[string]string{}
		for _, e := range c.Env {
			switch {
			case e.ValueFrom == nil:
				vars[e.Name] = e.Value
			case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.podIP":
				vars[e.Name] = "127.0.0.1"
			case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
				vars[e.Name] = name + "-0"
			default:
				t.Fatalf("Deployment %s env %s: a source the test does not fill in", name, e.Name)
			}
		}
		var args []string
		for _, a := range c.Command[1:] {
			a = varRef.ReplaceAllStringFunc(a, func(ref string) string {
				v, ok := vars[ref[2:len(ref)-1]]
				if !ok {
					t.Errorf("Deployment %s: command refers to %s, which its env does not define", name, ref)
				}
				return v
			})
			// Each service on its own free port rather than the pod's 9080.
			args = append(args, strings.Replace(a, "127.0.0.1:9080", "127.0.0.1:0", 1))
		}
		var env []string
		for k, v := range vars {
			env = append(env, k+"="+v)
		}
		p := start(t, env, args...)
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + p.addr + "/health")
		if err != nil {
			t.Errorf("Deployment %s (%q): %v", name, args, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("Deployment %s: /health answered %d", name, resp.StatusCode)
		}
		if !strings.Contains(p.addr, "127.0.0.1:") {
			t.Errorf("Deployment %s listens on %s, not on its POD_IP", name, p.addr)
		}
	}
}
