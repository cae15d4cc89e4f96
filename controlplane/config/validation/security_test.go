package validation

import "testing"

func TestPeerAuthentication(t *testing.T) {
	runCases(t, []vcase{
		{"valid", paDoc("selector: {matchLabels: {app: a}}\nmtls: {mode: STRICT}\nportLevelMtls: {8080: {mode: DISABLE}}\n"), nil},
		{"port level needs selector", paDoc("portLevelMtls: {8080: {mode: DISABLE}}\n"), []string{
			"spec.portLevelMtls: needs spec.selector with matchLabels; port-level mTLS applies to selected workloads only"}},
		{"port zero", paDoc("selector: {matchLabels: {app: a}}\nportLevelMtls: {0: {mode: DISABLE}}\n"), []string{
			"spec.portLevelMtls[0]: port 0 is out of range; use 1-65535"}},
	})
}

func TestAuthorizationPolicy(t *testing.T) {
	runCases(t, []vcase{
		{"valid", apDoc(`selector: {matchLabels: {app: httpbin}}
action: ALLOW
rules:
- from:
  - source: {principals: ["cluster.local/ns/default/sa/curl"], ipBlocks: ["10.0.0.0/8"]}
  to:
  - operation: {methods: [GET], paths: ["/headers", "/api/*", "*/info", "/{*}/x/{**}"], ports: ["8000"]}
  when:
  - key: request.headers[x-token]
    values: ["abc"]
  - key: source.ip
    notValues: ["1.2.3.4"]
  - key: request.auth.claims[groups]
    values: ["admin"]
`), nil},
		{"custom needs provider", apDoc("action: CUSTOM\n"), []string{
			"spec.provider.name: is required with action CUSTOM; name the extension provider from the mesh config",
			"spec.rules: is empty, so this CUSTOM policy never applies; add rules, or one empty rule {} to apply it to every request",
		}},
		{"deny without rules", apDoc("action: DENY\n"), []string{
			"spec.rules: is empty, so this DENY policy never applies; add rules, or one empty rule {} to deny every request"}},
		{"custom cannot see identities", apDoc(`action: CUSTOM
provider: {name: ext-authz}
rules:
- from: [{source: {principals: ["*"], ipBlocks: ["10.0.0.0/8"]}}]
  when: [{key: "request.auth.claims[iss]", values: [a]}]
`), []string{
			"spec.rules[0].from[0].source.principals: is not supported with action CUSTOM; match on ipBlocks, to or when instead",
			`spec.rules[0].when[0].key: "request.auth.claims[iss]" is not supported with action CUSTOM`,
		}},
		{"service accounts with namespaces, target namespace", apDoc(`targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw, namespace: other}]
rules:
- from: [{source: {serviceAccounts: [default/curl], namespaces: [default]}}]
`), []string{
			"spec.targetRefs[0].namespace: must be empty; a policy can target objects in its own namespace only",
			"spec.rules[0].from[0].source: sets serviceAccounts with principals or namespaces; serviceAccounts already name both, keep one form",
		}},
		{"provider only with custom", apDoc("action: DENY\nprovider: {name: ext}\nrules: [{}]\n"), []string{
			"spec.provider: is allowed only with action CUSTOM; this policy's action is DENY"}},
		{"selector and targetRef", apDoc("selector: {matchLabels: {app: a}}\ntargetRef: {kind: Pod, name: p}\n"), []string{
			"spec: sets more than one of selector, targetRef and targetRefs; keep one",
			"spec.targetRef: /Pod cannot be targeted; use a gateway.networking.k8s.io Gateway or GatewayClass, a Service, or a networking.istio.io ServiceEntry",
		}},
		{"empty source and operation", apDoc("rules:\n- from: [{source: {}}]\n  to: [{operation: {}}, {}]\n"), []string{
			"spec.rules[0].from[0].source: is empty; give at least one field, or remove from",
			"spec.rules[0].to[0].operation: is empty; give at least one field, or remove to",
			"spec.rules[0].to[1].operation: is required",
		}},
		{"empty strings and bad values", apDoc(`rules:
- from:
  - source: {namespaces: [""], ipBlocks: ["10.0.0.0/99"]}
  to:
  - operation: {ports: ["http", "70000"], paths: ["/a*b", "/{*}x", "/{**}/a"]}
`), []string{
			"spec.rules[0].from[0].source.namespaces[0]: is empty; give a value or remove it",
			`spec.rules[0].from[0].source.ipBlocks[0]: "10.0.0.0/99" is not a valid CIDR block: netip.ParsePrefix("10.0.0.0/99"): prefix length out of range`,
			`spec.rules[0].to[0].operation.ports[0]: "http" is not a port number; use 1-65535`,
			`spec.rules[0].to[0].operation.ports[1]: "70000" is not a port number; use 1-65535`,
			`spec.rules[0].to[0].operation.paths[0]: path "/a*b": "*" is allowed only alone, as a prefix or as a suffix; use {*} or {**} templates for segments`,
			`spec.rules[0].to[0].operation.paths[1]: path template "/{*}x": segment "{*}x" must be {*}, {**} or plain text`,
			`spec.rules[0].to[0].operation.paths[2]: path template "/{**}/a": {**} must be the last segment`,
		}},
		{"when keys", apDoc(`rules:
- when:
  - key: request.method
    values: [GET]
  - key: destination.port
    values: ["80", "x"]
  - key: request.headers[]
    values: [a]
  - key: source.namespace
  - key: remote.ip
    values: ["300.1.1.1"]
`), []string{
			`spec.rules[0].when[0].key: "request.method" is not a supported condition key; use one of request.headers[NAME], source.ip, remote.ip, source.namespace, source.principal, source.serviceAccount, request.auth.principal, request.auth.audiences, request.auth.presenter, request.auth.claims[NAME], destination.ip, destination.port, connection.sni`,
			`spec.rules[0].when[1].values[1]: "x" is not a port number; use 1-65535`,
			`spec.rules[0].when[2].key: "request.headers[]" must be request.headers[NAME]`,
			`spec.rules[0].when[3]: has neither values nor notValues for key "source.namespace"; give at least one`,
			`spec.rules[0].when[4].values[0]: "300.1.1.1" is not an IP address or CIDR block`,
		}},
	})
}

