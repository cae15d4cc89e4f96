package route

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	"github.com/skiff-mesh/skiff/dataplane/core"
)

func TestWeightedChoiceDistribution(t *testing.T) {
	tb := mustCompile(t, `
virtual_hosts:
- name: vh
  domains: ["*"]
  routes:
  - match: {prefix: /}
    route:
      weighted_clusters:
        clusters:
        - {name: v1, weight: 70}
        - {name: v2, weight: 20}
        - {name: v3, weight: 10}
        - {name: v4, weight: 0}`)
	a := tb.Select(httptest.NewRequest("GET", "http://h/", nil)).Action
	if a.Cluster != "" || a.ClusterHeader != "" || len(a.Weighted) != 4 {
		t.Fatalf("action: %+v", a)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 100000
	counts := map[string]int{}
	for range n {
		wc := a.Choose(rng.Uint64())
		counts[a.ClusterName(nil, wc)]++
	}
	// Chi-square with 2 degrees of freedom; 13.8 is the 0.1% critical value.
	want := map[string]float64{"v1": 0.7, "v2": 0.2, "v3": 0.1}
	chi := 0.0
	for k, p := range want {
		exp := p * n
		chi += math.Pow(float64(counts[k])-exp, 2) / exp
	}
	if chi > 13.8 || counts["v4"] != 0 {
		t.Fatalf("counts %v: chi-square %.2f (v4 with weight 0 must never be chosen)", counts, chi)
	}
	// Boundaries: rnd is taken modulo the total weight.
	for rnd, name := range map[uint64]string{0: "v1", 69: "v1", 70: "v2", 89: "v2", 90: "v3", 99: "v3", 100: "v1"} {
		if got := a.Choose(rnd).Name; got != name {
			t.Errorf("Choose(%d) = %s, want %s", rnd, got, name)
		}
	}
}

func TestClusterSpecifiers(t *testing.T) {
	tb := mustCompile(t, `
virtual_hosts:
- name: vh
  domains: ["*"]
  routes:
  - match: {prefix: /hdr}
    route: {cluster_header: x-cluster, cluster_not_found_response_code: NOT_FOUND}
  - match: {prefix: /}
    route: {cluster: fixed}`)
	r := httptest.NewRequest("GET", "http://h/hdr", nil)
	r.Header.Set("x-cluster", "from-header")
	a := tb.Select(r).Action
	if a.Choose(7) != nil || a.ClusterName(r, nil) != "from-header" || a.ClusterNotFoundStatus != 404 {
		t.Fatalf("cluster_header: %+v", a)
	}
	r = httptest.NewRequest("GET", "http://h/x", nil)
	a = tb.Select(r).Action
	if a.ClusterName(r, a.Choose(1)) != "fixed" || a.Timeout != 15*time.Second || a.ClusterNotFoundStatus != 503 {
		t.Fatalf("cluster: %+v", a)
	}
}

func TestActionFields(t *testing.T) {
	tb := mustCompile(t, `
virtual_hosts:
- name: vh
  domains: ["*"]
  retry_policy: {retry_on: "5xx", num_retries: 7}
  include_request_attempt_count: true
  include_attempt_count_in_response: true
  per_request_buffer_limit_bytes: 1024
  routes:
  - name: full
    match: {prefix: /full}
    request_body_buffer_limit: 65536
    decorator: {operation: "reviews.default:9080/*"}
    route:
      cluster: c
      timeout: 0s
      idle_timeout: 30s
      upgrade_configs: [{upgrade_type: WebSocket}, {upgrade_type: CONNECT, enabled: false}]
      max_stream_duration: {grpc_timeout_header_max: 0s, max_stream_duration: 60s}
      host_rewrite_literal: upstream.example
      retry_policy:
        retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
        num_retries: 2
        per_try_timeout: 2s
        retriable_status_codes: [503, 429]
        retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts}]
        host_selection_retry_max_attempts: 5
        retry_back_off: {base_interval: 0.1s}
      request_mirror_policies:
      - {cluster: shadow, runtime_fraction: {default_value: {numerator: 10, denominator: HUNDRED}}}
      hash_policy:
      - {header: {header_name: x-user}}
  - name: inherit
    match: {prefix: /}
    route: {cluster: c, auto_host_rewrite: true, max_grpc_timeout: 5s}`)
	e := tb.Select(httptest.NewRequest("GET", "http://h/full", nil))
	a := e.Action
	if e.Decorator != "reviews.default:9080/*" {
		t.Errorf("decorator %q", e.Decorator)
	}
	if a.Timeout != 0 || a.IdleTimeout != 30*time.Second {
		t.Errorf("timeouts %v %v", a.Timeout, a.IdleTimeout)
	}
	if !a.Upgrades["websocket"] || a.Upgrades["connect"] || len(a.Upgrades) != 2 {
		t.Errorf("upgrades %v", a.Upgrades)
	}
	if a.MaxGRPCTimeout == nil || *a.MaxGRPCTimeout != 0 || a.MaxStreamDuration != time.Minute {
		t.Errorf("max stream duration: %v %v", a.MaxGRPCTimeout, a.MaxStreamDuration)
	}
	if h, ok := a.HostRewrite(httptest.NewRequest("GET", "http://h/", nil), nil); !ok || h != "upstream.example" {
		t.Errorf("host rewrite %q %v", h, ok)
	}
	p := a.Retry
	if p.NumRetries != 2 || p.PerTryTimeout != 2*time.Second || !p.PreviousHosts || p.HostSelectionMaxAttempts != 5 ||
		p.BackoffBase != 100*time.Millisecond || p.BackoffMax != time.Second || len(p.RetriableStatusCodes) != 2 {
		t.Errorf("retry policy %+v", p)
	}
	if want := RetryConnectFailure | RetryRefusedStream | RetryGRPCUnavailable | RetryGRPCCancelled | RetryRetriableStatusCodes; p.On != want {
		t.Errorf("retry_on %b, want %b", p.On, want)
	}
	if len(a.Mirrors) != 1 || a.Mirrors[0].Cluster != "shadow" {
		t.Fatalf("mirrors %+v", a.Mirrors)
	}
	sampled := 0
	for i := range uint64(1_000_000) {
		if a.Mirrors[0].Sampled(i) {
			sampled++
		}
	}
	if sampled != 100_000 {
		t.Errorf("mirror sampled %d of 1e6 consecutive values, want exactly 10%%", sampled)
	}

	a2 := tb.Select(httptest.NewRequest("GET", "http://h/other", nil)).Action
	if a2.Retry == nil || a2.Retry.NumRetries != 7 || a2.Retry.On != Retry5xx {
		t.Errorf("virtual host retry policy not inherited: %+v", a2.Retry)
	}
	if a.BufferLimit != 65536 || a2.BufferLimit != 1024 || !a2.IncludeAttemptCount || !a2.IncludeAttemptCountInResponse {
		t.Errorf("buffer limits %d %d, attempt counts %v %v", a.BufferLimit, a2.BufferLimit, a2.IncludeAttemptCount, a2.IncludeAttemptCountInResponse)
	}
	if !a2.AutoHostRewrite || a2.MaxGRPCTimeout == nil || *a2.MaxGRPCTimeout != 5*time.Second || a2.Upgrades != nil {
		t.Errorf("inherit route: %+v", a2)
	}
}

func TestMirrorInheritance(t *testing.T) {
	tb := mustCompile(t, `
request_mirror_policies: [{cluster: rc-shadow}]
virtual_hosts:
- name: inherits
  domains: [a]
  routes:
  - {match: {prefix: /own}, route: {cluster: c, request_mirror_policies: [{cluster_header: x-mirror, trace_sampled: false, disable_shadow_host_suffix_append: true}]}}
  - {match: {prefix: /}, route: {cluster: c}}
- name: overrides
  domains: [b]
  request_mirror_policies: [{cluster: vh-shadow}]
  routes: [{match: {prefix: /}, route: {cluster: c}}]`)
	mirrors := func(url string) []Mirror { return tb.Select(httptest.NewRequest("GET", url, nil)).Action.Mirrors }
	if m := mirrors("http://a/"); len(m) != 1 || m[0].Cluster != "rc-shadow" || !m[0].Sampled(12345) {
		t.Errorf("route config level: %+v", m)
	}
	if m := mirrors("http://b/"); len(m) != 1 || m[0].Cluster != "vh-shadow" {
		t.Errorf("virtual host level: %+v", m)
	}
	m := mirrors("http://a/own")
	if len(m) != 1 || m[0].ClusterHeader != "X-Mirror" || m[0].TraceSampled == nil || *m[0].TraceSampled || !m[0].DisableShadowHostSuffix {
		t.Errorf("route level: %+v", m)
	}
}

func TestRewritePath(t *testing.T) {
	tb := mustCompile(t, `
virtual_hosts:
- name: vh
  domains: ["*"]
  routes:
  - {match: {prefix: /api/v1/}, route: {cluster: c, prefix_rewrite: /}}
  - {match: {prefix: /Static, case_sensitive: false}, route: {cluster: c, prefix_rewrite: /assets}}
  - {match: {path: /old}, route: {cluster: c, prefix_rewrite: /new}}
  - {match: {prefix: /users/}, route: {cluster: c, regex_rewrite: {pattern: {regex: "^/users/([0-9]+)/profile$"}, substitution: "/profiles/\\1"}}}
  - {match: {prefix: /noop}, route: {cluster: c}}`)
	cases := []struct{ in, wantURI, wantOrig string }{
		{"/api/v1/reviews?x=1", "/reviews?x=1", "/api/v1/reviews?x=1"},
		{"/STATIC/app.js", "/assets/app.js", "/STATIC/app.js"},
		{"/old?q", "/new?q", "/old?q"},
		{"/users/42/profile?a=b", "/profiles/42?a=b", "/users/42/profile?a=b"},
		{"/users/x/profile", "/users/x/profile", ""}, // regex did not match: unchanged
		{"/noop/a%2Fb", "/noop/a%2Fb", ""},
		{"/api/v1/a%2Fb", "/a%2Fb", "/api/v1/a%2Fb"}, // escaped slashes survive
	}
	for _, c := range cases {
		r := httptest.NewRequest("GET", "http://h"+c.in, nil)
		if c.wantOrig != "" {
			r.Header.Set("X-Envoy-Original-Path", "/spoofed")
		}
		e := tb.Select(r)
		e.Action.RewritePath(r, e)
		if got := r.URL.RequestURI(); got != c.wantURI {
			t.Errorf("%s: rewritten to %s, want %s", c.in, got, c.wantURI)
		}
		if got := r.Header.Get("X-Envoy-Original-Path"); got != c.wantOrig {
			t.Errorf("%s: x-envoy-original-path %q, want %q", c.in, got, c.wantOrig)
		}
	}
}

func TestHostRewriteVariants(t *testing.T) {
	tb := mustCompile(t, `
virtual_hosts:
- name: vh
  domains: ["*"]
  routes:
  - {match: {prefix: /h}, route: {cluster: c, host_rewrite_header: x-host}}
  - {match: {prefix: /p}, route: {cluster: c, host_rewrite_path_regex: {pattern: {regex: "^/p/([^/]+)/.*$"}, substitution: "\\1.svc"}}}
  - match: {prefix: /w}
    route: {weighted_clusters: {clusters: [{name: a, weight: 1, host_rewrite_literal: a.example}]}}`)
	r := httptest.NewRequest("GET", "http://h/h", nil)
	r.Header.Set("X-Host", "from.header")
	if h, ok := tb.Select(r).Action.HostRewrite(r, nil); !ok || h != "from.header" {
		t.Errorf("host_rewrite_header: %q %v", h, ok)
	}
	r.Header.Del("X-Host")
	if _, ok := tb.Select(r).Action.HostRewrite(r, nil); ok {
		t.Error("host_rewrite_header without the header rewrote")
	}
	r = httptest.NewRequest("GET", "http://h/p/reviews/x", nil)
	if h, ok := tb.Select(r).Action.HostRewrite(r, nil); !ok || h != "reviews.svc" {
		t.Errorf("host_rewrite_path_regex: %q %v", h, ok)
	}
	r = httptest.NewRequest("GET", "http://h/w", nil)
	a := tb.Select(r).Action
	if h, ok := a.HostRewrite(r, a.Choose(0)); !ok || h != "a.example" {
		t.Errorf("weighted host_rewrite_literal: %q %v", h, ok)
	}
}

func TestHashPolicies(t *testing.T) {
	tb := mustCompile(t, `
virtual_hosts:
- name: vh
  domains: ["*"]
  routes:
  - match: {prefix: /term}
    route:
      cluster: c
      hash_policy:
      - {header: {header_name: x-user}, terminal: true}
      - {connection_properties: {source_ip: true}}
  - match: {prefix: /host}
    route:
      cluster: c
      hash_policy: [{header: {header_name: ":authority"}}]
  - match: {prefix: /}
    route:
      cluster: c
      hash_policy:
      - {cookie: {name: session}}
      - {query_parameter: {name: id}}
      - {header: {header_name: x-user, regex_rewrite: {pattern: {regex: "-.*"}, substitution: ""}}}`)
	ci := func(ip string) *core.ConnInfo {
		return &core.ConnInfo{RemoteAddr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 1234}}
	}
	hash := func(path string, hdr map[string]string, c *core.ConnInfo) (uint64, bool) {
		r := httptest.NewRequest("GET", "http://h"+path, nil)
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		return tb.Select(r).Action.Hash(r, c)
	}
	if _, ok := hash("/", nil, ci("10.0.0.1")); ok {
		t.Fatal("hash with no applicable policy")
	}
	a1, ok1 := hash("/", map[string]string{"Cookie": "session=abc"}, nil)
	a2, _ := hash("/", map[string]string{"Cookie": "other=1; session=abc"}, nil)
	b, _ := hash("/", map[string]string{"Cookie": "session=abd"}, nil)
	if !ok1 || a1 != a2 || a1 == b {
		t.Errorf("cookie hash: %x %x %x", a1, a2, b)
	}
	q1, _ := hash("/?id=7&x=1", nil, nil)
	q2, _ := hash("/?x=2&id=7", nil, nil)
	q3, _ := hash("/?id=8", nil, nil)
	if q1 != q2 || q1 == q3 {
		t.Errorf("query hash: %x %x %x", q1, q2, q3)
	}
	h1, _ := hash("/", map[string]string{"X-User": "alice-123"}, nil)
	h2, _ := hash("/", map[string]string{"X-User": "alice-999"}, nil)
	if h1 != h2 {
		t.Errorf("header regex_rewrite should hash alice-* alike: %x %x", h1, h2)
	}
	// Several policies combine: cookie and query together differ from cookie alone.
	c1, _ := hash("/?id=7", map[string]string{"Cookie": "session=abc"}, nil)
	if c1 == a1 {
		t.Error("combining cookie and query did not change the hash")
	}
	hostHash := func(host string) uint64 {
		r := httptest.NewRequest("GET", "http://"+host+"/host", nil)
		v, ok := tb.Select(r).Action.Hash(r, nil)
		if !ok {
			t.Fatalf(":authority hash did not apply for %s", host)
		}
		return v
	}
	if hostHash("a.example") != hostHash("a.example") || hostHash("a.example") == hostHash("b.example") {
		t.Error(":authority hash is not a function of the host")
	}
	// Terminal header policy: source IP is ignored when the header is there.
	t1, _ := hash("/term", map[string]string{"X-User": "u"}, ci("10.0.0.1"))
	t2, _ := hash("/term", map[string]string{"X-User": "u"}, ci("10.0.0.2"))
	s1, _ := hash("/term", nil, ci("10.0.0.1"))
	s2, _ := hash("/term", nil, ci("10.0.0.2"))
	s3, _ := hash("/term", nil, &core.ConnInfo{RemoteAddr: &net.TCPAddr{IP: net.ParseIP("10.0.0.1"), Port: 999}})
	if t1 != t2 || s1 == s2 || s1 != s3 {
		t.Errorf("terminal/source_ip: %x %x / %x %x %x", t1, t2, s1, s2, s3)
	}
}

