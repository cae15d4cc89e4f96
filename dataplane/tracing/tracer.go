// Package tracing owns distributed tracing in skiff-proxy as Envoy's HTTP
// connection manager does it (HttpConnectionManager.tracing): one span per
// request at every proxy (SERVER on inbound and gateway listeners, CLIENT
// on sidecar outbound ones), the context extracted from W3C traceparent or
// B3 and injected toward the upstream in the provider's format, sampling
// (random, client, overall; a propagated decision wins), Envoy's span tags
// and custom tags, and export off the request path in batches: OTLP over
// gRPC or HTTP (envoy.tracers.opentelemetry) or Zipkin v2 JSON
// (envoy.tracers.zipkin), always through the proxy's own clusters.
package tracing

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tagv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/dataplane/hcm/accesslog"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// Provider type URLs (HttpConnectionManager.tracing.provider.typed_config).
const (
	OpenTelemetryType = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
	ZipkinType        = "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig"
)

// Config is what a connection manager hands to New.
type Config struct {
	Tracing   *hcmv3.HttpConnectionManager_Tracing
	Clusters  core.ClusterSet
	Node      *corev3.Node
	Direction corev3.TrafficDirection
	Stats     *stats.Store // nil: a private store
}

// Tracer is the compiled tracing of one connection manager. It is
// immutable; the exporter behind it is shared by every tracer with the
// same provider config in the process.
type Tracer struct {
	w3c        bool // OpenTelemetry: W3C context; else Zipkin: B3
	server     bool // span kind SERVER (else CLIENT)
	random     float64
	client     float64
	overall    float64
	maxPathLen int
	short      bool // Zipkin without trace_id_128bit: new trace ids are 64-bit
	static     []attr
	custom     []customTag
	exp        *exporter

	closeOnce sync.Once
}

type attr struct{ k, v string }

type customTag struct {
	tag    string
	header string // request header (canonical); "" for a constant
	value  string // literal, environment value, or the header's default
	// format is a "value" tag with command operators, rendered when the
	// request is done.
	format *accesslog.Formatter
}

// New compiles c.Tracing. Errors name the field under tracing.
func New(c Config) (*Tracer, error) {
	tc := c.Tracing
	p := tc.GetProvider()
	if p == nil {
		return nil, errors.New("provider: is required (envoy.tracers.opentelemetry or envoy.tracers.zipkin)")
	}
	t := &Tracer{
		random:     percent(tc.GetRandomSampling().GetValue(), tc.GetRandomSampling() != nil),
		client:     percent(tc.GetClientSampling().GetValue(), tc.GetClientSampling() != nil),
		overall:    percent(tc.GetOverallSampling().GetValue(), tc.GetOverallSampling() != nil),
		maxPathLen: 256,
	}
	if v := tc.GetMaxPathTagLength(); v != nil {
		t.maxPathLen = int(v.GetValue())
	}
	for name, pct := range map[string]float64{"random_sampling": t.random, "client_sampling": t.client, "overall_sampling": t.overall} {
		if pct < 0 || pct > 100 {
			return nil, fmt.Errorf("%s.value: %v is not a percentage between 0 and 100", name, pct)
		}
	}
	nodeID := c.Node.GetId()
	// Sidecars follow the listener's direction; a gateway's listeners are
	// OUTBOUND in Istio's config but its span is the server side of the
	// request it receives.
	t.server = c.Direction != corev3.TrafficDirection_OUTBOUND || strings.HasPrefix(nodeID, "router~")
	t.static = append(t.static, attr{"component", "proxy"})
	if nodeID != "" {
		t.static = append(t.static, attr{"node_id", nodeID})
	}
	if z := c.Node.GetLocality().GetZone(); z != "" {
		t.static = append(t.static, attr{"zone", z})
	}
	for i, ct := range tc.GetCustomTags() {
		ctag, err := compileTag(ct)
		if err != nil {
			return nil, fmt.Errorf("custom_tags[%d] %q: %w", i, ct.GetTag(), err)
		}
		t.custom = append(t.custom, ctag)
	}
	st := c.Stats
	if st == nil {
		st = stats.New()
	}
	ptc := p.GetTypedConfig()
	switch ptc.GetTypeUrl() {
	case OpenTelemetryType:
		oc := &tracev3.OpenTelemetryConfig{}
		if err := ptc.UnmarshalTo(oc); err != nil {
			return nil, fmt.Errorf("provider.typed_config: %w", err)
		}
		t.w3c = true
		exp, err := otelExporter(oc, c, st)
		if err != nil {
			return nil, fmt.Errorf("provider.typed_config.%w", err)
		}
		t.exp = exp
	case ZipkinType:
		zc := &tracev3.ZipkinConfig{}
		if err := ptc.UnmarshalTo(zc); err != nil {
			return nil, fmt.Errorf("provider.typed_config: %w", err)
		}
		t.short = !zc.GetTraceId_128Bit()
		exp, err := zipkinExporter(zc, c, st)
		if err != nil {
			return nil, fmt.Errorf("provider.typed_config.%w", err)
		}
		t.exp = exp
	default:
		return nil, fmt.Errorf("provider.typed_config: unsupported tracer %q (supported: %s, %s)", ptc.GetTypeUrl(), OpenTelemetryType, ZipkinType)
	}
	return t, nil
}

