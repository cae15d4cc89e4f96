package istiostats

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/dataplane/hcm"
	"github.com/skiff-mesh/skiff/dataplane/l4"
	"github.com/skiff-mesh/skiff/dataplane/listener"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

func init() {
	hcm.RegisterFilter(PluginConfigTypeURL, newHTTPStats)
	listener.RegisterNetworkFilter(PluginConfigTypeURL, newTCPStats)
}

// series is the metrics of one label set, resolved once.
type series struct {
	counters [nMetrics]*stats.Counter
	histos   [nMetrics]*stats.Histogram
}

// maxSeries bounds a filter's label-set cache; past it, new label sets
// are still recorded (the store finds their metrics by name) but not
// cached.
const maxSeries = 10000

// seriesCache maps label-set keys to their series. Reads are lock-free
// (an immutable map behind an atomic pointer); a new label set copies
// the map, which happens once per label set.
type seriesCache[K comparable] struct {
	m  atomic.Pointer[map[K]*series]
	mu sync.Mutex
}

func (c *seriesCache[K]) lookup(k K) *series {
	if m := c.m.Load(); m != nil {
		return (*m)[k]
	}
	return nil
}

func (c *seriesCache[K]) insert(k K, s *series) *series {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	if old != nil {
		if have := (*old)[k]; have != nil {
			return have
		}
		if len(*old) >= maxSeries {
			return s
		}
	}
	n := 1
	if old != nil {
		n += len(*old)
	}
	nm := make(map[K]*series, n)
	if old != nil {
		for kk, v := range *old {
			nm[kk] = v
		}
	}
	nm[k] = s
	c.m.Store(&nm)
	return s
}

// base is what the HTTP and TCP stats filters share.
type base struct {
	p       *plugin
	st      *stats.Store
	loc     *local
	inbound bool // reporter=destination
}

func newBase(a *anypb.Any, st *stats.Store, node *corev3.Node, dir corev3.TrafficDirection) (base, error) {
	p, err := compilePlugin(a)
	if err != nil {
		return base{}, err
	}
	if st == nil {
		st = stats.New()
	}
	return base{p: p, st: st, loc: localFor(node), inbound: dir == corev3.TrafficDirection_INBOUND}, nil
}

// labelInput is what a label set is computed from.
type labelInput struct {
	src, dst                   *Peer
	srcPrincipal, dstPrincipal string
	svc                        *svcInfo
	host                       string
	proto, code, grpc, flags   string
	policy                     string
}

func (b *base) values(in *labelInput) [nLabels]string {
	var v [nLabels]string
	if b.inbound {
		v[lReporter] = "destination"
	} else {
		v[lReporter] = "source"
	}
	src, dst := in.src, in.dst
	if src == nil {
		src = &Peer{}
	}
	if dst == nil {
		dst = &Peer{}
	}
	v[lSrcWorkload], v[lSrcNamespace], v[lSrcPrincipal] = orUnknown(src.Workload), orUnknown(src.Namespace), orUnknown(in.srcPrincipal)
	v[lSrcApp], v[lSrcVersion] = orUnknown(src.App), orUnknown(src.Version)
	v[lSrcCanonicalService], v[lSrcCanonicalRevision], v[lSrcCluster] = orUnknown(src.CanonicalService), orUnknown(src.CanonicalRevision), orUnknown(src.Cluster)
	v[lDstWorkload], v[lDstNamespace], v[lDstPrincipal] = orUnknown(dst.Workload), orUnknown(dst.Namespace), orUnknown(in.dstPrincipal)
	v[lDstApp], v[lDstVersion] = orUnknown(dst.App), orUnknown(dst.Version)
	v[lDstCanonicalService], v[lDstCanonicalRevision], v[lDstCluster] = orUnknown(dst.CanonicalService), orUnknown(dst.CanonicalRevision), orUnknown(dst.Cluster)
	if s := in.svc; s != nil && s.host != "" {
		v[lDstService], v[lDstServiceName], v[lDstServiceNamespace] = s.host, orUnknown(s.name), orUnknown(s.namespace)
	} else if in.host != "" {
		// Istio falls back to the host header when the cluster names no
		// service.
		h := in.host
		if i := strings.LastIndexByte(h, ':'); i > 0 && !strings.HasSuffix(h, "]") {
			h = h[:i]
		}
		name, _, _ := strings.Cut(h, ".")
		v[lDstService], v[lDstServiceName], v[lDstServiceNamespace] = h, name, orUnknown(dst.Namespace)
	} else {
		v[lDstService], v[lDstServiceName], v[lDstServiceNamespace] = unknown, unknown, unknown
	}
	v[lRequestProtocol], v[lResponseCode], v[lGRPCStatus], v[lResponseFlags], v[lSecurityPolicy] = in.proto, in.code, in.grpc, in.flags, in.policy
	return v
}

