package extauthz

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"

	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"golang.org/x/net/http/httpguts"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/dataplane/hcm"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// Type URLs and names of the HTTP filter.
const (
	HTTPTypeURL         = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
	HTTPPerRouteTypeURL = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
	// HTTPFilterName is the filter's name and the dynamic metadata
	// namespace of what the authorizer returns.
	HTTPFilterName = "envoy.filters.http.ext_authz"
	// FailureModeAllowedHeader is added upstream when an error was let
	// through (failure_mode_allow_header_add).
	FailureModeAllowedHeader = "X-Envoy-Auth-Failure-Mode-Allowed"
)

func init() { hcm.RegisterFilter(HTTPTypeURL, newHTTPFilter) }

// httpConfig is a compiled ExtAuthz.
type httpConfig struct {
	svc            service
	grpc           bool
	failOpen       bool
	failOpenHeader bool
	statusOnError  int
	withBody       bool
	maxBody        int
	partialBody    bool
	validate       bool
	enabledPct     uint32 // of 1e6; 1e6 when filter_enabled is unset
	enabledMeta    *metadataMatcher
	denyAtDisable  bool
	maxDeniedBody  int
}

// counters are one scope's ext_authz stats.
type counters struct {
	ok, denied, errored, failOpen, disabled, invalid *stats.Counter
}

func newCounters(sc *stats.Scope) counters {
	return counters{ok: sc.Counter("ok"), denied: sc.Counter("denied"), errored: sc.Counter("error"),
		failOpen: sc.Counter("failure_mode_allowed"), disabled: sc.Counter("disabled"), invalid: sc.Counter("invalid")}
}

type httpFilter struct {
	name     string
	cfg      *httpConfig
	perRoute hcm.PerRouteCache[*extauthzv3.ExtAuthzPerRoute]
	st       counters
	store    *stats.Store
	byClust  sync.Map // route cluster name → *counters
	log      *slog.Logger
}

func newHTTPFilter(fc hcm.FilterConfig) (hcm.Filter, error) {
	pb := &extauthzv3.ExtAuthz{}
	if fc.TypedConfig != nil {
		if err := fc.TypedConfig.UnmarshalTo(pb); err != nil {
			return nil, fmt.Errorf("typed_config: %w", err)
		}
	}
	cfg, err := compileHTTP(pb, fc.Clusters)
	if err != nil {
		return nil, err
	}
	st := fc.Stats
	if st == nil {
		st = stats.New()
	}
	flat := "http." + fc.StatPrefix + ".ext_authz"
	if p := pb.GetStatPrefix(); p != "" {
		flat += "." + p
	}
	f := &httpFilter{name: fc.Name, cfg: cfg, store: st, log: fc.Logger,
		st: newCounters(st.Scope(flat, "http.ext_authz", stats.Tag{Name: "envoy_http_conn_manager_prefix", Value: fc.StatPrefix}))}
	if f.name == "" {
		f.name = HTTPFilterName
	}
	if f.log == nil {
		f.log = slog.Default()
	}
	return func(next hcm.Handler) hcm.Handler {
		return hcm.HandlerFunc(func(s *hcm.Stream) { f.serve(s, next) })
	}, nil
}

// compileHTTP validates an ExtAuthz; errors name the field.
func compileHTTP(pb *extauthzv3.ExtAuthz, clusters core.ClusterSet) (*httpConfig, error) {
	if v := pb.GetTransportApiVersion(); v != 0 && v.String() != "V3" {
		return nil, fmt.Errorf("transport_api_version: %s is not supported; use V3", v)
	}
	switch {
	case pb.GetClearRouteCache():
		return nil, errors.New("clear_route_cache: is not supported by skiff-proxy (routes are chosen before HTTP filters run); remove it")
	case pb.GetShadowMode():
		return nil, errors.New("shadow_mode: is not supported by skiff-proxy; remove it")
	case pb.GetDecoderHeaderMutationRules() != nil:
		return nil, errors.New("decoder_header_mutation_rules: is not supported by skiff-proxy; remove it")
	}
	c := &httpConfig{
		failOpen: pb.GetFailureModeAllow(), failOpenHeader: pb.GetFailureModeAllowHeaderAdd(),
		statusOnError: http.StatusForbidden, validate: pb.GetValidateMutations(),
		enabledPct: 1e6, maxDeniedBody: int(pb.GetMaxDeniedResponseBodyBytes()),
	}
	if s := pb.GetStatusOnError(); s != nil {
		if s.GetCode() < 100 || s.GetCode() > 599 {
			return nil, fmt.Errorf("status_on_error.code: %d is not an HTTP status", s.GetCode())
		}
		c.statusOnError = int(s.GetCode())
	}
	switch {
	case pb.GetGrpcService() != nil:
		g, err := compileGRPC(pb.GetGrpcService(), clusters)
		if err != nil {
			return nil, fmt.Errorf("grpc_service.%w", err)
		}
		if g.allowed, err = compileHeaders(pb.GetAllowedHeaders()); err != nil {
			return nil, fmt.Errorf("allowed_headers.%w", err)
		}
		if g.disallowed, err = compileHeaders(pb.GetDisallowedHeaders()); err != nil {
			return nil, fmt.Errorf("disallowed_headers.%w", err)
		}
		g.encodeRaw = pb.GetEncodeRawHeaders()
		g.packAsBytes = pb.GetWithRequestBody().GetPackAsBytes()
		g.metadataNamespaces = pb.GetMetadataContextNamespaces()
		g.includePeerCert = pb.GetIncludePeerCertificate()
		g.includeTLSSession = pb.GetIncludeTlsSession()
		if e := pb.GetEnableDynamicMetadataIngestion(); e != nil {
			g.ingestMetadata = e.GetValue()
		}
		c.svc, c.grpc = g, true
	case pb.GetHttpService() != nil:
		h, err := compileHTTPService(pb.GetHttpService(), pb, clusters)
		if err != nil {
			return nil, fmt.Errorf("http_service.%w", err)
		}
		c.svc = h
	default:
		return nil, errors.New("services: one of grpc_service or http_service is required")
	}
	if wb := pb.GetWithRequestBody(); wb != nil {
		c.withBody, c.maxBody, c.partialBody = true, int(wb.GetMaxRequestBytes()), wb.GetAllowPartialMessage()
		if c.maxBody == 0 {
			return nil, errors.New("with_request_body.max_request_bytes: must be greater than 0")
		}
	}
	if fe := pb.GetFilterEnabled(); fe != nil {
		c.enabledPct = fraction(fe.GetDefaultValue())
	}
	if m := pb.GetFilterEnabledMetadata(); m != nil {
		mm, err := compileMetadata(m)
		if err != nil {
			return nil, fmt.Errorf("filter_enabled_metadata.%w", err)
		}
		c.enabledMeta = mm
	}
	c.denyAtDisable = pb.GetDenyAtDisable().GetDefaultValue().GetValue()
	return c, nil
}

// fraction is a FractionalPercent in parts per million.
func fraction(fp *typev3.FractionalPercent) uint32 {
	n := uint64(fp.GetNumerator())
	switch fp.GetDenominator() {
	case typev3.FractionalPercent_HUNDRED:
		n *= 10000
	case typev3.FractionalPercent_TEN_THOUSAND:
		n *= 100
	}
	return uint32(min(n, 1e6))
}

func parsePerRoute(a *anypb.Any) (*extauthzv3.ExtAuthzPerRoute, error) {
	pr := &extauthzv3.ExtAuthzPerRoute{}
	if err := a.UnmarshalTo(pr); err != nil {
		return nil, fmt.Errorf("typed_per_filter_config: want %s: %v", HTTPPerRouteTypeURL, err)
	}
	if cs := pr.GetCheckSettings(); cs != nil {
		if cs.GetServiceOverride() != nil {
			return nil, errors.New("typed_per_filter_config: check_settings: grpc_service/http_service overrides are not supported by skiff-proxy")
		}
		if cs.GetWithRequestBody() != nil {
			return nil, errors.New("typed_per_filter_config: check_settings.with_request_body: is not supported by skiff-proxy; set it on the filter")
		}
	}
	return pr, nil
}

func (f *httpFilter) serve(s *hcm.Stream, next hcm.Handler) {
	cfg := f.cfg
	var ctxExt map[string]string
	withBody := cfg.withBody
	if pr, ok, err := f.perRoute.Get(s, f.name, parsePerRoute); ok {
		if err != nil {
			// A broken per-route config must not open the route.
			f.log.Error("ext_authz: invalid per-route config; denying", "route", routeName(s), "error", err)
			f.st.errored.Inc()
			s.SendLocalReply(cfg.statusOnError, "", core.UnauthorizedExternalService)
			return
		}
		if pr.GetDisabled() {
			next.ServeStream(s)
			return
		}
		cs := pr.GetCheckSettings()
		ctxExt = cs.GetContextExtensions()
		if cs.GetDisableRequestBodyBuffering() {
			withBody = false
		}
	}
	cc := f.clusterCounters(s)
	if !f.enabled(s) {
		f.st.disabled.Inc()
		if cc != nil {
			cc.disabled.Inc()
		}
		if cfg.denyAtDisable {
			s.SendLocalReply(cfg.statusOnError, "", core.UnauthorizedExternalService)
			return
		}
		next.ServeStream(s)
		return
	}
	in := checkInput{req: s.Req, conn: s.Conn, ctxExt: ctxExt, metadata: s.Metadata}
	if in.conn == nil {
		in.conn = &noConn
	}
	if withBody && s.Req.Body != nil && s.Req.Body != http.NoBody {
		body, partial, tooBig, err := readBody(s.Req, cfg.maxBody, cfg.partialBody)
		switch {
		case err != nil:
			s.SendLocalReply(http.StatusBadRequest, "", core.ResponseFlags(0))
			return
		case tooBig:
			s.SendLocalReply(http.StatusRequestEntityTooLarge, "Payload Too Large", core.ResponseFlags(0))
			return
		}
		in.body, in.partial = body, partial
	}
	r := cfg.svc.check(s.Req.Context(), &in)
	if r.metadata != nil {
		s.SetMetadata(HTTPFilterName, r.metadata)
	}
	switch r.verdict {
	case verdictOK:
		if cfg.validate && !validMutations(r) {
			f.st.invalid.Inc()
			if cc != nil {
				cc.invalid.Inc()
			}
			s.SendLocalReply(http.StatusInternalServerError, "", core.ResponseFlags(0))
			return
		}
		f.st.ok.Inc()
		if cc != nil {
			cc.ok.Inc()
		}
		applyOK(s, r)
		next.ServeStream(s)
	case verdictDenied:
		f.st.denied.Inc()
		if cc != nil {
			cc.denied.Inc()
		}
		f.sendDenied(s, r.status, r)
	default:
		f.st.errored.Inc()
		if cc != nil {
			cc.errored.Inc()
		}
		if cfg.failOpen {
			f.st.failOpen.Inc()
			if cc != nil {
				cc.failOpen.Inc()
			}
			if cfg.failOpenHeader {
				s.Req.Header[FailureModeAllowedHeader] = []string{"true"}
			}
			f.log.Debug("ext_authz: authorizer failed; allowed by failure_mode_allow", "error", r.err)
			next.ServeStream(s)
			return
		}
		f.log.Debug("ext_authz: authorizer failed; denying", "status", cfg.statusOnError, "error", r.err)
		if r.customErrResp {
			f.sendDenied(s, r.status, r)
			return
		}
		s.SendLocalReply(cfg.statusOnError, "", core.UnauthorizedExternalService)
	}
}

// enabled applies filter_enabled and filter_enabled_metadata.
func (f *httpFilter) enabled(s *hcm.Stream) bool {
	cfg := f.cfg
	if cfg.enabledPct < 1e6 && rand.Uint32N(1e6) >= cfg.enabledPct {
		return false
	}
	if m := cfg.enabledMeta; m != nil && !m.match(s.Metadata(m.filter)) {
		return false
	}
	return true
}

// sendDenied answers with the authorizer's status, headers and body.
func (f *httpFilter) sendDenied(s *hcm.Stream, status int, r *response) {
	h := s.Header()
	ct := ""
	for _, op := range r.clientHeaders {
		if op.name == "content-type" {
			ct = op.value
			continue
		}
		applyOp(h, op)
	}
	body := r.body
	if f.cfg.maxDeniedBody > 0 && len(body) > f.cfg.maxDeniedBody {
		body = body[:f.cfg.maxDeniedBody]
	}
	if ct == "" || body == "" || s.IsGRPC() {
		s.SendLocalReply(status, body, core.UnauthorizedExternalService)
		return
	}
	// Keep the authorizer's content type, as Envoy's local reply does
	// when the header is already set.
	s.Flags |= core.UnauthorizedExternalService
	h["Content-Type"] = []string{ct}
	h["Content-Length"] = []string{fmt.Sprint(len(body))}
	s.WriteHeader(status)
	if s.Req.Method != http.MethodHead {
		io.WriteString(s, body)
	}
}

