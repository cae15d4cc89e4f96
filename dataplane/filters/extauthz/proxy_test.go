package extauthz_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/dataplane/filters/extauthz"
	// The RBAC filter writes the shadow metadata Istio's CUSTOM gate reads.
	_ "github.com/skiff-mesh/skiff/dataplane/filters/rbac"
	"github.com/skiff-mesh/skiff/dataplane/proxy"
	"github.com/skiff-mesh/skiff/internal/testing/proxytest"
)

// hcmListener is one HTTP listener routing everything to the backend, with
// FILTERS before the router and ROUTES before the catch-all route.
const hcmListener = `
  - name: NAME
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: NAME
          route_config:
            name: NAME
            virtual_hosts:
            - name: backend
              domains: ["*"]
              routes:
ROUTES
              - {match: {prefix: /}, route: {cluster: backend}}
          http_filters:
FILTERS
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
`

// The ext_authz filters as Istio generates them for its extensionProviders
// (envoyExtAuthzHttp with includeRequestHeadersInCheck,
// headersToUpstreamOnAllow and headersToDownstreamOnDeny; envoyExtAuthzGrpc),
// plus the failure and timeout variants.
const (
	httpAuthzFilter = `
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              http_service:
                server_uri: {uri: "http://ext-authz.foo.svc.cluster.local", cluster: authz-http, timeout: 600s}
                path_prefix: /check
                authorization_request:
                  allowed_headers: {patterns: [{exact: x-ext-authz}]}
                authorization_response:
                  allowed_upstream_headers: {patterns: [{exact: x-ext-authz-check-result}]}
                  allowed_client_headers: {patterns: [{exact: x-ext-authz-check-result}]}
`
	grpcAuthzFilter = `
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              grpc_service:
                envoy_grpc: {cluster_name: "outbound|9000||ext-authz.foo.svc.cluster.local", authority: outbound_.9000_._.ext-authz.foo.svc.cluster.local}
                timeout: 1s
              metadata_context_namespaces: [envoy.filters.http.rbac]
`
	downClosedFilter = `
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              http_service: {server_uri: {uri: "http://down", cluster: authz-down, timeout: 1s}}
              status_on_error: {code: 503}
`
	downOpenFilter = `
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              grpc_service: {envoy_grpc: {cluster_name: authz-down}, timeout: 1s}
              failure_mode_allow: true
              failure_mode_allow_header_add: true
`
	timeoutFilter = `
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              http_service:
                server_uri: {uri: "http://ext-authz", cluster: authz-http, timeout: 0.2s}
                authorization_request: {allowed_headers: {patterns: [{exact: x-ext-authz}]}}
              stat_prefix: slow
`
	bodyFilter = `
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              grpc_service: {envoy_grpc: {cluster_name: "outbound|9000||ext-authz.foo.svc.cluster.local", authority: ext-authz}, timeout: 1s}
              with_request_body: {max_request_bytes: 16}
`
	// Istio's CUSTOM mechanics: a shadow RBAC naming the policies that
	// select the provider, then ext_authz gated on its result.
	shadowGateFilters = `
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              shadow_rules:
                action: DENY
                policies:
                  istio-ext-authz-ns[foo]-policy[ext-authz]-rule[0]:
                    permissions: [{and_rules: {rules: [{or_rules: {rules: [{url_path: {path: {prefix: /headers}}}]}}]}}]
                    principals: [{and_ids: {ids: [{any: true}]}}]
              shadow_rules_stat_prefix: istio_ext_authz_
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              grpc_service:
                envoy_grpc: {cluster_name: "outbound|9000||ext-authz.foo.svc.cluster.local", authority: outbound_.9000_._.ext-authz.foo.svc.cluster.local}
                timeout: 1s
              filter_enabled_metadata:
                filter: envoy.filters.http.rbac
                path: [{key: istio_ext_authz_shadow_effective_policy_id}]
                value: {string_match: {prefix: istio-ext-authz}}
`
	// Routes with per-route settings: /public skips the check, /ctx adds
	// context extensions.
	perRoutes = `
              - match: {prefix: /public}
                route: {cluster: backend}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    disabled: true
              - match: {prefix: /ctx}
                route: {cluster: backend}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    check_settings: {context_extensions: {virtual_host: backend, tier: gold}}
`
)

