package hcm

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// wsEcho completes a WebSocket-style upgrade and echoes raw bytes.
func wsEcho(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != "websocket" {
		http.Error(w, "want upgrade", 400)
		return
	}
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Upstream-Path: " + r.URL.Path + "\r\n\r\n")
	brw.Flush()
	buf := make([]byte, 1024)
	for {
		n, err := brw.Read(buf)
		if n > 0 {
			c.Write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

func TestWebSocketUpgrade(t *testing.T) {
	e := newEnv(t)
	e.upstream("ws", wsEcho)
	off := clusterAction("ws")
	off.UpgradeConfigs = []*routev3.RouteAction_UpgradeConfig{{UpgradeType: "websocket", Enabled: wrapperspb.Bool(false)}}
	cfg := hcmConfig(t, simpleRoutes(actionRoute("/off", off), prefixRoute("/", "ws")))
	cfg.UpgradeConfigs = []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}}
	e.start(cfg)

	handshake := func(path string) (net.Conn, *bufio.Reader, *http.Response) {
		c, err := net.DialTimeout("tcp", e.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: chat\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c, br, resp
	}
	c, br, resp := handshake("/chat")
	defer c.Close()
	if resp.StatusCode != 101 || resp.Header.Get("X-Upstream-Path") != "/chat" {
		t.Fatalf("handshake: %d %v", resp.StatusCode, resp.Header)
	}
	for _, msg := range []string{"hello", "second frame", strings.Repeat("z", 3000)} {
		io.WriteString(c, msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
			t.Fatalf("echo %q: %q %v", msg[:5], got[:min(5, len(got))], err)
		}
	}
	c2, _, resp2 := handshake("/off")
	c2.Close()
	if resp2.StatusCode != 403 {
		t.Fatalf("upgrade disabled on the route: %d, want 403", resp2.StatusCode)
	}
}

func TestRequestMirroring(t *testing.T) {
	e := newEnv(t)
	e.upstream("main", echo("main"))
	type seen struct{ host, body string }
	got := make(chan seen, 4)
	e.upstream("shadow", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Host, string(b)}
		time.Sleep(300 * time.Millisecond) // a slow mirror must not slow the main response
		w.WriteHeader(500)
	})
	a := clusterAction("main")
	a.RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{Cluster: "shadow"}}
	e.start(hcmConfig(t, simpleRoutes(actionRoute("/", a))))

	req, _ := http.NewRequest("POST", e.url("/m"), strings.NewReader("mirrored body"))
	req.Host = "shop.example:8080"
	start := time.Now()
	resp := e.do(req)
	body := readAll(t, resp)
	resp.Body.Close()
	if resp.StatusCode != 200 || body != "mirrored body" || resp.Header.Get("X-Upstream") != "main" {
		t.Fatalf("main response: %d %q %q", resp.StatusCode, body, resp.Header.Get("X-Upstream"))
	}
	if el := time.Since(start); el > 250*time.Millisecond {
		t.Errorf("main response took %v: mirror was waited for", el)
	}
	select {
	case s := <-got:
		if s.host != "shop.example-shadow:8080" {
			t.Errorf("mirror host %q", s.host)
		}
		if s.body != "mirrored body" {
			t.Errorf("mirror body %q", s.body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("mirror never received the request")
	}
}

func TestUseRemoteAddressHeaders(t *testing.T) {
	for _, tc := range []struct {
		name     string
		internal bool
	}{{"external", false}, {"internal", true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.upstream("backend", echo("backend"))
			cfg := hcmConfig(t, simpleRoutes(prefixRoute("/", "backend")))
			cfg.UseRemoteAddress = wrapperspb.Bool(true)
			cfg.Via = "1.1 skiff"
			cfg.ServerName = "edge"
			if tc.internal {
				cfg.InternalAddressConfig = &hcmv3.HttpConnectionManager_InternalAddressConfig{
					CidrRanges: []*corev3.CidrRange{{AddressPrefix: "127.0.0.0", PrefixLen: wrapperspb.UInt32(8)}}}
			}
			e.start(cfg)
			const id = "11111111-2222-4333-8444-555555555555"
			resp, _ := e.get("/", "X-Forwarded-For", "203.0.113.9", "X-Request-Id", id, "X-Envoy-Retry-On", "5xx", "X-Forwarded-Proto", "https")
			if got := resp.Header.Get("Seen-X-Forwarded-For"); got != "203.0.113.9, 127.0.0.1" {
				t.Errorf("x-forwarded-for %q", got)
			}
			if got := resp.Header.Get("Seen-X-Forwarded-Proto"); got != "http" {
				t.Errorf("x-forwarded-proto %q, want the connection's scheme", got)
			}
			if got := resp.Header.Get("Seen-Via"); got != "1.1 skiff" {
				t.Errorf("via %q", got)
			}
			if got := resp.Header.Get("Server"); got != "edge" {
				t.Errorf("server %q", got)
			}
			reqID := resp.Header.Get("Seen-X-Request-Id")
			retryOn := resp.Header.Get("Seen-X-Envoy-Retry-On")
			if tc.internal {
				if reqID != id || resp.Header.Get("Seen-X-Envoy-Internal") != "true" {
					t.Errorf("internal: request id %q, x-envoy-internal %q", reqID, resp.Header.Get("Seen-X-Envoy-Internal"))
				}
			} else {
				if reqID == id || !uuidV4.MatchString(reqID) {
					t.Errorf("external request id %q should be regenerated", reqID)
				}
				if retryOn != "" {
					t.Errorf("x-envoy-retry-on from an external client reached the upstream")
				}
				if got := resp.Header.Get("Seen-X-Envoy-External-Address"); got != "127.0.0.1" {
					t.Errorf("x-envoy-external-address %q", got)
				}
			}
		})
	}
}

