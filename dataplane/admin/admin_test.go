package admin

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/skiff-mesh/skiff/pkg/stats"
)

type fakeControl struct {
	mu       sync.Mutex
	drains   []string
	hcFailed []bool
	quit     chan struct{}
}

func newFakeControl() *fakeControl { return &fakeControl{quit: make(chan struct{}, 1)} }

func (f *fakeControl) DrainListeners(inboundOnly, graceful bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.drains = append(f.drains, fmt.Sprintf("inbound=%v graceful=%v", inboundOnly, graceful))
}

func (f *fakeControl) SetHealthCheckFailed(failed bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hcFailed = append(f.hcFailed, failed)
}

func (f *fakeControl) Quit() { f.quit <- struct{}{} }

func (f *fakeControl) calls() (drains []string, hc []bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.drains...), append([]bool(nil), f.hcFailed...)
}

type fakeWriter struct{}

func (fakeWriter) WriteClusters(w io.Writer, json bool) {
	if json {
		io.WriteString(w, `{"cluster_statuses":[{"name":"a"}]}`)
		return
	}
	io.WriteString(w, "a::default_priority::max_connections::1024\n")
}

func (fakeWriter) WriteListeners(w io.Writer, json bool) {
	if json {
		io.WriteString(w, `{"listener_statuses":[{"name":"0.0.0.0_80"}]}`)
		return
	}
	io.WriteString(w, "0.0.0.0_80::0.0.0.0:80\n")
}

type rig struct {
	srv  *Server
	ts   *httptest.Server
	ctl  *fakeControl
	log  *slog.LevelVar
	logs map[string]*slog.LevelVar
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{ctl: newFakeControl(), log: new(slog.LevelVar),
		logs: map[string]*slog.LevelVar{"upstream": new(slog.LevelVar), "xds": new(slog.LevelVar)}}
	r.srv = New(Options{
		Store: stats.New(), Clusters: fakeWriter{}, Listeners: fakeWriter{},
		Config:  ConfigSourceFunc(func() *ConfigState { return &ConfigState{} }),
		Control: r.ctl, LogLevel: r.log, Loggers: r.logs,
		Version: "1.2.3", Node: &corev3.Node{Id: "sidecar~127.0.0.1~a.ns~ns.svc.cluster.local", Cluster: "a.ns"},
		CommandLine: &adminv3.CommandLineOptions{ConfigPath: "/etc/skiff/bootstrap.yaml", Concurrency: 2},
		StartTime:   time.Now().Add(-90 * time.Second),
	})
	r.ts = httptest.NewServer(r.srv.Handler())
	t.Cleanup(r.ts.Close)
	return r
}

func (r *rig) do(t *testing.T, method, path string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, r.ts.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := r.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func TestHelpListsEndpointsAndUnknownPathIs404(t *testing.T) {
	r := newRig(t)
	code, body, _ := r.do(t, "GET", "/help")
	if code != 200 || !strings.HasPrefix(body, "admin commands are:\n") {
		t.Fatalf("/help: %d %q", code, body)
	}
	for _, want := range []string{
		"  /: Admin home page\n", "  /clusters: upstream cluster status\n",
		"  /config_dump: dump current Envoy configs (experimental)\n",
		"  /drain_listeners (POST): drain listeners\n", "  /healthcheck/fail (POST): ",
		"  /healthcheck/ok (POST): ", "  /listeners: print listener info\n", "  /logging (POST): ",
		"  /memory: ", "  /quitquitquit (POST): exit the server\n", "  /ready: ", "  /server_info: ",
		"  /stats: print server stats\n", "  /stats/prometheus: ", "      include_eds: ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/help lacks %q", want)
		}
	}
	// Sorted by path, as Envoy prints them.
	if strings.Index(body, "/clusters") > strings.Index(body, "/stats/prometheus") {
		t.Errorf("/help not sorted:\n%s", body)
	}
	code, root, _ := r.do(t, "GET", "/")
	if code != 200 || root != body {
		t.Errorf("/ = %d, want the help text", code)
	}
	code, body404, _ := r.do(t, "GET", "/nope")
	if code != 404 || body404 != "invalid path. "+body {
		t.Errorf("/nope: %d %q", code, body404)
	}
}

