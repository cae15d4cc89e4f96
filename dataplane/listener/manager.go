// Package listener owns the proxy's listeners: binding their addresses,
// accepting connections, running the listener filters (original_dst,
// tls_inspector, http_inspector), handing redirected connections to the
// listener of their original destination (use_original_dst), selecting a
// filter chain with Envoy's filter_chain_match rules, terminating TLS, and
// draining connections when a listener is updated or removed.
//
// Each listener's config is compiled into an immutable generation; updates
// swap the generation atomically while the listening socket stays open, so
// accepting never pauses and connections in flight finish on the old one.
package listener

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// DefaultDrainTime is how long connections of a removed or replaced
// listener may finish before they are closed (Envoy's --drain-time-s,
// shortened for a sidecar).
const DefaultDrainTime = 10 * time.Second

// ChainFactory builds a filter chain's network filters (the integrator
// implements it with tcp_proxy and the HTTP connection manager). The
// returned handler may also implement core.Drainer and io.Closer. It is
// called on every build (Validate, each changed config) and must return a
// fresh handler each time: a replaced generation's handlers are drained and
// then closed while the new ones serve.
type ChainFactory interface {
	NetworkFilters(l *listenerv3.Listener, fc *listenerv3.FilterChain) (core.ConnHandler, error)
}

// Options configure a Manager.
type Options struct {
	Stats     *stats.Store
	Secrets   core.Secrets
	Logger    *slog.Logger
	Factory   ChainFactory
	DrainTime time.Duration // 0: DefaultDrainTime
	// OriginalDst reads a connection's pre-redirect destination; nil uses
	// getsockopt(SO_ORIGINAL_DST). Tests inject their own.
	OriginalDst func(net.Conn) (*net.TCPAddr, error)
}

// Manager runs the proxy's listeners. Its methods are safe for concurrent
// use; config changes are serialised, the connection path takes no config
// lock.
type Manager struct {
	o   Options
	log *slog.Logger

	mu        sync.Mutex // serialises config changes
	listeners map[string]*active
	drained   bool // DrainAll ran: no more binding
	// byAddr finds listeners by address for use_original_dst hand-off;
	// replaced whole on every change.
	byAddr atomic.Pointer[map[netip.AddrPort]*active]

	st managerStats
}

type managerStats struct {
	active, draining                *stats.Gauge
	added, modified, removed        *stats.Counter
	createSuccess, createFailure    *stats.Counter
	inPlaceUpdated, listenerStopped *stats.Counter
}

// active is one named listener: its sockets and current generation.
type active struct {
	m     *Manager
	name  string
	cur   atomic.Pointer[generation]
	lns   []net.Listener // nil for bind_to_port=false
	addrs []netip.AddrPort
	wg    sync.WaitGroup // accept loops
}

// generation is one compiled config of a listener with the connections it
// is serving.
type generation struct {
	c     *compiled
	st    *listenerStats
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	dead  bool // force-closed: new arrivals are closed at once
}

type listenerStats struct {
	cxTotal, cxDestroy, noChain, preTimeout *stats.Counter
	cxActive, preActive                     *stats.Gauge
	cxLength                                *stats.Histogram
	sslHandshake, sslError, tsTimeout       *stats.Counter
}

// NewManager returns a Manager with no listeners.
func NewManager(o Options) *Manager {
	if o.Stats == nil {
		o.Stats = stats.New()
	}
	if o.DrainTime <= 0 {
		o.DrainTime = DefaultDrainTime
	}
	if o.OriginalDst == nil {
		o.OriginalDst = socketOriginalDst
	}
	m := &Manager{o: o, log: o.Logger, listeners: map[string]*active{}}
	if m.log == nil {
		m.log = slog.Default()
	}
	sc := o.Stats.Scope("listener_manager", "listener_manager")
	m.st = managerStats{
		active: sc.Gauge("total_listeners_active"), draining: sc.Gauge("total_listeners_draining"),
		added: sc.Counter("listener_added"), modified: sc.Counter("listener_modified"),
		removed: sc.Counter("listener_removed"), createSuccess: sc.Counter("listener_create_success"),
		createFailure: sc.Counter("listener_create_failure"), inPlaceUpdated: sc.Counter("listener_in_place_updated"),
		listenerStopped: sc.Counter("listener_stopped"),
	}
	empty := map[netip.AddrPort]*active{}
	m.byAddr.Store(&empty)
	return m
}