const tcpListener = `
  - name: tcp
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.ext_authz
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.ext_authz.v3.ExtAuthz
          stat_prefix: tcp.
          transport_api_version: V3
          grpc_service: {envoy_grpc: {cluster_name: "outbound|9000||ext-authz.foo.svc.cluster.local", authority: outbound_.9000_._.ext-authz.foo.svc.cluster.local}, timeout: 1s}
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: echo, cluster: echo}
`

// Istio's CUSTOM action on TCP: a network RBAC filter whose shadow rules
// select the connections the provider applies to, then ext_authz gated on
// the shadow result. tcp-gated's shadow policy matches loopback peers;
// tcp-ungated's matches none, so its connections are never checked.
const gatedListeners = `
  - name: tcp-gated
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.rbac
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
          stat_prefix: tcp.
          shadow_rules_stat_prefix: istio_ext_authz_
          shadow_rules:
            policies:
              istio-ext-authz-ns[foo]-policy[ext-authz]-rule[0]:
                permissions: [{any: true}]
                principals: [{direct_remote_ip: {address_prefix: 127.0.0.0, prefix_len: 8}}]
      - name: envoy.filters.network.ext_authz
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.ext_authz.v3.ExtAuthz
          stat_prefix: gated.
          transport_api_version: V3
          grpc_service: {envoy_grpc: {cluster_name: "outbound|9000||ext-authz.foo.svc.cluster.local", authority: outbound_.9000_._.ext-authz.foo.svc.cluster.local}, timeout: 1s}
          filter_enabled_metadata:
            filter: envoy.filters.network.rbac
            path: [{key: istio_ext_authz_shadow_effective_policy_id}]
            value: {string_match: {prefix: istio-ext-authz}}
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: echo, cluster: echo}
  - name: tcp-ungated
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.rbac
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
          stat_prefix: tcp.
          shadow_rules_stat_prefix: istio_ext_authz_
          shadow_rules:
            policies:
              istio-ext-authz-ns[foo]-policy[ext-authz]-rule[0]:
                permissions: [{any: true}]
                principals: [{direct_remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}}]
      - name: envoy.filters.network.ext_authz
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.ext_authz.v3.ExtAuthz
          stat_prefix: ungated.
          transport_api_version: V3
          grpc_service: {envoy_grpc: {cluster_name: "outbound|9000||ext-authz.foo.svc.cluster.local", authority: outbound_.9000_._.ext-authz.foo.svc.cluster.local}, timeout: 1s}
          filter_enabled_metadata:
            filter: envoy.filters.network.rbac
            path: [{key: istio_ext_authz_shadow_effective_policy_id}]
            value: {string_match: {prefix: istio-ext-authz}}
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: echo, cluster: echo}
`

func staticCluster(name, addr string, h2 bool) string {
	s := `
  - name: "` + name + `"
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: "` + name + `"
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: ` + proxytest.Port(addr) + `}}}}]}]
`
	if h2 {
		s += "    http2_protocol_options: {}\n"
	}
	return s
}

func listenerYAML(name, filters, routes string) string {
	s := strings.ReplaceAll(hcmListener, "NAME", name)
	s = strings.Replace(s, "FILTERS\n", strings.TrimPrefix(filters, "\n"), 1)
	return strings.Replace(s, "ROUTES\n", strings.TrimPrefix(routes, "\n"), 1)
}

type env struct {
	p        *proxy.Proxy
	httpAuth *httpAuthorizer
	grpcAuth *grpcAuthorizer
	client   *http.Client
}

