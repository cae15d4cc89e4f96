package hcm

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/dataplane/route"
)

// RouterTypeURL is the typed_config type of envoy.filters.http.router, the
// chain's mandatory terminal filter.
const RouterTypeURL = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

// Envoy's local reply bodies.
const (
	bodyNoHealthy   = "no healthy upstream"
	bodyTimeout     = "upstream request timeout"
	bodyResetPrefix = "upstream connect error or disconnect/reset before headers. reset reason: "
)

// maxReplayBody is how much request body is kept for retries and mirrors
// (Envoy's default per-connection buffer limit); a larger body disables
// retries of that request, as in Envoy.
const maxReplayBody = 1 << 20

// router is envoy.filters.http.router: it forwards the stream to the
// route's cluster.
type router struct {
	c        *config
	clusters core.ClusterSet
	// suppress is suppress_envoy_headers: no x-envoy-* headers added.
	suppress bool
}

func newRouter(c *config, clusters core.ClusterSet, cfg *routerv3.Router) *router {
	return &router{c: c, clusters: clusters, suppress: cfg.GetSuppressEnvoyHeaders()}
}

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (rt *router) ServeStream(s *Stream) {
	st := rt.c.stats
	e := s.Route
	if e == nil {
		st.noRoute.Inc()
		s.SendLocalReply(http.StatusNotFound, "", core.NoRouteFound)
		return
	}
	switch {
	case e.Direct != nil:
		st.direct.Inc()
		h := s.Header()
		e.MutateResponse(h, nil)
		if len(e.Direct.Body) > 0 {
			h[hdrContentType] = []string{"text/plain"}
			h[hdrContentLength] = []string{strconv.Itoa(len(e.Direct.Body))}
		}
		s.WriteHeader(e.Direct.Status)
		if s.Req.Method != http.MethodHead {
			s.Write(e.Direct.Body)
		}
		return
	case e.Redirect != nil:
		st.redirect.Inc()
		code, loc := e.Redirect.Location(s.Req)
		h := s.Header()
		e.MutateResponse(h, nil)
		h["Location"] = []string{loc}
		s.WriteHeader(code)
		return
	case e.Action == nil:
		st.noRoute.Inc()
		s.SendLocalReply(http.StatusNotFound, "", core.NoRouteFound)
		return
	}
	a := e.Action
	name := a.ClusterName(s.Req, s.Cluster)
	var cl core.Cluster
	if name != "" {
		cl = rt.clusters.Cluster(name)
	}
	if cl == nil {
		st.noCluster.Inc()
		code := a.ClusterNotFoundStatus
		if code == 0 {
			code = http.StatusServiceUnavailable
		}
		s.SendLocalReply(code, "", core.NoClusterFound)
		return
	}
	s.UpstreamCluster = name
	upgrade := isWebSocketUpgrade(s.Req.Header)
	if upgrade {
		enabled, ok := a.Upgrades["websocket"]
		if !ok {
			enabled = rt.c.upgrades["websocket"]
		}
		if !enabled || s.Req.ProtoMajor != 1 {
			s.SendLocalReply(http.StatusForbidden, "", 0)
			return
		}
	}
	rt.forward(s, e, a, cl, upgrade)
}

// attemptPlan is the per-request timeout and retry setup.
type attemptPlan struct {
	timeout time.Duration
	// fromStart says the timeout runs from the start of the stream (a
	// grpc-timeout deadline) rather than from the end of the request.
	fromStart bool
	perTry    time.Duration
	policy    *route.RetryPolicy
}

func (rt *router) plan(s *Stream, a *route.Action) attemptPlan {
	h := s.Req.Header
	p := attemptPlan{timeout: a.Timeout}
	p.policy = route.WithRequestHeaders(a.Retry, h)
	if p.policy != nil {
		p.perTry = p.policy.PerTryTimeout
	}
	if a.MaxGRPCTimeout != nil {
		if v := h[hdrGRPCTimeout]; len(v) > 0 {
			if t, ok := parseGRPCTimeout(v[0]); ok {
				if m := *a.MaxGRPCTimeout; m > 0 && t > m {
					t = m
				}
				if a.GRPCTimeoutOffset > 0 && t > a.GRPCTimeoutOffset {
					t -= a.GRPCTimeoutOffset
				}
				p.timeout = t
				p.fromStart = true
			}
		}
	}
	// x-envoy-upstream-rq-timeout-ms has the last word, as in Envoy.
	if v := h[hdrRqTimeout]; len(v) > 0 {
		if ms, err := strconv.ParseUint(strings.TrimSpace(v[0]), 10, 32); err == nil {
			p.timeout = time.Duration(ms) * time.Millisecond
			p.fromStart = false
		}
	}
	if p.perTry >= p.timeout && p.timeout > 0 {
		p.perTry = 0 // a per-try timeout not below the global one is ignored, as in Envoy
	}
	return p
}

