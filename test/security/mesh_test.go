//go:build netns

package security

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/internal/testing/meshtest"
)

// bin holds skiff, skiffd, skiff-proxy and the sample programs side by
// side: skiff up finds skiffd and skiff-proxy next to itself, and the
// pods' commands (echo-server, ext-authz) there too.
var bin string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "test/security: the netns build tag is given but this is not root: these tests need network namespaces and iptables (run them as root, as CI and scripts/test.sh do, or leave out -tags netns)")
		os.Exit(1)
	}
	dir, err := meshtest.Build(map[string]string{
		"skiff": "github.com/skiff-mesh/skiff/cmd/skiff", "skiffd": "github.com/skiff-mesh/skiff/cmd/skiffd",
		"skiff-proxy": "github.com/skiff-mesh/skiff/cmd/skiff-proxy", "echo-server": "github.com/skiff-mesh/skiff/samples/echo/cmd/echo-server",
		"ext-authz": "github.com/skiff-mesh/skiff/samples/extauthz/cmd/ext-authz",
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, tool := range []string{"curl", "bash", "timeout", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "test/security: %s is not installed; the tests run it inside the pods (scripts/test.sh installs curl and iproute2)\n", tool)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	bin = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// mesh is one running `skiff up testdata/mesh`.
type mesh struct{ *meshtest.Mesh }

// startMesh runs skiff up on testdata/mesh with netns capture and the
// ext-authz mesh config, and waits for "mesh ready"; the mesh goes down
// when t ends.
func startMesh(t *testing.T) *mesh {
	t.Helper()
	dir, err := filepath.Abs("testdata/mesh")
	if err != nil {
		t.Fatal(err)
	}
	meshConfig, err := filepath.Abs("testdata/meshconfig.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The pods reach skiffd through the bridge; port 0 so as not to
	// collide with another skiffd on this host.
	args := []string{dir, "--capture", "netns", "--meshconfig", meshConfig,
		"--xds-addr", "198.18.0.1:0", "--gateway-port", "0", "--monitoring-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0"}
	return &mesh{meshtest.Start(t, bin, args, func(l string) (bool, error) {
		if strings.HasPrefix(l, "mesh up, but not ready") {
			return false, errors.New(l)
		}
		return l == "mesh ready", nil
	})}
}

// apply writes YAML a task gives inline (kubectl apply -f - <<EOF) to a
// file of its own, applies it with skiff apply -f, checks nothing was
// rejected and returns the file for skiff delete -f.
func (m *mesh) apply(t *testing.T, name, yaml string) string {
	t.Helper()
	return m.ApplyInline(t, name+".yaml", yaml)
}

// pod is a pod as skiff status -o json lists it.
type pod struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	IP        string `json:"ip"`
	Proxy     string `json:"proxy"`
	Admin     string `json:"admin"`
	Identity  string `json:"identity"`
}

// pod is the running pod of Deployment ns/deploy.
func (m *mesh) pod(t *testing.T, ns, deploy string) pod {
	t.Helper()
	out := m.Skiff(t, "status", "-o", "json")
	var rep struct {
		Pods []pod `json:"pods"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("skiff status -o json: %v\n%s", err, out)
	}
	for _, p := range rep.Pods {
		if p.Namespace == ns && strings.HasPrefix(p.Name, deploy+"-") && p.Status == "Running" {
			return p
		}
	}
	t.Fatalf("skiff status -o json lists no running pod of deploy/%s in namespace %s:\n%s", deploy, ns, out)
	return pod{}
}

// reply is what one command in a pod gave back.
type reply struct {
	sent   string // the command, as a user would type it
	exit   int    // its exit code (curl's: 56 receive failure, 52 empty reply, 7 refused, 28 timeout)
	status int    // HTTP status; 0 when curl got none (its %{http_code} 000)
	body   string
	stderr string
}

func (r reply) String() string {
	body := r.body
	if len(body) > 600 {
		body = body[:600] + "…"
	}
	s := fmt.Sprintf("sent: %s\ngot: exit %d, HTTP %03d, body:\n%s", r.sent, r.exit, r.status, indent(body))
	if r.stderr != "" {
		s += "\nstderr: " + strings.TrimSpace(r.stderr)
	}
	return s
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return "    (empty)"
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// exec runs command in ns/deploy's pod: skiff exec -n NS deploy/NAME -- …
func (m *mesh) exec(ns, deploy string, command ...string) reply {
	args := append([]string{"exec", "--state-dir", m.State, "-n", ns, "deploy/" + deploy, "--"}, command...)
	r := reply{sent: "skiff exec -n " + ns + " deploy/" + deploy + " -- " + shellJoin(command)}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "skiff"), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r.body, r.stderr = out.String(), errb.String()
	if ee, ok := err.(*exec.ExitError); ok {
		r.exit = ee.ExitCode()
	} else if err != nil {
		r.exit, r.stderr = -1, r.stderr+err.Error()
	}
	return r
}

func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if strings.Contains(a, "\n") {
			a = "$'" + strings.NewReplacer(`\`, `\\`, "'", `\'`, "\n", `\n`).Replace(a) + "'"
		} else if a == "" || strings.ContainsAny(a, " \t\"'$`\\|&;<>()*?!{}") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

// curl is the tasks' `kubectl exec deploy/curl -n NS -- curl URL …`: the
// status comes from %{http_code} on the last line of the output.
func (m *mesh) curl(ns, url string, args ...string) reply {
	cmd := append([]string{"curl", "-sS", "-m", "5", "-w", "\n%{http_code}"}, args...)
	r := m.exec(ns, "curl", append(cmd, url)...)
	if i := strings.LastIndexByte(r.body, '\n'); i >= 0 {
		r.status, _ = strconv.Atoi(strings.TrimSpace(r.body[i+1:]))
		r.body = r.body[:i]
	}
	return r
}

// tcp is the TCP task's `echo "port N" | nc HOST N` from curl in ns: it
// sends one line and reads one back (bash's /dev/tcp, as nc is not
// always installed).
func (m *mesh) tcp(ns, host string, port int) reply {
	script := fmt.Sprintf(`exec 3<>/dev/tcp/%s/%d && echo "port %d" >&3 && head -n1 <&3`, host, port, port)
	return m.exec(ns, "curl", "timeout", "5", "bash", "-c", script)
}

// adminGet reads a path of a proxy's admin API from the host.
func adminGet(admin, path string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Get("http://" + admin + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET http://%s%s: %s", admin, path, resp.Status)
	}
	return string(b), err
}

// stat reads one counter from a proxy's admin /stats (Envoy's flat names).
func stat(admin, name string) (int, error) {
	b, err := adminGet(admin, "/stats")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(b, "\n") {
		if v, ok := strings.CutPrefix(l, name+": "); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("%s/stats has no counter %s", admin, name)
}

// logTail is the last lines of a pod's sidecar log (or, without a
// sidecar, of its containers), for a failure message.
func (m *mesh) logTail(ns, deploy string) string {
	dirs, _ := filepath.Glob(filepath.Join(m.State, "logs", ns, deploy+"-*"))
	var b strings.Builder
	for _, d := range dirs {
		files, _ := filepath.Glob(filepath.Join(d, "*.log"))
		for _, f := range files {
			if strings.HasSuffix(f, "istio-init.log") {
				continue
			}
			data, err := os.ReadFile(f)
			if err != nil || len(bytes.TrimSpace(data)) == 0 {
				continue
			}
			lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
			if len(lines) > 8 {
				lines = lines[len(lines)-8:]
			}
			fmt.Fprintf(&b, "--- tail of %s:\n%s\n", f, indent(strings.Join(lines, "\n")))
		}
	}
	return b.String()
}
