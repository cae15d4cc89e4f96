// Package localmesh runs a mesh on one machine, as `skiff up DIR` does:
// a config store fed by DIR (the local mesh's API server), skiffd as a
// child process serving a mirror of that store and restarted when it
// exits, every replica of every Deployment (and every bare Pod) of DIR as
// local processes with a skiff-proxy sidecar, and Istio's default ingress
// gateway reachable on a loopback port. It owns the pods' lifecycle
// (start, readiness, restart with CrashLoopBackOff, scale on edits), the
// Pods it publishes to the store, the state directory (mesh.json, logs,
// skiffd's config) and the control API the `skiff apply|delete|status|down`
// verbs call.
package localmesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// Capture modes.
const (
	CaptureAuto     = "auto"
	CaptureLoopback = "loopback"
	CaptureNetns    = "netns"
)

// Options configure a local mesh.
type Options struct {
	Dir            string // the manifests (watched)
	StateDir       string // mesh.json, logs, bootstraps
	XDSAddr        string // skiffd's ADS (default 127.0.0.1:15010; the bridge's 198.18.0.1:15010 with netns capture)
	SecureAddr     string // skiffd's CA and ADS over TLS (default the xDS host's port 15012: 127.0.0.1:15012, or the bridge's 198.18.0.1:15012 with netns capture; a free port when the xDS port is 0)
	MonitoringAddr string // skiffd's debug endpoints (default 127.0.0.1:15014)
	APIAddr        string // the control API (default 127.0.0.1:0)
	GatewayPort    int    // loopback port forwarded to the gateway; 0 picks one
	Capture        string // auto, loopback or netns
	ProxyPath      string // skiff-proxy; "" looks next to the executable, then in PATH
	SkiffdPath     string // skiffd, looked up as ProxyPath
	LogLevel       string // skiffd's --log-level (default info)
	MeshConfig     string // skiffd's --meshconfig: Istio MeshConfig YAML ("" for Istio's defaults)
	Backoff        Backoff
	// BuiltinSkiffd is the command line of a skiffd built into the
	// running program (skiff __skiffd), used when no skiffd binary is
	// found; nil: none.
	BuiltinSkiffd []string
	// Grace is how long a stopped process gets between SIGTERM and
	// SIGKILL (default 5 s).
	Grace time.Duration
	// Progress receives one line per step as it happens; nil discards.
	Progress io.Writer
	// Logger receives the supervisor's log (its reading of DIR); nil
	// discards. skiffd's own goes to STATE/logs/skiffd.log.
	Logger *slog.Logger
	// Prometheus, when set, runs Prometheus scraping the mesh (prometheus.go).
	Prometheus *PrometheusOptions
}

func (o *Options) defaults() error {
	if o.Dir == "" {
		return errors.New("no manifest directory: run skiff up DIR")
	}
	abs, err := filepath.Abs(o.Dir)
	if err != nil {
		return err
	}
	o.Dir = abs
	if fi, err := os.Stat(o.Dir); err != nil {
		return fmt.Errorf("manifest directory: %w", err)
	} else if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory: skiff up takes a directory of Kubernetes-style YAML", o.Dir)
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir()
	}
	if o.StateDir, err = filepath.Abs(o.StateDir); err != nil {
		return err
	}
	if o.MonitoringAddr == "" {
		o.MonitoringAddr = "127.0.0.1:15014"
	}
	if o.APIAddr == "" {
		o.APIAddr = "127.0.0.1:0"
	}
	if o.Capture == "" {
		o.Capture = CaptureAuto
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	if o.Grace <= 0 {
		o.Grace = 5 * time.Second
	}
	o.Backoff.defaults()
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// DefaultStateDir is $SKIFF_HOME, else ~/.skiff.
func DefaultStateDir() string {
	if d := os.Getenv("SKIFF_HOME"); d != "" {
		return d
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".skiff")
	}
	return ".skiff"
}

// Pod address ranges (DESIGN.md): loopback mode uses 127.10.0.0/16, which
// needs no setup on Linux; network namespaces use 198.18.0.0/16.
var (
	loopbackPods = netip.MustParsePrefix("127.10.0.0/16")
	netnsPods    = netip.MustParsePrefix("198.18.0.0/16")
)

