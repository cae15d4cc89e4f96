package extauthz

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// Header names of Envoy's HTTP authorization protocol.
const (
	hdrHeadersToRemove = "x-envoy-auth-headers-to-remove"
	hdrPartialBody     = "x-envoy-auth-partial-body"
)

// httpService asks a plain HTTP authorizer through a cluster, as Envoy's
// RawHttpClientImpl: the original method and path, allowed headers, no
// body unless with_request_body.
type httpService struct {
	clusters     core.ClusterSet
	cluster      string
	timeout      time.Duration
	pathPrefix   string
	pathOverride string
	// request: allowed always holds Envoy's defaults (host, :method,
	// :path, content-length, authorization).
	allowed, disallowed *headerMatcher
	headersToAdd        [][2]string
	// response
	upstream, upstreamAppend *headerMatcher
	client                   *headerMatcher // nil: every header but host
	clientOnSuccess          *headerMatcher
	toMetadata               *headerMatcher
}

func compileHTTPService(hs *extauthzv3.HttpService, top *extauthzv3.ExtAuthz, clusters core.ClusterSet) (*httpService, error) {
	su := hs.GetServerUri()
	if su == nil {
		return nil, errors.New("server_uri: is required")
	}
	if su.GetCluster() == "" {
		return nil, errors.New("server_uri.cluster: is required (the cluster the authorizer is reached through)")
	}
	if _, err := url.Parse(su.GetUri()); err != nil {
		return nil, fmt.Errorf("server_uri.uri: %v", err)
	}
	s := &httpService{clusters: clusters, cluster: su.GetCluster(), timeout: defaultTimeout,
		pathPrefix: hs.GetPathPrefix(), pathOverride: hs.GetPathOverride()}
	if t := su.GetTimeout(); t != nil {
		if err := t.CheckValid(); err != nil || t.AsDuration() < 0 {
			return nil, errors.New("server_uri.timeout: must be a non-negative duration")
		}
		s.timeout = t.AsDuration()
	}
	if s.pathPrefix != "" && !strings.HasPrefix(s.pathPrefix, "/") {
		return nil, fmt.Errorf("path_prefix: %q must begin with /", s.pathPrefix)
	}
	if s.pathPrefix != "" && s.pathOverride != "" {
		return nil, errors.New("path_override: only one of path_prefix and path_override may be set")
	}
	if hs.GetRetryPolicy() != nil {
		return nil, errors.New("retry_policy: is not supported by skiff-proxy; remove it (the check is not retried)")
	}
	allowed := top.GetAllowedHeaders()
	if allowed == nil {
		allowed = hs.GetAuthorizationRequest().GetAllowedHeaders() //nolint:staticcheck // the deprecated field Istio emits
	}
	var err error
	if s.allowed, err = compileHeaders(allowed, "authorization", ":method", ":path", "host", ":authority", "content-length"); err != nil {
		return nil, fmt.Errorf("authorization_request.allowed_headers.%w", err)
	}
	if s.disallowed, err = compileHeaders(top.GetDisallowedHeaders()); err != nil {
		return nil, fmt.Errorf("disallowed_headers.%w", err)
	}
	for i, h := range hs.GetAuthorizationRequest().GetHeadersToAdd() {
		if h.GetKey() == "" {
			return nil, fmt.Errorf("authorization_request.headers_to_add[%d].key: is required", i)
		}
		s.headersToAdd = append(s.headersToAdd, [2]string{h.GetKey(), h.GetValue()})
	}
	ar := hs.GetAuthorizationResponse()
	for _, m := range []struct {
		dst   **headerMatcher
		list  *matcherv3.ListStringMatcher
		field string
	}{
		{&s.upstream, ar.GetAllowedUpstreamHeaders(), "allowed_upstream_headers"},
		{&s.upstreamAppend, ar.GetAllowedUpstreamHeadersToAppend(), "allowed_upstream_headers_to_append"},
		{&s.clientOnSuccess, ar.GetAllowedClientHeadersOnSuccess(), "allowed_client_headers_on_success"},
		{&s.toMetadata, ar.GetDynamicMetadataFromHeaders(), "dynamic_metadata_from_headers"},
	} {
		if *m.dst, err = compileHeaders(m.list); err != nil {
			return nil, fmt.Errorf("authorization_response.%s.%w", m.field, err)
		}
	}
	if len(ar.GetAllowedClientHeaders().GetPatterns()) > 0 {
		// Envoy adds these to a non-empty list.
		if s.client, err = compileHeaders(ar.GetAllowedClientHeaders(), "www-authenticate", "location", "content-length"); err != nil {
			return nil, fmt.Errorf("authorization_response.allowed_client_headers.%w", err)
		}
	}
	return s, nil
}

