package route

import (
	"strings"
	"testing"
)

func TestCompileErrors(t *testing.T) {
	cases := []struct {
		name, rc, want string
	}{
		{"invalid route regex", `
name: "9080"
virtual_hosts:
- {name: a, domains: [a], routes: [{match: {prefix: /}, route: {cluster: a}}]}
- {name: b, domains: [b], routes: [{match: {prefix: /}, route: {cluster: b}}]}
- {name: reviews, domains: [reviews], routes: [{match: {safe_regex: {regex: "/v(1"}}, route: {cluster: r}}]}`,
			`route_configuration "9080": virtual_hosts[2] "reviews": routes[0].match.safe_regex: error parsing regexp: missing closing ): ` + "`^(?:/v(1)$`"},
		{"named route", `
name: r
virtual_hosts:
- {name: v, domains: ["*"], routes: [{name: bad, match: {prefix: /, headers: [{name: x, string_match: {safe_regex: {regex: "[z-a]"}}}]}, route: {cluster: a}}]}`,
			`route_configuration "r": virtual_hosts[0] "v": routes[0] "bad": match.headers[0].string_match.safe_regex: error parsing regexp: invalid character class range`},
		{"missing cluster specifier", `
name: r
virtual_hosts:
- {name: v, domains: ["*"], routes: [{match: {prefix: /}, route: {timeout: 1s}}]}`,
			`route_configuration "r": virtual_hosts[0] "v": routes[0].route.cluster_specifier: one of cluster, cluster_header, weighted_clusters is required`},
		{"missing action", `
name: r
virtual_hosts:
- {name: v, domains: ["*"], routes: [{match: {prefix: /}}]}`,
			`routes[0].action: one of route, redirect, direct_response is required`},
		{"zero weights", `
name: r
virtual_hosts:
- {name: v, domains: ["*"], routes: [{match: {prefix: /}, route: {weighted_clusters: {clusters: [{name: a, weight: 0}, {name: b}]}}}]}`,
			`routes[0].route.weighted_clusters.clusters: the sum of weights must be greater than 0`},
		{"total_weight mismatch", `
name: r
virtual_hosts:
- {name: v, domains: ["*"], routes: [{match: {prefix: /}, route: {weighted_clusters: {total_weight: 100, clusters: [{name: a, weight: 30}, {name: b, weight: 60}]}}}]}`,
			`routes[0].route.weighted_clusters.total_weight: 100 does not equal the sum of cluster weights 90`},
		{"weighted cluster without name", `
name: r
virtual_hosts:
- {name: v, domains: ["*"], routes: [{match: {prefix: /}, route: {weighted_clusters: {clusters: [{weight: 1}]}}}]}`,
			`routes[0].route.weighted_clusters.clusters[0]: name or cluster_header is required`},
		{"duplicate domain", `
name: r
virtual_hosts:
- {name: v1, domains: ["a.example"], routes: []}
- {name: v2, domains: ["A.example"], routes: []}`,
			`route_configuration "r": virtual_hosts[1] "v2": domains[0]: domain "a.example" is already used by virtual host "v1"`},
		{"wildcard in the middle", `
name: r
virtual_hosts:
- {name: v, domains: ["a.*.example"], routes: []}`,
			`virtual_hosts[0] "v": domains[0]: "a.*.example": a wildcard may only be the first or last character`},
		{"no domains", `
name: r
virtual_hosts:
- {name: v, routes: []}`,
			`virtual_hosts[0] "v": domains: at least one domain is required`},
		{"unknown retry_on", `
name: r
virtual_hosts:
- {name: v, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: a, retry_policy: {retry_on: "5xx,sometimes"}}}]}`,
			`routes[0].route.retry_policy.retry_on: unknown condition "sometimes"`},
		{"unsupported formatter", `
name: r
virtual_hosts:
- {name: v, domains: ["*"], routes: [{match: {prefix: /}, request_headers_to_add: [{header: {key: x, value: "%UPSTREAM_HOST%"}}], route: {cluster: a}}]}`,
			`routes[0].request_headers_to_add[0].header.value: "%UPSTREAM_HOST%": %UPSTREAM_HOST% is not a supported command`},
		{"bad direct status", `
name: r
virtual_hosts:
- {name: v, domains: ["*"], routes: [{match: {prefix: /}, direct_response: {status: 99}}]}`,
			`routes[0].direct_response.status: 99 is not in [200, 599]`},
		{"direct body too large", `
name: r
max_direct_response_body_size_bytes: 3
virtual_hosts:
- {name: v, domains: ["*"], routes: [{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: "four"}}}]}`,
			`routes[0].direct_response.body: 4 bytes exceeds max_direct_response_body_size_bytes 3`},
		{"missing body file", `
name: r
virtual_hosts:
- {name: v, domains: ["*"], routes: [{match: {prefix: /}, direct_response: {status: 200, body: {filename: "/nonexistent/skiff-body"}}}]}`,
			`routes[0].direct_response.body.filename: open /nonexistent/skiff-body: no such file or directory`},
		{"invalid regex rewrite", `
name: r
virtual_hosts:
- {name: v, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: a, regex_rewrite: {pattern: {regex: "("}, substitution: x}}}]}`,
			`routes[0].route.regex_rewrite.pattern: error parsing regexp: missing closing )`},
		{"bad header range", `
name: r
virtual_hosts:
- {name: v, domains: ["*"], routes: [{match: {prefix: /, headers: [{name: x, range_match: {start: 5, end: 5}}]}, route: {cluster: a}}]}`,
			`routes[0].match.headers[0].range_match: start 5 must be less than end 5`},
		{"unsupported match field", `
name: r
virtual_hosts:
- {name: v, domains: ["*"], routes: [{match: {prefix: /, dynamic_metadata: [{filter: f, path: [{key: k}], value: {present_match: true}}]}, route: {cluster: a}}]}`,
			`routes[0].match.dynamic_metadata: is not supported`},
		{"generated cookie", `
name: r
virtual_hosts:
- {name: v, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: a, hash_policy: [{cookie: {name: s, ttl: 10s}}]}}]}`,
			`routes[0].route.hash_policy[0].cookie.ttl: generated cookies (ttl set, cookie "s") are not supported`},
		{"bad cors origin", `
name: r
virtual_hosts:
- name: v
  domains: ["*"]
  typed_per_filter_config:
    envoy.filters.http.cors: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy, allow_origin_string_match: [{safe_regex: {regex: "("}}]}
  routes: []`,
			`virtual_hosts[0] "v": typed_per_filter_config["envoy.filters.http.cors"].allow_origin_string_match[0].safe_regex: error parsing regexp`},
		{"pseudo header mutation", `
name: r
virtual_hosts:
- {name: v, domains: ["*"], request_headers_to_add: [{header: {key: ":authority", value: x}}], routes: []}`,
			`virtual_hosts[0] "v": request_headers_to_add[0].header.key: ":authority" cannot be modified by header mutation`},
		{"backoff max below base", `
name: r
virtual_hosts:
- {name: v, domains: ["*"], retry_policy: {retry_back_off: {base_interval: 1s, max_interval: 0.5s}}, routes: []}`,
			`virtual_hosts[0] "v": retry_policy.retry_back_off.max_interval: 500ms is less than base_interval 1s`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Compile(parseRC(t, c.rc))
			if err == nil {
				t.Fatalf("compiled; want error containing %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error\n  %s\nwant it to contain\n  %s", err, c.want)
			}
		})
	}
}

