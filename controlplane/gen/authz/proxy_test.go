package authz_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/gen/authz"

	// The filters skiff-proxy links in, as dataplane/proxy imports them.
	_ "github.com/skiff-mesh/skiff/dataplane/filters/jwtauthn"
	_ "github.com/skiff-mesh/skiff/dataplane/filters/rbac"
	"github.com/skiff-mesh/skiff/internal/testing/proxytest"
)

const samples = "/work/shared/istio-samples/jwt/"

// TestIstioTasksInSkiffProxy runs the generated filters in a real
// skiff-proxy, one listener per workload of Istio's authorization tasks,
// and checks what a client of each sees.
func TestIstioTasksInSkiffProxy(t *testing.T) {
	jwks, err := os.ReadFile(samples + "jwks.json")
	if err != nil {
		t.Skipf("Istio's JWT samples: %v", err)
	}
	demo := readToken(t, samples+"demo.jwt")
	groups := readToken(t, samples+"groups-scope.jwt")
	// A token whose signature no longer matches its payload.
	bad := demo[:len(demo)-4] + flip(demo[len(demo)-4:])

	backend := proxytest.ServeHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok "+r.URL.Path) }))
	jwksSrv := proxytest.ServeHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(jwks) }))
	echo := proxytest.TCPEcho(t)

	// Istio's task YAML with the JWKS served by the test behind the
	// outbound cluster of its host, as a ServiceEntry would provide.
	jwtTask := strings.ReplaceAll(readFile(t, "testdata/task-jwt.yaml"),
		"https://raw.githubusercontent.com/istio/istio/master/security/tools/jwt/samples/jwks.json",
		"http://jwks.example.com/jwks.json")
	principalOnly := `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-principal, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules:
  - from:
    - source:
        requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"]
`
	tcpTask := readFile(t, "testdata/task-tcp.yaml")
	tcpPorts := freePorts(t, 4)
	tcpEcho := map[string]string{"app": "tcp-echo"}
	httpbin := map[string]string{"app": "httpbin"}

	type lis struct {
		name  string
		port  int // 0: any
		f     authz.Filters
		isTCP bool
	}
	ls := []lis{
		{name: "productpage", f: build(t, "default", map[string]string{"app": "productpage"}, readFile(t, "testdata/task-http.yaml"))},
		{name: "ratings", f: build(t, "default", map[string]string{"app": "ratings"}, readFile(t, "testdata/task-http.yaml"))},
		{name: "deny", f: build(t, "foo", httpbin, readFile(t, "testdata/task-deny.yaml"))},
		{name: "jwt-authn", f: build(t, "foo", httpbin, only(jwtTask, "RequestAuthentication"))},
		{name: "jwt-principal", f: build(t, "foo", httpbin, only(jwtTask, "RequestAuthentication")+"\n---\n"+principalOnly)},
		{name: "jwt-groups", f: build(t, "foo", httpbin, only(jwtTask, "RequestAuthentication", "require-jwt"))},
		// Istio's TCP task on the ports the proxy listens on.
		{name: "tcp-allow", port: tcpPorts[0], isTCP: true,
			f: build(t, "foo", tcpEcho, strings.ReplaceAll(only(tcpTask, "tcp-policy"), "9000", strconv.Itoa(tcpPorts[0])))},
		{name: "tcp-allow-methods", port: tcpPorts[1], isTCP: true,
			f: build(t, "foo", tcpEcho, strings.ReplaceAll(only(tcpTask, "tcp-policy-methods"), "9000", strconv.Itoa(tcpPorts[1])))},
		{name: "tcp-deny-get", port: tcpPorts[2], isTCP: true, f: build(t, "foo", tcpEcho, only(tcpTask, "tcp-deny-get"))},
		// DENY GET on 9000 only: on another port the connection goes through.
		{name: "tcp-deny-get-9000", port: tcpPorts[3], isTCP: true, f: build(t, "foo", tcpEcho, only(tcpTask, "tcp-deny-get-9000"))},
	}

	var listeners []any
	for _, l := range ls {
		listeners = append(listeners, listener(t, l.name, l.port, l.f, l.isTCP))
	}
	boot := map[string]any{
		"admin": map[string]any{"address": sockAddr(0)},
		"static_resources": map[string]any{
			"clusters": []any{
				staticCluster("inbound|8000||", backend),
				staticCluster("inbound|9000||", echo),
				staticCluster("outbound|80||jwks.example.com", jwksSrv),
			},
			"listeners": listeners,
		},
	}
	bootJSON, err := json.Marshal(boot)
	if err != nil {
		t.Fatal(err)
	}
	p := proxytest.Start(t, string(bootJSON))

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for _, c := range []struct {
		listener, method, path string
		header                 map[string]string
		want                   int
	}{
		// HTTP task: productpage allows GET, denies the rest (allow-nothing);
		// ratings only admits the reviews identity, which plaintext lacks.
		{"productpage", "GET", "/productpage", nil, 200},
		{"productpage", "POST", "/productpage", nil, 403},
		{"ratings", "GET", "/ratings/0", nil, 403},
		// Deny task: GET needs x-token: admin, and only /ip is allowed.
		{"deny", "GET", "/ip", map[string]string{"x-token": "admin"}, 200},
		{"deny", "GET", "/ip", nil, 403},
		{"deny", "GET", "/ip", map[string]string{"x-token": "guest"}, 403},
		{"deny", "POST", "/ip", nil, 200},
		{"deny", "GET", "/headers", map[string]string{"x-token": "admin"}, 403},
		// RequestAuthentication alone: no token passes, a valid one passes,
		// a forged one is 401.
		{"jwt-authn", "GET", "/headers", nil, 200},
		{"jwt-authn", "GET", "/headers", bearer(demo), 200},
		{"jwt-authn", "GET", "/headers", bearer(bad), 401},
		// With a requestPrincipals policy a request without a token is 403.
		{"jwt-principal", "GET", "/headers", nil, 403},
		{"jwt-principal", "GET", "/headers", bearer(demo), 200},
		{"jwt-principal", "GET", "/headers", bearer(bad), 401},
		// JWT task's require-jwt: the principal and groups contains group1.
		{"jwt-groups", "GET", "/headers", bearer(groups), 200},
		{"jwt-groups", "GET", "/headers", bearer(demo), 403},
		{"jwt-groups", "GET", "/headers", nil, 403},
	} {
		req, _ := http.NewRequest(c.method, "http://"+p.ListenerAddr(c.listener).String()+c.path, nil)
		for k, v := range c.header {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s %s: %v", c.listener, c.method, c.path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: %s %s %v: %d %q, want %d", c.listener, c.method, c.path, c.header, resp.StatusCode, b, c.want)
		}
	}

	for _, c := range []struct {
		listener string
		through  bool
	}{{"tcp-allow", true}, {"tcp-allow-methods", false}, {"tcp-deny-get", false}, {"tcp-deny-get-9000", true}} {
		got, err := proxytest.TCPRoundTrip(p.ListenerAddr(c.listener).String(), "hello\n")
		if c.through && (err != nil || got != "hello\n") {
			t.Errorf("%s: got %q, %v; want the echo", c.listener, got, err)
		}
		if !c.through && err == nil {
			t.Errorf("%s: got %q; want the connection closed", c.listener, got)
		}
	}
}

