// Package promtest runs a real Prometheus (Debian's package, which
// scripts/test.sh installs) for a test, on a free loopback port.
package promtest

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/internal/testing/childport"
)

// Start runs prometheus with config (prometheus.yml's content), waits
// until it answers /-/ready, and returns its base URL
// ("http://127.0.0.1:PORT"). It stops with the test, logging Prometheus's
// output if the test failed.
func Start(t testing.TB, config string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("this test runs Debian's prometheus: apt-get install prometheus (scripts/test.sh does)")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	port, _ := childport.Start(t, "prometheus", 30*time.Second, func(port int) *exec.Cmd {
		return exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data-"+strconv.Itoa(port)),
			"--web.listen-address="+net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	}, func(port int) bool {
		resp, err := c.Get("http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}
