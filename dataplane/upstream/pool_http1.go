package upstream

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// grant is what a waiting request receives: an idle connection, a
// connection slot to dial with, or neither (HTTP/2: a stream ended, look
// again).
type grant struct {
	conn *h1Conn
	slot bool
}

type waiter struct{ ch chan grant }

// waitQueue is a pool's FIFO of requests waiting for a connection.
type waitQueue struct{ ws []*waiter }

func (q *waitQueue) push(w *waiter) { q.ws = append(q.ws, w) }

func (q *waitQueue) pop() *waiter {
	if len(q.ws) == 0 {
		return nil
	}
	w := q.ws[0]
	q.ws[0] = nil
	q.ws = q.ws[1:]
	return w
}

func (q *waitQueue) remove(w *waiter) bool {
	for i, x := range q.ws {
		if x == w {
			q.ws = append(q.ws[:i], q.ws[i+1:]...)
			return true
		}
	}
	return false
}

// h1Pool keeps a host's idle HTTP/1.1 keep-alive connections, newest
// first, and the requests waiting for one.
type h1Pool struct {
	h       *host
	mu      sync.Mutex
	idle    []*h1Conn
	waiters waitQueue
	closed  bool
}

type h1Conn struct {
	p        *h1Pool
	nc       net.Conn
	cr       countReader
	br       *bufio.Reader
	bw       *bufio.Writer
	requests uint32
	idleAt   time.Time
	closed   atomic.Bool
}

// countReader counts bytes read so a failure on a reused connection can be
// told apart: nothing read means the server closed it while idle.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

var errPoolClosed = errors.New("connection pool closed")

func (p *h1Pool) roundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		pc, reused, err := p.acquire(req.Context())
		if err != nil {
			return nil, err
		}
		before := pc.cr.n
		resp, err := pc.roundTrip(req)
		if err == nil {
			return resp, nil
		}
		pc.close()
		// A keep-alive connection the server closed while idle: resend
		// once on a new connection if the request can be replayed.
		if reused && attempt == 0 && pc.cr.n == before && replayable(req) {
			continue
		}
		var ue *core.UpstreamError
		if errors.As(err, &ue) {
			return nil, err
		}
		return nil, &core.UpstreamError{Kind: core.Reset, Err: err}
	}
}

func replayable(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody {
		return false
	}
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// acquire returns an idle connection, a new one, or waits for one as
// max_connections and max_pending_requests allow.
func (p *h1Pool) acquire(ctx context.Context) (*h1Conn, bool, error) {
	c := p.h.c
	if pc := p.popIdle(); pc != nil {
		return pc, true, nil
	}
	if c.tryReserveCx() {
		pc, err := p.dial(ctx)
		return pc, false, err
	}
	c.waitMu.Lock()
	if c.tryReserveCx() {
		c.waitMu.Unlock()
		pc, err := p.dial(ctx)
		return pc, false, err
	}
	c.stats.CxOverflow.Inc()
	if !c.tryReservePending() {
		c.waitMu.Unlock()
		c.stats.RqPendingOverflow.Inc()
		return nil, false, &core.UpstreamError{Kind: core.Overflow, Err: errors.New("max_pending_requests reached for cluster " + c.cfg.name)}
	}
	p.mu.Lock()
	if len(p.idle) > 0 {
		// A connection came back between the first look and now.
		pc := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		p.mu.Unlock()
		c.waitMu.Unlock()
		c.pending.Add(-1)
		return pc, true, nil
	}
	w := &waiter{ch: make(chan grant, 1)}
	p.waiters.push(w)
	p.mu.Unlock()
	c.waitQ = append(c.waitQ, p)
	c.waitMu.Unlock()
	c.stats.RqPendingTotal.Inc()
	c.stats.RqPendingActive.Inc()
	defer func() {
		c.stats.RqPendingActive.Dec()
		c.pending.Add(-1)
	}()
	select {
	case g := <-w.ch:
		return p.useGrant(ctx, g)
	case <-ctx.Done():
		p.mu.Lock()
		removed := p.waiters.remove(w)
		p.mu.Unlock()
		if !removed {
			// A grant was sent before we left the queue: pass it on.
			g := <-w.ch
			if g.conn != nil {
				p.release(g.conn)
			} else if g.slot {
				c.releaseCx()
			}
		}
		c.stats.RqCancelled.Inc()
		return nil, false, ctxError(ctx)
	}
}

func (p *h1Pool) useGrant(ctx context.Context, g grant) (*h1Conn, bool, error) {
	if g.conn != nil {
		return g.conn, true, nil
	}
	pc, err := p.dial(ctx)
	return pc, false, err
}

func (p *h1Pool) popIdle() *h1Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.idle); n > 0 {
		pc := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		return pc
	}
	return nil
}

// dial opens a connection on an already reserved slot.
func (p *h1Pool) dial(ctx context.Context) (*h1Conn, error) {
	h := p.h
	nc, err := h.dial(ctx, h.tls.Load().h1)
	if err != nil {
		h.c.releaseCx()
		return nil, err
	}
	pc := &h1Conn{p: p, nc: nc}
	pc.cr.r = nc
	pc.br = bufio.NewReaderSize(&pc.cr, 8<<10)
	pc.bw = bufio.NewWriterSize(nc, 8<<10)
	return pc, nil
}