// mesh is a running local mesh.
type mesh struct {
	o       Options
	store   *config.Store // the mesh's API server: what apply, status and the reconciler read
	mirror  *mirror       // the store as skiffd's --config-dir
	skiffd  *skiffdProc
	xdsAddr string // skiffd's addresses, resolved once and kept across its restarts
	monAddr string
	secAddr string
	// skiffdSockets are those three addresses' sockets, bound for the
	// mesh's lifetime and passed to each skiffd start (--listen-fds).
	skiffdSockets [3]*os.File
	tokens        *podTokens
	network       network
	capture       string
	pool          *addrPool
	rt            *podRuntime
	vips          *serviceVIPs
	started       time.Time

	gatewayURL string
	gwFwd      gatewayForwards // the Gateway API gateways' loopback URLs (gatewayapi.go)
	apiAddr    string
	progressMu sync.Mutex

	mu       sync.Mutex
	pods     map[string]*pod // by namespace/name
	failures map[string]string
	stopping sync.WaitGroup
	reported map[string]string // last progress line per pod, so each step prints once
	errsSeen map[string]bool   // config errors already printed

	applyMu sync.Mutex
	applied map[config.Key]*config.Object // what apply added, so delete removes only that

	trigger chan struct{}
	down    chan struct{}
	downMu  sync.Once
}

// ErrRunning is returned when a mesh already runs with the state directory.
type ErrRunning struct {
	StateDir string
	State    *State
}

func (e *ErrRunning) Error() string {
	msg := "a local mesh is already running with state directory " + e.StateDir
	if e.State != nil {
		msg += fmt.Sprintf(" (pid %d, serving %s)", e.State.PID, e.State.Dir)
	}
	return msg + "; stop it with skiff down, or pass --state-dir to run another"
}

