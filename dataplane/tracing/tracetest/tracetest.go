// Package tracetest runs the trace collectors tests send spans to: a real
// OTLP gRPC server (opentelemetry.proto.collector.trace.v1.TraceService),
// an OTLP/HTTP receiver and a Zipkin v2 JSON receiver, all on 127.0.0.1
// and gone when the test ends.
package tracetest

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Span is a received span in one shape for every protocol.
type Span struct {
	TraceID, SpanID, ParentID string // hex; ParentID "" for a root span
	Name                      string
	Kind                      string // "SERVER" or "CLIENT"
	Service                   string // OTLP resource service.name or Zipkin localEndpoint
	Attrs                     map[string]string
	Start, End                time.Time
	Error                     bool
}

// Collector keeps every span it receives.
type Collector struct {
	// Addr is the collector's host:port.
	Addr string

	mu       sync.Mutex
	spans    []Span
	requests int
	arrived  chan struct{} // signalled (non-blocking) on each batch
}

func newCollector() *Collector { return &Collector{arrived: make(chan struct{}, 1)} }

func (c *Collector) add(ss []Span) {
	c.mu.Lock()
	c.spans = append(c.spans, ss...)
	c.requests++
	c.mu.Unlock()
	select {
	case c.arrived <- struct{}{}:
	default:
	}
}

// Spans returns a copy of the spans received so far.
func (c *Collector) Spans() []Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Span(nil), c.spans...)
}

// Requests is how many export calls arrived.
func (c *Collector) Requests() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.requests
}

// Wait returns the spans received once pred holds for them, failing the
// test if it does not within timeout.
func (c *Collector) Wait(t testing.TB, timeout time.Duration, what string, pred func([]Span) bool) []Span {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		ss := c.Spans()
		if pred(ss) {
			return ss
		}
		select {
		case <-c.arrived:
		case <-time.After(100 * time.Millisecond):
		case <-deadline.C:
			t.Fatalf("collector: %s not seen within %v; received %d spans:\n%s", what, timeout, len(ss), Dump(ss))
		}
	}
}

// Trace returns the spans of trace id, ordered by start time.
func Trace(ss []Span, id string) []Span {
	var out []Span
	for _, s := range ss {
		if s.TraceID == id {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}

// Dump renders spans one per line for failure messages.
func Dump(ss []Span) string {
	var b strings.Builder
	for _, s := range ss {
		fmt.Fprintf(&b, "  trace=%s span=%s parent=%s kind=%s service=%s name=%q node=%s\n",
			s.TraceID, s.SpanID, s.ParentID, s.Kind, s.Service, s.Name, s.Attrs["node_id"])
	}
	return b.String()
}

// StartOTLPGRPC runs a gRPC server implementing TraceService/Export on
// 127.0.0.1.
func StartOTLPGRPC(t testing.TB) *Collector {
	t.Helper()
	return StartOTLPGRPCOn(t, "127.0.0.1:0")
}

// StartOTLPGRPCOn is StartOTLPGRPC listening on addr (a local mesh's
// bridge address, for pods in network namespaces).
func StartOTLPGRPCOn(t testing.TB, addr string) *Collector {
	t.Helper()
	c := newCollector()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Addr = ln.Addr().String()
	srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "opentelemetry.proto.collector.trace.v1.TraceService",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Export", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var in []byte
			if err := dec(&in); err != nil {
				return nil, err
			}
			ss, err := decodeOTLP(in)
			if err != nil {
				return nil, err
			}
			c.add(ss)
			return []byte{}, nil // an empty ExportTraceServiceResponse
		}}},
	}, struct{}{})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return c
}

// StartOTLPHTTP runs an OTLP/HTTP receiver (POST /v1/traces, protobuf).
func StartOTLPHTTP(t testing.TB) *Collector {
	c := newCollector()
	c.Addr = serve(t, "/v1/traces", func(b []byte) error {
		ss, err := decodeOTLP(b)
		if err == nil {
			c.add(ss)
		}
		return err
	})
	return c
}

// StartZipkin runs a Zipkin v2 receiver (POST /api/v2/spans, JSON).
func StartZipkin(t testing.TB) *Collector {
	c := newCollector()
	c.Addr = serve(t, "/api/v2/spans", func(b []byte) error {
		var in []struct {
			TraceID       string                       `json:"traceId"`
			ID            string                       `json:"id"`
			ParentID      string                       `json:"parentId"`
			Name          string                       `json:"name"`
			Kind          string                       `json:"kind"`
			Timestamp     int64                        `json:"timestamp"`
			Duration      int64                        `json:"duration"`
			LocalEndpoint struct{ ServiceName string } `json:"localEndpoint"`
			Tags          map[string]string            `json:"tags"`
		}
		if err := json.Unmarshal(b, &in); err != nil {
			return err
		}
		var ss []Span
		for _, z := range in {
			st := time.UnixMicro(z.Timestamp)
			ss = append(ss, Span{TraceID: z.TraceID, SpanID: z.ID, ParentID: z.ParentID, Name: z.Name, Kind: z.Kind,
				Service: z.LocalEndpoint.ServiceName, Attrs: z.Tags, Start: st, End: st.Add(time.Duration(z.Duration) * time.Microsecond),
				Error: z.Tags["error"] == "true"})
		}
		c.add(ss)
		return nil
	})
	return c
}

func serve(t testing.TB, path string, handle func([]byte) error) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
		if err == nil {
			err = handle(b)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// decodeOTLP reads an ExportTraceServiceRequest: field 1 repeats
// ResourceSpans.
func decodeOTLP(b []byte) ([]Span, error) {
	var out []Span
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		if num != 1 || typ != protowire.BytesType {
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			b = b[m:]
			continue
		}
		v, m := protowire.ConsumeBytes(b)
		if m < 0 {
			return nil, protowire.ParseError(m)
		}
		b = b[m:]
		rs := &tracepb.ResourceSpans{}
		if err := proto.Unmarshal(v, rs); err != nil {
			return nil, err
		}
		svc := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				svc = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				sp := Span{TraceID: hex.EncodeToString(s.GetTraceId()), SpanID: hex.EncodeToString(s.GetSpanId()),
					ParentID: hex.EncodeToString(s.GetParentSpanId()), Name: s.GetName(), Service: svc,
					Attrs: map[string]string{}, Start: time.Unix(0, int64(s.GetStartTimeUnixNano())),
					End: time.Unix(0, int64(s.GetEndTimeUnixNano())), Error: s.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR}
				switch s.GetKind() {
				case tracepb.Span_SPAN_KIND_SERVER:
					sp.Kind = "SERVER"
				case tracepb.Span_SPAN_KIND_CLIENT:
					sp.Kind = "CLIENT"
				default:
					sp.Kind = s.GetKind().String()
				}
				for _, kv := range s.GetAttributes() {
					sp.Attrs[kv.GetKey()] = kv.GetValue().GetStringValue()
				}
				out = append(out, sp)
			}
		}
	}
	return out, nil
}

// rawCodec hands the gRPC message bytes through untouched, so the server
// needs no generated collector package.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.([]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*p = append([]byte(nil), data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }
