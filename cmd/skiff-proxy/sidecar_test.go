package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"gopkg.in/yaml.v3"

	"github.com/skiff-mesh/skiff/controlplane/ca"
	"github.com/skiff-mesh/skiff/controlplane/server"
	"github.com/skiff-mesh/skiff/internal/testing/golden"
)

// The test binary doubles as skiff-proxy, so the sidecar runs as a real
// process (its own exit code, signals, /quitquitquit) without a build step.
const asMainEnv = "SKIFF_PROXY_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		os.Exit(run(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// injectedGolden is the injector's output whose istio-proxy container the
// tests run: its env, args and pod labels, as the kubelet would start it.
const injectedGolden = "../../controlplane/inject/testdata/probes.yaml.injected"

// injected is the istio-proxy container of an injected workload with the
// downward-API values filled in.
type injected struct {
	env         map[string]string
	args        []string
	labels      map[string]string
	annotations map[string]string
}

// loadInjected reads path's pod template and resolves each env entry as the
// kubelet does: values as written, fieldRef and resourceFieldRef from
// downward (keyed by field path or resource), $(VAR) in args.
func loadInjected(t *testing.T, path string, downward map[string]string) *injected {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("injected golden: %v", err)
	}
	type envVar struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			FieldRef *struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
			ResourceFieldRef *struct {
				Resource string `yaml:"resource"`
			} `yaml:"resourceFieldRef"`
		} `yaml:"valueFrom"`
	}
	var doc struct {
		Spec struct {
			Template struct {
				Metadata struct {
					Labels      map[string]string `yaml:"labels"`
					Annotations map[string]string `yaml:"annotations"`
				} `yaml:"metadata"`
				Spec struct {
					Containers []struct {
						Name string   `yaml:"name"`
						Args []string `yaml:"args"`
						Env  []envVar `yaml:"env"`
					} `yaml:"containers"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	tpl := doc.Spec.Template
	for _, c := range tpl.Spec.Containers {
		if c.Name != "istio-proxy" {
			continue
		}
		in := &injected{env: map[string]string{}, labels: tpl.Metadata.Labels, annotations: tpl.Metadata.Annotations}
		for _, e := range c.Env {
			v := e.Value
			if f := e.ValueFrom; f != nil {
				key := ""
				if f.FieldRef != nil {
					key = f.FieldRef.FieldPath
				} else if f.ResourceFieldRef != nil {
					key = f.ResourceFieldRef.Resource
				}
				var ok bool
				if v, ok = downward[key]; !ok {
					t.Fatalf("%s: env %s comes from %q, which the test does not fill in", path, e.Name, key)
				}
			}
			in.env[e.Name] = v
		}
		ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
		for _, a := range c.Args {
			in.args = append(in.args, ref.ReplaceAllStringFunc(a, func(m string) string {
				if v, ok := in.env[m[2:len(m)-1]]; ok {
					return v
				}
				return m
			}))
		}
		return in
	}
	t.Fatalf("%s: no istio-proxy container", path)
	return nil
}

var downwardAPI = map[string]string{
	"metadata.name": "probed-5f7d8c9b4-x2k9q", "metadata.namespace": "default",
	"status.podIP": "10.244.1.7", "status.hostIP": "10.0.0.3", "spec.serviceAccountName": "probed",
	"spec.nodeName": "node-1", "limits.cpu": "2", "limits.memory": "1073741824",
}

// podRoot lays out what the pod's mounts hold under a directory that
// stands for the container's /: the downward-API labels and annotations.
func podRoot(t *testing.T, in *injected) string {
	t.Helper()
	root := t.TempDir()
	write := func(rel string, m map[string]string) {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, "%s=%s\n", k, strconv.Quote(m[k]))
		}
		mustWrite(t, filepath.Join(root, rel), b.String())
	}
	write("etc/istio/pod/labels", in.labels)
	write("etc/istio/pod/annotations", in.annotations)
	return root
}

func mustWrite(t *testing.T, path, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func environ(m map[string]string) []string {
	out := []string{asMainEnv + "=1"}
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// TestPrintBootstrapFromInjectedEnv: the bootstrap built from the
// injector's env and the pod's labels carries the node id and metadata
// Istio puts there.
func TestPrintBootstrapFromInjectedEnv(t *testing.T) {
	in := loadInjected(t, injectedGolden, downwardAPI)
	root := podRoot(t, in)
	cmd := exec.Command(os.Args[0], append(in.args, "--print-bootstrap")...)
	cmd.Dir, cmd.Env = root, environ(in.env)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("skiff-proxy %s --print-bootstrap: %v\n%s", strings.Join(in.args, " "), err, errb.String())
	}
	var b struct {
		Node struct {
			ID       string         `json:"id"`
			Cluster  string         `json:"cluster"`
			Metadata map[string]any `json:"metadata"`
		} `json:"node"`
	}
	if err := json.Unmarshal(out.Bytes(), &b); err != nil {
		t.Fatalf("bootstrap is not JSON: %v\n%s", err, out.String())
	}
	if want := "sidecar~10.244.1.7~probed-5f7d8c9b4-x2k9q.default~default.svc.cluster.local"; b.Node.ID != want {
		t.Errorf("node.id = %q, want %q", b.Node.ID, want)
	}
	if b.Node.Cluster != "probed.default" {
		t.Errorf("node.cluster = %q, want probed.default", b.Node.Cluster)
	}
	md := b.Node.Metadata
	for k, want := range map[string]string{"NAMESPACE": "default", "NAME": "probed-5f7d8c9b4-x2k9q", "SERVICE_ACCOUNT": "probed",
		"INSTANCE_IPS": "10.244.1.7", "WORKLOAD_NAME": "probed", "MESH_ID": "cluster.local", "CLUSTER_ID": "Kubernetes",
		"OWNER": "kubernetes://apis/apps/v1/namespaces/default/deployments/probed", "INTERCEPTION_MODE": "REDIRECT",
		"NODE_NAME": "node-1", "APP_CONTAINERS": "app,worker"} {
		if md[k] != want {
			t.Errorf("node.metadata.%s = %v, want %q", k, md[k], want)
		}
	}
	if l, _ := md["LABELS"].(map[string]any); l["app"] != "probed" || l["security.istio.io/tlsMode"] != "istio" {
		t.Errorf("node.metadata.LABELS = %v, want the pod's labels from /etc/istio/pod/labels", md["LABELS"])
	}
	golden.Compare(t, "testdata/probes.bootstrap.json", out.Bytes())
}

// TestUnknownFlagsWarn: flags pilot-agent has and skiff-proxy does not are
// dropped with a warning, so Istio's own templates start.
func TestUnknownFlagsWarn(t *testing.T) {
	in := loadInjected(t, injectedGolden, downwardAPI)
	root := podRoot(t, in)
	args := append(append([]string{}, in.args...), "--stsPort", "15463", "--log_as_json", "--print-bootstrap")
	cmd := exec.Command(os.Args[0], args...)
	cmd.Dir, cmd.Env = root, environ(in.env)
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("exit: %v\n%s", err, errb.String())
	}
	for _, want := range []string{"ignoring unknown flag --stsPort 15463", "ignoring unknown flag --log_as_json"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errb.String())
		}
	}
}

// TestBadEnvironmentFailsClearly: a broken PROXY_CONFIG or prober list stops
// start-up with the variable named, before anything listens.
func TestBadEnvironmentFailsClearly(t *testing.T) {
	for _, tc := range []struct{ name, value, want string }{
		{"PROXY_CONFIG", `{"discoveryAdress":"x:1"}`, "PROXY_CONFIG"},
		{"PROXY_CONFIG", `{"discoveryAddress":"no-port"}`, "discoveryAddress \"no-port\": want HOST:PORT"},
		{"ISTIO_KUBE_APP_PROBERS", `{"/app-health/app/livez":{"httpGet":{"port":"http"}}}`, `httpGet.port: "http" must be a port number`},
		{"INSTANCE_IP", "", "INSTANCE_IP not set"},
	} {
		in := loadInjected(t, injectedGolden, downwardAPI)
		in.env[tc.name] = tc.value
		root := podRoot(t, in)
		mustWrite(t, filepath.Join(root, "var/run/secrets/istio/root-cert.pem"), "")
		cmd := exec.Command(os.Args[0], append(in.args, "--status-port", "1", "--health-port", "2")...)
		cmd.Dir, cmd.Env = root, environ(in.env)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%s=%s: %v, stderr %q; want exit 2 naming %q", tc.name, tc.value, err, errb.String(), tc.want)
		}
	}
}

// freePorts returns n distinct ports free on 127.0.0.1 (all held open
// until all are chosen, so none repeats).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// syncBuffer collects a child's output for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startSkiffd runs skiffd in-process with its CA and ADS on 127.0.0.1 over
// TLS, trusting one bootstrap token for default/probed. It returns the
// secure address and the trust bundle file.
func startSkiffd(t *testing.T, token string) (addr, rootCert string) {
	t.Helper()
	state := t.TempDir()
	if err := ca.WriteTokenRecords(filepath.Join(state, "tokens.json"), []ca.TokenRecord{
		{SHA256: ca.HashToken(token), Namespace: "default", ServiceAccount: "probed"}}); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Options{
		ConfigDir: t.TempDir(), XDSAddr: "127.0.0.1:0", MonitoringAddr: "127.0.0.1:0", SecureAddr: "127.0.0.1:0",
		CADir: filepath.Join(state, "ca"), BootstrapTokensFile: filepath.Join(state, "tokens.json"),
		RootCertOut: filepath.Join(state, "root-cert.pem"), RootKey: ca.ECDSAP256,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("skiffd: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("skiffd did not stop within 10 s")
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get("http://" + srv.MonitoringAddr().String() + "/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("skiffd not ready within 10 s")
		}
	}
	return srv.SecureAddr().String(), filepath.Join(state, "root-cert.pem")
}

// apps are the pod's application containers the probes reach: an HTTP
// app whose /healthz answers what it is told, an HTTPS worker that wants
// the probe's header, and a gRPC health server.
type apps struct {
	httpPort, grpcPort, httpsPort int
	httpStatus                    atomic.Int32
	httpSrv                       *httptest.Server
	grpcHealth                    *health.Server
}

func startApps(t *testing.T) *apps {
	t.Helper()
	a := &apps{}
	a.httpStatus.Store(200)
	a.httpSrv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(a.httpStatus.Load()))
		io.WriteString(w, "app says "+strconv.Itoa(int(a.httpStatus.Load())))
	}))
	t.Cleanup(a.httpSrv.Close)
	a.httpPort = a.httpSrv.Listener.Addr().(*net.TCPAddr).Port
	worker := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ready" || r.Header.Get("X-Probe") != "kubelet" {
			http.Error(w, "want GET /ready with X-Probe: kubelet", http.StatusTeapot)
			return
		}
		io.WriteString(w, "worker ready")
	}))
	t.Cleanup(worker.Close)
	a.httpsPort = worker.Listener.Addr().(*net.TCPAddr).Port
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	a.grpcHealth = health.NewServer()
	healthpb.RegisterHealthServer(g, a.grpcHealth)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	a.grpcPort = ln.Addr().(*net.TCPAddr).Port
	return a
}

// probersFor rewrites the golden's ISTIO_KUBE_APP_PROBERS to the test apps'
// ports (8080 → HTTP app, 9090 → gRPC, 7070 → HTTPS worker), keeping its
// shape.
func probersFor(t *testing.T, golden string, a *apps) string {
	t.Helper()
	s := golden
	for from, to := range map[string]int{`"port":8080`: a.httpPort, `"port":9090`: a.grpcPort, `"port":7070`: a.httpsPort} {
		if !strings.Contains(s, from) {
			t.Fatalf("ISTIO_KUBE_APP_PROBERS in the golden has no %s: %s", from, golden)
		}
		s = strings.ReplaceAll(s, from, `"port":`+strconv.Itoa(to))
	}
	return s
}

// TestInjectedSidecarLifecycle runs `skiff-proxy proxy sidecar` as a process
// with the injector's env against skiffd over TLS: it gets its certificate
// with the pod's token, becomes ready on the health port, `skiff-proxy
// wait` returns 0, the status port runs the app's probes, and
// /quitquitquit ends the process.
func TestInjectedSidecarLifecycle(t *testing.T) {
	const token = "pod-token-for-probed"
	secureAddr, rootCert := startSkiffd(t, token)
	a := startApps(t)

	downward := map[string]string{}
	for k, v := range downwardAPI {
		downward[k] = v
	}
	downward["status.podIP"] = "127.0.0.1"
	in := loadInjected(t, injectedGolden, downward)
	root := podRoot(t, in)
	roots, err := os.ReadFile(rootCert)
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(root, "var/run/secrets/istio/root-cert.pem"), string(roots))
	mustWrite(t, filepath.Join(root, "var/run/secrets/tokens/istio-token"), token)
	// The addresses only a test must change: skiffd on loopback instead of
	// istiod's service name, no capture (nothing binds 0.0.0.0:15001), and
	// the apps' ports.
	in.env["CA_ADDR"] = secureAddr
	in.env["PROXY_CONFIG"] = fmt.Sprintf(`{"discoveryAddress":%q,"terminationDrainDuration":"1s"}`, secureAddr)
	in.env["ISTIO_META_INTERCEPTION_MODE"] = "NONE"
	in.env["ISTIO_KUBE_APP_PROBERS"] = probersFor(t, in.env["ISTIO_KUBE_APP_PROBERS"], a)

	ports := freePorts(t, 4)
	status, healthPort, prom, adminPort := ports[0], ports[1], ports[2], ports[3]
	args := append(append([]string{}, in.args...), "--bind-address", "127.0.0.1",
		"--status-port", strconv.Itoa(status), "--health-port", strconv.Itoa(healthPort),
		"--prometheus-port", strconv.Itoa(prom), "--admin-port", strconv.Itoa(adminPort))
	cmd := exec.Command(os.Args[0], args...)
	cmd.Dir, cmd.Env = root, environ(in.env)
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() || os.Getenv("SKIFF_TEST_SHOW_LOGS") != "" {
			t.Logf("skiff-proxy output:\n%s", logs.String())
		}
	})

	// `skiff-proxy wait`, as the postStart hook runs it, returns 0 once ready.
	healthURL := fmt.Sprintf("http://127.0.0.1:%d/healthz/ready", healthPort)
	wait := exec.Command(os.Args[0], "wait", "--url", healthURL, "--timeoutSeconds", "30", "--periodMillis", "100")
	wait.Env = []string{asMainEnv + "=1"}
	var waitOut bytes.Buffer
	wait.Stdout, wait.Stderr = &waitOut, &waitOut
	waitDone := make(chan error, 1)
	if err := wait.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { waitDone <- wait.Wait() }()
	select {
	case err := <-waitDone:
		if err != nil {
			t.Fatalf("skiff-proxy wait: %v\n%s", err, waitOut.String())
		}
	case <-exited:
		wait.Process.Kill()
		<-waitDone
		t.Fatalf("skiff-proxy exited (%v) before it was ready", exitErr)
	}
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	statusURL := fmt.Sprintf("http://127.0.0.1:%d", status)
	if code, body := get(statusURL + "/healthz/ready"); code != 200 {
		t.Errorf("status port /healthz/ready: %d %s", code, body)
	}

	// The certificate came from skiffd's CA for the pod's identity.
	_, dump := get(fmt.Sprintf("http://127.0.0.1:%d/config_dump", adminPort))
	if !strings.Contains(dump, `"dynamic_active_secrets"`) || !strings.Contains(dump, `"ROOTCA"`) {
		t.Errorf("admin /config_dump has no active workload secrets:\n%.2000s", dump)
	}
	if uris := workloadCertURIs(t, dump); len(uris) != 1 || uris[0] != "spiffe://cluster.local/ns/default/sa/probed" {
		t.Errorf("workload certificate URI SANs = %v, want the pod's SPIFFE identity spiffe://cluster.local/ns/default/sa/probed", uris)
	}

	// App probes, through the status port as the kubelet calls them.
	probe := func(path string) (int, string) { return get(statusURL + path) }
	if code, body := probe("/app-health/app/livez"); code != 200 || body != "app says 200" {
		t.Errorf("livez (httpGet, app healthy) = %d %q, want 200 and the app's body", code, body)
	}
	a.httpStatus.Store(503)
	if code, _ := probe("/app-health/app/livez"); code != 503 {
		t.Errorf("livez (httpGet, app answers 503) = %d, want the app's 503", code)
	}
	if code, _ := probe("/app-health/app/readyz"); code != 200 {
		t.Errorf("readyz (tcpSocket, app listening) = %d, want 200", code)
	}
	if code, _ := probe("/app-health/app/startupz"); code != 200 {
		t.Errorf("startupz (grpc, SERVING) = %d, want 200", code)
	}
	a.grpcHealth.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if code, _ := probe("/app-health/app/startupz"); code != 500 {
		t.Errorf("startupz (grpc, NOT_SERVING) = %d, want 500", code)
	}
	if code, body := probe("/app-health/worker/readyz"); code != 200 || body != "worker ready" {
		t.Errorf("worker readyz (HTTPS with httpHeaders) = %d %q, want 200", code, body)
	}
	if code, _ := probe("/app-health/nosuch/livez"); code != 400 {
		t.Errorf("unknown probe = %d, want 400", code)
	}
	a.httpSrv.Close()
	if code, _ := probe("/app-health/app/livez"); code != 500 {
		t.Errorf("livez (httpGet, app down) = %d, want 500", code)
	}
	if code, _ := probe("/app-health/app/readyz"); code != 500 {
		t.Errorf("readyz (tcpSocket, app down) = %d, want 500", code)
	}

	// Merged metrics: the proxy's own, Prometheus text.
	if code, body := get(statusURL + "/stats/prometheus"); code != 200 || !strings.Contains(body, "# TYPE ") {
		t.Errorf("status /stats/prometheus = %d:\n%.500s", code, body)
	}
	if code, body := get(fmt.Sprintf("http://127.0.0.1:%d/stats/prometheus", prom)); code != 200 || !strings.Contains(body, "# TYPE ") {
		t.Errorf("prometheus port /stats/prometheus = %d:\n%.500s", code, body)
	}

	// /quitquitquit: POST only, then the process exits 0 (a Job completes).
	if code, _ := get(statusURL + "/quitquitquit"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /quitquitquit = %d, want 405", code)
	}
	resp, err := http.Post(statusURL+"/quitquitquit", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("POST /quitquitquit = %d, want 200", resp.StatusCode)
	}
	if code, _ := get(healthURL); code != 503 {
		t.Errorf("health while shutting down = %d, want 503", code)
	}
	select {
	case <-exited:
		if exitErr != nil {
			t.Errorf("skiff-proxy exited with %v after /quitquitquit, want 0", exitErr)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("skiff-proxy still running 15 s after /quitquitquit")
	}
}

// workloadCertURIs finds the "default" secret's certificate chain in an
// admin config dump and returns its leaf's URI SANs.
func workloadCertURIs(t *testing.T, dump string) []string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(dump), &v); err != nil {
		t.Fatalf("config_dump: %v", err)
	}
	var chain string
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if x["name"] == "default" {
				if sec, ok := x["secret"].(map[string]any); ok {
					if tc, ok := sec["tls_certificate"].(map[string]any); ok {
						if cc, ok := tc["certificate_chain"].(map[string]any); ok {
							chain, _ = cc["inline_bytes"].(string)
						}
					}
				}
			}
			for _, c := range x {
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	walk(v)
	if chain == "" {
		t.Fatalf("config_dump has no certificate chain for secret \"default\":\n%.2000s", dump)
	}
	der, err := base64.StdEncoding.DecodeString(chain)
	if err != nil {
		t.Fatalf("certificate_chain.inline_bytes: %v", err)
	}
	blk, _ := pem.Decode(der)
	if blk == nil {
		t.Fatalf("certificate_chain is not PEM")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, u := range cert.URIs {
		out = append(out, u.String())
	}
	return out
}

// TestWaitTimesOut: `skiff-proxy wait` exits 1 with the URL and the last
// error when nothing gets ready in time.
func TestWaitTimesOut(t *testing.T) {
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz/ready", freePorts(t, 1)[0])
	cmd := exec.Command(os.Args[0], "wait", "--timeoutSeconds", "1", "--url", url)
	cmd.Env = []string{asMainEnv + "=1"}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	start := time.Now()
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("wait: %v, want exit 1", err)
	}
	if msg := errb.String(); !strings.Contains(msg, "not ready within 1s at "+url) || !strings.Contains(msg, "connection refused") {
		t.Errorf("stderr %q: want the timeout, the URL and the last error", msg)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("wait took %s with --timeoutSeconds 1", d)
	}
}
