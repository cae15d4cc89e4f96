package upstream

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

func TestHTTP1KeepAliveReuse(t *testing.T) {
	m, st := newTestManager(t)
	b := newBackend(t, "a", nil)
	cl := mustAdd(t, m, staticCluster("ka", ep{addr: b.addr()}))
	for i := range 50 {
		if r := send(cl, nil); r.err != nil || r.body != "a" {
			t.Fatalf("request %d: %+v", i, r)
		}
	}
	if n := b.accepted.Load(); n != 1 {
		t.Errorf("50 sequential requests used %d connections, want 1", n)
	}
	if n := st.CounterValue("cluster.ka.upstream_cx_total"); n != 1 {
		t.Errorf("upstream_cx_total = %d, want 1", n)
	}

	// max_requests_per_connection 10: 50 requests need 5 connections.
	b2 := newBackend(t, "b", nil)
	c := staticCluster("ka10", ep{addr: b2.addr()})
	c.TypedExtensionProtocolOptions = protocolOptions(t, &httpv3.HttpProtocolOptions{
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{MaxRequestsPerConnection: wrapperspb.UInt32(10)},
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{}}},
	})
	cl = mustAdd(t, m, c)
	for range 50 {
		if r := send(cl, nil); r.err != nil {
			t.Fatal(r.err)
		}
	}
	if n := b2.accepted.Load(); n != 5 {
		t.Errorf("max_requests_per_connection 10: 50 requests used %d connections, want 5", n)
	}
}

func TestHTTP1ServerClosedIdleConnectionIsRetried(t *testing.T) {
	m, _ := newTestManager(t)
	// The server closes every connection after answering, without saying
	// so: the pooled connection is dead when reused.
	b := newBackend(t, "a", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1")
		io.WriteString(w, "a")
		w.(http.Flusher).Flush()
		c, _, _ := w.(http.Hijacker).Hijack()
		c.Close()
	})
	cl := mustAdd(t, m, staticCluster("stale", ep{addr: b.addr()}))
	for i := range 5 {
		if r := send(cl, nil); r.err != nil || r.body != "a" {
			t.Fatalf("request %d: %+v", i, r)
		}
	}
}

func TestHTTP1IdleTimeoutClosesConnections(t *testing.T) {
	m, _ := newTestManager(t)
	b := newBackend(t, "a", nil)
	c := staticCluster("idle", ep{addr: b.addr()})
	c.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(200 * time.Millisecond)}
	cl := mustAdd(t, m, c)
	if r := send(cl, nil); r.err != nil {
		t.Fatal(r.err)
	}
	eventually(t, 5*time.Second, "idle connection closed by the pool", func() bool { return b.closed.Load() == 1 })
}

func TestHTTP1StreamingBodiesAndTrailers(t *testing.T) {
	m, _ := newTestManager(t)
	b := newBackend(t, "echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		body, _ := io.ReadAll(r.Body)
		w.Write(bytes.ToUpper(body))
		w.Header().Set("X-Sum", fmt.Sprint(len(body)))
	})
	cl := mustAdd(t, m, staticCluster("stream", ep{addr: b.addr()}))
	pr, pw := io.Pipe()
	go func() {
		for range 100 {
			pw.Write([]byte("abcdefghij"))
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", "http://svc/", pr)
	resp, err := cl.ChooseHost(nil).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != strings.Repeat("ABCDEFGHIJ", 100) {
		t.Errorf("chunked echo: got %d bytes %.20q...", len(got), got)
	}
	if resp.Trailer.Get("X-Sum") != "1000" {
		t.Errorf("trailer X-Sum = %q, want 1000", resp.Trailer.Get("X-Sum"))
	}
}

func h2Options(t *testing.T, maxStreams uint32) map[string]*anypb.Any {
	h2 := &corev3.Http2ProtocolOptions{}
	if maxStreams > 0 {
		h2.MaxConcurrentStreams = wrapperspb.UInt32(maxStreams)
	}
	return protocolOptions(t, &httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: h2}}},
	})
}

func protocolOptions(t *testing.T, po *httpv3.HttpProtocolOptions) map[string]*anypb.Any {
	a, err := anypb.New(po)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]*anypb.Any{httpProtocolOptionsName: a}
}

// newH2CBackend serves h2c; handler sees every request.
func newH2CBackend(t *testing.T, h http.HandlerFunc) *backend {
	b := &backend{name: "h2"}
	b.Server = httptest.NewUnstartedServer(h2c.NewHandler(h, &http2.Server{MaxConcurrentStreams: 1000}))
	b.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			b.accepted.Add(1)
		}
	}
	b.Start()
	t.Cleanup(b.Close)
	return b
}

