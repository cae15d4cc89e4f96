package install

import (
	"bytes"
	"context"
	"flag"
	"io"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/skiff-mesh/skiff/controlplane/server"
	"github.com/skiff-mesh/skiff/dataplane/agentcmd"
)

func deployment(t *testing.T, m *Manifest, name string) *appsv1.Deployment {
	t.Helper()
	for _, o := range m.Objects {
		if o.GetKind() == "Deployment" && o.GetName() == name {
			var d appsv1.Deployment
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d); err != nil {
				t.Fatal(err)
			}
			return &d
		}
	}
	t.Fatalf("no Deployment %s", name)
	return nil
}

// TestIstiodArgs: skiffd takes the istiod container's command line.
func TestIstiodArgs(t *testing.T) {
	for _, rev := range []string{"", "canary"} {
		v, _ := ProfileValues("minimal")
		v.Revision = rev
		m, err := Generate(v)
		if err != nil {
			t.Fatal(err)
		}
		c := deployment(t, m, v.IstiodName()).Spec.Template.Spec.Containers[0]
		fs := flag.NewFlagSet("skiffd", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var o server.Options
		o.RegisterFlags(fs)
		fs.String("log-level", "", "") // cmd/skiffd's own flags
		fs.Int("gc-percent", 0, "")
		if err := fs.Parse(c.Args); err != nil || fs.NArg() != 0 {
			t.Fatalf("skiffd rejects %q: %v", c.Args, err)
		}
		if o.Kubeconfig != "in-cluster" || o.MeshConfigFile != "/etc/istio/config/mesh" || o.WebhookAddr != ":15017" {
			t.Errorf("skiffd options from %q: %+v", c.Args, o)
		}
		if want := map[string]string{"": "", "canary": "https://istiod-canary.istio-system.svc:443"}[rev]; o.WebhookURL != want {
			t.Errorf("revision %q: --webhook-url %q, want %q", rev, o.WebhookURL, want)
		}
	}
}

// TestGatewayBootstrap runs the gateway container's command line, with the
// environment the kubelet would give the pod, through skiff-proxy's
// pilot-agent job up to the bootstrap it would start with.
func TestGatewayBootstrap(t *testing.T) {
	m := generate(t, "demo", "revision=canary")
	for _, name := range []string{"istio-ingressgateway", "istio-egressgateway"} {
		d := deployment(t, m, name)
		c := d.Spec.Template.Spec.Containers[0]
		fields := map[string]string{"metadata.name": name + "-7d4f9", "metadata.namespace": "istio-system",
			"status.podIP": "10.1.2.3", "status.hostIP": "10.0.0.1", "spec.nodeName": "node-1",
			"spec.serviceAccountName": d.Spec.Template.Spec.ServiceAccountName}
		var vars []string
		for _, e := range c.Env {
			val := e.Value
			switch {
			case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
				val = fields[e.ValueFrom.FieldRef.FieldPath]
			case e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil:
				val = map[string]string{"limits.cpu": "2", "limits.memory": "1073741824"}[e.ValueFrom.ResourceFieldRef.Resource]
			}
			if val == "" {
				t.Fatalf("%s: env %s has no value", name, e.Name)
			}
			vars = append(vars, e.Name+"="+val)
		}
		if c.Args[0] != "proxy" {
			t.Fatalf("%s: args %q do not start with the proxy verb", name, c.Args)
		}
		args := append([]string{}, c.Args[1:]...)
		for i, a := range args {
			args[i] = strings.ReplaceAll(a, "$(POD_NAMESPACE)", "istio-system") // the kubelet's expansion
		}
		var out, errb bytes.Buffer
		code := agentcmd.RunProxy(context.Background(), append(args, "--print-bootstrap"), agentcmd.Environ{Vars: vars, Root: t.TempDir()}, &out, &errb)
		if code != 0 {
			t.Fatalf("%s: skiff-proxy %q: exit %d: %s", name, c.Args, code, errb.String())
		}
		for _, want := range []string{"router~10.1.2.3~" + name + "-7d4f9.istio-system~istio-system.svc.cluster.local",
			"istiod-canary.istio-system.svc"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%s: the bootstrap lacks %q:\n%s", name, want, out.String())
			}
		}
	}
}
