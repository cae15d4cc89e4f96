package bookinfo

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// serve runs h on a fresh 127.0.0.1 port for the test's lifetime and
// returns its base URL.
func serve(t *testing.T, name string, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Serve(ctx, ln, name, h, io.Discard)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return "http://" + ln.Addr().String()
}

// closedURL is a loopback URL nothing listens on: calls to it are refused.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

func reviewsService(t *testing.T, version, ratingsURL string) string {
	t.Helper()
	h, err := NewReviews(ReviewsConfig{Version: version, Ratings: Upstream{URL: ratingsURL}, Podname: "reviews-" + version + "-0"})
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, "reviews", h)
}

func startProductPage(t *testing.T, detailsURL, reviewsURL, ratingsURL string) string {
	t.Helper()
	return serve(t, "productpage", NewProductPage(ProductPageConfig{
		Details:         Upstream{URL: detailsURL, Timeout: 3 * time.Second},
		Reviews:         Upstream{URL: reviewsURL, Timeout: 3 * time.Second},
		Ratings:         Upstream{URL: ratingsURL, Timeout: 3 * time.Second},
		ReviewsAttempts: 2,
	}))
}

type response struct {
	status int
	header http.Header
	body   string
}

func fetch(t *testing.T, c *http.Client, method, u string, hdr http.Header, form url.Values) response {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if c == nil {
		c = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, string(b)}
}

func TestProductPageShowsDetailsAndReviewsPerVersion(t *testing.T) {
	ratings := serve(t, "ratings", NewRatings())
	details := serve(t, "details", NewDetails())
	for _, tc := range []struct {
		version, color string
	}{{"v1", ""}, {"v2", "black"}, {"v3", "red"}} {
		t.Run(tc.version, func(t *testing.T) {
			pp := startProductPage(t, details, reviewsService(t, tc.version, ratings), ratings)
			r := fetch(t, nil, "GET", pp+"/productpage", nil, nil)
			if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
				t.Fatalf("status %d, content type %q", r.status, r.header.Get("Content-Type"))
			}
			for _, want := range []string{
				"The Comedy of Errors", "Book Details", "<td>1234567890</td>", "<td>PublisherA</td>",
				"<td>200</td>", "<td>paperback</td>", "<td>English</td>", "Book Reviews",
				"Reviewer1", "Reviewer2", "An extremely entertaining play by Shakespeare.",
				"reviews-" + tc.version + "-0", "Sign in",
			} {
				if !strings.Contains(r.body, want) {
					t.Errorf("page lacks %q:\n%s", want, r.body)
				}
			}
			filled := strings.Count(r.body, `class="glyphicon glyphicon-star"`)
			empty := strings.Count(r.body, `class="glyphicon glyphicon-star-empty"`)
			if tc.color == "" {
				if filled+empty != 0 || strings.Contains(r.body, "<font color") {
					t.Errorf("v1 page shows stars (%d filled, %d empty)", filled, empty)
				}
				return
			}
			// Reviewer1 has 5 stars and Reviewer2 4, out of 5 each.
			if filled != 9 || empty != 1 {
				t.Errorf("stars: %d filled and %d empty, want 9 and 1", filled, empty)
			}
			if n := strings.Count(r.body, `<font color="`+tc.color+`">`); n != 2 {
				t.Errorf("%d star groups in %s, want 2:\n%s", n, tc.color, r.body)
			}
			if strings.Contains(r.body, "on cluster") {
				t.Errorf("page names a cluster though CLUSTER_NAME is unset")
			}
		})
	}
}

// recorder is a ratings stand-in that keeps the headers of every request.
type recorder struct {
	mu      sync.Mutex
	headers []http.Header
	next    http.Handler
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec.mu.Lock()
	rec.headers = append(rec.headers, r.Header.Clone())
	rec.mu.Unlock()
	rec.next.ServeHTTP(w, r)
}

func (rec *recorder) last(t *testing.T) http.Header {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.headers) == 0 {
		t.Fatal("ratings got no request")
	}
	return rec.headers[len(rec.headers)-1]
}

