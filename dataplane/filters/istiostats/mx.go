package istiostats

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/dataplane/hcm"
	"github.com/skiff-mesh/skiff/dataplane/listener"
	"github.com/skiff-mesh/skiff/dataplane/upstream"
)

// Type URLs of the metadata exchange configs (inside a TypedStruct).
const (
	PeerMetadataTypeURL  = "type.googleapis.com/io.istio.http.peer_metadata.Config"
	MetadataExchangeType = "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange"
	// ALPN is the TLS protocol under which peers exchange metadata.
	ALPN = "istio-peer-exchange"
	// exchangeMagic opens an exchange header (istio/proxy's metadata_exchange).
	exchangeMagic = 0x3D230467
	// maxExchange bounds a peer's metadata.
	maxExchange = 64 << 10
)

// Dynamic metadata namespaces where the exchange leaves the peers.
const (
	nsDownstreamPeer = "istio.downstream_peer" // *Peer
	nsUpstreamPeer   = "istio.upstream_peer"   // *Peer
	nsUpstreamSlot   = "istio.upstream_slot"   // *upstreamSlot (TCP)
	nsTCPConn        = "istio.tcp_conn"        // *tcpConn (inbound TCP, for SessionOpened)
)

// exchangeTimeout bounds how long a connection waits for its peer's header.
const exchangeTimeout = 5 * time.Second

func init() {
	hcm.RegisterFilter(PeerMetadataTypeURL, newHTTPExchange)
	listener.RegisterNetworkFilter(MetadataExchangeType, newTCPExchange)
	upstream.RegisterConnFilter(MetadataExchangeType, newUpstreamExchange)
}

// peerMetadataConfig is io.istio.http.peer_metadata.Config as it arrives in
// a TypedStruct (the proto is not published as Go).
type peerMetadataConfig struct {
	downDiscovery, upDiscovery, downPropagation, upPropagation bool
}

func parsePeerMetadata(v *structpb.Struct) (peerMetadataConfig, error) {
	var c peerMetadataConfig
	keys := make([]string, 0, len(v.GetFields()))
	for k := range v.GetFields() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		var dst *bool
		switch k {
		case "downstream_discovery":
			dst = &c.downDiscovery
		case "upstream_discovery":
			dst = &c.upDiscovery
		case "downstream_propagation":
			dst = &c.downPropagation
		case "upstream_propagation":
			dst = &c.upPropagation
		case "shared_with_upstream", "skip_external_clusters":
			continue
		default:
			return c, fmt.Errorf("typed_config.value.%s: unknown field; peer_metadata.Config has downstream_discovery, upstream_discovery, downstream_propagation, upstream_propagation", k)
		}
		for i, m := range v.GetFields()[k].GetListValue().GetValues() {
			for method := range m.GetStructValue().GetFields() {
				switch method {
				case "istio_headers":
					*dst = true
				case "workload_discovery":
					// No workload discovery service here: peers are known
					// from headers only.
				default:
					return c, fmt.Errorf("typed_config.value.%s[%d].%s: unsupported discovery method; use istio_headers or workload_discovery", k, i, method)
				}
			}
		}
	}
	return c, nil
}

// httpExchange is istio.metadata_exchange for HTTP.
type httpExchange struct {
	cfg                      peerMetadataConfig
	loc                      *local
	hdr, hdrID               []string
	downPropHook, upDiscHook hcm.ResponseHook
}

