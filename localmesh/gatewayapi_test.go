package localmesh

import (
	"log/slog"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/config/memory"
)

const gatewaysYAML = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: default}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: other, port: 9080, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: foreign, namespace: default}
spec:
  gatewayClassName: someone-else
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: someone-else}
spec: {controllerName: example.com/gateway-controller}
`

// Each Gateway of Istio's class gets the Deployment and Service Istio's
// automated deployment creates — named GATEWAY-istio, selecting pods by
// gateway.networking.k8s.io/gateway-name, marked to run the gateway
// proxy — listening on each listener's port, or on port+8000 below 1024
// when the supervisor cannot bind it. Another controller's Gateway gets
// none.
func TestGatewayAPIDeployments(t *testing.T) {
	store := config.NewStore(nil, slog.New(slog.DiscardHandler))
	memory.New(store).Apply("gateways.yaml", gatewaysYAML)
	snap := store.Snapshot()

	deps := gatewayAPIDeployments(snap, false)
	if len(deps) != 1 || deps[0].name != "bookinfo-gateway-istio" || deps[0].namespace != "default" {
		t.Fatalf("deployments %+v, want bookinfo-gateway-istio in default only", deps)
	}
	want := []gwPort{{listener: 80, target: 8080, name: "http-80", scheme: "http"}, {listener: 9080, target: 9080, name: "http-9080", scheme: "http"}}
	if got := deps[0].ports; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("unprivileged ports %+v, want %+v", got, want)
	}
	if got := gatewayAPIDeployments(snap, true)[0].ports[0]; got.target != 80 {
		t.Errorf("privileged: listener 80 listens on %d, want 80", got.target)
	}

	objs := deps[0].objects(newServiceVIPs())
	svc := objs[0].Spec.(*corev1.Service)
	dep := objs[1].Spec.(*appsv1.Deployment)
	if svc.Spec.Selector["gateway.networking.k8s.io/gateway-name"] != "bookinfo-gateway" || svc.Spec.Ports[0].Port != 80 ||
		svc.Spec.Ports[0].TargetPort.IntValue() != 8080 || svc.Spec.ClusterIP == "" {
		t.Errorf("service %+v", svc.Spec)
	}
	if !isGatewayPod(&dep.Spec.Template) || dep.Spec.Template.Labels["gateway.networking.k8s.io/gateway-name"] != "bookinfo-gateway" {
		t.Errorf("deployment template %+v is not a gateway pod of bookinfo-gateway", dep.Spec.Template.ObjectMeta)
	}
	// Republishing the same Gateway changes nothing: same resource version.
	if again := deps[0].objects(newServiceVIPs()); again[0].Meta.ResourceVersion != objs[0].Meta.ResourceVersion {
		t.Errorf("resource versions differ for the same Gateway: %q vs %q", again[0].Meta.ResourceVersion, objs[0].Meta.ResourceVersion)
	}
}