func (s *httpService) check(ctx context.Context, in *checkInput) *response {
	var cl core.Cluster
	if s.clusters != nil {
		cl = s.clusters.Cluster(s.cluster)
	}
	if cl == nil {
		return errorResponse(fmt.Errorf("ext_authz cluster %q is unknown", s.cluster))
	}
	h := cl.ChooseHost(&core.LBContext{})
	if h == nil {
		return errorResponse(fmt.Errorf("ext_authz cluster %q has no healthy host", s.cluster))
	}
	if !cl.AcquireRequest() {
		return errorResponse(fmt.Errorf("ext_authz cluster %q: max_requests circuit breaker is open", s.cluster))
	}
	defer cl.ReleaseRequest()
	if s.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
		defer cancel()
	}
	req := s.buildRequest(ctx, in)
	cs := cl.Stats()
	cs.RqTotal.Inc()
	resp, err := h.RoundTrip(req)
	if err != nil {
		h.Observe(0, err)
		if ctx.Err() != nil {
			cs.RqTimeout.Inc()
			return errorResponse(fmt.Errorf("ext_authz cluster %q: no answer within %v", s.cluster, s.timeout))
		}
		return errorResponse(fmt.Errorf("ext_authz cluster %q: %w", s.cluster, err))
	}
	defer resp.Body.Close()
	cs.CountStatus(resp.StatusCode)
	h.Observe(resp.StatusCode, nil)
	if resp.StatusCode >= 500 {
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBytes))
		return errorResponse(fmt.Errorf("ext_authz cluster %q answered %d", s.cluster, resp.StatusCode))
	}
	if resp.StatusCode == http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBytes))
		return s.okResponse(resp.Header)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return errorResponse(fmt.Errorf("ext_authz cluster %q: reading the denial: %w", s.cluster, err))
	}
	r := &response{verdict: verdictDenied, status: resp.StatusCode, body: string(body)}
	for k, vs := range resp.Header {
		name := lower(k)
		if hopByHop(name) || name == hdrHeadersToRemove {
			continue
		}
		if s.client == nil && name == "host" || s.client != nil && !s.client.match(name) {
			continue
		}
		for i, v := range vs {
			act := corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
			if i > 0 {
				act = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
			}
			r.clientHeaders = append(r.clientHeaders, headerOp{name: name, value: v, action: act})
		}
	}
	r.metadata = s.metadataFrom(resp.Header)
	return r
}

func (s *httpService) okResponse(hdr http.Header) *response {
	r := &response{verdict: verdictOK}
	for k, vs := range hdr {
		name := lower(k)
		if name == hdrHeadersToRemove {
			for _, v := range vs {
				for _, n := range strings.Split(v, ",") {
					if n = strings.TrimSpace(n); n != "" {
						r.remove = append(r.remove, lower(n))
					}
				}
			}
			continue
		}
		// Envoy drops these from an OK before matching.
		switch name {
		case "date", "content-length", "content-type", "x-envoy-upstream-service-time":
			continue
		}
		for _, v := range vs {
			if s.upstream.match(name) {
				r.upstream = append(r.upstream, headerOp{name: name, value: v, action: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD})
			}
			if s.upstreamAppend.match(name) {
				r.upstream = append(r.upstream, headerOp{name: name, value: v, action: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD})
			}
			if s.clientOnSuccess.match(name) {
				r.onSuccess = append(r.onSuccess, headerOp{name: name, value: v, action: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD})
			}
		}
	}
	r.metadata = s.metadataFrom(hdr)
	return r
}

func (s *httpService) metadataFrom(hdr http.Header) map[string]any {
	if s.toMetadata == nil {
		return nil
	}
	var md map[string]any
	for k, vs := range hdr {
		if name := lower(k); s.toMetadata.match(name) && len(vs) > 0 {
			if md == nil {
				md = map[string]any{}
			}
			md[name] = vs[0]
		}
	}
	return md
}

// buildRequest is the check request: the original method, the path with
// path_prefix in front (or path_override), the allowed headers, and the
// buffered body if any.
func (s *httpService) buildRequest(ctx context.Context, in *checkInput) *http.Request {
	r := in.req
	path := r.URL.RequestURI()
	switch {
	case s.pathOverride != "":
		path = s.pathOverride
	case s.pathPrefix != "":
		path = s.pathPrefix + path
	}
	u := &url.URL{Scheme: "http", Host: r.Host, Opaque: path}
	if !strings.HasPrefix(path, "/") {
		u.Opaque = "/" + path
	}
	hdr := make(http.Header, 4)
	for k, vs := range r.Header {
		name := lower(k)
		if name == "content-length" || s.disallowed.match(name) || !s.allowed.match(name) {
			continue
		}
		hdr[k] = vs
	}
	for _, kv := range s.headersToAdd {
		hdr.Set(kv[0], kv[1])
	}
	if in.partial || len(in.body) > 0 {
		hdr.Set(hdrPartialBody, strconv.FormatBool(in.partial))
	}
	req := (&http.Request{
		Method: r.Method, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: hdr, Host: r.Host, ContentLength: int64(len(in.body)), Body: http.NoBody,
	}).WithContext(ctx)
	if len(in.body) > 0 {
		body := in.body
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	return req
}

func hopByHop(name string) bool {
	switch name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer", "content-length":
		return true
	}
	return false
}
