package ca

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"time"
)

// WatchPlugged polls the cacerts directory every interval until ctx ends and
// reloads it when its files change, as istiod follows a replaced cacerts
// Secret; the old root stays trusted for overlap. A broken replacement is
// logged and the CA keeps signing with what it had.
func (c *CA) WatchPlugged(ctx context.Context, interval, overlap time.Duration) {
	dir := c.opts.PluggedCertsDir
	if dir == "" {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var failed [32]byte // last digest that did not load, so it is logged once
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d := digestDir(dir)
		c.mu.Lock()
		loaded := c.pluggedDigest
		c.mu.Unlock()
		if d == loaded || d == failed {
			continue
		}
		if err := c.ReloadPlugged(overlap); err != nil {
			failed = d
			c.log.Error("CA kept its current certificates: the changed cacerts files do not load", "dir", dir, "err", err)
		}
	}
}

// digestDir hashes the cacerts files; unreadable files hash as absent, so a
// file being replaced is seen again once it is back.
func digestDir(dir string) [32]byte {
	h := sha256.New()
	for _, n := range []string{fileCACert, fileCAKey, fileRootCert, fileCertChain} {
		b, _ := os.ReadFile(filepath.Join(dir, n))
		h.Write([]byte(n))
		h.Write(b)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}
