package upstream

import (
	"crypto/tls"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/proto"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/dataplane/tlsctx"
)

// cluster is one compiled cluster. A config change builds a new cluster;
// EDS and DNS updates change its membership in place.
type cluster struct {
	m     *Manager
	src   *clusterv3.Cluster
	cfg   *config
	stats *core.ClusterStats
	// Transport sockets: the cluster's, and one per transport_socket_matches
	// entry (same order as cfg.socketMatches).
	defTLS   *tlsSet
	matchTLS []*tlsSet
	h2t      *http2.Transport
	// connFilters are Cluster.filters, run on each new connection.
	connFilters []ConnFilter

	// Circuit breaker occupancy, cluster-wide as in Envoy.
	cx, pending, rq, retries atomic.Int64

	lbs        atomic.Pointer[lbSnapshot]
	warm       atomic.Bool
	hadTraffic atomic.Bool

	mu       sync.Mutex // guards membership, ejection state and rebuilds
	hosts    []*host
	overprov float64
	closed   bool

	// waitMu orders "no slot free" against "a slot was freed" so that a
	// request never waits for a slot that was released meanwhile.
	waitMu sync.Mutex
	waitQ  []slotTaker

	od   *origDst
	stop chan struct{}
	wg   sync.WaitGroup
}

// slotTaker is a pool with requests waiting for a connection slot.
type slotTaker interface {
	// grantSlot hands a reserved slot to one waiter; false if none waits.
	grantSlot() bool
}

func newCluster(m *Manager, src *clusterv3.Cluster, cfg *config) (*cluster, error) {
	c := &cluster{m: m, src: src, cfg: cfg, overprov: 140, stop: make(chan struct{})}
	def, err := newTLSSet(cfg.upstreamTLS, m.o.Secrets)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: transport_socket: %w", cfg.name, err)
	}
	c.defTLS = def
	if c.connFilters, err = buildConnFilters(src, m.o); err != nil {
		return nil, fmt.Errorf("cluster %q: %w", cfg.name, err)
	}
	for i, sm := range cfg.socketMatches {
		set, err := newTLSSet(sm.tls, m.o.Secrets)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: transport_socket_matches[%d] (%s): %w", cfg.name, i, sm.name, err)
		}
		c.matchTLS = append(c.matchTLS, set)
	}
	if cfg.proto != protoHTTP1 {
		c.h2t = &http2.Transport{
			AllowHTTP:          true,
			DisableCompression: true, // a proxy passes encodings through
			IdleConnTimeout:    cfg.idleTimeout,
			MaxHeaderListSize:  1 << 20,
		}
	}
	return c, nil
}

// start attaches statistics and begins discovery and background checks.
func (c *cluster) start(initial *endpointSet) {
	c.stats = core.NewClusterStats(c.m.o.Stats, c.cfg.name)
	c.lbs.Store(&lbSnapshot{})
	// Gauges outlive a replaced cluster object; this one starts clean.
	c.stats.OutlierEjectionsActive.Set(0)
	switch c.cfg.discovery {
	case clusterv3.Cluster_STATIC:
		c.setHosts(initial)
		c.warm.Store(true)
	case clusterv3.Cluster_EDS:
		if initial != nil {
			c.setHosts(initial)
			c.warm.Store(true)
		}
	case clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
		c.wg.Add(1)
		go c.runDNS(initial)
	case clusterv3.Cluster_ORIGINAL_DST:
		c.od = newOrigDst(c)
		c.warm.Store(true)
		c.wg.Add(1)
		go c.od.runCleanup()
	}
	if c.cfg.outlier != nil {
		c.wg.Add(1)
		go c.runOutlier()
	}
	if c.cfg.idleTimeout > 0 {
		c.wg.Add(1)
		go c.runIdleSweep()
	}
}

func (c *cluster) Name() string              { return c.cfg.name }
func (c *cluster) Stats() *core.ClusterStats { return c.stats }
func (c *cluster) ChooseHost(lb *core.LBContext) core.Host {
	var h *host
	if c.od != nil {
		h = c.od.choose(lb)
	} else {
		h = c.choose(lb)
	}
	if h == nil {
		c.stats.CxNoneHealthy.Inc()
		return nil // a typed nil would not compare equal to nil
	}
	return h
}

// Reject is consulted a few times, as Envoy's host_selection_retry_max_attempts.
const hostSelectionAttempts = 3

func (c *cluster) choose(lb *core.LBContext) *host {
	s := c.lbs.Load()
	h := s.choose(lb, 0)
	if h == nil || lb == nil || lb.Reject == nil {
		return h
	}
	for i := uint64(1); i < hostSelectionAttempts && lb.Reject(h); i++ {
		if n := s.choose(lb, i); n != nil {
			h = n
		}
	}
	return h
}

func (c *cluster) AcquireRequest() bool {
	if c.rq.Add(1) > c.cfg.maxRequests {
		c.rq.Add(-1)
		c.stats.RqPendingOverflow.Inc()
		return false
	}
	return true
}

func (c *cluster) ReleaseRequest() { c.rq.Add(-1) }

func (c *cluster) AcquireRetry() bool {
	if c.retries.Add(1) > c.cfg.maxRetries {
		c.retries.Add(-1)
		c.stats.RqRetryOverflow.Inc()
		return false
	}
	return true
}

func (c *cluster) ReleaseRetry() { c.retries.Add(-1) }