func TestRedirectLocation(t *testing.T) {
	tb := mustCompile(t, `
virtual_hosts:
- name: vh
  domains: ["*"]
  routes:
  - {match: {prefix: /https}, redirect: {https_redirect: true}}
  - {match: {prefix: /host}, redirect: {host_redirect: new.example, response_code: FOUND}}
  - {match: {prefix: /port}, redirect: {port_redirect: 8443, scheme_redirect: https, response_code: SEE_OTHER}}
  - {match: {prefix: /path}, redirect: {path_redirect: /elsewhere, response_code: TEMPORARY_REDIRECT}}
  - {match: {prefix: /pq}, redirect: {path_redirect: "/with?new=1", response_code: PERMANENT_REDIRECT}}
  - {match: {prefix: /old/}, redirect: {prefix_rewrite: /new/, strip_query: true}}
  - {match: {prefix: /re/}, redirect: {regex_rewrite: {pattern: {regex: "^/re/(.*)$"}, substitution: "/v2/\\1"}}}`)
	cases := []struct {
		url, xfp string
		code     int
		loc      string
	}{
		{"http://a.example/https/x?q=1", "", 301, "https://a.example/https/x?q=1"},
		{"http://a.example:80/https", "", 301, "https://a.example/https"},
		{"http://a.example:8080/https", "", 301, "https://a.example:8080/https"},
		{"http://a.example/https", "https", 301, "https://a.example/https"},
		{"http://a.example:9/host?q", "", 302, "http://new.example/host?q"},
		{"http://a.example/port", "", 303, "https://a.example:8443/port"},
		{"http://a.example/path?q=1", "", 307, "http://a.example/elsewhere?q=1"},
		{"http://a.example/pq?q=1", "", 308, "http://a.example/with?new=1"},
		{"http://a.example/old/page?q=1", "", 301, "http://a.example/new/page"},
		{"https://a.example:443/old/x", "", 301, "https://a.example:443/new/x"}, // no scheme redirect: port kept
		{"https://a.example:443/https", "", 301, "https://a.example/https"},
		{"http://a.example/re/a/b", "", 301, "http://a.example/v2/a/b"},
	}
	for _, c := range cases {
		r := httptest.NewRequest("GET", c.url, nil)
		if c.xfp != "" {
			r.Header.Set("X-Forwarded-Proto", c.xfp)
		}
		e := tb.Select(r)
		if e == nil || e.Redirect == nil {
			t.Fatalf("%s: no redirect entry", c.url)
		}
		code, loc := e.Redirect.Location(r)
		if code != c.code || loc != c.loc {
			t.Errorf("%s: %d %s, want %d %s", c.url, code, loc, c.code, c.loc)
		}
	}
}