func start(t *testing.T) *env {
	t.Helper()
	e := &env{httpAuth: startHTTPAuthorizer(t), grpcAuth: startGRPCAuthorizer(t),
		client: &http.Client{Timeout: 10 * time.Second}}
	cfg := "admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}\nstatic_resources:\n  clusters:" +
		staticCluster("backend", startBackend(t), false) +
		staticCluster("echo", proxytest.TCPEcho(t), false) +
		staticCluster("authz-http", e.httpAuth.addr, false) +
		staticCluster("outbound|9000||ext-authz.foo.svc.cluster.local", e.grpcAuth.addr, true) +
		staticCluster("authz-down", closedPort(t), true) +
		"  listeners:" +
		listenerYAML("http_authz", httpAuthzFilter, perRoutes) +
		listenerYAML("grpc_authz", grpcAuthzFilter, perRoutes) +
		listenerYAML("down_closed", downClosedFilter, "") +
		listenerYAML("down_open", downOpenFilter, "") +
		listenerYAML("timeout", timeoutFilter, "") +
		listenerYAML("shadow_gate", shadowGateFilters, "") +
		listenerYAML("body", bodyFilter, "") +
		tcpListener + gatedListeners
	e.p = proxytest.Start(t, cfg)
	return e
}

type result struct {
	status int
	header http.Header
	body   string
	seen   seen // what the backend got, for a 200
}

func (e *env) do(t *testing.T, listener, method, path string, hdr map[string]string) result {
	t.Helper()
	return e.doBody(t, listener, method, path, hdr, "")
}

func (e *env) doBody(t *testing.T, listener, method, path string, hdr map[string]string, body string) result {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+e.p.ListenerAddr(listener).String()+path, strings.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s %s: %v", listener, method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := result{status: resp.StatusCode, header: resp.Header, body: string(b)}
	if resp.StatusCode == 200 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &r.seen); err != nil {
			t.Fatalf("%s %s: backend answer %q: %v", listener, path, b, err)
		}
	}
	return r
}

func (e *env) counter(t *testing.T, name string, want uint64) {
	t.Helper()
	if got := e.p.Stats().CounterValue(name); got != want {
		t.Errorf("%s = %d, want %d", name, got, want)
	}
}

func TestHTTPService(t *testing.T) {
	e := start(t)

	// Allowed: the backend gets the request with the header the
	// authorizer allowed upstream, and not the one it did not.
	r := e.do(t, "http_authz", "GET", "/headers?x=1", map[string]string{checkHeader: "allow", "X-Other": "o"})
	if r.status != 200 || r.seen.Path != "/headers?x=1" {
		t.Fatalf("allowed: %d %q, want 200 from the backend", r.status, r.body)
	}
	if got := r.seen.Header.Get(resultHeader); got != "allowed" {
		t.Errorf("backend saw %s = %q, want allowed", resultHeader, got)
	}
	if got := r.seen.Header.Get("X-Ext-Authz-Not-Forwarded"); got != "" {
		t.Errorf("backend saw x-ext-authz-not-forwarded = %q; only allowed_upstream_headers go upstream", got)
	}
	// The check request: the original method, path_prefix + path, only
	// the allowed headers, no body.
	cr := e.httpAuth.lastRequest()
	if cr.Method != "GET" || cr.URL.RequestURI() != "/check/headers?x=1" {
		t.Errorf("check request %s %s, want GET /check/headers?x=1", cr.Method, cr.URL.RequestURI())
	}
	if cr.Header.Get(checkHeader) != "allow" || cr.Header.Get("X-Other") != "" || cr.ContentLength != 0 {
		t.Errorf("check request headers %v (content-length %d): want x-ext-authz only", cr.Header, cr.ContentLength)
	}
	if !strings.HasPrefix(cr.Host, "127.0.0.1:") {
		t.Errorf("check request host %q, want the original request's", cr.Host)
	}

	// Denied: the client gets the authorizer's status, body and the
	// allowed client header; the backend is not reached.
	r = e.do(t, "http_authz", "POST", "/headers", map[string]string{checkHeader: "deny"})
	if r.status != 403 || r.body != deniedBody || r.header.Get(resultHeader) != "denied" {
		t.Errorf("denied: %d %q %s=%q, want 403 %q denied", r.status, r.body, resultHeader, r.header.Get(resultHeader), deniedBody)
	}
	if cr := e.httpAuth.lastRequest(); cr.Method != "POST" {
		t.Errorf("check request method %s, want POST", cr.Method)
	}
	if f := r.header.Get("X-Skiff-Response-Flags"); f != "UAEX" {
		t.Errorf("denied: response flags %q, want UAEX", f)
	}

	// Per-route disabled: no check at all.
	before := e.httpAuth.calls.Load()
	if r = e.do(t, "http_authz", "GET", "/public/x", nil); r.status != 200 {
		t.Errorf("/public (disabled per route): %d, want 200", r.status)
	}
	if n := e.httpAuth.calls.Load(); n != before {
		t.Errorf("/public: the authorizer got %d checks, want none", n-before)
	}

	// An authorizer 5xx is an error: status_on_error (403).
	if r = e.do(t, "http_authz", "GET", "/headers", map[string]string{checkHeader: "fail"}); r.status != 403 || r.body != "" {
		t.Errorf("authorizer 500: %d %q, want 403 and no body", r.status, r.body)
	}

	e.counter(t, "http.http_authz.ext_authz.ok", 1)
	e.counter(t, "http.http_authz.ext_authz.denied", 1)
	e.counter(t, "http.http_authz.ext_authz.error", 1)
	e.counter(t, "cluster.backend.ext_authz.ok", 1)
	e.counter(t, "cluster.authz-http.upstream_rq_total", 3)
}