// parseGRPCTimeout parses the grpc-timeout header ("100m", "5S").
func parseGRPCTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	return time.Duration(n) * unit, true
}

// forward runs the attempts of one request against cluster cl.
func (rt *router) forward(s *Stream, e *route.Entry, a *route.Action, cl core.Cluster, upgrade bool) {
	cs := cl.Stats()
	r := s.Req
	p := rt.plan(s, a)
	h := r.Header
	// Headers that steer this proxy are consumed here, not forwarded.
	delete(h, hdrRqTimeout)
	delete(h, hdrPerTryTimeout)
	delete(h, hdrRetryOn)
	delete(h, hdrRetryGRPCOn)
	delete(h, hdrMaxRetries)
	delete(h, "X-Envoy-Retriable-Status-Codes")
	if _, ok := h[hdrUserAgent]; !ok {
		// An empty value stops Go's transports adding their own User-Agent.
		h[hdrUserAgent] = emptyValue
	}

	// A refused breaker counts its own overflow (upstream_rq_pending_overflow).
	if !cl.AcquireRequest() {
		rt.overflow(s)
		return
	}
	defer cl.ReleaseRequest()

	a.RewritePath(r, e)
	e.MutateRequest(h, s.Cluster, s.Conn)
	if host, ok := a.HostRewrite(r, s.Cluster); ok {
		if a.AppendXForwardedHost {
			h["X-Forwarded-Host"] = append(h["X-Forwarded-Host"], r.Host)
		}
		r.Host = host
	}
	if e.Decorator != "" && !rt.suppress {
		h[hdrDecoratorOperation] = []string{e.Decorator}
	}
	if !rt.suppress {
		if exp := p.perTry; exp > 0 {
			h[hdrExpectedTimeout] = []string{strconv.FormatInt(exp.Milliseconds(), 10)}
		} else if p.timeout > 0 {
			h[hdrExpectedTimeout] = []string{strconv.FormatInt(p.timeout.Milliseconds(), 10)}
		}
	}

	ctx := r.Context()
	if p.timeout > 0 {
		body := s.body
		if p.fromStart {
			body = nil
		}
		var stop func()
		ctx, stop = routeTimeout(ctx, p.timeout, body)
		defer stop()
	}
	lb := core.LBContext{Downstream: s.Conn}
	if v := h[hdrOriginalDstHost]; len(v) > 0 {
		// ORIGINAL_DST clusters configured with use_http_header read it.
		lb.OverrideHost = v[0]
	}
	if len(a.HashPolicies) > 0 {
		lb.Hash, lb.HasHash = a.Hash(r, s.Conn)
	}

	var body *replayBody
	hasBody := r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	if len(a.Mirrors) > 0 {
		rt.mirror(s, a, hasBody, &body)
	}
	if hasBody && body == nil && p.policy != nil && p.policy.NumRetries > 0 && !upgrade {
		body = &replayBody{src: r.Body}
	}

	r.RequestURI = ""
	if upgrade {
		rt.upgrade(s, cl, &lb, r.WithContext(ctx))
		return
	}

	var tried []core.Host
	retries := uint32(0)
	// A retry holds its max_retries slot until the retried attempt ends.
	holdingRetry := false
	defer func() {
		if holdingRetry {
			cl.ReleaseRetry()
		}
	}()
	for attempt := 1; ; attempt++ {
		host := chooseHost(cl, &lb, p.policy)
		if host == nil {
			s.SendLocalReply(http.StatusServiceUnavailable, bodyNoHealthy, core.NoHealthyUpstream)
			return
		}
		s.UpstreamHost, s.UpstreamHostRef = host.Address(), host
		s.attempts = attempt
		if a.AutoHostRewrite {
			if name := hostOnly(s.UpstreamHost); net.ParseIP(name) == nil {
				r.Host = name // only hosts with a DNS name, as in Envoy
			}
		}
		if a.IncludeAttemptCount {
			h[hdrAttemptCount] = []string{strconv.Itoa(attempt)}
		}
		tryCtx, tryCancel := ctx, context.CancelFunc(nil)
		if p.perTry > 0 {
			tryCtx, tryCancel = context.WithTimeout(ctx, p.perTry)
		}
		// Each attempt gets its own request value: a transport may hold
		// the previous one until it has given up on it.
		out := r.WithContext(tryCtx)
		if body != nil {
			out.Body = body.reader()
		}
		cs.RqTotal.Inc()
		cs.RqActive.Inc()
		start := time.Now()
		resp, err := host.RoundTrip(out)
		if err != nil {
			cs.RqActive.Dec()
			if tryCancel != nil {
				tryCancel()
			}
			kind := errorKind(err)
			globalTimeout := context.Cause(ctx) == errRouteTimeout
			if r.Context().Err() != nil && !globalTimeout {
				// The downstream went away; nobody is left to answer.
				s.Flags |= core.DownstreamConnectionTermination
				panic(http.ErrAbortHandler)
			}
			if globalTimeout {
				host.Observe(http.StatusGatewayTimeout, &core.UpstreamError{Kind: core.Timeout, Err: err})
				rt.timedOut(s, cs)
				return
			}
			if tryCtx.Err() == context.DeadlineExceeded {
				cs.RqPerTryTimeout.Inc()
				kind = core.Timeout
			}
			host.Observe(0, &core.UpstreamError{Kind: kind, Err: err})
			if kind != core.Overflow && p.policy.ShouldRetryError(kind) && rt.mayRetry(s, cl, p.policy, retries, body) &&
				rt.takeRetry(cl, p.policy, &retries, &lb, &tried, host, &holdingRetry) {
				if !backoff(ctx, p.policy, retries) {
					rt.timedOut(s, cs)
					return
				}
				continue
			}
			if kind == core.ConnectFailure {
				s.upstreamFailure = strings.ReplaceAll(err.Error(), " ", "_")
			}
			rt.replyError(s, kind)
			return
		}
		cs.CountStatus(resp.StatusCode)
		host.Observe(resp.StatusCode, nil)
		if p.policy.ShouldRetryStatus(resp.StatusCode, resp.Header) {
			if rt.mayRetry(s, cl, p.policy, retries, body) && rt.takeRetry(cl, p.policy, &retries, &lb, &tried, host, &holdingRetry) {
				discard(resp.Body)
				cs.RqActive.Dec()
				if tryCancel != nil {
					tryCancel()
				}
				if !backoff(ctx, p.policy, retries) {
					rt.timedOut(s, cs)
					return
				}
				continue
			}
		} else if retries > 0 {
			cs.RqRetrySuccess.Inc()
		}
		s.upstreamDur = time.Since(start)
		rt.respond(s, e, resp)
		cs.RqActive.Dec()
		cs.RqTime.Record(float64(time.Since(start).Microseconds()) / 1000)
		if tryCancel != nil {
			tryCancel()
		}
		return
	}
}

