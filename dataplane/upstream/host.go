package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// Health flags, as Envoy's /clusters names them.
const (
	flagFailedActiveHC uint32 = 1 << iota
	flagPendingActiveHC
	flagFailedOutlier
)

// host is one upstream endpoint: its health, outlier state, statistics and
// connection pools. It lives as long as its address stays in the cluster.
type host struct {
	c    *cluster
	addr string
	// spec is guarded by c.mu: EDS updates change weight, priority and
	// locality of a host that keeps its state.
	spec hostSpec

	flags atomic.Uint32
	// tls is the transport socket chosen by endpoint metadata; EDS may
	// change it for new connections.
	tls atomic.Pointer[tlsSet]

	// Outlier detection, lock-free counters fed by Observe.
	cons5xx, consGw atomic.Uint32
	odSuccess       atomic.Uint64
	odTotal         atomic.Uint64
	// Guarded by c.mu.
	ejected      bool
	ejectedAt    time.Time
	unejectedAt  time.Time
	numEjections uint32

	// Per-host statistics for /clusters.
	rqActive, cxActive                     atomic.Int64
	rqTotal, rqError, rqSuccess, rqTimeout atomic.Uint64
	cxTotal, cxConnectFail                 atomic.Uint64
	used                                   atomic.Bool // ORIGINAL_DST cleanup
	removed                                atomic.Bool
	hcStop                                 chan struct{}
	h1                                     *h1Pool
	h2                                     *h2Pool
	closeOnce                              sync.Once
}

func newHost(c *cluster, spec hostSpec) *host {
	h := &host{c: c, addr: spec.addr, spec: spec}
	h.tls.Store(c.tlsFor(spec.metadata))
	proto := c.cfg.proto
	if proto == protoHTTP1 || proto == protoDownstream {
		h.h1 = &h1Pool{h: h}
	}
	if proto == protoHTTP2 || proto == protoDownstream {
		h.h2 = &h2Pool{h: h}
	}
	if len(c.cfg.healthChecks) > 0 {
		// As Envoy: a new host waits for its first health check.
		h.flags.Store(flagFailedActiveHC | flagPendingActiveHC)
	}
	return h
}

// usable says whether the host is in the healthy set.
func (h *host) usable() bool {
	return h.flags.Load()&(flagFailedActiveHC|flagFailedOutlier) == 0 && edsUsable(h.spec.edsHealth)
}

func (h *host) Address() string { return h.addr }

// Metadata is the endpoint's metadata from its load assignment.
func (h *host) Metadata() *corev3.Metadata {
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	return h.spec.metadata
}

func (h *host) RoundTrip(req *http.Request) (*http.Response, error) {
	c := h.c
	if !c.hadTraffic.Load() {
		c.hadTraffic.Store(true)
	}
	h.rqTotal.Add(1)
	h.rqActive.Add(1)
	var resp *http.Response
	var err error
	if h.h2 != nil && (h.h1 == nil || req.ProtoMajor == 2) {
		resp, err = h.h2.roundTrip(req)
	} else {
		resp, err = h.h1.roundTrip(req)
	}
	if err != nil {
		h.rqActive.Add(-1)
		return nil, err
	}
	if resp.Body == nil || resp.Body == http.NoBody || resp.StatusCode == http.StatusSwitchingProtocols {
		// An upgraded connection's body is a ReadWriteCloser: keep it bare.
		h.rqActive.Add(-1)
		return resp, nil
	}
	resp.Body = &activeBody{ReadCloser: resp.Body, h: h}
	return resp, nil
}

// activeBody keeps the request counted as active until its body is done,
// which least-request balancing relies on.
type activeBody struct {
	io.ReadCloser
	h    *host
	done atomic.Bool
}

func (b *activeBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && b.done.CompareAndSwap(false, true) {
		b.h.rqActive.Add(-1)
	}
	return n, err
}

func (b *activeBody) Close() error {
	if b.done.CompareAndSwap(false, true) {
		b.h.rqActive.Add(-1)
	}
	return b.ReadCloser.Close()
}

// Dial opens a raw connection for tcp_proxy. It takes a max_connections
// slot, released when the connection is closed.
func (h *host) Dial(ctx context.Context) (net.Conn, error) {
	c := h.c
	if !c.hadTraffic.Load() {
		c.hadTraffic.Store(true)
	}
	if !c.tryReserveCx() {
		c.stats.CxOverflow.Inc()
		return nil, &core.UpstreamError{Kind: core.Overflow, Err: errors.New("max_connections reached for cluster " + c.cfg.name)}
	}
	nc, err := h.dial(ctx, h.tls.Load().raw)
	if err != nil {
		c.releaseCx()
		return nil, err
	}
	return &slotConn{Conn: nc, h: h}, nil
}