func TestGRPCService(t *testing.T) {
	e := start(t)
	r := e.do(t, "grpc_authz", "GET", "/headers", map[string]string{
		checkHeader: "allow", "X-Remove-Me": "secret", "X-Appended": "client",
		"X-Ext-Authz-Additional-Header-Override": "client-value"})
	if r.status != 200 {
		t.Fatalf("allowed: %d %q, want 200", r.status, r.body)
	}
	h := r.seen.Header
	if h.Get(resultHeader) != "allowed" || h.Get("X-Ext-Authz-Additional-Header-Override") != "grpc-additional-header-override-value" {
		t.Errorf("backend headers %v: want the authorizer's set and overridden headers", h)
	}
	if got := h.Values("X-Appended"); len(got) != 2 || got[0] != "client" || got[1] != "from-authz" {
		t.Errorf("backend x-appended = %q, want [client from-authz]", got)
	}
	if h.Get("X-Remove-Me") != "" {
		t.Errorf("backend saw x-remove-me; headers_to_remove should have removed it")
	}
	if got := r.header.Get("X-Ext-Authz-Response"); got != "ok" {
		t.Errorf("client response x-ext-authz-response = %q, want ok (response_headers_to_add)", got)
	}

	// The AttributeContext Envoy fills.
	cr := e.grpcAuth.lastRequest().GetAttributes()
	hr := cr.GetRequest().GetHttp()
	if hr.GetMethod() != "GET" || hr.GetPath() != "/headers" || !strings.HasPrefix(hr.GetHost(), "127.0.0.1:") ||
		hr.GetProtocol() != "HTTP/1.1" || hr.GetScheme() != "http" || hr.GetId() == "" {
		t.Errorf("request.http = %v", hr)
	}
	if hr.GetHeaders()[":path"] != "/headers" || hr.GetHeaders()["x-remove-me"] != "secret" {
		t.Errorf("request.http.headers = %v: want every header, lower case, with pseudo-headers", hr.GetHeaders())
	}
	if a := cr.GetSource().GetAddress().GetSocketAddress(); a.GetAddress() != "127.0.0.1" || a.GetPortValue() == 0 {
		t.Errorf("source.address = %v, want the client's", a)
	}
	if a := cr.GetDestination().GetAddress().GetSocketAddress(); proxytest.Port(e.p.ListenerAddr("grpc_authz").String()) != itoa(a.GetPortValue()) {
		t.Errorf("destination.address = %v, want the listener's", a)
	}

	// Context extensions from the route.
	if r = e.do(t, "grpc_authz", "GET", "/ctx", map[string]string{checkHeader: "allow"}); r.status != 200 {
		t.Errorf("/ctx: %d", r.status)
	}
	if ce := e.grpcAuth.lastRequest().GetAttributes().GetContextExtensions(); ce["tier"] != "gold" || ce["virtual_host"] != "backend" {
		t.Errorf("context_extensions = %v, want the route's", ce)
	}

	// Denied: DeniedHttpResponse's status, headers and body.
	r = e.do(t, "grpc_authz", "GET", "/headers", nil)
	if r.status != 403 || r.body != deniedBody || r.header.Get(resultHeader) != "denied" {
		t.Errorf("denied: %d %q %v", r.status, r.body, r.header)
	}
	e.counter(t, "http.grpc_authz.ext_authz.ok", 2)
	e.counter(t, "http.grpc_authz.ext_authz.denied", 1)
}