// chooseHost picks the attempt's host; with a retry host predicate it
// reselects up to host_selection_retry_max_attempts times while the pick is
// rejected, then takes the last pick, as Envoy does.
func chooseHost(cl core.Cluster, lb *core.LBContext, p *route.RetryPolicy) core.Host {
	h := cl.ChooseHost(lb)
	if lb.Reject == nil || p == nil {
		return h
	}
	for i := 0; i < p.HostSelectionMaxAttempts && h != nil && lb.Reject(h); i++ {
		h = cl.ChooseHost(lb)
	}
	return h
}

// mayRetry checks the retry budget of a retriable failure: with retries
// left and a replayable body it says yes; with none left it counts
// upstream_rq_retry_limit_exceeded and flags URX.
func (rt *router) mayRetry(s *Stream, cl core.Cluster, p *route.RetryPolicy, retries uint32, body *replayBody) bool {
	if retries >= p.NumRetries {
		if p.NumRetries > 0 {
			cl.Stats().RqRetryLimitExceeded.Inc()
			s.Flags |= core.UpstreamRetryLimitExceeded
		}
		return false
	}
	return body.replayable()
}

// takeRetry takes a retry slot under the max_retries breaker (held until
// the retried attempt ends) and counts the retry; false means the breaker
// is open and the request is not retried.
func (rt *router) takeRetry(cl core.Cluster, p *route.RetryPolicy, retries *uint32, lb *core.LBContext, tried *[]core.Host, failed core.Host, holding *bool) bool {
	cs := cl.Stats()
	if *holding {
		cl.ReleaseRetry()
		*holding = false
	}
	// A refused breaker counts upstream_rq_retry_overflow itself.
	if !cl.AcquireRetry() {
		return false
	}
	*holding = true
	*retries++
	cs.RqRetry.Inc()
	if p.PreviousHosts {
		*tried = append(*tried, failed)
		if lb.Reject == nil {
			lb.Reject = func(h core.Host) bool {
				for _, t := range *tried {
					if t == h {
						return true
					}
				}
				return false
			}
		}
	}
	return true
}

