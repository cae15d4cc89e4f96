package bookinfo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// drainTimeout bounds how long Serve waits for requests in flight once its
// context ends; the local mesh stops a pod with SIGTERM and expects it gone soon.
const drainTimeout = 5 * time.Second

// Serve answers on ln with h until ctx ends, logging one line per request
// to logw, then lets requests in flight finish for up to five seconds.
func Serve(ctx context.Context, ln net.Listener, service string, h http.Handler, logw io.Writer) error {
	srv := &http.Server{
		Handler:           LogRequests(service, logw, h),
		ReadHeaderTimeout: 10 * time.Second,
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-done; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
}

// LogRequests writes one line per request to w once the response is done:
// time, service, method, path, status, duration and the request id, which is
// what a reader needs to follow one call through the mesh.
func LogRequests(service string, w io.Writer, h http.Handler) http.Handler {
	var mu sync.Mutex
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: rw, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		line := fmt.Sprintf("%s %s %s %s %d %s x-request-id=%q end-user=%q\n",
			start.UTC().Format(time.RFC3339Nano), service, r.Method, r.URL.RequestURI(), sw.status,
			time.Since(start).Round(time.Microsecond), r.Header.Get("x-request-id"), r.Header.Get("end-user"))
		mu.Lock()
		io.WriteString(w, line)
		mu.Unlock()
	})
}

type statusWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wroteHeader = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(body)
}
