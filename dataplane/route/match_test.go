package route

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http/httptest"
	"testing"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

func TestVirtualHostSelection(t *testing.T) {
	tb := mustCompile(t, `
name: "80"
virtual_hosts:
- {name: exact, domains: ["reviews.default.svc.cluster.local", "reviews:9080", "Ratings"], routes: [{match: {prefix: /}, route: {cluster: exact}}]}
- {name: long-suffix, domains: ["*.bar.example.com"], routes: [{match: {prefix: /}, route: {cluster: long-suffix}}]}
- {name: short-suffix, domains: ["*.example.com"], routes: [{match: {prefix: /}, route: {cluster: short-suffix}}]}
- {name: dash-suffix, domains: ["*-svc"], routes: [{match: {prefix: /}, route: {cluster: dash-suffix}}]}
- {name: long-prefix, domains: ["api.internal.*"], routes: [{match: {prefix: /}, route: {cluster: long-prefix}}]}
- {name: short-prefix, domains: ["api.*"], routes: [{match: {prefix: /}, route: {cluster: short-prefix}}]}
- {name: any, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: any}}]}
`)
	cases := []struct{ host, want string }{
		{"reviews.default.svc.cluster.local", "exact"},
		{"REVIEWS.default.svc.cluster.local", "exact"}, // domains compare case-insensitively
		{"ratings", "exact"},
		{"reviews:9080", "exact"},
		{"reviews", "any"},                                // no port-less domain: Envoy does not strip the port
		{"reviews.default.svc.cluster.local:9080", "any"}, // with a port it must match a domain with that port
		{"a.bar.example.com", "long-suffix"},              // longest suffix wins
		{"a.foo.example.com", "short-suffix"},
		{".example.com", "any"}, // a wildcard never matches the empty string
		{"x-svc", "dash-suffix"},
		{"api.internal.x", "long-prefix"}, // longest prefix wins
		{"api.x", "short-prefix"},
		{"api.example.com", "short-suffix"}, // suffix wildcards are tried before prefix ones
		{"elsewhere", "any"},
	}
	for _, c := range cases {
		r := httptest.NewRequest("GET", "http://"+c.host+"/", nil)
		e := tb.Select(r)
		if e == nil || e.VirtualHost != c.want {
			t.Errorf("host %q: got %v, want virtual host %q", c.host, e, c.want)
		}
	}
}

func TestVirtualHostPortAndHeader(t *testing.T) {
	t.Run("no wildcard means no route", func(t *testing.T) {
		tb := mustCompile(t, `
virtual_hosts:
- {name: a, domains: ["a.example"], routes: [{match: {prefix: /}, route: {cluster: a}}]}`)
		if e := tb.Select(httptest.NewRequest("GET", "http://a.example:8080/", nil)); e != nil {
			t.Fatalf("a.example:8080 matched %q; Envoy compares the port too", e.VirtualHost)
		}
		if e := tb.Select(httptest.NewRequest("GET", "http://b.example/", nil)); e != nil {
			t.Fatalf("b.example matched %q", e.VirtualHost)
		}
	})
	t.Run("ignore_port_in_host_matching", func(t *testing.T) {
		tb := mustCompile(t, `
ignore_port_in_host_matching: true
virtual_hosts:
- {name: a, domains: ["a.example"], routes: [{match: {prefix: /}, route: {cluster: a}}]}
- {name: v6, domains: ["[::1]"], routes: [{match: {prefix: /}, route: {cluster: v6}}]}`)
		for host, want := range map[string]string{"a.example:8080": "a", "a.example": "a", "[::1]:80": "v6", "[::1]": "v6"} {
			e := tb.Select(httptest.NewRequest("GET", "http://"+host+"/", nil))
			if e == nil || e.VirtualHost != want {
				t.Errorf("%s: got %v, want %s", host, e, want)
			}
		}
	})
	t.Run("vhost_header", func(t *testing.T) {
		tb := mustCompile(t, `
vhost_header: x-vhost
virtual_hosts:
- {name: a, domains: ["a.example"], routes: [{match: {prefix: /}, route: {cluster: a}}]}`)
		r := httptest.NewRequest("GET", "http://other/", nil)
		if e := tb.Select(r); e != nil {
			t.Fatalf("selected %q without x-vhost", e.VirtualHost)
		}
		r.Header.Set("X-Vhost", "a.example")
		if e := tb.Select(r); e == nil || e.VirtualHost != "a" {
			t.Fatalf("x-vhost: a.example: got %v", e)
		}
	})
}

