// Command skiffd is Skiff's control plane (Istio's Pilot): it serves the
// mesh described by the YAML under --config-dir to every proxy over xDS.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/skiff-mesh/skiff/controlplane/server"
)

// Version is skiffd's version.
var Version = "0.1.0-dev"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("skiffd", flag.ContinueOnError)
	var o server.Options
	o.RegisterFlags(fs)
	level := fs.String("log-level", "info", "debug, info, warn or error")
	gcPercent := fs.Int("gc-percent", 50, "Go GC target percentage (GOGC): skiffd's heap is mostly long-lived config and shared encodings, so a tighter target saves resident memory for little CPU; GOGC in the environment wins")
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *version {
		fmt.Println("skiffd version", Version)
		return 0
	}
	lv := new(slog.LevelVar)
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(os.Stderr, "skiffd: --log-level %q: want debug, info, warn or error\n", *level)
		return 2
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(*gcPercent)
	}
	o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
	s, err := server.New(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "skiffd:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := s.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "skiffd:", err)
		return 1
	}
	return 0
}
