package localmesh

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"
)

// Prometheus for the local mesh (`skiff up --prometheus`): Debian's
// prometheus binary, run as a child of the mesh like skiffd, with its TSDB
// under STATE/prometheus, scraping every pod the way Istio's Prometheus
// addon scrapes a cluster: the proxies' Istio metrics (:15090
// /stats/prometheus) and, following Istio's scrape annotations
// (prometheus.io/scrape, /port, /path), the applications' own. Targets go
// through file_sd, rewritten as pods come and go.
//
// It is not started just because the binary is on PATH: it takes a port
// and disk, and a mesh should start the same way on every machine.

const (
	prometheusDir       = "prometheus"
	prometheusTargets   = "targets.json"
	prometheusStateFile = "prometheus.json"
	// DefaultPrometheusAddr is where `skiff up --prometheus` serves
	// Prometheus unless told otherwise (Prometheus's own default port).
	DefaultPrometheusAddr = "127.0.0.1:9090"
	defaultScrapeInterval = 5 * time.Second
)

// PrometheusOptions turn on Prometheus for the local mesh.
type PrometheusOptions struct {
	// Binary is the prometheus executable ("" looks up "prometheus" in
	// PATH, then /usr/bin/prometheus).
	Binary string
	// Addr is its listen address (default 127.0.0.1:9090; port 0 picks a
	// free one).
	Addr string
	// ScrapeInterval (default 5 s).
	ScrapeInterval time.Duration
}

// PrometheusState is STATE/prometheus/prometheus.json, for `skiff
// dashboard` and people.
type PrometheusState struct {
	URL    string `json:"url"`
	Config string `json:"config"`
	Data   string `json:"data"`
}

// ReadPrometheus returns the running mesh's Prometheus, or an error
// saying it runs without one.
func ReadPrometheus(stateDir string) (*PrometheusState, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, prometheusDir, prometheusStateFile))
	if err != nil {
		return nil, fmt.Errorf("the local mesh in %s runs without Prometheus (start it with skiff up --prometheus): %w", stateDir, err)
	}
	var st PrometheusState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(stateDir, prometheusDir, prometheusStateFile), err)
	}
	return &st, nil
}

// findPrometheus locates the binary.
func findPrometheus(given string) (string, error) {
	if given != "" {
		return given, nil
	}
	if p, err := exec.LookPath("prometheus"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/bin/prometheus"); err == nil {
		return "/usr/bin/prometheus", nil
	}
	return "", errors.New("--prometheus: no prometheus binary in PATH or /usr/bin: install Debian's package (apt-get install prometheus) or run without --prometheus")
}