// Run starts the mesh and serves until ctx ends or `skiff down` asks;
// then it stops the applications, the sidecars, the gateway and skiffd,
// in that order.
func Run(ctx context.Context, o Options) error {
	if err := o.defaults(); err != nil {
		return err
	}
	if err := os.MkdirAll(o.StateDir, 0o755); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	unlock, err := lockState(o.StateDir)
	if err != nil {
		return err
	}
	defer unlock()

	m := &mesh{o: o, vips: newServiceVIPs(), started: time.Now(), pods: map[string]*pod{},
		failures: map[string]string{}, reported: map[string]string{}, errsSeen: map[string]bool{}, applied: map[config.Key]*config.Object{},
		trigger: make(chan struct{}, 1), down: make(chan struct{})}
	proxyPath, exeDir, err := findProxy(o.ProxyPath)
	if err != nil {
		return err
	}
	skiffdArgv, builtin, err := findSkiffd(o.SkiffdPath, exeDir, o.BuiltinSkiffd)
	if err != nil {
		return err
	}
	if builtin {
		m.progress("skiffd: no skiffd binary next to skiff (%s) or in PATH; running the one built into skiff", exeDir)
	}
	m.rt = &podRuntime{stateDir: o.StateDir, bootDir: filepath.Join(o.StateDir, "pods"), dir: o.Dir,
		proxyPath: proxyPath, exeDir: exeDir, backoff: o.Backoff, grace: o.Grace, progress: m.progress,
		snapshot: func() *config.Snapshot { return m.store.Snapshot() }}

	// DIR is read, and checked, before anything starts: a mesh that cannot
	// run as written stops here, leaving nothing behind.
	m.store = newStore(o)
	// What `skiff apply` sends replaces what DIR declares under the same
	// name, as kubectl apply replaces what a manifest created: Istio's
	// tasks apply their own bookinfo-gateway.yaml over the running one.
	m.store.SetPreferred(func(origin string) bool { return origin == originApply })
	srcCtx, stopSource := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSource()
	if err := m.readDir(srcCtx); err != nil {
		return err
	}
	if problems := m.startProblems(); len(problems) > 0 {
		return startError(o.Dir, problems)
	}

	loopback, err := m.chooseCapture(ctx)
	if err != nil {
		return err
	}
	defer m.network.Close()
	m.rt.loopback = loopback
	if !loopback {
		cleanup, err := m.rt.proxyRunDir()
		if err != nil {
			return err
		}
		defer cleanup()
	}

	// Every address is taken or checked before skiffd starts.
	gwLn, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(o.GatewayPort)))
	if err != nil {
		return fmt.Errorf("--gateway-port %d: %w; pass another port (0 picks a free one)", o.GatewayPort, err)
	}
	defer gwLn.Close()
	m.gatewayURL = "http://" + gwLn.Addr().String()
	apiLn, err := net.Listen("tcp", o.APIAddr)
	if err != nil {
		return fmt.Errorf("--api-addr %s: %w; pass another address (127.0.0.1:0 picks one)", o.APIAddr, err)
	}
	defer apiLn.Close()
	m.apiAddr = apiLn.Addr().String()
	for i, a := range []struct {
		flag, given string
		bound       *string
	}{{"--xds-addr", m.o.XDSAddr, &m.xdsAddr}, {"--monitoring-addr", o.MonitoringAddr, &m.monAddr}, {"--secure-addr", m.o.SecureAddr, &m.secAddr}} {
		if *a.bound, m.skiffdSockets[i], err = bindAddr(a.flag, a.given); err != nil {
			return err
		}
		defer m.skiffdSockets[i].Close()
	}
	m.rt.xdsAddr, m.rt.secureAddr = m.xdsAddr, m.secAddr

	// Identity: skiffd's CA keeps its root under STATE/ca and learns each
	// pod's token from the tokens file (identity.go).
	caDir := filepath.Join(o.StateDir, caStateDir)
	if err := os.MkdirAll(caDir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if m.tokens, err = newPodTokens(filepath.Join(caDir, caTokensFile)); err != nil {
		return err
	}
	m.rt.tokens, m.rt.rootCert = m.tokens, filepath.Join(caDir, caRootCertFile)
	if m.rt.agent = proxyHasAgent(ctx, proxyPath); !m.rt.agent {
		m.progress("identity: %s has no identity agent (no --ca-addr flag); sidecars run without workload certificates", proxyPath)
	}

	// skiffd serves a mirror of the store; it runs as its own process,
	// restarted when it exits, and stops last whatever path Run leaves by.
	if m.mirror, err = newMirror(filepath.Join(o.StateDir, "config"), m.store); err != nil {
		return err
	}
	m.store.Subscribe(func(c config.Change) {
		if err := m.mirror.update(c.Keys); err != nil {
			m.progress("skiffd's config directory: %v", err)
		}
	})
	withNS := m.store.Snapshot().Get(config.Key{Kind: config.Namespace, Name: gatewayNamespace}) == nil
	m.store.Replace(originGateway, gatewayObjects(m.vips, withNS), nil)
	if err := m.mirror.syncAll(); err != nil {
		return err
	}
	m.skiffd = m.newSkiffd(skiffdArgv)
	skiffdCtx, stopSkiffd := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSkiffd()
	if err := m.skiffd.start(skiffdCtx); err != nil {
		return err
	}
	defer m.skiffd.stopAndWait()
	if err := m.waitSkiffd(ctx); err != nil {
		return err
	}
	m.progress("skiffd serving %s: xDS %s, CA and xDS over TLS %s, debug http://%s/debug/syncz, log %s", o.Dir, m.xdsAddr, m.secAddr, m.monAddr, m.skiffd.logPath)

	api := &http.Server{Handler: m.apiHandler(), ReadHeaderTimeout: 10 * time.Second}
	go api.Serve(apiLn)
	defer api.Close()
	if o.Prometheus != nil {
		stopPrometheus, err := m.startPrometheus(context.WithoutCancel(ctx), *o.Prometheus)
		if err != nil {
			return err
		}
		defer stopPrometheus()
	}

	runCtx, stopPods := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPods()
	defer m.shutdown() // runs before skiffd stops
	gw, err := m.startGateway(runCtx)
	if err != nil {
		return err
	}
	go forward(runCtx, gwLn, net.JoinHostPort(gw.ip.String(), strconv.Itoa(gatewayHTTPPort)))

	m.store.Subscribe(func(c config.Change) {
		for _, k := range c.Keys {
			// The Pods this supervisor publishes change nothing it runs.
			if k.Kind != config.Pod {
				m.kick()
				return
			}
		}
	})
	m.reportConfigErrors()
	m.reconcile(runCtx)
	if err := m.writeState(false); err != nil {
		return err
	}
	defer os.Remove(filepath.Join(o.StateDir, stateFile))

	err = m.serve(ctx, runCtx)
	m.progress("stopping: applications, sidecars, gateway, skiffd")
	return err
}

