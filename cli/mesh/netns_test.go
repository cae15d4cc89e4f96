//go:build netns

package mesh

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiff-mesh/skiff/localmesh"
)

func testappDeployment(name string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: %[1]s}
spec:
  selector: {app: %[1]s}
  ports: [{name: http, port: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: %[1]s}
spec:
  selector: {matchLabels: {app: %[1]s}}
  template:
    metadata: {labels: {app: %[1]s}}
    spec:
      containers:
      - name: app
        command: [testapp, -addr, "$(POD_IP):8080", -name, "$(POD_NAME)"]
        ports: [{containerPort: 8080}]
        env:
        - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
`, name)
}

const frontGateway = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: front}
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [{route: [{destination: {host: front, port: {number: 8080}}}]}]
`

// As root each pod gets a network namespace with Istio's capture rules: an
// application calls another by its service name (resolved from the pod's
// hosts file to a cluster IP nothing listens on) and the call still
// arrives, because the sidecar captured it.
func TestUpNetnsCapture(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	write(t, filepath.Join(dir, "front.yaml"), testappDeployment("front"))
	write(t, filepath.Join(dir, "back.yaml"), testappDeployment("back"))
	write(t, filepath.Join(dir, "gateway.yaml"), frontGateway)
	// Network-namespace meshes take a host-wide lock (they share the
	// bridge); another package's test may hold it for a while.
	var (
		up       *exec.Cmd
		upErr    *syncBuilder
		upDone   chan error
		urls     chan string
		stopped  bool
		deadline = time.Now().Add(3 * time.Minute)
	)
	for {
		up = exec.Command(filepath.Join(bin, "skiff"), "up", dir, "--state-dir", state, "--capture", "netns",
			"--gateway-port", "0", "--monitoring-addr", "127.0.0.1:0")
		stdout, err := up.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		upErr = &syncBuilder{}
		up.Stderr = upErr
		if err := up.Start(); err != nil {
			t.Fatal(err)
		}
		upDone, urls = make(chan error, 1), make(chan string, 1)
		go func(up *exec.Cmd, upDone chan error, urls chan string) {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				t.Log(time.Now().Format("15:04:05.000") + " up: " + sc.Text())
				if u, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "ingress:"); ok {
					urls <- strings.TrimSpace(u)
				}
			}
			upDone <- up.Wait()
		}(up, upDone, urls)
		var gatewayURL string
		select {
		case gatewayURL = <-urls:
		case err := <-upDone:
			if strings.Contains(upErr.String(), "another local mesh on this host uses network namespaces") && time.Now().Before(deadline) {
				time.Sleep(time.Second)
				continue
			}
			t.Fatalf("skiff up exited before the mesh was ready: %v; stderr: %s", err, upErr.String())
		case <-time.After(60 * time.Second):
			up.Process.Kill()
			t.Fatalf("no ingress URL within 60s; stderr: %s", upErr.String())
		}
		defer func() {
			if !stopped {
				skiff(t, "down", "--state-dir", state)
				<-upDone
			}
		}()
		testNetnsMesh(t, dir, state, gatewayURL)
		break
	}
	// skiff down leaves nothing behind: no process, no network namespace
	// (the capture rules lived in them), no bridge, no /etc/netns entry.
	st, err := localmesh.ReadState(state)
	if err != nil {
		t.Fatal(err)
	}
	stopped = true
	if code, out, errOut := skiff(t, "down", "--state-dir", state); code != 0 {
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
	checkNothingLeft(t, st, state, dir)
}

// testNetnsMesh checks the running mesh captures traffic.
func testNetnsMesh(t *testing.T, dir, state, gatewayURL string) {
	t.Helper()
	st, err := localmesh.ReadState(state)
	if err != nil {
		t.Fatal(err)
	}
	if st.Capture != "netns" {
		t.Fatalf("mesh.json capture = %q, want netns", st.Capture)
	}
	want := regexp.MustCompile(`^front-\S+ -> 200 back-\S+\n$`)
	eventually(t, 20*time.Second, "front calling http://back:8080/ through the mesh", func() (bool, string) {
		body, err := get(gatewayURL + "/call?url=http://back:8080/")
		if err != nil {
			return false, err.Error()
		}
		return want.MatchString(body), body
	})
	// Each proxy, running as UID 1337, alone can read its CA token, and
	// skiffd's CA on the bridge accepts it for exactly the pod's identity.
	for _, p := range st.Pods {
		tokenPath := filepath.Join(p.PodDir, "istio-token")
		fi, err := os.Stat(tokenPath)
		if err != nil {
			t.Errorf("pod %s: %v", p.Name, err)
			continue
		}
		if sys, ok := fi.Sys().(*syscall.Stat_t); !ok || sys.Uid != 1337 || fi.Mode().Perm() != 0o600 {
			t.Errorf("pod %s token %s: mode %v owner %v; want 0600 owned by the proxy's UID 1337", p.Name, tokenPath, fi.Mode().Perm(), fi.Sys())
		}
		tok, _ := os.ReadFile(tokenPath)
		chain, err := askCA(t, st, tok, filepath.Join(p.PodDir, "root-cert.pem"), p.Identity)
		if err != nil {
			t.Errorf("pod %s: CreateCertificate for %s over %s: %v", p.Name, p.Identity, st.SecureAddr, err)
		} else if got := leafURI(t, chain); got != p.Identity {
			t.Errorf("pod %s: certificate for %s, want %s", p.Name, got, p.Identity)
		}
	}
}

// checkNothingLeft asserts that no process of the mesh, no network
// namespace (the capture rules lived in them), no bridge and no
// /etc/netns entry is left.
func checkNothingLeft(t *testing.T, st *localmesh.State, state, dir string) {
	t.Helper()
	if left := leftovers(state, dir); len(left) > 0 {
		t.Errorf("processes left after skiff down:\n%s", strings.Join(left, "\n"))
	}
	for _, p := range st.Pods {
		for _, path := range []string{"/var/run/netns/skiff-", "/etc/netns/skiff-"} {
			path += p.Name + "." + p.Namespace
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s left after skiff down (stat: %v)", path, err)
			}
		}
	}
	// The bridge is shared by every network-namespace mesh on the host;
	// it must be gone unless another one (another package's test) has
	// started since, which its host-wide lock tells.
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "skiff-netns.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
		if _, err := os.Stat("/sys/class/net/skiff0"); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("bridge skiff0 left after skiff down (stat: %v)", err)
		}
	} else {
		t.Log("another network-namespace mesh runs on this host now; the bridge is its")
	}
	for _, p := range st.Pods {
		if syscall.Kill(p.ProxyPID, 0) == nil {
			t.Errorf("sidecar of %s (pid %d) still runs", p.Name, p.ProxyPID)
		}
	}
	if syscall.Kill(st.SkiffdPID, 0) == nil {
		t.Errorf("skiffd (pid %d) still runs", st.SkiffdPID)
	}
}