// makeSeries creates (or finds) the metrics of one label set.
func (b *base) makeSeries(v *[nLabels]string, ex *[maxExprs]string, tcp bool) *series {
	s := &series{}
	for m := range nMetrics {
		spec := &b.p.metrics[m]
		if spec.drop || isTCP(m) != tcp {
			continue
		}
		tags := make([]stats.Tag, len(spec.tags))
		var flat strings.Builder
		for i, t := range spec.tags {
			val := ""
			if t.std >= 0 {
				val = v[t.std]
			} else {
				val = ex[t.expr]
			}
			tags[i] = stats.Tag{Name: t.name, Value: val}
			flat.WriteString(t.name)
			flat.WriteString(".=.")
			flat.WriteString(val)
			flat.WriteString(";.;")
		}
		name := "istio_" + metricNames[m]
		sc := b.st.PromScope(flat.String(), "", tags...)
		switch m {
		case mDuration, mRequestBytes, mResponseBytes:
			s.histos[m] = sc.Histogram(name)
		default:
			s.counters[m] = sc.Counter(name)
		}
	}
	return s
}

// localPrincipal is this proxy's SPIFFE ID in trust domain td (its own by default).
func (b *base) localPrincipal(td string) string {
	if td == "" {
		td = b.loc.td
	}
	return b.loc.peer.principal(td)
}

// httpStats is istio.stats for HTTP.
type httpStats struct {
	base
	clusters core.ClusterSet
	cache    seriesCache[httpKey]
}

type httpKey struct {
	down, up      *Peer
	downPrincipal string
	svc           *svcInfo
	host          string
	code          int32
	grpc          int32
	flags         core.ResponseFlags
	isGRPC, mtls  bool
	ex            [maxExprs]string
}

func newHTTPStats(fc hcm.FilterConfig) (hcm.Filter, error) {
	b, err := newBase(fc.TypedConfig, fc.Stats, fc.Node, fc.Direction)
	if err != nil {
		return nil, err
	}
	f := &httpStats{base: b, clusters: fc.Clusters}
	if fc.AddStreamHook != nil {
		// Count every stream, also those a filter before this one answers.
		fc.AddStreamHook(f)
		return func(next hcm.Handler) hcm.Handler { return next }, nil
	}
	return func(next hcm.Handler) hcm.Handler {
		return hcm.HandlerFunc(func(s *hcm.Stream) {
			s.AddDoneHook(f)
			next.ServeStream(s)
		})
	}, nil
}

// metadataCluster is a cluster that exposes its metadata (dataplane/upstream's).
type metadataCluster interface {
	Metadata() *corev3.Metadata
}

// metadataHost is an upstream host that exposes its endpoint metadata.
type metadataHost interface {
	Metadata() *corev3.Metadata
}

