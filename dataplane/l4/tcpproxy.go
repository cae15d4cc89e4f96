// Package l4 owns the data plane's layer-4 proxying: Envoy's tcp_proxy
// network filter, which joins a downstream connection to a connection to a
// host of an upstream cluster and copies bytes both ways with half-close.
package l4

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/dataplane/hcm/accesslog"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// DefaultIdleTimeout is Envoy's tcp_proxy idle_timeout when unset.
const DefaultIdleTimeout = time.Hour

// connectTimeout bounds one upstream connect attempt when the host's own
// dialer does not (the cluster's connect_timeout normally applies first).
const connectTimeout = 10 * time.Second

// TCPProxy is a compiled tcp_proxy filter. It is immutable after
// NewTCPProxy apart from the set of live sessions, so one instance serves
// every connection of a filter chain.
type TCPProxy struct {
	statPrefix      string
	clusters        core.ClusterSet
	weighted        []weightedCluster // nil when a single cluster is configured
	cluster         string
	totalWeight     uint64
	idleTimeout     time.Duration // 0: none
	maxAttempts     int
	maxDuration     time.Duration // 0: none
	checkDrainClose bool
	hashSourceIP    bool // hash_policy source_ip: consistent-hash clusters key on the client address
	stats           *Stats
	observer        Observer
	logs            []*accesslog.Logger

	draining atomic.Bool
	mu       sync.Mutex
	sessions map[*Session]struct{}
}

type weightedCluster struct {
	name   string
	cumul  uint64 // cumulative weight up to and including this cluster
	weight uint32
}

// Stats are tcp_proxy's Envoy-named statistics, tcp.<stat_prefix>.*.
type Stats struct {
	DownstreamCxTotal        *stats.Counter
	DownstreamCxNoRoute      *stats.Counter
	DownstreamCxRxBytesTotal *stats.Counter
	DownstreamCxTxBytesTotal *stats.Counter
	IdleTimeout              *stats.Counter
	MaxDownstreamCxDuration  *stats.Counter
	UpstreamFlushTotal       *stats.Counter
	UpstreamFlushActive      *stats.Gauge
}

func newStats(st *stats.Store, prefix string) *Stats {
	sc := st.Scope("tcp."+prefix, "tcp", stats.Tag{Name: "tcp_prefix", Value: prefix})
	return &Stats{
		DownstreamCxTotal:        sc.Counter("downstream_cx_total"),
		DownstreamCxNoRoute:      sc.Counter("downstream_cx_no_route"),
		DownstreamCxRxBytesTotal: sc.Counter("downstream_cx_rx_bytes_total"),
		DownstreamCxTxBytesTotal: sc.Counter("downstream_cx_tx_bytes_total"),
		IdleTimeout:              sc.Counter("idle_timeout"),
		MaxDownstreamCxDuration:  sc.Counter("max_downstream_connection_duration"),
		UpstreamFlushTotal:       sc.Counter("upstream_flush_total"),
		UpstreamFlushActive:      sc.Gauge("upstream_flush_active"),
	}
}

// Observer learns of every proxied session: Istio's TCP telemetry
// (istio_tcp_connections_opened_total, istio_tcp_sent_bytes_total, …) hangs
// off it. Calls must not block; byte counts may be read at any time while
// the session is open for periodic reporting.
type Observer interface {
	SessionOpened(s *Session)
	SessionClosed(s *Session)
}

// Session is one proxied connection. Cluster, Host and Flags are final when
// SessionClosed is called; while the session is open only the byte counts
// may be read from other goroutines.
type Session struct {
	Info    *core.ConnInfo
	Cluster string
	// Host is the upstream host's address; empty when none was reached.
	Host  string
	Start time.Time
	// Flags says why the session failed or ended early (UH, UF, NC, …).
	Flags core.ResponseFlags
	// received counts bytes read from downstream (sent upstream), sent
	// counts bytes written to downstream.
	received, sent atomic.Uint64
	lastActive     atomic.Int64 // unix nanos of the last byte either way
	idled          atomic.Bool  // both directions time out together; count once
	firstEOF       atomic.Int32 // which side ended its stream first: 1 downstream, 2 upstream
	down           net.Conn
	// For the access log: the upstream connection's local address and why
	// connecting failed.
	upstreamLocal, connectErr string

	mu     sync.Mutex // guards up and closed against Close from other goroutines
	up     net.Conn
	closed bool
}

