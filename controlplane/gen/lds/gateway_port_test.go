package lds_test

import (
	"slices"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiff-mesh/skiff/controlplane/gen/cds/gentest"
	"github.com/skiff-mesh/skiff/controlplane/gen/lds"
	"github.com/skiff-mesh/skiff/controlplane/gen/rds"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// A gateway listens for a server on the target port of its Service's port
// of that number, as Istio's does: Bookinfo's Gateway says port 80 and
// istio-ingressgateway maps 80 to 8080, so the listener is 0.0.0.0_8080
// with route "http.8080". A server whose port the Service does not map
// listens on its own number.
func TestGatewayListensOnServiceTargetPort(t *testing.T) {
	objs := append(gentest.Sample(t, "bookinfo/platform/kube/bookinfo.yaml"), gentest.Sample(t, "bookinfo/networking/bookinfo-gateway.yaml")...)
	objs = append(objs, gentest.Decode(t, "gateway.yaml", `apiVersion: v1
kind: Service
metadata: {name: istio-ingressgateway, namespace: istio-system, labels: {istio: ingressgateway}}
spec:
  selector: {istio: ingressgateway}
  ports:
  - {name: http2, port: 80, targetPort: 8080}
  - {name: https, port: 443, targetPort: 8443}
---
apiVersion: v1
kind: Pod
metadata: {name: istio-ingressgateway-1, namespace: istio-system, labels: {istio: ingressgateway}}
spec: {containers: [{name: istio-proxy, image: proxyv2}]}
status: {podIP: 10.9.0.1, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: other, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 9000, name: http-other, protocol: HTTP}, hosts: ["*"]}]
`)...)
	ix := gentest.Index(gentest.WithPods(objs))
	p := &xds.Proxy{ID: "istio-ingressgateway-1.istio-system", Type: xds.RouterProxy, IPs: []string{"10.9.0.1"},
		Namespace: "istio-system", Labels: map[string]string{"istio": "ingressgateway"}}
	var got []string
	for _, r := range lds.Generate(p, ix) {
		got = append(got, r.Name)
	}
	if want := []string{"0.0.0.0_8080", "0.0.0.0_9000"}; !slices.Equal(got, want) {
		t.Errorf("gateway listeners %v, want %v", got, want)
	}
	if got, want := rds.RouteNames(p, ix), []string{"http.8080", "http.9000"}; !slices.Equal(got, want) {
		t.Errorf("gateway routes %v, want %v", got, want)
	}
	var rc routev3.RouteConfiguration
	if err := rds.Generate(p, ix, []string{"http.8080"})[0].Message.(*anypb.Any).UnmarshalTo(&rc); err != nil {
		t.Fatal(err)
	}
	if len(rc.GetVirtualHosts()) != 1 || rc.GetVirtualHosts()[0].GetDomains()[0] != "*" {
		t.Errorf("http.8080 holds %v, want Bookinfo's virtual host for *", rc.GetVirtualHosts())
	}
}
