package inspect

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/skiff-mesh/skiff/controlplane/server"
	"github.com/skiff-mesh/skiff/internal/testing/proxytest"
	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
)

// mapResolver is the local mesh's pod table in miniature.
type mapResolver map[PodRef]string

func (m mapResolver) AdminAddr(pod, ns string) (string, error) {
	if a, ok := m[PodRef{pod, ns}]; ok {
		return a, nil
	}
	return "", fmt.Errorf("no such pod in the local mesh")
}

func (m mapResolver) Pods() ([]PodRef, error) {
	var out []PodRef
	for p := range m {
		out = append(out, p)
	}
	return out, nil
}

// meshConfig is a small mesh: reviews with two versions, a DestinationRule
// naming them, a VirtualService sending everything to v1, and a client pod
// whose Sidecar binds its egress listener for port 9080 on bindIP.
func meshConfig(bindIP string) string {
	return fmt.Sprintf(`apiVersion: v1
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
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: client, namespace: default}
spec:
  workloadSelector: {labels: {app: client}}
  egress:
  - port: {number: 9080, protocol: HTTP, name: http}
    bind: %s
    hosts: ["./*"]
`, bindIP)
}

type mesh struct {
	env    Env
	bindIP string
}

// meshes numbers the meshes started, so that each binds its own address.
var meshes atomic.Int32

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startMesh runs skiffd on meshConfig and the client's skiff-proxy
// connected to it, until the test ends.
func startMesh(t *testing.T) *mesh {
	t.Helper()
	dir := t.TempDir()
	bindIP := fmt.Sprintf("127.0.44.%d", 10+meshes.Add(1))
	if err := os.WriteFile(filepath.Join(dir, "mesh.yaml"), []byte(meshConfig(bindIP)), 0o644); err != nil {
		t.Fatal(err)
	}
	cp, err := server.New(server.Options{ConfigDir: dir, XDSAddr: "127.0.0.1:0", MonitoringAddr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("skiffd: %v", err)
		}
	})
	p := proxytest.Start(t, xdsres.ADSBootstrap(cp.XDSAddr().String(),
		"sidecar~127.0.0.9~client.default~default.svc.cluster.local",
		"{NAMESPACE: default, LABELS: {app: client}, SERVICE_ACCOUNT: client, WORKLOAD_NAME: client, INSTANCE_IPS: 127.0.0.9}", false))
	return &mesh{bindIP: bindIP, env: Env{
		MonitoringAddr: cp.MonitoringAddr().String(),
		Resolver:       mapResolver{{"client", "default"}: p.AdminAddr().String()},
	}}
}

// run is `skiff ARGS...`: exit code, stdout, stderr.
func run(env Env, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, env, &out, &errb)
	return code, out.String(), errb.String()
}

// eventually polls f until it reports true or 10 s pass.
func eventually(t *testing.T, what string, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, got := f()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s; last:\n%s", what, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// table cuts tabwriter output into cells at the columns of its header,
// whose column names are given: cells must line up under their heading.
func table(s string, columns ...string) [][]string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	var starts []int
	from := 0
	for _, c := range columns {
		i := strings.Index(lines[0][from:], c)
		if i < 0 {
			return [][]string{{"header without " + c + ": " + lines[0]}}
		}
		starts = append(starts, from+i)
		from += i + len(c)
	}
	var rows [][]string
	for _, l := range lines {
		var row []string
		for i, st := range starts {
			end := len(l)
			if i+1 < len(starts) {
				end = min(starts[i+1], len(l))
			}
			if st > len(l) {
				st = len(l)
			}
			row = append(row, strings.TrimRight(l[st:end], " "))
		}
		rows = append(rows, row)
	}
	return rows
}

// waitSynced waits until skiffd reports the client's proxy synced on every
// type it asks for (routes arrive after the listener that names them).
func waitSynced(t *testing.T, m *mesh) {
	t.Helper()
	eventually(t, "proxy-status to show client.default synced", func() (bool, string) {
		_, out, errs := run(m.env, "proxy-status")
		rows := table(out, "NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ECDS", "ISTIOD", "VERSION")
		return len(rows) == 2 && strings.Join(rows[1], " ") == "client.default Kubernetes SYNCED SYNCED SYNCED SYNCED IGNORED skiffd -", out + errs
	})
	// A listener goes active once its routes are in; the ACK of the routes
	// may come a moment before.
	eventually(t, "the egress listener to be active", func() (bool, string) {
		_, out, errs := run(m.env, "proxy-config", "listeners", "client", "--port", "9080")
		return strings.Contains(out, "Route: 9080"), out + errs
	})
}