// chooseCapture settles the capture mode and its network.
func (m *mesh) chooseCapture(ctx context.Context) (loopback bool, err error) {
	const loopbackDiffers = "no transparent capture; HTTP and gRPC go through each pod's HTTP_PROXY, TCP needs Sidecar egress listeners, and pods are reached in plaintext (mutual TLS between sidecars needs netns capture)"
	switch m.o.Capture {
	case CaptureLoopback:
		m.progress("capture: loopback: %s", loopbackDiffers)
	case CaptureNetns:
		n, err := setupNetns(ctx)
		if err != nil {
			return false, fmt.Errorf("--capture netns: %w", err)
		}
		m.useNetns(n)
		return false, nil
	case CaptureAuto:
		if os.Geteuid() != 0 || goos != "linux" {
			m.progress("capture: loopback (transparent capture needs root on Linux): %s", loopbackDiffers)
			break
		}
		n, err := setupNetns(ctx)
		if err != nil {
			m.progress("capture: loopback (network namespaces unavailable: %v): %s", err, loopbackDiffers)
			break
		}
		m.useNetns(n)
		return false, nil
	default:
		return false, fmt.Errorf("--capture %q: want auto, loopback or netns", m.o.Capture)
	}
	m.capture, m.network, m.pool = CaptureLoopback, loopbackNetwork{}, newAddrPool(loopbackPods)
	if m.o.XDSAddr == "" {
		m.o.XDSAddr = "127.0.0.1:15010"
	}
	m.o.SecureAddr = secureDefault(m.o.SecureAddr, m.o.XDSAddr)
	return true, nil
}

func (m *mesh) useNetns(n *nsNetwork) {
	m.capture, m.network, m.pool = CaptureNetns, n, newAddrPool(netnsPods)
	m.pool.reserve(n.host.Gateway())
	if m.o.XDSAddr == "" {
		// Pods reach the host through the bridge, not its loopback.
		m.o.XDSAddr = net.JoinHostPort(n.host.Gateway().String(), "15010")
	}
	m.o.SecureAddr = secureDefault(m.o.SecureAddr, m.o.XDSAddr)
	m.progress("capture: netns (each pod in its own network namespace on bridge %s, traffic redirected to its sidecar)", n.host.Bridge())
}

var goos = runtime.GOOS

// secureDefault is the CA's address unless given: on the xDS address's
// host, port 15012, or a free port when the xDS port is picked free (so
// meshes side by side, as tests run them, do not collide).
func secureDefault(given, xdsAddr string) string {
	if given != "" {
		return given
	}
	host, port, err := net.SplitHostPort(xdsAddr)
	if err != nil {
		return "127.0.0.1:15012" // bindAddr reports the bad xDS address
	}
	if port == "0" {
		return net.JoinHostPort(host, "0")
	}
	return net.JoinHostPort(host, "15012")
}

// findProxy locates skiff-proxy: the given path, else next to the running
// executable, else in PATH.
func findProxy(given string) (path, exeDir string, err error) {
	if exe, err := os.Executable(); err == nil {
		exeDir = filepath.Dir(exe)
	}
	if given != "" {
		return given, exeDir, nil
	}
	if exeDir != "" {
		if cand := filepath.Join(exeDir, "skiff-proxy"); isExecutable(cand) {
			return cand, exeDir, nil
		}
	}
	for _, d := range filepath.SplitList(os.Getenv("PATH")) {
		if cand := filepath.Join(d, "skiff-proxy"); d != "" && isExecutable(cand) {
			return cand, exeDir, nil
		}
	}
	return "", exeDir, fmt.Errorf("skiff-proxy not found next to skiff (%s) or in PATH: build it with go build -o %s ./cmd/skiff-proxy", exeDir, filepath.Join(exeDir, "skiff-proxy"))
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// progress prints one line; processes' exits report from their own
// goroutines, so lines are serialised.
func (m *mesh) progress(format string, args ...any) {
	m.progressMu.Lock()
	defer m.progressMu.Unlock()
	fmt.Fprintf(m.o.Progress, format+"\n", args...)
}

func (m *mesh) kick() {
	select {
	case m.trigger <- struct{}{}:
	default:
	}
}

// serve reconciles on every config change and follows readiness until
// ctx ends or `skiff down` asks.
func (m *mesh) serve(ctx, runCtx context.Context) error {
	tick := time.NewTicker(300 * time.Millisecond)
	defer tick.Stop()
	announced := false
	lastPIDs := ""
	lastChange := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.down:
			return nil
		case <-m.trigger:
			m.reportConfigErrors()
			m.reconcile(runCtx)
			m.writeState(announced)
		case <-tick.C:
			changed, allReady := m.checkReadiness(runCtx)
			if changed {
				lastChange = time.Now()
			}
			// Announce once the last readiness change has had time to reach
			// every proxy (skiffd debounces pushes) and all have ACKed.
			settled := allReady && time.Since(lastChange) >= quietBeforeReady && m.allSynced(runCtx)
			if !announced && (settled || time.Since(m.started) > announceAnyway) {
				announced = true
				m.announce()
				changed = true
			}
			if pids := m.pidSignature(); changed || pids != lastPIDs {
				lastPIDs = pids
				m.writeState(announced)
			}
		}
	}
}

