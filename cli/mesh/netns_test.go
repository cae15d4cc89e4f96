//go:build netns

package mesh

import (
	"bufio"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

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
	up := exec.Command(filepath.Join(bin, "skiff"), "up", dir, "--state-dir", state, "--capture", "netns",
		"--gateway-port", "0", "--monitoring-addr", "127.0.0.1:0")
	stdout, err := up.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var upErr strings.Builder
	up.Stderr = &upErr
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		skiff(t, "down", "--state-dir", state)
		up.Wait()
	}()
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			t.Log("up: " + sc.Text())
			if u, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "ingress:"); ok {
				urls <- strings.TrimSpace(u)
			}
		}
	}()
	var gatewayURL string
	select {
	case gatewayURL = <-urls:
	case <-time.After(60 * time.Second):
		t.Fatalf("no ingress URL within 60s; stderr: %s", upErr.String())
	}
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
}
