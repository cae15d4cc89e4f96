package mesh

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/localmesh"
)

// runningUp is a `skiff up` started by a test.
type runningUp struct {
	cmd        *exec.Cmd
	out        *syncBuilder
	done       chan error
	gatewayURL string
}

// startUp runs skiff up on dir with loopback capture and free ports, and
// waits for the ingress URL (the mesh announced ready).
func startUp(t *testing.T, dir, state string) *runningUp {
	t.Helper()
	up := &runningUp{out: &syncBuilder{}, done: make(chan error, 1)}
	up.cmd = exec.Command(filepath.Join(bin, "skiff"), "up", dir, "--state-dir", state, "--capture", "loopback",
		"--gateway-port", "0", "--xds-addr", "127.0.0.1:0", "--monitoring-addr", "127.0.0.1:0")
	stdout, err := up.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	up.cmd.Stderr = up.out
	if err := up.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			up.out.Write([]byte(sc.Text() + "\n"))
			if u, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "ingress:"); ok {
				select {
				case urls <- strings.TrimSpace(u):
				default:
				}
			}
		}
		up.done <- up.cmd.Wait()
	}()
	t.Cleanup(func() {
		if up.cmd.ProcessState == nil {
			up.cmd.Process.Kill()
			<-up.done
		}
		t.Logf("skiff up's output:\n%s", up.out.String())
	})
	select {
	case up.gatewayURL = <-urls:
	case err := <-up.done:
		t.Fatalf("skiff up exited before the mesh was ready: %v\n%s", err, up.out.String())
	case <-time.After(45 * time.Second):
		t.Fatalf("skiff up printed no ingress URL within 45s:\n%s", up.out.String())
	}
	return up
}

// down runs skiff down and waits for skiff up to exit.
func (up *runningUp) down(t *testing.T, state string) {
	t.Helper()
	if code, out, errOut := skiff(t, "down", "--state-dir", state); code != 0 {
		t.Fatalf("skiff down: exit %d: %s%s", code, out, errOut)
	}
	select {
	case err := <-up.done:
		if err != nil {
			t.Errorf("skiff up exited with %v after skiff down", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("skiff up still running 30s after skiff down")
	}
}

// leftovers lists the processes that belong to a mesh: whose command line
// names its state directory (skiff up, skiffd, the sidecars) or whose
// working directory is its manifests' directory (the containers).
func leftovers(state, dir string) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		cwd, _ := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if len(cmdline) == 0 {
			continue // a zombie or a kernel thread
		}
		if strings.Contains(string(cmdline), state) || cwd == dir {
			out = append(out, fmt.Sprintf("pid %d: %s", pid, strings.ReplaceAll(string(cmdline), "\x00", " ")))
		}
	}
	return out
}

