package rbac

import (
	"net"
	"strconv"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	uritemplatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/path/match/uri_template/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
)

// probe is one request and the status a user should see.
type probe struct {
	method, path string
	hdr          []string
	want         int
}

func get(path string, want int, hdr ...string) probe { return probe{"GET", path, hdr, want} }

// Every permission and principal kind, each as the only rule of an ALLOW
// policy: requests it matches are proxied (200), the others get Envoy's
// 403.
func TestHTTPMatchers(t *testing.T) {
	e := newEnv(t)
	hdr := func(name string, h *routev3.HeaderMatcher) *rbacv3.Permission {
		h.Name = name
		return permHeader(h)
	}
	portLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	portLn2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := portLn.Addr().(*net.TCPAddr).Port
	port2 := portLn2.Addr().(*net.TCPAddr).Port
	portLn.Close()
	portLn2.Close()
	tmpl := func(t string) *rbacv3.Permission {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_UriTemplate{UriTemplate: &corev3.TypedExtensionConfig{
			Name: "uri-template", TypedConfig: xdsres.Any(&uritemplatev3.UriTemplateMatchConfig{PathTemplate: t})}}}
	}
	cases := []struct {
		name   string
		perm   *rbacv3.Permission
		id     *rbacv3.Principal
		addr   string // listener address when it matters
		probes []probe
	}{
		{name: "header exact", perm: hdr("x-user", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("alice")}}),
			probes: []probe{get("/", 200, "x-user", "alice"), get("/", 403, "x-user", "bob"), get("/", 403)}},
		{name: "method exact_match (deprecated form Istio emits)", perm: hdr(":method", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "GET"}}),
			probes: []probe{get("/", 200), {"POST", "/", nil, 403}, {"DELETE", "/", nil, 403}}},
		{name: "authority suffix ignore_case", perm: hdr(":authority", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".example.com"}, IgnoreCase: true}}}),
			probes: []probe{get("/", 200, "host", "api.EXAMPLE.com"), get("/", 403, "host", "example.org")}},
		{name: "header prefix", perm: hdr("x-user", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_PrefixMatch{PrefixMatch: "adm"}}),
			probes: []probe{get("/", 200, "x-user", "admin"), get("/", 403, "x-user", "user-admin")}},
		{name: "header suffix", perm: hdr("x-user", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_SuffixMatch{SuffixMatch: "@corp"}}),
			probes: []probe{get("/", 200, "x-user", "bob@corp"), get("/", 403, "x-user", "bob@corp.evil")}},
		{name: "header contains", perm: hdr("x-user", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_ContainsMatch{ContainsMatch: "ops"}}),
			probes: []probe{get("/", 200, "x-user", "devops-1"), get("/", 403, "x-user", "dev")}},
		{name: "header safe_regex over joined values", perm: hdr("x-group", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcherv3.RegexMatcher{
			Regex: "^admin$|^admin,.*|.*,admin,.*|.*,admin$"}}}),
			probes: []probe{get("/", 200, "x-group", "dev", "x-group", "admin"), get("/", 200, "x-group", "admin"), get("/", 403, "x-group", "administrators")}},
		{name: "header present", perm: hdr("x-token", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}),
			probes: []probe{get("/", 200, "x-token", ""), get("/", 403)}},
		{name: "header invert_match", perm: hdr("x-user", &routev3.HeaderMatcher{InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "mallory"}}),
			probes: []probe{get("/", 200, "x-user", "alice"), get("/", 403, "x-user", "mallory"), get("/", 403)}},
		{name: "header range", perm: hdr("x-n", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: 10, End: 20}}}),
			probes: []probe{get("/", 200, "x-n", "19"), get("/", 403, "x-n", "20"), get("/", 403, "x-n", "x")}},
		{name: ":path includes the query", perm: hdr(":path", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "/q?x=1"}}),
			probes: []probe{get("/q?x=1", 200), get("/q?x=2", 403)}},
		{name: "url_path exact ignores the query", perm: permPath(exact("/q")),
			probes: []probe{get("/q?x=1", 200), get("/q", 200), get("/q/", 403)}},
		{name: "url_path prefix", perm: permPath(prefix("/api/")),
			probes: []probe{get("/api/v1", 200), get("/apis", 403)}},
		{name: "url_path suffix", perm: permPath(suffix(".json")),
			probes: []probe{get("/a/b.json?x", 200), get("/a/b.xml", 403)}},
		{name: "url_path regex ignore_case prefix", perm: permPath(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "/public"}, IgnoreCase: true}),
			probes: []probe{get("/PUBLIC/x", 200), get("/private", 403)}},
		{name: "url_path safe_regex matches the whole path", perm: permPath(regex("/items/[0-9]+")),
			probes: []probe{get("/items/42", 200), get("/items/42/x", 403)}},
		{name: "uri_template one segment", perm: tmpl("/api/{*}/items"),
			probes: []probe{get("/api/v1/items", 200), get("/api/v1/x/items", 403), get("/api//items", 403)}},
		{name: "uri_template any segments", perm: tmpl("/{**}/end"),
			probes: []probe{get("/a/b/end", 200), get("/a/b", 403)}},
		{name: "destination_ip", perm: &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidr("127.0.0.0", 8)}},
			probes: []probe{get("/", 200)}},
		{name: "destination_ip elsewhere", perm: &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidr("198.18.0.0", 15)}},
			probes: []probe{get("/", 403)}},
		{name: "destination_port", perm: &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: uint32(port)}},
			addr: "127.0.0.1:" + strconv.Itoa(port), probes: []probe{get("/", 200)}},
		{name: "destination_port other", perm: &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 1}},
			probes: []probe{get("/", 403)}},
		{name: "destination_port_range end is exclusive", perm: &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPortRange{DestinationPortRange: &typev3.Int32Range{Start: 1, End: int32(port2)}}},
			addr: "127.0.0.1:" + strconv.Itoa(port2), probes: []probe{get("/", 403)}},
		{name: "not_rule", perm: permNot(permPath(prefix("/admin"))),
			probes: []probe{get("/public", 200), get("/admin/x", 403)}},
		{name: "and_rules", perm: permAnd(hdr(":method", &routev3.HeaderMatcher{HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "GET"}}), permPath(prefix("/api"))),
			probes: []probe{get("/api", 200), {"POST", "/api", nil, 403}, get("/x", 403)}},
		{name: "or_rules", perm: permOr(permPath(exact("/a")), permPath(exact("/b"))),
			probes: []probe{get("/a", 200), get("/b", 200), get("/c", 403)}},
		{name: "metadata: JWT claim in a list or alone", perm: &rbacv3.Permission{Rule: &rbacv3.Permission_Metadata{Metadata: claimMatcher(exact("admin"), "groups")}},
			probes: []probe{get("/", 200, "x-test-claims", `{"groups":["dev","admin"]}`), get("/", 200, "x-test-claims", `{"groups":"admin"}`),
				get("/", 403, "x-test-claims", `{"groups":["dev"]}`), get("/", 403)}},
		{name: "metadata: nested claim", perm: &rbacv3.Permission{Rule: &rbacv3.Permission_Metadata{Metadata: claimMatcher(prefix("v"), "nested1", "nested2")}},
			probes: []probe{get("/", 200, "x-test-claims", `{"nested1":{"nested2":"v1"}}`), get("/", 403, "x-test-claims", `{"nested1":"v1"}`)}},
		{name: "direct_remote_ip", id: &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr("127.0.0.1", 32)}},
			probes: []probe{get("/", 200), get("/", 200, "x-forwarded-for", "198.18.0.9")}},
		{name: "direct_remote_ip ignores x-forwarded-for", id: &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr("198.18.0.0", 16)}},
			probes: []probe{get("/", 403, "x-forwarded-for", "198.18.0.9")}},
		{name: "remote_ip from x-forwarded-for", id: &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("198.18.0.0", 16)}},
			probes: []probe{get("/", 200, "x-forwarded-for", "203.0.113.1, 198.18.0.9"), get("/", 403, "x-forwarded-for", "198.18.0.9, 203.0.113.1"), get("/", 403)}},
		{name: "principal header (Istio's request.headers)", id: &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: &routev3.HeaderMatcher{
			Name: "x-env", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("prod")}}}},
			probes: []probe{get("/", 200, "x-env", "prod"), get("/", 403, "x-env", "dev")}},
		{name: "principal url_path", id: &rbacv3.Principal{Identifier: &rbacv3.Principal_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: exact("/me")}}}},
			probes: []probe{get("/me", 200), get("/you", 403)}},
		{name: "and_ids, or_ids, not_id", id: idAnd(idOr(&rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr("127.0.0.0", 8)}}),
			idNot(&rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: &routev3.HeaderMatcher{Name: "x-blocked"}}})),
			probes: []probe{get("/", 200), get("/", 403, "x-blocked", "1")}},
		{name: "authenticated needs TLS", id: idAuth(nil), probes: []probe{get("/", 403)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e.t = t
			p := pol([]*rbacv3.Permission{anyPerm()}, []*rbacv3.Principal{anyID()})
			if tc.perm != nil {
				p.Permissions = []*rbacv3.Permission{tc.perm}
			}
			if tc.id != nil {
				p.Principals = []*rbacv3.Principal{tc.id}
			}
			cfg := allowPolicies(rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{"ns[foo]-policy[p]-rule[0]": p})
			var base string
			if tc.addr != "" {
				base = "http://" + e.listenAt(tc.addr, cfg)
			} else {
				base = e.httpListener(cfg)
			}
			for _, pr := range tc.probes {
				r := do(t, nil, pr.method, base+pr.path, pr.hdr...)
				if r.code != pr.want {
					t.Errorf("%s %s %v: %d %q, want %d", pr.method, pr.path, pr.hdr, r.code, r.body, pr.want)
				}
				if r.code == 403 && r.body != DeniedBody {
					t.Errorf("%s %s: 403 body %q, want %q", pr.method, pr.path, r.body, DeniedBody)
				}
			}
		})
	}
}

