package e2e

import (
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// The local mesh without root captures nothing: each pod has its own
// loopback address, its sidecar says INTERCEPTION_MODE NONE and
// HTTP_PROXY_PORT, and applications send HTTP through HTTP_PROXY. The
// sidecar then gets no capture listeners, an HTTP proxy listener on its
// own address routing by host and port to every service, and VirtualServices
// apply there as on any outbound route; a gateway in that mode binds its
// own address, so several proxies share one host.
func TestExplicitHTTPProxyWithoutCapture(t *testing.T) {
	serveHTTP(t, "127.0.8.1:9080", named("reviews-v1"))
	serveHTTP(t, "127.0.8.2:9080", named("reviews-v2"))
	serveHTTP(t, "127.0.8.3:80", named("web"))
	m := startMesh(t, map[string]string{
		"reviews.yaml": service("reviews", "http", 9080, map[string]string{"v1": "127.0.8.1", "v2": "127.0.8.2"}),
		"web.yaml":     service("web", "http", 80, map[string]string{"v1": "127.0.8.3"}),
		"routing.yaml": `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 18080, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web-gw, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [{route: [{destination: {host: web, port: {number: 80}}}]}]
`,
	})
	p := m.proxy("sidecar~127.0.8.9~client.default~default.svc.cluster.local",
		"{NAMESPACE: default, LABELS: {app: client}, INSTANCE_IPS: 127.0.8.9, INTERCEPTION_MODE: NONE, HTTP_PROXY_PORT: '15080'}")
	m.proxy("router~127.0.8.10~istio-ingressgateway-1.istio-system~istio-system.svc.cluster.local",
		"{NAMESPACE: istio-system, LABELS: {istio: ingressgateway}, INSTANCE_IPS: 127.0.8.10, INTERCEPTION_MODE: NONE}")

	proxyURL, _ := url.Parse("http://127.0.8.9:15080")
	app := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	fetch := func(target string, hdr ...string) string {
		req, _ := http.NewRequest("GET", target, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := app.Do(req)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.Status[:3] + " " + string(b)
	}
	eventually(t, "reviews through the HTTP proxy listener", func() (bool, string) {
		got := fetch("http://reviews:9080/")
		return got == "200 reviews-v1", got
	})
	for _, c := range []struct{ target, want string }{
		{"http://reviews.default:9080/", "200 reviews-v1"},
		{"http://reviews.default.svc.cluster.local:9080/", "200 reviews-v1"},
		{"http://web/", "200 web"}, // port 80: clients leave the port out
		{"http://web:80/", "200 web"},
		{"http://unknown.example:9080/", "502 "},
	} {
		if got := fetch(c.target); got != c.want {
			t.Errorf("GET %s through the proxy: %q, want %q", c.target, got, c.want)
		}
	}
	if got := fetch("http://reviews:9080/", "end-user", "jason"); got != "200 reviews-v2" {
		t.Errorf("the VirtualService's header match through the proxy: %q, want 200 reviews-v2", got)
	}

	dump := adminGet(t, p, "/config_dump")
	for _, absent := range []string{`"virtualOutbound"`, `"virtualInbound"`} {
		if strings.Contains(dump, absent) {
			t.Errorf("a sidecar with INTERCEPTION_MODE NONE has %s; nothing is redirected to it", absent)
		}
	}
	if !strings.Contains(dump, `"127.0.8.9_15080"`) {
		t.Errorf("config_dump has no listener 127.0.8.9_15080 for HTTP_PROXY_PORT")
	}

	// The gateway listens on its own address only.
	eventually(t, "the gateway bound on its own address", func() (bool, string) {
		r := get(client, "http://127.0.8.10:18080/", "anything")
		return r.String() == "200 web", r.String()
	})
	if c, err := net.DialTimeout("tcp", "127.0.8.11:18080", time.Second); err == nil {
		c.Close()
		t.Errorf("the gateway accepted a connection on 127.0.8.11:18080: it should bind 127.0.8.10 only")
	}
}
