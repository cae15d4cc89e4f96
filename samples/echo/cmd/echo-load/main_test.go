package main

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/skiff-mesh/skiff/samples/echo"
)

func TestLoadCommandPrintsSplit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- echo.ServeHTTP(ctx, ln, &echo.Server{Service: "echo", Version: "v1"}) }()
	defer func() { cancel(); <-done }()

	var out, errs strings.Builder
	err = run(context.Background(), []string{"-n", "20", "-qps", "0", "-c", "2", "-h2c", "-H", "end-user: jason", "http://" + ln.Addr().String() + "/?status=503"}, &out, &errs)
	if err != nil {
		t.Fatalf("%v\n%s", err, errs.String())
	}
	for _, want := range []string{"20 requests in ", "v1               20   100.0%", "503              20   100.0%"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestLoadCommandBadArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "want exactly one URL"},
		{[]string{"-H", "nocolon", "http://127.0.0.1:1/"}, `header "nocolon": want Name: value`},
		{[]string{"-n", "0", "http://127.0.0.1:1/"}, "requests (0) and concurrency (4) must be at least 1"},
	} {
		var out, errs strings.Builder
		err := run(context.Background(), tc.args, &out, &errs)
		if err == nil || !strings.Contains(err.Error()+errs.String(), tc.want) {
			t.Errorf("echo-load %v: %v %q, want %q", tc.args, err, errs.String(), tc.want)
		}
	}
	h := headers(http.Header{})
	if h.Set("Host: echo.local") != nil || http.Header(h).Get("Host") != "echo.local" {
		t.Errorf("Host header not kept: %v", h)
	}
}
