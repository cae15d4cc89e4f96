package hcm

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"regexp"
	"strings"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"golang.org/x/net/http2"

	"github.com/skiff-mesh/skiff/dataplane/route"
)

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// echo answers with the request's method, path, body and selected headers
// so a test can see exactly what reached the upstream.
func echo(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Upstream", name)
		w.Header().Set("X-Seen-Path", r.URL.RequestURI())
		w.Header().Set("X-Seen-Host", r.Host)
		for _, k := range []string{"X-Request-Id", "X-Forwarded-For", "X-Forwarded-Proto", "X-Envoy-Expected-Rq-Timeout-Ms",
			"X-Envoy-Original-Path", "X-Envoy-External-Address", "X-Envoy-Internal", "X-Envoy-Retry-On", "Via", "X-Envoy-Attempt-Count", "Connection", "Keep-Alive", "X-Custom", "X-Forwarded-Client-Cert", "User-Agent"} {
			if v := r.Header.Values(k); len(v) > 0 {
				w.Header()["Seen-"+k] = v
			}
		}
		w.Header().Set("Connection", "keep-alive")
		w.Write(b)
	}
}

func TestHTTP1ProxyKeepAliveAndHeaders(t *testing.T) {
	e := newEnv(t)
	e.upstream("backend", echo("backend"))
	e.start(hcmConfig(t, simpleRoutes(prefixRoute("/", "backend"))))

	reused := 0
	for i := 0; i < 3; i++ {
		req, _ := http.NewRequest("POST", e.url("/echo?x=1"), strings.NewReader("hello body"))
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) {
			if ci.Reused {
				reused++
			}
		}}))
		req.Header.Set("Keep-Alive", "timeout=5")
		resp := e.do(req)
		body := readAll(t, resp)
		resp.Body.Close()
		if resp.StatusCode != 200 || body != "hello body" {
			t.Fatalf("status %d body %q", resp.StatusCode, body)
		}
		if got := resp.Header.Get("X-Upstream"); got != "backend" {
			t.Fatalf("answered by %q", got)
		}
		if got := resp.Header.Get("X-Seen-Path"); got != "/echo?x=1" {
			t.Errorf("upstream saw path %q", got)
		}
		if got := resp.Header.Get("Server"); got != "skiff" {
			t.Errorf("server header %q, want skiff", got)
		}
		if resp.Header.Get("X-Envoy-Upstream-Service-Time") == "" {
			t.Error("no x-envoy-upstream-service-time")
		}
		if id := resp.Header.Get("Seen-X-Request-Id"); !uuidV4.MatchString(id) {
			t.Errorf("x-request-id to upstream %q is not a UUIDv4", id)
		}
		if got := resp.Header.Get("Seen-X-Forwarded-Proto"); got != "http" {
			t.Errorf("x-forwarded-proto %q", got)
		}
		if got := resp.Header.Get("Seen-X-Envoy-Expected-Rq-Timeout-Ms"); got != "15000" {
			t.Errorf("x-envoy-expected-rq-timeout-ms %q, want the 15s default", got)
		}
		if got := resp.Header.Get("Seen-Keep-Alive"); got != "" {
			t.Errorf("hop-by-hop keep-alive forwarded: %q", got)
		}
		if resp.Close {
			t.Error("proxy closed a keep-alive connection")
		}
	}
	if reused != 2 {
		t.Errorf("connection reused %d times, want 2", reused)
	}
	if got := e.counter("http.inbound_0.0.0.0_80.downstream_rq_total"); got != 3 {
		t.Errorf("downstream_rq_total %d", got)
	}
	if got := e.counter("http.inbound_0.0.0.0_80.downstream_rq_2xx"); got != 3 {
		t.Errorf("downstream_rq_2xx %d", got)
	}
	if got := e.counter("cluster.backend.upstream_rq_total"); got != 3 {
		t.Errorf("upstream_rq_total %d", got)
	}
	if got := e.counter("cluster.backend.upstream_rq_2xx"); got != 3 {
		t.Errorf("upstream_rq_2xx %d", got)
	}
}