// PrometheusConfig is the prometheus.yml the mesh runs Prometheus with:
// one job, Istio's addon's name for it, reading the targets file.
func PrometheusConfig(targetsFile string, interval time.Duration) []byte {
	if interval <= 0 {
		interval = defaultScrapeInterval
	}
	iv := strconv.FormatInt(max(1, int64(interval/time.Second)), 10) + "s"
	if interval < time.Second {
		iv = strconv.FormatInt(int64(interval/time.Millisecond), 10) + "ms"
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Written by skiff up --prometheus; rewritten at each start.\n")
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  scrape_timeout: %s\n  evaluation_interval: %s\n", iv, iv, iv)
	fmt.Fprintf(&b, "scrape_configs:\n- job_name: kubernetes-pods\n  file_sd_configs:\n  - files: [%q]\n    refresh_interval: 5s\n", targetsFile)
	return b.Bytes()
}

// TargetGroup is one entry of a file_sd targets file.
type TargetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// ScrapeTarget is what Prometheus scrapes of one pod: its proxy's stats
// and, when the pod asks with Istio's annotations, its application's.
type ScrapeTarget struct {
	Namespace, Pod string
	Labels         map[string]string // the pod's app and version
	IP             string
	Proxy          bool              // the pod has a sidecar or is a gateway
	Annotations    map[string]string // prometheus.io/scrape, /port, /path
}

// TargetGroups follows Istio's scrape annotations: a pod with a proxy is
// scraped on 15090 /stats/prometheus (Istio's injector points the
// annotations at the agent's 15020, which merges the two; the local mesh
// has no agent, so the application is a target of its own) unless
// prometheus.io/scrape is "false"; prometheus.io/scrape "true" adds the
// application at prometheus.io/port (else its first container port) and
// prometheus.io/path (default /metrics).
func TargetGroups(pods []ScrapeTarget) []TargetGroup {
	out := []TargetGroup{}
	for _, p := range pods {
		if p.IP == "" || p.Annotations["prometheus.io/scrape"] == "false" {
			continue
		}
		labels := func(path string) map[string]string {
			l := map[string]string{"namespace": p.Namespace, "pod": p.Pod, "__metrics_path__": path}
			for _, k := range []string{"app", "version"} {
				if v := p.Labels[k]; v != "" {
					l[k] = v
				}
			}
			return l
		}
		if p.Proxy {
			out = append(out, TargetGroup{Targets: []string{net.JoinHostPort(p.IP, strconv.Itoa(prometheusPort))}, Labels: labels("/stats/prometheus")})
		}
		if p.Annotations["prometheus.io/scrape"] != "true" {
			continue
		}
		port, path := p.Annotations["prometheus.io/port"], p.Annotations["prometheus.io/path"]
		if path == "" {
			path = "/metrics"
		}
		if port == "" || (p.Proxy && (port == "15020" || port == strconv.Itoa(prometheusPort))) {
			continue // the proxy's own, already a target
		}
		out = append(out, TargetGroup{Targets: []string{net.JoinHostPort(p.IP, port)}, Labels: labels(path)})
	}
	return out
}

func (m *mesh) scrapeTargets() []ScrapeTarget {
	var out []ScrapeTarget
	for _, p := range m.sortedPods() {
		ip := ""
		if p.ip.IsValid() {
			ip = p.ip.String()
		}
		out = append(out, ScrapeTarget{Namespace: p.namespace, Pod: p.name, Labels: p.labels, IP: ip,
			Proxy: p.sidecar || p.gateway, Annotations: p.annotations})
	}
	return out
}

// startPrometheus runs Prometheus until ctx ends and keeps its targets
// file current; the returned func stops it and waits.
func (m *mesh) startPrometheus(ctx context.Context, o PrometheusOptions) (func(), error) {
	bin, err := findPrometheus(o.Binary)
	if err != nil {
		return nil, err
	}
	addr := o.Addr
	if addr == "" {
		addr = DefaultPrometheusAddr
	}
	given := addr
	dir := filepath.Join(m.o.StateDir, prometheusDir)
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	targets := filepath.Join(dir, prometheusTargets)
	last, err := m.writeTargets(targets, nil)
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, PrometheusConfig(targets, o.ScrapeInterval), 0o644); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	// Port 0 is picked here, as Prometheus needs a fixed address (it
	// cannot take a socket from its parent). The port is free only until
	// another process binds it: a Prometheus that exits before it is ready
	// on a picked port is started again on another one.
	var (
		p    *proc
		pctx context.Context
		stop func()
		url  string
	)
	for attempt := 1; ; attempt++ {
		ln, err := net.Listen("tcp", given)
		if err != nil {
			return nil, fmt.Errorf("--prometheus-addr %s: %w; pass another address (127.0.0.1:0 picks a free port)", given, err)
		}
		addr = ln.Addr().String()
		ln.Close()
		_, port, _ := net.SplitHostPort(given)
		picked := port == "0"
		args := []string{"--config.file=" + cfg, "--storage.tsdb.path=" + data, "--web.listen-address=" + addr,
			"--storage.tsdb.retention.time=1d", "--web.enable-lifecycle"}
		var ready atomic.Bool
		early := make(chan string, 1)
		p = &proc{
			name: "prometheus", logPath: filepath.Join(m.o.StateDir, "logs", "prometheus.log"), policy: "Always",
			backoff: m.o.Backoff, grace: m.o.Grace,
			newCmd: func(ctx context.Context) *exec.Cmd { return exec.CommandContext(ctx, bin, args...) },
			onExit: func(status, logPath string, restartIn time.Duration) {
				if !ready.Load() {
					select { // waitReady reports it
					case early <- status:
					default:
					}
					return
				}
				m.progress("prometheus exited (%s); restarting it in %s; log: %s", status, restartIn, logPath)
			},
		}
		var cancel context.CancelFunc
		pctx, cancel = context.WithCancel(ctx)
		if err := p.start(pctx); err != nil {
			cancel()
			return nil, err
		}
		stop = func() { cancel(); p.stopAndWait() }
		url = "http://" + addr
		err = waitReady(ctx, url+"/-/ready", 60*time.Second, early)
		if err == nil {
			ready.Store(true)
			break
		}
		stop()
		if picked && attempt < 3 && errors.Is(err, errExited) {
			m.progress("prometheus on %s: %v; another process may have taken the picked port: trying another", addr, err)
			continue
		}
		return nil, fmt.Errorf("prometheus (%s) did not get ready: %w; see %s", bin, err, p.logPath)
	}
	st, _ := json.MarshalIndent(PrometheusState{URL: url, Config: cfg, Data: data}, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, prometheusStateFile), st, 0o644); err != nil {
		stop()
		return nil, fmt.Errorf("state directory: %w", err)
	}
	m.progress("prometheus serving %s (scraping every pod's proxy; config %s, log %s)", url, cfg, p.logPath)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-pctx.Done():
				return
			case <-t.C:
				if b, err := m.writeTargets(targets, last); err != nil {
					m.progress("prometheus targets: %v", err)
				} else {
					last = b
				}
			}
		}
	}()
	return func() {
		stop()
		<-done
		os.Remove(filepath.Join(dir, prometheusStateFile))
	}, nil
}

// writeTargets rewrites the file_sd file when the targets changed
// (atomically: Prometheus watches it) and returns what it holds.
func (m *mesh) writeTargets(path string, last []byte) ([]byte, error) {
	b, err := json.MarshalIndent(TargetGroups(m.scrapeTargets()), "", "  ")
	if err != nil {
		return last, err
	}
	if bytes.Equal(b, last) {
		return last, nil
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return last, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return last, err
	}
	return b, nil
}

// errExited is waitReady's error when the process exited first.
var errExited = errors.New("exited before it was ready")

func waitReady(ctx context.Context, url string, within time.Duration, exited <-chan string) error {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	deadline := time.Now().Add(within)
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case status := <-exited:
			return fmt.Errorf("%w (%s)", errExited, status)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
