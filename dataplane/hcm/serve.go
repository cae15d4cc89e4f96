package hcm

import (
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/dataplane/hcm/accesslog"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

type hcmStats struct {
	rqTotal, rq1xx, rq2xx, rq3xx, rq4xx, rq5xx *stats.Counter
	rqActive                                   *stats.Gauge
	rqHTTP1, rqHTTP2                           *stats.Counter
	cxTotal, cxHTTP1, cxHTTP2                  *stats.Counter
	cxActive                                   *stats.Gauge
	noRoute, noCluster, direct, redirect       *stats.Counter
	rqTime                                     *stats.Histogram
}

func newHCMStats(st *stats.Store, prefix string) *hcmStats {
	sc := st.Scope("http."+prefix, "http", stats.Tag{Name: "envoy_http_conn_manager_prefix", Value: prefix})
	return &hcmStats{
		rqTotal: sc.Counter("downstream_rq_total"), rqActive: sc.Gauge("downstream_rq_active"),
		rq1xx: sc.Counter("downstream_rq_1xx"), rq2xx: sc.Counter("downstream_rq_2xx"),
		rq3xx: sc.Counter("downstream_rq_3xx"), rq4xx: sc.Counter("downstream_rq_4xx"),
		rq5xx:   sc.Counter("downstream_rq_5xx"),
		rqHTTP1: sc.Counter("downstream_rq_http1_total"), rqHTTP2: sc.Counter("downstream_rq_http2_total"),
		cxTotal: sc.Counter("downstream_cx_total"), cxActive: sc.Gauge("downstream_cx_active"),
		cxHTTP1: sc.Counter("downstream_cx_http1_total"), cxHTTP2: sc.Counter("downstream_cx_http2_total"),
		noRoute: sc.Counter("no_route"), noCluster: sc.Counter("no_cluster"),
		direct: sc.Counter("rq_direct_response"), redirect: sc.Counter("rq_redirect"),
		rqTime: sc.Histogram("downstream_rq_time"),
	}
}

func (h *hcmStats) countStatus(code int) {
	switch code / 100 {
	case 1:
		h.rq1xx.Inc()
	case 2:
		h.rq2xx.Inc()
	case 3:
		h.rq3xx.Inc()
	case 4:
		h.rq4xx.Inc()
	case 5:
		h.rq5xx.Inc()
	}
}

var streamPool = sync.Pool{New: func() any { return new(Stream) }}

// ServeHTTP is the per-request entry point of both codecs.
func (cm *ConnectionManager) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := cm.cfg
	ci, _ := r.Context().Value(connInfoKey{}).(*core.ConnInfo)
	if ci == nil {
		ci = &core.ConnInfo{}
	}
	s := streamPool.Get().(*Stream)
	*s = Stream{Req: r, Conn: ci, cm: cm, w: w, Start: time.Now()}
	if r.Body != nil && r.Body != http.NoBody {
		s.body = &countingBody{rc: r.Body}
		r.Body = s.body
	}
	if ct := r.Header[hdrContentType]; len(ct) > 0 && isGRPCContentType(ct[0]) {
		s.grpc = true
	}
	c.stats.rqTotal.Inc()
	if r.ProtoMajor == 2 {
		c.stats.rqHTTP2.Inc()
	} else {
		c.stats.rqHTTP1.Inc()
	}
	c.stats.rqActive.Inc()
	defer cm.finish(s)
	for _, h := range c.streamHooks {
		s.AddDoneHook(h)
	}

	c.mutateRequestHeaders(s)
	if (c.normalizePath || c.mergeSlashes) && r.URL != nil {
		normalizePath(r.URL, c.normalizePath, c.mergeSlashes)
	}
	if t := c.table(); t != nil {
		s.Route = t.Select(r)
	}
	// The weighted cluster is chosen with the route, so filters see its
	// typed_per_filter_config.
	if s.Route != nil && s.Route.Action != nil && len(s.Route.Action.Weighted) > 0 {
		s.Cluster = s.Route.Action.Choose(rand.Uint64())
	}
	if c.tracer != nil {
		op := ""
		if s.Route != nil {
			op = s.Route.Decorator
		}
		s.span = c.tracer.Start(r, s.Start, op)
		s.span.Inject(r.Header)
	}
	c.chain.ServeStream(s)
}

