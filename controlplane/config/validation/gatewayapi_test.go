package validation

import "testing"

func TestKubeGateway(t *testing.T) {
	runCases(t, []vcase{
		{"valid", kgwDoc(`gatewayClassName: istio
listeners:
- {name: http, port: 80, protocol: HTTP, hostname: "*.example.com"}
- name: https
  port: 443
  protocol: HTTPS
  tls: {certificateRefs: [{name: cert}]}
- {name: tls, port: 8443, protocol: TLS, tls: {mode: Passthrough}}
`), nil},
		{"no listeners", kgwDoc("gatewayClassName: \"\"\nlisteners: []\n"), []string{
			"spec.gatewayClassName: is empty; name the GatewayClass, e.g. istio",
			"spec.listeners: has 0 listeners; a Gateway needs 1 to 64",
		}},
		{"listener rules", kgwDoc(`gatewayClassName: istio
listeners:
- {name: http, port: 80, protocol: HTTP, tls: {certificateRefs: [{name: c}]}}
- {name: http, port: 80, protocol: HTTP}
- {name: Bad_Name, port: 0, protocol: FTP, hostname: "1.2.3.4"}
- {name: tcp, port: 9000, protocol: TCP, hostname: a.example.com}
- {name: https, port: 443, protocol: HTTPS}
- {name: https2, port: 444, protocol: HTTPS, tls: {mode: Passthrough}}
`), []string{
			"spec.listeners[0].tls: must not be set for protocol HTTP; use HTTPS or TLS to terminate TLS",
			`spec.listeners[1].name: listener name "http" is already used by spec.listeners[0]; listener names must be unique`,
			"spec.listeners[1]: has the same port, protocol and hostname as spec.listeners[0]; each listener needs a distinct combination",
			`spec.listeners[2].name: "Bad_Name" is not a valid listener name; use lowercase letters, digits, '-' and '.'`,
			"spec.listeners[2].port: port 0 is out of range; use 1-65535",
			`spec.listeners[2].protocol: "FTP" is not a protocol; use HTTP, HTTPS, TLS, TCP, UDP or a domain-prefixed one`,
			`spec.listeners[2].hostname: "1.2.3.4" is not a valid hostname; use lowercase DNS labels, optionally starting with "*." (IP addresses are not allowed)`,
			"spec.listeners[3].hostname: must not be set for protocol TCP, which carries no host name",
			"spec.listeners[4].tls: is required for protocol HTTPS; give certificateRefs",
			"spec.listeners[5].tls.mode: must be Terminate for protocol HTTPS; use protocol TLS to pass TLS through",
		}},
		{"tls listener needs a mode", kgwDoc("gatewayClassName: istio\nlisteners:\n- {name: tls, port: 443, protocol: TLS}\n"), []string{
			"spec.listeners[0].tls.mode: must be set for protocol TLS; use Passthrough, or Terminate with certificateRefs"}},
	})
}

