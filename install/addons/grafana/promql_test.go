package grafana

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// grafanaVars stand for what Grafana substitutes before it sends a query.
var grafanaVars = strings.NewReplacer("$__rate_interval", "1m", "$namespace", "default", "$workload", "reviews-v1",
	"$service", "reviews.default.svc.cluster.local", "${datasource}", "prometheus")

// labelValues is Grafana's label_values(metric, label) variable query.
var labelValues = regexp.MustCompile(`^label_values\((.*), *([a-z_]+)\)$`)

// Every query parses and evaluates in a real Prometheus (Debian's),
// Grafana's variables substituted as Grafana does.
func TestQueriesRunInPrometheus(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("this test runs Debian's prometheus: apt-get install prometheus (scripts/test.sh does)")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	os.WriteFile(cfg, []byte("global:\n  scrape_interval: 15s\n"), 0o644)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var log strings.Builder
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if resp, err := c.Get("http://" + addr + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready within 30 s:\n%s", log.String())
		}
	}
	n := 0
	for name, m := range load(t) {
		for _, e := range exprs(t, m) {
			q := grafanaVars.Replace(e)
			if s := labelValues.FindStringSubmatch(q); s != nil {
				q = fmt.Sprintf("group by (%s) (%s)", s[2], s[1])
			}
			resp, err := c.PostForm("http://"+addr+"/api/v1/query", url.Values{"query": {q}})
			if err != nil {
				t.Fatal(err)
			}
			var r struct{ Status, Error string }
			json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
			if r.Status != "success" {
				t.Errorf("%s: Prometheus refuses %s: %s", name, e, r.Error)
			}
			n++
		}
	}
	if n < 30 {
		t.Errorf("only %d queries checked", n)
	}
}