func (c *cluster) tryReserveCx() bool {
	if c.cx.Add(1) > c.cfg.maxConnections {
		c.cx.Add(-1)
		return false
	}
	return true
}

func (c *cluster) tryReservePending() bool {
	if c.pending.Add(1) > c.cfg.maxPending {
		c.pending.Add(-1)
		return false
	}
	return true
}

// releaseCx frees a connection slot, or passes it straight to a waiting
// request so a queued request is not starved by new arrivals.
func (c *cluster) releaseCx() {
	c.waitMu.Lock()
	defer c.waitMu.Unlock()
	for len(c.waitQ) > 0 {
		p := c.waitQ[0]
		c.waitQ[0] = nil
		c.waitQ = c.waitQ[1:]
		if p.grantSlot() {
			return
		}
	}
	c.cx.Add(-1)
}

// setHosts replaces membership; hosts whose address stays keep their
// state and pools.
func (c *cluster) setHosts(es *endpointSet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	old := make(map[string]*host, len(c.hosts))
	for _, h := range c.hosts {
		old[h.addr] = h
	}
	next := make([]*host, 0, len(es.hosts))
	seen := make(map[string]bool, len(es.hosts))
	for _, s := range es.hosts {
		if seen[s.addr] {
			continue // duplicate address: the first wins, as one host
		}
		seen[s.addr] = true
		if h, ok := old[s.addr]; ok {
			h.spec = s
			h.tls.Store(c.tlsFor(s.metadata))
			next = append(next, h)
			delete(old, s.addr)
			continue
		}
		h := newHost(c, s)
		next = append(next, h)
		c.startHealthCheck(h)
	}
	for _, h := range old {
		if h.ejected {
			c.stats.OutlierEjectionsActive.Dec()
		}
		h.close()
	}
	c.hosts = next
	c.overprov = es.overprovisioning
	c.rebuildLocked()
}

// rebuildLocked publishes a new LB snapshot; c.mu is held.
func (c *cluster) rebuildLocked() {
	healthy := 0
	for _, h := range c.hosts {
		if h.usable() {
			healthy++
		}
	}
	c.stats.MembershipTotal.Set(int64(len(c.hosts)))
	c.stats.MembershipHealthy.Set(int64(healthy))
	c.lbs.Store(buildSnapshot(c.cfg, c.hosts, c.overprov))
}

// setFlag changes a health flag and rebuilds when usability changed.
func (c *cluster) setFlag(h *host, flag uint32, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	before := h.usable()
	for {
		f := h.flags.Load()
		nf := f &^ flag
		if on {
			nf = f | flag
		}
		if h.flags.CompareAndSwap(f, nf) {
			break
		}
	}
	if before != h.usable() && !h.removed.Load() && !c.closed {
		c.rebuildLocked()
	}
}

// close stops background work and closes idle connections; requests in
// flight finish on their connections, which close afterwards.
func (c *cluster) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	hosts := c.hosts
	c.mu.Unlock()
	close(c.stop)
	for _, h := range hosts {
		h.close()
	}
	if c.od != nil {
		c.od.closeAll()
	}
	c.wg.Wait()
}

func (c *cluster) runIdleSweep() {
	defer c.wg.Done()
	every := min(max(c.cfg.idleTimeout/4, 100*time.Millisecond), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.mu.Lock()
			hosts := c.hosts
			c.mu.Unlock()
			for _, h := range hosts {
				if h.h1 != nil {
					h.h1.sweepIdle(c.cfg.idleTimeout)
				}
			}
			if c.od != nil {
				c.od.sweepIdle(c.cfg.idleTimeout)
			}
		}
	}
}

// roll says whether an enforcing percentage fires.
func roll(pct uint32) bool { return pct >= 100 || (pct > 0 && rand.Uint32N(100) < pct) }

// clampDuration multiplies without overflowing.
func clampDuration(d time.Duration, n uint32, max time.Duration) time.Duration {
	if n > 0 && d > time.Duration(math.MaxInt64)/time.Duration(n) {
		return max
	}
	return min(d*time.Duration(n), max)
}

// tlsSet is one transport socket's client TLS, per protocol since ALPN
// differs; all nil for plaintext.
type tlsSet struct{ h1, h2, raw *tls.Config }

func newTLSSet(tc *tlsv3.UpstreamTlsContext, secrets core.Secrets) (*tlsSet, error) {
	if tc == nil {
		return &tlsSet{}, nil
	}
	base, err := tlsctx.ClientConfig(tc, secrets)
	if err != nil {
		return nil, err
	}
	s := &tlsSet{raw: base, h1: base.Clone(), h2: base.Clone()}
	if len(base.NextProtos) == 0 {
		s.h1.NextProtos = []string{"http/1.1"}
		s.h2.NextProtos = []string{"h2"}
	}
	return s, nil
}

// tlsFor picks an endpoint's transport socket: the first
// transport_socket_matches entry whose fields all equal the endpoint's
// "envoy.transport_socket_match" metadata, else the cluster's.
func (c *cluster) tlsFor(md *corev3.Metadata) *tlsSet {
	fields := md.GetFilterMetadata()["envoy.transport_socket_match"].GetFields()
next:
	for i, sm := range c.cfg.socketMatches {
		for k, v := range sm.match {
			if !proto.Equal(fields[k], v) {
				continue next
			}
		}
		return c.matchTLS[i]
	}
	return c.defTLS
}

var _ core.Cluster = (*cluster)(nil)
