package tracing

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// Export tuning. Envoy flushes every 5 s; a shorter interval makes a trace
// visible sooner at the same cost per span.
var (
	// FlushInterval is how long a finished span may wait for its batch.
	FlushInterval = time.Second
	// queueLen bounds the spans waiting for export; beyond it spans are
	// dropped and counted (spans_dropped).
	queueLen = 4096
	// maxBatch is the most spans one export carries.
	maxBatch = 512
	// sendTimeout bounds one export call when the config gives none.
	sendTimeout = 5 * time.Second
)

const otlpExportPath = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

// finished is a closed span waiting for export.
type finished struct {
	span *Span
	end  time.Time
	err  bool
}

// exporter batches spans of every tracer sharing one provider config and
// sends them from its own goroutine.
type exporter struct {
	key  regKey
	refs int // guarded by regMu

	q     chan *finished
	flush chan chan struct{}
	stop  chan struct{}
	done  chan struct{}
	send  func(ctx context.Context, batch []*finished) error

	sent, dropped, failed, timerFlushed *stats.Counter
}

type regKey struct {
	clusters core.ClusterSet
	cfg      string
}

var (
	regMu     sync.Mutex
	exporters = map[regKey]*exporter{}
)

// shared returns the running exporter for key, or starts one built by mk.
func shared(key regKey, st *stats.Store, prefix string, send func(ctx context.Context, batch []*finished) error) *exporter {
	regMu.Lock()
	defer regMu.Unlock()
	if e := exporters[key]; e != nil {
		e.refs++
		return e
	}
	sc := st.Scope("tracing."+prefix, "tracing_"+prefix)
	e := &exporter{
		key: key, refs: 1, q: make(chan *finished, queueLen), flush: make(chan chan struct{}),
		stop: make(chan struct{}), done: make(chan struct{}), send: send,
		sent: sc.Counter("spans_sent"), dropped: sc.Counter("spans_dropped"),
		failed: sc.Counter("reports_failed"), timerFlushed: sc.Counter("timer_flushed"),
	}
	exporters[key] = e
	go e.run()
	return e
}

func (e *exporter) enqueue(f *finished) {
	select {
	case e.q <- f:
	default:
		e.dropped.Inc()
	}
}

// flushNow exports everything queued so far and waits for it.
func (e *exporter) flushNow() {
	ack := make(chan struct{})
	select {
	case e.flush <- ack:
		<-ack
	case <-e.done:
	}
}

// release drops one reference; the last one flushes and stops the
// exporter.
func (e *exporter) release() {
	regMu.Lock()
	e.refs--
	last := e.refs == 0
	if last {
		delete(exporters, e.key)
	}
	regMu.Unlock()
	if last {
		close(e.stop)
		<-e.done
	}
}

func (e *exporter) run() {
	defer close(e.done)
	tick := time.NewTicker(FlushInterval)
	defer tick.Stop()
	var batch []*finished
	ship := func() {
		for len(batch) > 0 {
			n := min(len(batch), maxBatch)
			ctx, cancel := context.WithTimeout(context.Background(), sendTimeout)
			if err := e.send(ctx, batch[:n]); err != nil {
				e.failed.Inc()
			} else {
				e.sent.Add(uint64(n))
			}
			cancel()
			batch = batch[n:]
		}
		batch = nil
	}
	drain := func() {
		for {
			select {
			case f := <-e.q:
				batch = append(batch, f)
			default:
				return
			}
		}
	}
	for {
		select {
		case f := <-e.q:
			batch = append(batch, f)
			if len(batch) >= maxBatch {
				ship()
			}
		case <-tick.C:
			if len(batch) > 0 {
				e.timerFlushed.Inc()
				ship()
			}
		case ack := <-e.flush:
			drain()
			ship()
			close(ack)
		case <-e.stop:
			drain()
			ship()
			return
		}
	}
}

// target is where an exporter posts: a cluster of this proxy.
type target struct {
	clusters  core.ClusterSet
	cluster   string
	authority string
	path      string
	headers   [][2]string
	timeout   time.Duration
}

