package proxy

import (
	"net/http"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
)

// Scenario 1: the route-level features of Istio's request-routing tasks,
// each checked by what the client and the upstream see.
func TestScenarioHTTPRouting(t *testing.T) {
	v1, _ := echoBackend(t, "v1", nil)
	v2, _ := echoBackend(t, "v2", func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("x-secret", "leak")
		return false
	})
	listen := freeAddr(t)

	jason := to(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/reviews"},
		Headers: []*routev3.HeaderMatcher{{Name: "end-user",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("jason")}}}}, "v2")
	query := to(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/q"},
		QueryParameters: []*routev3.QueryParameterMatcher{{Name: "version",
			QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: exact("2")}}}}, "v2")
	regex := to(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{
		SafeRegex: &matcherv3.RegexMatcher{Regex: "/items/[0-9]+"}}}, "v2")
	rewrite := to(prefix("/old/"), "v1")
	rewrite.GetRoute().PrefixRewrite = "/new/"
	hostRw := to(prefix("/hostrw"), "v1")
	hostRw.GetRoute().HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "rewritten.example"}
	redirect := &routev3.Route{Match: prefix("/moved"), Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{
		HostRedirect: "landing.example", PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/landed"},
		ResponseCode: routev3.RedirectAction_MOVED_PERMANENTLY}}}
	direct := &routev3.Route{Match: prefix("/teapot"), Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
		Status: 418, Body: xdsres.Inline([]byte("short and stout"))}}}
	headers := to(prefix("/headers"), "v2")
	headers.RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-added", Value: "by-route"}}}
	headers.RequestHeadersToRemove = []string{"x-drop-me"}
	headers.ResponseHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-resp-added", Value: "yes"},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}}
	headers.ResponseHeadersToRemove = []string{"x-secret"}

	routes := []*routev3.Route{jason, query, regex, rewrite, hostRw, redirect, direct, headers,
		to(prefix("/"), "v1")}
	scenario(t, httpStack(listen, map[string][]string{"v1": {v1}, "v2": {v2}}, routes...)...)
	base := "http://" + listen

	t.Run("jason goes to v2", func(t *testing.T) {
		if c, body, _ := getH(t, base+"/reviews/1", "end-user", "jason"); c != 200 || body != "v2 /reviews/1" {
			t.Fatalf("end-user jason: %d %q, want v2", c, body)
		}
		for _, user := range []string{"", "Jason", "jasonx"} {
			kv := []string{}
			if user != "" {
				kv = []string{"end-user", user}
			}
			if c, body, _ := getH(t, base+"/reviews/1", kv...); c != 200 || body != "v1 /reviews/1" {
				t.Fatalf("end-user %q: %d %q, want v1", user, c, body)
			}
		}
	})
	t.Run("query parameter", func(t *testing.T) {
		if c, body, _ := get(t, base+"/q?version=2"); c != 200 || body != "v2 /q" {
			t.Fatalf("?version=2: %d %q", c, body)
		}
		if c, body, _ := get(t, base+"/q?version=1"); c != 200 || body != "v1 /q" {
			t.Fatalf("?version=1: %d %q", c, body)
		}
	})
	t.Run("regex path", func(t *testing.T) {
		if c, body, _ := get(t, base+"/items/42"); c != 200 || body != "v2 /items/42" {
			t.Fatalf("/items/42: %d %q", c, body)
		}
		// safe_regex matches the whole path.
		if c, body, _ := get(t, base+"/items/42x"); c != 200 || body != "v1 /items/42x" {
			t.Fatalf("/items/42x: %d %q, want the catch-all", c, body)
		}
	})
	t.Run("prefix rewrite", func(t *testing.T) {
		c, body, h := get(t, base+"/old/thing?k=v")
		if c != 200 || body != "v1 /new/thing" || h.Get("x-seen-uri") != "/new/thing?k=v" {
			t.Fatalf("/old/thing: %d %q uri %q", c, body, h.Get("x-seen-uri"))
		}
	})
	t.Run("host rewrite", func(t *testing.T) {
		c, _, h := getH(t, base+"/hostrw", "host", "orig.example")
		if c != 200 || h.Get("x-seen-host") != "rewritten.example" {
			t.Fatalf("host rewrite: %d upstream saw host %q", c, h.Get("x-seen-host"))
		}
	})
	t.Run("redirect", func(t *testing.T) {
		c, _, h := getH(t, base+"/moved")
		if c != 301 || h.Get("Location") != "http://landing.example/landed" {
			t.Fatalf("redirect: %d Location %q", c, h.Get("Location"))
		}
	})
	t.Run("direct response", func(t *testing.T) {
		if c, body, _ := get(t, base+"/teapot"); c != 418 || body != "short and stout" {
			t.Fatalf("direct_response: %d %q", c, body)
		}
	})
	t.Run("header add and remove", func(t *testing.T) {
		c, _, h := getH(t, base+"/headers", "x-drop-me", "1", "x-keep", "1")
		if c != 200 {
			t.Fatalf("status %d", c)
		}
		if h.Get("x-echo-x-added") != "by-route" {
			t.Errorf("upstream did not see x-added: by-route (saw %q)", h.Get("x-echo-x-added"))
		}
		if h.Get("x-echo-x-drop-me") != "" || h.Get("x-echo-x-keep") != "1" {
			t.Errorf("upstream saw x-drop-me=%q x-keep=%q", h.Get("x-echo-x-drop-me"), h.Get("x-echo-x-keep"))
		}
		if h.Get("x-resp-added") != "yes" || h.Get("x-secret") != "" {
			t.Errorf("client saw x-resp-added=%q x-secret=%q", h.Get("x-resp-added"), h.Get("x-secret"))
		}
	})
}

