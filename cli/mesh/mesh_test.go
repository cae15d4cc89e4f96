package mesh

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/localmesh"
)

// bin holds skiff (the verbs of this package), skiff-proxy, skiffd, the hello
// sample and the test app, side by side as a release puts them.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "skiff-mesh-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for out, pkg := range map[string]string{
		"skiff": "./internal/testskiff", "skiff-proxy": "../../cmd/skiff-proxy", "skiffd": "../../cmd/skiffd", "hello": "../../samples/hello",
		"testapp": "../../localmesh/internal/testapp",
	} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, out), pkg)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n", pkg, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	bin = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const helloService = `apiVersion: v1
kind: Service
metadata:
  name: hello
  labels: {app: hello}
spec:
  selector: {app: hello}
  ports:
  - name: http
    port: 80
    targetPort: 8080
`

func helloDeployment(replicas int) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
spec:
  replicas: %d
  selector:
    matchLabels: {app: hello}
  template:
    metadata:
      labels: {app: hello, version: v1}
    spec:
      containers:
      - name: hello
        command: [hello, -addr, "$(POD_IP):8080", -name, "$(POD_NAME)"]
        ports:
        - containerPort: 8080
        env:
        - name: POD_IP
          valueFrom: {fieldRef: {fieldPath: status.podIP}}
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
`, replicas)
}

// The gateway as Bookinfo's sample writes it: port 8080, the ingress
// gateway's target port.
const helloGateway = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: hello-gateway
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: hello
spec:
  hosts: ["*"]
  gateways: [hello-gateway]
  http:
  - route:
    - destination: {host: hello, port: {number: 80}}
`

// A bare Pod runs as itself, with its own name.
const soloPod = `apiVersion: v1
kind: Pod
metadata:
  name: solo
  labels: {app: solo}
spec:
  containers:
  - name: hello
    command: [hello, -addr, "$(POD_IP):8080", -name, solo]
    ports:
    - containerPort: 8080
    env:
    - name: POD_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
`

const badVirtualService = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: hello
spec:
  hosts: ["*"]
  gateways: [hello-gateway]
  http:
  - route:
    - destination: {host: hello, port: {number: 80}}
    retries:
      attempts: -1
`