// announceAnyway is when up prints where to look even though some pod is
// not ready, so a crashing application does not hide the URLs.
const announceAnyway = time.Minute

// announce prints where to look once every pod is ready (or after
// announceAnyway, naming those that are not).
func (m *mesh) announce() {
	var notReady []string
	for _, p := range m.sortedPods() {
		if !p.readyNow.Load() {
			notReady = append(notReady, p.namespace+"/"+p.name)
		}
	}
	if len(notReady) == 0 {
		m.progress("mesh ready")
	} else {
		m.progress("mesh up, but not ready: %s (see skiff status and the logs below)", strings.Join(notReady, ", "))
	}
	if path := productPagePath(m.store.Snapshot()); path != "" {
		m.progress("  product page:  %s%s", m.gatewayURL, path)
	}
	m.progress("  ingress:       %s", m.gatewayURL)
	m.progress("  skiffd debug:  http://%s/debug/syncz", m.monAddr)
	m.progress("  pods, proxies and their admin addresses: skiff status")
	m.progress("  logs:          %s", filepath.Join(m.o.StateDir, "logs"))
	m.progress("  stop:          Ctrl-C, or skiff down")
}

// productPagePath is the path a gateway-bound VirtualService routes for
// Bookinfo's product page, or "".
func productPagePath(snap *config.Snapshot) string {
	for _, o := range snap.List(config.VirtualService) {
		if routesOnGateway(o, "/productpage") {
			return "/productpage"
		}
	}
	return ""
}

// builtinGatewayKey is the built-in ingress gateway pod's key; the
// reconciler leaves that pod alone.
const builtinGatewayKey = "gateway"

// startGateway runs the built-in ingress gateway's pod.
func (m *mesh) startGateway(ctx context.Context) (*pod, error) {
	t := gatewayTemplate()
	p := &pod{
		name: gatewayName + "-" + templateHash(&t) + "-" + randomSuffix(5), namespace: gatewayNamespace, uid: newUID(),
		labels: withHash(t.Labels, templateHash(&t)), serviceAccount: gatewayServiceAccount, spec: &t.Spec,
		owner: &owner{name: gatewayName, uid: newUID()}, hash: templateHash(&t), key: builtinGatewayKey, gateway: true,
		created: time.Now(),
	}
	if err := m.startPod(ctx, p, "gateway"); err != nil {
		return nil, fmt.Errorf("ingress gateway: %w", err)
	}
	return p, nil
}

func withHash(labels map[string]string, hash string) map[string]string {
	out := make(map[string]string, len(labels)+1)
	for k, v := range labels {
		out[k] = v
	}
	out["pod-template-hash"] = hash
	return out
}

// desired is one set of identical pods the manifests ask for.
type desired struct {
	key      string // "Deployment/ns/name" or "Pod/ns/name"
	hash     string
	replicas int
	obj      *config.Object
	tmpl     *corev1.PodTemplateSpec
	owner    *owner
	path     string // the pod spec's field path in the manifest
}

func (m *mesh) desiredPods(snap *config.Snapshot) []desired {
	var out []desired
	for _, o := range snap.List(config.Deployment) {
		d, ok := o.Spec.(*appsv1.Deployment)
		if !ok {
			continue
		}
		out = append(out, desired{key: "Deployment/" + namespaceOf(o) + "/" + o.Meta.Name, hash: templateHash(&d.Spec.Template),
			replicas: deploymentReplicas(d), obj: o, tmpl: &d.Spec.Template,
			owner: &owner{name: o.Meta.Name, uid: string(d.UID)}, path: "spec.template.spec"})
	}
	for _, o := range snap.List(PodTemplateKind) {
		pt, ok := o.Spec.(*corev1.PodTemplate)
		if !ok {
			continue
		}
		out = append(out, desired{key: "Pod/" + namespaceOf(o) + "/" + o.Meta.Name, hash: o.Meta.ResourceVersion,
			replicas: 1, obj: o, tmpl: &pt.Template, path: "spec"})
	}
	return out
}