func TestRouteMatchKinds(t *testing.T) {
	type req struct {
		method, url string
		hdr         map[string][]string
	}
	cases := []struct {
		name  string
		match string
		yes   []req
		no    []req
	}{
		{"prefix", `{prefix: /api}`,
			[]req{{url: "/api"}, {url: "/api/v1?x=1"}, {url: "/apix"}},
			[]req{{url: "/ap"}, {url: "/API"}, {url: "/x/api"}}},
		{"prefix case-insensitive", `{prefix: /api, case_sensitive: false}`,
			[]req{{url: "/API/v1"}, {url: "/api"}}, []req{{url: "/ap"}}},
		{"path", `{path: /exact}`,
			[]req{{url: "/exact"}, {url: "/exact?q=1"}}, []req{{url: "/exact/"}, {url: "/Exact"}}},
		{"path case-insensitive", `{path: /exact, case_sensitive: false}`,
			[]req{{url: "/EXACT"}}, []req{{url: "/exact/x"}}},
		{"safe_regex is a full match of the path without query", `{safe_regex: {regex: "/v[0-9]+/items"}}`,
			[]req{{url: "/v1/items"}, {url: "/v22/items?x=/y"}}, []req{{url: "/v1/items/x"}, {url: "/x/v1/items"}, {url: "/vx/items"}}},
		{"path_separated_prefix", `{path_separated_prefix: /api}`,
			[]req{{url: "/api"}, {url: "/api/x"}, {url: "/api?q"}}, []req{{url: "/apix"}, {url: "/ap"}}},
		{"connect_matcher", `{connect_matcher: {}}`,
			[]req{{method: "CONNECT", url: "/"}}, []req{{url: "/"}}},
		{"header exact_match", `{prefix: /, headers: [{name: x-user, exact_match: jason}]}`,
			[]req{{url: "/", hdr: map[string][]string{"X-User": {"jason"}}}},
			[]req{{url: "/"}, {url: "/", hdr: map[string][]string{"X-User": {"Jason"}}}}},
		{"header string_match exact ignore_case", `{prefix: /, headers: [{name: X-User, string_match: {exact: jason, ignore_case: true}}]}`,
			[]req{{url: "/", hdr: map[string][]string{"X-User": {"JASON"}}}}, []req{{url: "/", hdr: map[string][]string{"X-User": {"jaso"}}}}},
		{"header string_match prefix", `{prefix: /, headers: [{name: x-v, string_match: {prefix: v1}}]}`,
			[]req{{url: "/", hdr: map[string][]string{"X-V": {"v1.2"}}}}, []req{{url: "/", hdr: map[string][]string{"X-V": {"v2"}}}}},
		{"header string_match suffix ignore_case", `{prefix: /, headers: [{name: x-v, string_match: {suffix: .COM, ignore_case: true}}]}`,
			[]req{{url: "/", hdr: map[string][]string{"X-V": {"a.com"}}}}, []req{{url: "/", hdr: map[string][]string{"X-V": {"a.org"}}}}},
		{"header string_match contains ignore_case", `{prefix: /, headers: [{name: user-agent, string_match: {contains: Firefox, ignore_case: true}}]}`,
			[]req{{url: "/", hdr: map[string][]string{"User-Agent": {"Mozilla FIREFOX/1"}}}}, []req{{url: "/", hdr: map[string][]string{"User-Agent": {"curl"}}}}},
		{"header string_match safe_regex", `{prefix: /, headers: [{name: x-v, string_match: {safe_regex: {regex: "v[12]"}}}]}`,
			[]req{{url: "/", hdr: map[string][]string{"X-V": {"v2"}}}}, []req{{url: "/", hdr: map[string][]string{"X-V": {"v22"}}}}},
		{"header safe_regex_match", `{prefix: /, headers: [{name: x-v, safe_regex_match: {regex: "a.c"}}]}`,
			[]req{{url: "/", hdr: map[string][]string{"X-V": {"abc"}}}}, []req{{url: "/", hdr: map[string][]string{"X-V": {"abcd"}}}}},
		{"header present_match", `{prefix: /, headers: [{name: x-debug, present_match: true}]}`,
			[]req{{url: "/", hdr: map[string][]string{"X-Debug": {""}}}}, []req{{url: "/"}}},
		{"header present_match false means absent", `{prefix: /, headers: [{name: x-debug, present_match: false}]}`,
			[]req{{url: "/"}}, []req{{url: "/", hdr: map[string][]string{"X-Debug": {"1"}}}}},
		{"header without specifier means present", `{prefix: /, headers: [{name: x-debug}]}`,
			[]req{{url: "/", hdr: map[string][]string{"X-Debug": {"1"}}}}, []req{{url: "/"}}},
		{"header range_match", `{prefix: /, headers: [{name: x-n, range_match: {start: 10, end: 20}}]}`,
			[]req{{url: "/", hdr: map[string][]string{"X-N": {"10"}}}, {url: "/", hdr: map[string][]string{"X-N": {"19"}}}},
			[]req{{url: "/", hdr: map[string][]string{"X-N": {"20"}}}, {url: "/", hdr: map[string][]string{"X-N": {"x"}}}, {url: "/"}}},
		{"header invert_match", `{prefix: /, headers: [{name: x-env, string_match: {exact: prod}, invert_match: true}]}`,
			[]req{{url: "/", hdr: map[string][]string{"X-Env": {"dev"}}}},
			[]req{{url: "/", hdr: map[string][]string{"X-Env": {"prod"}}}, {url: "/"}}}, // a missing header never matches a value matcher
		{"header invert_match with treat_missing_header_as_empty", `{prefix: /, headers: [{name: x-n, range_match: {start: 0, end: 10}, invert_match: true, treat_missing_header_as_empty: true}]}`,
			[]req{{url: "/"}, {url: "/", hdr: map[string][]string{"X-N": {"10"}}}}, []req{{url: "/", hdr: map[string][]string{"X-N": {"5"}}}}},
		{"header present_match inverted", `{prefix: /, headers: [{name: x-debug, present_match: true, invert_match: true}]}`,
			[]req{{url: "/"}}, []req{{url: "/", hdr: map[string][]string{"X-Debug": {"1"}}}}},
		{"header treat_missing_header_as_empty", `{prefix: /, headers: [{name: x-env, string_match: {exact: ""}, treat_missing_header_as_empty: true}]}`,
			[]req{{url: "/"}}, []req{{url: "/", hdr: map[string][]string{"X-Env": {"a"}}}}},
		{"header multiple values joined with comma", `{prefix: /, headers: [{name: x-m, string_match: {exact: "a,b"}}]}`,
			[]req{{url: "/", hdr: map[string][]string{"X-M": {"a", "b"}}}}, []req{{url: "/", hdr: map[string][]string{"X-M": {"a"}}}}},
		{":method pseudo-header", `{prefix: /, headers: [{name: ":method", string_match: {exact: POST}}]}`,
			[]req{{method: "POST", url: "/"}}, []req{{method: "GET", url: "/"}}},
		{":authority pseudo-header", `{prefix: /, headers: [{name: ":authority", string_match: {prefix: "svc."}}]}`,
			[]req{{url: "http://svc.a/"}}, []req{{url: "http://other/"}}},
		{":scheme pseudo-header", `{prefix: /, headers: [{name: ":scheme", string_match: {exact: http}}]}`,
			[]req{{url: "http://h/"}}, []req{{url: "https://h/"}}},
		{":path pseudo-header includes the query", `{prefix: /, headers: [{name: ":path", string_match: {exact: "/a?b=1"}}]}`,
			[]req{{url: "/a?b=1"}}, []req{{url: "/a"}}},
		{"query_parameters string_match", `{prefix: /, query_parameters: [{name: debug, string_match: {exact: "on now"}}]}`,
			[]req{{url: "/?x=1&debug=on+now"}, {url: "/?debug=on%20now"}}, []req{{url: "/?debug=off"}, {url: "/"}, {url: "/?debugx=on+now"}}},
		{"query_parameters present_match", `{prefix: /, query_parameters: [{name: debug, present_match: true}]}`,
			[]req{{url: "/?debug"}, {url: "/?a=1&debug="}}, []req{{url: "/?a=1"}}},
		{"cookies", `{prefix: /, cookies: [{name: session, string_match: {prefix: beta-}}, {name: optout, string_match: {exact: "1"}, invert_match: true}]}`,
			[]req{{url: "/", hdr: map[string][]string{"Cookie": {"a=b; session=beta-42"}}}, {url: "/", hdr: map[string][]string{"Cookie": {"session=\"beta-1\"", "optout=0"}}}},
			[]req{{url: "/", hdr: map[string][]string{"Cookie": {"session=stable"}}}, {url: "/"}, {url: "/", hdr: map[string][]string{"Cookie": {"session=beta-1; optout=1"}}}}},
		{"grpc", `{prefix: /, grpc: {}}`,
			[]req{{method: "POST", url: "/pkg.Svc/M", hdr: map[string][]string{"Content-Type": {"application/grpc"}}},
				{method: "POST", url: "/pkg.Svc/M", hdr: map[string][]string{"Content-Type": {"application/grpc+proto"}}}},
			[]req{{url: "/", hdr: map[string][]string{"Content-Type": {"application/grpc-web"}}}, {url: "/"}}},
		{"runtime_fraction 100%", `{prefix: /, runtime_fraction: {default_value: {numerator: 100, denominator: HUNDRED}}}`,
			[]req{{url: "/"}}, nil},
		{"runtime_fraction 0%", `{prefix: /, runtime_fraction: {default_value: {numerator: 0}}}`,
			nil, []req{{url: "/"}}},
		{"all conditions must hold", `{prefix: /a, headers: [{name: x-a, exact_match: "1"}], query_parameters: [{name: q}]}`,
			[]req{{url: "/a?q", hdr: map[string][]string{"X-A": {"1"}}}},
			[]req{{url: "/a?q"}, {url: "/a", hdr: map[string][]string{"X-A": {"1"}}}, {url: "/b?q", hdr: map[string][]string{"X-A": {"1"}}}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tb := mustCompile(t, `
virtual_hosts:
- name: vh
  domains: ["*"]
  routes:
  - name: target
    match: `+c.match+`
    route: {cluster: c}`)
			check := func(q req, want bool) {
				m := q.method
				if m == "" {
					m = "GET"
				}
				u := q.url
				if u[0] == '/' {
					u = "http://h" + u
				}
				r := httptest.NewRequest(m, u, nil)
				for k, v := range q.hdr {
					r.Header[k] = v
				}
				got := tb.Select(r) != nil
				if got != want {
					t.Errorf("%s %s %v: matched=%v, want %v", m, q.url, q.hdr, got, want)
				}
			}
			for _, q := range c.yes {
				check(q, true)
			}
			for _, q := range c.no {
				check(q, false)
			}
		})
	}
}

