package bookinfo

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/internal/testing/bookinfotest"
)

// TestBookinfoLoopback replays the tasks on a mesh without traffic
// capture (per-pod loopback addresses, HTTP_PROXY), which runs anywhere.
func TestBookinfoLoopback(t *testing.T) {
	t.Parallel()
	m := startMesh(t, "loopback", "--xds-addr", "127.0.0.1:0")
	replayTasks(t, m)
}

// replayTasks runs Istio's Bookinfo tasks in the order of Istio's docs,
// each with its files unchanged, its observations and its cleanup. First
// Bookinfo's own setup, which every task assumes: the way in
// (networking/bookinfo-gateway.yaml, applied over the local mesh's copy)
// and the default destination rules naming the versions.
func replayTasks(t *testing.T, m *mesh) {
	m.Apply(t, sample(t, "networking/bookinfo-gateway.yaml"))
	m.Apply(t, sample(t, "networking/destination-rule-all.yaml"))
	t.Run("Ingress", func(t *testing.T) { ingress(t, m) })
	t.Run("RequestRouting", func(t *testing.T) { requestRouting(t, m) })
	t.Run("FaultInjection", func(t *testing.T) { faultInjection(t, m) })
	t.Run("TrafficShifting", func(t *testing.T) { trafficShifting(t, m) })
	t.Run("RequestTimeouts", func(t *testing.T) { requestTimeouts(t, m) })
	t.Run("GatewayAPI", func(t *testing.T) { gatewayAPI(t, m) })
	t.Run("Chromium", func(t *testing.T) { chromium(t, m) })
}

// Through bookinfo-gateway.yaml the ingress gateway serves what its
// VirtualService routes: the product page (Istio's docs check its
// <title>) and the products API; nothing else.
func ingress(t *testing.T, m *mesh) {
	r := newReader(m.ingress)
	r.Until(t, 20*time.Second, 1, "the product page through bookinfo-gateway.yaml", func(p page) bool { return p.Reviews != "" })
	body, status := get(t, r, "/api/v1/products")
	if status != 200 || !strings.Contains(body, `"title":"The Comedy of Errors"`) {
		t.Errorf("GET /api/v1/products through the ingress: HTTP %d %s; want the product list", status, body)
	}
	if _, status := get(t, r, "/ratings/0"); status != 404 {
		t.Errorf("GET /ratings/0 through the ingress: HTTP %d; want 404, bookinfo-gateway.yaml routes no such path", status)
	}
}

