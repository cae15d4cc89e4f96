// Package telemetry is the black-box test of Istio's standard metrics on
// the local mesh: `skiff up` with a client and an echo server (HTTP, TCP
// and gRPC), known traffic sent from the client pod, and the exact
// counters and label sets both sidecars report on their admin
// /stats/prometheus (the same page as :15090).
package telemetry

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/internal/testing/meshtest"
)

var bin string

func TestMain(m *testing.M) {
	dir, err := meshtest.Build(map[string]string{
		"skiff": "github.com/skiff-mesh/skiff/cmd/skiff", "skiffd": "github.com/skiff-mesh/skiff/cmd/skiffd",
		"skiff-proxy": "github.com/skiff-mesh/skiff/cmd/skiff-proxy", "echo-server": "github.com/skiff-mesh/skiff/samples/echo/cmd/echo-server",
		"grpcapp": "github.com/skiff-mesh/skiff/test/telemetry/internal/grpcapp",
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, tool := range []string{"curl", "bash", "timeout"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "test/telemetry: %s is not installed; the test runs it in the client pod (scripts/test.sh installs curl)\n", tool)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	bin = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type mesh struct {
	*meshtest.Mesh
	mtls bool // netns capture: sidecars talk Istio mTLS
}

// startMesh runs skiff up on testdata/mesh: with network namespaces when
// root (as in Kubernetes, sidecar to sidecar is mutual TLS), else in
// loopback mode (plaintext between sidecars).
func startMesh(t *testing.T) *mesh {
	dir, err := filepath.Abs("testdata/mesh")
	if err != nil {
		t.Fatal(err)
	}
	args := []string{dir, "--gateway-port", "0", "--monitoring-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0"}
	// SKIFF_TEST_CAPTURE=loopback runs the non-root variant as root too.
	root := os.Geteuid() == 0 && os.Getenv("SKIFF_TEST_CAPTURE") != "loopback"
	if root {
		args = append(args, "--capture", "netns", "--xds-addr", "198.18.0.1:0")
	} else {
		args = append(args, "--capture", "loopback", "--xds-addr", "127.0.0.1:0")
	}
	m := meshtest.Start(t, bin, args, func(l string) (bool, error) {
		if strings.HasPrefix(l, "mesh up, but not ready") {
			return false, errors.New(l)
		}
		return l == "mesh ready", nil
	})
	return &mesh{Mesh: m, mtls: root}
}

// waitEcho waits until curl → echo works (configuration reaches each
// proxy on its own) and returns the deadline for the test's other waits.
func (m *mesh) waitEcho(t *testing.T) time.Time {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for m.curl(t, "http://echo:8080/") != 200 {
		if time.Now().After(deadline) {
			t.Fatal("curl → echo:8080 did not answer 200 within 60s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	return deadline
}

type pod struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	IP        string `json:"ip"`
	Admin     string `json:"admin"`
}

func (m *mesh) pod(t *testing.T, deploy string) pod {
	t.Helper()
	out := m.Skiff(t, "status", "-o", "json")
	var rep struct {
		Pods []pod `json:"pods"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("skiff status -o json: %v\n%s", err, out)
	}
	for _, p := range rep.Pods {
		if p.Namespace == "default" && strings.HasPrefix(p.Name, deploy+"-") && p.Status == "Running" {
			return p
		}
	}
	t.Fatalf("skiff status -o json lists no running pod of deploy/%s:\n%s", deploy, out)
	return pod{}
}

// exec runs a command in the curl pod (skiff exec, kubectl exec's job).
func (m *mesh) exec(t *testing.T, command ...string) (string, error) {
	args := append([]string{"exec", "--state-dir", m.State, "-n", "default", "deploy/curl", "--"}, command...)
	cmd := exec.Command(filepath.Join(bin, "skiff"), args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// curl sends one request from the client pod and returns the status.
func (m *mesh) curl(t *testing.T, url string, args ...string) int {
	out, _ := m.exec(t, append([]string{"curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}"}, append(args, url)...)...)
	code, _ := strconv.Atoi(strings.TrimSpace(lastLine(out)))
	return code
}

// grpc makes one grpc.health.v1.Health/Check of service svc from the
// client pod to echo:7070 and returns the gRPC status code (-1 when the
// client printed none).
func (m *mesh) grpc(t *testing.T, svc string) int {
	out, _ := m.exec(t, filepath.Join(bin, "grpcapp"), "call", "echo:7070", svc)
	code, err := strconv.Atoi(strings.TrimSpace(lastLine(out)))
	if err != nil {
		t.Logf("grpcapp call echo:7070 %q: %s", svc, out)
		return -1
	}
	return code
}

// tcp sends a line to echo's TCP port and reads the echo.
func (m *mesh) tcp(t *testing.T, line string) string {
	out, _ := m.exec(t, "timeout", "5", "bash", "-c", fmt.Sprintf(`exec 3<>/dev/tcp/echo/9000 && echo %q >&3 && head -n1 <&3`, line))
	return strings.TrimSpace(out)
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// series is a scrape: Prometheus series key (name and sorted labels) → value.
type series map[string]float64

func key(name string, labels map[string]string) string {
	kv := make([]string, 0, len(labels))
	for k, v := range labels {
		kv = append(kv, k+"="+strconv.Quote(v))
	}
	sort.Strings(kv)
	return name + "{" + strings.Join(kv, ",") + "}"
}

func scrape(t *testing.T, admin string) series {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Get("http://" + admin + "/stats/prometheus")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := series{}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "istio_") {
			continue
		}
		name, rest, _ := strings.Cut(line, "{")
		body, val, _ := strings.Cut(rest, "} ")
		labels := map[string]string{}
		for body != "" {
			k, r, _ := strings.Cut(body, `="`)
			end := 0
			for end < len(r) && (r[end] != '"' || (end > 0 && r[end-1] == '\\')) {
				end++
			}
			labels[k] = strings.ReplaceAll(r[:end], `\"`, `"`)
			body = strings.TrimPrefix(r[end+1:], ",")
		}
		v, _ := strconv.ParseFloat(strings.TrimSpace(val), 64)
		out[key(name, labels)] = v
	}
	return out
}

// delta is what changed between two scrapes, series that did not change left out.
func delta(before, after series) series {
	d := series{}
	for k, v := range after {
		if v != before[k] {
			d[k] = v - before[k]
		}
	}
	return d
}

func (s series) String() string {
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s %v\n", k, s[k])
	}
	return b.String()
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// TestStandardMetrics sends known traffic from curl to echo and checks the
// exact increase of Istio's metrics, with their full label sets, on both
// sidecars: reporter=source on curl's, reporter=destination on echo's.
func TestStandardMetrics(t *testing.T) {
	m := startMesh(t)
	deadline := m.waitEcho(t)
	m.ApplyInline(t, "fault.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: echo
spec:
  hosts: [echo]
  http:
  - match: [{headers: {x-fault: {exact: abort}}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: echo}}]
  - route: [{destination: {host: echo}}]
`)
	for m.curl(t, "http://echo:8080/", "-H", "x-fault: abort") != 418 {
		if time.Now().After(deadline) {
			t.Fatal("the fault VirtualService did not take effect within 60s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	// gRPC reaches a service only through capture, as TCP: loopback
	// mode's apps have only HTTP_PROXY, which grpc-go does not use.
	nGRPCOK, nGRPCNotFound := 3, 2
	if !m.mtls {
		nGRPCOK, nGRPCNotFound = 0, 0
		t.Log("loopback capture (not root): gRPC metrics are checked only with network namespaces")
	} else {
		for m.grpc(t, "") != 0 {
			if time.Now().After(deadline) {
				t.Fatal("grpcapp call echo:7070 did not answer OK within 60s")
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	client, server := m.pod(t, "curl"), m.pod(t, "echo-v1")
	cBefore, sBefore := scrape(t, client.Admin), scrape(t, server.Admin)

	const nOK, nAbort, n500 = 4, 2, 3
	nTCP := 2
	for range nGRPCOK {
		if c := m.grpc(t, ""); c != 0 {
			t.Fatalf("grpcapp call echo:7070 (Health/Check of \"\") = %d, want 0 (OK)", c)
		}
	}
	// grpc-go's health server answers NOT_FOUND for a service it does not know.
	for range nGRPCNotFound {
		if c := m.grpc(t, "missing"); c != 5 {
			t.Fatalf("grpcapp call echo:7070 missing = %d, want 5 (NOT_FOUND)", c)
		}
	}
	for range nOK {
		if c := m.curl(t, "http://echo:8080/hello"); c != 200 {
			t.Fatalf("curl echo:8080/hello = %d", c)
		}
	}
	// 500, not 503: Istio's default retry policy retries 503s, and each
	// attempt would count on the server's side.
	for range n500 {
		if c := m.curl(t, "http://echo:8080/?status=500"); c != 500 {
			t.Fatalf("curl echo:8080/?status=500 = %d", c)
		}
	}
	for range nAbort {
		if c := m.curl(t, "http://echo:8080/", "-H", "x-fault: abort"); c != 418 {
			t.Fatalf("curl with x-fault: abort = %d", c)
		}
	}
	// TCP reaches a service only through capture: loopback mode's apps
	// have HTTP_PROXY and no way to name a TCP service.
	if !m.mtls {
		nTCP = 0
		t.Log("loopback capture (not root): TCP metrics are checked only with network namespaces")
	}
	var tcpSent, tcpEchoed float64
	for i := range nTCP {
		line := fmt.Sprintf("line %d", i)
		tcpSent += float64(len(line) + 1)
		tcpEchoed += float64(len("v1 ") + len(line) + 1) // echo-server prefixes its version
		if got := m.tcp(t, line); !strings.Contains(got, line) {
			t.Fatalf("tcp echo:9000 %q = %q", line, got)
		}
	}

	policy, cliPrincipal, srvPrincipal := "none", "unknown", "unknown"
	if m.mtls {
		policy, cliPrincipal, srvPrincipal = "mutual_tls", "spiffe://cluster.local/ns/default/sa/curl", "spiffe://cluster.local/ns/default/sa/echo"
	}
	src := map[string]string{"source_workload": "curl", "source_workload_namespace": "default", "source_principal": cliPrincipal,
		"source_app": "curl", "source_version": "v1", "source_canonical_service": "curl", "source_canonical_revision": "v1", "source_cluster": "Kubernetes"}
	dst := map[string]string{"destination_workload": "echo-v1", "destination_workload_namespace": "default", "destination_principal": srvPrincipal,
		"destination_app": "echo", "destination_version": "v1", "destination_canonical_service": "echo", "destination_canonical_revision": "v1", "destination_cluster": "Kubernetes",
		"destination_service": "echo.default.svc.cluster.local", "destination_service_name": "echo", "destination_service_namespace": "default"}
	dstUnknown := map[string]string{"destination_workload": "unknown", "destination_workload_namespace": "unknown", "destination_principal": "unknown",
		"destination_app": "unknown", "destination_version": "unknown", "destination_canonical_service": "unknown", "destination_canonical_revision": "unknown", "destination_cluster": "unknown"}
	http := func(code, flags string) map[string]string {
		return map[string]string{"request_protocol": "http", "response_code": code, "grpc_response_status": "", "response_flags": flags}
	}
	source := map[string]string{"reporter": "source", "connection_security_policy": "unknown"}
	destination := map[string]string{"reporter": "destination", "connection_security_policy": policy}
	tcp := map[string]string{"request_protocol": "tcp", "response_flags": "-"}
	grpc := func(status string) map[string]string {
		return map[string]string{"request_protocol": "grpc", "response_code": "200", "grpc_response_status": status, "response_flags": "-"}
	}

	wantClient := series{
		key("istio_requests_total", merge(source, src, dst, http("200", "-"))): nOK,
		key("istio_requests_total", merge(source, src, dst, http("500", "-"))): n500,
		key("istio_requests_total", merge(source, src, dstUnknown, http("418", "FI"), map[string]string{"source_principal": "unknown",
			"destination_service": "echo.default.svc.cluster.local", "destination_service_name": "echo", "destination_service_namespace": "default"})): nAbort,
		key("istio_tcp_connections_opened_total", merge(source, src, dst, tcp)): float64(nTCP),
		key("istio_tcp_connections_closed_total", merge(source, src, dst, tcp)): float64(nTCP),
		key("istio_tcp_received_bytes_total", merge(source, src, dst, tcp)):     tcpSent,
		key("istio_tcp_sent_bytes_total", merge(source, src, dst, tcp)):         tcpEchoed,
		key("istio_requests_total", merge(source, src, dst, grpc("0"))):         float64(nGRPCOK),
		key("istio_requests_total", merge(source, src, dst, grpc("5"))):         float64(nGRPCNotFound),
	}
	// The destination side names the service as Istio's does: from its
	// inbound cluster's filter_metadata.istio.services, for HTTP and TCP.
	wantServer := series{
		key("istio_requests_total", merge(destination, src, dst, http("200", "-"))):                      nOK,
		key("istio_requests_total", merge(destination, src, dst, http("500", "-"))):                      n500,
		key("istio_request_duration_milliseconds_count", merge(destination, src, dst, http("200", "-"))): nOK,
		key("istio_tcp_connections_opened_total", merge(destination, src, dst, tcp)):                     float64(nTCP),
		key("istio_tcp_connections_closed_total", merge(destination, src, dst, tcp)):                     float64(nTCP),
		key("istio_tcp_received_bytes_total", merge(destination, src, dst, tcp)):                         tcpSent,
		key("istio_tcp_sent_bytes_total", merge(destination, src, dst, tcp)):                             tcpEchoed,
		key("istio_requests_total", merge(destination, src, dst, grpc("0"))):                             float64(nGRPCOK),
		key("istio_requests_total", merge(destination, src, dst, grpc("5"))):                             float64(nGRPCNotFound),
	}
	if !m.mtls {
		// Loopback mode has no inbound capture: the client's sidecar
		// reaches the app directly, so there is no destination reporter
		// and no exchange; the destination is who its endpoint's
		// istio.workload metadata names (as Istio falls back to), except
		// for the fault, which answered before any endpoint was chosen.
		svc := map[string]string{"destination_service": "echo.default.svc.cluster.local",
			"destination_service_name": "echo", "destination_service_namespace": "default"}
		dstApp := merge(dstUnknown, svc)
		wantServer = series{}
		wantClient = series{
			key("istio_requests_total", merge(source, src, endpointPeer(svc), http("200", "-"))): nOK,
			key("istio_requests_total", merge(source, src, endpointPeer(svc), http("500", "-"))): n500,
			key("istio_requests_total", merge(source, src, dstApp, http("418", "FI"))):           nAbort,
		}
	}
	if nTCP == 0 {
		for _, w := range []series{wantClient, wantServer} {
			for k := range w {
				if strings.HasPrefix(k, "istio_tcp_") {
					delete(w, k)
				}
			}
		}
	}
	// TCP connections close asynchronously: poll (bounded) until the
	// closed counters are in.
	var cd, sd series
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		cd, sd = delta(cBefore, scrape(t, client.Admin)), delta(sBefore, scrape(t, server.Admin))
		if (matches(cd, wantClient) && matches(sd, wantServer)) || time.Now().After(end) {
			break
		}
	}
	for _, side := range []struct {
		name      string
		got, want series
	}{{"curl's sidecar (reporter=source)", cd, wantClient}, {"echo's sidecar (reporter=destination)", sd, wantServer}} {
		for k, v := range side.want {
			if side.got[k] != v {
				t.Errorf("%s: %s increased by %v, want %v", side.name, k, side.got[k], v)
			}
		}
		if t.Failed() {
			t.Logf("%s: the counters that changed:\n%s", side.name, side.got.counters())
		}
	}
}

// counters leaves out the histograms' series, for readable failures.
func (s series) counters() series {
	out := series{}
	for k, v := range s {
		if !strings.Contains(k, "_bucket{") && !strings.Contains(k, "_sum{") && !strings.Contains(k, "_count{") {
			out[k] = v
		}
	}
	return out
}

func matches(got, want series) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// TestCircuitBreaking holds echo's requests while more arrive than its
// DestinationRule's connection pool admits: one connection, one pending
// request. Of nBurst requests fired at once, one takes the connection,
// one waits for it (maxRequestsPerConnection: 1 closes the connection
// after each request, and the freed slot goes to the waiting request),
// and the others overflow at once: 503 with response_flags="UO" on the
// source side (Istio does not retry overflows), while the destination
// side sees only the two that got through.
func TestCircuitBreaking(t *testing.T) {
	m := startMesh(t)
	deadline := m.waitEcho(t)
	client, server := m.pod(t, "curl"), m.pod(t, "echo-v1")
	m.ApplyInline(t, "breaker.yaml", `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: echo
spec:
  host: echo
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}
`)
	// The breaker is in place once curl's sidecar shows the thresholds.
	cluster := "outbound|8080||echo.default.svc.cluster.local::default_priority::"
	for {
		page := get(t, client.Admin, "/clusters")
		if strings.Contains(page, cluster+"max_connections::1\n") && strings.Contains(page, cluster+"max_pending_requests::1\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("curl's sidecar did not get the DestinationRule's connection pool within 60s; its /clusters says:\n%s", page)
		}
		time.Sleep(200 * time.Millisecond)
	}
	cBefore, sBefore := scrape(t, client.Admin), scrape(t, server.Admin)

	// Each request holds echo for 3 s, far longer than curl needs to open
	// all its connections, so every request is in flight before the first
	// completes; the second one through ends after about 6 s.
	const nBurst = 6
	args := []string{"curl", "-sS", "--no-progress-meter", "-m", "30", "--parallel", "--parallel-immediate", "--parallel-max", strconv.Itoa(nBurst)}
	for range nBurst {
		args = append(args, "-o", "/dev/null", "-w", "code=%{http_code}\n", "http://echo:8080/?delay=3s")
	}
	out, err := m.exec(t, append([]string{"timeout", "60"}, args...)...)
	if err != nil {
		t.Fatalf("curl --parallel: %v\n%s", err, out)
	}
	codes := map[string]int{}
	for _, l := range strings.Fields(out) {
		if c, ok := strings.CutPrefix(l, "code="); ok {
			codes[c]++
		}
	}
	if codes["200"] != 2 || codes["503"] != nBurst-2 || len(codes) != 2 {
		t.Fatalf("%d parallel requests through maxConnections 1, http1MaxPendingRequests 1 answered %v, want 2×200 and %d×503", nBurst, codes, nBurst-2)
	}

	policy, cliPrincipal, srvPrincipal := "none", "unknown", "unknown"
	if m.mtls {
		policy, cliPrincipal, srvPrincipal = "mutual_tls", "spiffe://cluster.local/ns/default/sa/curl", "spiffe://cluster.local/ns/default/sa/echo"
	}
	src := map[string]string{"source_workload": "curl", "source_workload_namespace": "default", "source_principal": cliPrincipal,
		"source_app": "curl", "source_version": "v1", "source_canonical_service": "curl", "source_canonical_revision": "v1", "source_cluster": "Kubernetes"}
	svc := map[string]string{"destination_service": "echo.default.svc.cluster.local", "destination_service_name": "echo", "destination_service_namespace": "default"}
	dst := merge(svc, map[string]string{"destination_workload": "echo-v1", "destination_workload_namespace": "default", "destination_principal": srvPrincipal,
		"destination_app": "echo", "destination_version": "v1", "destination_canonical_service": "echo", "destination_canonical_revision": "v1", "destination_cluster": "Kubernetes"})
	// An overflow never reaches a peer: no exchange, and no mTLS
	// connection names the source's principal.
	http := func(code, flags string) map[string]string {
		return map[string]string{"request_protocol": "http", "response_code": code, "grpc_response_status": "", "response_flags": flags}
	}
	source := map[string]string{"reporter": "source", "connection_security_policy": "unknown"}
	destination := map[string]string{"reporter": "destination", "connection_security_policy": policy}
	// The overflows had their host chosen (the pool overflowed), so the
	// destination is named by that endpoint's metadata, as in Envoy.
	wantClient := series{
		key("istio_requests_total", merge(source, src, dst, http("200", "-"))):                                                                  2,
		key("istio_requests_total", merge(source, src, endpointPeer(svc), http("503", "UO"), map[string]string{"source_principal": "unknown"})): nBurst - 2,
	}
	wantServer := series{
		key("istio_requests_total", merge(destination, src, dst, http("200", "-"))): 2,
	}
	if !m.mtls {
		// Loopback mode: no inbound capture, so no destination reporter
		// and no peer metadata for the source side (as in TestStandardMetrics).
		wantClient = series{
			key("istio_requests_total", merge(source, src, endpointPeer(svc), http("200", "-"))):  2,
			key("istio_requests_total", merge(source, src, endpointPeer(svc), http("503", "UO"))): nBurst - 2,
		}
		wantServer = series{}
	}
	// Exactly these series changed, by exactly these counts. A sidecar
	// counts a request when its stream ends, which may be just after curl
	// has its answer: poll (bounded).
	var cd, sd series
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		cd, sd = delta(cBefore, scrape(t, client.Admin)).requests(), delta(sBefore, scrape(t, server.Admin)).requests()
		if (cd.String() == wantClient.String() && sd.String() == wantServer.String()) || time.Now().After(end) {
			break
		}
	}
	for _, side := range []struct {
		name      string
		got, want series
	}{{"curl's sidecar (reporter=source)", cd, wantClient}, {"echo's sidecar (reporter=destination)", sd, wantServer}} {
		if side.got.String() != side.want.String() {
			t.Errorf("%s: istio_requests_total increased by\n%swant\n%s", side.name, side.got, side.want)
		}
	}
}

// requests keeps the istio_requests_total series.
func (s series) requests() series {
	out := series{}
	for k, v := range s {
		if strings.HasPrefix(k, "istio_requests_total{") {
			out[k] = v
		}
	}
	return out
}

// get fetches an admin page.
func get(t *testing.T, admin, path string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Get("http://" + admin + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s%s: %v", admin, path, err)
	}
	return string(b)
}

// endpointPeer is the destination as echo-v1's endpoint metadata in EDS
// names it (istio.workload: workload, namespace, canonical service and
// revision, cluster) when no exchange told more: app, version and
// principal stay unknown.
func endpointPeer(svc map[string]string) map[string]string {
	return merge(svc, map[string]string{"destination_workload": "echo-v1", "destination_workload_namespace": "default", "destination_principal": "unknown",
		"destination_app": "unknown", "destination_version": "unknown", "destination_canonical_service": "echo", "destination_canonical_revision": "v1", "destination_cluster": "Kubernetes"})
}