// post sends one request through the cluster and returns the response
// status, headers and (bounded) body.
func (t *target) post(ctx context.Context, hdr http.Header, body []byte, h2 bool) (*http.Response, []byte, error) {
	cl := t.clusters.Cluster(t.cluster)
	if cl == nil {
		return nil, nil, fmt.Errorf("cluster %q is unknown", t.cluster)
	}
	host := cl.ChooseHost(&core.LBContext{})
	if host == nil {
		return nil, nil, fmt.Errorf("cluster %q has no healthy host", t.cluster)
	}
	if !cl.AcquireRequest() {
		return nil, nil, fmt.Errorf("cluster %q: max_requests circuit breaker is open", t.cluster)
	}
	defer cl.ReleaseRequest()
	if t.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t.timeout)
		defer cancel()
	}
	for _, kv := range t.headers {
		hdr.Add(kv[0], kv[1])
	}
	req := &http.Request{
		Method: http.MethodPost, URL: &url.URL{Scheme: "http", Host: t.authority, Path: t.path},
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: hdr, Host: t.authority,
		Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
		GetBody: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil },
	}
	if h2 {
		req.Proto, req.ProtoMajor, req.ProtoMinor = "HTTP/2.0", 2, 0
	}
	req = req.WithContext(ctx)
	cs := cl.Stats()
	cs.RqTotal.Inc()
	resp, err := host.RoundTrip(req)
	if err != nil {
		host.Observe(0, err)
		return nil, nil, fmt.Errorf("cluster %q: %w", t.cluster, err)
	}
	defer resp.Body.Close()
	cs.CountStatus(resp.StatusCode)
	host.Observe(resp.StatusCode, nil)
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("cluster %q: reading the answer: %w", t.cluster, err)
	}
	return resp, b, nil
}

// authorityOf is the :authority for a cluster when the config names none.
// Envoy sends the cluster name itself; Istio's names
// ("outbound|4317||otel.istio-system.svc.cluster.local") are not valid
// HTTP/2 authorities, so such a name becomes its host:port.
func authorityOf(cluster string) string {
	parts := strings.Split(cluster, "|")
	if len(parts) == 4 && parts[3] != "" && parts[1] != "" {
		return parts[3] + ":" + parts[1]
	}
	return cluster
}

