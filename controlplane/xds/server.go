// Package xds is skiffd's ADS server: it accepts proxies' xDS v3 streams
// (state of the world and delta), parses each proxy's identity from its
// node, answers requests and pushes with resources from a Generator, and
// keeps per-connection, per-type protocol state (subscriptions, nonces,
// versions sent and ACKed, the last NACK) together with which config
// versions each proxy has received and ACKed.
//
// Changes arrive through Push; they are debounced and merged, then queued
// to each affected connection, which holds at most one pending push (later
// ones merge into it), so a slow proxy delays nobody but itself.
package xds

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Options configure a Server. Zero values take Istio's defaults.
type Options struct {
	Generator Generator // required
	Scope     Scope     // nil: every push goes to every proxy
	// DebounceAfter is the quiet period a burst of changes must end with
	// before it is pushed (Istio's PILOT_DEBOUNCE_AFTER, 100ms).
	DebounceAfter time.Duration
	// DebounceMax bounds how long a steady stream of changes can hold a
	// push back (PILOT_DEBOUNCE_MAX, 10s).
	DebounceMax time.Duration
	// EndpointDebounce is the quiet period when only endpoints changed;
	// short so an endpoint change reaches proxies well within 200ms (5ms).
	EndpointDebounce time.Duration
	// Concurrency bounds how many connections generate resources at once
	// (Istio's PILOT_PUSH_THROTTLE, 100). Sending is outside the bound,
	// so a proxy slow to read never holds a slot.
	Concurrency int
	// LargeSends bounds how many streams may have a large response (one
	// that fills a connection's write buffer) sent and not yet answered
	// (default 256; see window.go): it bounds the write buffers a push
	// holds, whatever the number of connections.
	LargeSends int
	// SendTimeout, when set, disconnects a proxy that has not taken a
	// response within it (Istio's PILOT_XDS_SEND_TIMEOUT); it reconnects
	// and resyncs. Zero waits for ever, as Istio does by default: a stuck
	// proxy then only holds up itself.
	SendTimeout time.Duration
	// Authorize, when set, decides whether the stream's caller may be the
	// proxy its node describes (skiffd's 15012 checks the credential's
	// namespace); an error ends the stream with it (a gRPC status error is
	// passed through, anything else becomes PermissionDenied).
	Authorize func(ctx context.Context, p *Proxy) error
	Logger    *slog.Logger
}

// Server is the ADS server. Create it with New, Register it on a gRPC
// server, and Run its push loop.
type Server struct {
	opts Options
	log  *slog.Logger
	m    *metrics
	sem  chan struct{} // generation slots
	// window holds a token per stream with a large response unanswered.
	window chan struct{}

	connSeq  atomic.Uint64
	nonceSeq atomic.Uint64
	nonceTag string // tells this server's nonces from a previous instance's

	// version is the current push version, sent as version_info.
	version atomic.Pointer[string]
	pushSeq atomic.Uint64

	mu    sync.RWMutex
	conns map[string]*conn

	// Debounce state: Push merges into pending and pokes the loop.
	pushMu  sync.Mutex
	pending *PushRequest
	firstAt time.Time
	lastAt  time.Time
	wake    chan struct{}
}

// New returns a server using opts.Generator. It serves nothing until
// Registered, and pushes nothing until Run.
func New(opts Options) *Server {
	if opts.Generator == nil {
		panic("xds.New: Options.Generator is nil")
	}
	if opts.DebounceAfter <= 0 {
		opts.DebounceAfter = 100 * time.Millisecond
	}
	if opts.DebounceMax <= 0 {
		opts.DebounceMax = 10 * time.Second
	}
	if opts.EndpointDebounce <= 0 {
		opts.EndpointDebounce = 5 * time.Millisecond
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 100
	}
	if opts.LargeSends <= 0 {
		opts.LargeSends = 256
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	var tag [4]byte
	_, _ = rand.Read(tag[:])
	s := &Server{
		opts:     opts,
		log:      log.With("component", "xds"),
		m:        newMetrics(),
		sem:      make(chan struct{}, opts.Concurrency),
		window:   make(chan struct{}, opts.LargeSends),
		nonceTag: hex.EncodeToString(tag[:]),
		conns:    map[string]*conn{},
		wake:     make(chan struct{}, 1),
	}
	v := s.nextVersion()
	s.version.Store(&v)
	return s
}

// Register serves ADS on g.
func (s *Server) Register(g *grpc.Server) {
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, s)
}

// Registry holds the server's metrics, for /metrics.
func (s *Server) Registry() *prometheus.Registry { return s.m.reg }

func (s *Server) nextVersion() string {
	return time.Now().UTC().Format("2006-01-02T15:04:05Z") + "/" + strconv.FormatUint(s.pushSeq.Add(1), 10)
}

