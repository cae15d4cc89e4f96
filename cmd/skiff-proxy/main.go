// Command skiff-proxy is Skiff's data-plane proxy: Envoy's job, driven by an
// Envoy v3 bootstrap (`skiff-proxy -c bootstrap.yaml`, as `envoy -c`) and,
// through it, by any xDS server. As an injected Kubernetes sidecar it does
// pilot-agent's job too: `skiff-proxy proxy sidecar|router` builds the
// bootstrap from the pod's environment and serves the status and health
// ports; `skiff-proxy wait` is the postStart hook.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/skiff-mesh/skiff/dataplane/agentcmd"
	"github.com/skiff-mesh/skiff/dataplane/proxy"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 {
		switch args[0] {
		case "iptables":
			return runIptables(args[1:], os.Stdout, os.Stderr)
		case "proxy":
			if os.Getenv("GOGC") == "" {
				debug.SetGCPercent(defaultGCPercent)
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return agentcmd.RunProxy(ctx, args[1:], agentcmd.OSEnviron(), os.Stdout, os.Stderr)
		case "wait":
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return agentcmd.RunWait(ctx, args[1:], os.Stdout, os.Stderr)
		}
	}
	fs := flag.NewFlagSet("skiff-proxy", flag.ContinueOnError)
	var (
		config       = fs.String("c", "", "path to an Envoy v3 bootstrap file (YAML or JSON)")
		configPath   = fs.String("config-path", "", "same as -c")
		node         = fs.String("service-node", "", "overrides node.id from the bootstrap")
		cluster      = fs.String("service-cluster", "", "overrides node.cluster from the bootstrap")
		drain        = fs.Int("drain-time-s", 5, "seconds connections get to finish when the proxy shuts down")
		level        = fs.String("l", "info", "log level: debug, info, warn, error (also --log-level)")
		logLevel     = fs.String("log-level", "", "log level: debug, info, warn, error")
		promAddr     = fs.String("prometheus-addr", "", "also serve /stats/prometheus on this address (Istio's :15090)")
		concurrency  = fs.Int("concurrency", 0, "worker threads (GOMAXPROCS); 0 keeps the Go default")
		gcPercent    = fs.Int("gc-percent", defaultGCPercent, "Go GC target percentage (GOGC); a sidecar's live heap is small, so a tighter target saves resident memory for little CPU")
		printVersion = fs.Bool("version", false, "print the version and exit")
		caAddr       = fs.String("ca-addr", os.Getenv("CA_ADDR"), "HOST:PORT of the mesh CA (skiffd's 15012); turns the identity agent on (env CA_ADDR)")
		caToken      = fs.String("ca-token-file", "", "file holding the bearer token presented to the CA, re-read for every request")
		caRoot       = fs.String("ca-root-cert", "", "PEM roots that verify the CA's serving certificate (Istio's ./var/run/secrets/istio/root-cert.pem)")
		caName       = fs.String("ca-server-name", "", "TLS server name of the CA; default the host of --ca-addr, or istiod.istio-system.svc when it is an IP")
		keyAlg       = fs.String("key-algorithm", envOr("WORKLOAD_KEY_ALGORITHM", "ECDSA"), "workload key type: ECDSA (P-256) or RSA (2048) (env WORKLOAD_KEY_ALGORITHM)")
	)
	fs.Int("base-id", 0, "accepted for Envoy compatibility; ignored")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *printVersion {
		fmt.Println("skiff-proxy version", proxy.Version)
		return 0
	}
	path := *config
	if path == "" {
		path = *configPath
	}
	if path == "" {
		fmt.Fprintln(os.Stderr, "skiff-proxy: no bootstrap given: run skiff-proxy -c FILE with an Envoy v3 bootstrap (YAML or JSON)")
		return 2
	}
	lv := new(slog.LevelVar)
	name := *level
	if *logLevel != "" {
		name = *logLevel
	}
	if err := lv.UnmarshalText([]byte(name)); err != nil {
		fmt.Fprintf(os.Stderr, "skiff-proxy: --log-level %q: want debug, info, warn or error\n", name)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
	identity, err := agentcmd.IdentityFromEnv(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "skiff-proxy:", err)
		return 2
	}
	identity.CAAddr, identity.TokenFile, identity.CARootCert = *caAddr, *caToken, *caRoot
	identity.CAServerName, identity.KeyAlgorithm = *caName, *keyAlg
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(*gcPercent)
	}
	if *concurrency > 0 {
		runtime.GOMAXPROCS(*concurrency)
	}
	p, err := proxy.New(proxy.Options{
		ConfigPath: path, ServiceNode: *node, ServiceCluster: *cluster,
		DrainTime: time.Duration(*drain) * time.Second, PrometheusAddr: *promAddr,
		LogLevel: lv, Logger: logger, CommandLine: os.Args, Identity: identity,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "skiff-proxy:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := p.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "skiff-proxy:", err)
		return 1
	}
	return 0
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// defaultGCPercent: a sidecar's live heap is small, so a tighter GC target
// saves resident memory for little CPU.
const defaultGCPercent = 50
