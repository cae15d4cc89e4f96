package extauthz

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

const (
	checkPath = "/envoy.service.auth.v3.Authorization/Check"
	// defaultTimeout is Envoy's for grpc_service and http_service.
	defaultTimeout = 200 * time.Millisecond
	// maxResponseBytes bounds what an authorizer may send back.
	maxResponseBytes = 4 << 20
)

// grpcService calls envoy.service.auth.v3.Authorization/Check through a
// cluster of the proxy over HTTP/2, as Envoy's envoy_grpc client does.
type grpcService struct {
	clusters           core.ClusterSet
	cluster, authority string
	timeout            time.Duration
	initialMetadata    [][2]string
	// Request shaping (HTTP filter only).
	allowed, disallowed *headerMatcher // allowed nil: all headers
	encodeRaw           bool
	packAsBytes         bool
	metadataNamespaces  []string
	includePeerCert     bool
	includeTLSSession   bool
	ingestMetadata      bool
}

func compileGRPC(g *corev3.GrpcService, clusters core.ClusterSet) (*grpcService, error) {
	eg := g.GetEnvoyGrpc()
	if eg == nil {
		return nil, errors.New("envoy_grpc: is required; skiff-proxy reaches authorizers through its own clusters (google_grpc is not supported)")
	}
	if eg.GetClusterName() == "" {
		return nil, errors.New("envoy_grpc.cluster_name: is required")
	}
	s := &grpcService{clusters: clusters, cluster: eg.GetClusterName(), authority: eg.GetAuthority(), timeout: defaultTimeout, ingestMetadata: true}
	if s.authority == "" {
		s.authority = s.cluster
	}
	if t := g.GetTimeout(); t != nil {
		if err := t.CheckValid(); err != nil || t.AsDuration() < 0 {
			return nil, errors.New("timeout: must be a non-negative duration")
		}
		// Envoy: 0 means no timeout.
		s.timeout = t.AsDuration()
	}
	for i, h := range g.GetInitialMetadata() {
		if h.GetKey() == "" {
			return nil, fmt.Errorf("initial_metadata[%d].key: is required", i)
		}
		s.initialMetadata = append(s.initialMetadata, [2]string{h.GetKey(), h.GetValue()})
	}
	return s, nil
}

func (g *grpcService) check(ctx context.Context, in *checkInput) *response {
	cr := g.buildRequest(in)
	out, err := g.call(ctx, cr)
	if err != nil {
		return errorResponse(err)
	}
	return g.toResponse(out)
}

// toResponse maps a CheckResponse as Envoy's gRPC client does: status OK
// allows, anything else denies (403 unless denied_response says).
func (g *grpcService) toResponse(out *authv3.CheckResponse) *response {
	r := &response{}
	if er := out.GetErrorResponse(); er != nil {
		r.verdict, r.err, r.customErrResp = verdictError, errors.New("the authorizer answered error_response"), true
		r.status = int(er.GetStatus().GetCode())
		if r.status <= 0 {
			r.status = http.StatusForbidden
		}
		r.clientHeaders = opsFrom(er.GetHeaders(), false)
		r.body = er.GetBody()
		return r
	}
	if out.GetStatus().GetCode() == 0 {
		r.verdict = verdictOK
		if ok := out.GetOkResponse(); ok != nil {
			r.upstream = opsFrom(ok.GetHeaders(), false)
			r.remove = ok.GetHeadersToRemove()
			r.onSuccess = opsFrom(ok.GetResponseHeadersToAdd(), true)
			for _, q := range ok.GetQueryParametersToSet() {
				r.querySet = append(r.querySet, [2]string{q.GetKey(), q.GetValue()})
			}
			r.queryRemove = ok.GetQueryParametersToRemove()
		}
	} else {
		r.verdict, r.status = verdictDenied, http.StatusForbidden
		if d := out.GetDeniedResponse(); d != nil {
			r.clientHeaders = opsFrom(d.GetHeaders(), false)
			if c := int(d.GetStatus().GetCode()); c > 0 {
				r.status = c
			}
			r.body = d.GetBody()
		}
	}
	md := out.GetDynamicMetadata()
	if ok := out.GetOkResponse(); ok != nil && ok.GetDynamicMetadata() != nil { //nolint:staticcheck // the deprecated field still wins, as in Envoy
		md = ok.GetDynamicMetadata() //nolint:staticcheck
	}
	if g.ingestMetadata && len(md.GetFields()) > 0 {
		r.metadata = md.AsMap()
	}
	return r
}

