package e2e

import (
	"bufio"
	"context"
	"fmt"
	"github.com/skiff-mesh/skiff/internal/testing/proxytest"
	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/controlplane/server"
	"github.com/skiff-mesh/skiff/dataplane/proxy"
)

// The traffic_*_test.go files replay Istio's traffic-management task pages
// (request routing, traffic shifting, fault injection, timeouts, circuit
// breaking, mirroring, ingress, egress) with skiffd and skiff-proxy
// in-process. Until traffic capture exists, clients reach the mesh through
// an ingress gateway's bound listener or a client sidecar's egress listener
// bound by a Sidecar resource.

const samples = "/work/shared/istio-samples"

// trafficMesh is one skiffd serving the YAML files of a temp directory.
type trafficMesh struct {
	t   *testing.T
	dir string
	cp  *server.Server
	ctx context.Context
}

// startMesh writes files (name → YAML) and starts skiffd on them.
func startMesh(t *testing.T, files map[string]string) *trafficMesh {
	t.Helper()
	m := &trafficMesh{t: t, dir: t.TempDir()}
	for name, content := range files {
		m.apply(name, content)
	}
	cp, err := server.New(server.Options{ConfigDir: m.dir, XDSAddr: "127.0.0.1:0", MonitoringAddr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	m.cp = cp
	ctx, cancel := context.WithCancel(context.Background())
	m.ctx = ctx
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("skiffd: %v", err)
		}
	})
	return m
}

// apply writes (or rewrites) one config file in skiffd's watched directory.
func (m *trafficMesh) apply(name, content string) {
	m.t.Helper()
	write(m.t, m.dir, name, content)
}

// sample is an upstream Istio sample file's content, unchanged.
func sample(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(samples, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// proxy starts a skiff-proxy bootstrapped over ADS to skiffd as nodeID with
// the given node metadata (a YAML flow map) and waits for its first config.
func (m *trafficMesh) proxy(nodeID, metadata string) *proxy.Proxy {
	t := m.t
	t.Helper()
	return proxytest.Start(t, xdsres.ADSBootstrap(m.cp.XDSAddr().String(), nodeID, metadata, false))
}

// ingress starts an ingress gateway proxy selected by {istio: ingressgateway}.
func (m *trafficMesh) ingress() *proxy.Proxy {
	return m.proxy("router~127.0.0.1~istio-ingressgateway-1.istio-system~istio-system.svc.cluster.local",
		"{NAMESPACE: istio-system, LABELS: {istio: ingressgateway}}")
}

// sidecar starts the client workload's sidecar: a pod "client" in
// namespace default labelled app=client, whose Sidecar resource binds
// egress listeners.
func (m *trafficMesh) sidecar() *proxy.Proxy {
	return m.proxy("sidecar~127.0.0.9~client.default~default.svc.cluster.local",
		"{NAMESPACE: default, LABELS: {app: client}, SERVICE_ACCOUNT: client, WORKLOAD_NAME: client, INSTANCE_IPS: 127.0.0.9}")
}

// clientSidecar is a Sidecar resource for the client workload binding an
// HTTP egress listener on bind:port; extra is appended to the spec.
func clientSidecar(bind string, port int, extra string) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: client, namespace: default}
spec:
  workloadSelector: {labels: {app: client}}
  egress:
  - port: {number: %d, protocol: HTTP, name: http}
    bind: %s
    hosts: ["./*"]
%s`, port, bind, extra)
}

// service is a Kubernetes Service named name on port (with a port name
// giving its protocol) and one ready Pod per version at the given address.
func service(name, portName string, port int, pods map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: v1
kind: Service
metadata: {name: %s, namespace: default, labels: {app: %s, service: %s}}
spec:
  selector: {app: %s}
  ports: [{name: %s, port: %d}]
`, name, name, name, name, portName, port)
	for version, ip := range pods {
		fmt.Fprintf(&b, `---
apiVersion: v1
kind: Pod
metadata: {name: %s-%s, namespace: default, labels: {app: %s, version: %s}}
spec: {containers: [{name: app, image: %s, ports: [{containerPort: %d}]}]}
status: {podIP: %s, conditions: [{type: Ready, status: "True"}]}
`, name, version, name, version, name, port, ip)
	}
	return b.String()
}

// httpBackend serves HTTP on addr with h and records the Host header of
// every request it sees.
type httpBackend struct {
	mu    sync.Mutex
	hosts []string
}

func (b *httpBackend) seen() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.hosts...)
}

func serveHTTP(t *testing.T, addr string, h http.HandlerFunc) *httpBackend {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("backend on %s: %v", addr, err)
	}
	b := &httpBackend{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.hosts = append(b.hosts, r.Host)
		b.mu.Unlock()
		h(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return b
}

// named answers with its name, as Bookinfo's versions tell themselves apart.
func named(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, name) }
}

// result is what a client saw: status code and body, or the error.
type result struct {
	code    int
	body    string
	header  http.Header
	elapsed time.Duration
}

func (r result) String() string { return fmt.Sprintf("%d %s", r.code, r.body) }

// get sends GET url with the Host header host and extra headers (name,
// value pairs) through client c.
func get(c *http.Client, url, host string, hdr ...string) result {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return result{body: err.Error()}
	}
	req.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return result{body: "error: " + err.Error(), elapsed: time.Since(start)}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return result{code: resp.StatusCode, body: string(body), header: resp.Header, elapsed: time.Since(start)}
}

var client = &http.Client{Timeout: 5 * time.Second}

// tally sends n requests and counts the answers by "code body".
func tally(n int, send func() result) map[string]int {
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		counts[send().String()]++
	}
	return counts
}

// within fails unless got lies within ±5 standard deviations of a binomial
// count with n trials and probability p.
func within(t *testing.T, what string, got, n int, p float64, counts map[string]int) {
	t.Helper()
	mean := float64(n) * p
	sd := 0.0
	if v := mean * (1 - p); v > 0 {
		sd = math.Sqrt(v)
	}
	if f := float64(got); f < mean-5*sd || f > mean+5*sd {
		t.Fatalf("%s: %d of %d, want %.0f ± %.0f; all answers: %v", what, got, n, mean, 5*sd, counts)
	}
}

// tcpEcho is Istio's tcp-echo server: it answers each line with its name
// and the line.
func tcpEcho(t *testing.T, addr, name string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("tcp-echo on %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				fmt.Fprintf(c, "%s %s", name, line)
			}()
		}
	}()
}

// echoOnce sends one line over a new TCP connection to addr and returns
// the answer line.
func echoOnce(addr, line string) string {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "error: " + err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintf(c, "%s\n", line)
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "error: " + err.Error()
	}
	return strings.TrimSuffix(got, "\n")
}

// adminGet fetches path from the proxy's admin API.
func adminGet(t *testing.T, p *proxy.Proxy, path string) string {
	t.Helper()
	r := get(client, "http://"+p.AdminAddr().String()+path, p.AdminAddr().String())
	if r.code != http.StatusOK {
		t.Fatalf("admin %s: %s", path, r)
	}
	return r.body
}