// percent is a sampling percentage; unset means 100 %, Envoy's default.
func percent(v float64, set bool) float64 {
	if !set {
		return 100
	}
	return v
}

func compileTag(ct *tagv3.CustomTag) (customTag, error) {
	if ct.GetTag() == "" {
		return customTag{}, errors.New("tag: is required")
	}
	c := customTag{tag: ct.GetTag()}
	switch {
	case ct.GetLiteral() != nil:
		c.value = ct.GetLiteral().GetValue()
	case ct.GetEnvironment() != nil:
		e := ct.GetEnvironment()
		if e.GetName() == "" {
			return c, errors.New("environment.name: is required")
		}
		// Envoy reads the environment once, when the config loads.
		c.value = os.Getenv(e.GetName())
		if c.value == "" {
			c.value = e.GetDefaultValue()
		}
	case ct.GetRequestHeader() != nil:
		h := ct.GetRequestHeader()
		if h.GetName() == "" {
			return c, errors.New("request_header.name: is required")
		}
		c.header, c.value = http.CanonicalHeaderKey(h.GetName()), h.GetDefaultValue()
	case ct.GetValue() != "":
		v := ct.GetValue()
		if !strings.Contains(v, "%") {
			c.value = v
			break
		}
		f, err := accesslog.NewTextFormatter(v)
		if err != nil {
			return c, fmt.Errorf("value: %w", err)
		}
		c.format = f
	case ct.GetMetadata() != nil:
		return c, errors.New("metadata: metadata tags are not supported by skiff-proxy; use literal, environment or request_header")
	default:
		return c, errors.New("one of literal, environment, request_header or value is required")
	}
	return c, nil
}

// Span is the span of one request. It is owned by the request's stream
// until Finish hands it to the exporter.
type Span struct {
	t          *Tracer
	traceID    [16]byte
	short      bool
	spanID     [8]byte
	parentID   [8]byte
	hasParent  bool
	sampled    bool
	tracestate string
	name       string
	start      time.Time
	attrs      []attr
}

// Start opens the span of request r (headers already sanitised by the
// connection manager, x-request-id set). operation is the route's
// decorator, "" when it has none. The propagated sampling decision wins
// over the local one, as Envoy's tracers do, so one trace is all or none.
func (t *Tracer) Start(r *http.Request, start time.Time, operation string) *Span {
	sp := &Span{t: t, start: start}
	h := r.Header
	var sc spanContext
	var ok bool
	if t.w3c {
		if sc, ok = extractW3C(h); !ok {
			sc, ok = extractB3(h)
		}
	} else if sc, ok = extractB3(h); !ok {
		sc, ok = extractW3C(h)
	}
	decision := sampleDefer
	if ok {
		sp.traceID, sp.short, sp.parentID, sp.hasParent, sp.tracestate = sc.traceID, sc.short, sc.spanID, true, sc.tracestate
		decision = sc.sampled
	} else {
		decision = b3SingleSampling(h)
		binary.BigEndian.PutUint64(sp.traceID[8:], nonZero())
		if t.short {
			sp.short = true
		} else {
			binary.BigEndian.PutUint64(sp.traceID[:8], rand.Uint64())
		}
	}
	binary.BigEndian.PutUint64(sp.spanID[:], nonZero())
	switch decision {
	case sampleYes:
		sp.sampled = true
	case sampleNo:
	default:
		sp.sampled = t.decide(h)
	}
	if operation == "" {
		operation = r.Host + pathOnly(r)
	}
	sp.name = operation
	if sp.sampled {
		sp.attrs = t.startAttrs(r, sp.attrs)
	}
	return sp
}

// decide is Envoy's local decision: forced (x-envoy-force-trace, kept
// only on internal requests), client-requested (x-client-trace-id, at
// client_sampling), else random_sampling keyed by x-request-id so every
// proxy of a request decides alike; overall_sampling caps the result.
func (t *Tracer) decide(h http.Header) bool {
	var traced bool
	switch {
	case first(h, hdrForceTrace) != "":
		traced = true
	case first(h, hdrClientTrace) != "":
		traced = rand.Float64()*100 < t.client
	default:
		traced = t.random >= 100 || hashPercent(first(h, hdrRequestID)) < t.random
	}
	return traced && (t.overall >= 100 || rand.Float64()*100 < t.overall)
}