func TestCompileAcceptsIstioShapes(t *testing.T) {
	// The shape istiod emits for an outbound port route: domains with and
	// without port, a catch-all allow_any vhost and a blackhole.
	tb := mustCompile(t, `
name: "9080"
validate_clusters: false
ignore_port_in_host_matching: false
virtual_hosts:
- name: reviews.default.svc.cluster.local:9080
  domains: ["reviews.default.svc.cluster.local", "reviews", "reviews.default.svc", "reviews.default", "198.19.0.12", "reviews.default.svc.cluster.local:9080", "reviews:9080", "198.19.0.12:9080"]
  include_request_attempt_count: true
  routes:
  - name: default
    match: {prefix: /}
    decorator: {operation: "reviews.default.svc.cluster.local:9080/*"}
    route:
      cluster: outbound|9080||reviews.default.svc.cluster.local
      timeout: 0s
      retry_policy:
        retry_on: connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes
        num_retries: 2
        retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts, typed_config: {"@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate}}]
        host_selection_retry_max_attempts: "5"
        retriable_status_codes: [503]
      max_stream_duration: {max_stream_duration: 0s, grpc_timeout_header_max: 0s}
- name: allow_any
  domains: ["*"]
  routes:
  - name: allow_any
    match: {prefix: /}
    route: {cluster: PassthroughCluster, timeout: 0s, max_stream_duration: {max_stream_duration: 0s, grpc_timeout_header_max: 0s}}
`)
	for host, want := range map[string]string{"reviews:9080": "outbound|9080||reviews.default.svc.cluster.local", "198.19.0.12:9080": "outbound|9080||reviews.default.svc.cluster.local", "example.com": "PassthroughCluster"} {
		r := newReq("GET", "http://"+host+"/reviews/0")
		e := tb.Select(r)
		if e == nil || e.Action.ClusterName(r, nil) != want {
			t.Errorf("%s: %v, want %s", host, e, want)
		}
	}
	e := tb.Select(newReq("GET", "http://reviews:9080/"))
	if !e.Action.Retry.PreviousHosts || !e.Action.IncludeAttemptCount || e.Action.Timeout != 0 {
		t.Errorf("istio route: %+v", e.Action)
	}
}