func TestOptionalEndpointsAbsentWithoutTheirInterface(t *testing.T) {
	ts := httptest.NewServer(New(Options{Store: stats.New()}).Handler())
	defer ts.Close()
	for _, p := range []string{"/clusters", "/listeners", "/config_dump", "/drain_listeners", "/quitquitquit", "/logging"} {
		resp, err := ts.Client().Post(ts.URL+p, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 404 || strings.Contains(string(b), "  "+p+" ") || strings.Contains(string(b), "  "+p+":") {
			t.Errorf("%s without its interface: %d, listed in help: %q", p, resp.StatusCode, b)
		}
	}
}

func TestMutatingEndpointsRequirePOSTAndHaveNoEffectOtherwise(t *testing.T) {
	r := newRig(t)
	r.srv.SetInitState(Initialized)
	for _, p := range []string{"/healthcheck/fail", "/drain_listeners?inboundonly", "/quitquitquit", "/logging?level=debug", "/healthcheck/ok"} {
		for _, m := range []string{"GET", "PUT"} {
			code, body, _ := r.do(t, m, p)
			if code != http.StatusMethodNotAllowed || body != "Method "+m+" not allowed, POST required." {
				t.Errorf("%s %s: %d %q", m, p, code, body)
			}
		}
	}
	drains, hc := r.ctl.calls()
	if len(drains) != 0 || len(hc) != 0 {
		t.Errorf("GET had effects: drains %v, healthcheck %v", drains, hc)
	}
	select {
	case <-r.ctl.quit:
		t.Error("GET /quitquitquit quit the server")
	default:
	}
	if code, _, _ := r.do(t, "GET", "/ready"); code != 200 {
		t.Errorf("GET /healthcheck/fail changed readiness: %d", code)
	}
	if r.log.Level() != slog.LevelInfo {
		t.Errorf("GET /logging changed the level to %v", r.log.Level())
	}
}

func TestReadyFollowsInitAndHealthcheck(t *testing.T) {
	r := newRig(t)
	step := func(wantCode int, wantBody string) {
		t.Helper()
		code, body, h := r.do(t, "GET", "/ready")
		if code != wantCode || body != wantBody {
			t.Errorf("/ready = %d %q, want %d %q", code, body, wantCode, wantBody)
		}
		if !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
			t.Errorf("/ready content type %q", h.Get("Content-Type"))
		}
	}
	step(503, "PRE_INITIALIZING\n")
	r.srv.SetInitState(Initializing)
	step(503, "INITIALIZING\n")
	if r.srv.Ready() {
		t.Error("Ready() while initializing")
	}
	r.srv.SetInitState(Initialized)
	step(200, "LIVE\n")
	if !r.srv.Ready() {
		t.Error("Ready() false when LIVE")
	}

	if code, body, _ := r.do(t, "POST", "/healthcheck/fail"); code != 200 || body != "OK\n" {
		t.Fatalf("POST /healthcheck/fail: %d %q", code, body)
	}
	step(503, "DRAINING\n")
	if !r.srv.HealthCheckFailed() || r.srv.State() != adminv3.ServerInfo_DRAINING {
		t.Errorf("after fail: HealthCheckFailed %v, State %v", r.srv.HealthCheckFailed(), r.srv.State())
	}
	if code, _, _ := r.do(t, "POST", "/healthcheck/ok"); code != 200 {
		t.Fatalf("POST /healthcheck/ok: %d", code)
	}
	step(200, "LIVE\n")
	if _, hc := r.ctl.calls(); fmt.Sprint(hc) != "[true false]" {
		t.Errorf("controller saw health check flags %v, want [true false]", hc)
	}
}