// reconcile starts and stops pods until what runs matches the manifests:
// new replicas, fewer replicas, changed templates (pods replaced), removed
// workloads.
func (m *mesh) reconcile(ctx context.Context) {
	m.syncGatewayAPI(ctx) // publishes Gateway API gateways' Deployments first (gatewayapi.go)
	want := m.desiredPods(m.store.Snapshot())
	m.mu.Lock()
	byKey := map[string][]*pod{}
	for _, p := range m.pods {
		if p.key != builtinGatewayKey {
			byKey[p.key] = append(byKey[p.key], p)
		}
	}
	m.mu.Unlock()
	wanted := map[string]bool{}
	var toStop []*pod
	for _, d := range want {
		wanted[d.key] = true
		var current, outdated []*pod
		for _, p := range byKey[d.key] {
			if p.hash == d.hash {
				current = append(current, p)
			} else {
				outdated = append(outdated, p) // the template changed
			}
		}
		sort.Slice(current, func(i, j int) bool { return current[i].created.Before(current[j].created) })
		for len(current) > d.replicas {
			toStop = append(toStop, current[len(current)-1])
			current = current[:len(current)-1]
		}
		if d.owner == nil {
			// A bare Pod is replaced under the same name: the old one
			// goes first, as when Kubernetes recreates it.
			for _, p := range outdated {
				m.stopPod(p)
			}
			outdated = nil
		}
		for i := len(current); i < d.replicas; i++ {
			if !m.startDesired(ctx, d) {
				break
			}
		}
		// A Deployment's rollout keeps the old pods serving until the new
		// ones are ready, as Kubernetes' RollingUpdate does.
		ready := 0
		for _, p := range current {
			if p.readyNow.Load() {
				ready++
			}
		}
		if ready >= d.replicas {
			toStop = append(toStop, outdated...)
		}
	}
	for key, list := range byKey {
		if !wanted[key] {
			toStop = append(toStop, list...)
		}
	}
	m.mu.Lock()
	for k := range m.failures {
		if !wanted[k] {
			delete(m.failures, k)
		}
	}
	m.mu.Unlock()
	for _, p := range toStop {
		m.stopPod(p)
	}
	m.refreshHosts()
	m.refreshServiceRules()
}

// refreshHosts rewrites the hosts files of pods whose view of the
// services changed.
func (m *mesh) refreshHosts() {
	snap := m.store.Snapshot()
	for _, p := range m.sortedPods() {
		hs, ok := p.net.(hostsSetter)
		if !ok {
			continue
		}
		want := serviceHosts(snap, p.namespace)
		if sameHosts(p.hosts, want) {
			continue
		}
		if err := hs.SetHosts(want); err != nil {
			m.progress("pod %s/%s: updating its hosts file: %v", p.namespace, p.name, err)
			continue
		}
		p.hosts = want
	}
}

// startDesired starts one pod of d; false (after reporting once) if its
// manifest cannot run.
func (m *mesh) startDesired(ctx context.Context, d desired) bool {
	ns := namespaceOf(d.obj)
	p := &pod{namespace: ns, uid: newUID(), spec: d.tmpl.Spec.DeepCopy(), owner: d.owner, hash: d.hash, key: d.key,
		created: time.Now(), annotations: d.tmpl.Annotations}
	if d.owner != nil {
		p.name = d.owner.name + "-" + d.hash + "-" + randomSuffix(5)
		p.labels = withHash(d.tmpl.Labels, d.hash)
	} else {
		p.name, p.labels = d.obj.Meta.Name, d.tmpl.Labels
	}
	p.serviceAccount = p.spec.ServiceAccountName
	if p.serviceAccount == "" {
		p.serviceAccount = "default"
	}
	// A gateway pod (Istio's gateway injection template) runs the
	// proxy alone, as a router.
	p.gateway = isGatewayPod(d.tmpl)
	p.sidecar = !p.gateway && m.wantsSidecar(p)
	// In loopback mode apps listen on their pod address themselves, with
	// no inbound capture, so clients must reach them in plaintext.
	p.mtls = p.sidecar && m.capture == CaptureNetns
	if err := m.startPod(ctx, p, d.path); err != nil {
		msg := describeAt(d.obj, err)
		m.mu.Lock()
		old := m.failures[d.key]
		m.failures[d.key] = msg
		m.mu.Unlock()
		if old != msg {
			m.progress("cannot start %s: %s", d.key, msg)
		}
		return false
	}
	m.mu.Lock()
	delete(m.failures, d.key)
	m.mu.Unlock()
	return true
}