// OnStreamDone records the finished request.
func (f *httpStats) OnStreamDone(s *hcm.Stream) {
	k := httpKey{code: int32(s.Status()), flags: s.Flags, isGRPC: s.IsGRPC(), grpc: -1}
	k.down, _ = s.Metadata(nsDownstreamPeer).(*Peer)
	k.up, _ = s.Metadata(nsUpstreamPeer).(*Peer)
	if f.inbound && s.Conn != nil && s.Conn.TLS != nil && len(s.Conn.TLS.PeerCertificates) > 0 {
		k.mtls = true
		k.downPrincipal = certPrincipal(s.Conn.TLS.PeerCertificates)
	}
	mxCluster := false
	if name := routedCluster(s); name != "" && f.clusters != nil {
		if mc, ok := f.clusters.Cluster(name).(metadataCluster); ok {
			md := mc.Metadata()
			k.svc = svcCached(md)
			_, mxCluster = mxClusters.Load(md)
		}
	}
	if k.svc == nil {
		k.host = s.Req.Host
	}
	exchanged := k.up != nil
	if k.up == nil && !f.inbound {
		// No exchange with the upstream (it has no sidecar, or answered
		// without the headers): who it is comes from its endpoint's
		// istio.workload metadata, as Istio's stats fall back to.
		if mh, ok := s.UpstreamHostRef.(metadataHost); ok {
			k.up = endpointPeer(mh.Metadata())
		}
	}
	// Only a mesh mTLS upstream (its cluster runs the exchange) has
	// principals to report on the source side.
	k.mtls = k.mtls || (!f.inbound && mxCluster && exchanged)
	if k.isGRPC {
		h := s.Header()
		v := h["Grpc-Status"]
		if len(v) == 0 {
			v = h[http.TrailerPrefix+"Grpc-Status"]
		}
		if len(v) > 0 {
			k.grpc = atoiSmall(v[0])
		}
	}
	if len(f.p.exprs) > 0 {
		ec := evalCtx{req: s.Req, code: s.Status(), up: k.up, down: k.down}
		for i := range f.p.exprs {
			k.ex[i] = f.p.exprs[i].eval(&ec)
		}
	}
	ser := f.cache.lookup(k)
	if ser == nil {
		ser = f.cache.insert(k, f.newSeries(k))
	}
	if c := ser.counters[mRequests]; c != nil {
		c.Inc()
	}
	if h := ser.histos[mDuration]; h != nil {
		h.Record(float64(time.Since(s.Start).Microseconds()) / 1000)
	}
	if h := ser.histos[mRequestBytes]; h != nil {
		h.Record(float64(headerSize(s.Req.Header) + s.BytesReceived()))
	}
	if h := ser.histos[mResponseBytes]; h != nil {
		h.Record(float64(headerSize(s.Header()) + s.BytesSent()))
	}
}

func (f *httpStats) newSeries(k httpKey) *series {
	in := labelInput{svc: k.svc, host: k.host, proto: "http", code: statusText(int(k.code)), flags: k.flags.String()}
	if k.isGRPC {
		in.proto = "grpc"
		if k.grpc >= 0 {
			in.grpc = statusText(int(k.grpc))
		}
	}
	if f.inbound {
		in.src, in.dst = k.down, f.loc.peer
		in.policy = "none"
		if k.mtls {
			in.policy = "mutual_tls"
			in.srcPrincipal = k.downPrincipal
			in.dstPrincipal = f.localPrincipal(trustDomain(k.downPrincipal))
		}
	} else {
		in.src, in.dst = f.loc.peer, k.up
		in.policy = unknown
		if k.mtls {
			in.srcPrincipal = f.localPrincipal("")
			in.dstPrincipal = k.up.principal(f.loc.td)
		}
	}
	v := f.values(&in)
	return f.makeSeries(&v, &k.ex, false)
}

// routedCluster is the cluster the request went to, or was routed to
// when a filter answered before the router (a fault abort), as Envoy's
// stream info knows it from the route.
func routedCluster(s *hcm.Stream) string {
	if s.UpstreamCluster != "" {
		return s.UpstreamCluster
	}
	if s.Cluster != nil {
		return s.Cluster.Name
	}
	if s.Route != nil && s.Route.Action != nil {
		return s.Route.Action.Cluster
	}
	return ""
}

// headerSize approximates the headers' size on the wire.
func headerSize(h http.Header) int64 {
	var n int64
	for k, vs := range h {
		for _, v := range vs {
			n += int64(len(k) + len(v) + 4)
		}
	}
	return n
}