func TestRequestAuthentication(t *testing.T) {
	runCases(t, []vcase{
		{"valid", raDoc(`selector: {matchLabels: {app: httpbin}}
jwtRules:
- issuer: testing@secure.istio.io
  jwksUri: https://raw.githubusercontent.com/istio/istio/master/security/tools/jwt/samples/jwks.json
  fromHeaders: [{name: x-jwt, prefix: "Bearer "}]
  outputClaimToHeaders: [{header: x-sub, claim: sub}]
`), nil},
		{"issuer and jwks", raDoc(`jwtRules:
- jwksUri: "ftp://example.com/keys"
  jwks: '{"keys": []}'
- issuer: a
  jwksUri: "https:///keys"
- issuer: a
  jwks: "not json"
  fromHeaders: [{name: ""}]
  fromParams: [""]
  outputClaimToHeaders: [{header: x_sub, claim: sub}, {claim: c}]
- jwks: '{"keys": [{"kty": "RSA"}]}'
`), []string{
			"spec.jwtRules[0]: sets both jwksUri and jwks; keep one",
			`spec.jwtRules[0].jwksUri: "ftp://example.com/keys" must be an http:// or https:// URL`,
			`spec.jwtRules[0].jwks: has no keys; give {"keys": [...]}`,
			`spec.jwtRules[1].jwksUri: "https:///keys" has no host`,
			"spec.jwtRules[2].jwks: is not a JSON Web Key Set: invalid character 'o' in literal null (expecting 'u')",
			"spec.jwtRules[2].fromHeaders[0].name: is empty; name the header that carries the token",
			"spec.jwtRules[2].fromParams[0]: is empty; name the query parameter or remove it",
			`spec.jwtRules[2].outputClaimToHeaders[0].header: "x_sub" is not a header name; use letters, digits and '-'`,
			"spec.jwtRules[2].outputClaimToHeaders[1]: needs both claim and header",
			"spec.jwtRules[3].issuer: is empty and so is jwksUri; give the iss claim tokens carry",
		}},
	})
}
