// Package istiostats owns Istio's telemetry filters in skiff-proxy:
// istio.metadata_exchange (HTTP, as request/response headers; TCP, over the
// istio-peer-exchange ALPN, inbound as a network filter and outbound as an
// upstream network filter of Cluster.filters) and istio.stats (HTTP and
// network), which record Istio's standard metrics (istio_requests_total,
// istio_tcp_sent_bytes_total, …) with Istio's labels into the proxy's
// stats store. Filters register themselves on import.
package istiostats

import (
	"crypto/x509"
	"encoding/base64"
	"strings"
	"sync"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Header names of Istio's HTTP metadata exchange.
const (
	HeaderMetadata   = "X-Envoy-Peer-Metadata"
	HeaderMetadataID = "X-Envoy-Peer-Metadata-Id"
)

// unknown is the value Istio reports for a label it cannot fill.
const unknown = "unknown"

// Peer is one workload's identity as the labels need it, decoded from its
// node metadata. Peers are interned (peerCache) so that label-set keys can
// compare them by pointer.
type Peer struct {
	ID                string
	Name              string
	Namespace         string
	Workload          string
	App               string
	Version           string
	CanonicalService  string
	CanonicalRevision string
	Cluster           string
	ServiceAccount    string
}

// exchangedKeys are the node metadata keys a proxy sends its peers.
var exchangedKeys = []string{"NAME", "NAMESPACE", "LABELS", "WORKLOAD_NAME", "OWNER", "CLUSTER_ID", "MESH_ID", "SERVICE_ACCOUNT", "ISTIO_VERSION"}

func str(f map[string]*structpb.Value, k string) string { return f[k].GetStringValue() }

func orUnknown(s string) string {
	if s == "" {
		return unknown
	}
	return s
}

// peerFromStruct reads node metadata as Istio's stats read a peer.
func peerFromStruct(id string, md *structpb.Struct) *Peer {
	f := md.GetFields()
	labels := f["LABELS"].GetStructValue().GetFields()
	l := func(k string) string { return labels[k].GetStringValue() }
	p := &Peer{ID: id, Name: str(f, "NAME"), Namespace: str(f, "NAMESPACE"), Workload: str(f, "WORKLOAD_NAME"),
		App: l("app"), Version: l("version"), Cluster: str(f, "CLUSTER_ID"), ServiceAccount: str(f, "SERVICE_ACCOUNT")}
	if p.Workload == "" {
		p.Workload = p.Name
	}
	p.CanonicalService = firstOf(l("service.istio.io/canonical-name"), l("app.kubernetes.io/name"), l("app"), p.Workload)
	p.CanonicalRevision = firstOf(l("service.istio.io/canonical-revision"), l("app.kubernetes.io/version"), l("version"), "latest")
	if p.App == "" {
		p.App = l("app.kubernetes.io/name")
	}
	if p.Version == "" {
		p.Version = l("app.kubernetes.io/version")
	}
	return p
}

func firstOf(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// principal is the peer's SPIFFE ID in trust domain td.
func (p *Peer) principal(td string) string {
	if p == nil || p.Namespace == "" || p.ServiceAccount == "" || td == "" {
		return unknown
	}
	return "spiffe://" + td + "/ns/" + p.Namespace + "/sa/" + p.ServiceAccount
}

// local is this proxy's own identity and its encodings for the exchange,
// computed once per node.
type local struct {
	peer   *Peer
	header string // base64 of the serialized metadata Struct
	id     string
	wire   []byte // the TCP exchange's header and Any
	td     string // trust domain ("cluster.local" unless the node says)
}

var locals sync.Map // *corev3.Node → *local

func localFor(node *corev3.Node) *local {
	if v, ok := locals.Load(node); ok {
		return v.(*local)
	}
	md := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	src := node.GetMetadata().GetFields()
	for _, k := range exchangedKeys {
		if v, ok := src[k]; ok {
			md.Fields[k] = v
		}
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(md)
	l := &local{peer: peerFromStruct(node.GetId(), md), header: base64.StdEncoding.EncodeToString(b), id: node.GetId(), td: "cluster.local"}
	if td := src["TRUST_DOMAIN"].GetStringValue(); td != "" {
		l.td = td
	}
	// The TCP exchange carries Istio's shape: the metadata and the id
	// under the header names.
	wrapped := &structpb.Struct{Fields: map[string]*structpb.Value{
		"x-envoy-peer-metadata":    structpb.NewStructValue(md),
		"x-envoy-peer-metadata-id": structpb.NewStringValue(node.GetId()),
	}}
	a, _ := anypb.New(wrapped)
	ab, _ := proto.MarshalOptions{Deterministic: true}.Marshal(a)
	l.wire = appendExchangeHeader(nil, uint32(len(ab)))
	l.wire = append(l.wire, ab...)
	v, _ := locals.LoadOrStore(node, l)
	return v.(*local)
}

// peerCache interns decoded peers by their header value, so a request
// from a known peer costs one map read and no decoding. It is dropped
// wholesale when it reaches peerCacheMax (peers churn with pods).
type peerCacheT struct {
	m sync.Map // string → *Peer
	n atomic.Int64
}

const peerCacheMax = 4096

var peerCache peerCacheT

func (c *peerCacheT) fromHeader(id, h string) *Peer {
	if v, ok := c.m.Load(h); ok {
		return v.(*Peer)
	}
	b, err := base64.StdEncoding.DecodeString(h)
	if err != nil {
		return nil
	}
	var md structpb.Struct
	if proto.Unmarshal(b, &md) != nil {
		return nil
	}
	return c.store(h, peerFromStruct(id, &md))
}

func (c *peerCacheT) store(k string, p *Peer) *Peer {
	if c.n.Add(1) > peerCacheMax {
		c.m.Clear()
		c.n.Store(1)
	}
	v, _ := c.m.LoadOrStore(k, p)
	return v.(*Peer)
}

// fromExchange decodes the Any of a TCP exchange: Istio's shape (metadata
// under "x-envoy-peer-metadata") or the bare metadata Struct.
func (c *peerCacheT) fromExchange(b []byte) *Peer {
	if v, ok := c.m.Load(string(b)); ok {
		return v.(*Peer)
	}
	var a anypb.Any
	if proto.Unmarshal(b, &a) != nil {
		return nil
	}
	var s structpb.Struct
	if a.UnmarshalTo(&s) != nil {
		return nil
	}
	md, id := &s, ""
	if inner := s.GetFields()["x-envoy-peer-metadata"].GetStructValue(); inner != nil {
		md = inner
		id = s.GetFields()["x-envoy-peer-metadata-id"].GetStringValue()
	}
	return c.store(string(b), peerFromStruct(id, md))
}

// certPrincipals caches the SPIFFE URI SAN of peer certificates, so the
// request path does not format a URL per request.
var certPrincipals sync.Map // *x509.Certificate → string

func certPrincipal(certs []*x509.Certificate) string {
	if len(certs) == 0 {
		return ""
	}
	c := certs[0]
	if v, ok := certPrincipals.Load(c); ok {
		return v.(string)
	}
	p := ""
	for _, u := range c.URIs {
		if u.Scheme == "spiffe" {
			p = u.String()
			break
		}
	}
	if n := countPrincipals.Add(1); n > peerCacheMax {
		certPrincipals.Clear()
		countPrincipals.Store(0)
	}
	certPrincipals.Store(c, p)
	return p
}

var countPrincipals atomic.Int64

// trustDomain is the trust domain of a SPIFFE ID, "" when it is none.
func trustDomain(principal string) string {
	rest, ok := strings.CutPrefix(principal, "spiffe://")
	if !ok {
		return ""
	}
	td, _, _ := strings.Cut(rest, "/")
	return td
}

// endpointPeer reads an endpoint's filter_metadata.istio.workload
// ("name;namespace;canonical service;canonical revision;cluster", as
// istiod writes it into EDS) as a peer, remembered per metadata object
// (a host keeps its metadata until EDS replaces it); nil without it.
func endpointPeer(md *corev3.Metadata) *Peer {
	if md == nil {
		return nil
	}
	if v, ok := endpointPeers.Load(md); ok {
		p, _ := v.(*Peer)
		return p
	}
	var p *Peer
	w := md.GetFilterMetadata()["istio"].GetFields()["workload"].GetStringValue()
	if parts := strings.Split(w, ";"); len(parts) == 5 && parts[0] != "" {
		p = &Peer{Workload: parts[0], Name: parts[0], Namespace: parts[1],
			CanonicalService: parts[2], CanonicalRevision: parts[3], Cluster: parts[4]}
	}
	if endpointPeerCount.Add(1) > peerCacheMax {
		endpointPeers.Clear()
		endpointPeerCount.Store(1)
	}
	if p == nil {
		endpointPeers.Store(md, (*Peer)(nil))
	} else {
		endpointPeers.Store(md, p)
	}
	return p
}

var (
	endpointPeers     sync.Map // *corev3.Metadata → *Peer
	endpointPeerCount atomic.Int64
)