// otelExporter compiles OpenTelemetryConfig; errors start with the field.
func otelExporter(oc *tracev3.OpenTelemetryConfig, c Config, st *stats.Store) (*exporter, error) {
	svc := oc.GetServiceName()
	if svc == "" {
		svc = "unknown_service:envoy"
	}
	var send func(ctx context.Context, batch []*finished) error
	switch {
	case oc.GetGrpcService() != nil:
		g := oc.GetGrpcService()
		eg := g.GetEnvoyGrpc()
		if eg == nil {
			return nil, errors.New("grpc_service.envoy_grpc: is required; skiff-proxy reaches collectors through its own clusters (google_grpc is not supported)")
		}
		if eg.GetClusterName() == "" {
			return nil, errors.New("grpc_service.envoy_grpc.cluster_name: is required")
		}
		t := &target{clusters: c.Clusters, cluster: eg.GetClusterName(), authority: eg.GetAuthority(), path: otlpExportPath, timeout: g.GetTimeout().AsDuration()}
		if t.authority == "" {
			t.authority = authorityOf(t.cluster)
		}
		for i, h := range g.GetInitialMetadata() {
			if h.GetKey() == "" {
				return nil, fmt.Errorf("grpc_service.initial_metadata[%d].key: is required", i)
			}
			t.headers = append(t.headers, [2]string{h.GetKey(), h.GetValue()})
		}
		send = func(ctx context.Context, batch []*finished) error {
			msg := otlpRequest(svc, batch)
			frame := make([]byte, 5, 5+len(msg))
			binary.BigEndian.PutUint32(frame[1:5], uint32(len(msg)))
			frame = append(frame, msg...)
			resp, _, err := t.post(ctx, http.Header{"Content-Type": {"application/grpc"}, "Te": {"trailers"}}, frame, true)
			if err != nil {
				return err
			}
			gs := resp.Header.Get("Grpc-Status")
			if gs == "" {
				gs = resp.Trailer.Get("Grpc-Status")
			}
			if resp.StatusCode != http.StatusOK || gs != "0" {
				return fmt.Errorf("OTLP export: HTTP %d grpc-status %q", resp.StatusCode, gs)
			}
			return nil
		}
	case oc.GetHttpService() != nil:
		hs := oc.GetHttpService()
		hu := hs.GetHttpUri()
		if hu.GetCluster() == "" {
			return nil, errors.New("http_service.http_uri.cluster: is required")
		}
		raw := hu.GetUri()
		if raw != "" && !strings.Contains(raw, "://") {
			raw = "http://" + raw // Istio writes "host/path"
		}
		u, err := url.Parse(raw)
		if err != nil || hu.GetUri() == "" {
			return nil, fmt.Errorf("http_service.http_uri.uri: %q is not a URL (e.g. http://collector:4318/v1/traces)", hu.GetUri())
		}
		t := &target{clusters: c.Clusters, cluster: hu.GetCluster(), authority: u.Host, path: u.Path, timeout: hu.GetTimeout().AsDuration()}
		if t.authority == "" {
			t.authority = t.cluster
		}
		if t.path == "" {
			t.path = "/v1/traces"
		}
		for i, h := range hs.GetRequestHeadersToAdd() {
			if h.GetHeader().GetKey() == "" {
				return nil, fmt.Errorf("http_service.request_headers_to_add[%d].header.key: is required", i)
			}
			t.headers = append(t.headers, [2]string{h.GetHeader().GetKey(), h.GetHeader().GetValue()})
		}
		send = func(ctx context.Context, batch []*finished) error {
			resp, _, err := t.post(ctx, http.Header{"Content-Type": {"application/x-protobuf"}}, otlpRequest(svc, batch), false)
			if err != nil {
				return err
			}
			if resp.StatusCode/100 != 2 {
				return fmt.Errorf("OTLP/HTTP export: HTTP %d", resp.StatusCode)
			}
			return nil
		}
	default:
		return nil, errors.New("grpc_service: one of grpc_service or http_service is required")
	}
	if c.Clusters == nil {
		return nil, errors.New("grpc_service: no cluster manager to reach the collector")
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(oc)
	return shared(regKey{c.Clusters, "otel\x00" + string(b)}, st, "opentelemetry", send), nil
}

// otlpRequest encodes an ExportTraceServiceRequest (field 1: repeated
// ResourceSpans) by hand: the collector package's generated gateway code
// would pull in a dependency the proxy does not need.
func otlpRequest(service string, batch []*finished) []byte {
	spans := make([]*tracepb.Span, 0, len(batch))
	for _, f := range batch {
		spans = append(spans, otlpSpan(f))
	}
	rs := &tracepb.ResourceSpans{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{strAttr("service.name", service)}},
		ScopeSpans: []*tracepb.ScopeSpans{{
			Scope: &commonpb.InstrumentationScope{Name: "skiff-proxy"},
			Spans: spans,
		}},
	}
	b, _ := proto.Marshal(rs)
	out := protowire.AppendTag(nil, 1, protowire.BytesType)
	return protowire.AppendBytes(out, b)
}

func otlpSpan(f *finished) *tracepb.Span {
	sp := f.span
	s := &tracepb.Span{
		TraceId: append([]byte(nil), sp.traceID[:]...), SpanId: append([]byte(nil), sp.spanID[:]...),
		TraceState: sp.tracestate, Name: sp.name,
		StartTimeUnixNano: uint64(sp.start.UnixNano()), EndTimeUnixNano: uint64(f.end.UnixNano()),
		Kind: tracepb.Span_SPAN_KIND_CLIENT,
	}
	if sp.t.server {
		s.Kind = tracepb.Span_SPAN_KIND_SERVER
	}
	if sp.hasParent {
		s.ParentSpanId = append([]byte(nil), sp.parentID[:]...)
	}
	for _, a := range sp.attrs {
		s.Attributes = append(s.Attributes, strAttr(a.k, a.v))
	}
	if f.err {
		s.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR}
	}
	return s
}