func TestServerInfoShape(t *testing.T) {
	r := newRig(t)
	r.srv.SetInitState(Initialized)
	code, body, h := r.do(t, "GET", "/server_info")
	if code != 200 || h.Get("Content-Type") != "application/json" {
		t.Fatalf("/server_info: %d %q", code, h.Get("Content-Type"))
	}
	var info adminv3.ServerInfo
	if err := protojson.Unmarshal([]byte(body), &info); err != nil {
		t.Fatalf("/server_info is not an envoy.admin.v3.ServerInfo: %v\n%s", err, body)
	}
	if info.Version != "skiff-proxy/1.2.3" || info.State != adminv3.ServerInfo_LIVE || info.HotRestartVersion != "disabled" {
		t.Errorf("version %q state %v hot_restart_version %q", info.Version, info.State, info.HotRestartVersion)
	}
	up := info.UptimeCurrentEpoch.AsDuration()
	if up < 90*time.Second || up > 10*time.Minute || info.UptimeAllEpochs.AsDuration() != up {
		t.Errorf("uptime current %v all %v, want ≥90s and equal", up, info.UptimeAllEpochs.AsDuration())
	}
	if info.Node.GetId() != "sidecar~127.0.0.1~a.ns~ns.svc.cluster.local" || info.CommandLineOptions.GetConfigPath() != "/etc/skiff/bootstrap.yaml" {
		t.Errorf("node %v command_line_options %v", info.Node, info.CommandLineOptions)
	}
	// Envoy's field names, not protojson's lowerCamel defaults.
	for _, k := range []string{`"uptime_current_epoch"`, `"command_line_options"`, `"hot_restart_version"`, `"state": "LIVE"`} {
		if !strings.Contains(body, k) {
			t.Errorf("/server_info lacks %s:\n%s", k, body)
		}
	}
}

func TestDrainListenersAndQuit(t *testing.T) {
	r := newRig(t)
	if code, body, _ := r.do(t, "POST", "/drain_listeners?inboundonly&graceful"); code != 200 || body != "OK\n" {
		t.Fatalf("drain: %d %q", code, body)
	}
	if code, _, _ := r.do(t, "POST", "/drain_listeners"); code != 200 {
		t.Fatalf("drain: %d", code)
	}
	if drains, _ := r.ctl.calls(); fmt.Sprint(drains) != "[inbound=true graceful=true inbound=false graceful=false]" {
		t.Errorf("drains %v", drains)
	}
	if code, body, _ := r.do(t, "POST", "/quitquitquit"); code != 200 || body != "OK\n" {
		t.Fatalf("quit: %d %q", code, body)
	}
	select {
	case <-r.ctl.quit:
	case <-time.After(5 * time.Second):
		t.Fatal("Quit not called within 5s of POST /quitquitquit")
	}
}

