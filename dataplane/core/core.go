// Package core is the data plane's shared vocabulary: the few interfaces and
// value types through which listeners, the HTTP and TCP proxies and upstream
// clusters talk to each other. It owns no behaviour.
//
// The layers, outside in:
//
//	listener     accepts a connection, runs listener filters, picks a filter chain
//	connection   the chain's terminal network filter (tcp_proxy or the HTTP
//	             connection manager) serves the connection: a ConnHandler
//	stream       one HTTP request (routed, filtered, retried) or one TCP session
//	upstream     Cluster → Host → the host's connection pool
package core

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// ConnInfo is what the listener learned about a downstream connection before
// handing it to a filter chain.
type ConnInfo struct {
	ListenerName    string
	FilterChainName string
	LocalAddr       net.Addr
	RemoteAddr      net.Addr
	// OriginalDst is the pre-redirect destination (SO_ORIGINAL_DST) when the
	// listener uses the original_dst listener filter and the connection was
	// redirected; nil otherwise.
	OriginalDst *net.TCPAddr
	// Set by tls_inspector / http_inspector.
	SNI               string
	ALPN              []string // offered by the client
	TransportProtocol string   // "tls" or "raw_buffer"
	// TLS is the state after this proxy terminated TLS; nil for plaintext.
	TLS *tls.ConnectionState
	// meta is the connection's dynamic metadata by filter namespace, as
	// Envoy's stream info holds it: network filters write it (RBAC's
	// shadow result) for the filters after them (ext_authz's
	// filter_enabled_metadata). Empty on most connections.
	meta []connMeta
}

type connMeta struct {
	ns string
	v  any
}

// SetMetadata sets the connection's dynamic metadata of namespace ns.
// Only the connection's own goroutine calls it, before the terminal filter.
func (ci *ConnInfo) SetMetadata(ns string, v any) {
	for i := range ci.meta {
		if ci.meta[i].ns == ns {
			ci.meta[i].v = v
			return
		}
	}
	ci.meta = append(ci.meta, connMeta{ns: ns, v: v})
}

// Metadata returns the connection's dynamic metadata of namespace ns, nil
// when unset.
func (ci *ConnInfo) Metadata(ns string) any {
	for i := range ci.meta {
		if ci.meta[i].ns == ns {
			return ci.meta[i].v
		}
	}
	return nil
}

// DestinationAddr is the connection's destination as the client meant it:
// the original destination when redirected, else the local address.
func (ci *ConnInfo) DestinationAddr() net.Addr {
	if ci.OriginalDst != nil {
		return ci.OriginalDst
	}
	return ci.LocalAddr
}

// ConnHandler is a filter chain's terminal network filter. ServeConn runs in
// the connection's own goroutine and owns c: it closes it when done.
type ConnHandler interface {
	ServeConn(c net.Conn, info *ConnInfo)
}

// Drainer is implemented by handlers that can wind down gracefully: stop
// keep-alive on HTTP/1, send GOAWAY on HTTP/2, let TCP sessions finish.
type Drainer interface {
	Drain()
}

// ClusterSet finds clusters by name. It returns nil for an unknown cluster
// (a route then answers 503 with flag NC).
type ClusterSet interface {
	Cluster(name string) Cluster
}

// Cluster is an upstream cluster as the request path sees it.
type Cluster interface {
	Name() string
	// ChooseHost picks the host for one attempt; nil when no host is usable
	// (the caller answers 503 "no healthy upstream" with flag UH).
	ChooseHost(lb *LBContext) Host
	// AcquireRequest / AcquireRetry take a slot under the max_requests /
	// max_retries circuit breakers; false means the breaker is open.
	AcquireRequest() bool
	ReleaseRequest()
	AcquireRetry() bool
	ReleaseRetry()
	Stats() *ClusterStats
}

// Host is one upstream endpoint with its connection pool.
type Host interface {
	// Address is "ip:port" (or "hostname:port" for DNS clusters).
	Address() string
	// RoundTrip sends one request over the host's pool using the cluster's
	// protocol (HTTP/1.1 or HTTP/2) and transport socket. Failures are
	// *UpstreamError. The caller closes the response body.
	RoundTrip(req *http.Request) (*http.Response, error)
	// Dial opens a raw connection for tcp_proxy through the cluster's
	// transport socket; it counts against max_connections.
	Dial(ctx context.Context) (net.Conn, error)
	// Observe reports an attempt's outcome to outlier detection: an HTTP
	// status, or err for a connect failure, reset or timeout.
	Observe(status int, err error)
}

// LBContext carries what a load balancer may use to choose a host.
type LBContext struct {
	// Hash is the consistent-hash key computed from the route's hash
	// policies (ring hash, maglev); HasHash false means none applied.
	Hash    uint64
	HasHash bool
	// Downstream is the downstream connection; ORIGINAL_DST clusters take
	// the destination from it (or from OverrideHost).
	Downstream *ConnInfo
	// OverrideHost is "ip:port" from x-envoy-original-dst-host when the
	// ORIGINAL_DST cluster is configured to use it.
	OverrideHost string
	// Reject, if set, is consulted for each candidate (the retry
	// previous_hosts predicate); the balancer tries a few times to find one
	// it accepts before giving up and using a rejected one.
	Reject func(Host) bool
}

// UpstreamErrorKind classifies an upstream failure the way retry_on and
// response flags need it.
type UpstreamErrorKind int

const (
	ConnectFailure UpstreamErrorKind = iota + 1 // could not connect (UF)
	Overflow                                    // pool circuit breaker open: pending or connections (UO)
	Reset                                       // connection reset or closed before a full response (UR/UC)
	RefusedStream                               // HTTP/2 REFUSED_STREAM
	Timeout                                     // attempt timed out (UT)
)

// UpstreamError is the error type a Host returns.
type UpstreamError struct {
	Kind UpstreamErrorKind
	Err  error
}

func (e *UpstreamError) Error() string {
	var k string
	switch e.Kind {
	case ConnectFailure:
		k = "upstream connect error"
	case Overflow:
		k = "upstream overflow"
	case Reset:
		k = "upstream reset"
	case RefusedStream:
		k = "upstream refused stream"
	case Timeout:
		k = "upstream timeout"
	default:
		k = "upstream error"
	}
	if e.Err == nil {
		return k
	}
	return k + ": " + e.Err.Error()
}

func (e *UpstreamError) Unwrap() error { return e.Err }

// Secrets resolves SDS secret names (and static bootstrap secrets). Callers
// look a secret up at handshake time so a rotated secret applies to the next
// connection without rebuilding a listener or cluster.
type Secrets interface {
	Secret(name string) *tlsv3.Secret
}

// Clock exists so that timing-dependent code reads time in one place.
type Clock func() time.Time

// LookupMetadata walks path through dynamic metadata as filters store it
// (Go maps from decoded JSON, or protobuf Structs) and returns the value
// found there, a *structpb.Value turned into its Go form.
func LookupMetadata(v any, path []string) (any, bool) {
	if v == nil {
		return nil, false
	}
	for _, k := range path {
		var ok bool
		switch m := v.(type) {
		case map[string]any:
			v, ok = m[k]
		case map[string]string:
			v, ok = m[k]
		case *structpb.Struct:
			var f *structpb.Value
			f, ok = m.GetFields()[k]
			v = f
		case *structpb.Value:
			var f *structpb.Value
			f, ok = m.GetStructValue().GetFields()[k]
			v = f
		}
		if !ok {
			return nil, false
		}
	}
	if pv, ok := v.(*structpb.Value); ok {
		return pv.AsInterface(), true
	}
	return v, true
}
