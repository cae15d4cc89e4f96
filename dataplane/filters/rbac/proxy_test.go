// The proxy test is an external test package: dataplane/proxy links this
// filter in, so the package's own tests cannot import it.
package rbac_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/dataplane/filters/rbac"
	"github.com/skiff-mesh/skiff/internal/testing/proxytest"
)

// istioBootstrap is a whole skiff-proxy from an Envoy bootstrap whose
// inbound HTTP chain carries the two RBAC filters Istio generates for a
// workload with a DENY and an ALLOW AuthorizationPolicy, in Istio's order
// (DENY before ALLOW) and in the camelCase of Istio's config dumps, and two
// TCP listeners whose network RBAC filter admits and refuses loopback peers.
const istioBootstrap = `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  clusters:
  - name: inbound|8000||
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: inbound|8000||
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: BACKEND_PORT}}}}]}]
  - name: inbound|9000||
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: inbound|9000||
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: ECHO_PORT}}}}]}]
  listeners:
  - name: tcp_allowed
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.rbac
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
          statPrefix: tcp.
          rules:
            policies:
              ns[foo]-policy[from-loopback]-rule[0]:
                permissions: [{andRules: {rules: [{orRules: {rules: [{destinationPort: 9000}, {any: true}]}}]}}]
                principals: [{andIds: {ids: [{orIds: {ids: [{directRemoteIp: {addressPrefix: 127.0.0.0, prefixLen: 8}}]}}]}}]
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: inbound|9000||, cluster: inbound|9000||}
  - name: tcp_denied
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.rbac
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
          statPrefix: tcp_denied.
          rules:
            policies:
              ns[foo]-policy[from-elsewhere]-rule[0]:
                permissions: [{any: true}]
                principals: [{andIds: {ids: [{orIds: {ids: [{directRemoteIp: {addressPrefix: 10.0.0.0, prefixLen: 8}}]}}]}}]
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: inbound|9000||, cluster: inbound|9000||}
  - name: 0.0.0.0_8000
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: inbound_0.0.0.0_8000
          route_config:
            name: inbound|8000||
            virtual_hosts: [{name: inbound|http|8000, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: inbound|8000||}}]}]
          http_filters:
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: DENY
                policies:
                  ns[foo]-policy[deny-admin]-rule[0]:
                    permissions:
                    - andRules: {rules: [{orRules: {rules: [{urlPath: {path: {prefix: /admin/}}}]}}]}
                    principals:
                    - andIds: {ids: [{any: true}]}
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                policies:
                  ns[foo]-policy[allow-get]-rule[0]:
                    permissions:
                    - andRules:
                        rules:
                        - orRules: {rules: [{header: {name: ":method", exactMatch: GET}}]}
                        - orRules: {rules: [{urlPath: {path: {prefix: /}}}]}
                    principals:
                    - andIds: {ids: [{orIds: {ids: [{directRemoteIp: {addressPrefix: 127.0.0.1, prefixLen: 32}}]}}]}
              shadowRulesStatPrefix: istio_dry_run_allow_
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
`

func TestIstioFiltersInSkiffProxy(t *testing.T) {
	backend := proxytest.ServeHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok "+r.URL.Path) }))
	echo := proxytest.TCPEcho(t)
	cfg := strings.Replace(istioBootstrap, "BACKEND_PORT", proxytest.Port(backend), 1)
	cfg = strings.Replace(cfg, "ECHO_PORT", proxytest.Port(echo), 1)
	p := proxytest.Start(t, cfg)
	base := "http://" + p.ListenerAddr("0.0.0.0_8000").String()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for _, pr := range []struct {
		method, path string
		want         int
	}{{"GET", "/headers", 200}, {"GET", "/admin/users", 403}, {"POST", "/headers", 403}} {
		req, _ := http.NewRequest(pr.method, base+pr.path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", pr.method, pr.path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != pr.want {
			t.Errorf("%s %s: %d %q, want %d", pr.method, pr.path, resp.StatusCode, b, pr.want)
		}
		if pr.want == 403 && string(b) != rbac.DeniedBody {
			t.Errorf("%s %s: body %q, want %q", pr.method, pr.path, b, rbac.DeniedBody)
		}
	}

	// The network filter sits before tcp_proxy in the chain: a loopback
	// peer gets through to the echo server, the other listener closes the
	// connection before a byte reaches the upstream.
	if got, err := proxytest.TCPRoundTrip(p.ListenerAddr("tcp_allowed").String(), "hello\n"); err != nil || got != "hello\n" {
		t.Errorf("tcp_allowed: got %q, %v; want the echo", got, err)
	}
	if got, err := proxytest.TCPRoundTrip(p.ListenerAddr("tcp_denied").String(), "hello\n"); err == nil {
		t.Errorf("tcp_denied: got %q; want the connection closed", got)
	}

	// Both HTTP filters count under the HCM's prefix, as in Envoy: the DENY
	// filter allowed GET /headers and POST /headers and denied /admin; the
	// ALLOW filter then allowed GET /headers and denied the POST. The
	// network filters count under their own stat_prefix.
	for n, w := range map[string]uint64{
		"http.inbound_0.0.0.0_8000.rbac.allowed": 3,
		"http.inbound_0.0.0.0_8000.rbac.denied":  2,
		"tcp.rbac.allowed":                       1,
		"tcp_denied.rbac.denied":                 1,
	} {
		if got := p.Stats().CounterValue(n); got != w {
			t.Errorf("%s = %d, want %d", n, got, w)
		}
	}
}