// Validate compiles l without binding: errors name the listener and field.
func (m *Manager) Validate(l *listenerv3.Listener) error {
	c, err := m.compile(l)
	if err != nil {
		return err
	}
	closeHandlers(c)
	return nil
}

// AddOrUpdate applies l. Unchanged config does nothing; a new listener is
// bound (bind errors name the listener and address); a changed one gets a
// new generation on the same sockets when its addresses are unchanged (no
// gap in accepting) or new sockets otherwise, and the old generation's
// connections drain.
func (m *Manager) AddOrUpdate(l *listenerv3.Listener) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.listeners[l.GetName()]
	if old != nil && proto.Equal(old.cur.Load().c.cfg, l) {
		return nil
	}
	c, err := m.compile(l)
	if err != nil {
		m.st.createFailure.Inc()
		return err
	}
	if m.drained {
		closeHandlers(c)
		m.log.Info("listener update ignored: listeners were drained", "listener", l.GetName())
		return nil
	}
	gen := m.newGeneration(c)
	if old != nil && sameSockets(old, c) {
		prev := old.cur.Swap(gen)
		m.st.modified.Inc()
		m.st.inPlaceUpdated.Inc()
		m.st.createSuccess.Inc()
		m.drainGeneration(prev)
		m.reindex()
		return nil
	}
	a := &active{m: m, name: l.GetName(), addrs: c.addrs}
	a.cur.Store(gen)
	if c.bind {
		if err := a.bind(); err != nil {
			closeHandlers(c)
			m.st.createFailure.Inc()
			return err
		}
	}
	m.listeners[l.GetName()] = a
	m.st.createSuccess.Inc()
	if old != nil {
		m.st.modified.Inc()
		old.stop()
		m.drainGeneration(old.cur.Load())
	} else {
		m.st.added.Inc()
		m.st.active.Inc()
	}
	a.serve()
	m.reindex()
	return nil
}

func sameSockets(a *active, c *compiled) bool {
	if (a.lns != nil) != c.bind || len(a.addrs) != len(c.addrs) {
		return false
	}
	for i := range a.addrs {
		if a.addrs[i] != c.addrs[i] {
			return false
		}
	}
	return true
}

// Remove stops accepting on the named listener and drains its connections
// for the drain time, then closes them.
func (m *Manager) Remove(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.listeners[name]
	if a == nil {
		return
	}
	delete(m.listeners, name)
	a.stop()
	m.drainGeneration(a.cur.Load())
	m.st.removed.Inc()
	m.st.active.Dec()
	m.reindex()
}

// DrainAll stops accepting on every listener and drains their connections
// (graceful shutdown, admin /drain_listeners). Later updates are not bound.
func (m *Manager) DrainAll() { m.DrainListeners(false, false) }

// DrainListeners is admin /drain_listeners. With inboundOnly only listeners
// whose traffic_direction is INBOUND drain. Without graceful they stop
// accepting at once and their connections get the drain time; with
// graceful their handlers are told to drain now while the listeners keep
// accepting (new connections are served in drain mode, e.g. HTTP/1 with
// Connection: close) until the drain time ends, then everything closes.
func (m *Manager) DrainListeners(inboundOnly, graceful bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var sel []*active
	for _, a := range m.listeners {
		if inboundOnly && a.cur.Load().c.cfg.GetTrafficDirection() != corev3.TrafficDirection_INBOUND {
			continue
		}
		sel = append(sel, a)
	}
	if !inboundOnly {
		m.drained = true
	}
	if !graceful {
		for _, a := range sel {
			m.stopListener(a)
			m.drainGeneration(a.cur.Load())
		}
		m.reindex()
		return
	}
	for _, a := range sel {
		for _, h := range a.cur.Load().c.handlers {
			if d, ok := h.(core.Drainer); ok {
				d.Drain()
			}
		}
	}
	time.AfterFunc(m.o.DrainTime, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, a := range sel {
			if m.listeners[a.name] != a {
				continue // replaced or removed meanwhile; that path drains it
			}
			m.stopListener(a)
			g := a.cur.Load()
			g.closeAll()
			closeHandlers(g.c)
		}
		m.reindex()
	})
}