// BytesReceived is how many bytes the downstream client sent so far.
func (s *Session) BytesReceived() uint64 { return s.received.Load() }

// BytesSent is how many bytes were sent to the downstream client so far.
func (s *Session) BytesSent() uint64 { return s.sent.Load() }

func (s *Session) closeBoth() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	s.down.Close()
	if s.up != nil {
		s.up.Close()
	}
}

// setUpstream records the upstream connection; false (and up closed) when
// the session was closed while connecting.
func (s *Session) setUpstream(up net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		up.Close()
		return false
	}
	s.up = up
	return true
}

// NewTCPProxy compiles a tcp_proxy config. Errors name the field.
func NewTCPProxy(cfg *tcpv3.TcpProxy, clusters core.ClusterSet, st *stats.Store) (*TCPProxy, error) {
	if cfg.GetStatPrefix() == "" {
		return nil, errors.New("tcp_proxy: stat_prefix: required")
	}
	p := &TCPProxy{
		statPrefix:      cfg.GetStatPrefix(),
		clusters:        clusters,
		idleTimeout:     DefaultIdleTimeout,
		maxAttempts:     1,
		checkDrainClose: cfg.GetCheckDrainClose().GetValue(),
		sessions:        map[*Session]struct{}{},
	}
	switch cs := cfg.GetClusterSpecifier().(type) {
	case *tcpv3.TcpProxy_Cluster:
		if cs.Cluster == "" {
			return nil, fmt.Errorf("tcp_proxy %q: cluster: empty", p.statPrefix)
		}
		p.cluster = cs.Cluster
	case *tcpv3.TcpProxy_WeightedClusters:
		for i, wc := range cs.WeightedClusters.GetClusters() {
			if wc.GetName() == "" {
				return nil, fmt.Errorf("tcp_proxy %q: weighted_clusters.clusters[%d].name: empty", p.statPrefix, i)
			}
			if wc.GetWeight() == 0 {
				continue
			}
			p.totalWeight += uint64(wc.GetWeight())
			p.weighted = append(p.weighted, weightedCluster{name: wc.GetName(), weight: wc.GetWeight(), cumul: p.totalWeight})
		}
		if p.totalWeight == 0 {
			return nil, fmt.Errorf("tcp_proxy %q: weighted_clusters.clusters: needs at least one cluster with a weight above 0", p.statPrefix)
		}
	default:
		return nil, fmt.Errorf("tcp_proxy %q: cluster or weighted_clusters: one is required", p.statPrefix)
	}
	if d := cfg.GetIdleTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return nil, fmt.Errorf("tcp_proxy %q: idle_timeout: invalid duration", p.statPrefix)
		}
		p.idleTimeout = d.AsDuration()
	}
	if a := cfg.GetMaxConnectAttempts(); a != nil {
		if a.GetValue() < 1 {
			return nil, fmt.Errorf("tcp_proxy %q: max_connect_attempts: must be at least 1", p.statPrefix)
		}
		p.maxAttempts = int(a.GetValue())
	}
	for i, hp := range cfg.GetHashPolicy() {
		if hp.GetSourceIp() == nil {
			return nil, fmt.Errorf("tcp_proxy %q: hash_policy[%d]: only source_ip is supported", p.statPrefix, i)
		}
		p.hashSourceIP = true
	}
	if d := cfg.GetMaxDownstreamConnectionDuration(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return nil, fmt.Errorf("tcp_proxy %q: max_downstream_connection_duration: invalid duration", p.statPrefix)
		}
		p.maxDuration = d.AsDuration()
	}
	for i, al := range cfg.GetAccessLog() {
		l, err := accesslog.New(al)
		if err != nil {
			return nil, fmt.Errorf("tcp_proxy %q: access_log[%d] %q: %w", p.statPrefix, i, al.GetName(), err)
		}
		p.logs = append(p.logs, l)
	}
	if st != nil {
		p.stats = newStats(st, p.statPrefix)
	} else {
		p.stats = newStats(stats.New(), p.statPrefix)
	}
	return p, nil
}

