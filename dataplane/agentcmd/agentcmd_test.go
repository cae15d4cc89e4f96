package agentcmd

import (
	"bytes"
	"context"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseArgsDropsUnknownFlags(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var f ProxyFlags
	f.register(fs)
	var warn bytes.Buffer
	pos, err := parseArgs(fs, []string{"sidecar", "--domain", "ns.svc.cluster.local", "--stsPort", "15463",
		"--proxyLogLevel=debug", "--log_as_json", "--concurrency", "3", "--print-bootstrap", "--templateFile=/x"}, &warn)
	if err != nil {
		t.Fatal(err)
	}
	if len(pos) != 1 || pos[0] != "sidecar" {
		t.Errorf("positional = %q, want [sidecar]", pos)
	}
	if f.Domain != "ns.svc.cluster.local" || f.ProxyLogLevel != "debug" || f.Concurrency != 3 || !f.PrintBootstrap {
		t.Errorf("flags = %+v", f)
	}
	for _, want := range []string{"--stsPort 15463", "--log_as_json", "--templateFile=/x"} {
		if !strings.Contains(warn.String(), "ignoring unknown flag "+want+" ") {
			t.Errorf("warnings lack %q:\n%s", want, warn.String())
		}
	}
}

func TestSlogLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{"warning,misc:error": slog.LevelWarn, "default:info": slog.LevelInfo,
		"trace": slog.LevelDebug, "critical": slog.LevelError, "off": slog.LevelError} {
		if got, err := slogLevel(in); err != nil || got != want {
			t.Errorf("slogLevel(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := slogLevel("loud"); err == nil || !strings.Contains(err.Error(), "want trace, debug") {
		t.Errorf("slogLevel(loud): %v", err)
	}
}

func TestIdentityFromEnv(t *testing.T) {
	env := map[string]string{"SECRET_TTL": "90s", "SECRET_GRACE_PERIOD_RATIO": "0.25", "TRUST_DOMAIN": "example.org", "WORKLOAD_KEY_ALGORITHM": "RSA"}
	o, err := IdentityFromEnv(func(k string) string { return env[k] })
	if err != nil || o.TTL != 90*time.Second || o.GraceRatio != 0.25 || o.TrustDomain != "example.org" || o.KeyAlgorithm != "RSA" {
		t.Fatalf("IdentityFromEnv: %+v %v", o, err)
	}
	for k, v := range map[string]string{"SECRET_TTL": "1 day", "SECRET_GRACE_PERIOD_RATIO": "2"} {
		_, err := IdentityFromEnv(func(n string) string {
			if n == k {
				return v
			}
			return ""
		})
		if err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%q: %v, want an error naming %s", k, v, err, k)
		}
	}
}

func podEnv(extra ...string) Environ {
	return Environ{Vars: append([]string{"POD_NAME=web-1", "POD_NAMESPACE=shop", "INSTANCE_IP=10.1.2.3",
		"SERVICE_ACCOUNT=web", "ISTIO_META_WORKLOAD_NAME=web", "ISTIO_META_CLUSTER_ID=east"}, extra...)}
}

func TestLoadPodFromEnvironmentAndPodInfo(t *testing.T) {
	env := podEnv(`PROXY_CONFIG=discoveryAddress: istiod.istio-system.svc:15012
terminationDrainDuration: 2s
proxyMetadata:
  ISTIO_META_DNS_CAPTURE: "true"
`, `ISTIO_METAJSON_LABELS={"version":"v1"}`)
	env.Root = t.TempDir()
	labels := filepath.Join(env.Root, "etc/istio/pod/labels")
	os.MkdirAll(filepath.Dir(labels), 0o755)
	os.WriteFile(labels, []byte("app=\"web\"\nsecurity.istio.io/tlsMode=\"istio\"\n"), 0o644)
	p, err := LoadPod(env, "router", "")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.NodeID(), "router~10.1.2.3~web-1.shop~shop.svc.cluster.local"; got != want {
		t.Errorf("NodeID = %q, want %q", got, want)
	}
	if got := p.ServiceCluster(); got != "web.shop" {
		t.Errorf("ServiceCluster = %q, want web.shop", got)
	}
	if got := p.ProxyConfig.GetTerminationDrainDuration().AsDuration(); got != 2*time.Second {
		t.Errorf("terminationDrainDuration = %s, want 2s from PROXY_CONFIG (YAML)", got)
	}
	l, _ := p.Meta["LABELS"].(map[string]any)
	if l["app"] != "web" || l["version"] != "v1" || l["security.istio.io/tlsMode"] != "istio" {
		t.Errorf("LABELS = %v: want the pod info file's labels over ISTIO_METAJSON_LABELS", l)
	}
	for k, want := range map[string]string{"CLUSTER_ID": "east", "DNS_CAPTURE": "true", "NAMESPACE": "shop", "INSTANCE_IPS": "10.1.2.3"} {
		if p.Meta[k] != want {
			t.Errorf("metadata %s = %v, want %q", k, p.Meta[k], want)
		}
	}
}

func TestLoadPodErrorsNameTheInput(t *testing.T) {
	for _, tc := range []struct {
		env  Environ
		typ  string
		want string
	}{
		{podEnv(), "waypoint", `proxy type "waypoint": want sidecar or router`},
		{podEnv("INSTANCE_IP=ten"), "sidecar", `INSTANCE_IP "ten" is not an IP address`},
		{podEnv(`PROXY_CONFIG={"drainDuration":"soon"}`), "sidecar", "environment PROXY_CONFIG"},
		{podEnv(`PROXY_CONFIG={"concurrency":-2}`), "sidecar", "concurrency -2"},
		{podEnv(`ISTIO_METAJSON_X=[1]`), "sidecar", "ISTIO_METAJSON_X: not a JSON object"},
		{Environ{Vars: []string{"POD_NAME=a"}}, "sidecar", "POD_NAMESPACE, INSTANCE_IP not set"},
	} {
		if _, err := LoadPod(tc.env, tc.typ, ""); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %s: %v, want %q", tc.env.Vars, tc.typ, err, tc.want)
		}
	}
}

