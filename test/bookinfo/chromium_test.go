package bookinfo

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/internal/testing/webdriver"
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
	jason.SignIn(t, "jason")
	jason.Until(t, 20*time.Second, 10, "reviews v2 for jason before Chromium starts", v2)

	wd := webdriver.Start(t, webdriver.Options{})
	wd.Navigate(t, m.ingress+"/productpage")
	if got := stars(t, wd); len(got) != 0 {
		t.Fatalf("before signing in Chromium shows %d stars (%v), want none (reviews v1)", len(got), got)
	}
	wd.Click(t, wd.Find(t, "css selector", "input[name=username]"), "jason")
	wd.Click(t, wd.Find(t, "xpath", "//button[normalize-space()='Sign in']"), "")
	wd.WaitFor(t, "the page naming jason with a Sign out link", 30*time.Second, 100*time.Millisecond, `return document.querySelector("nav").innerText`, func(s string) bool {
		return strings.Contains(s, "jason") && strings.Contains(s, "Sign out")
	})
	drawn := stars(t, wd)
	if len(drawn) == 0 {
		t.Fatalf("signed in as jason, Chromium shows no stars; page text:\n%s", wd.Script(t, `return document.body.innerText`))
	}
	for _, s := range drawn {
		// Black stars: the text colour Chromium computes, and the glyph
		// (U+2605) it draws with a width.
		if s.Color != "rgb(0, 0, 0)" || s.Glyph != `"★"` || s.Width <= 0 {
			t.Errorf("signed in as jason, a star is drawn as %+v; want a black ★ with a width (reviews v2)", s)
		}
	}
	if by := wd.Script(t, `return document.querySelector("#reviews dd").innerText`); !strings.HasPrefix(by, "reviews-v2-") {
		t.Errorf("signed in as jason, the reviews are served by %q, want reviews-v2", by)
	}

	wd.Click(t, wd.Find(t, "link text", "Sign out"), "")
	wd.WaitFor(t, "the Sign in form again", 30*time.Second, 100*time.Millisecond, `return document.querySelector("nav").innerText`, func(s string) bool {
		return !strings.Contains(s, "jason")
	})
	if got := stars(t, wd); len(got) != 0 {
		t.Errorf("signed out, Chromium shows %d stars (%v), want none (reviews v1)", len(got), got)
	}
}

// star is one filled star as Chromium renders it.
type star struct {
	Color string  `json:"color"`
	Glyph string  `json:"glyph"`
	Width float64 `json:"width"`
}

// stars reads the filled stars of the reviews as drawn: computed colour,
// the ::before glyph that draws them, and their rendered width.
func stars(t *testing.T, wd *webdriver.Session) []star {
	t.Helper()
	out := wd.Script(t, `return JSON.stringify(Array.from(document.querySelectorAll("#reviews .glyphicon-star")).map(e => ({
		color: getComputedStyle(e).color, glyph: getComputedStyle(e, "::before").content, width: e.getBoundingClientRect().width})))`)
	var s []star
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("reading the stars in Chromium: %v: %s", err, out)
	}
	return s
}