func TestIgnorePathParameters(t *testing.T) {
	y := `
%s
virtual_hosts:
- name: vh
  domains: ["*"]
  routes:
  - {name: ab, match: {path: /a/b}, route: {cluster: c}}
  - {name: rest, match: {prefix: /}, route: {cluster: c}}`
	on := mustCompile(t, fmt.Sprintf(y, "ignore_path_parameters_in_path_matching: true"))
	off := mustCompile(t, fmt.Sprintf(y, ""))
	for _, c := range []struct{ path, on, off string }{
		{"/a;v=1/b;x=2", "ab", "rest"},
		{"/a/b;x", "ab", "rest"},
		{"/a/b", "ab", "ab"},
		{"/a;/b/c", "rest", "rest"},
	} {
		if got := on.Select(newReq("GET", "http://h"+c.path)).Name; got != c.on {
			t.Errorf("ignoring params, %s: %s, want %s", c.path, got, c.on)
		}
		if got := off.Select(newReq("GET", "http://h"+c.path)).Name; got != c.off {
			t.Errorf("default, %s: %s, want %s", c.path, got, c.off)
		}
	}
}

func TestRouteOrderFirstMatchWins(t *testing.T) {
	tb := mustCompile(t, `
virtual_hosts:
- name: vh
  domains: ["*"]
  routes:
  - {name: v2, match: {prefix: /, headers: [{name: end-user, string_match: {exact: jason}}]}, route: {cluster: v2}}
  - {name: exact, match: {path: /productpage}, route: {cluster: pp}}
  - {name: catchall, match: {prefix: /}, route: {cluster: v1}}`)
	cases := []struct {
		path, user, want string
	}{
		{"/productpage", "jason", "v2"},
		{"/productpage", "", "exact"},
		{"/other", "", "catchall"},
	}
	for _, c := range cases {
		r := httptest.NewRequest("GET", "http://h"+c.path, nil)
		if c.user != "" {
			r.Header.Set("end-user", c.user)
		}
		if e := tb.Select(r); e == nil || e.Name != c.want {
			t.Errorf("%s user=%q: got %v, want %s", c.path, c.user, e, c.want)
		}
	}
}