// wantsSidecar follows Istio's injection marks: the pod's
// sidecar.istio.io/inject (label or annotation) and its namespace's
// istio-injection label opt out; the local mesh injects by default.
func (m *mesh) wantsSidecar(p *pod) bool {
	for _, v := range []string{p.labels["sidecar.istio.io/inject"], p.annotations["sidecar.istio.io/inject"]} {
		if v == "false" {
			return false
		}
	}
	if ns := m.store.Snapshot().Get(config.Key{Kind: config.Namespace, Name: p.namespace}); ns != nil && ns.Meta.Labels["istio-injection"] == "disabled" {
		return false
	}
	return true
}

// describeAt names where in the manifest a pod error points: file:line of
// the field, and the object.
func describeAt(o *config.Object, err error) string {
	msg := err.Error()
	path, rest, ok := strings.Cut(msg, ": ")
	if ok && strings.HasPrefix(path, "spec") && !strings.Contains(path, " ") {
		pos := o.Source
		if l := o.FieldLine(path); l != 0 {
			pos.Line = l
		}
		kind := o.Kind.Kind
		if o.Kind == PodTemplateKind {
			kind = "Pod"
		}
		where := kind + " " + namespaceOf(o) + "/" + o.Meta.Name
		if s := pos.String(); s != "" {
			where = s + ": " + where
		}
		return where + ": " + path + ": " + rest
	}
	return o.Describe() + ": " + msg
}

// startPod allocates the pod's address and network, prepares its
// processes, publishes it (not ready) and starts it.
func (m *mesh) startPod(ctx context.Context, p *pod, path string) error {
	ip, err := m.pool.get()
	if err != nil {
		return err
	}
	p.ip = ip
	if _, ok := m.network.(*nsNetwork); ok {
		p.hosts = serviceHosts(m.store.Snapshot(), p.namespace)
	}
	if p.net, err = m.network.AddPod(ctx, p.name+"."+p.namespace, ip, p.hosts); err != nil {
		m.pool.put(ip)
		return err
	}
	if err := m.rt.prepare(ctx, p, path); err != nil {
		m.tokens.forget(p)
		p.net.Remove()
		m.pool.put(ip)
		return err
	}
	m.mu.Lock()
	m.pods[p.namespace+"/"+p.name] = p
	m.mu.Unlock()
	m.store.Upsert(originPods, podObject(p, false))
	m.progress("pod %s/%s starting on %s", p.namespace, p.name, p.ip)
	m.stopping.Add(1)
	go func() {
		defer m.stopping.Done()
		if err := p.start(ctx, 10*time.Second); err != nil {
			m.progress("pod %s/%s: %v", p.namespace, p.name, err)
		}
	}()
	return nil
}

// stopPod removes the pod from the store first (its endpoints go away, as
// in Kubernetes), then stops its processes in the background.
func (m *mesh) stopPod(p *pod) {
	m.mu.Lock()
	delete(m.pods, p.namespace+"/"+p.name)
	delete(m.reported, p.namespace+"/"+p.name)
	m.mu.Unlock()
	m.store.Delete(originPods, config.Key{Kind: config.Pod, Namespace: p.namespace, Name: p.name})
	m.progress("pod %s/%s stopping", p.namespace, p.name)
	m.stopping.Add(1)
	go func() {
		defer m.stopping.Done()
		m.awaitEndpointRemoval()
		p.stop()
		if err := m.tokens.forget(p); err != nil {
			m.progress("pod %s/%s: revoking its CA token: %v", p.namespace, p.name, err)
		}
		p.net.Remove()
		m.pool.put(p.ip)
	}()
}

// awaitEndpointRemoval gives the proxies time to drop a stopping pod's
// endpoints before it goes: past skiffd's push debounce, then until every
// proxy has ACKed (at most a few seconds), so a rollout or a scale-down
// fails no request.
func (m *mesh) awaitEndpointRemoval() {
	time.Sleep(quietBeforeReady)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && !m.allSynced(context.Background()) {
		time.Sleep(100 * time.Millisecond)
	}
}