func TestAuthorizerDownOrSlow(t *testing.T) {
	e := start(t)
	// Down, fail closed: status_on_error, no body, UAEX.
	r := e.do(t, "down_closed", "GET", "/headers", map[string]string{checkHeader: "allow"})
	if r.status != 503 || r.header.Get("X-Skiff-Response-Flags") != "UAEX" {
		t.Errorf("down, fail closed: %d %v, want 503 with UAEX", r.status, r.header)
	}
	e.counter(t, "http.down_closed.ext_authz.error", 1)

	// Down, failure_mode_allow: through, marked upstream.
	r = e.do(t, "down_open", "GET", "/headers", nil)
	if r.status != 200 || r.seen.Header.Get(extauthz.FailureModeAllowedHeader) != "true" {
		t.Errorf("down, failure_mode_allow: %d, backend headers %v; want 200 with %s: true", r.status, r.seen.Header, extauthz.FailureModeAllowedHeader)
	}
	e.counter(t, "http.down_open.ext_authz.error", 1)
	e.counter(t, "http.down_open.ext_authz.failure_mode_allowed", 1)

	// A check slower than the 0.2 s timeout is an error (403), answered
	// long before the authorizer's 2 s.
	t0 := time.Now()
	r = e.do(t, "timeout", "GET", "/headers", map[string]string{checkHeader: "slow"})
	if d := time.Since(t0); r.status != 403 || d > 1500*time.Millisecond {
		t.Errorf("slow authorizer: %d after %v, want 403 well before 2s", r.status, d)
	}
	e.counter(t, "http.timeout.ext_authz.slow.error", 1)
	e.counter(t, "cluster.authz-http.upstream_rq_timeout", 1)
}

func TestShadowMetadataGate(t *testing.T) {
	e := start(t)
	// /headers matches the CUSTOM policy: checked, denied without the header.
	r := e.do(t, "shadow_gate", "GET", "/headers", nil)
	if r.status != 403 || r.body != deniedBody {
		t.Errorf("/headers (CUSTOM policy matches): %d %q, want the authorizer's 403", r.status, r.body)
	}
	if r = e.do(t, "shadow_gate", "GET", "/headers", map[string]string{checkHeader: "allow"}); r.status != 200 {
		t.Errorf("/headers with x-ext-authz: allow: %d, want 200", r.status)
	}
	// /ip does not match: not checked.
	before := e.grpcAuth.calls.Load()
	if r = e.do(t, "shadow_gate", "GET", "/ip", nil); r.status != 200 {
		t.Errorf("/ip (no CUSTOM policy matches): %d, want 200 unchecked", r.status)
	}
	if n := e.grpcAuth.calls.Load() - before; n != 0 {
		t.Errorf("/ip: %d checks, want none", n)
	}
	e.counter(t, "http.shadow_gate.ext_authz.disabled", 1)
	e.counter(t, "http.shadow_gate.ext_authz.denied", 1)
	e.counter(t, "http.shadow_gate.ext_authz.ok", 1)
	e.counter(t, "http.shadow_gate.rbac.istio_ext_authz_shadow_denied", 2)
}

