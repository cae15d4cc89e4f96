package hcm

import (
	"bytes"
	"hash/crc32"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func actionRoute(prefix string, a *routev3.RouteAction) *routev3.Route {
	return &routev3.Route{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		Action: &routev3.Route_Route{Route: a},
	}
}

func clusterAction(cluster string) *routev3.RouteAction {
	return &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}
}

func retryPolicy(on string, n uint32) *routev3.RetryPolicy {
	return &routev3.RetryPolicy{RetryOn: on, NumRetries: wrapperspb.UInt32(n),
		RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: dur(time.Millisecond)}}
}

// failing answers 503 to its first n requests, then echoes the body.
func failing(n int64, count *atomic.Int64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Attempt", r.Header.Get("X-Envoy-Attempt-Count"))
		if count.Add(1) <= n {
			w.WriteHeader(503)
			io.WriteString(w, "busy")
			return
		}
		w.Write(b)
	}
}

func TestRetryOn5xxReplaysBody(t *testing.T) {
	e := newEnv(t)
	var count atomic.Int64
	e.upstream("flaky", failing(2, &count))
	a := clusterAction("flaky")
	a.RetryPolicy = retryPolicy("5xx", 2)
	e.start(hcmConfig(t, simpleRoutes(actionRoute("/", a))))

	req, _ := http.NewRequest("POST", e.url("/"), strings.NewReader("payload-to-replay"))
	resp := e.do(req)
	body := readAll(t, resp)
	resp.Body.Close()
	if resp.StatusCode != 200 || body != "payload-to-replay" {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
	if count.Load() != 3 {
		t.Errorf("upstream saw %d attempts, want 3", count.Load())
	}
	if got := e.counter("cluster.flaky.upstream_rq_retry"); got != 2 {
		t.Errorf("upstream_rq_retry %d", got)
	}
	if got := e.counter("cluster.flaky.upstream_rq_retry_success"); got != 1 {
		t.Errorf("upstream_rq_retry_success %d", got)
	}
	if got := e.counter("cluster.flaky.upstream_rq_5xx"); got != 2 {
		t.Errorf("upstream_rq_5xx %d", got)
	}
	if held := e.cluster("flaky").retriesHeld.Load(); held != 0 {
		t.Errorf("%d max_retries slots still held after the request", held)
	}
}

func TestRetryLimitExceededReturnsLastResponse(t *testing.T) {
	e := newEnv(t)
	var count atomic.Int64
	e.upstream("down", failing(100, &count))
	a := clusterAction("down")
	a.RetryPolicy = retryPolicy("gateway-error", 1)
	e.start(hcmConfig(t, simpleRoutes(actionRoute("/", a))))
	resp, body := e.get("/")
	if resp.StatusCode != 503 || body != "busy" || resp.Header.Get("X-Skiff-Response-Flags") != "URX" {
		t.Fatalf("status %d body %q flags %q", resp.StatusCode, body, resp.Header.Get("X-Skiff-Response-Flags"))
	}
	if count.Load() != 2 {
		t.Errorf("attempts %d, want 2", count.Load())
	}
	if e.counter("cluster.down.upstream_rq_retry_limit_exceeded") != 1 {
		t.Error("upstream_rq_retry_limit_exceeded not counted")
	}
}

func TestRetryFromRequestHeadersAndAttemptCount(t *testing.T) {
	e := newEnv(t)
	var count atomic.Int64
	e.upstream("flaky", failing(1, &count))
	rc := simpleRoutes(actionRoute("/", clusterAction("flaky")))
	rc.VirtualHosts[0].IncludeRequestAttemptCount = true
	e.start(hcmConfig(t, rc))
	resp, _ := e.get("/")
	if resp.StatusCode != 503 {
		t.Fatalf("without retry headers: %d, want 503", resp.StatusCode)
	}
	resp, _ = e.get("/", "X-Envoy-Retry-On", "5xx", "X-Envoy-Max-Retries", "3")
	if resp.StatusCode != 200 {
		t.Fatalf("with x-envoy-retry-on: %d, want 200", resp.StatusCode)
	}
	count.Store(0)
	resp, _ = e.get("/", "X-Envoy-Retry-On", "5xx")
	if resp.StatusCode != 200 || resp.Header.Get("X-Attempt") != "2" {
		t.Fatalf("attempt count header %q status %d", resp.Header.Get("X-Attempt"), resp.StatusCode)
	}
}

func TestRetryOverflowAndPreviousHosts(t *testing.T) {
	e := newEnv(t)
	var bad, good atomic.Int64
	e.upstream("pair", failing(1000, &bad))
	e.upstream("pair", failing(0, &good))
	a := clusterAction("pair")
	a.RetryPolicy = retryPolicy("5xx", 1)
	a.RetryPolicy.RetryHostPredicate = []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts"}}
	noPred := clusterAction("pair")
	noPred.RetryPolicy = retryPolicy("5xx", 1)
	e.cluster("pair").sticky = true // always the failing host first
	e.start(hcmConfig(t, simpleRoutes(actionRoute("/plain", noPred), actionRoute("/", a))))
	if resp, _ := e.get("/plain"); resp.StatusCode != 503 {
		t.Fatalf("without previous_hosts the retry goes to the same host: got %d, want 503", resp.StatusCode)
	}
	for i := 0; i < 4; i++ {
		if resp, _ := e.get("/"); resp.StatusCode != 200 {
			t.Fatalf("request %d with previous_hosts: %d", i, resp.StatusCode)
		}
	}
	if bad.Load() != 6 || good.Load() != 4 {
		t.Fatalf("failing host tried %d times (want 6), good host %d (want 4)", bad.Load(), good.Load())
	}
	e.cluster("pair").maxRetries = -1
	if resp, body := e.get("/"); resp.StatusCode != 503 || body != "busy" {
		t.Errorf("retry breaker open: %d %q, want the upstream's 503", resp.StatusCode, body)
	}
	if e.counter("cluster.pair.upstream_rq_retry_overflow") != 1 {
		t.Errorf("upstream_rq_retry_overflow %d", e.counter("cluster.pair.upstream_rq_retry_overflow"))
	}
}

func slow(d time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "late")
	}
}