// ALLOW, DENY and LOG with Envoy's counters and Istio's empty-policy
// cases.
func TestActions(t *testing.T) {
	e := newEnv(t)
	t.Run("empty ALLOW denies everything", func(t *testing.T) {
		base := e.httpListener(allowPolicies(rbacv3.RBAC_ALLOW, nil))
		before := e.st.CounterValue("http.in.rbac.denied")
		for _, p := range []string{"/", "/x", "/healthz"} {
			r := do(t, nil, "GET", base+p)
			if r.code != 403 || r.body != DeniedBody || r.hdr.Get("Content-Type") != "text/plain" {
				t.Errorf("GET %s: %d %q %q, want 403 %q text/plain", p, r.code, r.body, r.hdr.Get("Content-Type"), DeniedBody)
			}
		}
		if got := e.st.CounterValue("http.in.rbac.denied") - before; got != 3 {
			t.Errorf("http.in.rbac.denied rose by %d, want 3", got)
		}
	})
	t.Run("empty DENY allows everything", func(t *testing.T) {
		base := e.httpListener(allowPolicies(rbacv3.RBAC_DENY, nil))
		if r := do(t, nil, "GET", base+"/admin"); r.code != 200 || r.body != "ok /admin" {
			t.Errorf("GET /admin: %d %q", r.code, r.body)
		}
	})
	t.Run("DENY on a match, first policy by name wins", func(t *testing.T) {
		cfg := allowPolicies(rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{
			"b-deny-admin": pol([]*rbacv3.Permission{permPath(prefix("/admin"))}, []*rbacv3.Principal{anyID()}),
			"a-deny-post":  pol([]*rbacv3.Permission{permHeader(&routev3.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "POST"}})}, []*rbacv3.Principal{anyID()}),
		})
		cfg.RulesStatPrefix = "p_"
		cfg.TrackPerRuleStats = true
		base := e.httpListener(cfg)
		before := map[string]uint64{}
		names := []string{"http.in.rbac.p_allowed", "http.in.rbac.p_denied", "http.in.rbac.p_.policy.a-deny-post.denied", "http.in.rbac.p_.policy.b-deny-admin.denied"}
		for _, n := range names {
			before[n] = e.st.CounterValue(n)
		}
		for _, p := range []probe{get("/admin/users", 403), get("/", 200), {"POST", "/admin", nil, 403}, {"POST", "/x", nil, 403}, get("/x", 200)} {
			if r := do(t, nil, p.method, base+p.path); r.code != p.want {
				t.Errorf("%s %s: %d, want %d", p.method, p.path, r.code, p.want)
			}
		}
		want := map[string]uint64{names[0]: 2, names[1]: 3, names[2]: 2, names[3]: 1}
		for n, w := range want {
			if got := e.st.CounterValue(n) - before[n]; got != w {
				t.Errorf("%s rose by %d, want %d", n, got, w)
			}
		}
	})
	t.Run("LOG allows and sets access_log_hint", func(t *testing.T) {
		base := e.httpListener(allowPolicies(rbacv3.RBAC_LOG, map[string]*rbacv3.Policy{
			"audit": pol([]*rbacv3.Permission{permPath(prefix("/audit"))}, []*rbacv3.Principal{anyID()})}))
		r := do(t, nil, "GET", base+"/audit/x")
		if r.code != 200 || r.hdr.Get("X-Seen-Log-Hint") != "true" {
			t.Errorf("GET /audit/x: %d, hint %q; want 200 true", r.code, r.hdr.Get("X-Seen-Log-Hint"))
		}
		r = do(t, nil, "GET", base+"/other")
		if r.code != 200 || r.hdr.Get("X-Seen-Log-Hint") != "false" {
			t.Errorf("GET /other: %d, hint %q; want 200 false", r.code, r.hdr.Get("X-Seen-Log-Hint"))
		}
	})
	t.Run("no rules: no enforcement", func(t *testing.T) {
		base := e.httpListener(&httprbacv3.RBAC{})
		if r := do(t, nil, "GET", base+"/"); r.code != 200 {
			t.Errorf("GET /: %d", r.code)
		}
	})
	t.Run("gRPC denial is PERMISSION_DENIED", func(t *testing.T) {
		base := e.httpListener(allowPolicies(rbacv3.RBAC_ALLOW, nil))
		r := do(t, nil, "POST", base+"/pkg.Svc/Call", "content-type", "application/grpc")
		if r.code != 200 || r.hdr.Get("Grpc-Status") != "7" || r.hdr.Get("Grpc-Message") != DeniedBody {
			t.Errorf("gRPC: %d grpc-status %q grpc-message %q, want 200 7 %q", r.code, r.hdr.Get("Grpc-Status"), r.hdr.Get("Grpc-Message"), DeniedBody)
		}
	})
}

