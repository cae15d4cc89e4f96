package route

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
)

// realisticTable is 20 virtual hosts of 10 routes each, shaped like
// istiod's output: domains with and without port, header-matched canary
// routes before prefix routes, a regex route and a catch-all.
func realisticTable(b *testing.B) *Table {
	var y strings.Builder
	y.WriteString("name: \"80\"\nvirtual_hosts:\n")
	for v := range 20 {
		svc := fmt.Sprintf("svc%d.ns%d.svc.cluster.local", v, v%3)
		fmt.Fprintf(&y, "- name: %q\n  domains: [%q, %q, \"svc%d\", \"svc%d:80\"]\n  routes:\n", svc+":80", svc, svc+":80", v, v)
		for r := range 8 {
			fmt.Fprintf(&y, "  - {name: r%d, match: {prefix: /api/v%d/, headers: [{name: end-user, string_match: {exact: user%d}}, {name: x-canary, present_match: true}]}, route: {cluster: c%d-%d}}\n", r, r, r, v, r)
		}
		fmt.Fprintf(&y, "  - {name: re, match: {safe_regex: {regex: \"/items/[0-9]+\"}, headers: [{name: \":method\", string_match: {exact: GET}}]}, route: {cluster: items%d}}\n", v)
		fmt.Fprintf(&y, "  - {name: default, match: {prefix: /}, route: {cluster: outbound|80||%s}}\n", svc)
	}
	y.WriteString("- {name: allow_any, domains: [\"*\"], routes: [{match: {prefix: /}, route: {cluster: PassthroughCluster}}]}\n")
	return mustCompile(b, y.String())
}

func BenchmarkSelect(b *testing.B) {
	tb := realisticTable(b)
	cases := map[string]struct {
		url  string
		hdr  map[string]string
		want string
	}{
		// Falls through eight header-matched routes and the regex.
		"default-route": {"http://svc17.ns2.svc.cluster.local:80/productpage?u=1", nil, "default"},
		"header-match":  {"http://svc5/api/v6/x", map[string]string{"End-User": "user6", "X-Canary": "1"}, "r6"},
		"regex":         {"http://svc9:80/items/12345", map[string]string{"End-User": "someone"}, "re"},
		"passthrough":   {"http://example.com/", nil, ""},
	}
	for name, c := range cases {
		r := httptest.NewRequest("GET", c.url, nil)
		for k, v := range c.hdr {
			r.Header.Set(k, v)
		}
		if e := tb.Select(r); e == nil || e.Name != c.want {
			b.Fatalf("%s: selected %v, want %q", name, e, c.want)
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tb.Select(r)
			}
		})
	}
}