// Killing skiffd leaves the proxies serving their last config; the
// supervisor says so and restarts it; the proxies resync with the new
// skiffd (an apply made after the restart reaches the gateway and every
// proxy is SYNCED). Killing a workload's process restarts it with
// back-off, and its traffic comes back.
func TestKilledProcessesRecover(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	write(t, filepath.Join(dir, "service.yaml"), helloService)
	write(t, filepath.Join(dir, "deployment.yaml"), helloDeployment(1))
	write(t, filepath.Join(dir, "gateway.yaml"), helloGateway)
	up := startUp(t, dir, state)

	st, err := localmesh.ReadState(state)
	if err != nil {
		t.Fatal(err)
	}
	if st.SkiffdPID == 0 || syscall.Kill(st.SkiffdPID, 0) != nil {
		t.Fatalf("mesh.json names no running skiffd: pid %d", st.SkiffdPID)
	}
	if err := syscall.Kill(st.SkiffdPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "skiff status saying skiffd is not running", func() (bool, string) {
		out := mustStatus(t, state)
		return strings.Contains(out, "problem: skiffd is not running (signal: killed); it is being restarted with back-off"), out
	})
	// Its addresses stay skiff up's while it is away, so the restart
	// serves the same ones: nothing else can bind them meanwhile.
	for flag, addr := range map[string]string{"xDS": st.XDSAddr, "secure": st.SecureAddr, "monitoring": st.MonitoringAddr} {
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			t.Errorf("skiffd's %s address %s could be bound by another process while skiffd was down", flag, addr)
		}
	}
	// While skiffd is away (the first restart waits 10 s), every request
	// through the gateway is answered on the proxies' last config.
	served := 0
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(up.out.String(), "skiffd restarted"); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no 'skiffd restarted' within 30s of killing it:\n%s", up.out.String())
		}
		body, err := get(up.gatewayURL + "/during")
		if err != nil || !strings.Contains(body, "GET /during") {
			t.Fatalf("request %d through the gateway while skiffd was down: %q, %v", served+1, body, err)
		}
		served++
	}
	if served < 20 {
		t.Errorf("only %d requests were made while skiffd was down; want the loop to cover its absence", served)
	}
	if want := "skiffd exited (signal: killed); restarting it in 10s; the proxies keep serving their last config meanwhile"; !strings.Contains(up.out.String(), want) {
		t.Errorf("skiff up did not say %q:\n%s", want, up.out.String())
	}
	eventually(t, 10*time.Second, "mesh.json naming the new skiffd", func() (bool, string) {
		s, err := localmesh.ReadState(state)
		if err != nil {
			return false, err.Error()
		}
		return s.SkiffdPID != 0 && s.SkiffdPID != st.SkiffdPID && syscall.Kill(s.SkiffdPID, 0) == nil, fmt.Sprint(s.SkiffdPID)
	})

	override := filepath.Join(t.TempDir(), "override.yaml")
	write(t, override, `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: hello
spec:
  hosts: ["*"]
  gateways: [hello-gateway]
  http:
  - directResponse: {status: 200, body: {string: "from the new skiffd"}}
`)
	if code, out, errOut := skiff(t, "apply", "-f", override, "--state-dir", state); code != 0 {
		t.Fatalf("apply after skiffd's restart: exit %d: %s%s", code, out, errOut)
	}
	// The proxies' reconnect back-off (up to 16 s after 10 s away) bounds this.
	eventually(t, 40*time.Second, "the gateway routing by the config applied after skiffd's restart", func() (bool, string) {
		body, err := get(up.gatewayURL + "/")
		return body == "from the new skiffd", fmt.Sprint(body, err)
	})
	synced := regexp.MustCompile(`(?m)^\S+\s+\S+\s+\S+\s+\S+\s+\d+\s+\S+\s+SYNCED\s`)
	eventually(t, 20*time.Second, "every proxy SYNCED in skiff status, and no problem", func() (bool, string) {
		out := mustStatus(t, state)
		return len(synced.FindAllString(out, -1)) == 2 && !strings.Contains(out, "NOT CONNECTED") && !strings.Contains(out, "STALE") &&
			!strings.Contains(out, "problem:"), out
	})
	if code, _, errOut := skiff(t, "delete", "-f", override, "--state-dir", state); code != 0 {
		t.Fatalf("delete: %s", errOut)
	}
	eventually(t, 20*time.Second, "hello answering again", func() (bool, string) {
		body, err := get(up.gatewayURL + "/back")
		return strings.Contains(body, "GET /back"), fmt.Sprint(body, err)
	})

	// A workload's process killed: restarted with back-off, traffic back.
	st, err = localmesh.ReadState(state)
	if err != nil {
		t.Fatal(err)
	}
	var app localmesh.PodState
	for _, p := range st.Pods {
		if !p.Gateway {
			app = p
		}
	}
	if len(app.Containers) != 1 || app.Containers[0].PID == 0 {
		t.Fatalf("mesh.json has no hello container pid: %+v", st.Pods)
	}
	if err := syscall.Kill(app.Containers[0].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	want := "pod default/" + app.Name + " container hello exited (signal: killed); restarting in 10s"
	eventually(t, 10*time.Second, "skiff up reporting the killed container", func() (bool, string) {
		return strings.Contains(up.out.String(), want), up.out.String()
	})
	row := regexp.MustCompile(`(?m)^default\s+` + app.Name + `\s+2/2\s+Running\s+1\s+\S+\s+SYNCED\s`)
	eventually(t, 30*time.Second, "the pod Running again with RESTARTS 1", func() (bool, string) {
		out := mustStatus(t, state)
		return row.MatchString(out), out
	})
	eventually(t, 20*time.Second, "hello answering through the gateway after its restart", func() (bool, string) {
		body, err := get(up.gatewayURL + "/again")
		return strings.Contains(body, "GET /again"), fmt.Sprint(body, err)
	})

	st, _ = localmesh.ReadState(state)
	up.down(t, state)
	if left := leftovers(state, dir); len(left) > 0 {
		t.Errorf("processes left after skiff down:\n%s", strings.Join(left, "\n"))
	}
	if st != nil && syscall.Kill(st.SkiffdPID, 0) == nil {
		t.Errorf("skiffd (pid %d) still runs after skiff down", st.SkiffdPID)
	}
}

