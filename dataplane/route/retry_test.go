package route

import (
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

func TestParseRetryOn(t *testing.T) {
	on, unknown := ParseRetryOn(" 5xx ,gateway-error,,reset,connect-failure,retriable-4xx,refused-stream,retriable-status-codes,retriable-headers,envoy-ratelimited,bogus")
	want := Retry5xx | RetryGatewayError | RetryReset | RetryConnectFailure | RetryRetriable4xx | RetryRefusedStream | RetryRetriableStatusCodes | RetryRetriableHeaders | RetryEnvoyRateLimited
	if on != want || len(unknown) != 1 || unknown[0] != "bogus" {
		t.Fatalf("ParseRetryOn: %b %v", on, unknown)
	}
	on, _ = ParseRetryOn("cancelled,deadline-exceeded,internal,resource-exhausted,unavailable")
	if on != RetryGRPCCancelled|RetryGRPCDeadlineExceeded|RetryGRPCInternal|RetryGRPCResourceExhausted|RetryGRPCUnavailable {
		t.Fatalf("grpc: %b", on)
	}
}

func retryTable(t *testing.T, policy string) *Action {
	t.Helper()
	tb := mustCompile(t, `
virtual_hosts:
- name: vh
  domains: ["*"]
  routes:
  - match: {prefix: /}
    route:
      cluster: c
      `+policy)
	return tb.Select(httptest.NewRequest("GET", "http://h/", nil)).Action
}

func TestRetryPolicyDefaultsAndStatus(t *testing.T) {
	if a := retryTable(t, "timeout: 1s"); a.Retry != nil {
		t.Fatalf("no retry_policy must mean no retries: %+v", a.Retry)
	}
	p := retryTable(t, `retry_policy: {retry_on: "gateway-error"}`).Retry
	if p.NumRetries != 1 || p.BackoffBase != 25*time.Millisecond || p.BackoffMax != 250*time.Millisecond {
		t.Fatalf("defaults: %+v", p)
	}
	cases := []struct {
		policy string
		code   int
		hdr    http.Header
		want   bool
	}{
		{`retry_policy: {retry_on: "5xx"}`, 500, nil, true},
		{`retry_policy: {retry_on: "5xx"}`, 404, nil, false},
		{`retry_policy: {retry_on: "gateway-error"}`, 503, nil, true},
		{`retry_policy: {retry_on: "gateway-error"}`, 500, nil, false},
		{`retry_policy: {retry_on: "retriable-4xx"}`, 409, nil, true},
		{`retry_policy: {retry_on: "retriable-4xx"}`, 429, nil, false},
		{`retry_policy: {retry_on: "retriable-status-codes", retriable_status_codes: [429]}`, 429, nil, true},
		{`retry_policy: {retry_on: "5xx", retriable_status_codes: [429]}`, 429, nil, false},
		{`retry_policy: {retry_on: "retriable-headers", retriable_headers: [{name: x-retry-me, string_match: {exact: "yes"}}]}`, 200, http.Header{"X-Retry-Me": {"yes"}}, true},
		{`retry_policy: {retry_on: "retriable-headers", retriable_headers: [{name: x-retry-me, string_match: {exact: "yes"}}]}`, 200, http.Header{"X-Retry-Me": {"no"}}, false},
		{`retry_policy: {retry_on: "envoy-ratelimited"}`, 429, http.Header{"X-Envoy-Ratelimited": {"true"}}, true},
		{`retry_policy: {retry_on: "unavailable"}`, 200, http.Header{"Grpc-Status": {"14"}}, true},
		{`retry_policy: {retry_on: "unavailable"}`, 200, http.Header{"Grpc-Status": {"13"}}, false},
		{`retry_policy: {retry_on: "internal,cancelled"}`, 200, http.Header{"Grpc-Status": {"13"}}, true},
		{`retry_policy: {retry_on: "resource-exhausted,deadline-exceeded"}`, 200, http.Header{"Grpc-Status": {"4"}}, true},
	}
	for _, c := range cases {
		p := retryTable(t, c.policy).Retry
		if got := p.ShouldRetryStatus(c.code, c.hdr); got != c.want {
			t.Errorf("%s: status %d %v: %v, want %v", c.policy, c.code, c.hdr, got, c.want)
		}
	}
	var nilPolicy *RetryPolicy
	if nilPolicy.ShouldRetryStatus(503, nil) || nilPolicy.ShouldRetryError(core.Reset) {
		t.Error("nil policy retried")
	}
}

func TestRetryOnErrors(t *testing.T) {
	kinds := []core.UpstreamErrorKind{core.ConnectFailure, core.Overflow, core.Reset, core.RefusedStream, core.Timeout}
	cases := map[string][5]bool{ // per kind above
		"5xx":             {true, false, true, true, true},
		"gateway-error":   {true, false, true, true, true},
		"reset":           {true, false, true, true, true},
		"connect-failure": {true, false, false, false, false},
		"refused-stream":  {false, false, false, true, false},
		"retriable-4xx":   {false, false, false, false, false},
	}
	for on, want := range cases {
		p := retryTable(t, `retry_policy: {retry_on: "`+on+`"}`).Retry
		for i, k := range kinds {
			if got := p.ShouldRetryError(k); got != want[i] {
				t.Errorf("retry_on %s, error kind %d: %v, want %v", on, k, got, want[i])
			}
		}
	}
}

func TestRetryFromRequestHeaders(t *testing.T) {
	route := retryTable(t, `retry_policy: {retry_on: "connect-failure", num_retries: 3}`).Retry
	h := http.Header{}
	if got := WithRequestHeaders(route, h); got != route {
		t.Fatal("no retry headers must return the route policy itself")
	}
	if got := WithRequestHeaders(nil, h); got != nil {
		t.Fatal("no policy and no headers must stay nil")
	}
	h.Set("X-Envoy-Retry-On", "5xx,not-a-condition")
	h.Set("X-Envoy-Retry-Grpc-On", "unavailable,5xx")
	h.Set("X-Envoy-Max-Retries", "5")
	h.Set("X-Envoy-Retriable-Status-Codes", "418, 419")
	h.Set("X-Envoy-Upstream-Rq-Per-Try-Timeout-Ms", "250")
	p := WithRequestHeaders(route, h)
	if p == route || route.On != RetryConnectFailure || route.NumRetries != 3 {
		t.Fatal("the route's policy was modified")
	}
	if p.On != RetryConnectFailure|Retry5xx|RetryGRPCUnavailable || p.NumRetries != 5 || p.PerTryTimeout != 250*time.Millisecond {
		t.Fatalf("merged: %+v", p)
	}
	// Codes are recorded but, as in Envoy, only apply with retriable-status-codes.
	if len(p.RetriableStatusCodes) != 2 || p.RetriableStatusCodes[1] != 419 || p.ShouldRetryStatus(418, nil) {
		t.Fatalf("status codes %v with on %b", p.RetriableStatusCodes, p.On)
	}
	// Header-only retries on a route without a policy default to one retry.
	h2 := http.Header{"X-Envoy-Retry-On": {"gateway-error"}}
	p2 := WithRequestHeaders(nil, h2)
	if p2 == nil || p2.NumRetries != 1 || !p2.ShouldRetryStatus(503, nil) || p2.ShouldRetryStatus(500, nil) {
		t.Fatalf("header-only policy: %+v", p2)
	}
	h3 := http.Header{"X-Envoy-Retry-On": {"retriable-status-codes"}, "X-Envoy-Retriable-Status-Codes": {"418"}}
	if p3 := WithRequestHeaders(nil, h3); !p3.ShouldRetryStatus(418, nil) || p3.ShouldRetryStatus(419, nil) {
		t.Fatalf("header status codes: %+v", p3)
	}
}

func TestBackoff(t *testing.T) {
	p := retryTable(t, `retry_policy: {retry_on: "5xx", retry_back_off: {base_interval: 0.01s, max_interval: 0.05s}}`).Retry
	rng := rand.New(rand.NewPCG(3, 4))
	for attempt := 1; attempt <= 8; attempt++ {
		ceil := time.Duration((1<<attempt)-1) * 10 * time.Millisecond
		var maxSeen time.Duration
		for range 2000 {
			d := p.Backoff(attempt, rng.Uint64())
			if d < 0 || d >= ceil || d > 50*time.Millisecond {
				t.Fatalf("attempt %d: %v outside [0, min(%v, 50ms)]", attempt, d, ceil)
			}
			maxSeen = max(maxSeen, d)
		}
		// The spread must grow with attempts until the cap: jitter covers most of the range.
		if want := min(ceil, 50*time.Millisecond) * 8 / 10; maxSeen < want {
			t.Errorf("attempt %d: largest back-off %v, want at least %v", attempt, maxSeen, want)
		}
	}
	huge := &RetryPolicy{BackoffBase: time.Hour, BackoffMax: 2 * time.Hour}
	if d := huge.Backoff(40, 1<<63); d < 0 || d > 2*time.Hour {
		t.Fatalf("overflow guard: %v", d)
	}
}