func TestHTTP2Multiplexing(t *testing.T) {
	const n = 20
	var arrived atomic.Int64
	all := make(chan struct{})
	b := newH2CBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			http.Error(w, "want HTTP/2", 500)
			return
		}
		if arrived.Add(1) == n {
			close(all)
		}
		// Every request waits for all of them: they must be concurrent.
		select {
		case <-all:
		case <-time.After(10 * time.Second):
		}
		io.WriteString(w, "ok")
	})
	for _, tc := range []struct {
		name       string
		maxStreams uint32
		wantConns  int64
	}{{"unlimited", 0, 1}, {"max5", 5, 4}} {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := newTestManager(t)
			arrived.Store(0)
			all = make(chan struct{})
			acc := b.accepted.Load()
			c := staticCluster("h2"+tc.name, ep{addr: b.addr()})
			c.TypedExtensionProtocolOptions = h2Options(t, tc.maxStreams)
			cl := mustAdd(t, m, c)
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if r := send(cl, nil); r.err != nil || r.body != "ok" {
						errs <- fmt.Errorf("%+v", r)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if got := b.accepted.Load() - acc; got != tc.wantConns {
				t.Errorf("%d concurrent requests used %d connections, want %d", n, got, tc.wantConns)
			}
		})
	}
}

func TestHTTP2StreamingAndTrailers(t *testing.T) {
	m, _ := newTestManager(t)
	b := newH2CBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "Grpc-Status")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		buf := make([]byte, 5)
		for {
			// Echo each 5-byte message as it comes: a bidi stream.
			if _, err := io.ReadFull(r.Body, buf); err != nil {
				break
			}
			w.Write(buf)
			w.(http.Flusher).Flush()
		}
		w.Header().Set("Grpc-Status", "0")
	})
	c := staticCluster("grpc", ep{addr: b.addr()})
	c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{} //nolint:staticcheck // the legacy field still selects HTTP/2
	cl := mustAdd(t, m, c)
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", "http://svc/echo", pr)
	req.Header.Set("Content-Type", "application/grpc")
	resp, err := cl.ChooseHost(nil).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	for i := range 3 {
		msg := fmt.Sprintf("msg-%d", i)
		pw.Write([]byte(msg))
		if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %d: got %q, %v", i, buf, err)
		}
	}
	pw.Close()
	if rest, _ := io.ReadAll(resp.Body); len(rest) != 0 {
		t.Errorf("unexpected extra body %q", rest)
	}
	resp.Body.Close()
	if resp.Trailer.Get("Grpc-Status") != "0" {
		t.Errorf("trailer grpc-status = %q, want 0", resp.Trailer.Get("Grpc-Status"))
	}
}

func TestUseDownstreamProtocol(t *testing.T) {
	m, _ := newTestManager(t)
	b := newH2CBackend(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, r.ProtoMajor) })
	c := staticCluster("auto", ep{addr: b.addr()})
	c.TypedExtensionProtocolOptions = protocolOptions(t, &httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
			Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}},
	})
	cl := mustAdd(t, m, c)
	for _, major := range []int{1, 2} {
		req, _ := http.NewRequest("GET", "http://svc/", nil)
		req.ProtoMajor = major
		resp, err := cl.ChooseHost(nil).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(got) != fmt.Sprint(major) {
			t.Errorf("downstream HTTP/%d went upstream as HTTP/%s", major, got)
		}
	}
}

