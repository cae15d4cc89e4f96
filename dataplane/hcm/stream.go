package hcm

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/dataplane/route"
	"github.com/skiff-mesh/skiff/dataplane/tracing"
)

// ResponseHook sees the response headers just before they are written,
// whoever writes them (the router or a filter's local reply). CORS uses it
// to add its headers to upstream responses.
type ResponseHook interface {
	OnResponseHeaders(s *Stream, status int)
}

// DoneHook runs when a stream has finished (response sent or stream
// reset), before its access log line is written; statistics filters use
// it to record the outcome.
type DoneHook interface {
	OnStreamDone(s *Stream)
}

// Stream is one HTTP request as it passes the filter chain. Streams are
// pooled: nothing may keep a *Stream after the chain returns.
type Stream struct {
	Req  *http.Request
	Conn *core.ConnInfo
	// Route is the selected route entry; nil when none matched.
	Route *route.Entry
	// Cluster is the chosen weighted cluster, set by the router (nil when
	// the action names a single cluster).
	Cluster *route.WeightedCluster
	// Flags accumulate Envoy response flags for the access log.
	Flags core.ResponseFlags
	// Upstream facts for the access log.
	UpstreamHost    string
	UpstreamCluster string
	// UpstreamHostRef is the host UpstreamHost names (its endpoint
	// metadata tells the stats filter who a sidecar-less peer is).
	UpstreamHostRef core.Host
	Start           time.Time

	cm          *ConnectionManager
	w           http.ResponseWriter
	status      int
	bytesSent   int64
	body        *countingBody // nil for requests without a body
	grpc        bool
	hooks       [4]ResponseHook
	nhooks      int
	upstreamDur time.Duration
	attempts    int
	doneHooks   [4]DoneHook
	ndone       int
	meta        []metaEntry
	span        *tracing.Span // nil without tracing
	// Access log facts the router and filters record.
	upstreamFailure string
	codeDetails     string
	respStart       time.Time
}

// metaEntry is one namespace of per-stream dynamic metadata; a slice
// instead of a map because a stream carries few and most carry none.
type metaEntry struct {
	ns string
	v  any
}

// SetMetadata stores per-stream dynamic metadata under namespace ns
// (Envoy's dynamic metadata, e.g. "envoy.filters.http.jwt_authn" with the
// verified claims for RBAC to read), replacing any earlier value.
func (s *Stream) SetMetadata(ns string, v any) {
	for i := range s.meta {
		if s.meta[i].ns == ns {
			s.meta[i].v = v
			return
		}
	}
	s.meta = append(s.meta, metaEntry{ns: ns, v: v})
}

// Metadata returns the dynamic metadata of namespace ns, nil when unset.
func (s *Stream) Metadata(ns string) any {
	for i := range s.meta {
		if s.meta[i].ns == ns {
			return s.meta[i].v
		}
	}
	return nil
}

// AddDoneHook registers h to run when the stream finishes. At most four
// hooks per stream; more are ignored.
func (s *Stream) AddDoneHook(h DoneHook) {
	if s.ndone < len(s.doneHooks) {
		s.doneHooks[s.ndone] = h
		s.ndone++
	}
}

// BytesSent is the response body bytes written so far.
func (s *Stream) BytesSent() int64 { return s.bytesSent }

// countingBody counts request body bytes for BYTES_RECEIVED. It is not
// part of the pooled Stream because an upstream transport may still read
// the body after the stream is done.
type countingBody struct {
	rc  io.ReadCloser
	n   atomic.Int64
	mu  sync.Mutex // guards eof and done
	eof bool
	// done runs once when the body has been read to its end.
	done func()
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n.Add(int64(n))
	if err == io.EOF {
		b.mu.Lock()
		f := b.done
		first := !b.eof
		b.eof = true
		b.mu.Unlock()
		if first && f != nil {
			f()
		}
	}
	return n, err
}

// onEOF arranges for f to run when the body is complete: now if it
// already is, else from the Read that sees its end.
func (b *countingBody) onEOF(f func()) {
	b.mu.Lock()
	eof := b.eof
	b.done = f
	b.mu.Unlock()
	if eof {
		f()
	}
}

