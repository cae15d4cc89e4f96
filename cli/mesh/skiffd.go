package mesh

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"syscall"

	"github.com/skiff-mesh/skiff/controlplane/server"
)

// SkiffdVerb is the hidden verb that runs the skiffd built into skiff:
// skiff up starts it when no skiffd binary is next to skiff or in PATH,
// so that skiff and skiff-proxy alone run a mesh.
const SkiffdVerb = "__skiffd"

// Skiffd is `skiff __skiffd`: skiffd with the flags skiff up passes it
// (those of cmd/skiffd), its log on stderr, until SIGTERM or SIGINT.
func Skiffd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags(SkiffdVerb, "skiff "+SkiffdVerb+" --config-dir DIR [flags] (run by skiff up)", stderr)
	var o server.Options
	o.RegisterFlags(fs)
	level := fs.String("log-level", "info", "debug, info, warn or error")
	pos, err := parse(fs, args)
	if err != nil {
		return 2
	}
	var lv slog.Level
	if len(pos) > 0 || lv.UnmarshalText([]byte(*level)) != nil {
		fmt.Fprintf(stderr, "skiff %s: takes skiffd's flags (see skiff %s -h) and --log-level debug|info|warn|error; no arguments\n", SkiffdVerb, SkiffdVerb)
		return 2
	}
	o.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
	s, err := server.New(o)
	if err != nil {
		fmt.Fprintln(stderr, "skiffd:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := s.Run(ctx); err != nil {
		fmt.Fprintln(stderr, "skiffd:", err)
		return 1
	}
	return 0
}