func TestParseAppProbers(t *testing.T) {
	m, err := ParseAppProbers(`{"/app-health/a/livez":{"httpGet":{"path":"/h","port":8080,"scheme":"HTTPS","httpHeaders":[{"name":"X","value":"y"}]},"timeoutSeconds":3},` +
		`"/app-health/a/readyz":{"tcpSocket":{"port":9}},"/app-health/a/startupz":{"grpc":{"port":7,"service":"s"}}}`)
	if err != nil {
		t.Fatal(err)
	}
	if h := m["/app-health/a/livez"].HTTPGet; h == nil || h.Port.Num != 8080 || h.Scheme != "HTTPS" || h.HTTPHeaders[0].Name != "X" || timeoutOf(m["/app-health/a/livez"]) != 3*time.Second {
		t.Errorf("livez = %+v", m["/app-health/a/livez"])
	}
	if g := m["/app-health/a/startupz"].GRPC; g == nil || *g.Service != "s" || timeoutOf(m["/app-health/a/startupz"]) != time.Second {
		t.Errorf("startupz = %+v (timeout defaults to the kubelet's 1 s)", m["/app-health/a/startupz"])
	}
	for in, want := range map[string]string{
		`{"/healthz":{"tcpSocket":{"port":1}}}`:                              "must be /app-health/CONTAINER/livez|readyz|startupz",
		`{"/app-health/a/livez":{"tcpSocket":{"port":1},"grpc":{"port":2}}}`: "exactly one of httpGet, tcpSocket or grpc, got 2",
		`{"/app-health/a/livez":{"tcpSocket":{"port":"http"}}}`:              `tcpSocket.port: "http" must be a port number`,
		`[1]`: "ISTIO_KUBE_APP_PROBERS",
	} {
		if _, err := ParseAppProbers(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseAppProbers(%s): %v, want %q", in, err, want)
		}
	}
}

