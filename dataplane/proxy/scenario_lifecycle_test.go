package proxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
	"github.com/skiff-mesh/skiff/internal/testing/xdsserver"
)

// runningProxy is a proxy the test stops itself.
type runningProxy struct {
	*Proxy
	cancel context.CancelFunc
	wait   func() error // Run's result; safe to call more than once
}

// startProxyDrain is startProxy with the given drain time and the stop
// in the test's hands.
func startProxyDrain(t *testing.T, bootstrapYAML string, drain time.Duration) *runningProxy {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bootstrap.yaml")
	if err := os.WriteFile(path, []byte(bootstrapYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := New(Options{ConfigPath: path, DrainTime: drain, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	var runErr error
	rp := &runningProxy{Proxy: p, cancel: cancel, wait: func() error {
		once.Do(func() { runErr = <-done })
		return runErr
	}}
	t.Cleanup(func() {
		cancel()
		if err := rp.wait(); err != nil {
			t.Errorf("proxy Run: %v", err)
		}
	})
	select {
	case <-p.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("proxy not ready within 10s")
	}
	return rp
}

// slowBackend answers after d.
func slowBackend(t *testing.T, name string, d time.Duration) string {
	addr, _ := echoBackend(t, name, func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/slow" {
			time.Sleep(d)
		}
		return false
	})
	return addr
}

// inflight starts GET url and returns a channel with its status (or -1
// and the error).
func inflight(url string) chan [2]any {
	out := make(chan [2]any, 1)
	go func() {
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(url)
		if err != nil {
			out <- [2]any{-1, err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out <- [2]any{resp.StatusCode, string(b)}
	}()
	return out
}

// Scenario 13: replacing a listener's filter chains under a busy
// keep-alive client loses no request; removing it refuses new
// connections while the request in flight finishes.
func TestScenarioListenerUpdateAndRemoval(t *testing.T) {
	a := slowBackend(t, "a", 500*time.Millisecond)
	listen := freeAddr(t)
	xds := xdsserver.Start(t)
	stack := func(statPrefix string) []types.Resource {
		return []types.Resource{xdsres.EDSCluster("a"), xdsres.Endpoints("a", a),
			xdsres.Listener("http", listen, xdsres.HCM(statPrefix, "routes")), xdsres.RouteConfig("routes", to(prefix("/"), "a"))}
	}
	xds.Set(t, stack("v1")...)
	p := startProxyDrain(t, xds.Bootstrap(false), 3*time.Second)
	url := "http://" + listen + "/busy"

	// A keep-alive client sends back-to-back requests while the listener
	// changes three times.
	stop := make(chan struct{})
	type result struct {
		n, failed int
		last      string
	}
	res := make(chan result, 1)
	go func() {
		var r result
		client := &http.Client{Timeout: 5 * time.Second}
		defer client.CloseIdleConnections()
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case <-stop:
				res <- r
				return
			default:
			}
			resp, err := client.Get(url)
			r.n++
			if err != nil {
				r.failed++
				r.last = err.Error()
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				r.failed++
				r.last = resp.Status
			}
		}
		res <- r
	}()
	for _, sp := range []string{"v2", "v3", "v4"} {
		time.Sleep(150 * time.Millisecond)
		xds.Set(t, stack(sp)...)
	}
	eventually(t, "the last listener version to serve", func() (bool, string) {
		v := statValue(adminStats(t, p.Proxy), "http.v4.downstream_rq_total")
		return v > 0, "http.v4.downstream_rq_total " + itoa(v)
	})
	close(stop)
	r := <-res
	if r.failed != 0 || r.n < 10 {
		t.Fatalf("during listener updates: %d of %d requests failed (last: %s)", r.failed, r.n, r.last)
	}

	// Removal: a slow request is in flight when the listener goes.
	pending := inflight("http://" + listen + "/slow")
	time.Sleep(100 * time.Millisecond)
	xds.Set(t, xdsres.EDSCluster("a"), xdsres.Endpoints("a", a))
	eventually(t, "new connections to be refused", func() (bool, string) {
		c, err := net.DialTimeout("tcp", listen, time.Second)
		if err != nil {
			return true, ""
		}
		c.Close()
		return false, "still accepting"
	})
	select {
	case got := <-pending:
		if got[0] != 200 || got[1] != "a /slow" {
			t.Fatalf("the request in flight during removal got %v %v, want 200", got[0], got[1])
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the request in flight during removal never finished")
	}
}

// Scenario 14: a request in flight when the proxy is told to stop
// completes.
func TestScenarioGracefulShutdown(t *testing.T) {
	a := slowBackend(t, "a", 500*time.Millisecond)
	listen := freeAddr(t)
	xds := xdsserver.Start(t)
	xds.Set(t, httpStack(listen, map[string][]string{"a": {a}}, to(prefix("/"), "a"))...)
	p := startProxyDrain(t, xds.Bootstrap(false), 3*time.Second)
	waitServing(t, "http://"+listen+"/", 200)

	pending := inflight("http://" + listen + "/slow")
	time.Sleep(100 * time.Millisecond)
	p.cancel()
	select {
	case got := <-pending:
		if got[0] != 200 || got[1] != "a /slow" {
			t.Fatalf("the request in flight at shutdown got %v %v, want 200", got[0], got[1])
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the request in flight at shutdown never finished")
	}
	returned := make(chan error, 1)
	go func() { returned <- p.wait() }()
	select {
	case err := <-returned:
		if err != nil {
			t.Fatalf("Run after shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within the drain time")
	}
}
