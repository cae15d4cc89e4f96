package echo

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// startHTTP serves h on a fresh loopback port until the test ends.
func startHTTP(t *testing.T, h http.Handler) string {
	t.Helper()
	ln := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeHTTP(ctx, ln, h) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeHTTP on %s: %v", ln.Addr(), err)
		}
	})
	return "http://" + ln.Addr().String()
}

func get(t *testing.T, c *http.Client, u string, hdr http.Header) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func h2cClient() *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func TestEchoAnswersWithItselfAndTheRequest(t *testing.T) {
	base := startHTTP(t, &Server{Service: "echo", Version: "v2", Pod: "echo-v2-0"})
	c := &http.Client{Timeout: 10 * time.Second}
	code, body := get(t, c, base+"/some/path?x=1", http.Header{"X-Test": {"a", "b"}, "End-User": {"jason"}})
	if code != 200 {
		t.Errorf("status %d", code)
	}
	for _, want := range []string{
		"ServiceName=echo\n", "ServiceVersion=v2\n", "Hostname=echo-v2-0\n", "Method=GET\n", "URL=/some/path?x=1\n",
		"Proto=HTTP/1.1\n", "StatusCode=200\n", "RequestHeader=X-Test:a\nRequestHeader=X-Test:b\n", "RequestHeader=End-User:jason\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("answer lacks %q:\n%s", want, body)
		}
	}
	if _, body := get(t, h2cClient(), base+"/", nil); !strings.Contains(body, "Proto=HTTP/2.0\n") || !strings.Contains(body, "ServiceVersion=v2\n") {
		t.Errorf("h2c answer:\n%s", body)
	}
}

func TestEchoStatusAndDelayOnRequest(t *testing.T) {
	base := startHTTP(t, &Server{Service: "echo", Version: "v1"})
	c := &http.Client{Timeout: 10 * time.Second}
	if code, body := get(t, c, base+"/?status=503", nil); code != 503 || !strings.Contains(body, "StatusCode=503\n") {
		t.Errorf("?status=503: %d\n%s", code, body)
	}
	start := time.Now()
	code, _ := get(t, c, base+"/?delay=300ms", nil)
	if took := time.Since(start); code != 200 || took < 300*time.Millisecond {
		t.Errorf("?delay=300ms: %d after %v", code, took)
	}
	start = time.Now()
	get(t, c, base+"/?delay=200", nil)
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("?delay=200 (milliseconds) answered after %v", took)
	}
	for q, want := range map[string]string{
		"status=abc": `status="abc": want an HTTP status code from 100 to 599`,
		"status=42":  `status="42"`,
		"delay=soon": `delay="soon": want a duration`,
		"delay=1h":   `delay="1h": want from 0 to 5m0s`,
	} {
		if code, body := get(t, c, base+"/?"+q, nil); code != 400 || !strings.Contains(body, want) {
			t.Errorf("?%s: %d %q, want 400 with %q", q, code, body, want)
		}
	}
	// A client that gives up on a delayed request frees the server at once.
	short := &http.Client{Timeout: 100 * time.Millisecond}
	if _, err := short.Get(base + "/?delay=1m"); err == nil {
		t.Error("a 1m delay answered within 100ms")
	}
}

func TestTCPEchoPrefixesLinesWithVersion(t *testing.T) {
	ln := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeTCP(ctx, ln, "v2") }()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "hello\nworld\n")
	r := bufio.NewReader(c)
	for _, want := range []string{"v2 hello\n", "v2 world\n"} {
		if got, err := r.ReadString('\n'); got != want {
			t.Errorf("got %q (%v), want %q", got, err, want)
		}
	}
	// Stopping the server closes open connections too.
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ServeTCP: %v", err)
	}
	if _, err := r.ReadString('\n'); err == nil {
		t.Error("connection still open after the server stopped")
	}
}

func TestLoadCountsVersionsAndCodes(t *testing.T) {
	v1 := startHTTP(t, &Server{Service: "echo", Version: "v1"})
	v2 := startHTTP(t, &Server{Service: "echo", Version: "v2"})
	// Three of every four requests to v1, as a 75/25 weighted route would.
	var n atomic.Int64
	// The proxy's own transport, closed before the backends shut down:
	// its kept-alive connections would hold their graceful shutdown.
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	front := startHTTP(t, &httputil.ReverseProxy{Transport: tr, Rewrite: func(r *httputil.ProxyRequest) {
		target := v1
		if n.Add(1)%4 == 0 {
			target = v2
		}
		u, _ := url.Parse(target)
		r.SetURL(u)
	}})
	for _, h2c := range []bool{false, true} {
		n.Store(0)
		res, err := Load(context.Background(), LoadOptions{URL: front + "/", Requests: 100, Concurrency: 4, H2C: h2c, Header: http.Header{"X-Test": {"1"}}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Sent != 100 || res.Errors != 0 || res.Versions["v1"] != 75 || res.Versions["v2"] != 25 || res.Codes[200] != 100 {
			t.Errorf("h2c=%v: %+v", h2c, res)
		}
	}

	res, err := Load(context.Background(), LoadOptions{URL: v1 + "/?status=503", Requests: 10, QPS: 20, Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	// Ten requests at 20 qps start over 450 ms.
	if res.Codes[503] != 10 || res.Duration < 450*time.Millisecond {
		t.Errorf("paced 503s: %+v", res)
	}
	var out strings.Builder
	res.Print(&out)
	for _, want := range []string{"10 requests in ", ", 0 without a response\n", "v1               10   100.0%\n", "503              10   100.0%\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}

func TestLoadReportsUnreachable(t *testing.T) {
	ln := listen(t)
	addr := ln.Addr().String()
	ln.Close()
	res, err := Load(context.Background(), LoadOptions{URL: "http://" + addr + "/", Requests: 5, Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 5 || !strings.Contains(res.FirstErr, "refused") {
		t.Errorf("%+v", res)
	}
	if _, err := Load(context.Background(), LoadOptions{URL: "echo:8080", Requests: 1, Concurrency: 1}); err == nil || !strings.Contains(err.Error(), "want http://host:port/path") {
		t.Errorf("bad URL: %v", err)
	}
}

func TestLoadStopsAtMaxDuration(t *testing.T) {
	base := startHTTP(t, &Server{Service: "echo", Version: "v1"})
	start := time.Now()
	res, err := Load(context.Background(), LoadOptions{URL: base + "/", Requests: 1000, QPS: 10, Concurrency: 1, MaxDuration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 3*time.Second || res.Sent >= 10 || res.Sent < 1 {
		t.Errorf("run of 1000 at 10 qps capped at 300ms: %d sent in %v", res.Sent, took)
	}
}