func newHTTPExchange(fc hcm.FilterConfig) (hcm.Filter, error) {
	tu, v, ok := core.UnwrapTypedStruct(fc.TypedConfig)
	if !ok || tu != PeerMetadataTypeURL {
		return nil, errors.New("typed_config: want a TypedStruct with type_url " + PeerMetadataTypeURL)
	}
	cfg, err := parsePeerMetadata(v)
	if err != nil {
		return nil, err
	}
	loc := localFor(fc.Node)
	x := &httpExchange{cfg: cfg, loc: loc, hdr: []string{loc.header}, hdrID: []string{loc.id}}
	x.downPropHook = downPropagation{x}
	x.upDiscHook = upDiscovery{}
	return func(next hcm.Handler) hcm.Handler {
		return hcm.HandlerFunc(func(s *hcm.Stream) {
			h := s.Req.Header
			if x.cfg.downDiscovery {
				if v := h[HeaderMetadata]; len(v) > 0 {
					id := ""
					if ids := h[HeaderMetadataID]; len(ids) > 0 {
						id = ids[0]
					}
					if p := peerCache.fromHeader(id, v[0]); p != nil {
						s.SetMetadata(nsDownstreamPeer, p)
					}
					// Only mesh peers learn who answered.
					if x.cfg.downPropagation {
						s.AddResponseHook(x.downPropHook)
					}
				}
				delete(h, HeaderMetadata)
				delete(h, HeaderMetadataID)
			}
			if x.cfg.upPropagation {
				h[HeaderMetadata] = x.hdr
				h[HeaderMetadataID] = x.hdrID
			}
			if x.cfg.upDiscovery {
				s.AddResponseHook(x.upDiscHook)
			}
			next.ServeStream(s)
		})
	}, nil
}

type downPropagation struct{ x *httpExchange }

func (d downPropagation) OnResponseHeaders(s *hcm.Stream, _ int) {
	h := s.Header()
	h[HeaderMetadata] = d.x.hdr
	h[HeaderMetadataID] = d.x.hdrID
}

type upDiscovery struct{}

func (upDiscovery) OnResponseHeaders(s *hcm.Stream, _ int) {
	h := s.Header()
	if v := h[HeaderMetadata]; len(v) > 0 {
		id := ""
		if ids := h[HeaderMetadataID]; len(ids) > 0 {
			id = ids[0]
		}
		if p := peerCache.fromHeader(id, v[0]); p != nil {
			s.SetMetadata(nsUpstreamPeer, p)
		}
		delete(h, HeaderMetadata)
		delete(h, HeaderMetadataID)
	}
}

func parseExchangeConfig(a *anypb.Any) error {
	tu, v, ok := core.UnwrapTypedStruct(a)
	if !ok || tu != MetadataExchangeType {
		return errors.New("typed_config: want a TypedStruct with type_url " + MetadataExchangeType)
	}
	for k, f := range v.GetFields() {
		switch k {
		case "protocol":
			if p := f.GetStringValue(); p != ALPN {
				return fmt.Errorf("typed_config.value.protocol: %q is not supported; use %q", p, ALPN)
			}
		case "enable_discovery", "additional_labels":
		default:
			return fmt.Errorf("typed_config.value.%s: unknown field of MetadataExchange (protocol)", k)
		}
	}
	return nil
}

// tcpExchange is the inbound istio.metadata_exchange network filter.
type tcpExchange struct {
	loc  *local
	next core.ConnHandler
}

func newTCPExchange(fc listener.NetworkFilterConfig) (listener.NetworkFilter, error) {
	if err := parseExchangeConfig(fc.TypedConfig); err != nil {
		return nil, err
	}
	loc := localFor(fc.Node)
	return func(next core.ConnHandler) core.ConnHandler { return &tcpExchange{loc: loc, next: next} }, nil
}

func (t *tcpExchange) ServeConn(c net.Conn, info *core.ConnInfo) {
	if info != nil && info.TLS != nil && info.TLS.NegotiatedProtocol == ALPN {
		p, nc := exchange(c, t.loc, time.Now().Add(exchangeTimeout))
		c = nc
		if p != nil {
			info.SetMetadata(nsDownstreamPeer, p)
		}
	}
	t.next.ServeConn(c, info)
}

func (t *tcpExchange) Drain() {
	if d, ok := t.next.(core.Drainer); ok {
		d.Drain()
	}
}

func (t *tcpExchange) Close() error {
	if c, ok := t.next.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// exchange writes our header and reads the peer's. A peer that sends no
// exchange (wrong magic) gets its bytes back in the returned conn; a
// failed exchange leaves the peer unknown and the stream as it is.
func exchange(c net.Conn, loc *local, deadline time.Time) (*Peer, net.Conn) {
	c.SetDeadline(deadline)
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(loc.wire); err != nil {
		return nil, c
	}
	br := bufio.NewReaderSize(c, 512)
	pc := &prefixConn{Conn: c, r: br}
	hdr, err := br.Peek(8)
	if err != nil || binary.BigEndian.Uint32(hdr) != exchangeMagic {
		return nil, pc
	}
	n := int(binary.BigEndian.Uint32(hdr[4:]))
	if n > maxExchange {
		return nil, pc
	}
	br.Discard(8)
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return nil, pc
	}
	return peerCache.fromExchange(body), pc
}