func TestRouteTimeoutAndHeaderOverride(t *testing.T) {
	e := newEnv(t)
	e.upstream("slow", slow(3*time.Second))
	a := clusterAction("slow")
	a.Timeout = dur(200 * time.Millisecond)
	e.start(hcmConfig(t, simpleRoutes(actionRoute("/", a))))

	start := time.Now()
	resp, body := e.get("/")
	el := time.Since(start)
	if resp.StatusCode != 504 || body != "upstream request timeout" || resp.Header.Get("X-Skiff-Response-Flags") != "UT" {
		t.Fatalf("status %d body %q flags %q", resp.StatusCode, body, resp.Header.Get("X-Skiff-Response-Flags"))
	}
	if el < 180*time.Millisecond || el > 2*time.Second {
		t.Errorf("timed out after %v, want about 200ms", el)
	}
	if e.counter("cluster.slow.upstream_rq_timeout") != 1 {
		t.Error("upstream_rq_timeout not counted")
	}
	start = time.Now()
	resp, _ = e.get("/", "X-Envoy-Upstream-Rq-Timeout-Ms", "50")
	el = time.Since(start)
	if resp.StatusCode != 504 || el > 180*time.Millisecond+time.Second {
		t.Errorf("header timeout: %d after %v", resp.StatusCode, el)
	}
}

func TestPerTryTimeoutRetries(t *testing.T) {
	e := newEnv(t)
	var n atomic.Int64
	e.upstream("sometimes", func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			slow(3*time.Second)(w, r)
			return
		}
		io.WriteString(w, "fast")
	})
	a := clusterAction("sometimes")
	a.Timeout = dur(5 * time.Second)
	a.RetryPolicy = retryPolicy("5xx", 1)
	a.RetryPolicy.PerTryTimeout = dur(150 * time.Millisecond)
	e.start(hcmConfig(t, simpleRoutes(actionRoute("/", a))))
	start := time.Now()
	resp, body := e.get("/")
	if resp.StatusCode != 200 || body != "fast" {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
	if el := time.Since(start); el < 140*time.Millisecond || el > 2*time.Second {
		t.Errorf("took %v, want about one per-try timeout", el)
	}
	if e.counter("cluster.sometimes.upstream_rq_per_try_timeout") != 1 {
		t.Error("upstream_rq_per_try_timeout not counted")
	}
	if e.counter("cluster.sometimes.upstream_rq_retry") != 1 {
		t.Error("upstream_rq_retry not counted")
	}
}

func TestLargeBodyStreamsAndIsNotRetried(t *testing.T) {
	e := newEnv(t)
	var n atomic.Int64
	e.upstream("up", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if n.Add(1) == 1 && r.URL.Path == "/fail-first" {
			w.WriteHeader(503)
			return
		}
		w.Header().Set("X-Len", strconv.Itoa(len(b)))
		w.Header().Set("X-Sum", strconv.Itoa(int(crc32.ChecksumIEEE(b))))
	})
	a := clusterAction("up")
	a.RetryPolicy = retryPolicy("5xx", 2)
	e.start(hcmConfig(t, simpleRoutes(actionRoute("/", a))))
	big := make([]byte, 3<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	h2 := newH2CClient()
	defer h2.CloseIdleConnections()
	for _, c := range []*http.Client{e.client, {Transport: h2}} {
		resp, err := c.Post(e.url("/ok"), "application/octet-stream", bytes.NewReader(big))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get("X-Len") != strconv.Itoa(len(big)) || resp.Header.Get("X-Sum") != strconv.Itoa(int(crc32.ChecksumIEEE(big))) {
			t.Fatalf("%s: 3 MB body arrived as %s bytes (sum %s)", resp.Proto, resp.Header.Get("X-Len"), resp.Header.Get("X-Sum"))
		}
	}
	// Over the replay buffer: a retriable failure is not retried.
	n.Store(0)
	req, _ := http.NewRequest("POST", e.url("/fail-first"), bytes.NewReader(big))
	resp := e.do(req)
	resp.Body.Close()
	if resp.StatusCode != 503 || n.Load() != 1 {
		t.Errorf("status %d after %d attempts: a body over the buffer limit must not be replayed", resp.StatusCode, n.Load())
	}
}

func TestRouteTimeoutStartsAfterRequestBody(t *testing.T) {
	e := newEnv(t)
	e.upstream("up", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})
	a := clusterAction("up")
	a.Timeout = dur(300 * time.Millisecond)
	e.start(hcmConfig(t, simpleRoutes(actionRoute("/", a))))
	// The upload takes ~600ms, twice the route timeout; Envoy's timer
	// starts when the request is complete, so the request succeeds.
	pr, pw := io.Pipe()
	go func() {
		for i := 0; i < 6; i++ {
			pw.Write([]byte("chunk;"))
			time.Sleep(100 * time.Millisecond)
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", e.url("/"), pr)
	resp := e.do(req)
	body := readAll(t, resp)
	resp.Body.Close()
	if resp.StatusCode != 200 || body != strings.Repeat("chunk;", 6) {
		t.Fatalf("slow upload: %d %q", resp.StatusCode, body)
	}
}