func TestAccessLogDefaultAndJSON(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t)
	e.upstream("backend", echo("backend"))
	textPath := filepath.Join(dir, "access.log")
	jsonPath := filepath.Join(dir, "access.json")
	js, _ := structpb.NewStruct(map[string]any{"code": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%", "path": "%REQ(:PATH)%", "cluster": "%UPSTREAM_CLUSTER%", "ua": "%REQ(USER-AGENT)%"})
	cfg := hcmConfig(t, simpleRoutes(prefixRoute("/ok", "backend")))
	cfg.AccessLog = []*accesslogv3.AccessLog{
		{Name: "envoy.access_loggers.file", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(t, &filev3.FileAccessLog{Path: textPath})}},
		{Name: "envoy.access_loggers.file", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(t, &filev3.FileAccessLog{Path: jsonPath,
			AccessLogFormat: &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: js}}}})}},
	}
	e.start(cfg)
	e.get("/ok?q=1", "User-Agent", "tester/1", "X-Request-Id", "rid-1")
	e.get("/missing", "User-Agent", "tester/1")
	e.cm.Close() // flushes the logs
	text, _ := os.ReadFile(textPath)
	lines := strings.Split(strings.TrimSpace(string(text)), "\n")
	if len(lines) != 2 {
		t.Fatalf("text log lines: %q", text)
	}
	// [2026-11-22T02:40:00.123Z] "GET /ok?q=1 HTTP/1.1" 200 - 0 0 1 0 "-" "tester/1" "rid-1" "127.0.0.1:port" "127.0.0.1:port"
	okLine := lines[0]
	if !strings.Contains(okLine, `"GET /ok?q=1 HTTP/1.1" 200 - 0 0 `) || !strings.Contains(okLine, `"tester/1" "rid-1" "`+e.addr+`" "`+e.clusters["backend"].hosts[0].addr+`"`) {
		t.Errorf("default format line %q", okLine)
	}
	if okLine[0] != '[' || okLine[24] != 'Z' || okLine[25] != ']' {
		t.Errorf("start time format in %q", okLine)
	}
	if !strings.Contains(lines[1], `"GET /missing HTTP/1.1" 404 NR 0 0 `) || !strings.HasSuffix(lines[1], `"-"`) {
		t.Errorf("no-route line %q", lines[1])
	}
	raw, _ := os.ReadFile(jsonPath)
	jl := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(jl) != 2 {
		t.Fatalf("json log lines: %q", raw)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(jl[0]), &m); err != nil {
		t.Fatalf("json line %q: %v", jl[0], err)
	}
	if m["code"] != float64(200) || m["path"] != "/ok?q=1" || m["cluster"] != "backend" || m["ua"] != "tester/1" || m["flags"] != "-" {
		t.Errorf("json entry %v", m)
	}
	if err := json.Unmarshal([]byte(jl[1]), &m); err != nil || m["flags"] != "NR" || m["cluster"] != nil {
		t.Errorf("json no-route entry %v %v", m, err)
	}
}