func appendExchangeHeader(b []byte, n uint32) []byte {
	b = binary.BigEndian.AppendUint32(b, exchangeMagic)
	return binary.BigEndian.AppendUint32(b, n)
}

// prefixConn reads what the exchange buffered before the connection's own
// bytes; it keeps CloseWrite for tcp_proxy's half-close.
type prefixConn struct {
	net.Conn
	r *bufio.Reader
}

func (p *prefixConn) Read(b []byte) (int, error) { return p.r.Read(b) }

func (p *prefixConn) CloseWrite() error {
	if cw, ok := p.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// upstreamSlot links a downstream connection's TCP stats to what the
// exchange on its upstream connection learned.
type upstreamSlot struct {
	mu        sync.Mutex
	done      bool
	peer      *Peer
	principal string
	svc       *svcInfo
	onSet     func()
}

func (u *upstreamSlot) set(p *Peer, principal string, svc *svcInfo) {
	u.mu.Lock()
	if u.done {
		u.mu.Unlock()
		return
	}
	u.done, u.peer, u.principal, u.svc = true, p, principal, svc
	f := u.onSet
	u.mu.Unlock()
	if f != nil {
		f()
	}
}

func (u *upstreamSlot) get() (p *Peer, principal string, svc *svcInfo, ok bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.peer, u.principal, u.svc, u.done
}

// newUpstreamExchange is istio.metadata_exchange in Cluster.filters: on an
// upstream connection that negotiated istio-peer-exchange it exchanges
// metadata, and it tells the downstream's TCP stats who answered.
func newUpstreamExchange(fc upstream.ConnFilterConfig) (upstream.ConnFilter, error) {
	if err := parseExchangeConfig(fc.TypedConfig); err != nil {
		return nil, err
	}
	loc := localFor(fc.Node)
	svc := svcFromMetadata(fc.Cluster.GetMetadata())
	markMXCluster(fc.Cluster.GetMetadata())
	return func(ctx context.Context, c net.Conn) (net.Conn, error) {
		var slot *upstreamSlot
		if ci := core.ConnInfoFrom(ctx); ci != nil {
			slot, _ = ci.Metadata(nsUpstreamSlot).(*upstreamSlot)
		}
		tc, ok := c.(*tls.Conn)
		if !ok || tc.ConnectionState().NegotiatedProtocol != ALPN {
			if slot != nil {
				slot.set(nil, "", svc)
			}
			return c, nil
		}
		deadline, ok := ctx.Deadline()
		if !ok {
			deadline = time.Now().Add(exchangeTimeout)
		}
		p, nc := exchange(c, loc, deadline)
		if slot != nil {
			slot.set(p, certPrincipal(tc.ConnectionState().PeerCertificates), svc)
		}
		return nc, nil
	}, nil
}

// svcInfo is the destination service a cluster's Istio metadata names.
type svcInfo struct{ host, name, namespace string }

var svcCache sync.Map // *corev3.Metadata → *svcInfo (nil stored as noSvc)

var noSvc = &svcInfo{}

// svcFromMetadata reads filter_metadata.istio.services[0]; nil when absent.
func svcFromMetadata(md interface {
	GetFilterMetadata() map[string]*structpb.Struct
}) *svcInfo {
	svcs := md.GetFilterMetadata()["istio"].GetFields()["services"].GetListValue().GetValues()
	if len(svcs) == 0 {
		return nil
	}
	f := svcs[0].GetStructValue().GetFields()
	s := &svcInfo{host: f["host"].GetStringValue(), name: f["name"].GetStringValue(), namespace: f["namespace"].GetStringValue()}
	if s.name == "" && s.host != "" {
		s.name, _, _ = strings.Cut(s.host, ".")
	}
	return s
}