// finish records the stream's statistics and access log and returns it to
// the pool. It runs even when a handler aborts the stream.
func (cm *ConnectionManager) finish(s *Stream) {
	c := cm.cfg
	c.stats.rqActive.Dec()
	if s.status == 0 {
		if p := recover(); p != nil {
			s.Flags |= core.DownstreamConnectionTermination
			cm.complete(s)
			streamPool.Put(s)
			panic(p)
		}
		s.WriteHeader(http.StatusOK)
	}
	c.stats.countStatus(s.status)
	c.stats.rqTime.Record(float64(time.Since(s.Start).Microseconds()) / 1000)
	cm.complete(s)
	if p := recover(); p != nil {
		streamPool.Put(s)
		panic(p)
	}
	*s = Stream{}
	streamPool.Put(s)
}

// complete runs the done hooks and writes the access log lines of a finished
// stream.
func (cm *ConnectionManager) complete(s *Stream) {
	for i := 0; i < s.ndone; i++ {
		s.doneHooks[i].OnStreamDone(s)
	}
	if len(cm.cfg.logs) == 0 && s.span == nil {
		return
	}
	var e accesslog.Entry
	s.logEntry(&e)
	for _, l := range cm.cfg.logs {
		l.Log(&e)
	}
	if s.span != nil {
		s.span.Finish(&e)
	}
}

// hopByHop are the connection-specific headers a proxy never forwards.
var hopByHop = [...]string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade"}

// removeHopByHop deletes hop-by-hop headers and those named in Connection.
// keepUpgrade leaves Connection and Upgrade for a WebSocket handshake.
func removeHopByHop(h http.Header, keepUpgrade bool) {
	if !keepUpgrade {
		for _, v := range h[hdrConnection] {
			for _, f := range strings.Split(v, ",") {
				if f = strings.TrimSpace(f); f != "" {
					delete(h, http.CanonicalHeaderKey(f))
				}
			}
		}
	}
	for _, k := range hopByHop {
		if keepUpgrade && (k == hdrConnection || k == hdrUpgrade) {
			continue
		}
		delete(h, k)
	}
	if te := h[hdrTE]; len(te) > 0 {
		// Only "te: trailers" may pass (gRPC needs it).
		if strings.Contains(strings.ToLower(strings.Join(te, ",")), "trailers") {
			h[hdrTE] = teTrailers
		} else {
			delete(h, hdrTE)
		}
	}
}

var teTrailers = []string{"trailers"}

// envoyInternalHeaders are the x-envoy-* request headers Envoy removes from
// requests of external clients, since they steer the proxy.
var envoyInternalHeaders = [...]string{
	"X-Envoy-Decorator-Operation", "X-Envoy-Downstream-Service-Cluster", "X-Envoy-Downstream-Service-Node",
	"X-Envoy-Expected-Rq-Timeout-Ms", "X-Envoy-External-Address", "X-Envoy-Force-Trace", "X-Envoy-Internal",
	"X-Envoy-Ip-Tags", "X-Envoy-Max-Retries", "X-Envoy-Retry-Grpc-On", "X-Envoy-Retry-On",
	"X-Envoy-Retriable-Header-Names", "X-Envoy-Retriable-Status-Codes", "X-Envoy-Upstream-Alt-Stat-Name",
	"X-Envoy-Upstream-Rq-Per-Try-Timeout-Ms", "X-Envoy-Upstream-Rq-Timeout-Alt-Response",
	"X-Envoy-Upstream-Rq-Timeout-Ms", "X-Envoy-Hedge-On-Per-Try-Timeout", "X-Envoy-Original-Dst-Host",
	"X-Envoy-Attempt-Count",
}