// What keeps skiff up from starting stops it at once with one message
// naming what and where, exit 1, and leaves nothing running and no
// mesh.json.
func TestUpRefusesToStart(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyAddr := busy.Addr().String()
	_, busyPort, _ := net.SplitHostPort(busyAddr)

	good := map[string]string{"service.yaml": helloService, "deployment.yaml": helloDeployment(1), "gateway.yaml": helloGateway}
	withFile := func(name, content string) map[string]string {
		files := map[string]string{name: content}
		for k, v := range good {
			files[k] = v
		}
		return files
	}
	const syntaxError = "apiVersion: v1\nkind: Service\nmetadata:\n  name: broken\nspec:\n  ports: [{port: 80}\n"
	const unknownField = "apiVersion: v1\nkind: Service\nmetadata:\n  name: typo\nspec:\n  selector: {app: x}\n  portz:\n  - port: 80\n"
	missingProgram := strings.ReplaceAll(helloDeployment(1), "command: [hello,", "command: [no-such-program,")
	for _, tc := range []struct {
		name  string
		files map[string]string
		args  []string
		want  []string // each must appear in stderr; "DIR" stands for the manifests' directory
	}{
		{"gateway port in use", good, []string{"--gateway-port", busyPort},
			[]string{"skiff up: --gateway-port " + busyPort + ": ", "address already in use", "pass another port"}},
		{"xDS address in use", good, []string{"--xds-addr", busyAddr},
			[]string{"skiff up: --xds-addr " + busyAddr + ": ", "address already in use", "pass --xds-addr a free address"}},
		{"monitoring address in use", good, []string{"--monitoring-addr", busyAddr},
			[]string{"skiff up: --monitoring-addr " + busyAddr + ": ", "address already in use", "pass --monitoring-addr a free address"}},
		{"container without command", withFile("web.yaml", imageOnly), nil,
			[]string{"skiff up: DIR has 1 error, so nothing was started; fix it and run skiff up again:",
				"DIR/web.yaml:13: Deployment default/web: spec.template.spec.containers[0].command: container \"web\" has no command: the local mesh runs commands, not images"}},
		{"program not found", map[string]string{"deployment.yaml": missingProgram}, nil,
			[]string{"skiff up: DIR has 1 error", "DIR/deployment.yaml:15: Deployment default/hello: spec.template.spec.containers[0].command[0]: program \"no-such-program\" is neither next to skiff"}},
		{"YAML syntax error", withFile("broken.yaml", syntaxError), nil,
			[]string{"skiff up: DIR has 1 error", "DIR/broken.yaml:6: YAML syntax error"}},
		{"unknown field", withFile("typo.yaml", unknownField), nil,
			[]string{"skiff up: DIR has 1 error", "DIR/typo.yaml:7: Service default/typo: spec.portz: unknown field"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, state := t.TempDir(), t.TempDir()
			for name, content := range tc.files {
				write(t, filepath.Join(dir, name), content)
			}
			args := append([]string{"up", dir, "--state-dir", state, "--capture", "loopback", "--gateway-port", "0",
				"--xds-addr", "127.0.0.1:0", "--monitoring-addr", "127.0.0.1:0"}, tc.args...)
			cmd := exec.Command(filepath.Join(bin, "skiff"), args...)
			var stdout, stderr syncBuilder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			done := make(chan error, 1)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 1 {
					t.Errorf("skiff up: %v; want exit code 1", err)
				}
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("skiff up still running after 30s; want it refused:\n%s%s", stdout.String(), stderr.String())
			}
			errText := stderr.String()
			for _, w := range tc.want {
				if w = strings.ReplaceAll(w, "DIR", dir); !strings.Contains(errText, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errText)
				}
			}
			if n := strings.Count(errText, "skiff up:"); n != 1 {
				t.Errorf("stderr has %d messages, want one:\n%s", n, errText)
			}
			if strings.Contains(stdout.String(), "starting on") {
				t.Errorf("a pod was started before the refusal:\n%s", stdout.String())
			}
			if left := leftovers(state, dir); len(left) > 0 {
				t.Errorf("processes left after the refusal:\n%s", strings.Join(left, "\n"))
			}
			if _, err := os.Stat(filepath.Join(state, "mesh.json")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("mesh.json left behind: %v", err)
			}
		})
	}
}