func TestHTTPRoute(t *testing.T) {
	runCases(t, []vcase{
		{"valid", hrDoc(`parentRefs: [{name: gw, sectionName: http}]
hostnames: ["*.example.com"]
rules:
- matches:
  - path: {type: PathPrefix, value: /api}
    headers: [{name: X-Env, value: canary}]
    method: GET
  filters:
  - type: URLRewrite
    urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
  backendRefs:
  - {name: a, port: 80, weight: 90}
  - {name: b, port: 80, weight: 10}
  timeouts: {request: 10s, backendRequest: 2s}
`), nil},
		{"path values", hrDoc(`parentRefs: [{name: gw}]
rules:
- matches:
  - path: {type: Exact, value: "api"}
  - path: {type: PathPrefix, value: "/a//b"}
  - path: {type: PathPrefix, value: "/a/../b"}
  - path: {type: Exact, value: "/a%2Fb"}
  - path: {type: RegularExpression, value: "/(a"}
  backendRefs: [{name: a, port: 80}]
`), []string{
			`spec.rules[0].matches[0].path.value: "api" must be an absolute path starting with /`,
			`spec.rules[0].matches[1].path.value: "/a//b" must not contain //`,
			`spec.rules[0].matches[2].path.value: "/a/../b" must not contain /.. segments`,
			`spec.rules[0].matches[3].path.value: "/a%2Fb" must not contain an encoded slash (%2f)`,
			"spec.rules[0].matches[4].path.value: regex \"/(a\" does not compile under RE2: error parsing regexp: missing closing ): `/(a`",
		}},
		{"header and method", hrDoc(`parentRefs: [{name: gw}]
rules:
- matches:
  - headers: [{name: x-a, value: "1"}, {name: X-A, value: "2"}, {name: "x a", value: "3"}, {name: x-re, type: RegularExpression, value: "("}]
    method: FETCH
  backendRefs: [{name: a, port: 80}]
`), []string{
			`spec.rules[0].matches[0].headers[1].name: "X-A" is matched twice in one match; merge the conditions`,
			`spec.rules[0].matches[0].headers[2].name: "x a" is not a valid header name`,
			"spec.rules[0].matches[0].headers[3].value: regex \"(\" does not compile under RE2: error parsing regexp: missing closing ): `(`",
			`spec.rules[0].matches[0].method: "FETCH" is not an HTTP method; use an upper-case method such as GET`,
		}},
		{"parents, hostnames and rule names", hrDoc(`parentRefs:
- {name: gw, sectionName: http}
- {name: gw}
- {name: gw, sectionName: http}
- {name: other}
hostnames: [a.example.com, a.example.com]
rules:
- name: main
  matches: [{path: {type: Exact, value: "/a b"}}]
  backendRefs: [{name: a, port: 80}]
- name: main
  backendRefs: [{name: a, port: 80}]
`), []string{
			`spec.parentRefs[1]: names parent "gw" again without sectionName or port; say which listener or port of it each entry means`,
			"spec.parentRefs[2]: repeats spec.parentRefs[0] with the same sectionName and port; remove one",
			`spec.hostnames[1]: "a.example.com" is listed twice`,
			`spec.rules[1].name: rule name "main" is already used by spec.rules[0]; rule names must be unique`,
			`spec.rules[0].matches[0].path.value: "/a b" has characters a path cannot hold; percent-encode them`,
		}},
		{"backend refs", hrDoc(`parentRefs: [{name: ""}]
hostnames: ["Foo.com"]
rules:
- backendRefs:
  - {name: a}
  - {name: b, port: 80, weight: 2000000}
  - {name: c, group: example.com, kind: Bucket}
`), []string{
			"spec.parentRefs[0].name: is empty; name the parent Gateway or Service",
			`spec.hostnames[0]: "Foo.com" is not a valid hostname; use lowercase DNS labels, optionally starting with "*." (IP addresses are not allowed)`,
			"spec.rules[0].backendRefs[0].port: is required for a Service backend; give the service port",
			"spec.rules[0].backendRefs[1].weight: weight 2000000 is out of range; use 0-1000000",
		}},
		{"filter exclusivity", hrDoc(`parentRefs: [{name: gw}]
rules:
- filters:
  - type: RequestRedirect
    requestRedirect: {scheme: https, statusCode: 200}
  - type: URLRewrite
    urlRewrite: {hostname: example.com}
  - type: RequestHeaderModifier
    responseHeaderModifier: {set: [{name: a, value: b}]}
  - type: RequestHeaderModifier
    requestHeaderModifier: {}
  backendRefs: [{name: a, port: 80}]
`), []string{
			"spec.rules[0].filters[0].requestRedirect.statusCode: 200 is not a redirect code; use 301, 302, 303, 307 or 308",
			"spec.rules[0].filters[2]: has type RequestHeaderModifier but no requestHeaderModifier; give its settings",
			"spec.rules[0].filters[2].responseHeaderModifier: must not be set on a filter of type RequestHeaderModifier",
			"spec.rules[0].filters[3].requestHeaderModifier: changes nothing; give set, add or remove",
			"spec.rules[0].filters: has both RequestRedirect and URLRewrite; keep one",
			"spec.rules[0].filters: has 2 RequestHeaderModifier filters; merge them into one",
			"spec.rules[0].backendRefs: must be empty when the rule has a RequestRedirect filter; a redirect answers the client itself",
		}},
		{"replace prefix needs one prefix match", hrDoc(`parentRefs: [{name: gw}]
rules:
- matches:
  - path: {type: Exact, value: /a}
  filters:
  - type: URLRewrite
    urlRewrite: {path: {type: ReplacePrefixMatch, replaceFullPath: /b}}
  backendRefs: [{name: a, port: 80}]
`), []string{
			"spec.rules[0].filters[0].urlRewrite.path.replacePrefixMatch: is required with type ReplacePrefixMatch",
			"spec.rules[0].filters[0].urlRewrite.path.replaceFullPath: must not be set with type ReplacePrefixMatch",
			"spec.rules[0].filters[0].urlRewrite.path: ReplacePrefixMatch needs the rule to have exactly one match, of type PathPrefix",
		}},
		{"mirror and timeouts", hrDoc(`parentRefs: [{name: gw}]
rules:
- filters:
  - type: RequestMirror
    requestMirror: {backendRef: {name: m, port: 80}, percent: 50, fraction: {numerator: 5, denominator: 2}}
  backendRefs: [{name: a, port: 80}]
  timeouts: {request: 1s, backendRequest: 2s}
- backendRefs: [{name: a, port: 80}]
  timeouts: {request: 1 day}
`), []string{
			"spec.rules[0].filters[0].requestMirror: sets both percent and fraction; keep one",
			"spec.rules[0].filters[0].requestMirror.fraction.numerator: 5 must be between 0 and the denominator 2",
			"spec.rules[0].timeouts.backendRequest: 2s is longer than timeouts.request 1s; it must not exceed it",
			`spec.rules[1].timeouts.request: "1 day" is not a Gateway API duration; write e.g. 10s, 500ms or 1m30s`,
		}},
	})
}