func atoiSmall(s string) int32 {
	if s == "" || len(s) > 4 {
		return -1
	}
	var n int32
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int32(c-'0')
	}
	return n
}

// svcCached is svcFromMetadata remembered per metadata object (clusters
// keep theirs until replaced).
func svcCached(md *corev3.Metadata) *svcInfo {
	if md == nil {
		return nil
	}
	if v, ok := svcCache.Load(md); ok {
		if v == noSvc {
			return nil
		}
		return v.(*svcInfo)
	}
	s := svcFromMetadata(md)
	if svcCount.Add(1) > peerCacheMax {
		svcCache.Clear()
		svcCount.Store(1)
	}
	if s == nil {
		svcCache.Store(md, noSvc)
	} else {
		svcCache.Store(md, s)
	}
	return s
}

var svcCount atomic.Int64

// mxClusters are the metadata objects of clusters that carry the
// upstream metadata exchange, i.e. mesh mTLS clusters.
var (
	mxClusters sync.Map // *corev3.Metadata → struct{}
	mxCount    atomic.Int64
)

func markMXCluster(md *corev3.Metadata) {
	if md == nil {
		return
	}
	if mxCount.Add(1) > peerCacheMax {
		mxClusters.Clear()
		mxCount.Store(1)
	}
	mxClusters.Store(md, struct{}{})
}

// tcpStats is istio.stats as a network filter.
type tcpStats struct {
	base
	cache *seriesCache[tcpKey]
	next  core.ConnHandler
	// clusters is set on inbound chains whose tcp_proxy reports its
	// sessions to this filter: the cluster it picks names the
	// destination service (Envoy's upstream cluster info, as Istio reads it).
	clusters core.ClusterSet
}

type tcpKey struct {
	peer      *Peer
	principal string
	svc       *svcInfo
	mtls      bool
	ex        [maxExprs]string
}

func newTCPStats(fc listener.NetworkFilterConfig) (listener.NetworkFilter, error) {
	b, err := newBase(fc.TypedConfig, fc.Stats, fc.Node, fc.Direction)
	if err != nil {
		return nil, err
	}
	cache := &seriesCache[tcpKey]{}
	return func(next core.ConnHandler) core.ConnHandler {
		f := &tcpStats{base: b, cache: cache, next: next}
		if tp, ok := next.(*l4.TCPProxy); ok && f.inbound && fc.Clusters != nil {
			f.clusters = fc.Clusters
			tp.SetObserver(f)
		}
		return f
	}, nil
}

func (f *tcpStats) ServeConn(c net.Conn, info *core.ConnInfo) {
	if info == nil {
		info = &core.ConnInfo{LocalAddr: c.LocalAddr(), RemoteAddr: c.RemoteAddr()}
	}
	tc := &tcpConn{Conn: c, f: f, info: info}
	if f.inbound && f.clusters != nil {
		// Resolved in SessionOpened, once tcp_proxy has picked its cluster.
		info.SetMetadata(nsTCPConn, tc)
	} else if f.inbound {
		tc.resolve()
	} else {
		tc.slot = &upstreamSlot{onSet: tc.resolve}
		info.SetMetadata(nsUpstreamSlot, tc.slot)
	}
	f.next.ServeConn(tc, info)
	tc.resolve()
	if c := tc.ser.Load().counters[mTCPClosed]; c != nil {
		c.Inc()
	}
}

// SessionOpened (l4.Observer) learns the destination service from the
// inbound cluster's filter_metadata.istio.services and fixes the labels.
func (f *tcpStats) SessionOpened(s *l4.Session) {
	if s.Info == nil {
		return
	}
	tc, _ := s.Info.Metadata(nsTCPConn).(*tcpConn)
	if tc == nil {
		return
	}
	if mc, ok := f.clusters.Cluster(s.Cluster).(metadataCluster); ok {
		tc.svc = svcCached(mc.Metadata())
	}
	tc.resolve()
}

// SessionClosed (l4.Observer): ServeConn counts the close.
func (f *tcpStats) SessionClosed(*l4.Session) {}