// stopListener takes a out of service; m.mu held.
func (m *Manager) stopListener(a *active) {
	delete(m.listeners, a.name)
	a.stop()
	m.st.listenerStopped.Inc()
	m.st.active.Dec()
}

// Close stops every listener and closes every connection now.
func (m *Manager) Close() {
	m.mu.Lock()
	ls := m.listeners
	m.listeners = map[string]*active{}
	m.drained = true
	m.reindex()
	m.mu.Unlock()
	for _, a := range ls {
		a.stop()
		g := a.cur.Load()
		g.closeAll()
		closeHandlers(g.c)
		m.st.active.Dec()
	}
}

// Names lists the listeners, sorted.
func (m *Manager) Names() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.listeners))
	for n := range m.listeners {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Addr is the listener's bound address (port 0 resolved); the configured
// address for bind_to_port=false; nil for an unknown listener.
func (m *Manager) Addr(name string) net.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.listeners[name]
	if a == nil {
		return nil
	}
	if a.lns != nil {
		return a.lns[0].Addr()
	}
	return tcpAddr(a.addrs[0])
}

// WriteListeners renders admin /listeners: "name::address" lines, or with
// jsonFormat Envoy's {"listener_statuses": [...]} with bound addresses.
func (m *Manager) WriteListeners(w io.Writer, jsonFormat bool) {
	type sockAddr struct {
		SocketAddress struct {
			Address   string `json:"address"`
			PortValue int    `json:"port_value"`
		} `json:"socket_address"`
	}
	type status struct {
		Name            string     `json:"name"`
		LocalAddress    sockAddr   `json:"local_address"`
		AdditionalAddrs []sockAddr `json:"additional_local_addresses,omitempty"`
	}
	var out struct {
		Statuses []status `json:"listener_statuses"`
	}
	m.mu.Lock()
	for _, name := range sortedKeys(m.listeners) {
		a := m.listeners[name]
		var addrs []*net.TCPAddr
		for i, ap := range a.addrs {
			if a.lns != nil {
				addrs = append(addrs, a.lns[i].Addr().(*net.TCPAddr))
			} else {
				addrs = append(addrs, tcpAddr(ap))
			}
		}
		st := status{Name: name}
		for i, ta := range addrs {
			var sa sockAddr
			sa.SocketAddress.Address, sa.SocketAddress.PortValue = ta.IP.String(), ta.Port
			if i == 0 {
				st.LocalAddress = sa
			} else {
				st.AdditionalAddrs = append(st.AdditionalAddrs, sa)
			}
		}
		out.Statuses = append(out.Statuses, st)
	}
	m.mu.Unlock()
	if jsonFormat {
		enc := json.NewEncoder(w)
		enc.SetIndent("", " ")
		enc.Encode(out)
		return
	}
	for _, s := range out.Statuses {
		fmt.Fprintf(w, "%s::%s\n", s.Name, net.JoinHostPort(s.LocalAddress.SocketAddress.Address, fmt.Sprint(s.LocalAddress.SocketAddress.PortValue)))
	}
}

func sortedKeys(m map[string]*active) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// reindex rebuilds the address index; called with m.mu held.
func (m *Manager) reindex() {
	idx := map[netip.AddrPort]*active{}
	for _, a := range m.listeners {
		for i, ap := range a.addrs {
			if a.lns != nil {
				// Port 0 resolved: index the port actually bound.
				ap = netip.AddrPortFrom(ap.Addr(), uint16(a.lns[i].Addr().(*net.TCPAddr).Port))
			}
			idx[ap] = a
		}
	}
	m.byAddr.Store(&idx)
}

// lookup finds the listener for a redirected connection's original
// destination: exact address, else the wildcard address of its family.
func (m *Manager) lookup(dst *net.TCPAddr) *active {
	ap := dst.AddrPort()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	idx := *m.byAddr.Load()
	if a := idx[ap]; a != nil {
		return a
	}
	wildcard := netip.IPv4Unspecified()
	if ap.Addr().Is6() {
		wildcard = netip.IPv6Unspecified()
	}
	return idx[netip.AddrPortFrom(wildcard, ap.Port())]
}