func TestSignInForwardsEndUserAndTraceHeadersDownstream(t *testing.T) {
	rec := &recorder{next: NewRatings()}
	ratings := serve(t, "ratings", rec)
	details := &recorder{next: NewDetails()}
	pp := startProductPage(t, serve(t, "details", details), reviewsService(t, "v2", ratings), ratings)

	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	login := fetch(t, c, "POST", pp+"/login", http.Header{"Referer": {pp + "/productpage"}}, url.Values{"username": {"jason"}, "passwd": {"x"}})
	if login.status != 200 || !strings.Contains(login.body, "jason") || !strings.Contains(login.body, "Sign out") {
		t.Fatalf("after sign-in the page (status %d) does not show jason signed in:\n%s", login.status, login.body)
	}
	trace := http.Header{
		"X-Request-Id":  {"req-42"},
		"X-B3-Traceid":  {"80f198ee56343ba864fe8b2a57d3eff7"},
		"X-B3-Spanid":   {"e457b5a2e4d86bd1"},
		"X-B3-Sampled":  {"1"},
		"B3":            {"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"},
		"Traceparent":   {"00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01"},
		"Authorization": {"Bearer token"},
	}
	if r := fetch(t, c, "GET", pp+"/productpage", trace, nil); !strings.Contains(r.body, `<font color="black">`) {
		t.Fatalf("no black stars on the page:\n%s", r.body)
	}
	for name, got := range map[string]http.Header{"ratings (via reviews)": rec.last(t), "details": details.last(t)} {
		if v := got.Get("end-user"); v != "jason" {
			t.Errorf("%s got end-user %q, want jason", name, v)
		}
		for k, v := range trace {
			if got.Get(k) != v[0] {
				t.Errorf("%s got %s %q, want %q", name, k, got.Get(k), v[0])
			}
		}
	}

	logout := fetch(t, c, "GET", pp+"/logout", http.Header{"Referer": {pp + "/productpage"}}, nil)
	if !strings.Contains(logout.body, "Sign in") || strings.Contains(logout.body, "jason") {
		t.Errorf("after sign-out the page still shows jason:\n%s", logout.body)
	}
	if v := rec.last(t).Values("end-user"); len(v) != 0 {
		t.Errorf("after sign-out ratings still got end-user %q", v)
	}
}

func TestDetailsDownShowsIstiosText(t *testing.T) {
	ratings := serve(t, "ratings", NewRatings())
	pp := startProductPage(t, closedURL(t), reviewsService(t, "v1", ratings), ratings)
	r := fetch(t, nil, "GET", pp+"/productpage", nil, nil)
	if r.status != 200 {
		t.Errorf("page status %d, want 200 as Istio's productpage", r.status)
	}
	if !strings.Contains(r.body, DetailsUnavailable) || strings.Contains(r.body, "Book Details") {
		t.Errorf("page does not show %q:\n%s", DetailsUnavailable, r.body)
	}
	if !strings.Contains(r.body, "Reviewer1") {
		t.Errorf("reviews missing while only details is down")
	}
	api := fetch(t, nil, "GET", pp+"/api/v1/products/0", nil, nil)
	if api.status != 500 || api.body != `{"error":"`+DetailsUnavailable+`"}` {
		t.Errorf("API: %d %s", api.status, api.body)
	}
}

// flaky answers with fail for its first failures requests, then passes to next.
type flaky struct {
	attempts atomic.Int32
	failures int32
	fail     int
	next     http.Handler
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.attempts.Add(1) <= f.failures {
		http.Error(w, "injected", f.fail)
		return
	}
	f.next.ServeHTTP(w, r)
}

func TestReviewsGetOneMoreTry(t *testing.T) {
	ratings := serve(t, "ratings", NewRatings())
	details := serve(t, "details", NewDetails())
	real, err := NewReviews(ReviewsConfig{Version: "v3", Ratings: Upstream{URL: ratings}})
	if err != nil {
		t.Fatal(err)
	}

	once := &flaky{failures: 1, fail: 503, next: real}
	r := fetch(t, nil, "GET", startProductPage(t, details, serve(t, "reviews", once), ratings)+"/productpage", nil, nil)
	if got := once.attempts.Load(); got != 2 {
		t.Errorf("reviews got %d attempts, want 2", got)
	}
	if !strings.Contains(r.body, `<font color="red">`) || strings.Contains(r.body, ReviewsUnavailable) {
		t.Errorf("the retry did not recover the reviews:\n%s", r.body)
	}

	always := &flaky{failures: 100, fail: 503, next: real}
	pp := startProductPage(t, details, serve(t, "reviews", always), ratings)
	r = fetch(t, nil, "GET", pp+"/productpage", nil, nil)
	if got := always.attempts.Load(); got != 2 {
		t.Errorf("failing reviews got %d attempts, want 2", got)
	}
	if r.status != 200 || !strings.Contains(r.body, ReviewsUnavailable) || !strings.Contains(r.body, "Book Details") {
		t.Errorf("page (status %d) does not show %q next to the details:\n%s", r.status, ReviewsUnavailable, r.body)
	}
	m := fetch(t, nil, "GET", pp+"/metrics", nil, nil)
	for _, want := range []string{
		`request_result_total{destination_app="details",response_code="200"} 1` + "\n",
		`request_result_total{destination_app="reviews",response_code="503"} 2` + "\n",
	} {
		if !strings.Contains(m.body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, m.body)
		}
	}
	api := fetch(t, nil, "GET", pp+"/api/v1/products/0/reviews", nil, nil)
	if api.status != 503 || api.body != `{"error":"`+ReviewsUnavailable+`"}` {
		t.Errorf("API: %d %s, want the last upstream status 503 and the error", api.status, api.body)
	}
}