func TestProxyStatus(t *testing.T) {
	m := startMesh(t)
	waitSynced(t, m)

	// The whole table, alignment included. skiffd may push again at any
	// time (a debounced rebuild), so wait for a quiet moment.
	const synced = `NAME               CLUSTER        CDS        LDS        EDS        RDS        ECDS        ISTIOD     VERSION
client.default     Kubernetes     SYNCED     SYNCED     SYNCED     SYNCED     IGNORED     skiffd     -
`
	eventually(t, "proxy-status to print the synced table", func() (bool, string) {
		code, out, errs := run(m.env, "proxy-status")
		return code == 0 && errs == "" && out == synced, fmt.Sprintf("exit %d, stderr %q\n%s", code, errs, out)
	})

	code, out, errs := run(m.env, "proxy-status", "-o", "json")
	if code != 0 {
		t.Fatalf("proxy-status -o json: exit %d: %s", code, errs)
	}
	var rows []struct {
		Name   string            `json:"name"`
		Status map[string]string `json:"status"`
		Syncz  struct {
			ProxyID string `json:"proxy_id"`
			Types   []struct {
				TypeURL string `json:"type_url"`
			} `json:"types"`
		} `json:"syncz"`
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("proxy-status -o json is not JSON: %v\n%s", err, out)
	}
	// The state may be STALE for a moment if skiffd pushes; that it is
	// there is what the JSON form must show.
	if len(rows) != 1 || rows[0].Name != "client.default" || rows[0].Status["CDS"] == "" || rows[0].Status["ECDS"] != "IGNORED" ||
		rows[0].Syncz.ProxyID != "client.default" || len(rows[0].Syncz.Types) != 4 {
		t.Errorf("proxy-status -o json: %+v", rows)
	}

	code, out, _ = run(m.env, "ps", "-o", "yaml")
	var y []map[string]any
	if code != 0 || yaml.Unmarshal([]byte(out), &y) != nil || len(y) != 1 || y[0]["name"] != "client.default" {
		t.Errorf("ps -o yaml: exit %d\n%s", code, out)
	}

	// One pod: its config against what skiffd generates for it (the two
	// are read one after the other, so a push in between can part them).
	eventually(t, "proxy-status client.default to match", func() (bool, string) {
		code, out, errs := run(m.env, "proxy-status", "client.default")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		return code == 0 && len(lines) == 3 && lines[0] == "Clusters Match" && lines[1] == "Listeners Match" &&
			strings.HasPrefix(lines[2], "Routes Match (RDS last loaded at "), out + errs
	})
}