func (f *tcpStats) Drain() {
	if d, ok := f.next.(core.Drainer); ok {
		d.Drain()
	}
}

func (f *tcpStats) Close() error {
	if c, ok := f.next.(interface{ Close() error }); ok {
		return c.Close()
	}
	return nil
}

// tcpConn counts a downstream connection's bytes into its series once
// the label set is known, and into pending counts before.
type tcpConn struct {
	net.Conn
	f    *tcpStats
	info *core.ConnInfo
	slot *upstreamSlot
	svc  *svcInfo // inbound: the service tcp_proxy's cluster names

	once               sync.Once
	ser                atomic.Pointer[series]
	pendRecv, pendSent atomic.Uint64
}

// resolve fixes the label set (at most once), counts the connection as
// opened and flushes the bytes counted so far.
func (t *tcpConn) resolve() {
	t.once.Do(func() {
		f := t.f
		k := tcpKey{}
		in := labelInput{proto: "tcp", flags: "-"}
		if f.inbound {
			k.peer, _ = t.info.Metadata(nsDownstreamPeer).(*Peer)
			k.svc = t.svc
			if t.info.TLS != nil && len(t.info.TLS.PeerCertificates) > 0 {
				k.mtls = true
				k.principal = certPrincipal(t.info.TLS.PeerCertificates)
			}
		} else if t.slot != nil {
			p, principal, svc, _ := t.slot.get()
			k.peer, k.principal, k.svc = p, principal, svc
			k.mtls = p != nil
		}
		if len(f.p.exprs) > 0 {
			ec := evalCtx{}
			if f.inbound {
				ec.down = k.peer
			} else {
				ec.up = k.peer
			}
			for i := range f.p.exprs {
				k.ex[i] = f.p.exprs[i].eval(&ec)
			}
		}
		ser := f.cache.lookup(k)
		if ser == nil {
			if f.inbound {
				in.src, in.dst, in.policy, in.svc = k.peer, f.loc.peer, "none", k.svc
				if k.mtls {
					in.policy, in.srcPrincipal = "mutual_tls", k.principal
					in.dstPrincipal = f.localPrincipal(trustDomain(k.principal))
				}
			} else {
				in.src, in.dst, in.policy, in.svc = f.loc.peer, k.peer, unknown, k.svc
				if k.mtls {
					in.srcPrincipal, in.dstPrincipal = f.localPrincipal(trustDomain(k.principal)), k.principal
				}
			}
			v := f.values(&in)
			ser = f.cache.insert(k, f.makeSeries(&v, &k.ex, true))
		}
		t.ser.Store(ser)
		if c := ser.counters[mTCPOpened]; c != nil {
			c.Inc()
		}
		t.flush(ser)
	})
}

func (t *tcpConn) flush(ser *series) {
	if n := t.pendRecv.Swap(0); n > 0 && ser.counters[mTCPReceived] != nil {
		ser.counters[mTCPReceived].Add(n)
	}
	if n := t.pendSent.Swap(0); n > 0 && ser.counters[mTCPSent] != nil {
		ser.counters[mTCPSent].Add(n)
	}
}

func (t *tcpConn) Read(b []byte) (int, error) {
	n, err := t.Conn.Read(b)
	if n > 0 {
		if ser := t.ser.Load(); ser != nil {
			if c := ser.counters[mTCPReceived]; c != nil {
				c.Add(uint64(n))
			}
		} else {
			t.pendRecv.Add(uint64(n))
			if ser := t.ser.Load(); ser != nil {
				t.flush(ser)
			}
		}
	}
	return n, err
}

func (t *tcpConn) Write(b []byte) (int, error) {
	if t.ser.Load() == nil {
		// Bytes from upstream mean its connection (and exchange) is done.
		t.resolve()
	}
	n, err := t.Conn.Write(b)
	if n > 0 {
		if c := t.ser.Load().counters[mTCPSent]; c != nil {
			c.Add(uint64(n))
		}
	}
	return n, err
}

func (t *tcpConn) CloseWrite() error {
	if cw, ok := t.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

var _ l4.Observer = (*tcpStats)(nil)
