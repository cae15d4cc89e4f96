//go:build netns

package security

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// settle bounds how long a step waits for its outcome once applied:
// skiffd debounces (100 ms) and pushes, each proxy compiles and swaps.
const settle = 20 * time.Second

// addrs are pod addresses the tasks need: legacy's curl has no sidecar
// to send it to a Service's pods, so it calls them directly (see
// mutualTLS), and the TCP task reaches tcp-echo's undeclared port 9002
// by the pod's address, as Istio's task does.
type addrs struct {
	httpbinFoo, httpbinBar, httpbinLegacy, tcpEcho string
	fooAdmin, barAdmin                             string // the httpbin sidecars' admin
}

// TestSecurityTasks replays Istio's security tasks in one mesh, each
// step's YAML applied with skiff apply and removed with skiff delete,
// with the task's requests and the answers its page shows.
func TestSecurityTasks(t *testing.T) {
	start := time.Now()
	m := startMesh(t)
	t.Logf("mesh ready in %s", time.Since(start).Round(time.Millisecond))
	a := addrs{
		httpbinFoo: m.pod(t, "foo", "httpbin").IP, httpbinBar: m.pod(t, "bar", "httpbin").IP,
		httpbinLegacy: m.pod(t, "legacy", "httpbin").IP, tcpEcho: m.pod(t, "foo", "tcp-echo").IP,
		fooAdmin: m.pod(t, "foo", "httpbin").Admin, barAdmin: m.pod(t, "bar", "httpbin").Admin,
	}
	baseline := []expect{
		m.get("foo", "foo", "/headers", 200, ""), m.get("bar", "foo", "/headers", 200, ""),
		m.get("foo", "bar", "/headers", 200, ""), m.direct(a.httpbinFoo, 200, workload{"foo", "httpbin"}),
		m.tcpExpect("tcp-echo", 9000, true),
	}
	m.converge(t, "baseline: every pod answers before any policy", 60*time.Second, baseline...)
	for _, task := range []struct {
		name string
		run  func(*testing.T, *mesh, addrs)
	}{
		{"MutualTLS", mutualTLS},
		{"AuthenticationPolicy", authenticationPolicy},
		{"AuthorizationHTTP", authorizationHTTP},
		{"AuthorizationDeny", authorizationDeny},
		{"AuthorizationTCP", authorizationTCP},
		{"JWT", jwt},
		{"ExternalAuthorization", externalAuthorization},
	} {
		began := time.Now()
		t.Run(task.name, func(t *testing.T) { task.run(t, m, a) })
		// Each task removes its policies; the next starts from no policy.
		m.converge(t, "back to no policy after "+task.name, settle, baseline...)
		t.Logf("%s: %s", task.name, time.Since(began).Round(time.Millisecond))
	}
}

