// Command skiff-proxy is Skiff's data-plane proxy: Envoy's job, driven by an
// Envoy v3 bootstrap (`skiff-proxy -c bootstrap.yaml`, as `envoy -c`) and,
// through it, by any xDS server.
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

	"github.com/skiff-mesh/skiff/dataplane/proxy"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 && args[0] == "iptables" {
		return runIptables(args[1:], os.Stdout, os.Stderr)
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
		gcPercent    = fs.Int("gc-percent", 50, "Go GC target percentage (GOGC); a sidecar's live heap is small, so a tighter target saves resident memory for little CPU")
		printVersion = fs.Bool("version", false, "print the version and exit")
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
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(*gcPercent)
	}
	if *concurrency > 0 {
		runtime.GOMAXPROCS(*concurrency)
	}
	p, err := proxy.New(proxy.Options{
		ConfigPath: path, ServiceNode: *node, ServiceCluster: *cluster,
		DrainTime: time.Duration(*drain) * time.Second, PrometheusAddr: *promAddr,
		LogLevel: lv, Logger: logger, CommandLine: os.Args,
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
