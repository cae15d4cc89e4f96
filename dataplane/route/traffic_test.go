package route

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// miniRouter is the smallest router filter that drives a Table the way the
// HTTP connection manager does: select, answer locally or pick a cluster,
// rewrite, mutate headers, forward, mutate the response.
type miniRouter struct {
	tb       *Table
	clusters map[string]string // cluster name → 127.0.0.1:port
	rt       http.RoundTripper
}

func (m *miniRouter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e := m.tb.Select(r)
	switch {
	case e == nil:
		http.Error(w, "route not found (NR)", http.StatusNotFound)
		return
	case e.Direct != nil:
		e.MutateResponse(w.Header(), nil)
		w.WriteHeader(e.Direct.Status)
		w.Write(e.Direct.Body)
		return
	case e.Redirect != nil:
		code, loc := e.Redirect.Location(r)
		w.Header().Set("Location", loc)
		w.WriteHeader(code)
		return
	}
	a := e.Action
	wc := a.Choose(rand.Uint64())
	addr := m.clusters[a.ClusterName(r, wc)]
	if addr == "" {
		http.Error(w, "cluster not found (NC)", a.ClusterNotFoundStatus)
		return
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	a.RewritePath(out, e)
	raddr, _ := net.ResolveTCPAddr("tcp", r.RemoteAddr)
	e.MutateRequest(out.Header, wc, &core.ConnInfo{RemoteAddr: raddr})
	if h, ok := a.HostRewrite(out, wc); ok {
		out.Host = h
	}
	out.URL.Scheme, out.URL.Host = "http", addr
	resp, err := m.rt.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer resp.Body.Close()
	e.MutateResponse(resp.Header, wc)
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

func backend(t *testing.T, name string) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "app")
		fmt.Fprintf(w, "%s %s host=%s x-route=%s orig=%s", name, r.URL.RequestURI(), r.Host, r.Header.Get("X-Route"), r.Header.Get("X-Envoy-Original-Path"))
	}))
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

func TestTableOverRealTraffic(t *testing.T) {
	tb := mustCompile(t, `
name: "8080"
virtual_hosts:
- name: bookinfo
  domains: ["bookinfo.local", "bookinfo.local:*"]
  response_headers_to_remove: [server]
  routes:
  - name: v2-for-jason
    match: {prefix: /reviews, headers: [{name: end-user, string_match: {exact: jason}}]}
    request_headers_to_add: [{header: {key: x-route, value: v2-for-jason}}]
    route: {cluster: reviews-v2}
  - name: api
    match: {prefix: /api/v1/}
    request_headers_to_add: [{header: {key: x-route, value: api}}]
    route: {cluster: reviews-v1, prefix_rewrite: /, host_rewrite_literal: reviews.internal}
  - name: split
    match: {path: /split}
    route: {weighted_clusters: {clusters: [{name: reviews-v1, weight: 50}, {name: reviews-v2, weight: 50}]}}
  - name: moved
    match: {prefix: /old}
    redirect: {prefix_rewrite: /new, response_code: FOUND}
  - name: health
    match: {path: /healthz}
    direct_response: {status: 200, body: {inline_string: "ok"}}
  - name: missing
    match: {path: /missing}
    route: {cluster: nowhere, cluster_not_found_response_code: NOT_FOUND}
`)
	mr := &miniRouter{
		tb:       tb,
		clusters: map[string]string{"reviews-v1": backend(t, "v1"), "reviews-v2": backend(t, "v2")},
		rt:       &http.Transport{MaxIdleConnsPerHost: 4},
	}
	plain := httptest.NewServer(mr)
	t.Cleanup(plain.Close)
	h2 := httptest.NewUnstartedServer(mr)
	h2.EnableHTTP2 = true
	h2.StartTLS()
	t.Cleanup(h2.Close)

	for _, srv := range []struct {
		name   string
		base   string
		client *http.Client
		proto  int
	}{
		{"HTTP/1.1", plain.URL, plain.Client(), 1},
		{"HTTP/2", h2.URL, h2.Client(), 2},
	} {
		t.Run(srv.name, func(t *testing.T) {
			c := *srv.client
			c.Timeout = 10 * time.Second
			c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
			do := func(path string, hdr map[string]string) (*http.Response, string) {
				t.Helper()
				req, _ := http.NewRequest("GET", srv.base+path, nil)
				req.Host = "bookinfo.local"
				for k, v := range hdr {
					req.Header.Set(k, v)
				}
				resp, err := c.Do(req)
				if err != nil {
					t.Fatalf("GET %s: %v", path, err)
				}
				defer resp.Body.Close()
				if resp.ProtoMajor != srv.proto {
					t.Fatalf("GET %s: served over %s", path, resp.Proto)
				}
				b, _ := io.ReadAll(resp.Body)
				return resp, string(b)
			}
			if resp, body := do("/reviews/1", map[string]string{"end-user": "jason"}); resp.StatusCode != 200 || !strings.HasPrefix(body, "v2 /reviews/1 ") || !strings.Contains(body, "x-route=v2-for-jason") || resp.Header.Get("Server") != "" {
				t.Errorf("jason: %d %q server=%q", resp.StatusCode, body, resp.Header.Get("Server"))
			}
			if resp, body := do("/reviews/1", nil); resp.StatusCode != 404 {
				t.Errorf("no route for /reviews without jason: %d %q", resp.StatusCode, body)
			}
			if _, body := do("/api/v1/ratings?x=1", nil); body != "v1 /ratings?x=1 host=reviews.internal x-route=api orig=/api/v1/ratings?x=1" {
				t.Errorf("api rewrite: %q", body)
			}
			if resp, _ := do("/old/page", nil); resp.StatusCode != 302 || !strings.HasSuffix(resp.Header.Get("Location"), "://bookinfo.local/new/page") {
				t.Errorf("redirect: %d %q", resp.StatusCode, resp.Header.Get("Location"))
			}
			if resp, body := do("/healthz", nil); resp.StatusCode != 200 || body != "ok" {
				t.Errorf("direct: %d %q", resp.StatusCode, body)
			}
			if resp, _ := do("/missing", nil); resp.StatusCode != 404 {
				t.Errorf("cluster_not_found_response_code: %d", resp.StatusCode)
			}
			seen := map[string]int{}
			for range 200 {
				_, body := do("/split", nil)
				seen[body[:2]]++
			}
			// 50/50 over 200 requests: each side far from 0 (p < 1e-20 for < 40).
			if seen["v1"] < 40 || seen["v2"] < 40 || seen["v1"]+seen["v2"] != 200 {
				t.Errorf("split: %v", seen)
			}
		})
	}
}