func TestDrainHTTP1AndHTTP2(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	var inflight atomic.Int64
	e.upstream("backend", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			inflight.Add(1)
			<-release
		}
		io.WriteString(w, "done")
	})
	e.start(hcmConfig(t, simpleRoutes(prefixRoute("/", "backend"))))
	// HTTP/1: a keep-alive connection, then Drain: the next response
	// carries Connection: close.
	resp, _ := e.get("/a")
	if resp.Close {
		t.Fatal("closed before drain")
	}
	// HTTP/2: a stream in flight when Drain is called finishes.
	h2 := newH2CClient()
	defer h2.CloseIdleConnections()
	done := make(chan string, 1)
	go func() {
		resp, err := (&http.Client{Transport: h2}).Get(e.url("/block"))
		if err != nil {
			done <- "error: " + err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- string(b)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for inflight.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	e.cm.Drain()
	resp, body := e.get("/b")
	if !resp.Close || body != "done" {
		t.Errorf("after drain: close %v body %q", resp.Close, body)
	}
	close(release)
	select {
	case b := <-done:
		if b != "done" {
			t.Errorf("in-flight h2 stream: %q", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("in-flight h2 stream never finished")
	}
	// GOAWAY made the client open a new connection for the next stream.
	resp, err := (&http.Client{Transport: h2}).Get(e.url("/after"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := e.counter("http.inbound_0.0.0.0_80.downstream_cx_http2_total"); got != 2 {
		t.Errorf("h2 connections after drain: %d, want 2 (GOAWAY forces a new one)", got)
	}
}

func TestHashPolicyReachesLoadBalancer(t *testing.T) {
	e := newEnv(t)
	e.upstream("ring", echo("a"))
	e.upstream("ring", echo("b"))
	a := clusterAction("ring")
	a.HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: "x-user"}}}}
	e.start(hcmConfig(t, simpleRoutes(actionRoute("/", a))))
	hashOf := func(user string) (uint64, string) {
		resp, _ := e.get("/", "X-User", user)
		return e.clusters["ring"].lastHash.Load(), resp.Header.Get("X-Upstream")
	}
	h1, up1 := hashOf("alice")
	for i := 0; i < 5; i++ {
		if h, up := hashOf("alice"); h != h1 || up != up1 {
			t.Fatalf("same key: hash %d→%d upstream %s→%s", h1, h, up1, up)
		}
	}
	if h2, _ := hashOf("bob"); h2 == h1 {
		t.Errorf("different keys hashed alike (%d)", h1)
	}
}

func TestConfigErrors(t *testing.T) {
	e := newEnv(t)
	unknown := &hcmv3.HttpFilter{Name: "acme.filter", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routev3.Route{})}}
	_, err := New(hcmConfig(t, simpleRoutes(prefixRoute("/", "x")), unknown), Deps{Clusters: e.clusters, Stats: e.store})
	if err == nil || !strings.Contains(err.Error(), `http_filters[0] "acme.filter": typed_config: unknown filter type`) {
		t.Errorf("unknown filter: %v", err)
	}
	unknown.IsOptional = true
	if _, err := New(hcmConfig(t, simpleRoutes(prefixRoute("/", "x")), unknown), Deps{Clusters: e.clusters, Stats: e.store}); err != nil {
		t.Errorf("optional unknown filter: %v", err)
	}
	cfg := hcmConfig(t, simpleRoutes(prefixRoute("/", "x")))
	cfg.HttpFilters = nil
	if _, err := New(cfg, Deps{Clusters: e.clusters}); err == nil || !strings.Contains(err.Error(), "envoy.filters.http.router") {
		t.Errorf("no router: %v", err)
	}
	bad := simpleRoutes(&routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{}}, Action: &routev3.Route_Route{Route: clusterAction("x")}})
	if _, err := New(hcmConfig(t, bad), Deps{Clusters: e.clusters}); err == nil || !strings.Contains(err.Error(), `http_connection_manager "inbound_0.0.0.0_80": route_config: route_configuration "80"`) {
		t.Errorf("bad route config: %v", err)
	}
	cfg = hcmConfig(t, simpleRoutes(prefixRoute("/", "x")))
	cfg.AccessLog = []*accesslogv3.AccessLog{{Name: "f", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(t, &filev3.FileAccessLog{Path: filepath.Join(t.TempDir(), "x"),
		AccessLogFormat: &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: "%NOT_A_COMMAND%"}}}})}}}
	if _, err := New(cfg, Deps{Clusters: e.clusters}); err == nil || !strings.Contains(err.Error(), `access_log[0] "f": typed_config.log_format: text_format: unknown command "NOT_A_COMMAND"`) {
		t.Errorf("bad log format: %v", err)
	}
}