func TestProxyConfigTables(t *testing.T) {
	m := startMesh(t)
	waitSynced(t, m)

	// The whole table, alignment included, once.
	code, out, errs := run(m.env, "proxy-config", "clusters", "client")
	const clusters = `SERVICE FQDN                          PORT     SUBSET     DIRECTION     TYPE             DESTINATION RULE
BlackHoleCluster                      -        -          -             STATIC           
InboundPassthroughCluster             -        -          -             ORIGINAL_DST     
PassthroughCluster                    -        -          -             ORIGINAL_DST     
reviews.default.svc.cluster.local     9080     -          outbound      EDS              reviews.default
reviews.default.svc.cluster.local     9080     v1         outbound      EDS              reviews.default
reviews.default.svc.cluster.local     9080     v2         outbound      EDS              reviews.default
xds                                   -        -          -             STATIC           
`
	if code != 0 || out != clusters {
		t.Errorf("proxy-config clusters client: exit %d, stderr %q\ngot:\n%s\nwant:\n%s", code, errs, out, clusters)
	}

	ip := m.bindIP
	cases := []struct {
		args []string
		want [][]string
	}{
		{[]string{"pc", "clusters", "client.default", "--subset", "v1"}, [][]string{
			{"SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE"},
			{"reviews.default.svc.cluster.local", "9080", "v1", "outbound", "EDS", "reviews.default"}}},
		{[]string{"proxy-config", "cluster", "client", "--fqdn", "reviews", "--port", "9080", "--direction", "outbound"}, [][]string{
			{"SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE"},
			{"reviews.default.svc.cluster.local", "9080", "-", "outbound", "EDS", "reviews.default"},
			{"reviews.default.svc.cluster.local", "9080", "v1", "outbound", "EDS", "reviews.default"},
			{"reviews.default.svc.cluster.local", "9080", "v2", "outbound", "EDS", "reviews.default"}}},
		{[]string{"proxy-config", "clusters", "client", "--direction", "inbound"}, [][]string{
			{"SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE"}}},
		{[]string{"proxy-config", "listeners", "client"}, [][]string{
			{"ADDRESSES", "PORT", "MATCH", "DESTINATION"},
			{ip, "9080", "Trans: raw_buffer; App: http/1.1,h2c", "Route: 9080"},
			{ip, "9080", "ALL", "PassthroughCluster"},
			{"0.0.0.0", "15001", "ALL", "PassthroughCluster"},
			{"0.0.0.0", "15001", "Addr: *:15001", "Non-HTTP/Non-TCP"},
			{"0.0.0.0", "15006", "Addr: *:15006", "Non-HTTP/Non-TCP"},
			{"0.0.0.0", "15006", "Trans: raw_buffer; App: http/1.1,h2c", "Inline Route: /*"},
			{"0.0.0.0", "15006", "Trans: raw_buffer", "InboundPassthroughCluster"}}},
		{[]string{"proxy-config", "listeners", "client", "--port", "9080", "--verbose=false"}, [][]string{
			{"ADDRESSES", "PORT", "TYPE"},
			{ip, "9080", "HTTP+TCP"}}},
		{[]string{"proxy-config", "listener", "client", "--type", "tcp", "--verbose=false"}, [][]string{
			{"ADDRESSES", "PORT", "TYPE"},
			{"0.0.0.0", "15001", "TCP"}}},
		{[]string{"proxy-config", "l", "client", "--address", ip}, [][]string{
			{"ADDRESSES", "PORT", "MATCH", "DESTINATION"},
			{ip, "9080", "Trans: raw_buffer; App: http/1.1,h2c", "Route: 9080"},
			{ip, "9080", "ALL", "PassthroughCluster"}}},
		{[]string{"proxy-config", "routes", "client"}, [][]string{
			{"NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"},
			{"9080", "reviews.default.svc.cluster.local:9080", "reviews, reviews.default", "/*", "reviews.default"}}},
		{[]string{"proxy-config", "routes", "client", "--name", "9080", "--verbose=false"}, [][]string{
			{"NAME", "VIRTUAL HOSTS"},
			{"9080", "2"}}}, // reviews, and the allow_any host whose only route passes through
		{[]string{"proxy-config", "routes", "client", "--name", "15006"}, [][]string{
			{"NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"}}},
		{[]string{"proxy-config", "endpoints", "client", "--cluster", "reviews"}, [][]string{
			{"ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"},
			{"127.0.0.2:9080", "HEALTHY", "OK", "outbound|9080|v1|reviews.default.svc.cluster.local"},
			{"127.0.0.2:9080", "HEALTHY", "OK", "outbound|9080||reviews.default.svc.cluster.local"},
			{"127.0.0.3:9080", "HEALTHY", "OK", "outbound|9080|v2|reviews.default.svc.cluster.local"},
			{"127.0.0.3:9080", "HEALTHY", "OK", "outbound|9080||reviews.default.svc.cluster.local"}}},
		{[]string{"proxy-config", "ep", "client", "--address", "127.0.0.3", "--port", "9080", "--cluster", "|v2|"}, [][]string{
			{"ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"},
			{"127.0.0.3:9080", "HEALTHY", "OK", "outbound|9080|v2|reviews.default.svc.cluster.local"}}},
		{[]string{"proxy-config", "endpoints", "client", "--status", "unhealthy"}, [][]string{
			{"ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"}}},
		{[]string{"proxy-config", "secret", "client"}, [][]string{
			{"RESOURCE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER", "NOT AFTER", "NOT BEFORE"}}},
	}
	for _, c := range cases {
		code, out, errs := run(m.env, c.args...)
		if code != 0 {
			t.Errorf("%v: exit %d: %s", c.args, code, errs)
			continue
		}
		if got := table(out, c.want[0]...); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%v:\ngot  %q\nwant %q\n%s", c.args, got, c.want, out)
		}
	}

	// all: each table in turn, separated by blank lines.
	code, out, _ = run(m.env, "proxy-config", "all", "client", "--fqdn", "reviews", "--subset", "v2")
	sections := strings.Split(out, "\n\n")
	if code != 0 || len(sections) != 5 || !strings.HasPrefix(sections[0], "SERVICE FQDN") || !strings.HasPrefix(sections[1], "ADDRESSES") ||
		!strings.HasPrefix(sections[2], "NAME") || !strings.HasPrefix(sections[3], "ENDPOINT") || !strings.HasPrefix(sections[4], "RESOURCE NAME") ||
		strings.Count(sections[0], "\n") != 1 {
		t.Errorf("proxy-config all: exit %d\n%s", code, out)
	}
}

