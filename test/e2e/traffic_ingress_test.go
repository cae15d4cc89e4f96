package e2e

import (
	"fmt"
	"testing"
)

// versionServices are Bookinfo's reviews-v1 and reviews-v2 Services (as
// the Gateway API samples' backendRefs name them), each selecting one
// version's pod, at the given addresses.
func versionServices(v1IP, v2IP string) string {
	var out string
	for _, v := range []string{"v1", "v2"} {
		ip := v1IP
		if v == "v2" {
			ip = v2IP
		}
		out += fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: reviews-%s, namespace: default}
spec:
  selector: {app: reviews, version: %s}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-%s, namespace: default, labels: {app: reviews, version: %s}}
spec: {containers: [{name: app, image: reviews, ports: [{containerPort: 9080}]}]}
status: {podIP: %s, conditions: [{type: Ready, status: "True"}]}
---
`, v, v, v, v, ip)
	}
	return out
}

// Istio's ingress task with the Gateway API: a Gateway of class istio and
// an HTTPRoute splitting 90/10 between reviews-v1 and reviews-v2; the
// gateway proxy is the one labelled with the Gateway's name.
func TestTrafficIngressGatewayAPI(t *testing.T) {
	serveHTTP(t, "127.0.8.1:9080", named("reviews-v1"))
	serveHTTP(t, "127.0.8.2:9080", named("reviews-v2"))
	port := freePort(t)
	m := startMesh(t, map[string]string{
		"reviews.yaml": versionServices("127.0.8.1", "127.0.8.2"),
		"gateway.yaml": fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: bookinfo-gateway
  namespace: default
spec:
  gatewayClassName: istio
  listeners:
  - name: http
    port: %d
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Same
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews
  namespace: default
spec:
  parentRefs:
  - name: bookinfo-gateway
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /reviews
    backendRefs:
    - name: reviews-v1
      port: 9080
      weight: 90
    - name: reviews-v2
      port: 9080
      weight: 10
`, port),
	})
	m.proxy("router~127.0.0.1~bookinfo-gateway-istio-1.default~default.svc.cluster.local",
		"{NAMESPACE: default, LABELS: {gateway.networking.k8s.io/gateway-name: bookinfo-gateway}}")
	url := fmt.Sprintf("http://127.0.0.1:%d/reviews/0", port)
	send := func() result { return get(client, url, "bookinfo.example") }
	eventually(t, "the HTTPRoute through the gateway", func() (bool, string) {
		r := send()
		return r.String() == "200 reviews-v1", r.String()
	})
	if r := get(client, fmt.Sprintf("http://127.0.0.1:%d/other", port), "bookinfo.example"); r.code != 404 {
		t.Errorf("a path the HTTPRoute does not match: %s, want 404", r)
	}
	const n = 300
	counts := tally(n, send)
	if counts["200 reviews-v1"]+counts["200 reviews-v2"] != n {
		t.Fatalf("90/10: answers outside v1 and v2: %v", counts)
	}
	within(t, "reviews-v1 under 90/10", counts["200 reviews-v1"], n, 0.9, counts)
}
