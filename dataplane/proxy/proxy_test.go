package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
	"github.com/skiff-mesh/skiff/internal/testing/xdsserver"
)

// backend is a real HTTP server that names itself in each answer.
func backend(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-upstream", name)
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// startProxy runs a proxy from bootstrap YAML until the test ends and
// waits until it is ready.
func startProxy(t *testing.T, bootstrapYAML string) *Proxy {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bootstrap.yaml")
	if err := os.WriteFile(path, []byte(bootstrapYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := New(Options{ConfigPath: path, DrainTime: 100 * time.Millisecond, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("proxy Run: %v", err)
		}
	})
	select {
	case <-p.Ready():
	case err := <-done:
		t.Fatalf("proxy stopped before ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("proxy not ready within 10s")
	}
	return p
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// get fetches url with a fresh connection and returns status and body.
func get(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// eventually polls until f succeeds or 5 s pass.
func eventually(t *testing.T, what string, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		var ok bool
		if ok, last = f(); ok {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not happen within 5s; last: %s", what, last)
}

// The plain Envoy front-proxy bootstrap from ../shared/examples runs
// unchanged: listener 127.0.0.1:10000 → LOGICAL_DNS localhost:8080, admin
// on 127.0.0.1:9901.
func TestEnvoyFrontProxyExampleRunsUnchanged(t *testing.T) {
	data, err := os.ReadFile("../../../shared/examples/envoy-front-proxy.yaml")
	if err != nil {
		t.Fatalf("the shared example must be beside the repository: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:8080")
	if err != nil {
		t.Fatalf("the example's upstream port 127.0.0.1:8080 is taken: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "sample saw %s %s xff=%q", r.Method, r.URL.Path, r.Header.Get("x-forwarded-proto"))
	})}
	go srv.Serve(ln)
	defer srv.Close()
	p := startProxy(t, string(data))
	code, body, hdr := get(t, "http://127.0.0.1:10000/some/path")
	if code != 200 || !strings.HasPrefix(body, "sample saw GET /some/path") {
		t.Fatalf("through the front proxy: %d %q", code, body)
	}
	if hdr.Get("x-envoy-upstream-service-time") == "" {
		t.Errorf("no x-envoy-upstream-service-time header: %v", hdr)
	}
	if a := p.AdminAddr(); a == nil || a.String() != "127.0.0.1:9901" {
		t.Fatalf("admin address %v, want 127.0.0.1:9901", a)
	}
	code, body, _ = get(t, "http://127.0.0.1:9901/ready")
	if code != 200 || strings.TrimSpace(body) != "LIVE" {
		t.Fatalf("/ready: %d %q", code, body)
	}
	_, stats, _ := get(t, "http://127.0.0.1:9901/stats")
	if !strings.Contains(stats, "cluster.some_service.upstream_rq_2xx: 1") {
		t.Errorf("/stats lacks cluster.some_service.upstream_rq_2xx: 1:\n%s", grep(stats, "some_service.upstream_rq"))
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// meshConfig is what the xDS tests push: EDS clusters a and b, an HTTP
// listener whose routes come from RDS.
func meshConfig(listen, a, b string, route *routev3.Route, extra ...types.Resource) []types.Resource {
	res := []types.Resource{
		xdsres.EDSCluster("a"), xdsres.EDSCluster("b"),
		xdsres.Endpoints("a", a), xdsres.Endpoints("b", b),
		xdsres.Listener("http", listen, xdsres.HCM("http", "routes")),
		xdsres.RouteConfig("routes", route),
	}
	return append(res, extra...)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestADSDrivesRoutingAndShifts(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) {
			xds := xdsserver.Start(t)
			a, b := backend(t, "a"), backend(t, "b")
			listen := freeAddr(t)
			xds.Set(t, meshConfig(listen, a, b, xdsres.PrefixRoute("/", "a"))...)
			startProxy(t, xds.Bootstrap(delta))
			url := "http://" + listen + "/hello"
			if code, body, _ := get(t, url); code != 200 || body != "a /hello" {
				t.Fatalf("first request: %d %q", code, body)
			}
			// An RDS change alone moves the traffic.
			xds.Set(t, meshConfig(listen, a, b, xdsres.PrefixRoute("/", "b"))...)
			eventually(t, "traffic moving to b", func() (bool, string) {
				code, body, _ := get(t, url)
				return code == 200 && body == "b /hello", fmt.Sprint(code, body)
			})
			// A weighted split lands within statistical bounds: 80/20 over
			// 500 requests has a standard deviation of ~9.
			xds.Set(t, meshConfig(listen, a, b, xdsres.WeightedRoute("/", map[string]uint32{"a": 80, "b": 20}))...)
			eventually(t, "the split config to apply", func() (bool, string) {
				_, body, _ := get(t, url)
				return body == "a /hello", body
			})
			counts := map[string]int{}
			client := &http.Client{Timeout: 5 * time.Second}
			for i := 0; i < 500; i++ {
				resp, err := client.Get(url)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				counts[resp.Header.Get("x-upstream")]++
			}
			if counts["a"] < 360 || counts["a"] > 440 || counts["a"]+counts["b"] != 500 {
				t.Fatalf("80/20 split over 500 requests gave %v", counts)
			}
		})
	}
}

// An invalid resource is NACKed with a message naming it and the field,
// and traffic keeps flowing on the last good configuration.
func TestInvalidResourceNACKedAndLastGoodKept(t *testing.T) {
	xds := xdsserver.Start(t)
	a, b := backend(t, "a"), backend(t, "b")
	listen := freeAddr(t)
	xds.Set(t, meshConfig(listen, a, b, xdsres.PrefixRoute("/", "a"))...)
	startProxy(t, xds.Bootstrap(false))
	url := "http://" + listen + "/"
	if code, body, _ := get(t, url); code != 200 || body != "a /" {
		t.Fatalf("before: %d %q", code, body)
	}

	badRoute := &routev3.Route{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/(unclosed"}}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "b"}}},
	}
	v := xds.Set(t, meshConfig(listen, a, b, badRoute)...)
	nack := xds.WaitFor(t, 5*time.Second, "route NACK", func(r xdsserver.Response) bool {
		return r.TypeURL == "type.googleapis.com/envoy.config.route.v3.RouteConfiguration" && r.NACK != ""
	})
	for _, want := range []string{`"routes"`, "safe_regex"} {
		if !strings.Contains(nack.NACK, want) {
			t.Errorf("NACK for version %s %q does not name %s", v, nack.NACK, want)
		}
	}
	if code, body, _ := get(t, url); code != 200 || body != "a /" {
		t.Fatalf("after the bad route: %d %q, want the previous routing to a", code, body)
	}

	badCluster := xdsres.EDSCluster("b")
	badCluster.LbPolicy = clusterv3.Cluster_RING_HASH
	badCluster.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
		MinimumRingSize: wrapperspb.UInt64(1 << 20), MaximumRingSize: wrapperspb.UInt64(1024)}}
	res := meshConfig(listen, a, b, xdsres.PrefixRoute("/", "a"))
	res[1] = badCluster
	xds.Set(t, res...)
	nack = xds.WaitFor(t, 5*time.Second, "cluster NACK", func(r xdsserver.Response) bool {
		return r.TypeURL == "type.googleapis.com/envoy.config.cluster.v3.Cluster" && r.NACK != ""
	})
	if !strings.Contains(nack.NACK, `"b"`) || !strings.Contains(strings.ToLower(nack.NACK), "ring") {
		t.Errorf("cluster NACK %q does not name cluster b and its ring size field", nack.NACK)
	}
	if code, body, _ := get(t, url); code != 200 || body != "a /" {
		t.Fatalf("after the bad cluster: %d %q", code, body)
	}
}

// A listener waits for its route configuration; with the routes in, it
// serves. Clusters come before the listener that uses them.
func TestListenerWarmsUntilRoutesArrive(t *testing.T) {
	xds := xdsserver.Start(t)
	a, b := backend(t, "a"), backend(t, "b")
	listen := freeAddr(t)
	xds.Set(t, meshConfig(listen, a, b, xdsres.PrefixRoute("/", "a"))...)
	p := startProxy(t, xds.Bootstrap(false))

	late := freeAddr(t)
	res := meshConfig(listen, a, b, xdsres.PrefixRoute("/", "a"),
		xdsres.Listener("late", late, xdsres.HCM("late", "late-routes")))
	xds.Set(t, res...)
	xds.WaitFor(t, 5*time.Second, "listener ACK", func(r xdsserver.Response) bool {
		return r.TypeURL == "type.googleapis.com/envoy.config.listener.v3.Listener" && r.Version == "2"
	})
	if addr := p.ListenerAddr("late"); addr != nil {
		t.Fatalf("listener late is serving on %v before its routes arrived", addr)
	}
	if _, err := net.DialTimeout("tcp", late, time.Second); err == nil {
		t.Fatalf("listener late accepts connections before its routes arrived")
	}
	xds.Set(t, append(res, xdsres.RouteConfig("late-routes", xdsres.PrefixRoute("/", "b")))...)
	eventually(t, "the late listener to serve", func() (bool, string) {
		c := &http.Client{Timeout: time.Second}
		resp, err := c.Get("http://" + late + "/x")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body) == "b /x", string(body)
	})
}

// The management server going away loses nothing: traffic flows on the
// last configuration, and a server that comes back on the same address is
// resubscribed and its new config applied.
func TestServerAwayKeepsConfigAndResyncs(t *testing.T) {
	xds := xdsserver.Start(t)
	addr := xds.Addr
	a, b := backend(t, "a"), backend(t, "b")
	listen := freeAddr(t)
	xds.Set(t, meshConfig(listen, a, b, xdsres.PrefixRoute("/", "a"))...)
	startProxy(t, xds.Bootstrap(false))
	url := "http://" + listen + "/"
	xds.Stop()
	for i := 0; i < 20; i++ {
		if code, body, _ := get(t, url); code != 200 || body != "a /" {
			t.Fatalf("request %d with the server away: %d %q", i, code, body)
		}
		time.Sleep(25 * time.Millisecond)
	}
	back := xdsserver.StartAt(t, addr)
	back.Set(t, meshConfig(listen, a, b, xdsres.PrefixRoute("/", "b"))...)
	eventually(t, "the proxy to resync with the returning server", func() (bool, string) {
		code, body, _ := get(t, url)
		return code == 200 && body == "b /", fmt.Sprint(code, body)
	})
}

// /config_dump shows the dynamic resources in Envoy's shape with their
// versions.
func TestAdminConfigDumpShowsDynamicResources(t *testing.T) {
	xds := xdsserver.Start(t)
	a, b := backend(t, "a"), backend(t, "b")
	listen := freeAddr(t)
	v := xds.Set(t, meshConfig(listen, a, b, xdsres.PrefixRoute("/", "a"))...)
	p := startProxy(t, xds.Bootstrap(false))
	_, body, _ := get(t, "http://"+p.AdminAddr().String()+"/config_dump")
	var dump struct {
		Configs []map[string]any `json:"configs"`
	}
	if err := json.Unmarshal([]byte(body), &dump); err != nil {
		t.Fatalf("config_dump is not JSON: %v\n%s", err, body)
	}
	var types []string
	for _, c := range dump.Configs {
		types = append(types, fmt.Sprint(c["@type"]))
	}
	want := []string{
		"type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
		"type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
		"type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
		"type.googleapis.com/envoy.admin.v3.ScopedRoutesConfigDump",
		"type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
		"type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
	}
	if strings.Join(types, ",") != strings.Join(want, ",") {
		t.Fatalf("config_dump sections %v, want %v", types, want)
	}
	for _, s := range []string{`"dynamic_active_clusters"`, `"version_info": "` + v + `"`, `"name": "a"`, `"dynamic_listeners"`, `"route_config_name": "routes"`, `"dynamic_route_configs"`} {
		if !strings.Contains(body, s) {
			t.Errorf("config_dump lacks %s", s)
		}
	}
}

// Envoy's initialization order: listeners are requested only once the
// clusters have their endpoints, so no listener routes to an empty cluster.
func TestListenersRequestedAfterClustersWarm(t *testing.T) {
	xds := xdsserver.Start(t)
	a := backend(t, "a")
	listen := freeAddr(t)
	withoutEndpoints := []types.Resource{
		xdsres.EDSCluster("a"),
		xdsres.Listener("http", listen, xdsres.HCM("http", "routes")),
		xdsres.RouteConfig("routes", xdsres.PrefixRoute("/", "a")),
	}
	xds.Set(t, withoutEndpoints...)
	path := filepath.Join(t.TempDir(), "bootstrap.yaml")
	if err := os.WriteFile(path, []byte(xds.Bootstrap(false)), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := New(Options{ConfigPath: path, DrainTime: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()

	xds.WaitFor(t, 5*time.Second, "cluster ACK", func(r xdsserver.Response) bool {
		return r.TypeURL == "type.googleapis.com/envoy.config.cluster.v3.Cluster" && r.NACK == ""
	})
	time.Sleep(300 * time.Millisecond)
	if xds.Requested("type.googleapis.com/envoy.config.listener.v3.Listener") {
		t.Fatal("listeners were requested while cluster a had no endpoints")
	}
	select {
	case <-p.Ready():
		t.Fatal("ready before any listener")
	default:
	}
	xds.Set(t, append(withoutEndpoints, xdsres.Endpoints("a", a))...)
	select {
	case <-p.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("not ready after the endpoints arrived")
	}
	if code, body, _ := get(t, "http://"+listen+"/x"); code != 200 || body != "a /x" {
		t.Fatalf("after warming: %d %q", code, body)
	}
}
