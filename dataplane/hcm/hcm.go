// Package hcm owns the HTTP connection manager (Envoy's
// envoy.filters.network.http_connection_manager): it serves downstream
// HTTP/1.x with its own codec (h1server.go) and HTTP/2 over TLS and h2c
// with golang.org/x/net/http2, applies Envoy's request and
// response header handling, runs the HTTP filter chain (fault, cors and
// filters registered by other packages) and ends it with the router, which
// forwards to upstream clusters with timeouts, retries, mirroring and
// WebSocket upgrades. It also owns HCM access logging and the http.<prefix>
// statistics. Config is compiled once in New; the request path only reads.
package hcm

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"golang.org/x/net/http2"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/dataplane/hcm/accesslog"
	"github.com/skiff-mesh/skiff/dataplane/route"
	"github.com/skiff-mesh/skiff/dataplane/tracing"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// Deps are the process-wide things a connection manager uses.
type Deps struct {
	Clusters core.ClusterSet
	Routes   *RouteRegistry // RDS tables by name
	Stats    *stats.Store
	Logger   *slog.Logger
	// Direction is the listener's traffic_direction and Node this proxy's
	// node, both handed to HTTP filters.
	Direction corev3.TrafficDirection
	Node      *corev3.Node
}

// ConnectionManager serves the connections of one filter chain.
type ConnectionManager struct {
	cfg *config

	// HTTP/1 codec settings (h1server.go).
	h1idle       time.Duration
	h1hdrTimeout time.Duration
	h1maxHdr     int

	h2 *http2.Server
	// h2base exists so Drain can reach every HTTP/2 connection: its
	// shutdown hook (installed by http2.ConfigureServer) sends GOAWAY.
	h2base *http.Server

	draining atomic.Bool
	closed   atomic.Bool
	mu       sync.Mutex // guards conns and h1conns; taken per connection, never per request
	conns    map[net.Conn]struct{}
	h1conns  map[*h1conn]struct{} // guarded by mu; Drain closes the idle ones
}

// config is the compiled, immutable HttpConnectionManager.
type config struct {
	statPrefix string
	codec      hcmv3.HttpConnectionManager_CodecType
	inline     *route.Table
	rds        *atomic.Pointer[route.Table]
	chain      Handler
	// streamHooks run at the end of every stream, whether or not it
	// reached their filter (FilterConfig.AddStreamHook).
	streamHooks []DoneHook

	useRemote         bool
	xffHops           int
	skipXFF           bool
	internal          []netip.Prefix
	genRequestID      bool
	preserveRequestID bool
	alwaysRequestID   bool
	serverName        string
	serverMode        hcmv3.HttpConnectionManager_ServerHeaderTransformation
	via               string
	upgrades          map[string]bool
	xfcc              xfccConfig
	normalizePath     bool
	mergeSlashes      bool

	stats  *hcmStats
	logs   []*accesslog.Logger
	tracer *tracing.Tracer // nil: tracing off
}

// RDSName returns the RDS route configuration name cfg uses, "" when the
// route config is inline.
func RDSName(cfg *hcmv3.HttpConnectionManager) string {
	return cfg.GetRds().GetRouteConfigName()
}

// New builds the connection manager of one filter chain from its
// HttpConnectionManager config. Errors name the field.
func New(cfg *hcmv3.HttpConnectionManager, d Deps) (*ConnectionManager, error) {
	c, err := compile(cfg, d)
	if err != nil {
		return nil, fmt.Errorf("http_connection_manager %q: %w", cfg.GetStatPrefix(), err)
	}
	cm := &ConnectionManager{cfg: c, conns: map[net.Conn]struct{}{}, h1conns: map[*h1conn]struct{}{}}
	idle := time.Hour
	if t := cfg.GetCommonHttpProtocolOptions().GetIdleTimeout(); t != nil {
		idle = t.AsDuration()
	}
	maxHdr := 60 << 10
	if kb := cfg.GetMaxRequestHeadersKb(); kb != nil {
		maxHdr = int(kb.GetValue()) << 10
	}
	errLog := log.New(io.Discard, "", 0)
	cm.h1idle, cm.h1maxHdr, cm.h1hdrTimeout = idle, maxHdr, h1DefaultHeaderTimeout
	if t := cfg.GetRequestHeadersTimeout(); t != nil && t.AsDuration() > 0 {
		cm.h1hdrTimeout = t.AsDuration()
	}
	maxStreams := uint32(1024)
	if v := cfg.GetHttp2ProtocolOptions().GetMaxConcurrentStreams(); v != nil && v.GetValue() > 0 {
		maxStreams = v.GetValue()
	}
	cm.h2 = &http2.Server{MaxConcurrentStreams: maxStreams, IdleTimeout: idle}
	h2o := cfg.GetHttp2ProtocolOptions()
	if v := h2o.GetInitialStreamWindowSize(); v != nil {
		cm.h2.MaxUploadBufferPerStream = int32(min(v.GetValue(), 1<<31-1))
	}
	if v := h2o.GetInitialConnectionWindowSize(); v != nil {
		cm.h2.MaxUploadBufferPerConnection = int32(min(v.GetValue(), 1<<31-1))
	}
	cm.h2base = &http.Server{Handler: cm, ErrorLog: errLog, MaxHeaderBytes: maxHdr}
	if err := http2.ConfigureServer(cm.h2base, cm.h2); err != nil {
		return nil, fmt.Errorf("http_connection_manager %q: http2_protocol_options: %w", cfg.GetStatPrefix(), err)
	}
	return cm, nil
}

