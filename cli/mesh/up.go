package mesh

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/skiff-mesh/skiff/localmesh"
)

// Up is `skiff up DIR`: it runs the mesh of DIR in the foreground until
// Ctrl-C or `skiff down`.
func Up(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("up", "skiff up DIR [flags]", stderr)
	stateDir := stateDirFlag(fs)
	xdsAddr := fs.String("xds-addr", "", "skiffd's plaintext xDS address (default 127.0.0.1:15010; 198.18.0.1:15010, the pods' bridge, with netns capture)")
	secureAddr := fs.String("secure-addr", "", "skiffd's CA and xDS over TLS (default: --xds-addr's host, port 15012, or a free port when --xds-addr's port is 0)")
	monAddr := fs.String("monitoring-addr", "127.0.0.1:15014", "skiffd's debug and metrics address")
	apiAddr := fs.String("api-addr", "127.0.0.1:0", "the control API skiff apply|delete|status|down use (recorded in mesh.json)")
	gwPort := fs.Int("gateway-port", 8080, "loopback port forwarded to the ingress gateway; 0 picks a free one")
	capture := fs.String("capture", localmesh.CaptureAuto, "traffic capture: auto (netns as root on Linux, else loopback), loopback or netns")
	meshConfig := fs.String("meshconfig", "", "Istio MeshConfig YAML for skiffd (trustDomain, extensionProviders for CUSTOM authorization, …); default Istio's defaults")
	prom := fs.Bool("prometheus", false, "also run Prometheus (Debian's prometheus binary) scraping every pod's proxy, with its data in STATE_DIR/prometheus; skiff dashboard then reads it")
	promAddr := fs.String("prometheus-addr", localmesh.DefaultPrometheusAddr, "Prometheus's listen address with --prometheus (port 0 picks a free one)")
	promInterval := fs.Duration("prometheus-scrape-interval", 5*time.Second, "Prometheus's scrape interval with --prometheus")
	logLevel := fs.String("log-level", "info", "skiffd's log level (debug, info, warn, error), written to STATE_DIR/logs/skiffd.log")
	pos, err := parse(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "skiff up: give one directory of manifests: skiff up DIR (e.g. skiff up samples/bookinfo/platform/local)")
		return 2
	}
	switch *capture {
	case localmesh.CaptureAuto, localmesh.CaptureLoopback, localmesh.CaptureNetns:
	default:
		fmt.Fprintf(stderr, "skiff up: --capture %q: want auto, loopback or netns\n", *capture)
		return 2
	}
	if *meshConfig != "" {
		abs, err := filepath.Abs(*meshConfig)
		if err == nil {
			_, err = os.Stat(abs)
		}
		if err != nil {
			fmt.Fprintf(stderr, "skiff up: --meshconfig: %v\n", err)
			return 2
		}
		*meshConfig = abs
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "skiff up: --log-level %q: want debug, info, warn or error\n", *logLevel)
		return 2
	}
	if err := os.MkdirAll(filepath.Join(*stateDir, "logs"), 0o755); err != nil {
		fmt.Fprintln(stderr, "skiff up: state directory:", err)
		return 1
	}
	// skiffd writes its own log (logs/skiffd.log); this one is the
	// supervisor's reading of DIR.
	logf, err := os.OpenFile(filepath.Join(*stateDir, "logs", "up.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(stderr, "skiff up: state directory:", err)
		return 1
	}
	defer logf.Close()

	var promOpts *localmesh.PrometheusOptions
	if *prom {
		promOpts = &localmesh.PrometheusOptions{Addr: *promAddr, ScrapeInterval: *promInterval}
	}
	// The skiffd built into this executable, for when no skiffd binary is
	// next to it or in PATH.
	var builtin []string
	if exe, err := os.Executable(); err == nil {
		builtin = []string{exe, SkiffdVerb}
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = localmesh.Run(ctx, localmesh.Options{
		Dir: pos[0], StateDir: *stateDir, XDSAddr: *xdsAddr, SecureAddr: *secureAddr, MonitoringAddr: *monAddr, APIAddr: *apiAddr,
		GatewayPort: *gwPort, Capture: *capture, Progress: stdout, LogLevel: *logLevel, MeshConfig: *meshConfig,
		BuiltinSkiffd: builtin,
		Logger:        slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: level})),
		Prometheus:    promOpts,
	})
	if err != nil {
		fmt.Fprintln(stderr, "skiff up:", err)
		return 1
	}
	return 0
}