// Mutual TLS Migration: with no PeerAuthentication (PERMISSIVE) every
// client reaches every httpbin; between sidecars the traffic is mTLS
// (auto mTLS): the server sees the client's SPIFFE identity in
// X-Forwarded-Client-Cert, and its inbound listener counts handshakes.
// Plaintext from legacy (no sidecar) is accepted.
func mutualTLS(t *testing.T, m *mesh, a addrs) {
	var all []expect
	for _, from := range []string{"foo", "bar"} {
		for _, to := range []string{"foo", "bar", "legacy"} {
			all = append(all, m.get(from, to, "/ip", 200, ""))
		}
	}
	// legacy's curl calls the pods by address: see the LegacyByName step.
	all = append(all, m.direct(a.httpbinFoo, 200, workload{"foo", "httpbin"}),
		m.direct(a.httpbinBar, 200, workload{"bar", "httpbin"}),
		m.direct(a.httpbinLegacy, 200, workload{"legacy", "httpbin"}))
	m.converge(t, "PERMISSIVE: curl from foo, bar and legacy to httpbin in foo, bar and legacy", settle, all...)

	// Sidecar clients reached httpbin.bar over mutual TLS: its inbound
	// listener counted TLS handshakes (legacy's plaintext counts none).
	const handshakes = "listener.0.0.0.0_15006.ssl.handshake"
	if n, err := stat(a.barAdmin, handshakes); err != nil || n == 0 {
		t.Errorf("step \"sidecar to sidecar is mTLS\": httpbin.bar's sidecar admin (%s) shows %s = %d (%v) after requests from curl in foo and bar; want handshakes: under auto mTLS sidecars talk mutual TLS\n%s",
			a.barAdmin, handshakes, n, err, m.logTail("bar", "httpbin"))
	}
	// httpbin's /headers shows the client's identity, as Istio's task does.
	m.holds(t, "X-Forwarded-Client-Cert names the client",
		m.get("foo", "bar", "/headers", 200, "X-Forwarded-Client-Cert:"),
		m.get("foo", "bar", "/headers", 200, "URI=spiffe://cluster.local/ns/foo/sa/curl"))

	before, _ := stat(a.barAdmin, handshakes)
	r := m.curl("legacy", "http://"+a.httpbinBar+":8080/headers")
	after, _ := stat(a.barAdmin, handshakes)
	if r.status != 200 || after != before || strings.Contains(r.body, "X-Forwarded-Client-Cert") {
		t.Errorf("step \"legacy → bar is plaintext\": want HTTP 200 without a TLS handshake on httpbin.bar's sidecar (%s: %d → %d) and without X-Forwarded-Client-Cert\n%s", handshakes, before, after, r)
	}

	// Istio's task sends legacy's requests by Service name: in Kubernetes
	// kube-proxy takes a pod without a sidecar from the cluster IP to a pod.
	m.holds(t, "LegacyByName: curl in legacy (no sidecar) → httpbin.foo by its Service name, as Istio's task does",
		m.get("legacy", "foo", "/ip", 200, ""), m.get("legacy", "legacy", "/ip", 200, ""))

	undo := m.policy(t, "strict-mesh", `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls:
    mode: STRICT
`)
	m.converge(t, "mesh-wide STRICT (PeerAuthentication default in istio-system)", settle,
		m.direct(a.httpbinFoo, 0, workload{"foo", "httpbin"}), m.direct(a.httpbinBar, 0, workload{"bar", "httpbin"}),
		m.get("foo", "bar", "/ip", 200, ""), m.get("bar", "foo", "/ip", 200, ""),
		m.get("foo", "legacy", "/ip", 200, ""), m.direct(a.httpbinLegacy, 200, workload{"legacy", "httpbin"}))
	undo()
	m.converge(t, "mesh-wide STRICT removed: PERMISSIVE again", settle,
		m.direct(a.httpbinFoo, 200, workload{"foo", "httpbin"}), m.direct(a.httpbinBar, 200, workload{"bar", "httpbin"}))
}

// Authentication Policy: STRICT per namespace, per workload, a port
// excepted, a workload policy over a namespace one, and DISABLE.
func authenticationPolicy(t *testing.T, m *mesh, a addrs) {
	fooWL, barWL := workload{"foo", "httpbin"}, workload{"bar", "httpbin"}
	undoNS := m.policy(t, "strict-foo", `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: foo
spec:
  mtls:
    mode: STRICT
`)
	m.converge(t, "namespace foo STRICT", settle,
		m.direct(a.httpbinFoo, 0, fooWL), m.direct(a.httpbinBar, 200, barWL),
		m.get("foo", "foo", "/ip", 200, ""), m.get("bar", "foo", "/ip", 200, ""))

	undoWL := m.policy(t, "strict-httpbin-bar", `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: httpbin
  namespace: bar
spec:
  selector:
    matchLabels:
      app: httpbin
  mtls:
    mode: STRICT
`)
	m.converge(t, "workload httpbin in bar STRICT", settle,
		m.direct(a.httpbinBar, 0, barWL), m.direct(a.httpbinFoo, 0, fooWL),
		m.get("foo", "bar", "/ip", 200, ""), m.get("bar", "bar", "/ip", 200, ""))

	m.policy(t, "strict-httpbin-bar", `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: httpbin
  namespace: bar
spec:
  selector:
    matchLabels:
      app: httpbin
  mtls:
    mode: STRICT
  portLevelMtls:
    8080:
      mode: DISABLE
`)
	m.converge(t, "workload httpbin in bar STRICT but port 8080 DISABLE", settle,
		m.direct(a.httpbinBar, 200, barWL), m.get("foo", "bar", "/ip", 200, ""), m.direct(a.httpbinFoo, 0, fooWL))
	undoWL()

	undoOver := m.policy(t, "overwrite-example", `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: overwrite-example
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  mtls:
    mode: PERMISSIVE
`)
	m.converge(t, "workload PERMISSIVE over namespace STRICT in foo", settle,
		m.direct(a.httpbinFoo, 200, fooWL), m.get("bar", "foo", "/ip", 200, ""))
	undoOver()
	m.converge(t, "overwrite-example removed: namespace foo STRICT again", settle, m.direct(a.httpbinFoo, 0, fooWL))
	undoNS()

	m.policy(t, "disable-foo", `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: foo
spec:
  mtls:
    mode: DISABLE
`)
	// Under DISABLE the sidecar takes plaintext only; clients' auto mTLS
	// sees the namespace policy and sends plaintext too.
	const handshakes = "listener.0.0.0.0_15006.ssl.handshake"
	m.converge(t, "namespace foo DISABLE", settle,
		m.direct(a.httpbinFoo, 200, fooWL), m.get("foo", "foo", "/headers", 200, ""), m.get("bar", "foo", "/headers", 200, ""))
	before, _ := stat(a.fooAdmin, handshakes)
	r := m.curl("bar", "http://httpbin.foo:8000/headers")
	after, _ := stat(a.fooAdmin, handshakes)
	if r.status != 200 || after != before || strings.Contains(r.body, "X-Forwarded-Client-Cert") {
		t.Errorf("step \"namespace foo DISABLE\": bar → httpbin.foo: want HTTP 200 in plaintext (no handshake on httpbin.foo's sidecar: %s %d → %d, no X-Forwarded-Client-Cert)\n%s\n%s",
			handshakes, before, after, r, m.logTail("bar", "curl"))
	}
}