func compile(cfg *hcmv3.HttpConnectionManager, d Deps) (*config, error) {
	st := d.Stats
	if st == nil {
		st = stats.New()
	}
	logger := d.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c := &config{
		statPrefix:        cfg.GetStatPrefix(),
		codec:             cfg.GetCodecType(),
		useRemote:         cfg.GetUseRemoteAddress().GetValue(),
		xffHops:           int(cfg.GetXffNumTrustedHops()),
		skipXFF:           cfg.GetSkipXffAppend(),
		genRequestID:      cfg.GetGenerateRequestId() == nil || cfg.GetGenerateRequestId().GetValue(),
		preserveRequestID: cfg.GetPreserveExternalRequestId(),
		alwaysRequestID:   cfg.GetAlwaysSetRequestIdInResponse(),
		serverName:        cfg.GetServerName(),
		serverMode:        cfg.GetServerHeaderTransformation(),
		via:               cfg.GetVia(),
		upgrades:          map[string]bool{},
		xfcc:              newXFCC(cfg),
		normalizePath:     cfg.GetNormalizePath().GetValue(),
		mergeSlashes:      cfg.GetMergeSlashes(),
	}
	if c.statPrefix == "" {
		return nil, fmt.Errorf("stat_prefix: must not be empty")
	}
	if c.serverName == "" {
		c.serverName = "skiff"
	}
	switch c.codec {
	case hcmv3.HttpConnectionManager_AUTO, hcmv3.HttpConnectionManager_HTTP1, hcmv3.HttpConnectionManager_HTTP2:
	default:
		return nil, fmt.Errorf("codec_type: %v is not supported; use AUTO, HTTP1 or HTTP2", c.codec)
	}
	for i, u := range cfg.GetUpgradeConfigs() {
		if len(u.GetFilters()) > 0 {
			return nil, fmt.Errorf("upgrade_configs[%d].filters: per-upgrade filter chains are not supported", i)
		}
		c.upgrades[strings.ToLower(u.GetUpgradeType())] = u.GetEnabled() == nil || u.GetEnabled().GetValue()
	}
	if iac := cfg.GetInternalAddressConfig(); iac != nil && len(iac.GetCidrRanges()) > 0 {
		for i, r := range iac.GetCidrRanges() {
			a, err := netip.ParseAddr(r.GetAddressPrefix())
			if err != nil {
				return nil, fmt.Errorf("internal_address_config.cidr_ranges[%d].address_prefix: %w", i, err)
			}
			c.internal = append(c.internal, netip.PrefixFrom(a, int(r.GetPrefixLen().GetValue())).Masked())
		}
	} else {
		// Envoy's default internal addresses: RFC 1918 and IPv6 unique local.
		for _, p := range []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"} {
			c.internal = append(c.internal, netip.MustParsePrefix(p))
		}
	}
	switch rs := cfg.GetRouteSpecifier().(type) {
	case *hcmv3.HttpConnectionManager_Rds:
		if d.Routes == nil {
			return nil, fmt.Errorf("rds: no route registry to resolve route_config_name %q", rs.Rds.GetRouteConfigName())
		}
		if rs.Rds.GetRouteConfigName() == "" {
			return nil, fmt.Errorf("rds.route_config_name: must not be empty")
		}
		c.rds = d.Routes.slot(rs.Rds.GetRouteConfigName())
	case *hcmv3.HttpConnectionManager_RouteConfig:
		t, err := route.Compile(rs.RouteConfig)
		if err != nil {
			return nil, fmt.Errorf("route_config: %w", err)
		}
		c.inline = t
	case nil:
		return nil, fmt.Errorf("route_specifier: one of rds or route_config is required")
	default:
		return nil, fmt.Errorf("route_specifier: scoped_routes is not supported; use rds or route_config")
	}
	c.stats = newHCMStats(st, c.statPrefix)
	for i, al := range cfg.GetAccessLog() {
		l, err := accesslog.New(al)
		if err != nil {
			return nil, fmt.Errorf("access_log[%d] %q: %w", i, al.GetName(), err)
		}
		c.logs = append(c.logs, l)
	}
	// Tracing without a provider means the bootstrap's tracer in Envoy;
	// skiff-proxy has none, so such a config traces nothing.
	if tc := cfg.GetTracing(); tc.GetProvider() != nil {
		t, err := tracing.New(tracing.Config{Tracing: tc, Clusters: d.Clusters, Node: d.Node, Direction: d.Direction, Stats: st})
		if err != nil {
			return nil, fmt.Errorf("tracing.%w", err)
		}
		c.tracer = t
	}
	chain, err := buildChain(cfg, c, d, st, logger)
	if err != nil {
		if c.tracer != nil {
			c.tracer.Close()
		}
		return nil, err
	}
	c.chain = chain
	return c, nil
}