func TestGRPCTCPRouteAndReferenceGrant(t *testing.T) {
	runCases(t, []vcase{
		{"valid grpc", grDoc(`parentRefs: [{name: gw}]
rules:
- matches:
  - method: {service: helloworld.Greeter, method: SayHello}
  backendRefs: [{name: a, port: 50051}]
`), nil},
		{"grpc method match", grDoc(`parentRefs: [{name: gw}]
rules:
- matches:
  - method: {type: Exact}
  - method: {service: "bad service", method: "1x"}
  - method: {type: RegularExpression, service: "(", method: ".*"}
  filters:
  - type: RequestMirror
  backendRefs: [{name: a, port: 50051}]
`), []string{
			"spec.rules[0].matches[0].method: needs service, method or both",
			`spec.rules[0].matches[1].method.service: "bad service" is not a valid gRPC service name`,
			`spec.rules[0].matches[1].method.method: "1x" is not a valid gRPC method name`,
			"spec.rules[0].matches[2].method.service: regex \"(\" does not compile under RE2: error parsing regexp: missing closing ): `(`",
			"spec.rules[0].filters[0]: has type RequestMirror but no requestMirror; give its settings",
		}},
		{"valid tcp", tcpDoc("parentRefs: [{name: gw, sectionName: tcp}]\nrules:\n- backendRefs: [{name: echo, port: 9000}]\n"), nil},
		{"tcp rules", tcpDoc("parentRefs: [{name: gw}]\nrules:\n- backendRefs: []\n- backendRefs: [{name: echo}]\n"), []string{
			"spec.rules[0].backendRefs: has 0 entries; a TCPRoute rule needs 1 to 16",
			"spec.rules[1].backendRefs[0].port: is required for a Service backend; give the service port",
		}},
		{"valid grant", rgDoc("from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: web}]\nto: [{group: \"\", kind: Service}]\n"), nil},
		{"grant fields", rgDoc("from: [{group: gateway.networking.k8s.io, kind: \"\", namespace: \"\"}]\nto: []\n"), []string{
			"spec.to: has 0 entries; a ReferenceGrant needs 1 to 16",
			"spec.from[0].kind: is empty; give the referring kind, e.g. HTTPRoute",
			"spec.from[0].namespace: is empty; give the namespace of the referring objects",
		}},
	})
}
