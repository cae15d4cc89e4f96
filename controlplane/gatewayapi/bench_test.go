package gatewayapi

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// BenchmarkConvert converts one Gateway with 1000 HTTPRoutes (each on its
// own host, two weighted backends) and 2000 Services: the scale of the
// control plane's 1000-service target. Convert reruns on every change.
func BenchmarkConvert(b *testing.B) {
	objs := []*config.Object{{
		Kind: config.KubeGateway,
		Meta: metav1.ObjectMeta{Name: "gw", Namespace: "default"},
		Spec: &gatewayv1.GatewaySpec{GatewayClassName: "istio", Listeners: []gatewayv1.Listener{
			{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType, AllowedRoutes: &gatewayv1.AllowedRoutes{
				Namespaces: &gatewayv1.RouteNamespaces{From: ptr(gatewayv1.NamespacesFromAll)}}},
		}},
	}}
	for i := range 1000 {
		ns := fmt.Sprintf("ns-%d", i%50)
		for _, v := range []string{"v1", "v2"} {
			name := fmt.Sprintf("svc-%d-%s", i, v)
			objs = append(objs, &config.Object{Kind: config.Service, Meta: metav1.ObjectMeta{Name: name, Namespace: ns},
				Spec: &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}})
		}
		port := gatewayv1.PortNumber(80)
		ref := func(v string, w int32) gatewayv1.HTTPBackendRef {
			return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{Weight: &w, BackendObjectReference: gatewayv1.BackendObjectReference{
				Name: gatewayv1.ObjectName(fmt.Sprintf("svc-%d-%s", i, v)), Port: &port}}}
		}
		objs = append(objs, &config.Object{
			Kind: config.HTTPRoute,
			Meta: metav1.ObjectMeta{Name: fmt.Sprintf("r-%d", i), Namespace: ns},
			Spec: &gatewayv1.HTTPRouteSpec{
				CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{
					Name: "gw", Namespace: ptr(gatewayv1.Namespace("default"))}}},
				Hostnames: []gatewayv1.Hostname{gatewayv1.Hostname(fmt.Sprintf("app-%d.example.com", i))},
				Rules: []gatewayv1.HTTPRouteRule{{
					Matches:     []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Value: ptr("/api")}}},
					BackendRefs: []gatewayv1.HTTPBackendRef{ref("v1", 90), ref("v2", 10)},
				}},
			},
		})
	}
	b.ReportAllocs()
	for b.Loop() {
		r := Convert(objs, Options{})
		if len(r.Objects) != 1001 {
			b.Fatalf("%d objects, want 1001", len(r.Objects))
		}
	}
}