func (m *Manager) newGeneration(c *compiled) *generation {
	name := statName(c.cfg, c.addrs[0])
	sc := m.o.Stats.Scope("listener."+name, "listener", stats.Tag{Name: "listener_address", Value: name})
	return &generation{c: c, conns: map[net.Conn]struct{}{}, st: &listenerStats{
		cxTotal: sc.Counter("downstream_cx_total"), cxDestroy: sc.Counter("downstream_cx_destroy"),
		noChain: sc.Counter("no_filter_chain_match"), preTimeout: sc.Counter("downstream_pre_cx_timeout"),
		cxActive: sc.Gauge("downstream_cx_active"), preActive: sc.Gauge("downstream_pre_cx_active"),
		cxLength:     sc.Histogram("downstream_cx_length_ms"),
		sslHandshake: sc.Counter("ssl.handshake"), sslError: sc.Counter("ssl.connection_error"),
		tsTimeout: sc.Counter("downstream_cx_transport_socket_connect_timeout"),
	}}
}

// drainGeneration tells g's handlers to wind down and closes whatever is
// still open after the drain time.
func (m *Manager) drainGeneration(g *generation) {
	m.st.draining.Inc()
	for _, h := range g.c.handlers {
		if d, ok := h.(core.Drainer); ok {
			d.Drain()
		}
	}
	time.AfterFunc(m.o.DrainTime, func() {
		g.closeAll()
		closeHandlers(g.c)
		m.st.draining.Dec()
	})
}

func closeHandlers(c *compiled) {
	for _, h := range c.handlers {
		if cl, ok := h.(io.Closer); ok {
			cl.Close()
		}
	}
}

func (g *generation) track(c net.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.dead {
		return false
	}
	g.conns[c] = struct{}{}
	return true
}

func (g *generation) untrack(c net.Conn) {
	g.mu.Lock()
	delete(g.conns, c)
	g.mu.Unlock()
}

func (g *generation) closeAll() {
	g.mu.Lock()
	g.dead = true
	cs := make([]net.Conn, 0, len(g.conns))
	for c := range g.conns {
		cs = append(cs, c)
	}
	g.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

// bind opens the listener's sockets, all or none.
func (a *active) bind() error {
	var lc net.ListenConfig
	for _, ap := range a.addrs {
		network := "tcp4"
		if ap.Addr().Is6() {
			network = "tcp6"
		}
		ln, err := lc.Listen(context.Background(), network, ap.String())
		if err != nil {
			for _, l := range a.lns {
				l.Close()
			}
			a.lns = nil
			return fmt.Errorf("listener %q: address %s: cannot bind: %w", a.name, ap, err)
		}
		a.lns = append(a.lns, ln)
	}
	return nil
}

func (a *active) serve() {
	for _, ln := range a.lns {
		a.wg.Add(1)
		go a.acceptLoop(ln)
	}
}

// stop closes the listening sockets and waits for the accept loops.
func (a *active) stop() {
	for _, ln := range a.lns {
		ln.Close()
	}
	a.wg.Wait()
}

func (a *active) acceptLoop(ln net.Listener) {
	defer a.wg.Done()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, keep serving.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			a.m.log.Warn("accept failed", "listener", a.name, "error", err)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		go a.m.serveConn(a, c)
	}
}

// serveConn runs one connection through listener filters, hand-off, chain
// selection and TLS, then gives it to the chain's handler. As in Envoy, a
// connection counts in downstream_cx_* only once a filter chain takes it,
// and only on the listener that serves it.
func (m *Manager) serveConn(a *active, raw net.Conn) {
	info := &core.ConnInfo{ListenerName: a.name, LocalAddr: raw.LocalAddr(), RemoteAddr: raw.RemoteAddr()}
	g := a.cur.Load()
	conn, ok := m.preConn(g, raw, raw, info)
	if !ok {
		return
	}
	if g.c.useOriginalDst && info.OriginalDst != nil {
		if t := m.lookup(info.OriginalDst); t != nil && t != a {
			// The connection now belongs to the target listener, so an
			// update of this one (virtualOutbound) does not drain it.
			g.untrack(raw)
			g = t.cur.Load()
			info.ListenerName = t.name
			if conn, ok = m.preConn(g, raw, conn, info); !ok {
				return
			}
		}
	}
	m.serveChain(g, raw, conn, info)
	g.untrack(raw)
}

