package bookinfo

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/internal/testing/meshtest"
)

// chromium loads the product page in headless Chromium through the
// ingress gateway under virtual-service-reviews-test-v2.yaml, signs in as
// jason with the page's own form and reads the stars Chromium draws:
// black (reviews v2); after signing out, none (reviews v1).
func chromium(t *testing.T, m *mesh) {
	allV1 := sample(t, "networking/virtual-service-all-v1.yaml")
	m.Apply(t, allV1)
	t.Cleanup(func() { m.Delete(t, allV1) })
	m.Apply(t, sample(t, "networking/virtual-service-reviews-test-v2.yaml"))
	jason := newReader(m.ingress)
	jason.signIn(t, "jason")
	jason.until(t, 20*time.Second, 10, "reviews v2 for jason before Chromium starts", v2)

	wd := startChromium(t)
	wd.navigate(t, m.ingress+"/productpage")
	if got := wd.stars(t); len(got) != 0 {
		t.Fatalf("before signing in Chromium shows %d stars (%v), want none (reviews v1)", len(got), got)
	}
	wd.click(t, wd.find(t, "css selector", "input[name=username]"), "jason")
	wd.click(t, wd.find(t, "xpath", "//button[normalize-space()='Sign in']"), "")
	wd.waitFor(t, "the page naming jason with a Sign out link", `return document.querySelector("nav").innerText`, func(s string) bool {
		return strings.Contains(s, "jason") && strings.Contains(s, "Sign out")
	})
	stars := wd.stars(t)
	if len(stars) == 0 {
		t.Fatalf("signed in as jason, Chromium shows no stars; page text:\n%s", wd.script(t, `return document.body.innerText`))
	}
	for _, s := range stars {
		// Black stars: the text colour Chromium computes, and the glyph
		// (U+2605) it draws with a width.
		if s.Color != "rgb(0, 0, 0)" || s.Glyph != `"★"` || s.Width <= 0 {
			t.Errorf("signed in as jason, a star is drawn as %+v; want a black ★ with a width (reviews v2)", s)
		}
	}
	if by := wd.script(t, `return document.querySelector("#reviews dd").innerText`); !strings.HasPrefix(by, "reviews-v2-") {
		t.Errorf("signed in as jason, the reviews are served by %q, want reviews-v2", by)
	}

	wd.click(t, wd.find(t, "link text", "Sign out"), "")
	wd.waitFor(t, "the Sign in form again", `return document.querySelector("nav").innerText`, func(s string) bool {
		return !strings.Contains(s, "jason")
	})
	if got := wd.stars(t); len(got) != 0 {
		t.Errorf("signed out, Chromium shows %d stars (%v), want none (reviews v1)", len(got), got)
	}
}

// webDriver speaks the W3C WebDriver protocol to chromedriver.
type webDriver struct {
	base    string // http://127.0.0.1:PORT/session/ID
	c       *http.Client
	timeout time.Duration
}

// startChromium runs chromedriver on a free loopback port and opens a
// headless Chromium session with a fresh profile; both end with t.
func startChromium(t *testing.T) *webDriver {
	t.Helper()
	browser, err1 := exec.LookPath("chromium")
	driver, err2 := exec.LookPath("chromedriver")
	if err1 != nil || err2 != nil {
		t.Fatal(errNoChromium)
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
	wd := &webDriver{base: fmt.Sprintf("http://127.0.0.1:%d", port), timeout: 30 * time.Second,
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
			// No sandbox: the tests run as root in CI, where Chromium's
			// sandbox refuses to start.
			"args": []string{"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
				"--no-proxy-server", "--user-data-dir=" + t.TempDir()},
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
	// W3C puts every answer under "value", /session's sessionId included.
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

// find returns the element id of the first match.
func (wd *webDriver) find(t *testing.T, using, value string) string {
	t.Helper()
	var el map[string]string
	if err := wd.do("POST", "/element", map[string]string{"using": using, "value": value}, &el); err != nil {
		t.Fatalf("Chromium finding %s %q: %v\npage text:\n%s", using, value, err, wd.script(t, `return document.body.innerText`))
	}
	for _, id := range el {
		return id
	}
	t.Fatalf("Chromium finding %s %q: no element id in %v", using, value, el)
	return ""
}

// click clicks the element, or types text into it when text is given.
func (wd *webDriver) click(t *testing.T, id, text string) {
	t.Helper()
	var err error
	if text != "" {
		err = wd.do("POST", "/element/"+id+"/value", map[string]string{"text": text}, nil)
	} else {
		err = wd.do("POST", "/element/"+id+"/click", map[string]string{}, nil)
	}
	if err != nil {
		t.Fatalf("Chromium acting on element %s: %v", id, err)
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

// waitFor polls a script until ok holds, every 100 ms for wd.timeout.
func (wd *webDriver) waitFor(t *testing.T, what, js string, ok func(string) bool) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(wd.timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if last = wd.script(t, js); ok(last) {
			return
		}
	}
	t.Fatalf("Chromium did not show %s within %s; last: %q", what, wd.timeout, last)
}

// star is one filled star as Chromium renders it.
type star struct {
	Color string  `json:"color"`
	Glyph string  `json:"glyph"`
	Width float64 `json:"width"`
}

// stars reads the filled stars of the reviews as drawn: computed colour,
// the ::before glyph that draws them, and their rendered width.
func (wd *webDriver) stars(t *testing.T) []star {
	t.Helper()
	out := wd.script(t, `return JSON.stringify(Array.from(document.querySelectorAll("#reviews .glyphicon-star")).map(e => ({
		color: getComputedStyle(e).color, glyph: getComputedStyle(e, "::before").content, width: e.getBoundingClientRect().width})))`)
	var s []star
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("reading the stars in Chromium: %v: %s", err, out)
	}
	return s
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