// applyOK mutates the request on its way upstream and arranges the
// response headers the authorizer asked for.
func applyOK(s *hcm.Stream, r *response) {
	h := s.Req.Header
	for _, op := range r.upstream {
		if op.name == "host" || op.name == ":authority" {
			s.Req.Host = op.value
			continue
		}
		if strings.HasPrefix(op.name, ":") {
			continue
		}
		applyOp(h, op)
	}
	for _, n := range r.remove {
		if n == "host" || strings.HasPrefix(n, ":") {
			continue // as Envoy: these would make the request malformed
		}
		delete(h, http.CanonicalHeaderKey(n))
	}
	if len(r.querySet) > 0 || len(r.queryRemove) > 0 {
		q := s.Req.URL.Query()
		for _, k := range r.queryRemove {
			q.Del(k)
		}
		for _, kv := range r.querySet {
			q.Set(kv[0], kv[1])
		}
		s.Req.URL.RawQuery = q.Encode()
	}
	if len(r.onSuccess) > 0 {
		s.AddResponseHook(respHeaders(r.onSuccess))
	}
}

// respHeaders adds an OK's response headers to the upstream's response.
type respHeaders []headerOp

func (rh respHeaders) OnResponseHeaders(s *hcm.Stream, _ int) {
	h := s.Header()
	for _, op := range rh {
		applyOp(h, op)
	}
}

// validMutations is validate_mutations: header names and values an
// HTTP/1 or HTTP/2 peer would accept.
func validMutations(r *response) bool {
	for _, ops := range [][]headerOp{r.upstream, r.onSuccess} {
		for _, op := range ops {
			if !httpguts.ValidHeaderFieldName(strings.TrimPrefix(op.name, ":")) || !httpguts.ValidHeaderFieldValue(op.value) {
				return false
			}
		}
	}
	return true
}

// readBody buffers up to max bytes of the request body and puts them back
// in front of the rest. tooBig means the body is larger and partial
// messages are not allowed.
func readBody(r *http.Request, max int, allowPartial bool) (body []byte, partial, tooBig bool, err error) {
	buf := make([]byte, 0, min(max+1, 64<<10))
	lr := io.LimitReader(r.Body, int64(max)+1)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, rerr := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return nil, false, false, rerr
		}
	}
	if len(buf) > max {
		if !allowPartial {
			return nil, false, true, nil
		}
		partial = true
	}
	r.Body = &replayBody{r: io.MultiReader(bytes.NewReader(buf), r.Body), c: r.Body}
	if partial {
		return buf[:max], true, false, nil
	}
	return buf, false, false, nil
}

type replayBody struct {
	r io.Reader
	c io.Closer
}

func (b *replayBody) Read(p []byte) (int, error) { return b.r.Read(p) }
func (b *replayBody) Close() error               { return b.c.Close() }

// clusterCounters are the cluster.<route cluster>.ext_authz stats of the
// route's target cluster, nil when the route names none (weighted
// clusters are chosen later, by the router).
func (f *httpFilter) clusterCounters(s *hcm.Stream) *counters {
	if s.Route == nil || s.Route.Action == nil || s.Route.Action.Cluster == "" {
		return nil
	}
	name := s.Route.Action.Cluster
	if c, ok := f.byClust.Load(name); ok {
		return c.(*counters)
	}
	c := newCounters(f.store.Scope("cluster."+name+".ext_authz", "cluster.ext_authz", stats.Tag{Name: "cluster_name", Value: name}))
	v, _ := f.byClust.LoadOrStore(name, &c)
	return v.(*counters)
}

// noConn stands in for a stream without connection facts.
var noConn core.ConnInfo

func routeName(s *hcm.Stream) string {
	if s.Route == nil {
		return ""
	}
	return s.Route.Name
}