func TestLoggingLevels(t *testing.T) {
	r := newRig(t)
	code, body, _ := r.do(t, "POST", "/logging?level=debug")
	if code != 200 {
		t.Fatalf("level=debug: %d %q", code, body)
	}
	want := "active loggers:\n  default: debug\n  upstream: debug\n  xds: debug\n"
	if body != want {
		t.Errorf("level=debug listed %q, want %q", body, want)
	}
	if r.log.Level() != slog.LevelDebug || r.logs["xds"].Level() != slog.LevelDebug {
		t.Errorf("levels %v %v", r.log.Level(), r.logs["xds"].Level())
	}
	if code, _, _ := r.do(t, "POST", "/logging?upstream=trace"); code != 200 || r.logs["upstream"].Level() >= slog.LevelDebug {
		t.Errorf("upstream=trace: %d, level %v", code, r.logs["upstream"].Level())
	}
	code, body, _ = r.do(t, "POST", "/logging?paths=upstream:error,xds:warning")
	if code != 200 || !strings.Contains(body, "  upstream: error\n  xds: warning\n") {
		t.Errorf("paths: %d %q", code, body)
	}
	// A bad entry rejects the whole request: nothing changes.
	code, body, _ = r.do(t, "POST", "/logging?paths=upstream:info,xds:loud")
	if code != 400 || !strings.Contains(body, `"loud"`) || r.logs["upstream"].Level() != slog.LevelError {
		t.Errorf("bad level: %d %q, upstream now %v", code, body, r.logs["upstream"].Level())
	}
	if code, body, _ = r.do(t, "POST", "/logging?nosuch=info"); code != 400 || !strings.Contains(body, `unknown logger "nosuch"`) {
		t.Errorf("unknown logger: %d %q", code, body)
	}
	if code, body, _ = r.do(t, "POST", "/logging?level=off"); code != 200 || !strings.Contains(body, "default: off") {
		t.Errorf("level=off: %d %q", code, body)
	}
}

func TestMemoryShape(t *testing.T) {
	r := newRig(t)
	code, body, _ := r.do(t, "GET", "/memory")
	var m adminv3.Memory
	if code != 200 {
		t.Fatalf("/memory: %d", code)
	}
	if err := protojson.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("/memory is not an envoy.admin.v3.Memory: %v", err)
	}
	if m.Allocated == 0 || m.HeapSize < m.Allocated || m.TotalPhysicalBytes == 0 {
		t.Errorf("implausible memory %v", &m)
	}
	if !strings.Contains(body, `"heap_size"`) {
		t.Errorf("field names not Envoy's: %s", body)
	}
}

func TestClustersAndListenersDelegate(t *testing.T) {
	r := newRig(t)
	for _, c := range []struct{ path, ctype, body string }{
		{"/clusters", "text/plain; charset=UTF-8", "a::default_priority::max_connections::1024\n"},
		{"/clusters?format=json", "application/json", `{"cluster_statuses":[{"name":"a"}]}`},
		{"/listeners", "text/plain; charset=UTF-8", "0.0.0.0_80::0.0.0.0:80\n"},
		{"/listeners?format=json", "application/json", `{"listener_statuses":[{"name":"0.0.0.0_80"}]}`},
	} {
		code, body, h := r.do(t, "GET", c.path)
		if code != 200 || body != c.body || h.Get("Content-Type") != c.ctype {
			t.Errorf("%s: %d %q %q", c.path, code, h.Get("Content-Type"), body)
		}
	}
}

func TestServeOnListenerAndShutdown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(Options{Store: stats.New()})
	srv.SetInitState(Initialized)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "LIVE\n" {
		t.Errorf("/ready over TCP: %d %q", resp.StatusCode, b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Shutdown")
	}
}

func TestServerStateGauges(t *testing.T) {
	r := newRig(t)
	gauges := func() string {
		t.Helper()
		_, body, _ := r.do(t, "GET", "/stats/prometheus?filter=^server%5C.(live|state)$")
		return body
	}
	want := func(live, state int) string {
		return fmt.Sprintf("# TYPE envoy_server_live gauge\nenvoy_server_live{} %d\n# TYPE envoy_server_state gauge\nenvoy_server_state{} %d\n", live, state)
	}
	if g := gauges(); g != want(0, 2) {
		t.Errorf("pre-initializing: %q", g)
	}
	r.srv.SetInitState(Initializing)
	if g := gauges(); g != want(0, 3) {
		t.Errorf("initializing: %q", g)
	}
	r.srv.SetInitState(Initialized)
	if g := gauges(); g != want(1, 0) {
		t.Errorf("live: %q", g)
	}
	r.do(t, "POST", "/healthcheck/fail")
	if g := gauges(); g != want(0, 1) {
		t.Errorf("draining: %q", g)
	}
}