// Scenario 15: the headers Envoy manages and its local replies.
func TestScenarioEnvoyHeadersAndLocalReplies(t *testing.T) {
	a, _ := echoBackend(t, "a", nil)
	listen := freeAddr(t)
	hcm := xdsres.HCM("http", "routes")
	hcm.UseRemoteAddress = wrapperspb.Bool(true)
	// Envoy regenerates an external client's x-request-id unless told to
	// keep it; whether loopback counts as internal varies by version.
	hcm.PreserveExternalRequestId = true
	_, p := scenario(t, httpStackWith(listen, hcm, map[string][]string{"a": {a}, "empty": nil},
		to(prefix("/a"), "a"), to(prefix("/nocluster"), "no-such-cluster"), to(prefix("/empty"), "empty"))...)
	base := "http://" + listen

	t.Run("x-request-id", func(t *testing.T) {
		_, _, h := get(t, base+"/a")
		if id := h.Get("x-echo-x-request-id"); len(id) != 36 || strings.Count(id, "-") != 4 {
			t.Errorf("upstream saw x-request-id %q, want a generated UUID", id)
		}
		_, _, h = getH(t, base+"/a", "x-request-id", "keep-me-123")
		if id := h.Get("x-echo-x-request-id"); id != "keep-me-123" {
			t.Errorf("upstream saw x-request-id %q, want the client's keep-me-123", id)
		}
	})
	t.Run("x-forwarded-for appended", func(t *testing.T) {
		_, _, h := get(t, base+"/a")
		if xff := h.Get("x-echo-x-forwarded-for"); xff != "127.0.0.1" {
			t.Errorf("upstream saw x-forwarded-for %q, want 127.0.0.1", xff)
		}
		_, _, h = getH(t, base+"/a", "x-forwarded-for", "203.0.113.9")
		parts := strings.Split(h.Get("x-echo-x-forwarded-for"), ",")
		for i := range parts {
			parts[i] = strings.TrimSpace(parts[i])
		}
		if len(parts) != 2 || parts[0] != "203.0.113.9" || parts[1] != "127.0.0.1" {
			t.Errorf("upstream saw x-forwarded-for %q, want 203.0.113.9,127.0.0.1", h.Get("x-echo-x-forwarded-for"))
		}
	})
	t.Run("x-envoy-upstream-service-time", func(t *testing.T) {
		_, _, h := get(t, base+"/a")
		if h.Get("x-envoy-upstream-service-time") == "" {
			t.Errorf("no x-envoy-upstream-service-time: %v", h)
		}
	})
	t.Run("no route is 404 NR", func(t *testing.T) {
		c, _, h := get(t, base+"/elsewhere")
		if c != 404 || flags(h) != "NR" {
			t.Errorf("no route: %d flags %q, want 404 NR", c, flags(h))
		}
	})
	t.Run("unknown cluster is 503 NC", func(t *testing.T) {
		c, _, h := get(t, base+"/nocluster")
		if c != 503 || flags(h) != "NC" {
			t.Errorf("unknown cluster: %d flags %q, want 503 NC", c, flags(h))
		}
	})
	t.Run("no endpoints is 503 UH", func(t *testing.T) {
		c, body, h := get(t, base+"/empty")
		if c != 503 || flags(h) != "UH" || body != "no healthy upstream" {
			t.Errorf("no endpoints: %d %q flags %q, want 503 \"no healthy upstream\" UH", c, body, flags(h))
		}
	})
	if v := statValue(adminStats(t, p), "cluster.empty.upstream_cx_none_healthy"); v < 1 {
		t.Errorf("cluster.empty.upstream_cx_none_healthy = %d, want ≥ 1", v)
	}
}