// hashPercent maps a request id to [0, 100) stably; without one it is
// random.
func hashPercent(id string) float64 {
	if id == "" {
		return rand.Float64() * 100
	}
	f := fnv.New64a()
	f.Write([]byte(id))
	return float64(f.Sum64()%10000) / 100
}

func nonZero() uint64 {
	for {
		if v := rand.Uint64(); v != 0 {
			return v
		}
	}
}

func pathOnly(r *http.Request) string {
	if r.URL == nil {
		return ""
	}
	return r.URL.Path
}

func (t *Tracer) startAttrs(r *http.Request, a []attr) []attr {
	a = append(a, t.static...)
	h := r.Header
	if id := first(h, hdrRequestID); id != "" {
		a = append(a, attr{"guid:x-request-id", id})
	}
	if id := first(h, hdrClientTrace); id != "" {
		a = append(a, attr{"guid:x-client-trace-id", id})
	}
	scheme := first(h, "X-Forwarded-Proto")
	if scheme == "" {
		scheme = "http"
	}
	u := scheme + "://" + r.Host
	if r.URL != nil {
		u += r.URL.RequestURI()
	}
	if t.maxPathLen > 0 && len(u) > t.maxPathLen {
		u = u[:t.maxPathLen]
	}
	proto := r.Proto
	if r.ProtoMajor == 2 {
		proto = "HTTP/2"
	}
	dc := first(h, hdrDownstreamSC)
	if dc == "" {
		dc = "-"
	}
	a = append(a, attr{"http.url", u}, attr{"http.method", r.Method}, attr{"http.protocol", proto},
		attr{"downstream_cluster", dc}, attr{"user_agent", orDash(first(h, "User-Agent"))})
	for _, c := range t.custom {
		if c.format != nil {
			continue // rendered in Finish
		}
		v := c.value
		if c.header != "" {
			if hv := first(h, c.header); hv != "" {
				v = hv
			} else if v == "" {
				continue
			}
		}
		a = append(a, attr{c.tag, v})
	}
	return a
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Inject writes the span's context into the request headers that go
// upstream, in the provider's format.
func (sp *Span) Inject(h http.Header) {
	if sp.t.w3c {
		sp.injectW3C(h)
	} else {
		sp.injectB3(h)
	}
}

// Sampled reports whether the span is recorded and exported.
func (sp *Span) Sampled() bool { return sp.sampled }

// TraceID is the trace id in hex (%TRACE_ID%), "" when not sampled.
func (sp *Span) TraceID() string {
	if !sp.sampled {
		return ""
	}
	return sp.traceIDHex()
}

func (sp *Span) traceIDHex() string {
	if sp.short {
		return hex.EncodeToString(sp.traceID[8:])
	}
	return hex.EncodeToString(sp.traceID[:])
}

// Finish closes the span with the request's outcome and queues it for
// export; it never blocks (a full queue drops the span and counts it).
func (sp *Span) Finish(e *accesslog.Entry) {
	if !sp.sampled {
		return
	}
	end := e.Start.Add(e.Duration)
	code := strconv.Itoa(e.Status)
	sp.attrs = append(sp.attrs,
		attr{"http.status_code", code},
		attr{"response_flags", e.Flags.String()},
		attr{"request_size", strconv.FormatInt(e.BytesReceived, 10)},
		attr{"response_size", strconv.FormatInt(e.BytesSent, 10)},
		attr{"upstream_cluster", orDash(e.UpstreamCluster)},
		attr{"upstream_cluster.name", orDash(e.UpstreamCluster)},
	)
	if e.Conn != nil && e.Conn.RemoteAddr != nil {
		sp.attrs = append(sp.attrs, attr{"peer.address", e.Conn.RemoteAddr.String()})
	}
	isErr := e.Status >= 500 || e.Status == 0
	if gs := first(e.RespHeader, "Grpc-Status"); gs != "" {
		sp.attrs = append(sp.attrs, attr{"grpc.status_code", gs})
	}
	if isErr {
		sp.attrs = append(sp.attrs, attr{"error", "true"})
	}
	for _, c := range sp.t.custom {
		if c.format != nil {
			sp.attrs = append(sp.attrs, attr{c.tag, string(c.format.Append(nil, e))})
		}
	}
	sp.t.exp.enqueue(&finished{span: sp, end: end, err: isErr})
}

// Flush exports what is queued and waits for it (drain, shutdown).
func (t *Tracer) Flush() { t.exp.flushNow() }

// Close flushes and releases the tracer's share of its exporter; the last
// tracer of an exporter stops it. Close is idempotent.
func (t *Tracer) Close() {
	t.closeOnce.Do(func() { t.exp.release() })
}
