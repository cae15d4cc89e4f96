// Package echo is the second sample of the local mesh: an echo server for
// Istio's traffic-management tasks (routing by version, weights, retries,
// timeouts, fault injection, TCP shifting) and the load client that shows
// how traffic split between its versions.
//
// The server answers every HTTP request (HTTP/1.1 and h2c) with lines of
// Key=Value naming itself and the request it saw; ?delay= and ?status=
// make it slow or failing on demand. Its TCP port echoes each line back
// prefixed with the server's version, like Istio's tcp-echo.
package echo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MaxDelay bounds ?delay= so that a typo cannot hold a connection for hours.
const MaxDelay = 5 * time.Minute

// Server identifies the replica in every answer.
type Server struct {
	Service string // e.g. "echo"
	Version string // e.g. "v1"; what routing rules select on
	Pod     string // the replica's name
}

// ServeHTTP answers with the replica's identity and the request: its
// method, URL, protocol, host and headers. Query parameters:
//
//	delay=D    wait D first (a Go duration such as 250ms, or milliseconds)
//	status=N   answer with status N (100..599) instead of 200
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	status := http.StatusOK
	q := r.URL.Query()
	if v := q.Get("status"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 100 || n > 599 {
			http.Error(w, fmt.Sprintf("query parameter status=%q: want an HTTP status code from 100 to 599", v), http.StatusBadRequest)
			return
		}
		status = n
	}
	if v := q.Get("delay"); v != "" {
		d, err := parseDelay(v)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "ServiceName=%s\nServiceVersion=%s\nHostname=%s\n", s.Service, s.Version, s.Pod)
	fmt.Fprintf(&b, "Method=%s\nURL=%s\nProto=%s\nHost=%s\nRemoteAddr=%s\nStatusCode=%d\n",
		r.Method, r.URL.RequestURI(), r.Proto, r.Host, r.RemoteAddr, status)
	keys := make([]string, 0, len(r.Header))
	for k := range r.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range r.Header[k] {
			fmt.Fprintf(&b, "RequestHeader=%s:%s\n", k, v)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Echo-Version", s.Version)
	w.WriteHeader(status)
	io.WriteString(w, b.String())
}

func parseDelay(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		ms, merr := strconv.Atoi(v)
		if merr != nil {
			return 0, fmt.Errorf("query parameter delay=%q: want a duration such as 500ms or 2s, or milliseconds", v)
		}
		d = time.Duration(ms) * time.Millisecond
	}
	if d < 0 || d > MaxDelay {
		return 0, fmt.Errorf("query parameter delay=%q: want from 0 to %v", v, MaxDelay)
	}
	return d, nil
}

// ServeHTTP serves h on ln over HTTP/1.1 and h2c (HTTP/2 without TLS, with
// prior knowledge) until ctx ends, then drains for up to five seconds.
func ServeHTTP(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-done; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
}

// maxLine bounds one TCP echo line; longer input ends the connection.
const maxLine = 64 << 10

// ServeTCP echoes each line a client sends back to it, prefixed with
// prefix and a space, until ctx ends; then it closes every connection.
func ServeTCP(ctx context.Context, ln net.Listener, prefix string) error {
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	defer stop()
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			}()
			sc := bufio.NewScanner(c)
			sc.Buffer(make([]byte, 4096), maxLine)
			for sc.Scan() {
				if _, err := fmt.Fprintf(c, "%s %s\n", prefix, sc.Bytes()); err != nil {
					return
				}
			}
		}()
	}
}
