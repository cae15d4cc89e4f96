// Package bookinfotest reads Bookinfo's product page as its users do, for
// the black-box tests that run Bookinfo through the mesh (test/bookinfo on
// the local mesh, test/kube on Kubernetes): a browser-like client with
// cookies, sign-in, and what the page shows (which reviews version served
// it, the stars and their colour).
package bookinfotest

import (
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Bookinfo's error texts, as the upstream sample prints them.
const (
	ReviewsUnavailable = "Sorry, product reviews are currently unavailable for this book."
	RatingsUnavailable = "Ratings service is currently unavailable"
)

// Page is the product page as a reader sees it.
type Page struct {
	Status  int
	Body    string
	Elapsed time.Duration
	Reviews string // the version that served the reviews (v1, v2, v3), "" if none
	Color   string // the stars' colour, "" without stars
	Stars   int
}

var (
	servedBy = regexp.MustCompile(`Reviews served by:</dt><dd><u>reviews-(v\d)-`)
	starFont = regexp.MustCompile(`<font color="(\w+)">`)
)

func (p Page) String() string {
	return fmt.Sprintf("HTTP %d in %s, reviews %q, %d %s stars; body:\n%s", p.Status, p.Elapsed.Round(time.Millisecond), p.Reviews, p.Stars, p.Color, Tail(p.Body, 3000))
}

// V1, V2 and V3 tell the reviews versions apart as Istio's tasks do: no
// stars, black stars, red stars.
func V1(p Page) bool { return p.Reviews == "v1" && p.Stars == 0 }
func V2(p Page) bool { return p.Reviews == "v2" && p.Color == "black" && p.Stars > 0 }
func V3(p Page) bool { return p.Reviews == "v3" && p.Color == "red" && p.Stars > 0 }

// Reader is a browser-like HTTP client of the product page: cookies kept,
// no proxy from the environment.
type Reader struct {
	c    *http.Client
	base string
}

// NewReader reads the product page under base (http://HOST:PORT).
func NewReader(base string) *Reader {
	jar, _ := cookiejar.New(nil)
	return &Reader{base: base, c: &http.Client{Jar: jar, Timeout: 20 * time.Second,
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}}
}

// SignIn posts the product page's sign-in form as a browser does.
func (r *Reader) SignIn(t testing.TB, user string) {
	t.Helper()
	resp, err := r.c.PostForm(r.base+"/login", url.Values{"username": {user}, "passwd": {""}})
	if err != nil {
		t.Fatalf("signing in as %s: %v", user, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), user+` <a href="logout">Sign out</a>`) {
		t.Fatalf("signing in as %s: %s, want the product page naming %s with a Sign out link:\n%s", user, resp.Status, user, Tail(string(b), 3000))
	}
}

// Get sends GET base+path with the reader's cookies.
func (r *Reader) Get(path string) (*http.Response, error) { return r.c.Get(r.base + path) }

// ProductPage reads the product page once; an answer that is not the
// product page is an error (the Page still says what came back).
func (r *Reader) ProductPage() (Page, error) {
	start := time.Now()
	resp, err := r.c.Get(r.base + "/productpage")
	if err != nil {
		return Page{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	p := Page{Status: resp.StatusCode, Body: string(b), Elapsed: time.Since(start)}
	if err != nil {
		return p, err
	}
	if m := servedBy.FindStringSubmatch(p.Body); m != nil {
		p.Reviews = m[1]
	}
	if m := starFont.FindStringSubmatch(p.Body); m != nil {
		p.Color = m[1]
	}
	p.Stars = strings.Count(p.Body, `class="glyphicon glyphicon-star"`)
	if p.Status != http.StatusOK || !strings.Contains(p.Body, "<title>Simple Bookstore App</title>") {
		return p, fmt.Errorf("not the product page: %s", p)
	}
	return p, nil
}

// Until reads the product page every 200 ms, for at most limit, until
// want holds n times in a row, and returns the last read: routing takes a
// moment to reach the proxies after apply, and the state before may show
// the same thing by chance (with no VirtualService reviews rotates over
// v1, v2 and v3), so where it can, a caller asks for a run of answers.
func (r *Reader) Until(t testing.TB, limit time.Duration, n int, what string, want func(Page) bool) Page {
	t.Helper()
	var last Page
	var lastErr error
	run := 0
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); {
		p, err := r.ProductPage()
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
	return Page{}
}

// Each reads the product page n times and checks every answer.
func (r *Reader) Each(t testing.TB, n int, what string, want func(Page) bool) {
	t.Helper()
	for i := range n {
		p, err := r.ProductPage()
		if err != nil || !want(p) {
			t.Fatalf("read %d of %d: the product page does not show %s: %v %s", i+1, n, what, err, p)
		}
	}
}

// Tail is the last n bytes of s, for failure messages.
func Tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