func (s *Server) nextNonce() string {
	return s.nonceTag + "-" + strconv.FormatUint(s.nonceSeq.Add(1), 10)
}

func (s *Server) addConn(c *conn) {
	s.mu.Lock()
	s.conns[c.id] = c
	s.mu.Unlock()
	s.m.clients.WithLabelValues(c.proxy.IstioVersion).Inc()
}

func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	delete(s.conns, c.id)
	s.mu.Unlock()
	s.m.clients.WithLabelValues(c.proxy.IstioVersion).Dec()
}

func (s *Server) connections() []*conn {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*conn, 0, len(s.conns))
	for _, c := range s.conns {
		out = append(out, c)
	}
	return out
}

// Push asks for the proxies req affects to be updated. It never blocks:
// requests merge until the debounce window closes (see Options).
func (s *Server) Push(req *PushRequest) {
	now := time.Now()
	r := *req
	if r.Start.IsZero() {
		r.Start = now
	}
	reason := r.Reason
	if reason == "" {
		reason = "unknown"
	}
	s.m.triggers.WithLabelValues(reason).Inc()
	s.pushMu.Lock()
	if s.pending == nil {
		s.firstAt = now
	}
	s.pending = merge(s.pending, &r)
	s.lastAt = now
	s.pushMu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run debounces pushes and dispatches them until ctx ends.
func (s *Server) Run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-s.wake:
		case <-timer.C:
		}
		s.pushMu.Lock()
		if s.pending == nil {
			s.pushMu.Unlock()
			continue
		}
		quiet := s.opts.DebounceAfter
		if s.pending.edsOnly() {
			quiet = s.opts.EndpointDebounce
		}
		due := s.lastAt.Add(quiet)
		if maxDue := s.firstAt.Add(s.opts.DebounceMax); maxDue.Before(due) {
			due = maxDue
		}
		if wait := time.Until(due); wait > 0 {
			s.pushMu.Unlock()
			timer.Reset(wait)
			continue
		}
		req, first := s.pending, s.firstAt
		s.pending = nil
		s.pushMu.Unlock()
		timer.Stop()
		s.m.debounceTime.Observe(time.Since(first).Seconds())
		s.dispatch(req)
	}
}

// dispatch stamps req with a new version and queues it to every affected
// connection.
func (s *Server) dispatch(req *PushRequest) {
	v := s.nextVersion()
	s.version.Store(&v)
	p := &push{req: req, version: v, queued: time.Now()}
	for _, c := range s.connections() {
		if s.opts.Scope != nil && !s.opts.Scope.Affected(c.proxy, req) {
			continue
		}
		if req.Proxies != nil && !req.Proxies(c.proxy) {
			continue
		}
		c.enqueue(p)
	}
}

// push is a debounced request on its way to one connection.
type push struct {
	req     *PushRequest
	version string
	queued  time.Time

	// limited caches, per subscription list, the names an endpoint-only
	// push sends: thousands of streams share a few lists, and each
	// checked its 2000 names against the changed services.
	mu      sync.Mutex
	limited map[*nameList][]string
}

// limitedNames is the names of l that keep accepts, computed once per
// list for all the streams this push goes to. Callers must not modify it.
func (p *push) limitedNames(l *nameList, keep func(string) bool) []string {
	if l == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if out, ok := p.limited[l]; ok {
		return out
	}
	var out []string
	for _, n := range l.names {
		if keep(n) {
			out = append(out, n)
		}
	}
	if p.limited == nil {
		p.limited = map[*nameList][]string{}
	}
	p.limited[l] = out
	return out
}

func mergePush(a, b *push) *push {
	if a == nil {
		return b
	}
	return &push{req: merge(a.req, b.req), version: b.version, queued: a.queued}
}

// StreamAggregatedResources serves a state-of-the-world ADS stream.
func (s *Server) StreamAggregatedResources(stream grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	return serve(s, stream, false, sotwHandler{stream: stream})
}

// DeltaAggregatedResources serves an incremental ADS stream.
func (s *Server) DeltaAggregatedResources(stream grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) error {
	return serve(s, stream, true, deltaHandler{stream: stream})
}

// protocol is what differs between SotW and delta streams.
type protocol[Req any] interface {
	node(req *Req) *corev3.Node
	// onRequest handles one request: ACK, NACK or subscription change,
	// answering it if it needs an answer.
	onRequest(c *conn, req *Req) error
	// push sends typeURL's resources for p, if the connection watches it.
	push(c *conn, typeURL string, p *push) (sent bool, err error)
}