// BytesReceived is the request body bytes read so far.
func (s *Stream) BytesReceived() int64 {
	if s.body == nil {
		return 0
	}
	return s.body.n.Load()
}

func (b *countingBody) Close() error { return b.rc.Close() }

// Header returns the response header map to fill before WriteHeader.
func (s *Stream) Header() http.Header { return s.w.Header() }

// WriteHeader runs the response hooks, adds the HCM's response headers
// (and the flags header when any flag is set) and sends the status line.
func (s *Stream) WriteHeader(code int) {
	if s.status != 0 {
		return
	}
	s.status = code
	s.respStart = time.Now()
	h := s.w.Header()
	for i := 0; i < s.nhooks; i++ {
		s.hooks[i].OnResponseHeaders(s, code)
	}
	// Any response the proxy shaped (local, retried out, delayed) says why.
	if s.Flags != 0 {
		h[hdrResponseFlags] = []string{s.Flags.String()}
	}
	c := s.cm.cfg
	c.finishResponseHeaders(h)
	if c.alwaysRequestID {
		if id := s.Req.Header[hdrRequestID]; len(id) > 0 {
			h[hdrRequestID] = id
		}
	}
	s.w.WriteHeader(code)
}

// Write sends response body bytes.
func (s *Stream) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.WriteHeader(http.StatusOK)
	}
	n, err := s.w.Write(p)
	s.bytesSent += int64(n)
	return n, err
}

// Flush pushes buffered response bytes to the client.
func (s *Stream) Flush() {
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
	}
}

// Status is the response status written so far (0 before headers).
func (s *Stream) Status() int { return s.status }

// AddResponseHook registers h to run when the response headers are
// written. At most four hooks per stream; more are ignored.
func (s *Stream) AddResponseHook(h ResponseHook) {
	if s.nhooks < len(s.hooks) {
		s.hooks[s.nhooks] = h
		s.nhooks++
	}
}

// IsGRPC reports whether the request is gRPC (content-type application/grpc*).
func (s *Stream) IsGRPC() bool { return s.grpc }

// PerFilterConfig returns the route's typed_per_filter_config for filter
// name (the chosen weighted cluster's when set), nil when none.
func (s *Stream) PerFilterConfig(name string) *anypb.Any {
	if s.Cluster != nil && s.Cluster.PerFilterConfig != nil {
		if a := s.Cluster.PerFilterConfig[name]; a != nil {
			return a
		}
	}
	if s.Route == nil {
		return nil
	}
	return s.Route.PerFilterConfig[name]
}

// SendLocalReply answers the request from the proxy, as Envoy's
// sendLocalReply does: a text/plain body and the flags header for HTTP, a
// trailers-only response with the mapped grpc-status for gRPC requests.
// Once response headers are out it can only reset the stream: it panics
// with http.ErrAbortHandler, which net/http turns into a reset.
func (s *Stream) SendLocalReply(code int, body string, flags core.ResponseFlags) {
	s.localReply(code, -1, body, flags)
}

// SendGRPCLocalReply answers a gRPC request with grpc-status grpcStatus
// (trailers-only); for other requests it answers code as SendLocalReply.
func (s *Stream) SendGRPCLocalReply(code, grpcStatus int, body string, flags core.ResponseFlags) {
	s.localReply(code, grpcStatus, body, flags)
}

// localReply writes a locally generated reply; grpcStatus < 0 maps code.
func (s *Stream) localReply(code, grpcStatus int, body string, flags core.ResponseFlags) {
	s.Flags |= flags
	if s.status != 0 {
		// Headers already went out: all we can do is reset the stream.
		panic(http.ErrAbortHandler)
	}
	// Headers a filter set for this reply (x-envoy-overloaded,
	// www-authenticate, ...) stay.
	h := s.w.Header()
	if s.grpc {
		h[hdrContentType] = []string{"application/grpc"}
		if grpcStatus < 0 {
			grpcStatus = httpToGRPCStatus(code)
		}
		h[hdrGRPCStatus] = []string{strconv.Itoa(grpcStatus)}
		if body != "" {
			h[hdrGRPCMessage] = []string{grpcPercentEncode(body)}
		}
		s.WriteHeader(http.StatusOK)
		return
	}
	if body != "" {
		h[hdrContentType] = []string{"text/plain"}
		h[hdrContentLength] = []string{strconv.Itoa(len(body))}
	}
	s.WriteHeader(code)
	if body != "" && s.Req.Method != http.MethodHead {
		io.WriteString(s, body)
	}
}

