// Package webdriver drives headless Chromium for the browser tests through
// chromedriver, over the W3C WebDriver protocol: a session per test, on
// loopback, ended with the test.
package webdriver

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/internal/testing/childport"
)

// ErrNotInstalled is what a test reports when Chromium or chromedriver is
// missing.
const ErrNotInstalled = "chromium or chromedriver is not installed: run scripts/test.sh, which installs them (Debian's chromium and chromium-driver packages)"

// Options shape the browser.
type Options struct {
	// Offline makes every name but 127.0.0.1 unresolvable, so a page can
	// load nothing from beyond the loopback addresses it is given.
	Offline bool
	// WindowSize as "W,H"; Chromium's default when empty.
	WindowSize string
	// ArtifactsDir is the subdirectory of $SKIFF_ARTIFACTS screenshots go
	// to (a temporary directory when $SKIFF_ARTIFACTS is unset).
	ArtifactsDir string
}

// Session is one Chromium session.
type Session struct {
	base string // http://127.0.0.1:PORT/session/ID
	c    *http.Client
	o    Options
}

// Start runs chromedriver on a free loopback port and opens a headless
// Chromium session with a fresh profile; both end with t.
func Start(t testing.TB, o Options) *Session {
	t.Helper()
	browser, err1 := exec.LookPath("chromium")
	driver, err2 := exec.LookPath("chromedriver")
	if err1 != nil || err2 != nil {
		t.Fatal(ErrNotInstalled)
	}
	c := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{Proxy: nil}}
	port, log := childport.Start(t, "chromedriver", 20*time.Second, func(port int) *exec.Cmd {
		return exec.Command(driver, "--port="+strconv.Itoa(port), "--allowed-ips=127.0.0.1")
	}, func(port int) bool {
		var st struct {
			Ready bool `json:"ready"`
		}
		probe := &Session{base: fmt.Sprintf("http://127.0.0.1:%d", port), c: c}
		return probe.Do("GET", "/status", nil, &st) == nil && st.Ready
	})
	s := &Session{base: fmt.Sprintf("http://127.0.0.1:%d", port), o: o, c: c}
	// No sandbox: the tests run as root in CI, where Chromium's sandbox
	// refuses to start.
	args := []string{"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-proxy-server", "--user-data-dir=" + t.TempDir()}
	if o.Offline {
		args = append(args, "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
			"--disable-background-networking", "--disable-component-update")
	}
	if o.WindowSize != "" {
		args = append(args, "--window-size="+o.WindowSize)
	}
	caps := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName":        "chrome",
		"goog:chromeOptions": map[string]any{"binary": browser, "args": args},
		"timeouts":           map[string]int{"pageLoad": 30000, "script": 10000, "implicit": 0},
	}}}
	var sess struct {
		SessionID string `json:"sessionId"`
	}
	if err := s.Do("POST", "/session", caps, &sess); err != nil || sess.SessionID == "" {
		t.Fatalf("opening a Chromium session: %v\nchromedriver:\n%s", err, log.String())
	}
	s.base += "/session/" + sess.SessionID
	t.Cleanup(func() { s.Do("DELETE", "", nil, nil) })
	return s
}

// Do sends one WebDriver command and decodes its "value" into out.
func (s *Session) Do(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.c.Do(req)
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
	// W3C puts every answer under "value", /session's sessionId included.
	if out != nil {
		return json.Unmarshal(env.Value, out)
	}
	return nil
}

// Navigate loads url.
func (s *Session) Navigate(t testing.TB, url string) {
	t.Helper()
	if err := s.Do("POST", "/url", map[string]string{"url": url}, nil); err != nil {
		t.Fatalf("Chromium loading %s: %v", url, err)
	}
}

// Find returns the element id of the first match.
func (s *Session) Find(t testing.TB, using, value string) string {
	t.Helper()
	var el map[string]string
	if err := s.Do("POST", "/element", map[string]string{"using": using, "value": value}, &el); err != nil {
		t.Fatalf("Chromium finding %s %q: %v\npage text:\n%s", using, value, err, s.Script(t, `return document.body.innerText`))
	}
	for _, id := range el {
		return id
	}
	t.Fatalf("Chromium finding %s %q: no element id in %v", using, value, el)
	return ""
}

// Click clicks the element, or types text into it when text is given.
func (s *Session) Click(t testing.TB, id, text string) {
	t.Helper()
	var err error
	if text != "" {
		err = s.Do("POST", "/element/"+id+"/value", map[string]string{"text": text}, nil)
	} else {
		err = s.Do("POST", "/element/"+id+"/click", map[string]string{}, nil)
	}
	if err != nil {
		t.Fatalf("Chromium acting on element %s: %v", id, err)
	}
}

// Script runs JavaScript in the page and returns its result as a string
// (JSON for anything else).
func (s *Session) Script(t testing.TB, js string) string {
	t.Helper()
	var v any
	if err := s.Do("POST", "/execute/sync", map[string]any{"script": js, "args": []any{}}, &v); err != nil {
		t.Fatalf("Chromium running %s: %v", js, err)
	}
	if str, ok := v.(string); ok {
		return str
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// WaitFor polls a script every poll until ok holds or within passes, and
// returns its last result; on failure it saves a screenshot first.
func (s *Session) WaitFor(t testing.TB, what string, within, poll time.Duration, js string, ok func(string) bool) string {
	t.Helper()
	var last string
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(poll) {
		if last = s.Script(t, js); ok(last) {
			return last
		}
	}
	s.Screenshot(t, "failed-"+filepath.Base(t.Name()))
	t.Fatalf("Chromium did not show %s within %s; last: %q", what, within, last)
	return ""
}

// Screenshot saves the page as NAME.png under $SKIFF_ARTIFACTS/ArtifactsDir
// (else a temporary directory), logs where and returns the path.
func (s *Session) Screenshot(t testing.TB, name string) string {
	t.Helper()
	var b64 string
	if err := s.Do("GET", "/screenshot", nil, &b64); err != nil {
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
		dir = filepath.Join(dir, s.o.ArtifactsDir)
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