// grantSlot implements slotTaker.
func (p *h1Pool) grantSlot() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.waiters.pop()
	if w == nil {
		return false
	}
	w.ch <- grant{slot: true}
	return true
}

// release returns a connection after a complete keep-alive exchange.
func (p *h1Pool) release(pc *h1Conn) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		pc.close()
		return
	}
	if w := p.waiters.pop(); w != nil {
		p.mu.Unlock()
		w.ch <- grant{conn: pc}
		return
	}
	pc.idleAt = time.Now()
	p.idle = append(p.idle, pc)
	p.mu.Unlock()
}

func (p *h1Pool) sweepIdle(timeout time.Duration) {
	now := time.Now()
	var stale []*h1Conn
	p.mu.Lock()
	keep := p.idle[:0]
	for _, pc := range p.idle {
		if now.Sub(pc.idleAt) >= timeout {
			stale = append(stale, pc)
		} else {
			keep = append(keep, pc)
		}
	}
	clear(p.idle[len(keep):])
	p.idle = keep
	p.mu.Unlock()
	for _, pc := range stale {
		pc.close()
	}
}

func (p *h1Pool) close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, pc := range idle {
		pc.close()
	}
}

func (pc *h1Conn) close() {
	if pc.closed.CompareAndSwap(false, true) {
		pc.nc.Close()
		pc.p.h.connClosed()
	}
}

func (pc *h1Conn) roundTrip(req *http.Request) (*http.Response, error) {
	if _, ok := req.Header["User-Agent"]; !ok {
		// An empty value stops req.Write from adding Go's own User-Agent:
		// a proxy sends what the client sent.
		req.Header["User-Agent"] = nil
	}
	pc.requests++
	// The router's timeouts and the client's cancellation arrive through
	// the request context: when it ends mid-exchange, a past deadline
	// unblocks the connection's reads and writes, and the connection is not
	// reused.
	ctx := req.Context()
	stop := alwaysStopped
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() { pc.nc.SetDeadline(aLongTimeAgo) })
	}
	fail := func(err error) (*http.Response, error) {
		stop()
		if ctx.Err() != nil {
			return nil, ctxError(ctx)
		}
		return nil, err
	}
	if err := req.Write(pc.bw); err != nil {
		return fail(err)
	}
	if err := pc.bw.Flush(); err != nil {
		return fail(err)
	}
	var resp *http.Response
	for {
		var err error
		resp, err = http.ReadResponse(pc.br, req)
		if err != nil {
			return fail(err)
		}
		// Interim 1xx responses are not the answer (101 is: the connection
		// is handed over).
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// The upgraded stream outlives the request: its own idle handling
		// applies, not the request's deadline.
		if !stop() {
			pc.close()
			return nil, ctxError(ctx)
		}
		resp.Body = &upgradedConn{pc: pc}
		return resp, nil
	}
	max := pc.p.h.c.cfg.maxRqPerConn
	keep := !resp.Close && !req.Close && (max == 0 || pc.requests < max)
	if resp.Body == http.NoBody {
		pc.done(stop() && keep)
		return resp, nil
	}
	resp.Body = &h1Body{pc: pc, body: resp.Body, keep: keep, stop: stop, ctx: ctx}
	return resp, nil
}

// aLongTimeAgo is a deadline in the past: it makes blocked I/O return now.
var aLongTimeAgo = time.Unix(1, 0)

func alwaysStopped() bool { return true }

// done ends one exchange: the connection goes back to the pool or closes.
func (pc *h1Conn) done(keep bool) {
	if keep {
		pc.p.release(pc)
	} else {
		pc.close()
	}
}

// h1Body returns its connection to the pool when the body reaches EOF;
// closing it early closes the connection, as its rest is unread.
type h1Body struct {
	pc   *h1Conn
	body io.ReadCloser
	keep bool
	fin  atomic.Bool
	stop func() bool // detaches the request context; false if it already fired
	ctx  context.Context
}

func (b *h1Body) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if err != nil && b.fin.CompareAndSwap(false, true) {
		live := b.stop()
		if err == io.EOF {
			b.pc.done(live && b.keep)
		} else {
			b.pc.close()
			if b.ctx.Err() != nil {
				err = ctxError(b.ctx)
			} else {
				err = &core.UpstreamError{Kind: core.Reset, Err: err}
			}
		}
	}
	return n, err
}

func (b *h1Body) Close() error {
	if b.fin.CompareAndSwap(false, true) {
		b.stop()
		b.pc.close()
	}
	return nil
}

// upgradedConn is the body of a 101 response: the raw connection both ways.
type upgradedConn struct{ pc *h1Conn }

func (u *upgradedConn) Read(p []byte) (int, error)  { return u.pc.br.Read(p) }
func (u *upgradedConn) Write(p []byte) (int, error) { return u.pc.nc.Write(p) }
func (u *upgradedConn) Close() error                { u.pc.close(); return nil }

// ctxError reports a request whose context ended: the router timed it out
// (Timeout) or the client went away (Reset).
func ctxError(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &core.UpstreamError{Kind: core.Timeout, Err: ctx.Err()}
	}
	return &core.UpstreamError{Kind: core.Reset, Err: ctx.Err()}
}