// Shadow rules never change the answer: they count and leave their verdict
// in the filter's dynamic metadata, under keys prefixed with
// shadow_rules_stat_prefix. Istio's dry-run reads the counters; its CUSTOM
// action enables ext_authz from istio_ext_authz_shadow_effective_policy_id.
func TestShadowRules(t *testing.T) {
	e := newEnv(t)
	dry := e.httpListener(&httprbacv3.RBAC{
		ShadowRules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
			"ns[foo]-policy[dry]-rule[0]": pol([]*rbacv3.Permission{permPath(prefix("/ok"))}, []*rbacv3.Principal{anyID()})}},
		ShadowRulesStatPrefix: "istio_dry_run_allow_",
	})
	custom := e.httpListener(&httprbacv3.RBAC{
		ShadowRules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
			"istio-ext-authz-ns[foo]-policy[ext]-rule[0]": pol([]*rbacv3.Permission{permPath(prefix("/ext"))}, []*rbacv3.Principal{anyID()})}},
		ShadowRulesStatPrefix: "istio_ext_authz_",
	})
	for _, tc := range []struct{ url, md string }{
		{dry + "/ok", "istio_dry_run_allow_shadow_effective_policy_id=ns[foo]-policy[dry]-rule[0];istio_dry_run_allow_shadow_engine_result=allowed"},
		{dry + "/nope", "istio_dry_run_allow_shadow_engine_result=denied"},
		{custom + "/ext/x", "istio_ext_authz_shadow_effective_policy_id=istio-ext-authz-ns[foo]-policy[ext]-rule[0];istio_ext_authz_shadow_engine_result=allowed"},
	} {
		r := do(t, nil, "GET", tc.url)
		if r.code != 200 || r.hdr.Get("X-Seen-Rbac-Md") != tc.md {
			t.Errorf("GET %s: %d, metadata %q; want 200 and %q", tc.url, r.code, r.hdr.Get("X-Seen-Rbac-Md"), tc.md)
		}
	}
	for n, w := range map[string]uint64{
		"http.in.rbac.istio_dry_run_allow_shadow_allowed": 1,
		"http.in.rbac.istio_dry_run_allow_shadow_denied":  1,
		"http.in.rbac.istio_ext_authz_shadow_allowed":     1,
		"http.in.rbac.allowed":                            0,
	} {
		if got := e.st.CounterValue(n); got != w {
			t.Errorf("%s = %d, want %d", n, got, w)
		}
	}
}

