//go:build netns

package dashboard

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	dash "github.com/skiff-mesh/skiff/controlplane/dashboard"
	"github.com/skiff-mesh/skiff/internal/testing/webdriver"
)

// shiftQuery is the PromQL, as a user types it in Prometheus.
const shiftQuery = `sum(rate(istio_requests_total{destination_app="reviews"}[1m])) by (destination_version)`

// TestPrometheusSeesTrafficShift (root, -tags=netns: the reviews
// version is known only where the request reaches reviews' sidecar):
// skiff up --prometheus scrapes every proxy; with Istio's
// virtual-service-reviews-v3.yaml applied, PromQL answers that reviews
// traffic goes to v3. skiffd's own dashboard shows the same calls with the
// mTLS lock.
func TestPrometheusSeesTrafficShift(t *testing.T) {
	m := startMesh(t, "netns", "--xds-addr", "198.18.0.1:0", "--prometheus", "--prometheus-addr", "127.0.0.1:0",
		"--prometheus-scrape-interval", "1s")
	if m.prometheus == "" {
		t.Fatalf("skiff up --prometheus printed no Prometheus URL:\n%s", m.Output())
	}
	m.Apply(t, sample(t, "networking/destination-rule-all.yaml"))
	m.Apply(t, sample(t, "networking/virtual-service-reviews-v3.yaml"))
	// The shift is in force once the page comes from v3 ten times in a
	// row (bounded: 300 requests).
	inARow := 0
	for i := 0; i < 300 && inARow < 10; i++ {
		_, v, err := productPage(m)
		if err == nil && v == "v3" {
			inARow++
		} else {
			inARow = 0
			time.Sleep(200 * time.Millisecond)
		}
	}
	if inARow < 10 {
		t.Fatalf("the product page is not served by reviews v3 after applying virtual-service-reviews-v3.yaml")
	}
	tr := sendTraffic(t, m, 100*time.Millisecond, 150)

	prom := &dash.Prometheus{URL: m.prometheus}
	var last []dash.Sample
	deadline := time.Now().Add(60 * time.Second)
	for ; ; time.Sleep(time.Second) {
		res, err := prom.Query(context.Background(), shiftQuery, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		last = res
		v3, others := 0.0, 0.0
		for _, s := range res {
			if s.Labels["destination_version"] == "v3" {
				v3 += s.Value
			} else {
				others += s.Value
			}
		}
		// Mostly v3: the few requests before the proxies had the route
		// stay in the window.
		if v3 > 0 && v3 >= 0.9*(v3+others) {
			t.Logf("%s = %v", shiftQuery, res)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s against Prometheus at %s: %v; want (mostly) destination_version v3", shiftQuery, m.prometheus, last)
		}
	}
	if n := tr.stop(); n == 0 {
		t.Errorf("no product page request succeeded while Prometheus scraped")
	}

	// 50/50 between v1 and v3 (Istio's virtual-service-reviews-50-v3.yaml),
	// over a window that starts after the change.
	m.Apply(t, sample(t, "networking/virtual-service-reviews-50-v3.yaml"))
	seen := map[string]int{}
	for i := 0; i < 300 && (seen["v1"] < 3 || seen["v3"] < 3); i++ {
		if _, v, err := productPage(m); err == nil {
			seen[v]++
		}
	}
	if seen["v1"] < 3 {
		t.Fatalf("the product page is not served by reviews v1 after applying virtual-service-reviews-50-v3.yaml: %v", seen)
	}
	time.Sleep(2 * time.Second) // the stray v3-only requests leave the 15 s window below
	tr = sendTraffic(t, m, 50*time.Millisecond, 400)
	time.Sleep(15 * time.Second)
	const split = `sum(rate(istio_requests_total{destination_app="reviews",reporter="destination"}[12s])) by (destination_version)`
	res, err := prom.Query(context.Background(), split, time.Now())
	tr.stop()
	if err != nil {
		t.Fatal(err)
	}
	share := map[string]float64{}
	total := 0.0
	for _, s := range res {
		share[s.Labels["destination_version"]] += s.Value
		total += s.Value
	}
	for v := range share {
		share[v] /= total
	}
	// 50/50 by weight: each between a quarter and three quarters of
	// a few hundred requests, v2 none.
	if share["v1"] < 0.25 || share["v1"] > 0.75 || share["v3"] < 0.25 || share["v3"] > 0.75 || share["v2"] > 0 {
		t.Errorf("%s = %v (shares %v); want v1 and v3 about half each, no v2", split, res, share)
	}

	// skiffd's dashboard (monitoring port, /dashboard/) from the proxies it
	// scrapes itself: productpage → reviews, over mutual TLS.
	var g dash.Graph
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(2 * time.Second) {
		tr := sendTraffic(t, m, 100*time.Millisecond, 20)
		resp, err := client.Get("http://" + m.monitoring + "/dashboard/api/graph")
		if err != nil {
			t.Fatal(err)
		}
		json.NewDecoder(resp.Body).Decode(&g)
		resp.Body.Close()
		tr.stop()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("skiffd's /dashboard/api/graph: %s", resp.Status)
		}
		found := false
		for _, e := range g.Edges {
			if strings.HasSuffix(e.Source, "/productpage-v1") && e.Target == "service:default/reviews" && e.Rate > 0 && e.MTLS {
				found = true
			}
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("skiffd's dashboard shows no productpage-v1 → reviews edge with the mTLS lock: %+v", g.Edges)
		}
	}

	// The same page in Chromium draws the lock.
	tr = sendTraffic(t, m, 200*time.Millisecond, 300)
	wd := webdriver.Start(t, webdriver.Options{Offline: true, WindowSize: "1400,900", ArtifactsDir: "dashboard"})
	wd.Navigate(t, "http://"+m.monitoring+"/dashboard/")
	wd.WaitFor(t, "an edge with the mTLS lock on skiffd's dashboard", 60*time.Second, 500*time.Millisecond,
		`return document.querySelectorAll("#graph g.edge[data-mtls=true] g.lock").length + ""`,
		func(s string) bool { return s != "" && s != "0" })
	wd.Screenshot(t, "graph-netns-mtls")
}