// Authorization on HTTP traffic, on httpbin rather than Bookinfo: allow
// nothing, then allow by principal, method and path (with a wildcard), by
// namespace with notPaths; AUDIT changes no outcome.
func authorizationHTTP(t *testing.T, m *mesh, a addrs) {
	undoNothing := m.policy(t, "allow-nothing", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-nothing
  namespace: foo
spec:
  {}
`)
	m.converge(t, "allow-nothing in foo", settle,
		m.get("foo", "foo", "/headers", 403, "RBAC: access denied"), m.get("bar", "foo", "/headers", 403, "RBAC: access denied"),
		m.get("foo", "bar", "/headers", 200, ""))

	undo := m.policy(t, "httpbin-viewer", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: httpbin-viewer
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/foo/sa/curl"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/headers", "/status/*"]
`)
	m.converge(t, "ALLOW GET /headers and /status/* for principal cluster.local/ns/foo/sa/curl", settle,
		m.get("foo", "foo", "/headers", 200, ""), m.get("foo", "foo", "/status/418", 200, ""),
		m.get("foo", "foo", "/ip", 403, "RBAC: access denied"),
		m.get("foo", "foo", "/headers", 403, "RBAC: access denied", "-X", "POST"),
		m.get("bar", "foo", "/headers", 403, "RBAC: access denied"))
	undo()

	undo = m.policy(t, "httpbin-bar", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: httpbin-bar
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  rules:
  - from:
    - source:
        namespaces: ["bar"]
    to:
    - operation:
        notPaths: ["/headers"]
`)
	m.converge(t, "ALLOW from namespace bar to notPaths /headers", settle,
		m.get("bar", "foo", "/ip", 200, ""), m.get("bar", "foo", "/headers", 403, "RBAC: access denied"),
		m.get("foo", "foo", "/ip", 403, "RBAC: access denied"))
	undo()
	undoNothing()
	m.converge(t, "policies removed", settle, m.get("foo", "foo", "/headers", 200, ""))

	m.policy(t, "audit-headers", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: audit-headers
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: AUDIT
  rules:
  - to:
    - operation:
        paths: ["/headers"]
`)
	// The outcome does not change, so first wait for the policy to be in
	// httpbin's sidecar (Istio names its rules ns[foo]-policy[NAME]-rule[N]).
	inDump := expect{
		what: "httpbin.foo's sidecar config_dump", want: "the AUDIT policy audit-headers in its RBAC filter",
		send: func() reply {
			dump, err := adminGet(a.fooAdmin, "/config_dump")
			r := reply{sent: "GET http://" + a.fooAdmin + "/config_dump", status: 200}
			if err != nil {
				r.status, r.stderr = 0, err.Error()
			}
			r.body = fmt.Sprintf("mentions policy[audit-headers]: %v", strings.Contains(dump, "policy[audit-headers]"))
			return r
		},
		ok:   func(r reply) bool { return strings.HasSuffix(r.body, "true") },
		logs: []workload{{"foo", "httpbin"}},
	}
	m.converge(t, "AUDIT policy reaches httpbin.foo", settle, inDump)
	m.converge(t, "AUDIT on /headers changes no outcome", settle,
		m.get("foo", "foo", "/headers", 200, ""), m.get("bar", "foo", "/headers", 200, ""), m.get("foo", "foo", "/ip", 200, ""))
}