// SetObserver installs the session observer. Call it before the proxy
// serves connections.
func (p *TCPProxy) SetObserver(o Observer) { p.observer = o }

// Stats returns the proxy's statistics.
func (p *TCPProxy) Stats() *Stats { return p.stats }

func (p *TCPProxy) pickCluster() string {
	if p.weighted == nil {
		return p.cluster
	}
	r := rand.Uint64N(p.totalWeight)
	for _, wc := range p.weighted {
		if r < wc.cumul {
			return wc.name
		}
	}
	return p.weighted[len(p.weighted)-1].name
}

// ServeConn proxies c to a host of the configured cluster until either side
// closes both directions, an error, the idle timeout or the maximum
// connection duration. It closes c.
func (p *TCPProxy) ServeConn(c net.Conn, info *core.ConnInfo) {
	p.stats.DownstreamCxTotal.Inc()
	s := &Session{Info: info, Cluster: p.pickCluster(), Start: time.Now(), down: c}
	s.lastActive.Store(s.Start.UnixNano())
	p.track(s, true)
	defer p.track(s, false)
	if len(p.logs) > 0 {
		defer p.logSession(s)
	}
	if p.observer != nil {
		p.observer.SessionOpened(s)
		defer p.observer.SessionClosed(s)
	}
	defer s.closeBoth()

	up, err := p.connect(s)
	if err != nil {
		s.connectErr = strings.ReplaceAll(err.Error(), " ", "_")
		return
	}
	if !s.setUpstream(up) {
		return
	}
	s.upstreamLocal = up.LocalAddr().String()
	if p.maxDuration > 0 {
		t := time.AfterFunc(p.maxDuration, func() {
			p.stats.MaxDownstreamCxDuration.Inc()
			s.closeBoth()
		})
		defer t.Stop()
	}
	p.pipe(s, up)
}

// logSession writes the access log lines of a finished session, with the
// same formatter as HTTP: RESPONSE_CODE is 0 and request operators "-".
func (p *TCPProxy) logSession(s *Session) {
	e := accesslog.Entry{
		Start: s.Start, Duration: time.Since(s.Start), Flags: s.Flags, Conn: s.Info,
		BytesReceived: int64(s.BytesReceived()), BytesSent: int64(s.BytesSent()),
		UpstreamHost: s.Host, UpstreamCluster: s.Cluster, UpstreamLocalAddress: s.upstreamLocal,
		UpstreamTransportFailed: s.connectErr,
	}
	for _, l := range p.logs {
		l.Log(&e)
	}
}

// connect chooses a host and dials it, up to max_connect_attempts times.
func (p *TCPProxy) connect(s *Session) (net.Conn, error) {
	cl := p.clusters.Cluster(s.Cluster)
	if cl == nil {
		p.stats.DownstreamCxNoRoute.Inc()
		s.Flags |= core.NoClusterFound
		return nil, fmt.Errorf("cluster %q not found", s.Cluster)
	}
	lb := &core.LBContext{Downstream: s.Info}
	if p.hashSourceIP {
		if ta, ok := s.Info.RemoteAddr.(*net.TCPAddr); ok {
			h := fnv.New64a()
			h.Write(ta.AddrPort().Addr().Unmap().AsSlice())
			lb.Hash, lb.HasHash = h.Sum64(), true
		}
	}
	var lastErr error
	for attempt := 0; attempt < p.maxAttempts; attempt++ {
		h := cl.ChooseHost(lb)
		if h == nil {
			cl.Stats().CxNoneHealthy.Inc()
			s.Flags |= core.NoHealthyUpstream
			return nil, fmt.Errorf("cluster %q: no healthy upstream", s.Cluster)
		}
		s.Host = h.Address()
		ctx, cancel := context.WithTimeout(core.WithConnInfo(context.Background(), s.Info), connectTimeout)
		up, err := h.Dial(ctx)
		cancel()
		if err == nil {
			h.Observe(0, nil)
			return up, nil
		}
		h.Observe(0, err)
		lastErr = err
		var ue *core.UpstreamError
		if errors.As(err, &ue) && ue.Kind == core.Overflow {
			s.Flags |= core.UpstreamOverflow
			return nil, err
		}
	}
	s.Flags |= core.UpstreamConnectionFailure
	return nil, lastErr
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32*1024); return &b }}