func TestH2CPriorKnowledgeAndH2OverTLS(t *testing.T) {
	e := newEnv(t)
	e.upstream("backend", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Upstream-Proto", r.Proto)
		io.WriteString(w, "via "+r.Header.Get("X-Forwarded-Proto"))
	})
	e.start(hcmConfig(t, simpleRoutes(prefixRoute("/", "backend"))))

	h2c := &http2.Transport{AllowHTTP: true, DialTLSContext: nil}
	h2c.DialTLS = func(network, addr string, _ *tls.Config) (net.Conn, error) { return net.Dial(network, addr) }
	defer h2c.CloseIdleConnections()
	resp, err := (&http.Client{Transport: h2c}).Get(e.url("/h2c"))
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 || body != "via http" {
		t.Fatalf("h2c: proto %s status %d body %q", resp.Proto, resp.StatusCode, body)
	}
	if resp.Header.Get("X-Upstream-Proto") != "HTTP/1.1" {
		t.Errorf("upstream proto %q", resp.Header.Get("X-Upstream-Proto"))
	}

	tr := &http2.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer tr.CloseIdleConnections()
	resp, err = (&http.Client{Transport: tr}).Get("https://" + e.tlsAddr + "/tls")
	if err != nil {
		t.Fatal(err)
	}
	body = readAll(t, resp)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 || body != "via https" {
		t.Fatalf("h2 over TLS: proto %s status %d body %q", resp.Proto, resp.StatusCode, body)
	}

	// HTTP/1.1 over TLS on the same listener (ALPN http/1.1).
	h1 := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}}
	defer h1.CloseIdleConnections()
	resp, err = (&http.Client{Transport: h1}).Get("https://" + e.tlsAddr + "/tls1")
	if err != nil {
		t.Fatal(err)
	}
	body = readAll(t, resp)
	resp.Body.Close()
	if resp.ProtoMajor != 1 || body != "via https" {
		t.Fatalf("h1 over TLS: proto %s body %q", resp.Proto, body)
	}
	if got := e.counter("http.inbound_0.0.0.0_80.downstream_cx_http2_total"); got != 2 {
		t.Errorf("downstream_cx_http2_total %d, want 2", got)
	}
}

func TestShortHTTP10RequestIsNotMistakenForH2(t *testing.T) {
	e := newEnv(t)
	e.upstream("backend", echo("backend"))
	e.start(hcmConfig(t, simpleRoutes(prefixRoute("/", "backend"))))
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.0\r\n\r\n") // 18 bytes: shorter than the h2 preface
	b, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(b), "HTTP/1.0 200") {
		t.Fatalf("response %q", b)
	}
	if strings.Contains(string(b), "Seen-User-Agent") {
		t.Errorf("the proxy added a User-Agent the client never sent: %q", b)
	}
}

func TestLocalRepliesNoRouteNoClusterNoHealthy(t *testing.T) {
	e := newEnv(t)
	e.cluster("empty") // no hosts
	e.start(hcmConfig(t, simpleRoutes(prefixRoute("/nc", "missing"), prefixRoute("/uh", "empty"))))

	resp, body := e.get("/nothing-here")
	if resp.StatusCode != 404 || resp.Header.Get("X-Skiff-Response-Flags") != "NR" {
		t.Errorf("no route: %d %q", resp.StatusCode, resp.Header.Get("X-Skiff-Response-Flags"))
	}
	resp, _ = e.get("/nc")
	if resp.StatusCode != 503 || resp.Header.Get("X-Skiff-Response-Flags") != "NC" {
		t.Errorf("no cluster: %d %q", resp.StatusCode, resp.Header.Get("X-Skiff-Response-Flags"))
	}
	resp, body = e.get("/uh")
	if resp.StatusCode != 503 || body != "no healthy upstream" || resp.Header.Get("X-Skiff-Response-Flags") != "UH" {
		t.Errorf("no healthy: %d %q %q", resp.StatusCode, body, resp.Header.Get("X-Skiff-Response-Flags"))
	}
	if resp.Header.Get("Server") != "skiff" {
		t.Errorf("local reply server header %q", resp.Header.Get("Server"))
	}
	if e.counter("http.inbound_0.0.0.0_80.no_route") != 1 || e.counter("http.inbound_0.0.0.0_80.no_cluster") != 1 {
		t.Errorf("no_route %d no_cluster %d", e.counter("http.inbound_0.0.0.0_80.no_route"), e.counter("http.inbound_0.0.0.0_80.no_cluster"))
	}
	if e.counter("http.inbound_0.0.0.0_80.downstream_rq_5xx") != 2 || e.counter("http.inbound_0.0.0.0_80.downstream_rq_4xx") != 1 {
		t.Error("status class counters wrong")
	}
}