func serve[Req any, Resp any](s *Server, stream grpc.BidiStreamingServer[Req, Resp], delta bool, h protocol[Req]) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	proxy, err := ParseNode(h.node(first))
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if s.opts.Authorize != nil {
		if err := s.opts.Authorize(ctx, proxy); err != nil {
			s.log.Warn("proxy refused", "proxy", proxy.ID, "error", err)
			if _, ok := status.FromError(err); ok {
				return err
			}
			return status.Error(codes.PermissionDenied, err.Error())
		}
	}
	c := &conn{
		s:           s,
		id:          proxy.ID + "-" + strconv.FormatUint(s.connSeq.Add(1), 10),
		proxy:       proxy,
		delta:       delta,
		connectedAt: time.Now(),
		watches:     map[string]*watch{},
		wake:        make(chan struct{}, 1),
	}
	s.addConn(c)
	defer s.removeConn(c)
	defer c.releaseSlots()
	s.log.Info("proxy connected", "proxy", proxy.ID, "conn", c.id, "delta", delta, "type", proxy.Type, "version", proxy.IstioVersion)
	defer s.log.Info("proxy disconnected", "proxy", proxy.ID, "conn", c.id)

	// Requests are read on their own goroutine so that this one can
	// answer them and push in order, as the only sender on the stream.
	reqs := make(chan *Req)
	recvErr := make(chan error, 1)
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	if err := h.onRequest(c, first); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil // the proxy closed its side
			}
			return err
		case r := <-reqs:
			if err := h.onRequest(c, r); err != nil {
				return err
			}
		case <-c.wake:
			p := c.dequeue()
			if p == nil {
				continue
			}
			s.m.queueTime.Observe(time.Since(p.queued).Seconds())
			if err := c.pushAll(h.push, p); err != nil {
				return err
			}
		}
	}
}

// pushAll sends every type p covers that the connection watches, in
// make-before-break order.
func (c *conn) pushAll(send func(*conn, string, *push) (bool, error), p *push) error {
	sentAny := false
	for _, t := range c.watchedTypes() {
		if !p.req.covers(t) {
			continue
		}
		start := time.Now()
		sent, err := send(c, t, p)
		if err != nil {
			return err
		}
		if sent {
			sentAny = true
			c.s.m.pushTime.WithLabelValues(ShortType(t)).Observe(time.Since(start).Seconds())
		}
	}
	if sentAny {
		c.s.m.convergence.Observe(time.Since(p.req.Start).Seconds())
	}
	return nil
}

// generate calls the generator within the concurrency bound, keeps only
// subscribed names (the generator may return more) and marshals each
// resource once.
func (c *conn) generate(typeURL string, names []string, req *PushRequest) ([]*encoding, error) {
	c.s.sem <- struct{}{}
	res, err := c.s.opts.Generator.Generate(c.proxy, typeURL, names, req)
	<-c.s.sem
	if err != nil {
		c.s.m.pushes.WithLabelValues(ShortType(typeURL) + "_builderr").Inc()
		c.s.log.Error("generating resources failed; the proxy keeps its previous config", "proxy", c.proxy.ID, "type", ShortType(typeURL), "err", err)
		return nil, err
	}
	out := make([]*encoding, 0, len(res))
	for _, r := range res {
		m, err := encodingOf(typeURL, r)
		if err != nil {
			c.s.m.pushes.WithLabelValues(ShortType(typeURL) + "_builderr").Inc()
			c.s.log.Error("generated resource cannot be sent; the proxy keeps its previous config", "proxy", c.proxy.ID, "type", ShortType(typeURL), "err", err)
			return nil, err
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b *encoding) int { return strings.Compare(a.name, b.name) })
	if names != nil {
		// names is sorted too: keep what both hold in one walk.
		kept, i := out[:0], 0
		for _, e := range out {
			for i < len(names) && names[i] < e.name {
				i++
			}
			if i < len(names) && names[i] == e.name {
				kept = append(kept, e)
			}
		}
		out = kept
	}
	return out, nil
}

// send sends one response within Options.SendTimeout.
func (s *Server) send(c *conn, typeURL string, send func() error) error {
	err := s.sendTimed(send)
	if err != nil {
		s.m.pushes.WithLabelValues(ShortType(typeURL) + "_senderr").Inc()
		s.log.Warn("sending to proxy failed; closing its stream", "proxy", c.proxy.ID, "conn", c.id, "type", ShortType(typeURL), "err", err)
		return err
	}
	s.m.pushes.WithLabelValues(ShortType(typeURL)).Inc()
	return nil
}

func (s *Server) sendTimed(send func() error) error {
	if s.opts.SendTimeout <= 0 {
		return send()
	}
	// The send runs apart so the stream can be given up on; returning
	// ends the stream, which makes the blocked send return too.
	done := make(chan error, 1)
	go func() { done <- send() }()
	t := time.NewTimer(s.opts.SendTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return status.Errorf(codes.DeadlineExceeded, "proxy did not take a response within %v (SendTimeout); disconnecting it so it reconnects and resyncs", s.opts.SendTimeout)
	}
}

var _ discoveryv3.AggregatedDiscoveryServiceServer = (*Server)(nil)
