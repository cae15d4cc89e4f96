package agentcmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skiff-mesh/skiff/dataplane/admin"
	"github.com/skiff-mesh/skiff/dataplane/proxy"
)

// BootstrapFile is the name pilot-agent gives the bootstrap it writes
// under ProxyConfig.configPath.
const BootstrapFile = "envoy-rev.json"

// ProxyFlags are `skiff-proxy proxy`'s flags: pilot-agent's, plus a port
// flag for each listener so that tests and hand-run proxies can move them.
type ProxyFlags struct {
	Domain            string
	ProxyLogLevel     string // Envoy's levels: trace, debug, info, warning, error, critical, off
	ComponentLogLevel string
	LogOutputLevel    string // Istio's scope:level list for the agent's own logs
	Concurrency       int    // -1: not given
	StatusPort        int    // 0: PROXY_CONFIG statusPort (15020)
	HealthPort        int
	PrometheusPort    int
	AdminPort         int // 0: PROXY_CONFIG proxyAdminPort (15000)
	BindAddress       string
	CARootCert        string
	TokenFile         string
	PrintBootstrap    bool
}

func (f *ProxyFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.Domain, "domain", "", "DNS domain suffix; default POD_NAMESPACE.svc.cluster.local")
	fs.StringVar(&f.ProxyLogLevel, "proxyLogLevel", "warning,misc:error", "the proxy's log level (trace, debug, info, warning, error, critical, off)")
	fs.StringVar(&f.ComponentLogLevel, "proxyComponentLogLevel", "", "accepted for pilot-agent compatibility; skiff-proxy has one level")
	fs.StringVar(&f.LogOutputLevel, "log_output_level", "default:info", "the agent's log level, Istio's scope:level form (only default is used)")
	fs.IntVar(&f.Concurrency, "concurrency", -1, "worker threads (GOMAXPROCS); default PROXY_CONFIG concurrency, else the Go default")
	fs.IntVar(&f.StatusPort, "status-port", 0, "status port: app probes, /healthz/ready, /quitquitquit, merged metrics (default PROXY_CONFIG statusPort, 15020)")
	fs.IntVar(&f.HealthPort, "health-port", DefaultHealthPort, "readiness port serving /healthz/ready (Istio's 15021)")
	fs.IntVar(&f.PrometheusPort, "prometheus-port", DefaultPrometheusPort, "the proxy's /stats/prometheus port (Istio's 15090)")
	fs.IntVar(&f.AdminPort, "admin-port", 0, "admin API port on 127.0.0.1 (default PROXY_CONFIG proxyAdminPort, 15000)")
	fs.StringVar(&f.BindAddress, "bind-address", "", "address the status, health and Prometheus ports listen on; default all interfaces, as in a pod")
	fs.StringVar(&f.CARootCert, "ca-root-cert", "", "PEM roots of the discovery server and CA; default ./var/run/secrets/istio/root-cert.pem (the istiod-ca-cert mount)")
	fs.StringVar(&f.TokenFile, "ca-token-file", "", "bearer token for the CA; default ./var/run/secrets/tokens/istio-token (the istio-token mount)")
	fs.BoolVar(&f.PrintBootstrap, "print-bootstrap", false, "print the bootstrap built from the environment and exit")
}

// parseArgs parses args as pilot-agent's cobra commands do: flags and
// positional arguments interleaved, unknown flags dropped with a warning
// (an unknown --flag takes the next argument as its value unless that
// looks like a flag), so Istio's templates keep working.
func parseArgs(fs *flag.FlagSet, args []string, warn io.Writer) ([]string, error) {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := fs.Lookup(name)
		if f == nil {
			dropped := a
			if !hasValue && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				i++
				dropped += " " + args[i]
			}
			fmt.Fprintf(warn, "skiff-proxy: warning: ignoring unknown flag %s (not a flag skiff-proxy implements)\n", dropped)
			continue
		}
		flags = append(flags, a)
		if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); hasValue || (ok && bf.IsBoolFlag()) {
			continue
		}
		if i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	if err := fs.Parse(flags); err != nil {
		return nil, err
	}
	return pos, nil
}