func build(t *testing.T, ns string, labels map[string]string, yamlText string) authz.Filters {
	t.Helper()
	objs, errs := config.Decode([]byte(yamlText), "test.yaml")
	for _, e := range errs {
		t.Fatalf("decode: %v", e)
	}
	return authz.Build(authz.Input{Namespace: ns, Labels: labels, Policies: objs})
}

// only keeps the documents of text whose kind or name is in keep.
func only(text string, keep ...string) string {
	var out []string
	for _, doc := range strings.Split(text, "\n---") {
		for _, k := range keep {
			if strings.Contains(doc, "kind: "+k+"\n") || strings.Contains(doc, "name: "+k+"\n") || strings.Contains(doc, "name: \""+k+"\"\n") {
				out = append(out, doc)
				break
			}
		}
	}
	return strings.Join(out, "\n---\n")
}

func listener(t *testing.T, name string, port int, f authz.Filters, isTCP bool) map[string]any {
	var filters []any
	if isTCP {
		for _, n := range f.Network {
			filters = append(filters, protoJSON(t, n))
		}
		filters = append(filters, map[string]any{"name": "envoy.filters.network.tcp_proxy", "typed_config": map[string]any{
			"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", "stat_prefix": "inbound|9000||", "cluster": "inbound|9000||"}})
	} else {
		var hf []any
		for _, h := range f.HTTP {
			hf = append(hf, protoJSON(t, h))
		}
		hf = append(hf, map[string]any{"name": "envoy.filters.http.router", "typed_config": map[string]any{
			"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
		filters = append(filters, map[string]any{"name": "envoy.filters.network.http_connection_manager", "typed_config": map[string]any{
			"@type":       "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
			"stat_prefix": "inbound_" + name,
			"route_config": map[string]any{"name": "inbound|8000||", "virtual_hosts": []any{map[string]any{
				"name": "inbound|http|8000", "domains": []string{"*"},
				"routes": []any{map[string]any{"match": map[string]any{"prefix": "/"}, "route": map[string]any{"cluster": "inbound|8000||"}}}}}},
			"http_filters": hf,
		}})
	}
	return map[string]any{"name": name, "address": sockAddr(port), "filter_chains": []any{map[string]any{"filters": filters}}}
}

func protoJSON(t *testing.T, m proto.Message) json.RawMessage {
	t.Helper()
	b, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sockAddr(port int) map[string]any {
	return map[string]any{"socket_address": map[string]any{"address": "127.0.0.1", "port_value": port}}
}

func staticCluster(name, addr string) map[string]any {
	host, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	return map[string]any{"name": name, "type": "STATIC", "connect_timeout": "1s", "load_assignment": map[string]any{
		"cluster_name": name, "endpoints": []any{map[string]any{"lb_endpoints": []any{map[string]any{
			"endpoint": map[string]any{"address": map[string]any{"socket_address": map[string]any{"address": host, "port_value": n}}}}}}}}}
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func readToken(t *testing.T, path string) string { return strings.TrimSpace(readFile(t, path)) }

// flip changes every character of a base64url fragment.
func flip(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
	}
	return string(b)
}

// freePorts reserves n loopback ports for listeners whose policies name
// their port; they are released just before the proxy binds them.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}