func TestRuntimeFractionSplits(t *testing.T) {
	tb := mustCompile(t, `
virtual_hosts:
- name: vh
  domains: ["*"]
  routes:
  - {name: canary, match: {prefix: /, runtime_fraction: {default_value: {numerator: 25, denominator: HUNDRED}}}, route: {cluster: canary}}
  - {name: stable, match: {prefix: /}, route: {cluster: stable}}`)
	const n = 20000
	canary := 0
	r := httptest.NewRequest("GET", "http://h/", nil)
	for range n {
		if tb.Select(r).Name == "canary" {
			canary++
		}
	}
	// 25% ± 5 standard deviations (σ ≈ 0.31% at n=20000).
	if p := float64(canary) / n; p < 0.234 || p > 0.266 {
		t.Fatalf("canary share %.3f, want 0.25", p)
	}
}

func TestTLSContextMatchAndRequireTLS(t *testing.T) {
	tb := mustCompile(t, `
virtual_hosts:
- name: secure
  domains: ["secure.example"]
  require_tls: ALL
  routes: [{match: {prefix: /}, route: {cluster: s}}]
- name: mtls
  domains: ["*"]
  routes:
  - {name: client-cert, match: {prefix: /, tls_context: {presented: true}}, route: {cluster: m}}
  - {name: plain, match: {prefix: /}, route: {cluster: p}}`)
	r := httptest.NewRequest("GET", "http://secure.example/x?y=1", nil)
	e := tb.Select(r)
	if e == nil || e.Redirect == nil {
		t.Fatalf("plaintext to require_tls ALL: got %+v, want a redirect", e)
	}
	if code, loc := e.Redirect.Location(r); code != 301 || loc != "https://secure.example/x?y=1" {
		t.Fatalf("require_tls redirect: %d %s", code, loc)
	}
	r.TLS = &tls.ConnectionState{}
	if e := tb.Select(r); e == nil || e.Action == nil {
		t.Fatalf("TLS request to require_tls ALL: got %+v", e)
	}

	r = httptest.NewRequest("GET", "http://any/", nil)
	if e := tb.Select(r); e.Name != "plain" {
		t.Fatalf("no TLS: got %s", e.Name)
	}
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{}}}
	if e := tb.Select(r); e.Name != "client-cert" {
		t.Fatalf("client cert presented: got %s", e.Name)
	}
}

