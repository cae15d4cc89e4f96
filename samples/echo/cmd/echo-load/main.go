// Command echo-load sends a bounded number of requests to a URL at a given
// rate and prints how the answers split between the echo server's versions
// and status codes, the figures Istio's traffic-shifting tasks look at:
//
//	echo-load -n 100 -qps 20 http://127.0.0.1:PORT/
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/skiff-mesh/skiff/samples/echo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "echo-load:", err)
		}
		os.Exit(2)
	}
}

// headers collects repeated -H "Name: value" flags.
type headers http.Header

func (h headers) String() string { return "" }

func (h headers) Set(s string) error {
	k, v, ok := strings.Cut(s, ":")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf("header %q: want Name: value", s)
	}
	http.Header(h).Add(strings.TrimSpace(k), strings.TrimSpace(v))
	return nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("echo-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: echo-load [flags] URL")
		fs.PrintDefaults()
	}
	o := echo.LoadOptions{Header: http.Header{}}
	fs.IntVar(&o.Requests, "n", 100, "number of requests")
	fs.Float64Var(&o.QPS, "qps", 10, "requests per second (0: as fast as answers come)")
	fs.IntVar(&o.Concurrency, "c", 4, "concurrent requests")
	fs.DurationVar(&o.Timeout, "timeout", 10*time.Second, "time one request may take")
	fs.DurationVar(&o.MaxDuration, "max-duration", 5*time.Minute, "stop the run after this long")
	fs.BoolVar(&o.H2C, "h2c", false, "use HTTP/2 without TLS instead of HTTP/1.1")
	fs.Var(headers(o.Header), "H", `request header "Name: value" (repeatable; Host sets the authority)`)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("want exactly one URL")
	}
	o.URL = fs.Arg(0)
	res, err := echo.Load(ctx, o)
	if err != nil {
		return err
	}
	res.Print(stdout)
	return nil
}