func TestConnectFailureAndOverflow(t *testing.T) {
	e := newEnv(t)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	e.addHost("dead", newTestHost(dead, false))
	e.upstream("full", echo("full"))
	e.cluster("full").maxRequests = -1 // AcquireRequest always fails
	e.start(hcmConfig(t, simpleRoutes(prefixRoute("/dead", "dead"), prefixRoute("/full", "full"))))

	resp, body := e.get("/dead")
	if resp.StatusCode != 503 || body != "upstream connect error or disconnect/reset before headers. reset reason: connection failure" || resp.Header.Get("X-Skiff-Response-Flags") != "UF" {
		t.Errorf("connect failure: %d %q %q", resp.StatusCode, body, resp.Header.Get("X-Skiff-Response-Flags"))
	}
	resp, body = e.get("/full")
	if resp.StatusCode != 503 || resp.Header.Get("X-Envoy-Overloaded") != "true" || resp.Header.Get("X-Skiff-Response-Flags") != "UO" {
		t.Errorf("overflow: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if e.clusters["full"].hosts[0].requests.Load() != 0 {
		t.Error("an overflowed request reached the upstream")
	}
	if e.counter("cluster.full.upstream_rq_pending_overflow") != 1 {
		t.Error("upstream_rq_pending_overflow not counted")
	}
}

func TestRedirectDirectResponseAndRewrites(t *testing.T) {
	e := newEnv(t)
	e.upstream("backend", echo("backend"))
	rc := simpleRoutes(
		&routev3.Route{
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/old"}},
			Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/new"}}},
		},
		&routev3.Route{
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/direct"}},
			Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 418,
				Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "short and stout"}}}},
		},
		&routev3.Route{
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/api/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier:     &routev3.RouteAction_Cluster{Cluster: "backend"},
				PrefixRewrite:        "/v2/",
				HostRewriteSpecifier: &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "internal.example"},
			}},
		},
	)
	e.start(hcmConfig(t, rc))

	resp, _ := e.get("/old")
	if resp.StatusCode != 301 || !strings.HasSuffix(resp.Header.Get("Location"), "/new") {
		t.Errorf("redirect: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body := e.get("/direct")
	if resp.StatusCode != 418 || body != "short and stout" {
		t.Errorf("direct: %d %q", resp.StatusCode, body)
	}
	resp, _ = e.get("/api/users?id=3")
	if got := resp.Header.Get("X-Seen-Path"); got != "/v2/users?id=3" {
		t.Errorf("rewritten path %q", got)
	}
	if got := resp.Header.Get("X-Seen-Host"); got != "internal.example" {
		t.Errorf("rewritten host %q", got)
	}
	if got := resp.Header.Get("Seen-X-Envoy-Original-Path"); got != "/api/users?id=3" {
		t.Errorf("x-envoy-original-path %q", got)
	}
	if e.counter("http.inbound_0.0.0.0_80.rq_redirect") != 1 || e.counter("http.inbound_0.0.0.0_80.rq_direct_response") != 1 {
		t.Error("rq_redirect / rq_direct_response not counted")
	}
}

func TestRDSUpdateChangesRouting(t *testing.T) {
	e := newEnv(t)
	e.upstream("a", echo("a"))
	e.upstream("b", echo("b"))
	cfg := hcmConfig(t, nil)
	cfg.RouteSpecifier = &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "80"}}
	if RDSName(cfg) != "80" {
		t.Fatalf("RDSName %q", RDSName(cfg))
	}
	e.start(cfg)
	resp, _ := e.get("/")
	if resp.StatusCode != 404 {
		t.Fatalf("before RDS: %d, want 404", resp.StatusCode)
	}
	set := func(cluster string) {
		tb, err := route.Compile(simpleRoutes(prefixRoute("/", cluster)))
		if err != nil {
			t.Fatal(err)
		}
		e.routes.Set("80", tb)
	}
	set("a")
	if resp, _ = e.get("/"); resp.Header.Get("X-Upstream") != "a" {
		t.Fatalf("after first RDS: %d %q", resp.StatusCode, resp.Header.Get("X-Upstream"))
	}
	set("b")
	if resp, _ = e.get("/"); resp.Header.Get("X-Upstream") != "b" {
		t.Fatalf("after update: %q", resp.Header.Get("X-Upstream"))
	}
	if names := e.routes.Names(); len(names) != 1 || names[0] != "80" {
		t.Errorf("Names %v", names)
	}
	e.routes.Remove("80")
	if resp, _ = e.get("/"); resp.StatusCode != 404 {
		t.Fatalf("after remove: %d", resp.StatusCode)
	}
}

func TestConcurrentMixedTraffic(t *testing.T) {
	e := newEnv(t)
	e.upstream("backend", echo("backend"))
	e.upstream("backend", echo("backend"))
	a := clusterAction("backend")
	a.RetryPolicy = retryPolicy("5xx", 1)
	e.start(hcmConfig(t, simpleRoutes(actionRoute("/", a))))
	h2 := newH2CClient()
	defer h2.CloseIdleConnections()
	clients := []*http.Client{e.client, {Transport: h2}}
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			c := clients[g%2]
			for i := 0; i < 40; i++ {
				want := fmt.Sprintf("g%d-i%d-%s", g, i, strings.Repeat("b", i*37))
				resp, err := c.Post(e.url(fmt.Sprintf("/c/%d/%d", g, i)), "text/plain", strings.NewReader(want))
				if err != nil {
					errs <- err.Error()
					return
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(got) != want || resp.Header.Get("X-Seen-Path") != fmt.Sprintf("/c/%d/%d", g, i) {
					errs <- fmt.Sprintf("g%d i%d: %d %q", g, i, resp.StatusCode, got)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := e.counter("http.inbound_0.0.0.0_80.downstream_rq_2xx"); got != 320 {
		t.Errorf("downstream_rq_2xx %d, want 320", got)
	}
}
