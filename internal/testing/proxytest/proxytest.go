// Package proxytest runs a real skiff-proxy inside a test, from a bootstrap,
// until the test ends.
package proxytest

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/dataplane/proxy"
)

// Start runs skiff-proxy from bootstrapYAML and waits until its first
// configuration is in; it stops when the test ends.
func Start(t testing.TB, bootstrapYAML string) *proxy.Proxy {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bootstrap.yaml")
	if err := os.WriteFile(path, []byte(bootstrapYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := proxy.New(proxy.Options{ConfigPath: path, DrainTime: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("proxy Run: %v", err)
		}
	})
	select {
	case <-p.Ready():
	case err := <-done:
		t.Fatalf("proxy stopped before ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("proxy not ready within 10s")
	}
	return p
}
