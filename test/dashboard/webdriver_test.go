package dashboard

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/internal/testing/meshtest"
)

// webDriver speaks the W3C WebDriver protocol to chromedriver, as
// test/bookinfo does.
type webDriver struct {
	base    string // http://127.0.0.1:PORT/session/ID
	c       *http.Client
	timeout time.Duration
}

// startChromium runs chromedriver on a free loopback port and opens a
// headless Chromium session with a fresh profile that can resolve no name
// and reach no address but loopback ones; both end with t.
func startChromium(t *testing.T) *webDriver {
	t.Helper()
	browser, err1 := exec.LookPath("chromium")
	driver, err2 := exec.LookPath("chromedriver")
	if err1 != nil || err2 != nil {
		t.Fatal("the dashboard test drives headless Chromium: install Debian's chromium and chromium-driver (scripts/test.sh does)")
	}
	port := freePort(t)
	cmd := exec.Command(driver, "--port="+strconv.Itoa(port), "--allowed-ips=127.0.0.1")
	var log meshtest.SyncBuilder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", driver, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("chromedriver:\n%s", log.String())
		}
	})
	wd := &webDriver{base: fmt.Sprintf("http://127.0.0.1:%d", port), timeout: 60 * time.Second,
		c: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{Proxy: nil}}}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var st struct {
			Ready bool `json:"ready"`
		}
		if err := wd.do("GET", "/status", nil, &st); err == nil && st.Ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("chromedriver on port %d not ready within 20 s:\n%s", port, log.String())
		}
	}
	caps := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName": "chrome",
		"goog:chromeOptions": map[string]any{
			"binary": browser,
			// No sandbox: CI runs as root. No name resolves, so nothing
			// beyond the loopback addresses the page is given can load.
			"args": []string{"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
				"--no-proxy-server", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--disable-background-networking",
				"--disable-component-update", "--window-size=1400,900", "--user-data-dir=" + t.TempDir()},
		},
		"timeouts": map[string]int{"pageLoad": 30000, "script": 10000, "implicit": 0},
	}}}
	var sess struct {
		SessionID string `json:"sessionId"`
	}
	if err := wd.do("POST", "/session", caps, &sess); err != nil || sess.SessionID == "" {
		t.Fatalf("opening a Chromium session: %v\nchromedriver:\n%s", err, log.String())
	}
	wd.base += "/session/" + sess.SessionID
	t.Cleanup(func() { wd.do("DELETE", "", nil, nil) })
	return wd
}

// do sends one WebDriver command and decodes its "value" into out.
func (wd *webDriver) do(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, wd.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := wd.c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var env struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, env.Value)
	}
	if out != nil {
		return json.Unmarshal(env.Value, out)
	}
	return nil
}

func (wd *webDriver) navigate(t *testing.T, url string) {
	t.Helper()
	if err := wd.do("POST", "/url", map[string]string{"url": url}, nil); err != nil {
		t.Fatalf("Chromium loading %s: %v", url, err)
	}
}

// script runs JavaScript in the page and returns its result as a string
// (JSON for anything else).
func (wd *webDriver) script(t *testing.T, js string) string {
	t.Helper()
	var v any
	if err := wd.do("POST", "/execute/sync", map[string]any{"script": js, "args": []any{}}, &v); err != nil {
		t.Fatalf("Chromium running %s: %v", js, err)
	}
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// waitFor polls a script every 500 ms until ok holds or within passes.
func (wd *webDriver) waitFor(t *testing.T, what string, within time.Duration, js string, ok func(string) bool) string {
	t.Helper()
	var last string
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if last = wd.script(t, js); ok(last) {
			return last
		}
	}
	wd.screenshot(t, "failed-"+filepath.Base(t.Name()))
	t.Fatalf("Chromium did not show %s within %s; last: %s", what, within, last)
	return ""
}

// screenshot saves the page as NAME.png under $SKIFF_ARTIFACTS (else a
// temporary directory) and logs where.
func (wd *webDriver) screenshot(t *testing.T, name string) string {
	t.Helper()
	var b64 string
	if err := wd.do("GET", "/screenshot", nil, &b64); err != nil {
		t.Errorf("taking a screenshot: %v", err)
		return ""
	}
	png, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Errorf("screenshot: %v", err)
		return ""
	}
	dir := os.Getenv("SKIFF_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	} else {
		dir = filepath.Join(dir, "dashboard")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Errorf("screenshot: %v", err)
		return ""
	}
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Errorf("screenshot: %v", err)
		return ""
	}
	t.Logf("screenshot: %s", p)
	return p
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