func TestStringMatcher(t *testing.T) {
	cases := []struct {
		m       *matcherv3.StringMatcher
		yes, no []string
	}{
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "abc"}}, []string{"abc"}, []string{"ABC", "abcd", ""}},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "abc"}, IgnoreCase: true}, []string{"aBc"}, []string{"abd"}},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "ab"}}, []string{"ab", "abc"}, []string{"a", "Abc"}},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "ab"}, IgnoreCase: true}, []string{"ABc"}, []string{"a"}},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".com"}}, []string{"a.com"}, []string{"a.COM", "com"}},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "Mid"}, IgnoreCase: true}, []string{"xxMIDxx", "mid"}, []string{"mi"}},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "Mid"}}, []string{"aMidb"}, []string{"amidb"}},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "https?://[a-z]+\\.example"}}},
			[]string{"https://a.example", "http://b.example"}, []string{"https://a.example.evil", "xhttps://a.example"}},
	}
	for i, c := range cases {
		m, err := NewStringMatcher(c.m)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		for _, s := range c.yes {
			if !m.Match(s) {
				t.Errorf("case %d (%v): %q should match", i, c.m, s)
			}
		}
		for _, s := range c.no {
			if m.Match(s) {
				t.Errorf("case %d (%v): %q should not match", i, c.m, s)
			}
		}
	}
	if _, err := NewStringMatcher(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "("}}}); err == nil {
		t.Fatal("invalid regex compiled")
	}
	if _, err := NewStringMatcher(&matcherv3.StringMatcher{}); err == nil {
		t.Fatal("empty matcher compiled")
	}
	var zero StringMatcher
	if zero.Match("") {
		t.Fatal("zero StringMatcher matched")
	}
}