func TestDirectResponse(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "body.txt")
	if err := os.WriteFile(f, []byte("from file"), 0o600); err != nil {
		t.Fatal(err)
	}
	tb := mustCompile(t, `
virtual_hosts:
- name: vh
  domains: ["*"]
  routes:
  - {match: {path: /s}, direct_response: {status: 200, body: {inline_string: "hello"}}}
  - {match: {path: /b}, direct_response: {status: 403, body: {inline_bytes: "Ynl0ZXM="}}}
  - {match: {path: /f}, direct_response: {status: 503, body: {filename: "`+f+`"}}}
  - {match: {path: /e}, direct_response: {status: 204}}`)
	for path, want := range map[string]DirectResponse{"/s": {200, []byte("hello")}, "/b": {403, []byte("bytes")}, "/f": {503, []byte("from file")}, "/e": {204, nil}} {
		e := tb.Select(httptest.NewRequest("GET", "http://h"+path, nil))
		if e.Direct == nil || e.Direct.Status != want.Status || string(e.Direct.Body) != string(want.Body) || e.Action != nil || e.Redirect != nil {
			t.Errorf("%s: %+v, want %+v", path, e.Direct, want)
		}
	}
}

func TestPerFilterConfigAndCors(t *testing.T) {
	tb := mustCompile(t, `
typed_per_filter_config:
  envoy.filters.http.fault: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy, allow_methods: rc}
  envoy.filters.http.lua: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy, allow_methods: rc}
virtual_hosts:
- name: vh
  domains: ["*"]
  typed_per_filter_config:
    envoy.filters.http.fault: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy, allow_methods: vh}
    envoy.filters.http.cors:
      "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
      allow_origin_string_match: [{exact: "https://app.example"}, {suffix: ".trusted.example"}]
      allow_methods: "GET,POST"
      allow_credentials: true
      max_age: "600"
  routes:
  - name: override
    match: {prefix: /o}
    typed_per_filter_config:
      envoy.filters.http.fault: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy, allow_methods: route}
    route:
      weighted_clusters:
        clusters:
        - name: a
          weight: 1
          typed_per_filter_config:
            envoy.filters.http.lua: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy, allow_methods: wc}
  - name: legacy-cors
    match: {prefix: /l}
    route:
      cluster: c
      cors: {allow_origin_string_match: [{prefix: "http://localhost"}], filter_enabled: {default_value: {numerator: 0}}}
  - name: wrapped
    match: {prefix: /w}
    typed_per_filter_config:
      envoy.filters.http.cors:
        "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
        config: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy, allow_methods: PUT}
    route: {cluster: c}
  - name: plain
    match: {prefix: /}
    route: {cluster: c}`)
	if w := tb.Select(httptest.NewRequest("GET", "http://h/w", nil)).Action.Cors; w == nil || w.AllowMethods != "PUT" {
		t.Errorf("cors inside a FilterConfig wrapper: %+v", w)
	}
	methods := func(e *Entry, wc *WeightedCluster, name string) string {
		a := e.FilterConfig(name, wc)
		if a == nil {
			return ""
		}
		var p corsv3.CorsPolicy
		if err := a.UnmarshalTo(&p); err != nil {
			t.Fatal(err)
		}
		return p.GetAllowMethods()
	}
	o := tb.Select(httptest.NewRequest("GET", "http://h/o", nil))
	wc := o.Action.Choose(0)
	if got := methods(o, nil, "envoy.filters.http.fault"); got != "route" {
		t.Errorf("route > vhost > rc: got %q", got)
	}
	if got := methods(o, nil, "envoy.filters.http.lua"); got != "rc" {
		t.Errorf("route config level: got %q", got)
	}
	if got := methods(o, wc, "envoy.filters.http.lua"); got != "wc" {
		t.Errorf("weighted cluster on top: got %q", got)
	}
	if got := methods(o, wc, "envoy.filters.http.fault"); got != "route" {
		t.Errorf("weighted cluster inherits route: got %q", got)
	}
	p := tb.Select(httptest.NewRequest("GET", "http://h/", nil))
	if got := methods(p, nil, "envoy.filters.http.fault"); got != "vh" {
		t.Errorf("vhost level: got %q", got)
	}
	c := p.Action.Cors
	if c == nil || !c.Enabled || c.ShadowEnabled || c.AllowMethods != "GET,POST" || c.MaxAge != "600" || c.AllowCredentials == nil || !*c.AllowCredentials || !c.EnabledFor(12345) {
		t.Fatalf("cors from typed_per_filter_config: %+v", c)
	}
	for origin, want := range map[string]bool{"https://app.example": true, "https://x.trusted.example": true, "https://evil.example": false, "": false} {
		if c.OriginAllowed(origin) != want {
			t.Errorf("OriginAllowed(%q) != %v", origin, want)
		}
	}
	l := tb.Select(httptest.NewRequest("GET", "http://h/l", nil)).Action.Cors
	if l == nil || l.Enabled || !l.OriginAllowed("http://localhost:3000") || l.OriginAllowed("https://app.example") || l.EnabledFor(1) {
		t.Errorf("route cors field should override, with filter_enabled 0%%: %+v", l)
	}
}

