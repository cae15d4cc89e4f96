package lds

import (
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/gen/index/indextest"
)

// TestSamplesAccepted generates the listeners and routes of every
// workload's sidecar and of the ingress gateway for Istio's other
// samples, and checks skiff-proxy accepts them all.
func TestSamplesAccepted(t *testing.T) {
	sets := map[string][]string{
		"httpbin":    {"httpbin/httpbin.yaml", "httpbin/httpbin-gateway.yaml"},
		"helloworld": {"helloworld/helloworld.yaml", "helloworld/helloworld-gateway.yaml"},
		"websockets": {"websockets/app.yaml", "websockets/route.yaml"},
		"grpc-echo":  {"grpc-echo/grpc-echo.yaml", "curl/curl.yaml"},
		"tcp-echo":   {"tcp-echo/tcp-echo-services.yaml", "tcp-echo/tcp-echo-20-v2.yaml", "tcp-echo/tcp-echo-all-v1.yaml"},
	}
	for name, files := range sets {
		t.Run(name, func(t *testing.T) {
			var objs []*config.Object
			for _, f := range files {
				objs = append(objs, indextest.Sample(t, f)...)
			}
			ix := indextest.Build(indextest.Mesh(objs))
			if len(ix.Registry().Workloads()) == 0 {
				t.Fatal("no workloads")
			}
			for _, w := range ix.Registry().Workloads() {
				ls := listenersOf(t, indextest.SidecarFor(t, ix, w.Namespace, w.Name), ix)
				mustHave(t, w.Name, ls, "virtualOutbound", "virtualInbound")
			}
			listenersOf(t, ingress, ix)
		})
	}
}

func mustHave(t *testing.T, who string, ls []*listenerv3.Listener, names ...string) {
	t.Helper()
	have := map[string]bool{}
	for _, l := range ls {
		have[l.GetName()] = true
	}
	for _, n := range names {
		if !have[n] {
			t.Errorf("%s: no listener %q", who, n)
		}
	}
}