// preConn tracks raw on g (so a drain can close it) and runs g's listener
// filters; false when the connection was closed.
func (m *Manager) preConn(g *generation, raw, conn net.Conn, info *core.ConnInfo) (net.Conn, bool) {
	if !g.track(raw) {
		raw.Close()
		return nil, false
	}
	g.st.preActive.Inc()
	out, ok := m.runFilters(g, conn, info)
	g.st.preActive.Dec()
	if !ok {
		g.untrack(raw)
		raw.Close()
	}
	return out, ok
}

func (m *Manager) serveChain(g *generation, raw, conn net.Conn, info *core.ConnInfo) {
	ch := g.c.selector.selectChain(ptr(newMatchInput(info)))
	if ch == nil {
		g.st.noChain.Inc()
		m.log.Debug("no filter chain matched", "listener", info.ListenerName, "destination", info.DestinationAddr(), "sni", info.SNI)
		raw.Close()
		return
	}
	g.st.cxTotal.Inc()
	g.st.cxActive.Inc()
	start := time.Now()
	defer func() {
		g.st.cxActive.Dec()
		g.st.cxDestroy.Inc()
		g.st.cxLength.Record(float64(time.Since(start).Microseconds()) / 1000)
	}()
	info.FilterChainName = ch.name
	if ch.tls != nil {
		tc := tls.Server(conn, ch.tls)
		if ch.handshakeTimeout > 0 {
			conn.SetDeadline(time.Now().Add(ch.handshakeTimeout))
		}
		err := tc.Handshake()
		conn.SetDeadline(time.Time{})
		if err != nil {
			if isTimeout(err) {
				g.st.tsTimeout.Inc()
			} else {
				g.st.sslError.Inc()
			}
			m.log.Debug("TLS handshake failed", "listener", info.ListenerName, "chain", ch.name, "error", err)
			raw.Close()
			return
		}
		g.st.sslHandshake.Inc()
		st := tc.ConnectionState()
		info.TLS = &st
		conn = tc
	}
	ch.handler.ServeConn(conn, info)
}

func ptr[T any](v T) *T { return &v }

// runFilters applies the listener filters under listener_filters_timeout.
// It returns the connection to hand on (wrapped to replay peeked bytes)
// and false when the connection must be closed.
func (m *Manager) runFilters(g *generation, conn net.Conn, info *core.ConnInfo) (net.Conn, bool) {
	c := g.c
	if len(c.filters) == 0 {
		if info.TransportProtocol == "" {
			info.TransportProtocol = "raw_buffer" // Envoy's default when nothing detected
		}
		return conn, true
	}
	pc, wrapped := conn.(*peekConn)
	if !wrapped {
		pc = &peekConn{Conn: conn}
	}
	if c.filtersTimeout > 0 {
		conn.SetReadDeadline(time.Now().Add(c.filtersTimeout))
	}
	for _, f := range c.filters {
		if f.disabled != nil && f.disabled.matches(destPort(info)) {
			continue
		}
		var err error
		switch f.kind {
		case filterOriginalDst:
			if od, e := m.o.OriginalDst(rawConn(conn)); e == nil && od != nil {
				info.OriginalDst = od
			}
		case filterTLSInspector:
			var isTLS bool
			isTLS, info.SNI, info.ALPN, err = inspectTLS(pc)
			if err == nil {
				info.TransportProtocol = "raw_buffer"
				if isTLS {
					info.TransportProtocol = "tls"
				}
			}
		case filterHTTPInspector:
			if info.TransportProtocol == "tls" {
				continue
			}
			var proto string
			if proto, err = inspectHTTP(pc); err == nil && proto != "" {
				info.ALPN = []string{proto}
			}
		}
		if err != nil {
			if isTimeout(err) {
				g.st.preTimeout.Inc()
				if c.continueOnTO {
					break
				}
			}
			return nil, false
		}
	}
	conn.SetReadDeadline(time.Time{})
	if info.TransportProtocol == "" {
		info.TransportProtocol = "raw_buffer"
	}
	if len(pc.buf) == 0 && !wrapped {
		return conn, true
	}
	return pc, true
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func rawConn(c net.Conn) net.Conn {
	if p, ok := c.(*peekConn); ok {
		return p.Conn
	}
	return c
}

func destPort(info *core.ConnInfo) int {
	if t, ok := info.DestinationAddr().(*net.TCPAddr); ok {
		return t.Port
	}
	return 0
}
