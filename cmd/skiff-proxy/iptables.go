package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/skiff-mesh/skiff/dataplane/iptables"
)

// runIptables is `skiff-proxy iptables`: Istio's istio-iptables with the
// same flags, installing the capture rules in the current network
// namespace (run it inside the pod's, e.g. with `ip netns exec`).
func runIptables(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("skiff-proxy iptables", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := iptables.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "skiff-proxy iptables: unexpected argument %q: all settings are flags (see -h)\n", fs.Arg(0))
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if f.Cleanup {
		if f.DryRun {
			fmt.Fprintln(stdout, "# would remove every ISTIO_* chain in the nat and raw tables and the jumps to them")
			return 0
		}
		if err := iptables.Cleanup(ctx); err != nil {
			fmt.Fprintln(stderr, "skiff-proxy iptables --cleanup-only:", err)
			return 1
		}
		return 0
	}
	var resolv io.Reader
	if rf, err := os.Open("/etc/resolv.conf"); err == nil {
		defer rf.Close()
		resolv = rf
	} else if !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintln(stderr, "skiff-proxy iptables: reading /etc/resolv.conf for --redirect-dns:", err)
		return 1
	}
	cfg, err := f.Config(resolv)
	if err != nil {
		fmt.Fprintln(stderr, "skiff-proxy iptables:", err)
		return 2
	}
	if f.DryRun {
		cmds, err := iptables.Build(cfg)
		if err != nil {
			fmt.Fprintln(stderr, "skiff-proxy iptables:", err)
			return 2
		}
		for _, c := range cmds {
			fmt.Fprintln(stdout, c.String())
		}
		return 0
	}
	if err := iptables.Apply(ctx, cfg); err != nil {
		fmt.Fprintln(stderr, "skiff-proxy iptables:", err)
		return 1
	}
	return 0
}