// TestHTTPProbeRedirectsAndHeaders: a redirect to another host counts as
// success (the kubelet's rule) and the caller's headers reach the app.
func TestHTTPProbeRedirectsAndHeaders(t *testing.T) {
	var sawHeader atomic.Value
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawHeader.Store(r.Header.Get("X-From-Kubelet"))
		http.Redirect(w, r, "http://elsewhere.example/", http.StatusFound)
	}))
	defer app.Close()
	port := app.Listener.Addr().(*net.TCPAddr).Port
	probers, err := ParseAppProbers(`{"/app-health/a/livez":{"httpGet":{"path":"x","port":` + strconv.Itoa(port) + `}}}`)
	if err != nil {
		t.Fatal(err)
	}
	h := (&statusHandlers{probes: newAppProber(probers, "127.0.0.1", false, slog.New(slog.NewTextHandler(io.Discard, nil)))}).statusMux()
	req := httptest.NewRequest(http.MethodGet, "/app-health/a/livez", nil)
	req.Header.Set("X-From-Kubelet", "yes")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 || sawHeader.Load() != "yes" {
		t.Errorf("probe through a redirect elsewhere = %d, app saw header %q; want 200 and the header", rec.Code, sawHeader.Load())
	}
}

// TestWaitPollsUntilReady: Wait keeps polling through 503s and returns
// once the URL answers 200.
func TestWaitPollsUntilReady(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	err := Wait(context.Background(), WaitOptions{Timeout: 10 * time.Second, RequestTimeout: time.Second, Period: 20 * time.Millisecond, URL: srv.URL})
	if err != nil || calls.Load() != 3 {
		t.Errorf("Wait = %v after %d calls, want nil after 3", err, calls.Load())
	}
	err = Wait(context.Background(), WaitOptions{Timeout: 200 * time.Millisecond, RequestTimeout: time.Second, Period: 20 * time.Millisecond,
		URL: srv.URL + "/x"})
	if err != nil {
		t.Errorf("Wait on a ready server = %v", err)
	}
	calls.Store(-1000)
	err = Wait(context.Background(), WaitOptions{Timeout: 200 * time.Millisecond, RequestTimeout: time.Second, Period: 20 * time.Millisecond, URL: srv.URL})
	if err == nil || !strings.Contains(err.Error(), "HTTP status 503: not yet") {
		t.Errorf("Wait on a never-ready server = %v, want the last status and body", err)
	}
}

func TestPromScrapeRefusesTheStatusPort(t *testing.T) {
	if _, err := parsePromScrape(`{"scrape":"true","port":"15020"}`, 15020); err == nil || !strings.Contains(err.Error(), "scrape in a loop") {
		t.Errorf("scraping the status port: %v", err)
	}
	p, err := parsePromScrape(`{"scrape":"true","port":"9000"}`, 15020)
	if err != nil || p.Path != "/metrics" {
		t.Errorf("defaults: %+v %v", p, err)
	}
}

// TestMergedMetrics: /stats/prometheus is the proxy's exposition followed
// by the app's when ISTIO_PROMETHEUS_ANNOTATIONS names it, in the app's
// content type; an app that is down costs only its own metrics.
func TestMergedMetrics(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/custom" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
		io.WriteString(w, "app_requests_total 7\n# EOF\n")
	}))
	defer app.Close()
	port := strconv.Itoa(app.Listener.Addr().(*net.TCPAddr).Port)
	prom, err := parsePromScrape(`{"scrape":"true","path":"/custom","port":"`+port+`"}`, 15020)
	if err != nil {
		t.Fatal(err)
	}
	h := &statusHandlers{appProm: prom, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		stats: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "envoy_server_live 1\n")
		})}
	rec := httptest.NewRecorder()
	h.statusMux().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/stats/prometheus", nil))
	if got := rec.Body.String(); got != "envoy_server_live 1\napp_requests_total 7\n# EOF\n" {
		t.Errorf("merged body = %q", got)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text") {
		t.Errorf("Content-Type = %q, want the app's", ct)
	}
	app.Close()
	rec = httptest.NewRecorder()
	h.statusMux().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != 200 || rec.Body.String() != "envoy_server_live 1\n" {
		t.Errorf("with the app down: %d %q, want the proxy's metrics alone", rec.Code, rec.Body.String())
	}
}