func TestHeaderMutation(t *testing.T) {
	tb := mustCompile(t, `
internal_only_headers: [x-internal-secret]
request_headers_to_add:
- {header: {key: x-level, value: rc}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
request_headers_to_remove: [x-drop-rc]
response_headers_to_add:
- {header: {key: x-resp, value: rc}}
virtual_hosts:
- name: vh
  domains: ["*"]
  request_headers_to_add:
  - {header: {key: x-level, value: vh}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
  - {header: {key: x-client, value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}}
  response_headers_to_add:
  - {header: {key: x-resp, value: vh}}
  response_headers_to_remove: [server]
  routes:
  - name: r
    match: {prefix: /}
    request_headers_to_add:
    - {header: {key: x-level, value: route}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}
    - {header: {key: x-append, value: b}}
    - {header: {key: x-if-absent, value: new}, append_action: ADD_IF_ABSENT}
    - {header: {key: x-if-exists, value: new}, append_action: OVERWRITE_IF_EXISTS}
    - {header: {key: x-if-exists-missing, value: new}, append_action: OVERWRITE_IF_EXISTS}
    - {header: {key: x-legacy, value: v}, append: false}
    - {header: {key: x-empty, value: ""}}
    - {header: {key: x-keep-empty, value: ""}, keep_empty_value: true}
    - {header: {key: x-fmt, value: "%DOWNSTREAM_REMOTE_ADDRESS% -> %DOWNSTREAM_LOCAL_PORT% 100%% %REQ(x-user)%"}}
    request_headers_to_remove: [x-remove-me]
    response_headers_to_add:
    - {header: {key: x-resp, value: route}}
    route:
      weighted_clusters:
        clusters:
        - name: a
          weight: 1
          request_headers_to_add: [{header: {key: x-level, value: wc}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}]
          response_headers_to_add: [{header: {key: x-resp, value: wc}}]`)
	e := tb.Select(httptest.NewRequest("GET", "http://h/", nil))
	wc := e.Action.Choose(0)
	ci := &core.ConnInfo{
		RemoteAddr: &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 5555},
		LocalAddr:  &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 15006},
	}
	h := http.Header{}
	h.Set("X-Append", "a")
	h.Set("X-If-Absent", "old")
	h.Set("X-If-Exists", "old")
	h.Set("X-Legacy", "old1")
	h.Add("X-Legacy", "old2")
	h.Set("X-Remove-Me", "1")
	h.Set("X-Drop-Rc", "1")
	h.Set("X-User", "jason")
	h.Set("X-Internal-Secret", "s")
	e.MutateRequest(h, wc, ci)
	want := map[string][]string{
		"X-Level":      {"rc"}, // least specific applied last wins by default
		"X-Append":     {"a", "b"},
		"X-If-Absent":  {"old"},
		"X-If-Exists":  {"new"},
		"X-Legacy":     {"v"},
		"X-Keep-Empty": {""},
		"X-Client":     {"203.0.113.7"},
		"X-Fmt":        {"203.0.113.7:5555 -> 15006 100% jason"},
		"X-User":       {"jason"},
	}
	for k, v := range want {
		if got := h[k]; strings.Join(got, "|") != strings.Join(v, "|") {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	for _, k := range []string{"X-Remove-Me", "X-Drop-Rc", "X-Empty", "X-If-Exists-Missing", "X-Internal-Secret"} {
		if _, ok := h[k]; ok {
			t.Errorf("%s should be absent, got %q", k, h[k])
		}
	}
	// From a loopback peer, internal-only headers are trusted and kept.
	h2 := http.Header{"X-Internal-Secret": {"s"}}
	e.MutateRequest(h2, nil, &core.ConnInfo{RemoteAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 1}})
	if h2.Get("X-Internal-Secret") != "s" {
		t.Error("internal peer lost internal-only header")
	}
	resp := http.Header{"Server": {"app"}}
	e.MutateResponse(resp, wc)
	if got := strings.Join(resp["X-Resp"], ","); got != "wc,route,vh,rc" {
		t.Errorf("response append order %q, want wc,route,vh,rc", got)
	}
	if _, ok := resp["Server"]; ok {
		t.Error("response_headers_to_remove: server not removed")
	}

	// most_specific_header_mutations_wins reverses the order.
	tb2 := mustCompile(t, `
most_specific_header_mutations_wins: true
request_headers_to_add: [{header: {key: x-level, value: rc}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}]
response_headers_to_add: [{header: {key: x-resp, value: rc}}]
virtual_hosts:
- name: vh
  domains: ["*"]
  request_headers_to_add: [{header: {key: x-level, value: vh}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}]
  routes:
  - match: {prefix: /}
    request_headers_to_add: [{header: {key: x-level, value: route}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}]
    response_headers_to_add: [{header: {key: x-resp, value: route}}]
    route: {cluster: c}`)
	e2 := tb2.Select(httptest.NewRequest("GET", "http://h/", nil))
	h3 := http.Header{}
	e2.MutateRequest(h3, nil, nil)
	resp2 := http.Header{}
	e2.MutateResponse(resp2, nil)
	if h3.Get("X-Level") != "route" || strings.Join(resp2["X-Resp"], ",") != "rc,route" {
		t.Errorf("most specific wins: x-level %q, x-resp %q", h3.Get("X-Level"), resp2["X-Resp"])
	}
}

