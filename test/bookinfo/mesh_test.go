// Package bookinfo replays Istio's Bookinfo tasks (request routing, fault
// injection, traffic shifting, request timeouts, ingress, the Gateway API
// variants) on the local mesh, black box: it builds the real skiff,
// skiff-proxy and bookinfo binaries, runs `skiff up
// samples/bookinfo/platform/local`, applies Istio's sample YAML unchanged
// from ../shared/istio-samples with `skiff apply`, and looks at the product
// page as a user does, with an HTTP client and in headless Chromium.
package bookinfo

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/internal/testing/meshtest"
)

var (
	bin string
	// repo is the repository root; samples is Istio's Bookinfo samples
	// directory beside it (../shared/istio-samples/bookinfo).
	repo, samples = meshtest.Repo, filepath.Join(meshtest.IstioSamples, "bookinfo")
)

func TestMain(m *testing.M) { meshtest.Main(m, meshtest.Bookinfo, &bin) }

// sample is one of Istio's Bookinfo files, e.g. "networking/virtual-service-all-v1.yaml".
func sample(t *testing.T, rel string) string {
	t.Helper()
	return meshtest.Sample(t, filepath.Join("bookinfo", rel))
}

// mesh is one running `skiff up` of Bookinfo.
type mesh struct {
	*meshtest.Mesh
	ingress string // the ingress gateway, http://127.0.0.1:PORT
}

// startMesh runs skiff up on Bookinfo's local manifests with free ports
// and waits for "mesh ready" and the product page URL; the mesh goes down
// when t ends.
func startMesh(t *testing.T, capture string, extra ...string) *mesh {
	t.Helper()
	m := &mesh{}
	ready := false
	args := append([]string{filepath.Join(repo, "samples/bookinfo/platform/local"),
		"--capture", capture, "--gateway-port", "0", "--monitoring-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0"}, extra...)
	m.Mesh = meshtest.Start(t, bin, args, func(l string) (bool, error) {
		if l == "mesh ready" {
			ready = true
		}
		if u, ok := strings.CutPrefix(l, "product page:"); ok {
			m.ingress = strings.TrimSuffix(strings.TrimSpace(u), "/productpage")
			if !ready {
				return false, fmt.Errorf("the product page was announced without \"mesh ready\"")
			}
			return true, nil
		}
		return false, nil
	})
	if !strings.HasPrefix(m.ingress, "http://127.0.0.1:") {
		t.Fatalf("product page URL %q is not on 127.0.0.1", m.ingress)
	}
	var rep struct {
		Capture string `json:"capture"`
	}
	if out := m.Skiff(t, "status", "-o", "json"); json.Unmarshal([]byte(out), &rep) != nil || rep.Capture != capture {
		t.Fatalf("skiff status -o json: capture %q, want %q:\n%s", rep.Capture, capture, out)
	}
	return m
}

// page is the product page as a reader sees it.
type page struct {
	status  int
	body    string
	elapsed time.Duration
	reviews string // the version that served the reviews (v1, v2, v3), "" if none
	color   string // the stars' colour, "" without stars
	stars   int
}

var (
	servedBy = regexp.MustCompile(`Reviews served by:</dt><dd><u>reviews-(v\d)-`)
	starFont = regexp.MustCompile(`<font color="(\w+)">`)
)

const (
	reviewsUnavailable = "Sorry, product reviews are currently unavailable for this book."
	ratingsUnavailable = "Ratings service is currently unavailable"
)

func (p page) String() string {
	return fmt.Sprintf("HTTP %d in %s, reviews %q, %d %s stars; body:\n%s", p.status, p.elapsed.Round(time.Millisecond), p.reviews, p.stars, p.color, p.body)
}

// reader is a browser-like HTTP client: cookies kept, no proxy from the
// environment.
type reader struct {
	c    *http.Client
	base string
}

func newReader(base string) *reader {
	jar, _ := cookiejar.New(nil)
	return &reader{base: base, c: &http.Client{Jar: jar, Timeout: 20 * time.Second,
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}}
}

// signIn posts the product page's sign-in form as a browser does.
func (r *reader) signIn(t *testing.T, user string) {
	t.Helper()
	resp, err := r.c.PostForm(r.base+"/login", url.Values{"username": {user}, "passwd": {""}})
	if err != nil {
		t.Fatalf("signing in as %s: %v", user, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), user+` <a href="logout">Sign out</a>`) {
		t.Fatalf("signing in as %s: %s, want the product page naming %s with a Sign out link:\n%s", user, resp.Status, user, b)
	}
}

func (r *reader) productPage() (page, error) {
	start := time.Now()
	resp, err := r.c.Get(r.base + "/productpage")
	if err != nil {
		return page{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	p := page{status: resp.StatusCode, body: string(b), elapsed: time.Since(start)}
	if err != nil {
		return p, err
	}
	if m := servedBy.FindStringSubmatch(p.body); m != nil {
		p.reviews = m[1]
	}
	if m := starFont.FindStringSubmatch(p.body); m != nil {
		p.color = m[1]
	}
	p.stars = strings.Count(p.body, `class="glyphicon glyphicon-star"`)
	if p.status != http.StatusOK || !strings.Contains(p.body, "<title>Simple Bookstore App</title>") {
		return p, fmt.Errorf("not the product page: %s", p)
	}
	return p, nil
}

// until reads the product page every 200 ms, for at most limit, until
// want holds n times in a row, and returns the last read: routing takes a
// moment to reach the proxies after apply, and the state before may show
// the same thing by chance (with no VirtualService reviews rotates over
// v1, v2 and v3), so where it can, a caller asks for a run of answers.
func (r *reader) until(t *testing.T, limit time.Duration, n int, what string, want func(page) bool) page {
	t.Helper()
	var last page
	var lastErr error
	run := 0
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); {
		p, err := r.productPage()
		if err == nil && want(p) {
			if run++; run == n {
				return p
			}
			continue
		}
		run, last, lastErr = 0, p, err
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("after %s the product page does not show %s (%d times in a row); last: %v %s", limit, what, n, lastErr, last)
	return page{}
}

// each reads the product page n times and checks every answer.
func (r *reader) each(t *testing.T, n int, what string, want func(page) bool) {
	t.Helper()
	for i := range n {
		p, err := r.productPage()
		if err != nil || !want(p) {
			t.Fatalf("read %d of %d: the product page does not show %s: %v %s", i+1, n, what, err, p)
		}
	}
}

func v1(p page) bool { return p.reviews == "v1" && p.stars == 0 }
func v2(p page) bool { return p.reviews == "v2" && p.color == "black" && p.stars > 0 }
func v3(p page) bool { return p.reviews == "v3" && p.color == "red" && p.stars > 0 }

// gatewayURL is the URL skiff status -o json lists for the Gateway API
// Gateway default/name, or "", and what status said.
func (m *mesh) gatewayURL(t *testing.T, name string) (string, string) {
	t.Helper()
	out := m.Skiff(t, "status", "-o", "json")
	var rep struct {
		Gateways []struct {
			Gateway string `json:"gateway"` // namespace/name
			URL     string `json:"url"`
		} `json:"gateways"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("skiff status -o json: %v\n%s", err, out)
	}
	for _, g := range rep.Gateways {
		if g.Gateway == "default/"+name && g.URL != "" {
			return g.URL, out
		}
	}
	return "", out
}
