package hcm

import (
	"net/url"
	"testing"

	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestNormalizePath(t *testing.T) {
	for _, tc := range []struct {
		in          string
		dots, merge bool
		want        string
	}{
		{"/a/b/../c", true, false, "/a/c"},
		{"/a/./b/.", true, false, "/a/b/"},
		{"/../../etc/passwd", true, false, "/etc/passwd"},
		{"/a//b///c", false, true, "/a/b/c"},
		{"/a//b/../c", true, false, "/a//c"},
		{"/a//b/../c", true, true, "/a/c"},
		{"/a/b%2F..%2Fc", true, false, "/a/b%2F..%2Fc"}, // encoded slashes are not segments
		{"/plain/path", true, true, "/plain/path"},
		{"/x/..", true, false, "/"},
	} {
		u, err := url.Parse("http://h" + tc.in + "?q=1")
		if err != nil {
			t.Fatal(err)
		}
		normalizePath(u, tc.dots, tc.merge)
		if got := u.EscapedPath(); got != tc.want || u.RawQuery != "q=1" {
			t.Errorf("%s (dots %v merge %v): %q query %q, want %q", tc.in, tc.dots, tc.merge, got, u.RawQuery, tc.want)
		}
	}
}

func TestNormalizedPathIsRouted(t *testing.T) {
	e := newEnv(t)
	e.upstream("api", echo("api"))
	e.upstream("other", echo("other"))
	cfg := hcmConfig(t, simpleRoutes(prefixRoute("/api/", "api"), prefixRoute("/", "other")))
	cfg.NormalizePath = wrapperspb.Bool(true)
	cfg.MergeSlashes = true
	e.start(cfg)
	resp, _ := e.get("/public/..//api/./users")
	if resp.Header.Get("X-Upstream") != "api" || resp.Header.Get("X-Seen-Path") != "/api/users" {
		t.Errorf("routed to %q with path %q", resp.Header.Get("X-Upstream"), resp.Header.Get("X-Seen-Path"))
	}
}