// slotConn gives back its connection slot once, on the first Close.
type slotConn struct {
	net.Conn
	h    *host
	once sync.Once
}

func (s *slotConn) Close() error {
	err := s.Conn.Close()
	s.once.Do(func() { s.h.connClosed() })
	return err
}

// CloseWrite half-closes TCP (or TLS) so tcp_proxy can forward a FIN.
func (s *slotConn) CloseWrite() error {
	if cw, ok := s.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// dial connects within connect_timeout, including the TLS handshake when
// the cluster has a TLS transport socket.
func (h *host) dial(ctx context.Context, tc *tls.Config) (net.Conn, error) {
	c := h.c
	ctx, cancel := context.WithTimeout(ctx, c.cfg.connectTimeout)
	defer cancel()
	d := net.Dialer{}
	if c.cfg.sourceAddr != nil {
		d.LocalAddr = c.cfg.sourceAddr
	}
	nc, err := d.DialContext(ctx, "tcp", h.addr)
	if err == nil && tc != nil {
		tlsConn := tls.Client(nc, tc)
		if err = tlsConn.HandshakeContext(ctx); err != nil {
			nc.Close()
		} else {
			nc = tlsConn
		}
	}
	if err == nil && len(c.connFilters) > 0 {
		raw := nc
		if nc, err = c.applyConnFilters(ctx, nc); err != nil {
			raw.Close()
		}
	}
	if err != nil {
		h.cxConnectFail.Add(1)
		c.stats.CxConnectFail.Inc()
		if ctx.Err() == context.DeadlineExceeded {
			err = errors.New("connect to " + h.addr + " timed out after " + c.cfg.connectTimeout.String())
		}
		return nil, &core.UpstreamError{Kind: core.ConnectFailure, Err: err}
	}
	h.cxTotal.Add(1)
	h.cxActive.Add(1)
	c.stats.CxTotal.Inc()
	c.stats.CxActive.Inc()
	return nc, nil
}

// connClosed accounts for a closed upstream connection and hands its slot
// to a request waiting for one.
func (h *host) connClosed() {
	h.cxActive.Add(-1)
	h.c.stats.CxActive.Dec()
	h.c.stats.CxDestroy.Inc()
	h.c.releaseCx()
}

// Observe feeds outlier detection and the per-host counters.
func (h *host) Observe(status int, err error) {
	var ue *core.UpstreamError
	if err != nil && errors.As(err, &ue) && ue.Kind == core.Overflow {
		return // the breaker, not the host, failed the request
	}
	failed := err != nil || status >= 500
	if failed {
		h.rqError.Add(1)
		if ue != nil && ue.Kind == core.Timeout {
			h.rqTimeout.Add(1)
		}
	} else {
		h.rqSuccess.Add(1)
	}
	od := h.c.cfg.outlier
	if od == nil {
		return
	}
	h.odTotal.Add(1)
	if !failed {
		h.odSuccess.Add(1)
		if h.cons5xx.Load() != 0 {
			h.cons5xx.Store(0)
		}
		if h.consGw.Load() != 0 {
			h.consGw.Store(0)
		}
		return
	}
	// Local-origin failures count as 503s, as in Envoy without
	// split_external_local_origin_errors.
	gw := err != nil || status == 502 || status == 503 || status == 504
	if n := h.cons5xx.Add(1); n == od.consecutive5xx {
		h.c.outlierEvent(h, ejectConsecutive5xx)
	}
	if gw {
		if n := h.consGw.Add(1); n == od.consecutiveGw {
			h.c.outlierEvent(h, ejectGatewayFailure)
		}
	} else if h.consGw.Load() != 0 {
		h.consGw.Store(0)
	}
}

// close shuts the host's pools: idle connections now, busy ones when their
// request finishes.
func (h *host) close() {
	h.closeOnce.Do(func() {
		h.removed.Store(true)
		if h.hcStop != nil {
			close(h.hcStop)
		}
		if h.h1 != nil {
			h.h1.close()
		}
		if h.h2 != nil {
			h.h2.close()
		}
	})
}

var _ core.Host = (*host)(nil)