// RBACPerRoute replaces the filter's rules on a route, or turns the filter
// off there when it carries no rbac.
func TestPerRoute(t *testing.T) {
	e := newEnv(t)
	denyAll := allowPolicies(rbacv3.RBAC_ALLOW, nil)
	adminOnly := &httprbacv3.RBACPerRoute{Rbac: allowPolicies(rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
		"admin": pol([]*rbacv3.Permission{anyPerm()}, []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Header{Header: &routev3.HeaderMatcher{Name: "x-admin"}}}})})}
	broken := &httprbacv3.RBACPerRoute{Rbac: allowPolicies(rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{
		"bad": pol([]*rbacv3.Permission{permPath(regex("("))}, []*rbacv3.Principal{anyID()})})}
	base := e.httpListener(denyAll,
		xdsres.PerFilter(xdsres.PrefixRoute("/open", "backend"), HTTPFilterName, &httprbacv3.RBACPerRoute{}),
		xdsres.PerFilter(xdsres.PrefixRoute("/admin", "backend"), HTTPFilterName, adminOnly),
		xdsres.PerFilter(xdsres.PrefixRoute("/broken", "backend"), HTTPFilterName, broken),
		xdsres.PrefixRoute("/", "backend"))
	for _, p := range []probe{
		get("/open/x", 200), get("/admin", 403), get("/admin", 200, "x-admin", "1"),
		get("/broken", 403), get("/", 403),
	} {
		if r := do(t, nil, p.method, base+p.path, p.hdr...); r.code != p.want {
			t.Errorf("%s %s %v: %d %q, want %d", p.method, p.path, p.hdr, r.code, r.body, p.want)
		}
	}
}