// Authorization policies with a deny action (explicit deny): DENY GET,
// then only without x-token: admin, then an ALLOW for /ip beside it.
func authorizationDeny(t *testing.T, m *mesh, _ addrs) {
	m.policy(t, "deny-method-get", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-method-get
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: DENY
  rules:
  - to:
    - operation:
        methods: ["GET"]
`)
	m.converge(t, "DENY GET", settle,
		m.get("foo", "foo", "/get", 403, "RBAC: access denied"), m.get("foo", "foo", "/post", 200, "", "-X", "POST"))

	m.policy(t, "deny-method-get", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-method-get
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: DENY
  rules:
  - to:
    - operation:
        methods: ["GET"]
    when:
    - key: request.headers[x-token]
      notValues: ["admin"]
`)
	admin, guest := []string{"-H", "x-token: admin"}, []string{"-H", "x-token: guest"}
	m.converge(t, "DENY GET unless x-token: admin", settle,
		m.get("foo", "foo", "/get", 200, "", admin...), m.get("foo", "foo", "/get", 403, "RBAC: access denied", guest...))

	m.policy(t, "allow-path-ip", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-path-ip
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - to:
    - operation:
        paths: ["/ip"]
`)
	m.converge(t, "DENY GET unless x-token: admin, and ALLOW /ip", settle,
		m.get("foo", "foo", "/ip", 200, "", admin...), m.get("foo", "foo", "/ip", 403, "RBAC: access denied", guest...),
		m.get("foo", "foo", "/get", 403, "RBAC: access denied", admin...))
}

// Authorization on TCP traffic: tcp-echo answers on 9000 and 9001
// (declared) and 9002 (undeclared: the passthrough chain).
func authorizationTCP(t *testing.T, m *mesh, a addrs) {
	m.converge(t, "TCP without policy", settle,
		m.tcpExpect("tcp-echo", 9000, true), m.tcpExpect("tcp-echo", 9001, true), m.tcpExpect(a.tcpEcho, 9002, true))
	const policy = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: tcp-policy
  namespace: foo
spec:
  selector:
    matchLabels:
      app: tcp-echo
  action: %s
  rules:
  - to:
    - operation:
%s
`
	m.policy(t, "tcp-policy", fmt.Sprintf(policy, "ALLOW", `        ports: ["9000", "9001"]`))
	m.converge(t, "ALLOW ports 9000 and 9001", settle,
		m.tcpExpect("tcp-echo", 9000, true), m.tcpExpect("tcp-echo", 9001, true), m.tcpExpect(a.tcpEcho, 9002, false))

	m.policy(t, "tcp-policy", fmt.Sprintf(policy, "ALLOW", `        ports: ["9000"]`))
	m.converge(t, "ALLOW port 9000 only", settle,
		m.tcpExpect("tcp-echo", 9000, true), m.tcpExpect("tcp-echo", 9001, false))

	m.policy(t, "tcp-policy", fmt.Sprintf(policy, "ALLOW", "        methods: [\"GET\"]\n        ports: [\"9000\"]"))
	m.converge(t, "ALLOW with an HTTP-only field (methods) on TCP: the rule matches nothing", settle,
		m.tcpExpect("tcp-echo", 9000, false), m.tcpExpect("tcp-echo", 9001, false))

	m.policy(t, "tcp-policy", fmt.Sprintf(policy, "DENY", "        methods: [\"GET\"]\n        ports: [\"9000\"]"))
	m.converge(t, "DENY with an HTTP-only field (methods) on TCP: denies all of port 9000", settle,
		m.tcpExpect("tcp-echo", 9000, false), m.tcpExpect("tcp-echo", 9001, true))
}

// JWT: RequestAuthentication alone rejects a bad token (401) but lets a
// request without one through; an AuthorizationPolicy then requires a
// request principal, and a groups claim.
func jwt(t *testing.T, m *mesh, _ addrs) {
	dir := filepath.Join(filepath.Dir(mustAbs(t, "../..")), "shared", "istio-samples", "jwt")
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("Istio's JWT sample %s: %v: these tests use ../shared/istio-samples/jwt beside the repository", name, err)
		}
		return strings.TrimSpace(string(b))
	}
	jwks, demo, groups := read("jwks.json"), read("demo.jwt"), read("groups-scope.jwt")
	bearer := func(tok string) []string { return []string{"-H", "Authorization: Bearer " + tok} }
	// The signature, one character changed: well-formed, signed wrong.
	parts := strings.Split(demo, ".")
	sig := []byte(parts[2])
	if sig[len(sig)/2] == 'A' {
		sig[len(sig)/2] = 'B'
	} else {
		sig[len(sig)/2] = 'A'
	}
	tampered := parts[0] + "." + parts[1] + "." + string(sig)

	m.policy(t, "jwt-example", fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: jwt-example
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  jwtRules:
  - issuer: "testing@secure.istio.io"
    jwks: '%s'
`, jwks))
	m.converge(t, "RequestAuthentication: no token 200, valid token 200, tampered token 401", settle,
		m.get("foo", "foo", "/headers", 200, ""), m.get("foo", "foo", "/headers", 200, "", bearer(demo)...),
		m.get("foo", "foo", "/headers", 401, "Jwt verification fails", bearer(tampered)...),
		m.get("foo", "foo", "/headers", 401, "", bearer("deadbeef")...))

	const require = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: require-jwt
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: ALLOW
  rules:
  - from:
    - source:
        requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"]
`
	m.policy(t, "require-jwt", require)
	m.converge(t, "AuthorizationPolicy requestPrincipals: no token 403, valid 200", settle,
		m.get("foo", "foo", "/headers", 403, "RBAC: access denied"), m.get("foo", "foo", "/headers", 200, "", bearer(demo)...),
		m.get("foo", "foo", "/headers", 401, "", bearer(tampered)...))

	m.policy(t, "require-jwt", require+`    when:
    - key: request.auth.claims[groups]
      values: ["group1"]
`)
	m.converge(t, "claim groups must hold group1: groups-scope.jwt 200, demo.jwt 403", settle,
		m.get("foo", "foo", "/headers", 200, "", bearer(groups)...),
		m.get("foo", "foo", "/headers", 403, "RBAC: access denied", bearer(demo)...))
}

