// Package e2e runs skiffd and skiff-proxy together on loopback with real
// traffic: config files in, requests through the proxies out.
package e2e

import (
	"context"
	"fmt"
	"github.com/skiff-mesh/skiff/internal/testing/proxytest"
	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/controlplane/server"
)

// backend serves HTTP on addr, naming itself.
func backend(t *testing.T, addr, name string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("backend %s on %s: %v", name, addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

const mesh = `apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: default, labels: {app: reviews, version: v1}}
spec:
  containers: [{name: app, image: reviews, ports: [{containerPort: 9080}]}]
status: {podIP: 127.0.0.2, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2, namespace: default, labels: {app: reviews, version: v2}}
spec:
  containers: [{name: app, image: reviews, ports: [{containerPort: 9080}]}]
status: {podIP: 127.0.0.3, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`

func gateway(port int) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: %d, name: http, protocol: HTTP}
    hosts: ["*"]
`, port)
}

const routeByUser = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
`

const allToV2 = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route: [{destination: {host: reviews, subset: v2}}]
`

const badWeights = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 60}
    - {destination: {host: reviews, subset: v2}, weight: 30}
`

// An ingress gateway fed by skiffd from files routes by header; an edit of
// the file reroutes; a bad edit is refused with its location and traffic
// keeps the previous routing.
func TestSkiffdDrivesGatewayFromFiles(t *testing.T) {
	backend(t, "127.0.0.2:9080", "v1")
	backend(t, "127.0.0.3:9080", "v2")
	dir := t.TempDir()
	port := freePort(t)
	write(t, dir, "mesh.yaml", mesh)
	write(t, dir, "gateway.yaml", gateway(port))
	write(t, dir, "vs.yaml", routeByUser)

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cp, err := server.New(server.Options{ConfigDir: dir, XDSAddr: "127.0.0.1:0", MonitoringAddr: "127.0.0.1:0", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cpDone := make(chan error, 1)
	go func() { cpDone <- cp.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-cpDone; err != nil {
			t.Errorf("skiffd: %v", err)
		}
	}()

	proxytest.Start(t, xdsres.ADSBootstrap(cp.XDSAddr().String(),
		"router~127.0.0.1~ingress-1.default~default.svc.cluster.local", "{NAMESPACE: default, LABELS: {istio: ingressgateway}}", false))

	url := fmt.Sprintf("http://127.0.0.1:%d/reviews/1", port)
	call := func(user string) string {
		req, _ := http.NewRequest("GET", url, nil)
		if user != "" {
			req.Header.Set("end-user", user)
		}
		resp, err := (&http.Client{Timeout: 3 * time.Second}).Do(req)
		if err != nil {
			return "error: " + err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, b)
	}
	eventually(t, "routing by end-user", func() (bool, string) {
		a, b := call(""), call("jason")
		return a == "200 v1 /reviews/1" && b == "200 v2 /reviews/1", a + " | " + b
	})

	write(t, dir, "vs.yaml", allToV2)
	eventually(t, "the edited VirtualService to apply", func() (bool, string) {
		a := call("")
		return a == "200 v2 /reviews/1", a
	})

	write(t, dir, "vs.yaml", badWeights)
	eventually(t, "the bad edit to be reported", func() (bool, string) {
		var msgs []string
		for _, e := range cp.Store().Errors() {
			msgs = append(msgs, e.Error())
		}
		all := strings.Join(msgs, "\n")
		return strings.Contains(all, "vs.yaml:") && strings.Contains(all, "weight") && strings.Contains(all, "100"), all
	})
	for i := 0; i < 10; i++ {
		if a := call(""); a != "200 v2 /reviews/1" {
			t.Fatalf("after the bad edit, request %d: %s (the previous config should still route to v2)", i, a)
		}
	}
}

func eventually(t *testing.T, what string, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		var ok bool
		if ok, last = f(); ok {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not happen within 10s; last: %s", what, last)
}
