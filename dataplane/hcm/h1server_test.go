package hcm

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// echoEnv starts a manager routing /api to an upstream that answers with
// the method, path and request body, and leaves other paths unrouted.
func echoEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	e.upstream("backend", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("X-Te", strings.Join(r.TransferEncoding, ","))
		io.WriteString(w, r.Method+" "+r.URL.RequestURI()+" "+string(b))
	})
	e.start(hcmConfig(t, simpleRoutes(prefixRoute("/api", "backend"))))
	return e
}

// rawConn is a client connection speaking HTTP/1 by hand.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(15 * time.Second))
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (r *rawConn) send(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.c, s); err != nil {
		r.t.Fatal(err)
	}
}

// response reads one response to a request of method and its body.
func (r *rawConn) response(method string) (*http.Response, string) {
	r.t.Helper()
	resp, err := http.ReadResponse(r.br, &http.Request{Method: method})
	if err != nil {
		r.t.Fatalf("reading response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatalf("reading body: %v", err)
	}
	return resp, string(b)
}

// closed asserts the proxy closes the connection with nothing more to say.
func (r *rawConn) closed() {
	r.t.Helper()
	n, err := r.br.Read(make([]byte, 1))
	if n != 0 || err == nil {
		r.t.Fatalf("connection still open (read %d, %v)", n, err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		r.t.Fatal("connection not closed before the deadline")
	}
}

func TestH1PipelinedRequests(t *testing.T) {
	e := echoEnv(t)
	c := dialRaw(t, e.addr)
	c.send("GET /api/a HTTP/1.1\r\nHost: x\r\n\r\nPOST /api/b?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
	if resp, body := c.response("GET"); resp.StatusCode != 200 || body != "GET /api/a " {
		t.Errorf("first: %d %q", resp.StatusCode, body)
	}
	if resp, body := c.response("POST"); resp.StatusCode != 200 || body != "POST /api/b?q=1 abc" || resp.Close {
		t.Errorf("second: %d %q close=%v", resp.StatusCode, body, resp.Close)
	}
}

func TestH1ChunkedRequestBody(t *testing.T) {
	e := echoEnv(t)
	c := dialRaw(t, e.addr)
	c.send("POST /api/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
	resp, body := c.response("POST")
	if resp.StatusCode != 200 || body != "POST /api/c hello world" || resp.Header.Get("X-Te") != "chunked" {
		t.Errorf("got %d %q te=%q", resp.StatusCode, body, resp.Header.Get("X-Te"))
	}
	// The connection is positioned at the next request.
	c.send("GET /api/next HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := c.response("GET"); resp.StatusCode != 200 || body != "GET /api/next " {
		t.Errorf("next: %d %q", resp.StatusCode, body)
	}
	// Chunked together with Content-Length is refused (smuggling).
	c2 := dialRaw(t, e.addr)
	c2.send("POST /api/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n")
	if resp, _ := c2.response("POST"); resp.StatusCode != 400 || !resp.Close {
		t.Errorf("chunked with length: %d close=%v", resp.StatusCode, resp.Close)
	}
}

func TestH1ChunkedResponseWithTrailers(t *testing.T) {
	e := newEnv(t)
	e.upstream("backend", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		io.WriteString(w, "part1,")
		w.(http.Flusher).Flush()
		io.WriteString(w, "part2")
		w.Header().Set("X-Checksum", "abc")
	})
	e.start(hcmConfig(t, simpleRoutes(prefixRoute("/", "backend"))))
	c := dialRaw(t, e.addr)
	for i := 0; i < 2; i++ {
		c.send("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, body := c.response("GET")
		if resp.StatusCode != 200 || body != "part1,part2" || len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
			t.Fatalf("got %d %q te=%v", resp.StatusCode, body, resp.TransferEncoding)
		}
		if got := resp.Trailer.Get("X-Checksum"); got != "abc" {
			t.Errorf("trailer X-Checksum = %q, want abc", got)
		}
	}
}

func TestH1ExpectContinue(t *testing.T) {
	e := echoEnv(t)
	c := dialRaw(t, e.addr)
	c.send("POST /api/e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
	// The client holds the body back until the proxy asks for it.
	line, err := c.br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("interim: %q %v", line, err)
	}
	if blank, _ := c.br.ReadString('\n'); blank != "\r\n" {
		t.Fatalf("interim end: %q", blank)
	}
	c.send("data")
	if resp, body := c.response("POST"); resp.StatusCode != 200 || body != "POST /api/e data" {
		t.Errorf("got %d %q", resp.StatusCode, body)
	}
	// A request answered without reading its body never gets 100
	// Continue, and the connection closes since the body may still come.
	c2 := dialRaw(t, e.addr)
	c2.send("POST /unrouted HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
	if resp, _ := c2.response("POST"); resp.StatusCode != 404 {
		t.Errorf("unrouted: %d", resp.StatusCode)
	}
	c2.closed()
}

func TestH1HTTP10KeepAlive(t *testing.T) {
	e := echoEnv(t)
	// Without keep-alive the body runs to the close.
	c := dialRaw(t, e.addr)
	c.send("GET /api/old HTTP/1.0\r\n\r\n")
	resp, body := c.response("GET")
	if resp.StatusCode != 200 || body != "GET /api/old " || resp.Proto != "HTTP/1.0" {
		t.Errorf("1.0: %d %q %s", resp.StatusCode, body, resp.Proto)
	}
	c.closed()

	c = dialRaw(t, e.addr)
	for i := 0; i < 2; i++ {
		c.send("GET /api/ka HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
		resp, body := c.response("GET")
		if resp.StatusCode != 200 || body != "GET /api/ka " || resp.Header.Get("Connection") != "keep-alive" {
			t.Fatalf("1.0 keep-alive %d: %d %q conn=%q", i, resp.StatusCode, body, resp.Header.Get("Connection"))
		}
	}
}

func TestH1HeadersTooLarge(t *testing.T) {
	e := echoEnv(t)
	c := dialRaw(t, e.addr)
	c.send("GET /api/big HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 61<<10) + "\r\n\r\n")
	resp, _ := c.response("GET")
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || !resp.Close {
		t.Errorf("got %d close=%v, want 431 and close", resp.StatusCode, resp.Close)
	}
	c.closed()
	// Many headers under the limit are fine.
	c = dialRaw(t, e.addr)
	var hdr strings.Builder
	for i := 0; i < 100; i++ {
		hdr.WriteString("X-Many-" + strings.Repeat("k", i%7) + ": value\r\n")
	}
	c.send("GET /api/many HTTP/1.1\r\nHost: x\r\n" + hdr.String() + "\r\n")
	if resp, _ := c.response("GET"); resp.StatusCode != 200 {
		t.Errorf("many headers: %d", resp.StatusCode)
	}
}

func TestH1MalformedRequests(t *testing.T) {
	e := echoEnv(t)
	for _, req := range []string{
		"GARBAGE\r\n\r\n",
		"GET /api HTTP/9.9\r\nHost: x\r\n\r\n",
		"GET /api HTTP/1.1\r\nNo colon here\r\n\r\n",
		"GET /api HTTP/1.1\r\n\r\n", // HTTP/1.1 needs Host
		"GET /api HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
		"G@T /api HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		c := dialRaw(t, e.addr)
		c.send(req)
		resp, _ := c.response("GET")
		if resp.StatusCode != 400 || !resp.Close {
			t.Errorf("%q: got %d close=%v, want 400 and close", req, resp.StatusCode, resp.Close)
		}
		c.closed()
	}
}

func TestH1ConnectionClose(t *testing.T) {
	e := echoEnv(t)
	c := dialRaw(t, e.addr)
	c.send("GET /api/bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	resp, body := c.response("GET")
	if resp.StatusCode != 200 || body != "GET /api/bye " || !resp.Close {
		t.Errorf("got %d %q close=%v", resp.StatusCode, body, resp.Close)
	}
	c.closed()
}

func TestH1UnreadBodyDrained(t *testing.T) {
	e := echoEnv(t)
	// No route: the 404 is sent without reading the body, which is then
	// discarded so the connection carries the next request.
	c := dialRaw(t, e.addr)
	c.send("POST /unrouted HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n" + strings.Repeat("b", 10000) +
		"GET /api/after HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, _ := c.response("POST"); resp.StatusCode != 404 {
		t.Errorf("unrouted: %d", resp.StatusCode)
	}
	if resp, body := c.response("GET"); resp.StatusCode != 200 || body != "GET /api/after " {
		t.Errorf("after: %d %q", resp.StatusCode, body)
	}
	// A body larger than the drain limit closes the connection instead.
	c = dialRaw(t, e.addr)
	c.send("POST /unrouted HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
	go func() {
		chunk := bytes.Repeat([]byte("b"), 64<<10)
		for i := 0; i < 150; i++ { // bounded; stops when the proxy closes
			if _, err := c.c.Write(chunk); err != nil {
				return
			}
		}
	}()
	if resp, _ := c.response("POST"); resp.StatusCode != 404 {
		t.Errorf("large unrouted: %d", resp.StatusCode)
	}
	c.closed()
}

func TestH1DrainClosesIdleConnections(t *testing.T) {
	e := echoEnv(t)
	c := dialRaw(t, e.addr)
	c.send("GET /api/1 HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, _ := c.response("GET"); resp.StatusCode != 200 || resp.Close {
		t.Fatalf("before drain: %d close=%v", resp.StatusCode, resp.Close)
	}
	e.cm.Drain()
	c.closed()
	// A new connection is still answered, once, with Connection: close.
	c = dialRaw(t, e.addr)
	c.send("GET /api/2 HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, _ := c.response("GET"); resp.StatusCode != 200 || !resp.Close {
		t.Errorf("after drain: %d close=%v", resp.StatusCode, resp.Close)
	}
	c.closed()
}

// A client that goes away while the upstream is slow cancels the upstream
// request, as Envoy resets it.
func TestH1ClientCloseCancelsUpstream(t *testing.T) {
	e := newEnv(t)
	started := make(chan struct{}, 1)
	cancelled := make(chan struct{}, 1)
	e.upstream("backend", func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		select {
		case <-r.Context().Done():
			cancelled <- struct{}{}
		case <-time.After(10 * time.Second):
			io.WriteString(w, "late")
		}
	})
	e.start(hcmConfig(t, simpleRoutes(prefixRoute("/", "backend"))))
	c := dialRaw(t, e.addr)
	c.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("request never reached the upstream")
	}
	c.c.Close()
	select {
	case <-cancelled:
	case <-time.After(8 * time.Second):
		t.Fatal("upstream request not cancelled after the client closed")
	}
}

// A slow request whose client keeps the connection open is answered
// normally, and a request pipelined behind it is not lost to the watch
// for a closing client.
func TestH1SlowRequestWithPipelinedNext(t *testing.T) {
	e := newEnv(t)
	e.upstream("backend", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(100 * time.Millisecond)
		}
		io.WriteString(w, r.URL.Path)
	})
	e.start(hcmConfig(t, simpleRoutes(prefixRoute("/", "backend"))))
	c := dialRaw(t, e.addr)
	c.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(50 * time.Millisecond) // let the watch start before the next request arrives
	c.send("GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := c.response("GET"); resp.StatusCode != 200 || body != "/slow" {
		t.Errorf("slow: %d %q", resp.StatusCode, body)
	}
	if resp, body := c.response("GET"); resp.StatusCode != 200 || body != "/next" {
		t.Errorf("next: %d %q", resp.StatusCode, body)
	}
}

func TestH1HeadAndNoContent(t *testing.T) {
	e := newEnv(t)
	e.upstream("backend", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/empty" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "hello")
	})
	e.start(hcmConfig(t, simpleRoutes(prefixRoute("/", "backend"))))
	c := dialRaw(t, e.addr)
	c.send("HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /empty HTTP/1.1\r\nHost: x\r\n\r\nGET /h HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := c.response("HEAD"); resp.StatusCode != 200 || body != "" || resp.ContentLength != 5 {
		t.Errorf("HEAD: %d %q cl=%d", resp.StatusCode, body, resp.ContentLength)
	}
	if resp, body := c.response("GET"); resp.StatusCode != 204 || body != "" {
		t.Errorf("204: %d %q", resp.StatusCode, body)
	}
	if resp, body := c.response("GET"); resp.StatusCode != 200 || body != "hello" || resp.Header.Get("Date") == "" {
		t.Errorf("GET: %d %q date=%q", resp.StatusCode, body, resp.Header.Get("Date"))
	}
}

func TestH1IdleAndHeaderTimeouts(t *testing.T) {
	e := newEnv(t)
	e.upstream("backend", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	cfg := hcmConfig(t, simpleRoutes(prefixRoute("/", "backend")))
	cfg.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{IdleTimeout: dur(300 * time.Millisecond)}
	cfg.RequestHeadersTimeout = dur(300 * time.Millisecond)
	e.start(cfg)

	// Idle between requests: closed after the idle timeout.
	c := dialRaw(t, e.addr)
	c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := c.response("GET"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	start := time.Now()
	c.closed()
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Errorf("idle connection closed after %v, want about 300ms", el)
	}

	// Headers that never finish: closed after the headers timeout.
	c = dialRaw(t, e.addr)
	c.send("GET / HTTP/1.1\r\nHost: x\r\n")
	start = time.Now()
	if resp, _ := c.response("GET"); resp.StatusCode != http.StatusRequestTimeout || !resp.Close {
		t.Errorf("stalled headers: %d close=%v, want 408 and close", resp.StatusCode, resp.Close)
	}
	c.closed()
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Errorf("stalled headers closed after %v, want about 300ms", el)
	}
}
