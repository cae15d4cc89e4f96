package validation

import (
	"strings"
	"testing"
)

func TestVirtualService(t *testing.T) {
	runCases(t, []vcase{
		{"valid", vsDoc("hosts: [reviews]\nhttp:\n- " + indent(okRoute, "  ")[2:]), nil},
		{"weights must sum to 100", vsDoc(`hosts: [reviews]
http:
- route:
  - destination: {host: reviews, subset: v1}
    weight: 50
  - destination: {host: reviews, subset: v2}
    weight: 40
`), []string{"spec.http[0].route: weights sum to 90; the weights of a route's destinations must add up to 100"}},
		{"single destination may omit weight", vsDoc(`hosts: [reviews]
http:
- route:
  - destination: {host: reviews}
    weight: 0
`), nil},
		{"weight out of range", vsDoc(`hosts: [reviews]
http:
- route:
  - destination: {host: reviews}
    weight: 120
`), []string{"spec.http[0].route[0].weight: weight 120 is out of range; use 0-100"}},
		{"no hosts on a gateway-bound vs means delegate", vsDoc(`gateways: [gw]
http:
- ` + indent(okRoute, "  ")[2:]), []string{"spec.gateways: a delegate VirtualService (one with no hosts) must not name gateways; its root VirtualService binds it"}},
		{"bad host", vsDoc("hosts: [\"foo.*.com\", \"Bad_Host\", \"*foo.com\"]\nhttp:\n- " + indent(okRoute, "  ")[2:]), []string{
			`spec.hosts[0]: "foo.*.com" is not a valid host: a wildcard is allowed only as the first label (*.example.com)`,
			`spec.hosts[1]: "Bad_Host" is not a valid host: label "Bad_Host" is invalid; use at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit`,
			`spec.hosts[2]: "*foo.com" is not a valid host: a wildcard must be the whole first label, as in *.example.com`,
		}},
		{"star host on mesh", vsDoc("hosts: [\"*\"]\nhttp:\n- " + indent(okRoute, "  ")[2:]), []string{
			`spec.hosts[0]: host "*" is not allowed for a VirtualService bound to the mesh; list the service hosts, or bind it to a gateway only`}},
		{"gateway names", vsDoc("hosts: [a.example.com]\ngateways: [\"Bad/gw\", \"ns/\", mesh, ns/gw]\nhttp:\n- " + indent(okRoute, "  ")[2:]), []string{
			`spec.gateways[0]: gateway "Bad/gw": namespace "Bad" is invalid; use at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit`,
			`spec.gateways[1]: gateway "ns/" has an empty namespace or name; write namespace/name, name, or mesh`,
		}},
		{"overlapping hosts", vsDoc("hosts: [\"*.example.com\", a.example.com, b.other.com, 10.0.0.1]\nhttp:\n- " + indent(okRoute, "  ")[2:]), []string{
			`spec.hosts[1]: host "a.example.com" overlaps spec.hosts[0] "*.example.com"; list each host once`}},
		{"jwt claim routing needs a gateway", vsDoc(`hosts: [reviews]
http:
- match:
  - headers:
      "@request.auth.claims.group": {exact: admin}
  ` + indent(okRoute, "  ")[2:]), []string{
			"spec.http[0].match[0].headers[@request.auth.claims.group]: routing on JWT claims works only on gateways; bind this VirtualService to a gateway (not mesh)"}},
		{"legacy gateway name", vsDoc("hosts: [a.example.com]\ngateways: [gw.istio-system]\nhttp:\n- " + indent(okRoute, "  ")[2:]), []string{
			`warning: spec.gateways[0]: gateway "gw.istio-system" uses the legacy name.namespace form; write istio-system/gw`}},
		{"catch-all rule first", vsDoc(`hosts: [reviews]
http:
- match: [{}]
  ` + indent(okRoute, "  ")[2:] + `- match: [{uri: {prefix: /a}}]
  ` + indent(okRoute, "  ")[2:] + `- ` + indent(okRoute, "  ")[2:]), []string{
			"warning: spec.http[1]: is never used: spec.http[0] matches every request before it; move the catch-all rule last",
			"warning: spec.http[2]: is never used: spec.http[0] matches every request before it; move the catch-all rule last",
		}},
		{"retries disabled but configured", vsDoc("hosts: [reviews]\nhttp:\n- retries: {attempts: 0, retryOn: 5xx}\n  " + indent(okRoute, "  ")[2:]), []string{
			"spec.http[0].retries.attempts: is 0, which disables retries, yet other retry settings are given; set attempts or remove retries"}},
		{"redirect scheme and huge regex", vsDoc(`hosts: [reviews]
http:
- match:
  - uri: {regex: "` + strings.Repeat("a", 1025) + `"}
  redirect: {scheme: ftp}
`), []string{
			"spec.http[0].match[0].uri.regex: regex is 1025 characters; the limit is 1024",
			`spec.http[0].redirect.scheme: "ftp" is not http or https`,
		}},
		{"direct response body size", vsDoc("hosts: [reviews]\nhttp:\n- directResponse: {status: 200, body: {string: \"" + strings.Repeat("x", 200<<10) + "\"}}\n"), []string{
			"warning: spec.http[0].directResponse.body: is 204800 bytes; bodies over 100 KiB slow down every push of this route"}},
		{"sni ip", vsDoc("hosts: [\"*\"]\ngateways: [gw]\ntls:\n- match: [{sniHosts: [10.0.0.1]}]\n  route: [{destination: {host: a.example.com}}]\n"), []string{
			`warning: spec.tls[0].match[0].sniHosts[0]: "10.0.0.1" is an IP address; SNI carries host names and most clients never send an IP`}},
		{"abort without error", vsDoc("hosts: [reviews]\nhttp:\n- fault: {abort: {percentage: {value: 0.00001}}}\n  " + indent(okRoute, "  ")[2:]), []string{
			"spec.http[0].fault.abort.percentage.value: percentage 1e-05 is below 0.0001, the finest Envoy honours; use 0 or at least 0.0001",
			"warning: spec.http[0].fault.abort: has no httpStatus or grpcStatus, so it aborts nothing; give the error to return",
		}},
		{"no routes", vsDoc("hosts: [reviews]\n"), []string{"spec: has no http, tcp or tls routes; add at least one route"}},
		{"invalid regex in uri", vsDoc(`hosts: [reviews]
http:
- match:
  - uri: {regex: "/api/(v1"}
  ` + indent(okRoute, "  ")[2:]), []string{"spec.http[0].match[0].uri.regex: regex \"/api/(v1\" does not compile under RE2: error parsing regexp: missing closing ): `/api/(v1`"}},
		{"perl regex is not RE2", vsDoc(`hosts: [reviews]
http:
- match:
  - headers:
      end-user: {regex: "(?!jason)"}
  ` + indent(okRoute, "  ")[2:]), []string{"spec.http[0].match[0].headers[end-user].regex: regex \"(?!jason)\" does not compile under RE2: error parsing regexp: invalid or unsupported Perl syntax: `(?!`"}},
		{"header names: upper case warns, non-tokens fail", vsDoc(`hosts: [reviews]
http:
- match:
  - headers:
      End-User: {exact: jason}
    withoutHeaders:
      "bad header": {exact: x}
    queryParams:
      q: {regex: ""}
  ` + indent(okRoute, "  ")[2:]), []string{
			`spec.http[0].match[0].withoutHeaders[bad header]: header name "bad header" is not a valid HTTP token`,
			`spec.http[0].match[0].queryParams[q].regex: is empty; give a regex or use prefix/exact`,
			`warning: spec.http[0].match[0].headers[End-User]: header name "End-User" should be lowercase, as Istio's API asks; write "end-user"`,
		}},
		{"match port and labels", vsDoc(`hosts: [reviews]
http:
- match:
  - port: 70000
    sourceLabels: {"app": "a b"}
    sourceNamespace: Foo
  ` + indent(okRoute, "  ")[2:]), []string{
			`spec.http[0].match[0].port: port 70000 is out of range; use 1-65535`,
			`spec.http[0].match[0].sourceLabels[app]: label value "a b" is invalid; use at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit`,
			`spec.http[0].match[0].sourceNamespace: "Foo" is not a valid namespace; use at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit`,
		}},
		{"destination fields", vsDoc(`hosts: [reviews]
http:
- route:
  - destination: {host: "*", subset: V1, port: {number: 0}}
`), []string{
			`spec.http[0].route[0].destination.host: "*" is not a destination; name the service`,
			`spec.http[0].route[0].destination.subset: subset name "V1" is invalid; use at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit`,
			`spec.http[0].route[0].destination.port.number: port 0 is out of range; use 1-65535`,
		}},
		{"route and redirect", vsDoc(`hosts: [reviews]
http:
- redirect: {uri: /new}
  rewrite: {uri: /x}
  ` + indent(okRoute, "  ")[2:]), []string{
			"spec.http[0]: sets more than one of route, redirect, directResponse and delegate; keep exactly one",
			"spec.http[0].rewrite: cannot be combined with redirect, which answers the client without forwarding",
		}},
		{"no action", vsDoc("hosts: [reviews]\nhttp:\n- timeout: 1s\n"), []string{"spec.http[0]: has no route, redirect, directResponse or delegate; give exactly one"}},
		{"redirect fields", vsDoc(`hosts: [reviews]
http:
- redirect: {redirectCode: 200}
`), []string{
			"spec.http[0].redirect: changes nothing; set uri, authority, port, scheme or prefixRewrite",
			"spec.http[0].redirect.redirectCode: 200 is not a redirect code; use a 3xx code such as 301 or 302",
		}},
		{"direct response status", vsDoc("hosts: [reviews]\nhttp:\n- directResponse: {status: 99}\n"), []string{"spec.http[0].directResponse.status: status 99 is out of range; use 200-599"}},
		{"delegate on a delegate", vsDoc("http:\n- delegate: {name: \"\"}\n"), []string{
			"spec.http[0].delegate: a delegate VirtualService cannot delegate again; only a root VirtualService (one with hosts) may",
			"spec.http[0].delegate.name: is empty; name the delegate VirtualService",
		}},
		{"delegate with tcp", vsDoc("tcp:\n- route:\n  - destination: {host: a}\n"), []string{"spec.tcp: a delegate VirtualService (one with no hosts) can have only http routes"}},
		{"rewrite regex", vsDoc(`hosts: [reviews]
http:
- rewrite:
    uri: /a
    uriRegexRewrite: {match: "[", rewrite: ""}
  ` + indent(okRoute, "  ")[2:]), []string{
			"spec.http[0].rewrite: sets both uri and uriRegexRewrite; keep one",
			"spec.http[0].rewrite.uriRegexRewrite.match: regex \"[\" does not compile under RE2: error parsing regexp: missing closing ]: `[`",
			"spec.http[0].rewrite.uriRegexRewrite.rewrite: is empty; give the replacement",
		}},
		{"empty rewrite", vsDoc("hosts: [reviews]\nhttp:\n- rewrite: {}\n  " + indent(okRoute, "  ")[2:]), []string{"spec.http[0].rewrite: changes nothing; set uri, authority or uriRegexRewrite"}},
		{"timeouts and retries", vsDoc(`hosts: [reviews]
http:
- timeout: -1s
  retries:
    attempts: -1
    perTryTimeout: 0s
    retryOn: "5xx,connect-failure,503,999,bogus,unavailable"
  ` + indent(okRoute, "  ")[2:]), []string{
			"spec.http[0].timeout: duration -1s must be positive",
			"spec.http[0].retries.attempts: -1 is negative; use 0 to disable retries",
			"spec.http[0].retries.perTryTimeout: duration 0s must be positive",
			"spec.http[0].retries.retryOn: 999 is not an HTTP status code",
			`spec.http[0].retries.retryOn: "bogus" is not a retry condition; use Envoy's (5xx, gateway-error, reset, connect-failure, retriable-4xx, refused-stream, retriable-status-codes, …), gRPC's (cancelled, deadline-exceeded, internal, resource-exhausted, unavailable) or a status code`,
		}},
		{"zero timeout is refused, as by Istio", vsDoc("hosts: [reviews]\nhttp:\n- timeout: 0s\n  " + indent(okRoute, "  ")[2:]), []string{"spec.http[0].timeout: duration 0s must be positive"}},
		{"fault and rewrite with direct response", vsDoc(`hosts: [reviews]
http:
- directResponse: {status: 503}
  rewrite: {uri: /x}
  fault: {abort: {httpStatus: 500}}
`), []string{
			"spec.http[0].rewrite: cannot be combined with directResponse, which answers the client without forwarding",
			"spec.http[0].fault: cannot be combined with directResponse, which answers the client without forwarding",
		}},
		{"pseudo headers, present match and empty prefix", vsDoc(`hosts: [reviews]
http:
- match:
  - headers:
      ":authority": {exact: a.example.com}
    withoutHeaders:
      x-debug: {regex: "*"}
    method: {prefix: ""}
    uri: {prefix: ""}
  ` + indent(okRoute, "  ")[2:]), []string{"spec.http[0].match[0].method.prefix: is empty; give a prefix, or remove the match to match everything"}},
		{"fault", vsDoc(`hosts: [reviews]
http:
- fault:
    delay:
      percentage: {value: 101}
    abort:
      httpStatus: 700
      percentage: {value: -1}
  ` + indent(okRoute, "  ")[2:]), []string{
			"spec.http[0].fault.delay.percentage.value: percentage 101 is out of range; use 0-100",
			"spec.http[0].fault.delay: has no fixedDelay; give the delay to inject",
			"spec.http[0].fault.abort.percentage.value: percentage -1 is out of range; use 0-100",
			"spec.http[0].fault.abort.httpStatus: status 700 is out of range; use 200-599",
		}},
		{"empty fault and grpc status", vsDoc(`hosts: [reviews]
http:
- fault: {}
  ` + indent(okRoute, "  ")[2:] + `- fault:
    abort: {grpcStatus: NOPE}
  ` + indent(okRoute, "  ")[2:]), []string{
			"spec.http[0].fault: injects nothing; give delay, abort or both",
			`spec.http[1].fault.abort.grpcStatus: "NOPE" is not a gRPC status name; use one such as UNAVAILABLE or DEADLINE_EXCEEDED`,
			"warning: spec.http[1]: is never used: spec.http[0] matches every request before it; move the catch-all rule last",
		}},
		{"mirror and mirrors", vsDoc(`hosts: [reviews]
http:
- mirror: {host: a}
  mirrors:
  - destination: {host: b}
    percentage: {value: 200}
  mirrorPercentage: {value: 150}
  mirrorPercent: 50
  ` + indent(okRoute, "  ")[2:]), []string{
			"spec.http[0].mirrors: cannot be combined with mirror; move mirror into mirrors",
			"spec.http[0].mirrorPercentage.value: percentage 150 is out of range; use 0-100",
			"spec.http[0].mirrors[0].percentage.value: percentage 200 is out of range; use 0-100",
			"warning: spec.http[0].mirrorPercent: is deprecated; use mirrorPercentage",
		}},
		{"cors", vsDoc(`hosts: [reviews]
http:
- corsPolicy:
    allowOrigins:
    - regex: "*.example.com"
    - {}
    allowMethods: [GET, get]
    allowHeaders: ["X-Ok", "bad header"]
    maxAge: 1.5s
  ` + indent(okRoute, "  ")[2:]), []string{
			"spec.http[0].corsPolicy.allowOrigins[0].regex: regex \"*.example.com\" does not compile under RE2: error parsing regexp: missing argument to repetition operator: `*`",
			"spec.http[0].corsPolicy.allowOrigins[1]: is empty; give exact, prefix or regex",
			`spec.http[0].corsPolicy.allowMethods[1]: "get" is not an HTTP method; use an upper-case method such as GET`,
			`spec.http[0].corsPolicy.allowHeaders[1]: "bad header" is not a valid header name`,
			"spec.http[0].corsPolicy.maxAge: must be whole seconds; browsers cache preflights by the second",
		}},
		{"header operations", vsDoc(`hosts: [reviews]
http:
- headers:
    request:
      set: {":authority": x, "X-Up": v, "host": h}
      remove: [host]
    response:
      set: {":status": "200"}
  route:
  - destination: {host: reviews}
    headers:
      response:
        add: {"": z}
`), []string{
			`spec.http[0].route[0].headers.response.add[]: header name is empty`,
			`spec.http[0].headers.request.remove[0]: header "host" cannot be changed here; only request set/add may change the authority (or use rewrite.authority)`,
			`spec.http[0].headers.response.set[:status]: header ":status" cannot be changed here; only request set/add may change the authority (or use rewrite.authority)`,
			`spec.http[0].headers.request.set[host]: sets the authority a second time; set it once, in rewrite.authority or one header operation`,
			`warning: spec.http[0].headers.request.set[X-Up]: header name "X-Up" should be lowercase, as Istio's API asks; write "x-up"`,
		}},
		{"tls route sni outside hosts", vsDoc(`hosts: ["*.example.com"]
tls:
- match:
  - sniHosts: [a.example.com, b.other.com]
    port: 443
  route:
  - destination: {host: a.example.com}
- match:
  - sniHosts: []
  route: []
`), []string{
			`spec.tls[0].match[0].sniHosts[1]: SNI host "b.other.com" is not within any of the VirtualService hosts [*.example.com]; add it to spec.hosts or fix the name`,
			"spec.tls[1].match[0].sniHosts: is empty; a TLS match needs at least one SNI host",
			"spec.tls[1].route: is empty; a TLS route needs at least one destination",
		}},
		{"tls route without match", vsDoc("hosts: [a.example.com]\ntls:\n- route:\n  - destination: {host: a.example.com}\n"), []string{
			"spec.tls[0].match: is empty; a TLS route needs at least one match with sniHosts"}},
		{"tcp route", vsDoc(`hosts: [db]
tcp:
- match:
  - destinationSubnets: ["10.0.0.0/33", "1.2.3.4"]
  route:
  - destination: {host: db}
    weight: 60
  - destination: {host: db2}
    weight: 60
`), []string{
			`spec.tcp[0].match[0].destinationSubnets[0]: "10.0.0.0/33" is not a valid CIDR block: netip.ParsePrefix("10.0.0.0/33"): prefix length out of range`,
			"spec.tcp[0].route: weights sum to 120; the weights of a route's destinations must add up to 100",
		}},
		{"exportTo", vsDoc("hosts: [reviews]\nexportTo: [\"*\", \".\", \".\", \"Bad\"]\nhttp:\n- " + indent(okRoute, "  ")[2:]), []string{
			`spec.exportTo[2]: "." is listed twice`,
			`spec.exportTo[3]: "Bad" is not ".", "*", "~" or a namespace name`,
			`spec.exportTo: "*" and "~" must be the only entry when present`,
		}},
	})
}
