// The proxy test is an external test package: dataplane/proxy links this
// filter in, so the package's own tests cannot import it.
package jwtauthn_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	// Registers the filter, as the blank import in dataplane/proxy does.
	_ "github.com/skiff-mesh/skiff/dataplane/filters/jwtauthn"
	"github.com/skiff-mesh/skiff/internal/testing/proxytest"
)

// istioBootstrap is a sidecar inbound listener with the jwt_authn config a
// current istiod generates for Istio's RequestAuthentication task (one
// jwtRule with jwksUri, remote JWKS mode), written as a bootstrap; the
// test's metadata_dump filter (registered in helpers_test.go, linked into
// the same test binary) stands where RBAC would.
const istioBootstrap = `
node: {id: sidecar~127.0.0.1~httpbin.foo~foo.svc.cluster.local, cluster: httpbin.foo}
static_resources:
  clusters:
  - name: inbound|8000||
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: inbound|8000||
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: BACKEND_PORT}}}}]}]
  - name: outbound|80||jwks.example.com
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: outbound|80||jwks.example.com
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: JWKS_PORT}}}}]}]
  listeners:
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
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                origins-0:
                  issuer: testing@secure.istio.io
                  remoteJwks:
                    httpUri:
                      uri: http://jwks.example.com/jwks.json
                      cluster: outbound|80||jwks.example.com
                      timeout: 5s
                    cacheDuration: 300s
                  payloadInMetadata: payload
                  normalizePayloadInMetadata: {spaceDelimitedClaims: [permission, scope]}
              rules:
              - match: {prefix: /}
                requires:
                  requiresAny:
                    requirements:
                    - providerName: origins-0
                    - allowMissing: {}
              bypassCorsPreflight: true
          - name: test.metadata_dump
            typed_config: {"@type": type.googleapis.com/google.protobuf.Struct, value: {}}
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
`

func sample(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("/work/shared/istio-samples/jwt/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// The filter inside a real skiff-proxy started from a bootstrap: Istio's
// task (no token 200, sample tokens 200, bad token 401) with the JWKS
// fetched through the proxy's own cluster, and the verified payload in
// the metadata a later filter reads.
func TestIstioRequestAuthenticationInSkiffProxy(t *testing.T) {
	// The backend answers with the jwt_authn metadata the test filter
	// copied into a request header.
	backend := proxytest.ServeHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Header.Get("X-Test-Jwt-Metadata")) }))
	jwks := sample(t, "jwks.json")
	idp := proxytest.ServeHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, jwks) }))
	_, bport, _ := strings.Cut(backend, ":")
	_, jport, _ := strings.Cut(idp, ":")
	p := proxytest.Start(t, strings.NewReplacer("BACKEND_PORT", bport, "JWKS_PORT", jport).Replace(istioBootstrap))
	base := "http://" + p.ListenerAddr("0.0.0.0_8000").String() + "/headers"
	client := &http.Client{}
	t.Cleanup(client.CloseIdleConnections)
	get := func(token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", base, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	if code, body := get(""); code != 200 || body != "" {
		t.Fatalf("no token: got %d %q, want 200 without metadata", code, body)
	}
	for _, f := range []string{"demo.jwt", "groups-scope.jwt"} {
		code, body := get(sample(t, f))
		var m map[string]map[string]any
		if err := json.Unmarshal([]byte(body), &m); code != 200 || err != nil || m["payload"]["iss"] != "testing@secure.istio.io" {
			t.Fatalf("%s: got %d %q (%v), want 200 with the payload in metadata", f, code, body, err)
		}
	}
	if code, body := get("deadbeef"); code != 401 || body != "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections" {
		t.Fatalf("bad token: got %d %q", code, body)
	}
	const prefix = "http.inbound_0.0.0.0_8000.jwt_authn."
	if a, d, f := p.Stats().CounterValue(prefix+"allowed"), p.Stats().CounterValue(prefix+"denied"), p.Stats().CounterValue(prefix+"jwks_fetch_success"); a != 3 || d != 1 || f != 1 {
		t.Fatalf("allowed, denied, jwks_fetch_success = %d, %d, %d; want 3, 1, 1", a, d, f)
	}
}