func (c *config) table() *route.Table {
	if c.inline != nil {
		return c.inline
	}
	return c.rds.Load()
}

// connInfoKey carries the downstream *core.ConnInfo in request contexts.
type connInfoKey struct{}

// ServeConn serves one downstream connection until it closes. It
// implements core.ConnHandler.
func (cm *ConnectionManager) ServeConn(c net.Conn, ci *core.ConnInfo) {
	if ci == nil {
		ci = &core.ConnInfo{LocalAddr: c.LocalAddr(), RemoteAddr: c.RemoteAddr()}
	}
	if cm.closed.Load() {
		c.Close()
		return
	}
	st := cm.cfg.stats
	st.cxTotal.Inc()
	st.cxActive.Inc()
	defer st.cxActive.Dec()

	h2 := cm.cfg.codec == hcmv3.HttpConnectionManager_HTTP2
	if ci.TLS != nil && ci.TLS.NegotiatedProtocol == "h2" && cm.cfg.codec != hcmv3.HttpConnectionManager_HTTP1 {
		h2 = true
	}
	if !h2 && ci.TLS == nil && cm.cfg.codec == hcmv3.HttpConnectionManager_AUTO {
		var prior bool
		c, prior = sniffPreface(c)
		h2 = prior
	}
	cm.track(c, true)
	defer cm.track(c, false)
	if h2 {
		st.cxHTTP2.Inc()
		ctx := context.WithValue(context.Background(), connInfoKey{}, ci)
		cm.h2.ServeConn(c, &http2.ServeConnOpts{Context: ctx, BaseConfig: cm.h2base, Handler: cm})
		c.Close()
		return
	}
	st.cxHTTP1.Inc()
	cm.serveH1(c, ci)
}

// trackH1 registers an HTTP/1 connection so Drain can close it when idle.
func (cm *ConnectionManager) trackH1(c *h1conn, add bool) {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	if add {
		cm.h1conns[c] = struct{}{}
	} else {
		delete(cm.h1conns, c)
	}
}

func (cm *ConnectionManager) track(c net.Conn, add bool) {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	if add {
		cm.conns[c] = struct{}{}
	} else {
		delete(cm.conns, c)
	}
}

// Drain winds the manager down: HTTP/1 responses carry Connection: close
// and idle keep-alive connections are closed; HTTP/2 connections get
// GOAWAY. Requests in flight finish.
func (cm *ConnectionManager) Drain() {
	if cm.draining.Swap(true) {
		return
	}
	cm.mu.Lock()
	var idle []*h1conn
	for c := range cm.h1conns {
		if c.state.CompareAndSwap(h1Idle, h1Closed) {
			idle = append(idle, c)
		}
	}
	cm.mu.Unlock()
	for _, c := range idle {
		c.nc.Close()
	}
	// h2base has no listener or HTTP/1 connections: Shutdown only runs the
	// GOAWAY hook and returns.
	go cm.h2base.Shutdown(context.Background())
	if t := cm.cfg.tracer; t != nil {
		go t.Flush()
	}
}

// Close closes every connection at once and stops the manager. It
// implements io.Closer (the listener closes replaced handlers through it)
// and always returns nil.
func (cm *ConnectionManager) Close() error {
	if cm.closed.Swap(true) {
		return nil
	}
	cm.mu.Lock()
	conns := make([]net.Conn, 0, len(cm.conns))
	for c := range cm.conns {
		conns = append(conns, c)
	}
	cm.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	for _, l := range cm.cfg.logs {
		l.Flush()
	}
	if cm.cfg.tracer != nil {
		cm.cfg.tracer.Close()
	}
	return nil
}

const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// sniffPreface tells h2c prior knowledge from HTTP/1 by the client
// preface, reading only as far as the bytes agree so a short HTTP/1
// request never blocks the sniff.
func sniffPreface(c net.Conn) (net.Conn, bool) {
	br := bufio.NewReaderSize(c, 64)
	pc := &peekedConn{Conn: c, r: br}
	for i := 0; i < len(h2Preface); i++ {
		b, err := br.Peek(i + 1)
		if err != nil || b[i] != h2Preface[i] {
			return pc, false
		}
	}
	return pc, true
}

// peekedConn replays the sniffed bytes; once they are consumed bufio reads
// straight into the caller's buffer, so the extra layer costs no copy.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

var (
	_ core.ConnHandler = (*ConnectionManager)(nil)
	_ core.Drainer     = (*ConnectionManager)(nil)
	_ io.Closer        = (*ConnectionManager)(nil)
	_ http.Handler     = (*ConnectionManager)(nil)
)
