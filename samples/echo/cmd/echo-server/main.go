// Command echo-server is the echo sample's server: HTTP/1.1 and h2c on
// --listen (default :8080) answering with its service, version and pod name
// and the request it saw (?delay= and ?status= make it slow or failing),
// and a TCP line echo on --tcp-listen (default :9000) that prefixes each
// line with its version.
//
// The binary is not called "echo" so that a PATH lookup can never pick the
// shell's echo instead.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/skiff-mesh/skiff/samples/echo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "echo-server:", err)
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := flag.NewFlagSet("echo-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	host, _ := os.Hostname()
	s := &echo.Server{}
	fs.StringVar(&s.Service, "service", envOr(getenv, "SERVICE_NAME", "echo"), "service name to answer with (env SERVICE_NAME)")
	fs.StringVar(&s.Version, "version", envOr(getenv, "SERVICE_VERSION", "v1"), "version to answer with (env SERVICE_VERSION)")
	fs.StringVar(&s.Pod, "pod", envOr(getenv, "POD_NAME", host), "pod name to answer with (env POD_NAME)")
	listen := fs.String("listen", ":8080", "HTTP/1.1 and h2c listen address, host:port")
	tcpListen := fs.String("tcp-listen", ":9000", `TCP echo listen address, host:port ("" for none)`)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q; every setting is a flag (-h lists them)", fs.Args())
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("--listen=%s: %w", *listen, err)
	}
	var tln net.Listener
	if *tcpListen != "" {
		if tln, err = net.Listen("tcp", *tcpListen); err != nil {
			ln.Close()
			return fmt.Errorf("--tcp-listen=%s: %w", *tcpListen, err)
		}
	}
	fmt.Fprintf(stderr, "echo-server %s %s http listening on %s\n", s.Service, s.Version, ln.Addr())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	if tln != nil {
		fmt.Fprintf(stderr, "echo-server %s %s tcp listening on %s\n", s.Service, s.Version, tln.Addr())
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := echo.ServeTCP(ctx, tln, s.Version); err != nil {
				errc <- fmt.Errorf("tcp %s: %w", tln.Addr(), err)
				cancel()
			}
		}()
	}
	err = echo.ServeHTTP(ctx, ln, logRequests(stderr, s))
	cancel()
	wg.Wait()
	if err != nil {
		return fmt.Errorf("http %s: %w", ln.Addr(), err)
	}
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// logRequests writes one line per request once it is answered.
func logRequests(w io.Writer, h http.Handler) http.Handler {
	var mu sync.Mutex
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		h.ServeHTTP(rw, r)
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(w, "%s %s %s %s %v x-request-id=%q\n", start.UTC().Format(time.RFC3339Nano), r.Proto, r.Method,
			r.URL.RequestURI(), time.Since(start).Round(time.Microsecond), r.Header.Get("x-request-id"))
	})
}

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}