// hang is an upstream that answers only when the client gives up or the
// test ends, counting attempts.
type hang struct {
	attempts atomic.Int32
	stop     chan struct{}
}

func (h *hang) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.attempts.Add(1)
	select {
	case <-r.Context().Done():
	case <-h.stop:
	}
}

func TestReviewsTimeoutPerAttempt(t *testing.T) {
	ratings := serve(t, "ratings", NewRatings())
	slow := &hang{stop: make(chan struct{})}
	t.Cleanup(func() { close(slow.stop) })
	pp := serve(t, "productpage", NewProductPage(ProductPageConfig{
		Details:         Upstream{URL: serve(t, "details", NewDetails()), Timeout: 3 * time.Second},
		Reviews:         Upstream{URL: serve(t, "reviews", slow), Timeout: 300 * time.Millisecond},
		Ratings:         Upstream{URL: ratings, Timeout: 3 * time.Second},
		ReviewsAttempts: 2,
	}))
	start := time.Now()
	r := fetch(t, nil, "GET", pp+"/productpage", nil, nil)
	took := time.Since(start)
	if !strings.Contains(r.body, ReviewsUnavailable) {
		t.Errorf("page does not show %q", ReviewsUnavailable)
	}
	if slow.attempts.Load() != 2 || took < 600*time.Millisecond || took > 5*time.Second {
		t.Errorf("%d attempts in %v, want 2 attempts of 300ms each", slow.attempts.Load(), took)
	}
}

// TestRatingsTimeoutsAreIstios runs ratings 3 s slow: reviews v3 (2.5 s)
// gives up and reports ratings unavailable, v2 (10 s) waits and shows stars.
func TestRatingsTimeoutsAreIstios(t *testing.T) {
	slowRatings := serve(t, "ratings", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(3 * time.Second):
			NewRatings().ServeHTTP(w, r)
		case <-r.Context().Done():
		}
	}))
	var wg sync.WaitGroup
	results := map[string]ProductReviews{}
	var mu sync.Mutex
	for _, v := range []string{"v2", "v3"} {
		rv := reviewsService(t, v, slowRatings)
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			resp, err := http.Get(rv + "/reviews/0")
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var pr ProductReviews
			if err := json.NewDecoder(resp.Body).Decode(&pr); err != nil {
				t.Error(err)
			}
			t.Logf("reviews %s answered in %v", v, time.Since(start))
			mu.Lock()
			results[v] = pr
			mu.Unlock()
		}()
	}
	wg.Wait()
	if got := results["v3"].Reviews; len(got) != 2 || got[0].Rating == nil || got[0].Rating.Error != RatingsUnavailable || got[1].Rating.Error != RatingsUnavailable {
		t.Errorf("v3 with ratings 3s slow: %+v, want both ratings %q", got, RatingsUnavailable)
	}
	if got := results["v2"].Reviews; len(got) != 2 || got[0].Rating == nil || *got[0].Rating != (Rating{Stars: 5, Color: "black"}) || *got[1].Rating != (Rating{Stars: 4, Color: "black"}) {
		t.Errorf("v2 with ratings 3s slow: %+v, want 5 and 4 black stars", got)
	}
}

func TestRatingsDownShownByReviews(t *testing.T) {
	pp := startProductPage(t, serve(t, "details", NewDetails()), reviewsService(t, "v2", closedURL(t)), closedURL(t))
	r := fetch(t, nil, "GET", pp+"/productpage", nil, nil)
	if n := strings.Count(r.body, RatingsUnavailable); n != 2 {
		t.Errorf("%q shown %d times, want once per review:\n%s", RatingsUnavailable, n, r.body)
	}
	if strings.Contains(r.body, `class="glyphicon`) {
		t.Errorf("stars shown while ratings is down")
	}
	api := fetch(t, nil, "GET", pp+"/api/v1/products/0/ratings", nil, nil)
	if api.status != 500 || api.body != `{"error":"`+RatingsUnavailableForBook+`"}` {
		t.Errorf("ratings API: %d %s", api.status, api.body)
	}
}