var errRouteTimeout = errors.New("route timeout")

// routeTimeout returns ctx cancelled with errRouteTimeout d after the
// downstream request is complete, which is when Envoy starts the route
// timeout: at once for a request without a body, else at the body's end, so
// a slow upload or a client stream is not cut short.
func routeTimeout(parent context.Context, d time.Duration, body *countingBody) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(parent)
	if body == nil {
		t := time.AfterFunc(d, func() { cancel(errRouteTimeout) })
		return ctx, func() { t.Stop(); cancel(nil) }
	}
	var mu sync.Mutex
	var t *time.Timer
	stopped := false
	start := func() {
		mu.Lock()
		defer mu.Unlock()
		if t == nil && !stopped {
			t = time.AfterFunc(d, func() { cancel(errRouteTimeout) })
		}
	}
	body.onEOF(start)
	return ctx, func() {
		mu.Lock()
		stopped = true
		if t != nil {
			t.Stop()
		}
		mu.Unlock()
		cancel(nil)
	}
}

// backoff waits Envoy's jittered back-off before retry n; false means the
// route's timeout expired meanwhile.
func backoff(ctx context.Context, p *route.RetryPolicy, n uint32) bool {
	d := p.Backoff(int(n), rand.Uint64())
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (rt *router) timedOut(s *Stream, cs *core.ClusterStats) {
	cs.RqTimeout.Inc()
	s.SendLocalReply(http.StatusGatewayTimeout, bodyTimeout, core.UpstreamRequestTimeout)
}

func (rt *router) overflow(s *Stream) {
	s.Header()[hdrOverloaded] = trueValue
	s.SendLocalReply(http.StatusServiceUnavailable, bodyResetPrefix+"overflow", core.UpstreamOverflow)
}

// replyError answers a failed attempt with Envoy's status, body and flag.
func (rt *router) replyError(s *Stream, kind core.UpstreamErrorKind) {
	switch kind {
	case core.ConnectFailure:
		s.SendLocalReply(http.StatusServiceUnavailable, bodyResetPrefix+"connection failure", core.UpstreamConnectionFailure)
	case core.Overflow:
		rt.overflow(s)
	case core.RefusedStream:
		s.SendLocalReply(http.StatusServiceUnavailable, bodyResetPrefix+"remote refused stream reset", core.UpstreamRemoteReset)
	case core.Timeout:
		s.SendLocalReply(http.StatusGatewayTimeout, bodyTimeout, core.UpstreamRequestTimeout)
	default:
		s.SendLocalReply(http.StatusServiceUnavailable, bodyResetPrefix+"connection termination", core.UpstreamConnectionTermination)
	}
}

func errorKind(err error) core.UpstreamErrorKind {
	var ue *core.UpstreamError
	if errors.As(err, &ue) {
		return ue.Kind
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return core.ConnectFailure
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return core.Timeout
	}
	return core.Reset
}

// respond copies the upstream response to the downstream.
func (rt *router) respond(s *Stream, e *route.Entry, resp *http.Response) {
	defer resp.Body.Close()
	h := s.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	removeHopByHop(h, false)
	if _, ok := h[hdrContentType]; !ok {
		h[hdrContentType] = nil // a proxy passes bodies as they are: no content sniffing
	}
	if !rt.suppress {
		h[hdrServiceTime] = []string{strconv.FormatInt(s.upstreamDur.Milliseconds(), 10)}
	}
	e.MutateResponse(h, s.Cluster)
	if resp.ContentLength >= 0 && len(h[hdrContentLength]) == 0 && resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified && s.Req.Method != http.MethodHead {
		h[hdrContentLength] = []string{strconv.FormatInt(resp.ContentLength, 10)}
	}
	s.WriteHeader(resp.StatusCode)
	streaming := resp.ContentLength < 0
	bp := copyBufPool.Get().(*[]byte)
	buf := *bp
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := s.Write(buf[:n]); werr != nil {
				copyBufPool.Put(bp)
				s.Flags |= core.DownstreamConnectionTermination
				return
			}
			if streaming {
				s.Flush()
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			copyBufPool.Put(bp)
			s.Flags |= core.UpstreamConnectionTermination
			panic(http.ErrAbortHandler)
		}
	}
	copyBufPool.Put(bp)
	for k, v := range resp.Trailer {
		h[http.TrailerPrefix+k] = v
	}
}