// httpToGRPCStatus is Envoy's Grpc::Utility::httpToGrpcStatus.
func httpToGRPCStatus(code int) int {
	switch code {
	case 400:
		return 13 // INTERNAL
	case 401:
		return 16 // UNAUTHENTICATED
	case 403:
		return 7 // PERMISSION_DENIED
	case 404:
		return 12 // UNIMPLEMENTED
	case 429, 502, 503, 504:
		return 14 // UNAVAILABLE
	}
	return 2 // UNKNOWN
}

// grpcPercentEncode encodes grpc-message as the gRPC spec asks.
func grpcPercentEncode(s string) string {
	ok := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '%' {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	var b strings.Builder
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

func isGRPCContentType(ct string) bool {
	return strings.HasPrefix(ct, "application/grpc")
}

// Canonical header keys used on the request path, so lookups need no
// canonicalisation.
const (
	hdrResponseFlags       = "X-Skiff-Response-Flags"
	hdrContentType         = "Content-Type"
	hdrContentLength       = "Content-Length"
	hdrGRPCStatus          = "Grpc-Status"
	hdrGRPCMessage         = "Grpc-Message"
	hdrGRPCTimeout         = "Grpc-Timeout"
	hdrRequestID           = "X-Request-Id"
	hdrXFF                 = "X-Forwarded-For"
	hdrXFP                 = "X-Forwarded-Proto"
	hdrServer              = "Server"
	hdrUserAgent           = "User-Agent"
	hdrVia                 = "Via"
	hdrConnection          = "Connection"
	hdrUpgrade             = "Upgrade"
	hdrTE                  = "Te"
	hdrServiceTime         = "X-Envoy-Upstream-Service-Time"
	hdrExpectedTimeout     = "X-Envoy-Expected-Rq-Timeout-Ms"
	hdrRqTimeout           = "X-Envoy-Upstream-Rq-Timeout-Ms"
	hdrPerTryTimeout       = "X-Envoy-Upstream-Rq-Per-Try-Timeout-Ms"
	hdrRetryOn             = "X-Envoy-Retry-On"
	hdrRetryGRPCOn         = "X-Envoy-Retry-Grpc-On"
	hdrMaxRetries          = "X-Envoy-Max-Retries"
	hdrAttemptCount        = "X-Envoy-Attempt-Count"
	hdrOverloaded          = "X-Envoy-Overloaded"
	hdrDecoratorOperation  = "X-Envoy-Decorator-Operation"
	hdrExternalAddress     = "X-Envoy-External-Address"
	hdrInternal            = "X-Envoy-Internal"
	hdrOriginalDstHost     = "X-Envoy-Original-Dst-Host"
	hdrFaultDelay          = "X-Envoy-Fault-Delay-Request"
	hdrFaultDelayPct       = "X-Envoy-Fault-Delay-Request-Percentage"
	hdrFaultAbort          = "X-Envoy-Fault-Abort-Request"
	hdrFaultAbortGRPC      = "X-Envoy-Fault-Abort-Grpc-Request"
	hdrFaultAbortPct       = "X-Envoy-Fault-Abort-Request-Percentage"
	hdrOrigin              = "Origin"
	hdrACRequestMethod     = "Access-Control-Request-Method"
	hdrACAllowOrigin       = "Access-Control-Allow-Origin"
	hdrACAllowMethods      = "Access-Control-Allow-Methods"
	hdrACAllowHeaders      = "Access-Control-Allow-Headers"
	hdrACExposeHeaders     = "Access-Control-Expose-Headers"
	hdrACMaxAge            = "Access-Control-Max-Age"
	hdrACAllowCredentials  = "Access-Control-Allow-Credentials"
	hdrACAllowPrivateNet   = "Access-Control-Allow-Private-Network"
	hdrACRequestPrivateNet = "Access-Control-Request-Private-Network"
)