const imageOnly = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx
`

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// skiff runs one verb and returns its exit code and output.
func skiff(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "skiff"), args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("skiff %v: %v", args, err)
	}
	return code, out.String(), errb.String()
}

// eventually polls cond every 100ms until it holds or the deadline passes.
func eventually(t *testing.T, limit time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var ok bool
		if ok, last = cond(); ok {
			return
		}
	}
	t.Fatalf("after %s: %s; last: %s", limit, what, last)
}

func get(url string) (string, error) {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, b)
	}
	return string(b), err
}

var podName = regexp.MustCompile(`hello-[bcdfghjklmnpqrstvwxz2456789]+-[bcdfghjklmnpqrstvwxz2456789]{5}`)

// The local mesh end to end, as a user drives it: up prints the ingress
// URL; traffic through the gateway reaches both replicas; status lists
// them; an edit of the manifests scales; a bad apply is refused with its
// file:line and the mesh keeps serving; a second up is refused; down
// leaves no process behind.
func TestUpServeScaleApplyDown(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	write(t, filepath.Join(dir, "service.yaml"), helloService)
	write(t, filepath.Join(dir, "deployment.yaml"), helloDeployment(2))
	write(t, filepath.Join(dir, "gateway.yaml"), helloGateway)
	write(t, filepath.Join(dir, "solo.yaml"), soloPod)

	up := exec.Command(filepath.Join(bin, "skiff"), "up", dir, "--state-dir", state, "--capture", "loopback",
		"--gateway-port", "0", "--xds-addr", "127.0.0.1:0", "--monitoring-addr", "127.0.0.1:0")
	stdout, err := up.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var upErr strings.Builder
	up.Stderr = &upErr
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	upDone := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			t.Log("up: " + sc.Text())
			select {
			case lines <- sc.Text():
			default:
			}
		}
		upDone <- up.Wait()
	}()
	defer func() {
		if up.ProcessState == nil {
			up.Process.Kill()
		}
	}()

	var gatewayURL string
	for deadline := time.After(30 * time.Second); gatewayURL == ""; {
		select {
		case l := <-lines:
			if u, ok := strings.CutPrefix(strings.TrimSpace(l), "ingress:"); ok {
				gatewayURL = strings.TrimSpace(u)
			}
		case err := <-upDone:
			t.Fatalf("skiff up exited before printing the ingress URL: %v\n%s", err, upErr.String())
		case <-deadline:
			t.Fatalf("skiff up printed no ingress URL within 30s; stderr: %s", upErr.String())
		}
	}
	if !strings.HasPrefix(gatewayURL, "http://127.0.0.1:") {
		t.Fatalf("ingress URL %q is not on 127.0.0.1", gatewayURL)
	}

	// Both replicas answer through the gateway.
	seen := map[string]bool{}
	for i := 0; i < 200 && len(seen) < 2; i++ {
		body, err := get(gatewayURL + "/hi")
		if err != nil {
			t.Fatalf("GET %s/hi: %v", gatewayURL, err)
		}
		if !strings.Contains(body, "GET /hi") {
			t.Fatalf("gateway answered %q, want hello's echo of GET /hi", body)
		}
		seen[podName.FindString(body)] = true
	}
	if len(seen) != 2 {
		t.Fatalf("200 requests reached %v, want both replicas", seen)
	}

	st, err := localmesh.ReadState(state)
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut := skiff(t, "status", "--state-dir", state)
	if code != 0 {
		t.Fatalf("skiff status: exit %d: %s", code, errOut)
	}
	helloPods := 0
	for _, p := range st.Pods {
		if p.Gateway || p.Name == "solo" {
			continue
		}
		helloPods++
		if !seen[p.Name] {
			t.Errorf("mesh.json names pod %s, which did not answer", p.Name)
		}
		row := regexp.MustCompile(`(?m)^default\s+` + p.Name + `\s+2/2\s+Running\s+0\s+` + regexp.QuoteMeta(p.IP) + `\s+SYNCED\s`)
		if !row.MatchString(out) {
			t.Errorf("skiff status has no Running, SYNCED row for %s at %s:\n%s", p.Name, p.IP, out)
		}
	}
	if helloPods != 2 {
		t.Errorf("mesh.json lists %d hello pods, want 2", helloPods)
	}
	if !regexp.MustCompile(`(?m)^default\s+solo\s+2/2\s+Running\s+0\s+127\.10\.\d+\.\d+\s+SYNCED\s`).MatchString(out) {
		t.Errorf("skiff status has no Running row for the bare Pod solo:\n%s", out)
	}
	if !strings.Contains(out, "ingress:      "+gatewayURL) {
		t.Errorf("skiff status does not show the ingress URL %s:\n%s", gatewayURL, out)
	}

	code, out, errOut = skiff(t, "status", "-o", "json", "--state-dir", state)
	var rep localmesh.Report
	if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil || rep.GatewayURL != gatewayURL || len(rep.Pods) != 4 {
		t.Errorf("skiff status -o json: exit %d, %v, %d pods (want 4), gateway %q: %s%s", code, err, len(rep.Pods), rep.GatewayURL, out, errOut)
	}

	// A second mesh on the same state directory is refused.
	if code, _, errOut := skiff(t, "up", dir, "--state-dir", state, "--capture", "loopback", "--gateway-port", "0"); code != 1 || !strings.Contains(errOut, "already running") {
		t.Errorf("second skiff up: exit %d, stderr %q; want 1 and 'already running'", code, errOut)
	}

	// Editing the manifests scales the Deployment.
	write(t, filepath.Join(dir, "deployment.yaml"), helloDeployment(3))
	eventually(t, 20*time.Second, "a third hello pod Running and SYNCED in skiff status", func() (bool, string) {
		_, out, _ := skiff(t, "status", "--state-dir", state)
		rows := regexp.MustCompile(`(?m)^default\s+hello-\S+\s+2/2\s+Running\s+\d+\s+\S+\s+SYNCED\s`).FindAllString(out, -1)
		return len(rows) == 3, out
	})

	// A template change rolls the pods over without failing a request.
	before := map[string]bool{}
	for _, name := range podName.FindAllString(mustStatus(t, state), -1) {
		before[name] = true
	}
	write(t, filepath.Join(dir, "deployment.yaml"), strings.Replace(helloDeployment(3), "version: v1", "version: v2", 1))
	failures, requests := 0, 0
	eventually(t, 30*time.Second, "three new hello pods Running, the old ones gone", func() (bool, string) {
		for range 5 {
			requests++
			if _, err := get(gatewayURL + "/rollout"); err != nil {
				failures++
				t.Logf("during the rollout: %v", err)
			}
		}
		out := mustStatus(t, state)
		fresh := 0
		for _, row := range regexp.MustCompile(`(?m)^default\s+(hello-\S+)\s+2/2\s+Running\s`).FindAllStringSubmatch(out, -1) {
			if before[row[1]] {
				return false, out
			}
			fresh++
		}
		return fresh == 3, out
	})
	if failures > 0 {
		t.Errorf("%d of %d requests failed during the rollout", failures, requests)
	}

	// A bad apply is refused with its place, and the mesh keeps serving.
	bad := filepath.Join(t.TempDir(), "bad-vs.yaml")
	write(t, bad, badVirtualService)
	code, out, errOut = skiff(t, "apply", "-f", bad, "--state-dir", state)
	if code != 1 || !strings.Contains(out, "VirtualService default/hello rejected") ||
		!strings.Contains(errOut, bad+":12: VirtualService default/hello: spec.http[0].retries.attempts:") {
		t.Errorf("apply of a bad VirtualService: exit %d\nstdout %s\nstderr %s\nwant exit 1, the object rejected, the error at %s:12 naming the field", code, out, errOut, bad)
	}
	noCmd := filepath.Join(t.TempDir(), "web.yaml")
	write(t, noCmd, imageOnly)
	code, _, errOut = skiff(t, "apply", "-f", noCmd, "--state-dir", state)
	if code != 1 || !strings.Contains(errOut, noCmd+":13: Deployment default/web: spec.template.spec.containers[0].command:") ||
		!strings.Contains(errOut, "runs commands, not images") {
		t.Errorf("apply of a Deployment without command: exit %d, stderr %s", code, errOut)
	}
	if body, err := get(gatewayURL + "/after"); err != nil || !strings.Contains(body, "GET /after") {
		t.Errorf("after the rejected apply: %q, %v; want hello to answer", body, err)
	}

	// Apply replaces what the directory declares under the same name, as
	// kubectl apply does; deleting the applied one brings DIR's back.
	override := filepath.Join(t.TempDir(), "override.yaml")
	write(t, override, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: hello
spec:
  hosts: ["*"]
  gateways: [hello-gateway]
  http:
  - directResponse: {status: 200, body: {string: "from the applied VirtualService"}}
`)
	if code, out, errOut := skiff(t, "apply", "-f", override, "--state-dir", state); code != 0 || out != "VirtualService default/hello configured\n" {
		t.Errorf("apply over DIR's VirtualService: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	eventually(t, 20*time.Second, "the applied VirtualService in force", func() (bool, string) {
		body, err := get(gatewayURL + "/")
		return body == "from the applied VirtualService", fmt.Sprint(body, err)
	})
	if code, out, errOut := skiff(t, "delete", "-f", override, "--state-dir", state); code != 0 ||
		out != "VirtualService default/hello deleted ("+filepath.Join(dir, "gateway.yaml")+":11 is in force again)\n" {
		t.Errorf("delete of the applied VirtualService: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	eventually(t, 20*time.Second, "DIR's VirtualService back in force", func() (bool, string) {
		body, err := get(gatewayURL + "/back")
		return strings.Contains(body, "GET /back"), fmt.Sprint(body, err)
	})

	// Apply adds a workload, delete removes it again.
	extra := filepath.Join(t.TempDir(), "extra.yaml")
	write(t, extra, strings.ReplaceAll(soloPod, "solo", "extra"))
	if code, out, errOut := skiff(t, "apply", "-f", extra, "--state-dir", state); code != 0 || out != "Pod default/extra created\n" {
		t.Errorf("apply of a Pod: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	extraRow := regexp.MustCompile(`(?m)^default\s+extra\s+2/2\s+Running\s`)
	eventually(t, 20*time.Second, "the applied Pod running", func() (bool, string) {
		_, out, _ := skiff(t, "status", "--state-dir", state)
		return extraRow.MatchString(out), out
	})
	if code, out, errOut := skiff(t, "delete", "-f", extra, "--state-dir", state); code != 0 || out != "Pod default/extra deleted\n" {
		t.Errorf("delete of the applied Pod: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	eventually(t, 20*time.Second, "the deleted Pod gone", func() (bool, string) {
		_, out, _ := skiff(t, "status", "--state-dir", state)
		return !strings.Contains(out, "extra"), out
	})
	if code, _, errOut := skiff(t, "delete", "-f", filepath.Join(dir, "gateway.yaml"), "--state-dir", state); code != 1 ||
		!strings.Contains(errOut, "is declared in "+filepath.Join(dir, "gateway.yaml")) {
		t.Errorf("delete of an object the directory declares: exit %d, stderr %q; want 1, naming the file to edit", code, errOut)
	}

	// Down stops everything: no process mesh.json named is left.
	st, err = localmesh.ReadState(state)
	if err != nil {
		t.Fatal(err)
	}
	pids := []int{st.PID, st.SkiffdPID}
	for _, p := range st.Pods {
		pids = append(pids, p.ProxyPID)
		for _, c := range p.Containers {
			pids = append(pids, c.PID)
		}
	}
	if code, out, errOut := skiff(t, "down", "--state-dir", state); code != 0 || !strings.Contains(out, "local mesh stopped") {
		t.Fatalf("skiff down: exit %d: %s%s", code, out, errOut)
	}
	select {
	case err := <-upDone:
		if err != nil {
			t.Errorf("skiff up exited with %v after skiff down; stderr: %s", err, upErr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("skiff up still running 30s after skiff down")
	}
	for _, pid := range pids {
		if pid == 0 {
			t.Errorf("mesh.json has a process without a pid: %+v", st)
			continue
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("pid %d still exists after skiff down (kill 0: %v)", pid, err)
		}
	}
	if left := leftovers(state, dir); len(left) > 0 {
		t.Errorf("processes left after skiff down:\n%s", strings.Join(left, "\n"))
	}
	if _, err := os.Stat(filepath.Join(state, "mesh.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mesh.json left behind after skiff down: %v", err)
	}
	if code, _, errOut := skiff(t, "status", "--state-dir", state); code != 1 || !strings.Contains(errOut, "no local mesh is running") {
		t.Errorf("skiff status after down: exit %d, %q", code, errOut)
	}
}

const crasher = `apiVersion: v1
kind: Pod
metadata:
  name: crasher
spec:
  containers:
  - name: app
    command: [sh, -c, "echo giving up; exit 3"]
`

// skiff up reports a crashing container, and a bad manifest written while
// it runs, as they happen; status shows the crash loop; Ctrl-C stops the
// mesh as skiff down does.
func TestUpReportsAndInterrupt(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	write(t, filepath.Join(dir, "solo.yaml"), soloPod)
	write(t, filepath.Join(dir, "crasher.yaml"), crasher)
	up := exec.Command(filepath.Join(bin, "skiff"), "up", dir, "--state-dir", state, "--capture", "loopback",
		"--gateway-port", "0", "--xds-addr", "127.0.0.1:0", "--monitoring-addr", "127.0.0.1:0")
	out := &syncBuilder{}
	up.Stdout, up.Stderr = out, out
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	defer up.Process.Kill()
	eventually(t, 30*time.Second, "skiff up saying solo is ready", func() (bool, string) {
		return strings.Contains(out.String(), "pod default/solo ready"), out.String()
	})
	write(t, filepath.Join(dir, "bad-vs.yaml"), badVirtualService)
	write(t, filepath.Join(dir, "web.yaml"), imageOnly)
	for _, want := range []string{
		"config: " + filepath.Join(dir, "bad-vs.yaml") + ":12: VirtualService default/hello: spec.http[0].retries.attempts:",
		"pod default/crasher container app exited (exit code 3); restarting in 10s; log: " + filepath.Join(state, "logs", "default", "crasher", "app.log"),
		"cannot start Deployment/default/web: " + filepath.Join(dir, "web.yaml") + ":13: Deployment default/web: spec.template.spec.containers[0].command: container \"web\" has no command: the local mesh runs commands, not images",
	} {
		eventually(t, 30*time.Second, "skiff up printing "+want, func() (bool, string) {
			return strings.Contains(out.String(), want), out.String()
		})
	}
	crashRow := regexp.MustCompile(`(?m)^default\s+crasher\s+1/2\s+CrashLoopBackOff\s+0\s`)
	status := mustStatus(t, state)
	if !crashRow.MatchString(status) {
		t.Errorf("skiff status does not show crasher in CrashLoopBackOff:\n%s", status)
	}
	if !strings.Contains(status, "problem: "+filepath.Join(dir, "web.yaml")+":13: Deployment default/web:") {
		t.Errorf("skiff status does not list the Deployment that cannot start:\n%s", status)
	}
	var st *localmesh.State
	eventually(t, 30*time.Second, "mesh.json naming a running pod", func() (bool, string) {
		s, err := localmesh.ReadState(state)
		// default/crasher and default/solo sort before the gateway in istio-system.
		if err != nil || len(s.Pods) != 3 || s.Pods[1].Name != "solo" || len(s.Pods[1].Containers) != 1 ||
			s.Pods[1].Containers[0].PID == 0 || s.Pods[1].ProxyPID == 0 || s.Pods[2].ProxyPID == 0 {
			return false, fmt.Sprint(s, err)
		}
		st = s
		return true, ""
	})
	up.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- up.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("skiff up after Ctrl-C: %v\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("skiff up still running 30s after Ctrl-C\n%s", out.String())
	}
	for _, pid := range []int{st.PID, st.Pods[0].ProxyPID, st.Pods[1].ProxyPID, st.Pods[2].ProxyPID, st.Pods[1].Containers[0].PID} {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("pid %d still exists after Ctrl-C (kill 0: %v)", pid, err)
		}
	}
	if !strings.Contains(out.String(), "stopping: applications, sidecars, gateway, skiffd") {
		t.Errorf("skiff up did not say it was stopping:\n%s", out.String())
	}
}

// syncBuilder is a strings.Builder safe to read while a process writes it.
type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func mustStatus(t *testing.T, state string) string {
	t.Helper()
	code, out, errOut := skiff(t, "status", "--state-dir", state)
	if code != 0 {
		t.Fatalf("skiff status: exit %d: %s", code, errOut)
	}
	return out
}