// External Authorization: a CUSTOM policy on /headers sends the check to
// the sample ext-authz (gRPC and HTTP providers from testdata/meshconfig.yaml),
// which allows `x-ext-authz: allow`; other paths are not checked.
func externalAuthorization(t *testing.T, m *mesh, _ addrs) {
	for _, provider := range []string{"grpc", "http"} {
		t.Run(provider, func(t *testing.T) {
			undo := m.policy(t, "ext-authz", fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ext-authz
  namespace: foo
spec:
  selector:
    matchLabels:
      app: httpbin
  action: CUSTOM
  provider:
    name: sample-ext-authz-%s
  rules:
  - to:
    - operation:
        paths: ["/headers"]
`, provider))
			deny, allow := []string{"-H", "x-ext-authz: deny"}, []string{"-H", "x-ext-authz: allow"}
			checked := func(e expect) expect { e.logs = append(e.logs, workload{"foo", "ext-authz"}); return e }
			m.converge(t, "CUSTOM with sample-ext-authz-"+provider, settle,
				checked(m.get("foo", "foo", "/headers", 403, "denied by ext_authz", deny...)),
				checked(m.get("foo", "foo", "/headers", 200, "X-Ext-Authz-Check-Result:allowed", allow...)),
				checked(m.get("foo", "foo", "/ip", 200, "", deny...)))
			undo()
			m.converge(t, "CUSTOM removed", settle, m.get("foo", "foo", "/headers", 200, "", deny...))
		})
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}