func TestJSONAnswers(t *testing.T) {
	ratings := serve(t, "ratings", NewRatings())
	details := serve(t, "details", NewDetails())
	reviews := serve(t, "reviews", mustReviews(t, ReviewsConfig{Version: "v1", Podname: "reviews-v1-abc", Clustername: "east"}))
	pp := startProductPage(t, details, reviews, ratings)
	for _, tc := range []struct {
		url    string
		status int
		body   string
	}{
		{details + "/details/0", 200, `{"id":0,"author":"William Shakespeare","year":1595,"type":"paperback","pages":200,"publisher":"PublisherA","language":"English","ISBN-10":"1234567890","ISBN-13":"123-1234567890"}`},
		{details + "/details/abc", 400, `{"error":"please provide numeric product id"}`},
		{details + "/health", 200, `{"status":"Details is healthy"}`},
		{ratings + "/ratings/7", 200, `{"id":7,"ratings":{"Reviewer1":5,"Reviewer2":4}}`},
		{ratings + "/ratings/x", 400, `{"error":"please provide numeric product id"}`},
		{ratings + "/health", 200, `{"status":"Ratings is healthy"}`},
		{reviews + "/reviews/0", 200, `{"id":"0","podname":"reviews-v1-abc","clustername":"east","reviews":[{"reviewer":"Reviewer1","text":"An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"},{"reviewer":"Reviewer2","text":"Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare."}]}`},
		{reviews + "/health", 200, `{"status":"Reviews is healthy"}`},
		{pp + "/health", 200, `Product page is healthy`},
		{pp + "/api/v1/products/3", 200, `{"id":3,"author":"William Shakespeare","year":1595,"type":"paperback","pages":200,"publisher":"PublisherA","language":"English","ISBN-10":"1234567890","ISBN-13":"123-1234567890"}`},
		{pp + "/api/v1/products/0/ratings", 200, `{"id":0,"ratings":{"Reviewer1":5,"Reviewer2":4}}`},
	} {
		r := fetch(t, nil, "GET", tc.url, nil, nil)
		if r.status != tc.status || r.body != tc.body {
			t.Errorf("GET %s: %d %s\nwant %d %s", tc.url, r.status, r.body, tc.status, tc.body)
		}
	}
	var list []Product
	r := fetch(t, nil, "GET", pp+"/api/v1/products", nil, nil)
	if err := json.Unmarshal([]byte(r.body), &list); err != nil || len(list) != 1 || list[0].Title != "The Comedy of Errors" {
		t.Errorf("products: %s (%v)", r.body, err)
	}
	if r := fetch(t, nil, "GET", pp+"/", nil, nil); r.status != 200 || !strings.Contains(r.body, `href="/productpage?u=normal"`) {
		t.Errorf("index: %d %s", r.status, r.body)
	}
	if r := fetch(t, nil, "GET", pp+"/productpage", nil, nil); !strings.Contains(r.body, "reviews-v1-abc</u> on cluster <u>east") {
		t.Errorf("page does not say which pod and cluster served the reviews:\n%s", r.body)
	}
}

func mustReviews(t *testing.T, cfg ReviewsConfig) http.Handler {
	t.Helper()
	h, err := NewReviews(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestReviewsRejectsUnknownVersion(t *testing.T) {
	_, err := NewReviews(ReviewsConfig{Version: "v4"})
	if err == nil || !strings.Contains(err.Error(), `"v4"`) || !strings.Contains(err.Error(), "v1, v2 or v3") {
		t.Errorf("error %v does not name the version and the choices", err)
	}
}

func TestServiceURL(t *testing.T) {
	env := map[string]string{"REVIEWS_HOSTNAME": "127.0.0.1", "REVIEWS_SERVICE_PORT": "18080", "SERVICES_DOMAIN": ""}
	if got := ServiceURL("reviews", func(k string) string { return env[k] }); got != "http://127.0.0.1:18080" {
		t.Errorf("got %s", got)
	}
	env = map[string]string{"SERVICES_DOMAIN": "default.svc.cluster.local"}
	if got := ServiceURL("details", func(k string) string { return env[k] }); got != "http://details.default.svc.cluster.local:9080" {
		t.Errorf("got %s", got)
	}
}

func TestLogOneLinePerRequest(t *testing.T) {
	var mu sync.Mutex
	var buf strings.Builder
	w := writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return buf.Write(p) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, "details", NewDetails(), w) }()
	base := "http://" + ln.Addr().String()
	fetch(t, nil, "GET", base+"/details/1", http.Header{"X-Request-Id": {"abc"}}, nil)
	fetch(t, nil, "GET", base+"/details/x", nil, nil)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve after its context ended: %v", err)
	}
	mu.Lock()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	mu.Unlock()
	if len(lines) != 2 || !strings.Contains(lines[0], `details GET /details/1 200`) || !strings.Contains(lines[0], `x-request-id="abc"`) ||
		!strings.Contains(lines[1], `details GET /details/x 400`) {
		t.Errorf("log:\n%s", strings.Join(lines, "\n"))
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