func strAttr(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

// zipkinExporter compiles ZipkinConfig.
func zipkinExporter(zc *tracev3.ZipkinConfig, c Config, st *stats.Store) (*exporter, error) {
	if zc.GetCollectorCluster() == "" {
		return nil, errors.New("collector_cluster: is required")
	}
	if zc.GetCollectorEndpoint() == "" || zc.GetCollectorEndpoint()[0] != '/' {
		return nil, fmt.Errorf("collector_endpoint: %q must be a path such as /api/v2/spans", zc.GetCollectorEndpoint())
	}
	switch zc.GetCollectorEndpointVersion() {
	case tracev3.ZipkinConfig_HTTP_JSON:
	default:
		return nil, fmt.Errorf("collector_endpoint_version: %v is not supported; use HTTP_JSON", zc.GetCollectorEndpointVersion())
	}
	if c.Clusters == nil {
		return nil, errors.New("collector_cluster: no cluster manager to reach the collector")
	}
	t := &target{clusters: c.Clusters, cluster: zc.GetCollectorCluster(), authority: zc.GetCollectorHostname(), path: zc.GetCollectorEndpoint(), timeout: sendTimeout}
	if t.authority == "" {
		t.authority = authorityOf(t.cluster)
	}
	// Envoy's Zipkin spans carry the node's cluster (Istio sets it to
	// "<canonical service>.<namespace>") as the local service name.
	svc := c.Node.GetCluster()
	if svc == "" {
		svc = "unknown"
	}
	send := func(ctx context.Context, batch []*finished) error {
		body, err := zipkinJSON(svc, batch)
		if err != nil {
			return err
		}
		resp, _, err := t.post(ctx, http.Header{"Content-Type": {"application/json"}}, body, false)
		if err != nil {
			return err
		}
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("zipkin report: HTTP %d", resp.StatusCode)
		}
		return nil
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(zc)
	return shared(regKey{c.Clusters, "zipkin\x00" + svc + "\x00" + string(b)}, st, "zipkin", send), nil
}

type zipkinSpan struct {
	TraceID       string            `json:"traceId"`
	ID            string            `json:"id"`
	ParentID      string            `json:"parentId,omitempty"`
	Name          string            `json:"name"`
	Kind          string            `json:"kind"`
	Timestamp     int64             `json:"timestamp"`
	Duration      int64             `json:"duration"`
	LocalEndpoint zipkinEndpoint    `json:"localEndpoint"`
	Tags          map[string]string `json:"tags,omitempty"`
}

type zipkinEndpoint struct {
	ServiceName string `json:"serviceName"`
}

func zipkinJSON(svc string, batch []*finished) ([]byte, error) {
	out := make([]zipkinSpan, 0, len(batch))
	for _, f := range batch {
		sp := f.span
		z := zipkinSpan{
			TraceID: sp.traceIDHex(), ID: hex.EncodeToString(sp.spanID[:]), Name: strings.ToLower(sp.name),
			Kind: "CLIENT", Timestamp: sp.start.UnixMicro(), Duration: max(f.end.Sub(sp.start).Microseconds(), 1),
			LocalEndpoint: zipkinEndpoint{ServiceName: svc}, Tags: make(map[string]string, len(sp.attrs)),
		}
		if sp.t.server {
			z.Kind = "SERVER"
		}
		if sp.hasParent {
			z.ParentID = hex.EncodeToString(sp.parentID[:])
		}
		for _, a := range sp.attrs {
			z.Tags[a.k] = a.v
		}
		out = append(out, z)
	}
	return json.Marshal(out)
}