func TestWithRequestBody(t *testing.T) {
	e := start(t)
	r := e.doBody(t, "body", "POST", "/upload", map[string]string{checkHeader: "allow"}, "small body")
	if r.status != 200 || r.seen.Method != "POST" {
		t.Fatalf("small body: %d %q, want 200", r.status, r.body)
	}
	hr := e.grpcAuth.lastRequest().GetAttributes().GetRequest().GetHttp()
	if hr.GetBody() != "small body" || hr.GetSize() != 10 || hr.GetHeaders()["x-envoy-auth-partial-body"] != "false" {
		t.Errorf("check request body %q size %d headers %v: want the whole body", hr.GetBody(), hr.GetSize(), hr.GetHeaders())
	}
	// Larger than max_request_bytes without allow_partial_message: 413,
	// no check.
	before := e.grpcAuth.calls.Load()
	r = e.doBody(t, "body", "POST", "/upload", map[string]string{checkHeader: "allow"}, strings.Repeat("x", 100))
	if r.status != 413 {
		t.Errorf("large body: %d, want 413", r.status)
	}
	if n := e.grpcAuth.calls.Load() - before; n != 0 {
		t.Errorf("large body: %d checks, want none", n)
	}
}

func TestNetworkFilter(t *testing.T) {
	e := start(t)
	addr := e.p.ListenerAddr("tcp").String()
	e.grpcAuth.allowTCP.Store(true)
	if got, err := proxytest.TCPRoundTrip(addr, "hello\n"); err != nil || got != "hello\n" {
		t.Errorf("allowed connection: %q, %v; want the echo", got, err)
	}
	cr := e.grpcAuth.lastRequest().GetAttributes()
	if cr.GetRequest() != nil || cr.GetSource().GetAddress().GetSocketAddress().GetAddress() != "127.0.0.1" ||
		itoa(cr.GetDestination().GetAddress().GetSocketAddress().GetPortValue()) != proxytest.Port(addr) {
		t.Errorf("network check request = %v: want source and destination, no request", cr)
	}
	e.grpcAuth.allowTCP.Store(false)
	if got, err := proxytest.TCPRoundTrip(addr, "hello\n"); err == nil {
		t.Errorf("denied connection: got %q, want it closed", got)
	}
	e.counter(t, "ext_authz.tcp.total", 2)
	e.counter(t, "ext_authz.tcp.ok", 1)
	e.counter(t, "ext_authz.tcp.denied", 1)
	e.counter(t, "ext_authz.tcp.cx_closed", 1)
}

func itoa(p uint32) string {
	b, _ := json.Marshal(p)
	return string(b)
}

// The CUSTOM gate on TCP: with the authorizer refusing every connection, a
// connection the shadow policy selects is checked and closed; one it does
// not select is never sent to the authorizer and reaches the upstream.
func TestNetworkShadowMetadataGate(t *testing.T) {
	e := start(t)
	e.grpcAuth.allowTCP.Store(false)
	if got, err := proxytest.TCPRoundTrip(e.p.ListenerAddr("tcp-gated").String(), "hello\n"); err == nil {
		t.Errorf("selected connection: got %q, want it checked and closed", got)
	}
	if got, err := proxytest.TCPRoundTrip(e.p.ListenerAddr("tcp-ungated").String(), "hello\n"); err != nil || got != "hello\n" {
		t.Errorf("unselected connection: %q, %v; want the echo without a check", got, err)
	}
	e.counter(t, "ext_authz.gated.denied", 1)
	e.counter(t, "ext_authz.ungated.disabled", 1)
	e.counter(t, "ext_authz.ungated.total", 0)
}