func TestProxyConfigJSONAndYAML(t *testing.T) {
	m := startMesh(t)
	waitSynced(t, m)

	names := func(args ...string) []string {
		t.Helper()
		code, out, errs := run(m.env, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errs)
		}
		var items []map[string]any
		if err := json.Unmarshal([]byte(out), &items); err != nil {
			t.Fatalf("%v: not a JSON list: %v\n%s", args, err, out)
		}
		var ns []string
		for _, it := range items {
			ns = append(ns, fmt.Sprint(it["name"]))
		}
		return ns
	}
	if got := names("proxy-config", "clusters", "client", "--fqdn", "reviews", "-o", "json"); !reflect.DeepEqual(got, []string{
		"outbound|9080||reviews.default.svc.cluster.local", "outbound|9080|v1|reviews.default.svc.cluster.local", "outbound|9080|v2|reviews.default.svc.cluster.local"}) {
		t.Errorf("clusters -o json: %q", got)
	}
	if got := names("proxy-config", "listeners", "client", "--port", "9080", "-o", "json"); !reflect.DeepEqual(got, []string{m.bindIP + "_9080"}) {
		t.Errorf("listeners -o json: %q", got)
	}
	if got := names("proxy-config", "routes", "client", "-o", "json"); !reflect.DeepEqual(got, []string{"9080"}) {
		t.Errorf("routes -o json: %q", got)
	}
	if got := names("proxy-config", "endpoints", "client", "--address", "127.0.0.2", "-o", "json"); !reflect.DeepEqual(got, []string{
		"outbound|9080|v1|reviews.default.svc.cluster.local", "outbound|9080||reviews.default.svc.cluster.local"}) {
		t.Errorf("endpoints -o json: %q", got)
	}

	// A route's JSON carries what the table summarises.
	_, out, _ := run(m.env, "proxy-config", "routes", "client", "-o", "json")
	if !strings.Contains(out, `"cluster": "outbound|9080|v1|reviews.default.svc.cluster.local"`) {
		t.Errorf("routes -o json does not route to v1:\n%s", out)
	}

	code, out, _ := run(m.env, "proxy-config", "clusters", "client", "--subset", "v1", "-o", "yaml")
	var y []map[string]any
	if err := yaml.Unmarshal([]byte(out), &y); code != 0 || err != nil || len(y) != 1 || y[0]["name"] != "outbound|9080|v1|reviews.default.svc.cluster.local" {
		t.Errorf("clusters -o yaml: exit %d, %v\n%s", code, err, out)
	}

	code, out, _ = run(m.env, "proxy-config", "all", "client", "-o", "json")
	var dump struct {
		Configs []map[string]any `json:"configs"`
	}
	if err := json.Unmarshal([]byte(out), &dump); code != 0 || err != nil || len(dump.Configs) < 5 {
		t.Errorf("all -o json: exit %d, %v\n%.500s", code, err, out)
	}
	var types []string
	for _, c := range dump.Configs {
		types = append(types, fmt.Sprint(c["@type"]))
	}
	if !slices.Contains(types, "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump") {
		t.Errorf("all -o json leaves out endpoints: %q", types)
	}

	code, out, _ = run(m.env, "proxy-config", "all", "client", "-o", "yaml")
	var ydump struct {
		Configs []map[string]any `json:"configs"`
	}
	if err := yaml.Unmarshal([]byte(out), &ydump); code != 0 || err != nil || len(ydump.Configs) != len(dump.Configs) {
		t.Errorf("all -o yaml: exit %d, %v\n%.500s", code, err, out)
	}
}