// buildRequest fills the AttributeContext as Envoy's CheckRequestUtils.
func (g *grpcService) buildRequest(in *checkInput) *authv3.CheckRequest {
	ac := &authv3.AttributeContext{
		Source:            peerOf(in.conn, in.conn.RemoteAddr, true, g.includePeerCert),
		Destination:       peerOf(in.conn, in.conn.DestinationAddr(), false, false),
		ContextExtensions: in.ctxExt,
	}
	if g.includeTLSSession && in.conn.SNI != "" {
		ac.TlsSession = &authv3.AttributeContext_TLSSession{Sni: in.conn.SNI}
	}
	if r := in.req; r != nil {
		hr := &authv3.AttributeContext_HttpRequest{
			Id:       r.Header.Get("X-Request-Id"),
			Method:   r.Method,
			Path:     r.URL.RequestURI(),
			Host:     r.Host,
			Scheme:   scheme(r),
			Protocol: r.Proto,
			Size:     r.ContentLength,
		}
		if r.ProtoMajor == 2 {
			hr.Protocol = "HTTP/2"
		}
		g.fillHeaders(hr, r, in)
		if len(in.body) > 0 {
			if g.packAsBytes {
				hr.RawBody = in.body
			} else {
				hr.Body = string(in.body)
			}
		}
		ac.Request = &authv3.AttributeContext_Request{Time: timestamppb.Now(), Http: hr}
		if len(g.metadataNamespaces) > 0 && in.metadata != nil {
			for _, ns := range g.metadataNamespaces {
				if st := toStruct(in.metadata(ns)); st != nil {
					if ac.MetadataContext == nil {
						ac.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{}}
					}
					ac.MetadataContext.FilterMetadata[ns] = st
				}
			}
		}
	}
	return &authv3.CheckRequest{Attributes: ac}
}

// fillHeaders puts the request's headers, pseudo-headers first, in the
// check request: lower-case names, repeated values joined by commas
// (encode_raw_headers keeps them apart in header_map).
func (g *grpcService) fillHeaders(hr *authv3.AttributeContext_HttpRequest, r *http.Request, in *checkInput) {
	pseudo := [...][2]string{{":authority", r.Host}, {":method", r.Method}, {":path", r.URL.RequestURI()}, {":scheme", scheme(r)}}
	add := func(name, value string) {
		if g.disallowed.match(name) || (g.allowed != nil && !g.allowed.match(name)) {
			return
		}
		if g.encodeRaw {
			if hr.HeaderMap == nil {
				hr.HeaderMap = &corev3.HeaderMap{}
			}
			hr.HeaderMap.Headers = append(hr.HeaderMap.Headers, &corev3.HeaderValue{Key: name, RawValue: []byte(value)})
			return
		}
		if hr.Headers == nil {
			hr.Headers = make(map[string]string, len(r.Header)+len(pseudo))
		}
		if old, ok := hr.Headers[name]; ok {
			hr.Headers[name] = old + "," + value
		} else {
			hr.Headers[name] = value
		}
	}
	for _, p := range pseudo {
		add(p[0], p[1])
	}
	for k, vs := range r.Header {
		name := lower(k)
		for _, v := range vs {
			add(name, v)
		}
	}
	if in.partial || len(in.body) > 0 {
		add("x-envoy-auth-partial-body", strconv.FormatBool(in.partial))
	}
}