// pipe copies both ways. A clean EOF on one side is passed on as a
// half-close; the session ends when both directions are done or either
// fails. Copying is a plain read/write loop rather than splice because the
// idle timeout and live byte counts need to see every chunk.
func (p *TCPProxy) pipe(s *Session, up net.Conn) {
	done := make(chan error, 2)
	go func() { done <- p.copyDir(s, up, s.down, &s.received, p.stats.DownstreamCxRxBytesTotal) }()
	go func() { done <- p.copyDir(s, s.down, up, &s.sent, p.stats.DownstreamCxTxBytesTotal) }()
	err := <-done
	if err != nil {
		// A reset or timeout on one side ends both.
		s.closeBoth()
		<-done
		return
	}
	if s.firstEOF.Load() != 1 {
		<-done
		return
	}
	// The client closed its side; the upstream's reply still flows back.
	p.stats.UpstreamFlushTotal.Inc()
	p.stats.UpstreamFlushActive.Inc()
	<-done
	p.stats.UpstreamFlushActive.Dec()
}

type closeWriter interface{ CloseWrite() error }

// copyDir copies src to dst until EOF (nil) or an error. With an idle
// timeout, reads carry a deadline that is pushed out while either direction
// is active.
func (p *TCPProxy) copyDir(s *Session, dst, src net.Conn, n *atomic.Uint64, total *stats.Counter) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		if p.idleTimeout > 0 {
			src.SetReadDeadline(time.Unix(0, s.lastActive.Load()).Add(p.idleTimeout))
		}
		nr, rerr := src.Read(buf)
		if nr > 0 {
			s.lastActive.Store(time.Now().UnixNano())
			nw, werr := dst.Write(buf[:nr])
			n.Add(uint64(nw))
			total.Add(uint64(nw))
			if werr != nil {
				return werr
			}
			if p.checkDrainClose && p.draining.Load() {
				return errDrained
			}
		}
		if rerr == nil {
			continue
		}
		if rerr == io.EOF {
			side := int32(2)
			if src == s.down {
				side = 1
			}
			s.firstEOF.CompareAndSwap(0, side)
			if cw, ok := dst.(closeWriter); ok {
				cw.CloseWrite()
			} else {
				return rerr
			}
			return nil
		}
		if errors.Is(rerr, os.ErrDeadlineExceeded) && p.idleTimeout > 0 {
			if time.Since(time.Unix(0, s.lastActive.Load())) < p.idleTimeout {
				continue // the other direction was active
			}
			if s.idled.CompareAndSwap(false, true) {
				p.stats.IdleTimeout.Inc()
			}
		}
		return rerr
	}
}

var errDrained = errors.New("tcp_proxy: listener draining")

func (p *TCPProxy) track(s *Session, add bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		p.sessions[s] = struct{}{}
	} else {
		delete(p.sessions, s)
	}
}

// Active is the number of sessions being served.
func (p *TCPProxy) Active() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.sessions)
}

// Drain marks the proxy's listener as draining. As in Envoy, sessions are
// left to finish (the listener closes them when the drain time ends) unless
// check_drain_close is set, in which case each session closes after its
// next read or write.
func (p *TCPProxy) Drain() { p.draining.Store(true) }

// Close ends every session now.
func (p *TCPProxy) Close() error {
	p.mu.Lock()
	ss := make([]*Session, 0, len(p.sessions))
	for s := range p.sessions {
		ss = append(ss, s)
	}
	p.mu.Unlock()
	for _, s := range ss {
		s.closeBoth()
	}
	return nil
}

var (
	_ core.ConnHandler = (*TCPProxy)(nil)
	_ core.Drainer     = (*TCPProxy)(nil)
	_ io.Closer        = (*TCPProxy)(nil)
)