func get(t *testing.T, r *bookinfotest.Reader, path string) (string, int) {
	t.Helper()
	resp, err := r.Get(path)
	if err != nil {
		t.Fatalf("GET %s through the ingress: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode
}

// Request Routing: virtual-service-all-v1.yaml sends everyone to reviews
// v1 (no stars); virtual-service-reviews-test-v2.yaml sends jason to v2
// (black stars) by the end-user header productpage sets, everyone else
// still to v1.
func requestRouting(t *testing.T, m *mesh) {
	allV1 := sample(t, "networking/virtual-service-all-v1.yaml")
	m.Apply(t, allV1)
	t.Cleanup(func() { m.Delete(t, allV1) })
	anon := newReader(m.ingress)
	anon.Until(t, 20*time.Second, 10, "reviews v1", v1)
	anon.Each(t, 20, "reviews v1 without stars, as all-v1 routes", v1)

	m.Apply(t, sample(t, "networking/virtual-service-reviews-test-v2.yaml"))
	jason := newReader(m.ingress)
	jason.SignIn(t, "jason")
	jason.Until(t, 20*time.Second, 1, "reviews v2 with black stars for jason", v2)
	jason.Each(t, 10, "reviews v2 with black stars for jason", v2)
	anon.Each(t, 10, "reviews v1 for a reader who has not signed in", v1)
	other := newReader(m.ingress)
	other.SignIn(t, "mary")
	other.Each(t, 10, "reviews v1 for another user", v1)
}

// Fault Injection: with all-v1 and reviews-test-v2, a 7 s delay toward
// ratings for jason exceeds productpage's 3 s timeout toward reviews (one
// retry: about 6 s) before reviews v2's 10 s one, so jason sees the
// reviews-unavailable text; an abort for jason shows "Ratings service is
// currently unavailable".
func faultInjection(t *testing.T, m *mesh) {
	allV1 := sample(t, "networking/virtual-service-all-v1.yaml")
	m.Apply(t, allV1)
	t.Cleanup(func() { m.Delete(t, allV1) })
	m.Apply(t, sample(t, "networking/virtual-service-reviews-test-v2.yaml"))
	jason := newReader(m.ingress)
	jason.SignIn(t, "jason")
	jason.Until(t, 20*time.Second, 10, "reviews v2 for jason", v2)

	m.Apply(t, sample(t, "networking/virtual-service-ratings-test-delay.yaml"))
	p := jason.Until(t, 40*time.Second, 1, "the reviews-unavailable text under the 7 s delay", func(p page) bool {
		return p.Reviews == "" && containsText(p, reviewsUnavailable)
	})
	// Two tries of 3 s each: well under the 7 s delay, well over one try.
	if p.Elapsed < 5500*time.Millisecond || p.Elapsed >= 7*time.Second {
		t.Errorf("under the 7 s delay the page took %s, want about 6 s (productpage's 3 s timeout toward reviews, tried twice)", p.Elapsed)
	}
	anon := newReader(m.ingress)
	if p, err := anon.ProductPage(); err != nil || !v1(p) || p.Elapsed > 2*time.Second {
		t.Errorf("the delay is for jason only, yet another reader got: %v %s", err, p)
	}

	m.Apply(t, sample(t, "networking/virtual-service-ratings-test-abort.yaml"))
	abort := func(p page) bool { return p.Reviews == "v2" && containsText(p, ratingsUnavailable) }
	jason.Until(t, 40*time.Second, 1, "\""+ratingsUnavailable+"\" under the abort", abort)
	// A fresh read: the first may have begun under the delay.
	if p, err := jason.ProductPage(); err != nil || !abort(p) || p.Elapsed > 2*time.Second || p.Stars != 0 {
		t.Errorf("under the abort the page should come at once, without stars, saying %q: %v %s", ratingsUnavailable, err, p)
	}
	anon.Each(t, 5, "reviews v1 for another reader under jason's abort", v1)
}

// Traffic Shifting: all-v1, then 50/50 between v1 and v3, then all v3.
func trafficShifting(t *testing.T, m *mesh) {
	allV1 := sample(t, "networking/virtual-service-all-v1.yaml")
	m.Apply(t, allV1)
	t.Cleanup(func() { m.Delete(t, allV1) })
	r := newReader(m.ingress)
	r.Until(t, 20*time.Second, 10, "reviews v1", v1)
	r.Each(t, 10, "reviews v1", v1)

	m.Apply(t, sample(t, "networking/virtual-service-reviews-50-v3.yaml"))
	r.Until(t, 20*time.Second, 1, "reviews v3 with red stars once the 50/50 split is in force", v3)
	fiftyFifty(t, r)

	m.Apply(t, sample(t, "networking/virtual-service-reviews-v3.yaml"))
	r.Until(t, 20*time.Second, 10, "reviews v3 only", v3)
	r.Each(t, 20, "reviews v3 with red stars for everyone", v3)
}

// fiftyFifty reads the page 100 times and checks the v1/v3 split. With
// p = 0.5 and N = 100 the count of v1 has mean 50 and standard deviation
// 5; accepting 30..70 (4 standard deviations) fails a correct 50/50 split
// about once in 15,000 runs, and a 90/10 or all-one-way split always.
func fiftyFifty(t *testing.T, r *bookinfotest.Reader) {
	t.Helper()
	const n = 100
	count := map[string]int{}
	for i := range n {
		p, err := r.ProductPage()
		switch {
		case err != nil:
			t.Fatalf("read %d of %d under the 50/50 split: %v", i+1, n, err)
		case v1(p), v3(p):
			count[p.Reviews]++
		default:
			t.Fatalf("read %d of %d under the 50/50 split shows neither v1 nor v3 with red stars: %s", i+1, n, p)
		}
	}
	if count["v1"] < 30 || count["v1"] > 70 {
		t.Errorf("50/50 split over %d reads: v1 %d, v3 %d; want each within 30..70", n, count["v1"], count["v3"])
	}
	t.Logf("50/50 split over %d reads: v1 %d, v3 %d", n, count["v1"], count["v3"])
}

// Request Timeouts, with the YAML the task gives inline: reviews to v2, a
// 2 s delay toward ratings (the page comes in about 2 s, with stars), then
// a 0.5 s timeout on reviews: the page comes in about 1 s (productpage
// tries reviews twice) with the reviews-unavailable text.
func requestTimeouts(t *testing.T, m *mesh) {
	reviews := m.ApplyInline(t, "reviews-v2.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
    - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v2
`)
	t.Cleanup(func() { m.Delete(t, reviews) })
	r := newReader(m.ingress)
	r.Until(t, 20*time.Second, 10, "reviews v2", v2)

	ratings := m.ApplyInline(t, "ratings-delay.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - fault:
      delay:
        percentage:
          value: 100
        fixedDelay: 2s
    route:
    - destination:
        host: ratings
        subset: v1
`)
	t.Cleanup(func() { m.Delete(t, ratings) })
	p := r.Until(t, 20*time.Second, 1, "reviews v2 after the 2 s delay", func(p page) bool {
		return v2(p) && p.Elapsed >= 2*time.Second
	})
	if p.Elapsed >= 3*time.Second {
		t.Errorf("with the 2 s ratings delay the page took %s, want about 2 s", p.Elapsed)
	}

	m.ApplyInline(t, "reviews-timeout.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v2
    timeout: 0.5s
`)
	unavailable := func(p page) bool { return p.Reviews == "" && containsText(p, reviewsUnavailable) }
	r.Until(t, 20*time.Second, 1, "the reviews-unavailable text under the 0.5 s timeout", unavailable)
	// A fresh read, wholly under the timeout.
	p, err := r.ProductPage()
	if err != nil || !unavailable(p) || p.Elapsed < 950*time.Millisecond || p.Elapsed >= 1900*time.Millisecond {
		t.Errorf("under the 0.5 s reviews timeout the page should come in about 1 s (0.5 s, tried twice by productpage) saying %q: %v %s", reviewsUnavailable, err, p)
	}
}

// The Gateway API variants: gateway-api/bookinfo-gateway.yaml makes a
// Gateway whose own URL (skiff status lists it) serves the product page;
// then, through it, with HTTPRoutes on the reviews Service and the
// per-version Services of platform/kube/bookinfo-versions.yaml as
// backends, request routing (route-reviews-v1, then jason to v2 by
// header) and traffic shifting (route-reviews-v1, route-reviews-50-v3,
// route-reviews-v3).
func gatewayAPI(t *testing.T, m *mesh) {
	m.Apply(t, sample(t, "gateway-api/bookinfo-gateway.yaml"))
	gw, status := "", ""
	for deadline := time.Now().Add(30 * time.Second); gw == "" && time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		gw, status = m.gatewayURL(t, "bookinfo-gateway")
	}
	if gw == "" {
		t.Fatalf("skiff status -o json lists no URL for the Gateway API Gateway default/bookinfo-gateway within 30 s; status:\n%s", status)
	}
	r := newReader(gw)
	r.Until(t, 20*time.Second, 1, "the product page through the Gateway API Gateway at "+gw, func(p page) bool { return p.Reviews != "" })

	versions := sample(t, "platform/kube/bookinfo-versions.yaml")
	m.Apply(t, versions)
	t.Cleanup(func() { m.Delete(t, versions) })
	route := sample(t, "gateway-api/route-reviews-v1.yaml")
	m.Apply(t, route)
	// The task's cleanup: kubectl delete httproute reviews.
	t.Cleanup(func() { m.Delete(t, route) })
	r.Until(t, 20*time.Second, 10, "reviews v1 by the HTTPRoute", v1)
	r.Each(t, 10, "reviews v1 by the HTTPRoute", v1)

	// Request routing's Gateway API variant gives jason's route inline.
	m.ApplyInline(t, "route-reviews-jason-v2.yaml", `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: reviews
    port: 9080
  rules:
  - matches:
    - headers:
      - name: end-user
        value: jason
    backendRefs:
    - name: reviews-v2
      port: 9080
  - backendRefs:
    - name: reviews-v1
      port: 9080
`)
	jason := newReader(gw)
	jason.SignIn(t, "jason")
	jason.Until(t, 20*time.Second, 1, "reviews v2 for jason by the HTTPRoute's header match", v2)
	jason.Each(t, 10, "reviews v2 for jason by the HTTPRoute's header match", v2)
	r.Each(t, 10, "reviews v1 for a reader who has not signed in, by the HTTPRoute", v1)

	// Traffic shifting's Gateway API variant starts from route-reviews-v1.
	m.Apply(t, route)
	jason.Until(t, 20*time.Second, 1, "reviews v1 for jason again under route-reviews-v1.yaml", v1)

	m.Apply(t, sample(t, "gateway-api/route-reviews-50-v3.yaml"))
	r.Until(t, 20*time.Second, 1, "reviews v3 once the HTTPRoute's 50/50 split is in force", v3)
	fiftyFifty(t, r)

	m.Apply(t, sample(t, "gateway-api/route-reviews-v3.yaml"))
	r.Until(t, 20*time.Second, 10, "reviews v3 only by the HTTPRoute", v3)
	r.Each(t, 20, "reviews v3 with red stars by the HTTPRoute", v3)
}

func containsText(p page, s string) bool {
	return p.Status == 200 && strings.Contains(p.Body, s)
}