// slogLevel maps Envoy's and Istio's level names to slog's.
func slogLevel(s string) (slog.Level, error) {
	first, _, _ := strings.Cut(s, ",")
	if _, lvl, ok := strings.Cut(first, ":"); ok {
		first = lvl
	}
	switch strings.ToLower(strings.TrimSpace(first)) {
	case "trace", "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warning", "warn":
		return slog.LevelWarn, nil
	case "error", "critical", "off", "none", "fatal":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("level %q: want trace, debug, info, warning, error, critical or off", s)
}

// IdentityFromEnv reads pilot-agent's environment for the identity agent:
// SECRET_TTL, SECRET_GRACE_PERIOD_RATIO, TRUST_DOMAIN and
// WORKLOAD_KEY_ALGORITHM.
func IdentityFromEnv(getenv func(string) string) (proxy.IdentityOptions, error) {
	var o proxy.IdentityOptions
	if v := getenv("SECRET_TTL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return o, fmt.Errorf("SECRET_TTL %q: want a positive duration such as 24h or 90s", v)
		}
		o.TTL = d
	}
	if v := getenv("SECRET_GRACE_PERIOD_RATIO"); v != "" {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r <= 0 || r >= 1 {
			return o, fmt.Errorf("SECRET_GRACE_PERIOD_RATIO %q: want a number between 0 and 1, such as 0.5", v)
		}
		o.GraceRatio = r
	}
	o.TrustDomain = getenv("TRUST_DOMAIN")
	o.KeyAlgorithm = getenv("WORKLOAD_KEY_ALGORITHM")
	return o, nil
}

// RunProxy is `skiff-proxy proxy [sidecar|router] [flags]`: it returns the
// process exit code once ctx ends (SIGTERM), /quitquitquit is called, or
// start-up fails.
func RunProxy(ctx context.Context, args []string, env Environ, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("skiff-proxy proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f ProxyFlags
	f.register(fs)
	pos, err := parseArgs(fs, args, stderr)
	if err != nil {
		return 2
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "skiff-proxy proxy: "+format+"\n", a...)
		return code
	}
	nodeType := "sidecar"
	if len(pos) > 0 {
		nodeType = pos[0]
	}
	if len(pos) > 1 {
		return fail(2, "unexpected arguments %q: the only argument is the proxy type, sidecar or router", pos[1:])
	}
	proxyLevel, err := slogLevel(f.ProxyLogLevel)
	if err != nil {
		return fail(2, "--proxyLogLevel: %v", err)
	}
	agentLevel, err := slogLevel(f.LogOutputLevel)
	if err != nil {
		return fail(2, "--log_output_level: %v", err)
	}
	pod, err := LoadPod(env, nodeType, f.Domain)
	if err != nil {
		return fail(2, "%v", err)
	}
	pc := pod.ProxyConfig
	if f.AdminPort == 0 {
		f.AdminPort = int(pc.GetProxyAdminPort())
	}
	if f.StatusPort == 0 {
		f.StatusPort = int(pc.GetStatusPort())
	}
	for _, p := range []struct {
		name string
		v    int
	}{{"--status-port", f.StatusPort}, {"--health-port", f.HealthPort}, {"--prometheus-port", f.PrometheusPort}, {"--admin-port", f.AdminPort}} {
		if p.v < 1 || p.v > 65535 {
			return fail(2, "%s %d: want a port number between 1 and 65535", p.name, p.v)
		}
	}
	root := f.CARootCert
	if root == "" {
		if root = env.find(rootCertFile); root == "" {
			if f.PrintBootstrap {
				root = filepath.Clean("/" + rootCertFile)
			} else {
				return fail(2, "no roots for the discovery server: mount the istio-ca-root-cert ConfigMap at /var/run/secrets/istio (root-cert.pem), or pass --ca-root-cert FILE")
			}
		}
	}
	root, _ = filepath.Abs(root)
	delta := true
	if v := pod.Getenv("ISTIO_DELTA_XDS"); v != "" {
		delta, err = strconv.ParseBool(v)
		if err != nil {
			return fail(2, "environment ISTIO_DELTA_XDS %q: want true or false", v)
		}
	}
	boot, err := Bootstrap(pod, BootstrapOptions{AdminPort: f.AdminPort, RootCert: root, Delta: delta})
	if err != nil {
		return fail(2, "%v", err)
	}
	if f.PrintBootstrap {
		stdout.Write(boot)
		return 0
	}
	probers, err := ParseAppProbers(pod.Getenv("ISTIO_KUBE_APP_PROBERS"))
	if err != nil {
		return fail(2, "%v", err)
	}
	var appProm *promScrape
	if nodeType == "sidecar" {
		if appProm, err = parsePromScrape(pod.Getenv("ISTIO_PROMETHEUS_ANNOTATIONS"), f.StatusPort); err != nil {
			return fail(2, "%v", err)
		}
	}
	identity, err := IdentityFromEnv(pod.Getenv)
	if err != nil {
		return fail(2, "environment %v", err)
	}
	identity.CAAddr = pod.Getenv("CA_ADDR")
	if identity.CAAddr == "" {
		identity.CAAddr = pc.GetDiscoveryAddress()
	}
	identity.CARootCert = root
	identity.TokenFile = f.TokenFile
	if identity.TokenFile == "" {
		if identity.TokenFile = env.find(tokenFile); identity.TokenFile == "" {
			identity.TokenFile = filepath.Clean("/" + tokenFile)
		}
	}
	if c := f.Concurrency; c > 0 || (c < 0 && concurrencyOf(pc) > 0) {
		if c < 0 {
			c = concurrencyOf(pc)
		}
		runtime.GOMAXPROCS(c)
	}

	handler := slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug})
	lv := new(slog.LevelVar)
	lv.Set(proxyLevel)
	proxyLog := slog.New(levelHandler{handler, lv})
	agentLv := new(slog.LevelVar)
	agentLv.Set(agentLevel)
	log := slog.New(levelHandler{handler, agentLv}).With("component", "agent")

	dir := pc.GetConfigPath()
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(env.Root, dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(1, "PROXY_CONFIG configPath %s: %v; it must be writable (the injector mounts the istio-envoy emptyDir at /etc/istio/proxy)", dir, err)
	}
	bootPath := filepath.Join(dir, BootstrapFile)
	if err := os.WriteFile(bootPath, boot, 0o644); err != nil {
		return fail(1, "writing the bootstrap: %v", err)
	}
	bind := func(port int) string { return net.JoinHostPort(f.BindAddress, strconv.Itoa(port)) }
	// The status and health ports are bound before the proxy starts, so a
	// port in use fails start-up with nothing half running.
	lns, err := listenAll([][2]string{{"--status-port", bind(f.StatusPort)}, {"--health-port", bind(f.HealthPort)}})
	if err != nil {
		return fail(1, "%v", err)
	}
	p, err := proxy.New(proxy.Options{
		ConfigPath: bootPath, DrainTime: pc.GetTerminationDrainDuration().AsDuration(),
		PrometheusAddr: bind(f.PrometheusPort), LogLevel: lv, Logger: proxyLog,
		CommandLine: append([]string{"skiff-proxy", "proxy"}, args...), Identity: identity,
	})
	if err != nil {
		for _, ln := range lns {
			ln.Close()
		}
		return fail(1, "%v", err)
	}
	log.Info("proxy starting", "node", pod.NodeID(), "discovery", pc.GetDiscoveryAddress(), "ca", identity.CAAddr,
		"bootstrap", bootPath, "status", bind(f.StatusPort), "health", bind(f.HealthPort))

	var stopping atomic.Bool
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var quitOnce sync.Once
	quit := func() { quitOnce.Do(func() { stopping.Store(true); p.Quit() }) }
	h := &statusHandlers{
		ready: func() error {
			if stopping.Load() {
				return errors.New("the proxy is shutting down")
			}
			return readiness(p, identity.CAAddr, pc.GetDiscoveryAddress())
		},
		quit:    quit,
		drain:   func() { stopping.Store(true); p.DrainListeners(false, true) },
		probes:  newAppProber(probers, pod.IP, strings.EqualFold(pod.Getenv("REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION"), "true"), log),
		stats:   admin.PrometheusHandler(p.Stats()),
		appProm: appProm,
		log:     log,
	}
	servers := []*http.Server{
		{Handler: h.statusMux(), ReadHeaderTimeout: 10 * time.Second},
		{Handler: h.healthMux(), ReadHeaderTimeout: 10 * time.Second},
	}
	for i, srv := range servers {
		go srv.Serve(lns[i])
	}
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()
	go func() {
		<-ctx.Done()
		stopping.Store(true)
	}()
	go func() {
		select {
		case <-p.Ready():
			log.Info("proxy ready", "health", bind(f.HealthPort))
		case <-ctx.Done():
		}
	}()
	if err := p.Run(ctx); err != nil {
		return fail(1, "%v", err)
	}
	log.Info("proxy stopped")
	return 0
}

