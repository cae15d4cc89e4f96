package dashboard

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/internal/testing/webdriver"
)

// edgeView is one edge as Chromium draws it.
type edgeView struct {
	From, To string
	Rate     float64
	Red      bool
	Stroke   string
	Label    string
}

const readEdges = `return JSON.stringify(Array.from(document.querySelectorAll("#graph g.edge")).map(e => ({
	From: e.dataset.sourceName, To: e.dataset.targetName, Rate: +e.dataset.rate, Red: e.classList.contains("red"),
	Stroke: getComputedStyle(e.querySelector("path.line")).stroke, Label: e.querySelector("text").textContent})))`

func edges(s string) []edgeView {
	var out []edgeView
	json.Unmarshal([]byte(s), &out)
	return out
}

func find(es []edgeView, ok func(edgeView) bool) *edgeView {
	for i := range es {
		if ok(es[i]) {
			return &es[i]
		}
	}
	return nil
}

// callsRatings: an edge from a reviews workload to the ratings service.
func callsRatings(e edgeView) bool {
	return strings.HasPrefix(e.From, "reviews-v") && e.To == "ratings"
}

// TestDashboardGraphInChromium: with Bookinfo under traffic, the graph
// `skiff dashboard` serves shows productpage → reviews and reviews →
// ratings with their rates; once ratings aborts every call with a 500
// (Istio's fault injection), the ratings edge turns red. The page loads
// nothing but from the dashboard, in a Chromium that resolves no name.
func TestDashboardGraphInChromium(t *testing.T) {
	m := startMesh(t, "loopback", "--xds-addr", "127.0.0.1:0")
	// The dashboard's own scrapes (no Prometheus): every second.
	url := startDashboard(t, m, "--scrape-interval", "1s")
	sendTraffic(t, m, 200*time.Millisecond, 3000)

	wd := webdriver.Start(t, webdriver.Options{Offline: true, WindowSize: "1400,900", ArtifactsDir: "dashboard"})
	wd.Navigate(t, url)
	got := wd.WaitFor(t, "productpage → reviews and reviews → ratings edges with rates", 90*time.Second, 500*time.Millisecond, readEdges, func(s string) bool {
		es := edges(s)
		pr := find(es, func(e edgeView) bool { return e.From == "productpage-v1" && e.To == "reviews" && e.Rate > 0 })
		rr := find(es, func(e edgeView) bool { return callsRatings(e) && e.Rate > 0 })
		return pr != nil && rr != nil
	})
	for _, e := range edges(got) {
		if e.Rate > 0 && !strings.Contains(e.Label, "rps") {
			t.Errorf("edge %s → %s is labelled %q, want its rate in rps", e.From, e.To, e.Label)
		}
		if callsRatings(e) && e.Red {
			t.Errorf("before any fault, the ratings edge %s → %s is red: %+v", e.From, e.To, e)
		}
	}
	wd.Screenshot(t, "graph-bookinfo")

	abort := filepath.Join(t.TempDir(), "ratings-abort.yaml")
	os.WriteFile(abort, []byte(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - fault:
      abort:
        percentage:
          value: 100
        httpStatus: 500
    route:
    - destination:
        host: ratings
`), 0o644)
	m.Apply(t, abort)
	got = wd.WaitFor(t, "the ratings edge red after the fault", 90*time.Second, 500*time.Millisecond, readEdges, func(s string) bool {
		return find(edges(s), func(e edgeView) bool { return callsRatings(e) && e.Red }) != nil
	})
	red := find(edges(got), func(e edgeView) bool { return callsRatings(e) && e.Red })
	if red.Stroke != "rgb(208, 2, 27)" {
		t.Errorf("the red edge %s → ratings is drawn with stroke %q, want red rgb(208, 2, 27)", red.From, red.Stroke)
	}
	if pr := find(edges(got), func(e edgeView) bool { return e.From == "productpage-v1" && e.To == "reviews" }); pr == nil || pr.Red {
		t.Errorf("after the ratings fault the productpage → reviews edge is %+v, want it there and not red (reviews answers 200)", pr)
	}
	wd.Screenshot(t, "graph-ratings-fault")

	// The service page of ratings: its golden signals and the
	// VirtualService that applies to it.
	wd.Navigate(t, url+"#/service/default/ratings")
	wd.WaitFor(t, "the ratings VirtualService on the service page", 30*time.Second, 500*time.Millisecond,
		`return Array.from(document.querySelectorAll("#service-config .obj")).map(o => o.dataset.kind + "/" + o.dataset.name).join(",")`,
		func(s string) bool {
			return strings.Contains(s, "VirtualService/ratings") && strings.Contains(s, "Service/ratings")
		})
	wd.Screenshot(t, "service-ratings")
	wd.Navigate(t, url+"#/proxies")
	wd.WaitFor(t, "the proxies' sync state", 30*time.Second, 500*time.Millisecond, `return document.querySelectorAll("#proxies tr[data-proxy]").length + ""`,
		func(s string) bool { return s != "0" && s != "" })
	wd.Screenshot(t, "proxies")

	// Everything the page loaded came from the dashboard.
	res := wd.Script(t, `return JSON.stringify(performance.getEntriesByType("resource").map(r => r.name).concat([location.href]))`)
	var names []string
	json.Unmarshal([]byte(res), &names)
	if len(names) < 3 {
		t.Fatalf("the page lists %d resources (%v), want at least its script and style", len(names), names)
	}
	origin := strings.TrimSuffix(url, "/dashboard/")
	for _, n := range names {
		if !strings.HasPrefix(n, origin+"/") {
			t.Errorf("the page loaded %s, not from the dashboard at %s", n, origin)
		}
	}
}