// A skiffd that exits before it is ready stops skiff up with the end of
// its log, and nothing is left running.
func TestUpReportsSkiffdFailingToStart(t *testing.T) {
	own := t.TempDir()
	for _, name := range []string{"skiff", "skiff-proxy"} {
		// A hard link, so that skiff finds its neighbours in own.
		if err := os.Link(filepath.Join(bin, name), filepath.Join(own, name)); err != nil {
			t.Fatal(err)
		}
	}
	write(t, filepath.Join(own, "skiffd"), "#!/bin/sh\necho 'skiffd: cannot load the mesh config' >&2\nexit 1\n")
	if err := os.Chmod(filepath.Join(own, "skiffd"), 0o755); err != nil {
		t.Fatal(err)
	}
	dir, state := t.TempDir(), t.TempDir()
	write(t, filepath.Join(dir, "service.yaml"), helloService)
	cmd := exec.Command(filepath.Join(own, "skiff"), "up", dir, "--state-dir", state, "--capture", "loopback",
		"--gateway-port", "0", "--xds-addr", "127.0.0.1:0", "--monitoring-addr", "127.0.0.1:0")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("skiff up: %v; want exit code 1", err)
	}
	want := "skiff up: skiffd exited before it was ready (exit code 1): last lines of " + filepath.Join(state, "logs", "skiffd.log") +
		":\n  skiffd: cannot load the mesh config\n"
	if stderr.String() != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", stderr.String(), want)
	}
	if left := leftovers(state, dir); len(left) > 0 {
		t.Errorf("processes left:\n%s", strings.Join(left, "\n"))
	}
}

// With no skiffd binary next to skiff or in PATH, skiff up runs the skiffd
// built into skiff (skiff __skiffd), says so, and the mesh serves.
func TestUpRunsBuiltinSkiffd(t *testing.T) {
	own := t.TempDir()
	for _, name := range []string{"skiff", "skiff-proxy"} {
		if err := os.Link(filepath.Join(bin, name), filepath.Join(own, name)); err != nil {
			t.Fatal(err)
		}
	}
	dir, state := t.TempDir(), t.TempDir()
	write(t, filepath.Join(dir, "gateway.yaml"), strings.ReplaceAll(helloGateway,
		"  - route:\n    - destination: {host: hello, port: {number: 80}}\n",
		"  - directResponse: {status: 200, body: {string: \"served by the built-in skiffd\"}}\n"))
	cmd := exec.Command(filepath.Join(own, "skiff"), "up", dir, "--state-dir", state, "--capture", "loopback",
		"--gateway-port", "0", "--xds-addr", "127.0.0.1:0", "--monitoring-addr", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "PATH=/usr/bin:/bin")
	out := &syncBuilder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	exited := false
	defer func() {
		if !exited {
			cmd.Process.Kill()
			<-done
		}
	}()
	ingress := regexp.MustCompile(`ingress:\s+(http://127\.0\.0\.1:\d+)`)
	eventually(t, 30*time.Second, "skiff up printing the ingress URL", func() (bool, string) {
		return ingress.MatchString(out.String()), out.String()
	})
	if want := "skiffd: no skiffd binary next to skiff (" + own + ") or in PATH; running the one built into skiff"; !strings.Contains(out.String(), want) {
		t.Errorf("skiff up did not say %q:\n%s", want, out.String())
	}
	url := ingress.FindStringSubmatch(out.String())[1]
	if body, err := get(url + "/"); body != "served by the built-in skiffd" {
		t.Errorf("gateway answered %q, %v", body, err)
	}
	st, err := localmesh.ReadState(state)
	if err != nil {
		t.Fatal(err)
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", st.SkiffdPID))
	if args := strings.Split(string(cmdline), "\x00"); len(args) < 2 || args[0] != filepath.Join(own, "skiff") || args[1] != "__skiffd" {
		t.Errorf("skiffd (pid %d) runs as %q; want skiff __skiffd", st.SkiffdPID, args)
	}
	if code, o, e := skiff(t, "down", "--state-dir", state); code != 0 {
		t.Fatalf("skiff down: %s%s", o, e)
	}
	select {
	case <-done:
		exited = true
	case <-time.After(30 * time.Second):
		t.Fatal("skiff up still running 30s after skiff down")
	}
	if left := leftovers(state, dir); len(left) > 0 {
		t.Errorf("processes left:\n%s", strings.Join(left, "\n"))
	}
}