func discard(b io.ReadCloser) {
	io.CopyN(io.Discard, b, 64<<10)
	b.Close()
}

func hostOnly(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// mirror sends fire-and-forget copies of the request to the route's mirror
// clusters. A request body is read into memory first (up to
// maxReplayBody) so the copies and the main request each get all of it.
func (rt *router) mirror(s *Stream, a *route.Action, hasBody bool, body **replayBody) {
	var sampled []*route.Mirror
	for i := range a.Mirrors {
		if a.Mirrors[i].Sampled(rand.Uint64()) {
			sampled = append(sampled, &a.Mirrors[i])
		}
	}
	if len(sampled) == 0 {
		return
	}
	r := s.Req
	var data []byte
	if hasBody {
		rb := &replayBody{src: r.Body}
		rd := rb.reader()
		b, err := io.ReadAll(io.LimitReader(rd, maxReplayBody+1))
		if err != nil || len(b) > maxReplayBody {
			// Too large (or broken) to copy: the main request still goes
			// out whole, replaying what was read.
			*body = rb
			return
		}
		data = b
		*body = rb
	}
	for _, m := range sampled {
		name := m.Cluster
		if m.ClusterHeader != "" {
			name = r.Header.Get(m.ClusterHeader)
		}
		cl := rt.clusters.Cluster(name)
		if cl == nil {
			continue
		}
		cp := r.Clone(context.Background())
		cp.RequestURI = ""
		switch {
		case m.HostRewriteLiteral != "":
			cp.Host = m.HostRewriteLiteral
		case !m.DisableShadowHostSuffix:
			cp.Host = shadowHost(cp.Host)
		}
		if data != nil {
			cp.Body = io.NopCloser(bytes.NewReader(data))
			cp.ContentLength = int64(len(data))
		} else {
			cp.Body = http.NoBody
		}
		timeout := a.Timeout
		go sendMirror(cl, cp, s.Conn, timeout)
	}
}

// shadowHost appends Envoy's "-shadow" suffix to the host name, before
// any port.
func shadowHost(h string) string {
	if host, port, err := net.SplitHostPort(h); err == nil {
		return net.JoinHostPort(host+"-shadow", port)
	}
	return h + "-shadow"
}

func sendMirror(cl core.Cluster, r *http.Request, ci *core.ConnInfo, timeout time.Duration) {
	if timeout > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		r = r.WithContext(ctx)
	}
	host := cl.ChooseHost(&core.LBContext{Downstream: ci})
	if host == nil {
		return
	}
	if !cl.AcquireRequest() {
		return
	}
	defer cl.ReleaseRequest()
	cs := cl.Stats()
	cs.RqTotal.Inc()
	resp, err := host.RoundTrip(r)
	if err != nil {
		host.Observe(0, err)
		return
	}
	cs.CountStatus(resp.StatusCode)
	host.Observe(resp.StatusCode, nil)
	discard(resp.Body)
}

// replayBody records the request body as attempts read it so a retry can
// send it again. Each attempt reads through its own reader; a reader of an
// abandoned attempt (still held by a transport) is cut off so two attempts
// never read the source at once.
type replayBody struct {
	mu       sync.Mutex
	src      io.ReadCloser
	buf      []byte
	eof      bool
	overflow atomic.Bool
	gen      atomic.Int64
}

func (b *replayBody) reader() io.ReadCloser {
	return &replayReader{b: b, gen: b.gen.Add(1)}
}

// replayable reports whether another attempt can get the whole body; nil
// (no body) is always replayable.
func (b *replayBody) replayable() bool {
	if b == nil {
		return true
	}
	return !b.overflow.Load()
}

var errStaleAttempt = errors.New("request body: attempt abandoned")

type replayReader struct {
	b   *replayBody
	gen int64
	off int
}

func (r *replayReader) Read(p []byte) (int, error) {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if r.gen != b.gen.Load() {
		return 0, errStaleAttempt
	}
	if r.off < len(b.buf) {
		n := copy(p, b.buf[r.off:])
		r.off += n
		return n, nil
	}
	if b.eof {
		return 0, io.EOF
	}
	n, err := b.src.Read(p)
	if n > 0 {
		if !b.overflow.Load() && len(b.buf)+n <= maxReplayBody {
			b.buf = append(b.buf, p[:n]...)
			r.off += n
		} else {
			b.overflow.Store(true)
		}
	}
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (r *replayReader) Close() error { return nil }
