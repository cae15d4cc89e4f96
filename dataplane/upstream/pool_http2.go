package upstream

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"golang.org/x/net/http2"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// h2Pool multiplexes a host's requests over as few HTTP/2 connections as
// max_concurrent_streams allows (h2c on plain TCP, h2 over TLS).
type h2Pool struct {
	h       *host
	mu      sync.Mutex
	conns   []*h2Conn
	dialing chan struct{} // closed when the dial in progress ends
	waiters waitQueue
	closed  bool
}

type h2Conn struct {
	p       *h2Pool
	cc      *http2.ClientConn
	active  uint32 // open streams; guarded by p.mu
	streams uint32 // streams ever started; guarded by p.mu
}

func (p *h2Pool) usableLocked(hc *h2Conn) bool {
	cfg := p.h.c.cfg
	return hc.active < cfg.maxStreams && (cfg.maxRqPerConn == 0 || hc.streams < cfg.maxRqPerConn) && hc.cc.CanTakeNewRequest()
}

func (p *h2Pool) roundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	for attempt := 0; ; attempt++ {
		hc, err := p.acquire(ctx)
		if err != nil {
			return nil, err
		}
		resp, err := hc.cc.RoundTrip(req)
		if err != nil {
			p.streamDone(hc)
			if attempt == 0 && replayable(req) && !hc.cc.CanTakeNewRequest() && ctx.Err() == nil {
				continue // the connection went away before the stream started
			}
			return nil, h2Error(ctx, err)
		}
		if resp.Body == nil || resp.Body == http.NoBody {
			p.streamDone(hc)
			return resp, nil
		}
		resp.Body = &h2Body{hc: hc, body: resp.Body}
		return resp, nil
	}
}

func h2Error(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctxError(ctx)
	}
	var se http2.StreamError
	if errors.As(err, &se) && se.Code == http2.ErrCodeRefusedStream {
		return &core.UpstreamError{Kind: core.RefusedStream, Err: err}
	}
	var ue *core.UpstreamError
	if errors.As(err, &ue) {
		return err
	}
	return &core.UpstreamError{Kind: core.Reset, Err: err}
}

// acquire opens a stream slot on a connection with room, dialing (one dial
// at a time per host) or waiting as the circuit breakers allow.
func (p *h2Pool) acquire(ctx context.Context) (*h2Conn, error) {
	c := p.h.c
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, &core.UpstreamError{Kind: core.Reset, Err: errPoolClosed}
		}
		if hc := p.takeLocked(); hc != nil {
			p.mu.Unlock()
			return hc, nil
		}
		if ch := p.dialing; ch != nil {
			p.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, ctxError(ctx)
			}
		}
		p.mu.Unlock()
		if c.tryReserveCx() {
			if err := p.dial(ctx); err != nil {
				return nil, err
			}
			continue
		}
		g, err := p.wait(ctx)
		if err != nil {
			return nil, err
		}
		if g.slot {
			if err := p.dial(ctx); err != nil {
				return nil, err
			}
		}
	}
}

// takeLocked reserves a stream on the first connection with room and drops
// connections that can take no more streams and have none open.
func (p *h2Pool) takeLocked() *h2Conn {
	keep := p.conns[:0]
	var got *h2Conn
	for _, hc := range p.conns {
		if got == nil && p.usableLocked(hc) {
			got = hc
		}
		if hc.active == 0 && !hc.cc.CanTakeNewRequest() {
			go hc.cc.Close()
			continue
		}
		keep = append(keep, hc)
	}
	clear(p.conns[len(keep):])
	p.conns = keep
	if got != nil {
		got.active++
		got.streams++
	}
	return got
}