func TestCircuitBreakerOverflow(t *testing.T) {
	m, st := newTestManager(t)
	var inService, maxInService atomic.Int64
	b := newBackend(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		n := inService.Add(1)
		for cur := maxInService.Load(); n > cur && !maxInService.CompareAndSwap(cur, n); cur = maxInService.Load() {
		}
		time.Sleep(20 * time.Millisecond)
		inService.Add(-1)
		io.WriteString(w, "ok")
	})
	// Istio's circuit-breaking task: maxConnections 1,
	// http1MaxPendingRequests 1, three concurrent clients.
	c := staticCluster("cb", ep{addr: b.addr()})
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxConnections: wrapperspb.UInt32(1), MaxPendingRequests: wrapperspb.UInt32(1),
		MaxRequests: wrapperspb.UInt32(100), MaxRetries: wrapperspb.UInt32(1),
	}}}
	cl := mustAdd(t, m, c)
	var ok, overflow, other atomic.Int64
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				r := send(cl, nil)
				var ue *core.UpstreamError
				switch {
				case r.err == nil && r.status == 200:
					ok.Add(1)
				case errors.As(r.err, &ue) && ue.Kind == core.Overflow:
					overflow.Add(1)
					// A real client's next request is not instantaneous;
					// without a pause the overflowing clients spend all
					// their requests while one request is in service.
					time.Sleep(5 * time.Millisecond)
				default:
					other.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	// Overflowing clients fail fast and move on, so they burn through
	// their requests; what matters is both outcomes and nothing else.
	if other.Load() != 0 || overflow.Load() == 0 || ok.Load() < 5 {
		t.Errorf("ok=%d overflow=%d other=%d; want a share of 503-style overflows, some successes, nothing else", ok.Load(), overflow.Load(), other.Load())
	}
	if maxInService.Load() != 1 {
		t.Errorf("server saw %d concurrent requests with max_connections 1", maxInService.Load())
	}
	if got := st.CounterValue("cluster.cb.upstream_rq_pending_overflow"); got != uint64(overflow.Load()) {
		t.Errorf("upstream_rq_pending_overflow = %d, want %d", got, overflow.Load())
	}
	if st.CounterValue("cluster.cb.upstream_cx_overflow") == 0 {
		t.Errorf("upstream_cx_overflow = 0, want > 0")
	}
	if n := b.accepted.Load(); n != 1 {
		t.Errorf("server saw %d connections with max_connections 1", n)
	}

	// max_requests and max_retries are slot counters.
	if !cl.AcquireRetry() || cl.AcquireRetry() {
		t.Errorf("max_retries 1: want the first AcquireRetry to pass and the second to fail")
	}
	cl.ReleaseRetry()
	if !cl.AcquireRetry() {
		t.Errorf("AcquireRetry after ReleaseRetry failed")
	}
	if st.CounterValue("cluster.cb.upstream_rq_retry_overflow") != 1 {
		t.Errorf("upstream_rq_retry_overflow = %d, want 1", st.CounterValue("cluster.cb.upstream_rq_retry_overflow"))
	}
	for range 100 {
		if !cl.AcquireRequest() {
			t.Fatal("AcquireRequest failed under max_requests")
		}
	}
	if cl.AcquireRequest() {
		t.Errorf("AcquireRequest passed over max_requests 100")
	}
}

func TestPendingRequestGetsReleasedConnection(t *testing.T) {
	m, st := newTestManager(t)
	b := newBackend(t, "a", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(50 * time.Millisecond)
		io.WriteString(w, "a")
	})
	c := staticCluster("pend", ep{addr: b.addr()})
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxConnections: wrapperspb.UInt32(1), MaxPendingRequests: wrapperspb.UInt32(10),
	}}}
	cl := mustAdd(t, m, c)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := send(cl, nil); r.err != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d of 5 queued requests failed, want 0", failed.Load())
	}
	if st.CounterValue("cluster.pend.upstream_rq_pending_total") == 0 {
		t.Errorf("upstream_rq_pending_total = 0, want queued requests counted")
	}
	// A queued request whose caller gives up leaves the queue.
	block := make(chan struct{})
	b2 := newBackend(t, "b", func(w http.ResponseWriter, r *http.Request) { <-block })
	defer close(block)
	c2 := staticCluster("pend2", ep{addr: b2.addr()})
	c2.CircuitBreakers = c.CircuitBreakers
	cl2 := mustAdd(t, m, c2)
	h := cl2.ChooseHost(nil)
	go func() {
		req, _ := http.NewRequest("GET", "http://svc/", nil)
		if resp, err := h.RoundTrip(req); err == nil {
			resp.Body.Close()
		}
	}()
	eventually(t, 5*time.Second, "first request on the only connection", func() bool { return b2.accepted.Load() == 1 })
	req, _ := http.NewRequestWithContext(ctxTimeout(t, 100*time.Millisecond), "GET", "http://svc/", nil)
	_, err := h.RoundTrip(req)
	var ue *core.UpstreamError
	if !errors.As(err, &ue) || ue.Kind != core.Timeout {
		t.Errorf("queued request past its deadline: err = %v, want Timeout", err)
	}
	if st.CounterValue("cluster.pend2.upstream_rq_cancelled") != 1 {
		t.Errorf("upstream_rq_cancelled = %d, want 1", st.CounterValue("cluster.pend2.upstream_rq_cancelled"))
	}
}

func TestDialCountsAgainstMaxConnections(t *testing.T) {
	m, st := newTestManager(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go io.Copy(c, c)
		}
	}()
	c := staticCluster("tcp", ep{addr: ln.Addr().String()})
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: wrapperspb.UInt32(2)}}}
	cl := mustAdd(t, m, c)
	h := cl.ChooseHost(nil)
	ctx := ctxTimeout(t, 5*time.Second)
	c1, err1 := h.Dial(ctx)
	c2, err2 := h.Dial(ctx)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	c1.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c1, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo over dialed conn: %q %v", buf, err)
	}
	_, err = h.Dial(ctx)
	var ue *core.UpstreamError
	if !errors.As(err, &ue) || ue.Kind != core.Overflow {
		t.Fatalf("third Dial with max_connections 2: err = %v, want Overflow", err)
	}
	c1.Close()
	c1.Close() // a second Close must not free a second slot
	c3, err := h.Dial(ctx)
	if err != nil {
		t.Fatalf("Dial after Close: %v", err)
	}
	if _, err := h.Dial(ctx); err == nil {
		t.Fatal("double Close freed two slots")
	}
	c2.Close()
	c3.Close()
	if st.CounterValue("cluster.tcp.upstream_cx_overflow") != 2 {
		t.Errorf("upstream_cx_overflow = %d, want 2", st.CounterValue("cluster.tcp.upstream_cx_overflow"))
	}
}