func TestHeaderFormatterTLSAndEnvironment(t *testing.T) {
	t.Setenv("SKIFF_ROUTE_TEST_ZONE", "zone-a")
	tb := mustCompile(t, `
virtual_hosts:
- name: vh
  domains: ["*"]
  request_headers_to_add:
  - {header: {key: x-peer, value: "%DOWNSTREAM_PEER_URI_SAN%"}}
  - {header: {key: x-subject, value: "%DOWNSTREAM_PEER_SUBJECT%"}}
  - {header: {key: x-tls, value: "%DOWNSTREAM_TLS_VERSION%"}}
  - {header: {key: x-sni, value: "%REQUESTED_SERVER_NAME%"}}
  - {header: {key: x-zone, value: "%ENVIRONMENT(SKIFF_ROUTE_TEST_ZONE)%"}}
  routes: [{match: {prefix: /}, route: {cluster: c}}]`)
	spiffe, _ := url.Parse("spiffe://cluster.local/ns/default/sa/productpage")
	ci := &core.ConnInfo{
		SNI: "reviews.default.svc.cluster.local",
		TLS: &tls.ConnectionState{Version: tls.VersionTLS13, PeerCertificates: []*x509.Certificate{{
			URIs: []*url.URL{spiffe}, Subject: pkix.Name{CommonName: "productpage"},
		}}},
	}
	h := http.Header{}
	tb.Select(newReq("GET", "http://h/")).MutateRequest(h, nil, ci)
	want := map[string]string{
		"X-Peer": "spiffe://cluster.local/ns/default/sa/productpage", "X-Subject": "CN=productpage",
		"X-Tls": "TLSv1.3", "X-Sni": "reviews.default.svc.cluster.local", "X-Zone": "zone-a",
	}
	for k, v := range want {
		if h.Get(k) != v {
			t.Errorf("%s = %q, want %q", k, h.Get(k), v)
		}
	}
	// Plaintext: the TLS values are empty, so those headers are not added.
	h = http.Header{}
	tb.Select(newReq("GET", "http://h/")).MutateRequest(h, nil, &core.ConnInfo{})
	for _, k := range []string{"X-Peer", "X-Subject", "X-Tls", "X-Sni"} {
		if _, ok := h[k]; ok {
			t.Errorf("plaintext: %s = %q, want absent", k, h[k])
		}
	}
}