func TestForwardClientCertDetails(t *testing.T) {
	for _, tc := range []struct {
		mode hcmv3.HttpConnectionManager_ForwardClientCertDetails
		mtls bool
		want string // "" = header absent; "prior" = as sent; "new" = only this hop; "both"
	}{
		{hcmv3.HttpConnectionManager_SANITIZE, true, ""},
		{hcmv3.HttpConnectionManager_FORWARD_ONLY, true, "prior"},
		{hcmv3.HttpConnectionManager_APPEND_FORWARD, true, "both"},
		{hcmv3.HttpConnectionManager_SANITIZE_SET, true, "new"},
		{hcmv3.HttpConnectionManager_APPEND_FORWARD, false, ""},
		{hcmv3.HttpConnectionManager_ALWAYS_FORWARD_ONLY, false, "prior"},
	} {
		t.Run(tc.mode.String()+map[bool]string{true: "/mtls", false: "/plain"}[tc.mtls], func(t *testing.T) {
			e := newEnv(t)
			e.upstream("backend", echo("backend"))
			cfg := hcmConfig(t, simpleRoutes(prefixRoute("/", "backend")))
			cfg.ForwardClientCertDetails = tc.mode
			cfg.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Subject: wrapperspb.Bool(true), Uri: true, Dns: true}
			e.start(cfg)
			conf := &tls.Config{InsecureSkipVerify: true}
			if tc.mtls {
				conf.Certificates = []tls.Certificate{selfSigned(t, "spiffe://cluster.local/ns/default/sa/client")}
			}
			tr := &http.Transport{TLSClientConfig: conf}
			defer tr.CloseIdleConnections()
			req, _ := http.NewRequest("GET", "https://"+e.tlsAddr+"/", nil)
			const prior = "Hash=abc;URI=spiffe://cluster.local/ns/default/sa/front"
			req.Header.Set("X-Forwarded-Client-Cert", prior)
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			got := resp.Header.Get("Seen-X-Forwarded-Client-Cert")
			mine := regexp.MustCompile(`^Hash=[0-9a-f]{64};Subject="CN=skiff-test";URI=spiffe://cluster.local/ns/default/sa/client;DNS=localhost$`)
			switch tc.want {
			case "":
				if got != "" {
					t.Errorf("xfcc %q, want none", got)
				}
			case "prior":
				if got != prior {
					t.Errorf("xfcc %q, want %q", got, prior)
				}
			case "new":
				if !mine.MatchString(got) {
					t.Errorf("xfcc %q", got)
				}
			case "both":
				p, rest, _ := strings.Cut(got, ",")
				if p != prior || !mine.MatchString(rest) {
					t.Errorf("xfcc %q", got)
				}
			}
		})
	}
}