func TestUpstreamTLSWithALPN(t *testing.T) {
	m, _ := newTestManager(t)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d %v", r.ProtoMajor, r.TLS != nil)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	tc, err := anypb.New(&tlsv3.UpstreamTlsContext{Sni: "example.com"})
	if err != nil {
		t.Fatal(err)
	}
	for _, proto := range []string{"h1", "h2"} {
		c := staticCluster("tls-"+proto, ep{addr: srv.Listener.Addr().String()})
		c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tc}}
		want := "1 true"
		if proto == "h2" {
			c.TypedExtensionProtocolOptions = h2Options(t, 0)
			want = "2 true"
		}
		cl := mustAdd(t, m, c)
		r := send(cl, nil)
		if r.err != nil || r.body != want {
			t.Errorf("%s over TLS: %+v, want body %q", proto, r, want)
		}
	}
}

func TestHTTP1UpgradeHandsOverConnection(t *testing.T) {
	m, _ := newTestManager(t)
	b := newBackend(t, "ws", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			w.WriteHeader(400)
			return
		}
		c, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		io.Copy(c, brw)
	})
	cl := mustAdd(t, m, staticCluster("upgrade", ep{addr: b.addr()}))
	req, _ := http.NewRequest("GET", "http://svc/ws", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "echo")
	resp, err := cl.ChooseHost(nil).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rw, ok := resp.Body.(io.ReadWriter)
	if resp.StatusCode != 101 || !ok {
		t.Fatalf("status %d, body %T: want 101 with a read-write body", resp.StatusCode, resp.Body)
	}
	rw.Write([]byte("hello"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(rw, buf); err != nil || string(buf) != "hello" {
		t.Errorf("echo over upgraded connection: %q, %v", buf, err)
	}
}

func TestTransportSocketMatchesPerEndpoint(t *testing.T) {
	m, _ := newTestManager(t)
	tlsSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls=%v", r.TLS != nil)
	}))
	tlsSrv.StartTLS()
	defer tlsSrv.Close()
	plain := newBackend(t, "tls=false", nil)
	tc, err := anypb.New(&tlsv3.UpstreamTlsContext{})
	if err != nil {
		t.Fatal(err)
	}
	// Istio's auto mTLS: endpoints labelled tlsMode=istio get TLS, the
	// rest plaintext.
	c := staticCluster("automtls", ep{addr: tlsSrv.Listener.Addr().String()}, ep{addr: plain.addr()})
	c.LoadAssignment.Endpoints[0].LbEndpoints[0].Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"envoy.transport_socket_match": {Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue("istio")}},
	}}
	c.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{
		{Name: "tlsMode-istio", Match: &structpb.Struct{Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue("istio")}},
			TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tc}}},
		{Name: "tlsMode-disabled", Match: &structpb.Struct{}, TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.raw_buffer"}},
	}
	cl := mustAdd(t, m, c)
	got := map[string]string{}
	for range 4 {
		r := send(cl, nil)
		if r.err != nil {
			t.Fatalf("request: %v", r.err)
		}
		got[r.host] = r.body
	}
	if got[tlsSrv.Listener.Addr().String()] != "tls=true" || got[plain.addr()] != "tls=false" {
		t.Errorf("per-endpoint transport sockets: %v", got)
	}
}

func TestUpstreamTLSVerificationFailureIsConnectFailure(t *testing.T) {
	m, st := newTestManager(t)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	// Trust a CA that did not sign the server's certificate.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other-ca"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	tc, err := anypb.New(&tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: caPEM}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	c := staticCluster("badca", ep{addr: srv.Listener.Addr().String()})
	c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tc}}
	cl := mustAdd(t, m, c)
	r := send(cl, nil)
	var ue *core.UpstreamError
	if !errors.As(r.err, &ue) || ue.Kind != core.ConnectFailure {
		t.Fatalf("server cert from an untrusted CA: err = %v, want ConnectFailure", r.err)
	}
	if st.CounterValue("cluster.badca.upstream_cx_connect_fail") != 1 {
		t.Errorf("upstream_cx_connect_fail = %d, want 1", st.CounterValue("cluster.badca.upstream_cx_connect_fail"))
	}
}