// readiness is why the proxy is not ready yet, nil once it is: the first
// workload certificate in, the first configuration (clusters, then
// listeners) applied.
func readiness(p *proxy.Proxy, caAddr, discovery string) error {
	select {
	case <-p.Ready():
		return nil
	default:
	}
	if a := p.Agent(); a != nil {
		select {
		case <-a.Ready():
		default:
			return fmt.Errorf("no workload certificate yet from the CA at %s", caAddr)
		}
	}
	return fmt.Errorf("waiting for the first configuration (clusters and listeners) from %s", discovery)
}

// listenAll binds each (flag, address) in order; on an error none stays bound.
func listenAll(specs [][2]string) ([]net.Listener, error) {
	var lns []net.Listener
	for _, s := range specs {
		ln, err := net.Listen("tcp", s[1])
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("%s %s: %v; stop what holds the port or pass another %s", s[0], s[1], err, s[0])
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// levelHandler filters one shared handler by its own level, so the proxy
// (--proxyLogLevel) and the agent (--log_output_level) log at their own.
type levelHandler struct {
	slog.Handler
	level slog.Leveler
}

func (h levelHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }
func (h levelHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return levelHandler{h.Handler.WithAttrs(a), h.level}
}
func (h levelHandler) WithGroup(n string) slog.Handler {
	return levelHandler{h.Handler.WithGroup(n), h.level}
}