func isWebSocketUpgrade(h http.Header) bool {
	u := h[hdrUpgrade]
	if len(u) == 0 || !strings.EqualFold(u[0], "websocket") {
		return false
	}
	for _, v := range h[hdrConnection] {
		if strings.Contains(strings.ToLower(v), "upgrade") {
			return true
		}
	}
	return false
}

// mutateRequestHeaders applies Envoy's ConnectionManagerUtility request
// header handling: hop-by-hop removal, x-forwarded-*, internal/external
// classification with x-envoy-* sanitising, x-request-id and via.
func (c *config) mutateRequestHeaders(s *Stream) {
	h := s.Req.Header
	removeHopByHop(h, isWebSocketUpgrade(h))
	external := false
	if c.useRemote {
		ip := remoteIP(s.Conn)
		external = !c.isInternal(ip)
		ipStr := ip.String()
		if !c.skipXFF && ip.IsValid() {
			if prior := h[hdrXFF]; len(prior) > 0 {
				h[hdrXFF] = []string{strings.Join(prior, ", ") + ", " + ipStr}
			} else {
				h[hdrXFF] = []string{ipStr}
			}
		}
		if external {
			for _, k := range envoyInternalHeaders {
				delete(h, k)
			}
			if ip.IsValid() {
				h[hdrExternalAddress] = []string{ipStr}
			}
		} else {
			h[hdrInternal] = trueValue
		}
		h[hdrXFP] = schemeValue(s.Conn)
	} else if len(h[hdrXFP]) == 0 {
		h[hdrXFP] = schemeValue(s.Conn)
	}
	c.xfcc.apply(h, s.Conn)
	if c.genRequestID {
		if id := h[hdrRequestID]; len(id) == 0 || id[0] == "" || (external && !c.preserveRequestID) {
			h[hdrRequestID] = []string{newUUID()}
		}
	}
	if c.via != "" {
		h[hdrVia] = append(h[hdrVia], c.via)
	}
	if s.Req.URL != nil && s.Req.URL.Scheme == "" {
		s.Req.URL.Scheme = "http"
	}
}

var (
	trueValue  = []string{"true"}
	emptyValue = []string{""}
	httpValue  = []string{"http"}
	httpsValue = []string{"https"}
)

func schemeValue(ci *core.ConnInfo) []string {
	if ci.TLS != nil {
		return httpsValue
	}
	return httpValue
}

func remoteIP(ci *core.ConnInfo) netip.Addr {
	switch a := ci.RemoteAddr.(type) {
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case nil:
		return netip.Addr{}
	default:
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return netip.Addr{}
		}
		return ap.Addr().Unmap()
	}
}

func (c *config) isInternal(ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	for _, p := range c.internal {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// finishResponseHeaders applies the HCM's response header handling just
// before any response (proxied or local) is written.
func (c *config) finishResponseHeaders(h http.Header) {
	switch c.serverMode {
	case hcmv3.HttpConnectionManager_OVERWRITE:
		h[hdrServer] = []string{c.serverName}
	case hcmv3.HttpConnectionManager_APPEND_IF_ABSENT:
		if len(h[hdrServer]) == 0 {
			h[hdrServer] = []string{c.serverName}
		}
	}
	if c.via != "" {
		h[hdrVia] = append(h[hdrVia], c.via)
	}
}

// newUUID returns a random (version 4) UUID for x-request-id.
func newUUID() string {
	const hex = "0123456789abcdef"
	a, b := rand.Uint64(), rand.Uint64()
	a = a&^(0xf<<12) | 4<<12         // version 4
	b = b&^(0x3<<62) | uint64(2)<<62 // RFC 4122 variant
	var out [36]byte
	j := 0
	for i := 0; i < 16; i++ {
		if j == 8 || j == 13 || j == 18 || j == 23 {
			out[j] = '-'
			j++
		}
		var v byte
		if i < 8 {
			v = byte(a >> (56 - 8*i))
		} else {
			v = byte(b >> (56 - 8*(i-8)))
		}
		out[j] = hex[v>>4]
		out[j+1] = hex[v&15]
		j += 2
	}
	return string(out[:])
}