func TestErrorsSayWhatToDo(t *testing.T) {
	m := startMesh(t)
	waitSynced(t, m)
	closed := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	withGhost := m.env
	withGhost.Resolver = mapResolver{{"ghost", "default"}: closed}

	cases := []struct {
		name string
		env  Env
		args []string
		code int
		want []string
	}{
		{"unknown pod", m.env, []string{"proxy-config", "clusters", "nope"}, 1,
			[]string{"pod nope.default: no such pod in the local mesh; pods with a proxy: client.default"}},
		{"unknown pod in proxy-status", m.env, []string{"proxy-status", "nope.other"}, 1,
			[]string{"pod nope.other:", "pods with a proxy: client.default"}},
		{"skiffd down", Env{MonitoringAddr: closed}, []string{"proxy-status"}, 1,
			[]string{"cannot reach skiffd at " + closed + " (GET /debug/syncz)", "connection refused", "skiff up"}},
		{"proxy down", Env{Resolver: mapResolver{{"client", "default"}: closed}}, []string{"proxy-config", "listeners", "client"}, 1,
			[]string{"cannot reach the proxy of pod client.default at " + closed, "skiff status"}},
		{"no local mesh", Env{}, []string{"proxy-config", "routes", "client"}, 1,
			[]string{"cannot find the proxy of pod client.default", "skiff up"}},
		{"pod not connected", withGhost, []string{"proxy-status", "ghost"}, 1,
			[]string{"the proxy of pod ghost.default is not connected to skiffd at " + m.env.MonitoringAddr, "skiff proxy-status"}},
		{"no command", m.env, nil, 2, []string{"missing command"}},
		{"no type", m.env, []string{"proxy-config"}, 2, []string{"proxy-config needs a TYPE and a POD", "listeners"}},
		{"bad type", m.env, []string{"proxy-config", "bogus", "client"}, 2, []string{`unknown proxy-config type "bogus"`}},
		{"no pod", m.env, []string{"proxy-config", "clusters"}, 2, []string{"missing POD"}},
		{"bad output", m.env, []string{"proxy-config", "clusters", "client", "-o", "xml"}, 2, []string{"-o xml: want short, json or yaml"}},
		{"flag of another type", m.env, []string{"proxy-config", "listeners", "client", "--subset", "v1"}, 2,
			[]string{"flag provided but not defined: -subset", "--address ADDR"}},
		{"bad direction", m.env, []string{"proxy-config", "clusters", "client", "--direction", "up"}, 2, []string{"want inbound or outbound"}},
		{"two pods", m.env, []string{"proxy-status", "a", "b"}, 2, []string{"at most one POD"}},
		{"pod and file", m.env, []string{"proxy-config", "routes", "client", "-f", "dump.json"}, 2, []string{"give POD or -f FILE, not both"}},
		{"missing file", m.env, []string{"proxy-config", "routes", "-f", "/nonexistent/dump.json"}, 1, []string{"-f: open /nonexistent/dump.json"}},
	}
	for _, c := range cases {
		code, out, errs := run(c.env, c.args...)
		if code != c.code {
			t.Errorf("%s: exit %d, want %d\nstdout %s\nstderr %s", c.name, code, c.code, out, errs)
		}
		for _, w := range c.want {
			if !strings.Contains(errs, w) {
				t.Errorf("%s: stderr lacks %q:\n%s", c.name, w, errs)
			}
		}
	}

	code, out, _ := run(m.env, "proxy-config", "clusters", "--help")
	if code != 0 || !strings.Contains(out, "--fqdn HOST") {
		t.Errorf("proxy-config clusters --help: exit %d\n%s", code, out)
	}
}