// checkReadiness probes every pod, republishes those whose readiness
// changed and prints each pod's ready step once.
func (m *mesh) checkReadiness(ctx context.Context) (changed, allReady bool) {
	m.mu.Lock()
	pods := make([]*pod, 0, len(m.pods))
	for _, p := range m.pods {
		pods = append(pods, p)
	}
	m.mu.Unlock()
	var sync map[string]string
	allReady = true
	for _, p := range pods {
		ready := p.checkReady(ctx)
		if ready != p.readyNow.Load() {
			p.readyNow.Store(ready)
			m.store.Upsert(originPods, podObject(p, ready))
			changed = true
			m.kick() // a rollout may be waiting for this pod
		}
		if !ready {
			allReady = false
			continue
		}
		id := p.namespace + "/" + p.name
		m.mu.Lock()
		done := m.reported[id] == "ready"
		m.mu.Unlock()
		if done {
			continue
		}
		proxy := "no sidecar"
		if p.proxy != nil {
			if sync == nil {
				sync = m.proxySync(ctx)
			}
			state := syncOf(sync, p.name+"."+p.namespace)
			proxy = "sidecar " + state
			if p.gateway {
				proxy = "gateway proxy " + state
			}
			if state != "SYNCED" {
				allReady = false
				continue
			}
		}
		m.mu.Lock()
		m.reported[id] = "ready"
		m.mu.Unlock()
		m.progress("pod %s/%s ready (%s, admin %s)", p.namespace, p.name, proxy, p.adminAddr())
	}
	return changed, allReady
}

// shutdown stops every application first, then every proxy, sidecars
// and gateways together: with the applications gone nothing is left for
// one to wait on another, and each proxy's drain (5 s) is then paid once.
func (m *mesh) shutdown() {
	m.mu.Lock()
	pods := make([]*pod, 0, len(m.pods))
	for _, p := range m.pods {
		pods = append(pods, p)
	}
	m.pods = map[string]*pod{}
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range pods {
		for _, c := range p.containers {
			wg.Add(1)
			go func() { defer wg.Done(); c.stopAndWait() }()
		}
	}
	wg.Wait()
	for _, p := range pods {
		if p.proxy != nil {
			wg.Add(1)
			go func() { defer wg.Done(); p.proxy.stopAndWait() }()
		}
	}
	wg.Wait()
	for _, p := range pods {
		p.stop()
		m.tokens.forget(p)
		p.net.Remove()
	}
	m.stopping.Wait()
}

// sortedPods lists the running pods by namespace and name.
func (m *mesh) sortedPods() []*pod {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*pod, 0, len(m.pods))
	for _, p := range m.pods {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *pod) int {
		return strings.Compare(a.namespace+"/"+a.name, b.namespace+"/"+b.name)
	})
	return out
}

// pidSignature changes whenever skiffd or a process of a pod (re)starts, so
// mesh.json keeps naming the live pids.
func (m *mesh) pidSignature() string {
	var b strings.Builder
	pid, _, _, _, _ := m.skiffd.snapshot()
	b.WriteString(strconv.Itoa(pid) + ";")
	for _, p := range m.sortedPods() {
		procs := append([]*proc(nil), p.containers...)
		if p.proxy != nil {
			procs = append(procs, p.proxy)
		}
		for _, c := range procs {
			pid, _, _, _, _ := c.snapshot()
			b.WriteString(strconv.Itoa(pid) + ",")
		}
	}
	return b.String()
}

// quietBeforeReady is how long readiness must hold still before the mesh
// is announced: well over skiffd's push debounce.
const quietBeforeReady = 500 * time.Millisecond

// allSynced is whether every pod's proxy has ACKed all skiffd sent it.
func (m *mesh) allSynced(ctx context.Context) bool {
	sync := m.proxySync(ctx)
	for _, p := range m.sortedPods() {
		if p.proxy != nil && syncOf(sync, p.name+"."+p.namespace) != "SYNCED" {
			return false
		}
	}
	return true
}

// reportConfigErrors prints each problem skiffd finds in the manifests
// once, as it appears (skiffd's own log goes to a file).
func (m *mesh) reportConfigErrors() {
	now := map[string]bool{}
	for _, e := range m.store.Errors() {
		msg := e.Error()
		now[msg] = true
		if !m.errsSeen[msg] {
			m.progress("config: %s", msg)
		}
	}
	m.errsSeen = now
}