// call sends one unary Check over the cluster: a length-prefixed message
// on an HTTP/2 POST, the answer's status in grpc-status.
func (g *grpcService) call(ctx context.Context, cr *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	var cl core.Cluster
	if g.clusters != nil {
		cl = g.clusters.Cluster(g.cluster)
	}
	if cl == nil {
		return nil, fmt.Errorf("ext_authz cluster %q is unknown", g.cluster)
	}
	h := cl.ChooseHost(&core.LBContext{})
	if h == nil {
		return nil, fmt.Errorf("ext_authz cluster %q has no healthy host", g.cluster)
	}
	if !cl.AcquireRequest() {
		return nil, fmt.Errorf("ext_authz cluster %q: max_requests circuit breaker is open", g.cluster)
	}
	defer cl.ReleaseRequest()
	frame := make([]byte, 5, 5+proto.Size(cr))
	frame, err := proto.MarshalOptions{}.MarshalAppend(frame, cr)
	if err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint32(frame[1:5], uint32(len(frame)-5))
	if g.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.timeout)
		defer cancel()
	}
	req := &http.Request{
		Method: http.MethodPost, URL: &url.URL{Scheme: "http", Host: g.authority, Path: checkPath},
		Proto: "HTTP/2.0", ProtoMajor: 2, Header: http.Header{
			"Content-Type": {"application/grpc"}, "Te": {"trailers"},
		},
		Host: g.authority, Body: io.NopCloser(bytes.NewReader(frame)), ContentLength: int64(len(frame)),
		GetBody: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(frame)), nil },
	}
	if g.timeout > 0 {
		req.Header["Grpc-Timeout"] = []string{strconv.FormatInt(g.timeout.Milliseconds(), 10) + "m"}
	}
	for _, kv := range g.initialMetadata {
		req.Header.Add(kv[0], kv[1])
	}
	req = req.WithContext(ctx)
	cs := cl.Stats()
	cs.RqTotal.Inc()
	resp, err := h.RoundTrip(req)
	if err != nil {
		h.Observe(0, err)
		if ctx.Err() != nil {
			cs.RqTimeout.Inc()
			return nil, fmt.Errorf("ext_authz cluster %q: no answer within %v", g.cluster, g.timeout)
		}
		return nil, fmt.Errorf("ext_authz cluster %q: %w", g.cluster, err)
	}
	defer resp.Body.Close()
	cs.CountStatus(resp.StatusCode)
	h.Observe(resp.StatusCode, nil)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("ext_authz cluster %q answered HTTP %d to a gRPC call", g.cluster, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("ext_authz cluster %q: reading the answer: %w", g.cluster, err)
	}
	st := resp.Header.Get("Grpc-Status")
	if st == "" {
		st = resp.Trailer.Get("Grpc-Status")
	}
	if st != "0" {
		msg := resp.Header.Get("Grpc-Message") + resp.Trailer.Get("Grpc-Message")
		if st == "" {
			return nil, fmt.Errorf("ext_authz cluster %q: answer without grpc-status", g.cluster)
		}
		return nil, fmt.Errorf("ext_authz cluster %q: grpc-status %s %s", g.cluster, st, msg)
	}
	if len(body) < 5 || body[0] != 0 || int(binary.BigEndian.Uint32(body[1:5])) != len(body)-5 {
		return nil, fmt.Errorf("ext_authz cluster %q: malformed or compressed gRPC message", g.cluster)
	}
	out := &authv3.CheckResponse{}
	if err := proto.Unmarshal(body[5:], out); err != nil {
		return nil, fmt.Errorf("ext_authz cluster %q: decoding CheckResponse: %w", g.cluster, err)
	}
	return out, nil
}

// peerOf is one side of the connection: its address and, from the TLS
// state, its principal (URI SAN, else DNS SAN, else subject) and, for the
// source when asked, its certificate URL-encoded PEM.
func peerOf(ci *core.ConnInfo, addr net.Addr, source, withCert bool) *authv3.AttributeContext_Peer {
	p := &authv3.AttributeContext_Peer{Address: sockAddr(addr)}
	if !source || ci.TLS == nil || len(ci.TLS.PeerCertificates) == 0 {
		return p
	}
	p.Principal = principal(ci.TLS)
	if withCert {
		pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ci.TLS.PeerCertificates[0].Raw})
		p.Certificate = url.QueryEscape(string(pemBytes))
	}
	return p
}

func principal(cs *tls.ConnectionState) string {
	c := cs.PeerCertificates[0]
	if len(c.URIs) > 0 {
		return c.URIs[0].String()
	}
	if len(c.DNSNames) > 0 {
		return c.DNSNames[0]
	}
	return c.Subject.String()
}

func sockAddr(a net.Addr) *corev3.Address {
	if a == nil {
		return nil
	}
	host, port := a.String(), 0
	if ta, ok := a.(*net.TCPAddr); ok {
		host, port = ta.IP.String(), ta.Port
	} else if h, p, err := net.SplitHostPort(a.String()); err == nil {
		host = h
		port, _ = strconv.Atoi(p)
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}

func scheme(r *http.Request) string {
	if p := r.Header.Get("X-Forwarded-Proto"); p != "" {
		return strings.ToLower(p)
	}
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// toStruct converts dynamic metadata as filters store it to a Struct;
// nil when it cannot.
func toStruct(v any) *structpb.Struct {
	switch m := v.(type) {
	case nil:
		return nil
	case *structpb.Struct:
		return m
	case map[string]any:
		st, err := structpb.NewStruct(m)
		if err != nil {
			return nil
		}
		return st
	case map[string]string:
		st := &structpb.Struct{Fields: make(map[string]*structpb.Value, len(m))}
		for k, s := range m {
			st.Fields[k] = structpb.NewStringValue(s)
		}
		return st
	}
	return nil
}
