package route

import "testing"

func TestSelectIndex(t *testing.T) {
	tb := mustCompile(t, `
name: "9080"
virtual_hosts:
- name: reviews
  domains: ["reviews", "reviews:9080"]
  routes:
  - match: {prefix: "/", headers: [{name: end-user, string_match: {exact: jason}}]}
    route: {cluster: v2}
  - match: {prefix: "/"}
    route: {cluster: v1}
`)
	r := newReq("GET", "http://reviews:9080/reviews/0")
	if e, i := tb.SelectIndex(r); e == nil || i != 1 || e.Action.Cluster != "v1" {
		t.Errorf("anonymous: %+v, %d; want routes[1] to v1", e, i)
	}
	r.Header.Set("End-User", "jason")
	if e, i := tb.SelectIndex(r); e == nil || i != 0 || e.Action.Cluster != "v2" {
		t.Errorf("jason: %+v, %d; want routes[0] to v2", e, i)
	}
	if e, i := tb.SelectIndex(newReq("GET", "http://ratings:9080/")); e != nil || i != -1 {
		t.Errorf("unknown host: %+v, %d; want no match", e, i)
	}
}