// wait queues the request until a slot or stream capacity frees up, within
// max_pending_requests.
func (p *h2Pool) wait(ctx context.Context) (grant, error) {
	c := p.h.c
	c.waitMu.Lock()
	if c.tryReserveCx() {
		c.waitMu.Unlock()
		return grant{slot: true}, nil
	}
	c.stats.CxOverflow.Inc()
	if !c.tryReservePending() {
		c.waitMu.Unlock()
		c.stats.RqPendingOverflow.Inc()
		return grant{}, &core.UpstreamError{Kind: core.Overflow, Err: errors.New("max_pending_requests reached for cluster " + c.cfg.name)}
	}
	w := &waiter{ch: make(chan grant, 1)}
	p.mu.Lock()
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
		return g, nil
	case <-ctx.Done():
		p.mu.Lock()
		removed := p.waiters.remove(w)
		p.mu.Unlock()
		if !removed {
			if g := <-w.ch; g.slot {
				c.releaseCx()
			} else {
				p.wakeOne()
			}
		}
		c.stats.RqCancelled.Inc()
		return grant{}, ctxError(ctx)
	}
}

// dial opens a connection on a reserved slot, unless another request is
// already dialing for this host.
func (p *h2Pool) dial(ctx context.Context) error {
	h, c := p.h, p.h.c
	p.mu.Lock()
	if p.dialing != nil || p.closed {
		p.mu.Unlock()
		c.releaseCx()
		return nil // the caller looks again
	}
	ch := make(chan struct{})
	p.dialing = ch
	p.mu.Unlock()
	finish := func(hc *h2Conn) {
		p.mu.Lock()
		if hc != nil {
			p.conns = append(p.conns, hc)
		}
		p.dialing = nil
		p.mu.Unlock()
		close(ch)
	}
	nc, err := h.dial(ctx, h.tls.Load().h2)
	if err != nil {
		c.releaseCx()
		finish(nil)
		return err
	}
	hc := &h2Conn{p: p}
	cc, err := c.h2t.NewClientConn(&notifyConn{Conn: nc, onClose: func() { p.connGone(hc) }})
	if err != nil {
		nc.Close()
		finish(nil)
		return &core.UpstreamError{Kind: core.ConnectFailure, Err: err}
	}
	hc.cc = cc
	finish(hc)
	return nil
}

// connGone runs once when HTTP/2 closes a connection's socket.
func (p *h2Pool) connGone(hc *h2Conn) {
	p.mu.Lock()
	for i, x := range p.conns {
		if x == hc {
			p.conns = append(p.conns[:i], p.conns[i+1:]...)
			break
		}
	}
	p.mu.Unlock()
	p.h.connClosed()
}

func (p *h2Pool) streamDone(hc *h2Conn) {
	p.mu.Lock()
	hc.active--
	idleDead := hc.active == 0 && !hc.cc.CanTakeNewRequest()
	p.mu.Unlock()
	if idleDead {
		hc.cc.Close()
	}
	p.wakeOne()
}

// wakeOne tells one waiting request that stream capacity may be free.
func (p *h2Pool) wakeOne() {
	p.mu.Lock()
	w := p.waiters.pop()
	p.mu.Unlock()
	if w != nil {
		w.ch <- grant{}
	}
}

// grantSlot implements slotTaker.
func (p *h2Pool) grantSlot() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.waiters.pop()
	if w == nil {
		return false
	}
	w.ch <- grant{slot: true}
	return true
}

// close shuts connections down gracefully: idle ones close now, busy ones
// once their streams finish.
func (p *h2Pool) close() {
	p.mu.Lock()
	p.closed = true
	conns := append([]*h2Conn(nil), p.conns...)
	p.mu.Unlock()
	for _, hc := range conns {
		go hc.cc.Shutdown(context.Background())
	}
}

type h2Body struct {
	hc   *h2Conn
	body io.ReadCloser
	fin  atomic.Bool
}

func (b *h2Body) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if err != nil && b.fin.CompareAndSwap(false, true) {
		b.hc.p.streamDone(b.hc)
		if err != io.EOF {
			err = &core.UpstreamError{Kind: core.Reset, Err: err}
		}
	}
	return n, err
}

func (b *h2Body) Close() error {
	err := b.body.Close()
	if b.fin.CompareAndSwap(false, true) {
		b.hc.p.streamDone(b.hc)
	}
	return err
}

// notifyConn reports the first Close of a connection.
type notifyConn struct {
	net.Conn
	once    sync.Once
	onClose func()
}

func (n *notifyConn) Close() error {
	err := n.Conn.Close()
	n.once.Do(n.onClose)
	return err
}
