package l4

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// testHost dials its address over loopback.
type testHost struct {
	addr     string
	observed atomic.Int32
	failed   atomic.Int32
}

func (h *testHost) Address() string { return h.addr }
func (h *testHost) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("not used by tcp_proxy")
}
func (h *testHost) Dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", h.addr)
	if err != nil {
		return nil, &core.UpstreamError{Kind: core.ConnectFailure, Err: err}
	}
	return c, nil
}
func (h *testHost) Observe(_ int, err error) {
	h.observed.Add(1)
	if err != nil {
		h.failed.Add(1)
	}
}

// testCluster hands out its hosts round robin.
type testCluster struct {
	name  string
	hosts []*testHost
	next  atomic.Uint64
	st    *core.ClusterStats
	lb    atomic.Pointer[core.LBContext] // the last balancer input
}

func (c *testCluster) Name() string { return c.name }
func (c *testCluster) ChooseHost(lb *core.LBContext) core.Host {
	c.lb.Store(lb)
	if len(c.hosts) == 0 {
		return nil
	}
	return c.hosts[(c.next.Add(1)-1)%uint64(len(c.hosts))]
}
func (c *testCluster) AcquireRequest() bool      { return true }
func (c *testCluster) ReleaseRequest()           {}
func (c *testCluster) AcquireRetry() bool        { return true }
func (c *testCluster) ReleaseRetry()             {}
func (c *testCluster) Stats() *core.ClusterStats { return c.st }
func (s clusterMap) Cluster(name string) core.Cluster {
	if c, ok := s[name]; ok {
		return c
	}
	return nil
}

type clusterMap map[string]*testCluster

func newCluster(st *stats.Store, name string, addrs ...string) *testCluster {
	c := &testCluster{name: name, st: core.NewClusterStats(st, name)}
	for _, a := range addrs {
		c.hosts = append(c.hosts, &testHost{addr: a})
	}
	return c
}

// echoServer echoes until EOF, then half-closes; it prefixes its replies
// with tag so a test can tell servers apart.
func echoServer(t *testing.T, tag string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if tag != "" {
					c.Write([]byte(tag))
				}
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// serveProxy runs p behind a loopback listener and returns its address.
func serveProxy(t *testing.T, p *TCPProxy) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); p.Close(); wg.Wait() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.ServeConn(c, &core.ConnInfo{LocalAddr: c.LocalAddr(), RemoteAddr: c.RemoteAddr()})
			}()
		}
	}()
	return ln.Addr().String()
}

type recorder struct {
	mu             sync.Mutex
	opened, closed []*Session
}

func (r *recorder) SessionOpened(s *Session) {
	r.mu.Lock()
	r.opened = append(r.opened, s)
	r.mu.Unlock()
}
func (r *recorder) SessionClosed(s *Session) {
	r.mu.Lock()
	r.closed = append(r.closed, s)
	r.mu.Unlock()
}
func (r *recorder) waitClosed(t *testing.T, n int) []*Session {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		if len(r.closed) >= n {
			out := append([]*Session(nil), r.closed...)
			r.mu.Unlock()
			return out
		}
		r.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("sessions closed: want %d within 5s", n)
	return nil
}

func cluster(name string) *tcpv3.TcpProxy {
	return &tcpv3.TcpProxy{StatPrefix: name, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: name}}
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn)
}

// Bytes pass both ways, the client's half-close reaches the upstream (the
// echo server only finishes on EOF), the reply still flows back after it,
// and the byte counts reach the stats and the observer.
func TestProxyHalfCloseAndCounts(t *testing.T) {
	st := stats.New()
	cs := clusterMap{"echo": newCluster(st, "echo", echoServer(t, ""))}
	p, err := NewTCPProxy(cluster("echo"), cs, st)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	p.SetObserver(rec)
	c := dial(t, serveProxy(t, p))
	payload := bytes.Repeat([]byte("0123456789"), 50_000) // 500 KB: many chunks
	go func() {
		c.Write(payload)
		c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("echoed %d bytes, want %d identical", len(got), len(payload))
	}
	c.Close()
	ss := rec.waitClosed(t, 1)
	s := ss[0]
	if s.BytesReceived() != uint64(len(payload)) || s.BytesSent() != uint64(len(payload)) {
		t.Errorf("session bytes rx %d tx %d, want %d", s.BytesReceived(), s.BytesSent(), len(payload))
	}
	if s.Cluster != "echo" || s.Host == "" || s.Flags != 0 {
		t.Errorf("session = cluster %q host %q flags %v", s.Cluster, s.Host, s.Flags)
	}
	for name, want := range map[string]uint64{
		"tcp.echo.downstream_cx_total":          1,
		"tcp.echo.downstream_cx_rx_bytes_total": uint64(len(payload)),
		"tcp.echo.downstream_cx_tx_bytes_total": uint64(len(payload)),
		"tcp.echo.upstream_flush_total":         1,
	} {
		if got := st.CounterValue(name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}

// Weighted clusters split connections in proportion (75/25 over 300
// connections: well within five standard deviations).
func TestWeightedClusters(t *testing.T) {
	st := stats.New()
	cs := clusterMap{"a": newCluster(st, "a", echoServer(t, "A")), "b": newCluster(st, "b", echoServer(t, "B"))}
	p, err := NewTCPProxy(&tcpv3.TcpProxy{StatPrefix: "w", ClusterSpecifier: &tcpv3.TcpProxy_WeightedClusters{
		WeightedClusters: &tcpv3.TcpProxy_WeightedCluster{Clusters: []*tcpv3.TcpProxy_WeightedCluster_ClusterWeight{
			{Name: "a", Weight: 75}, {Name: "b", Weight: 25}, {Name: "never", Weight: 0}}}}}, cs, st)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveProxy(t, p)
	counts := map[string]int{}
	const n = 300
	for range n {
		c := dial(t, addr)
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatalf("read tag: %v", err)
		}
		counts[string(b)]++
		c.Close()
	}
	if counts["A"]+counts["B"] != n {
		t.Fatalf("counts %v", counts)
	}
	// mean 225, sd 7.5
	if a := counts["A"]; a < 188 || a > 262 {
		t.Errorf("cluster a got %d of %d connections, want about 225", a, n)
	}
}

func TestConnectAttemptsAndFailureFlags(t *testing.T) {
	// A port with nothing listening: connect is refused.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	live := echoServer(t, "L")

	st := stats.New()
	cs := clusterMap{
		"flaky": newCluster(st, "flaky", dead, live),
		"down":  newCluster(st, "down", dead),
		"empty": newCluster(st, "empty"),
	}
	run := func(cfg *tcpv3.TcpProxy) (string, *Session) {
		p, err := NewTCPProxy(cfg, cs, st)
		if err != nil {
			t.Fatal(err)
		}
		rec := &recorder{}
		p.SetObserver(rec)
		c := dial(t, serveProxy(t, p))
		b, _ := io.ReadAll(io.LimitReader(c, 1))
		c.Close()
		return string(b), rec.waitClosed(t, 1)[0]
	}
	cfg := cluster("flaky")
	cfg.MaxConnectAttempts = wrapperspb.UInt32(2)
	if got, _ := run(cfg); got != "L" {
		t.Errorf("two attempts: got %q, want the live host's reply", got)
	}
	cs["flaky"].next.Store(0)
	if got, s := run(cluster("flaky")); got != "" || s.Flags != core.UpstreamConnectionFailure {
		t.Errorf("one attempt on a dead host: got %q flags %v, want a closed connection with UF", got, s.Flags)
	}
	if got, s := run(cluster("empty")); got != "" || s.Flags != core.NoHealthyUpstream {
		t.Errorf("no hosts: got %q flags %v, want UH", got, s.Flags)
	}
	if got := st.CounterValue("cluster.empty.upstream_cx_none_healthy"); got != 1 {
		t.Errorf("upstream_cx_none_healthy = %d", got)
	}
	if got, s := run(cluster("missing")); got != "" || s.Flags != core.NoClusterFound {
		t.Errorf("unknown cluster: got %q flags %v, want NC", got, s.Flags)
	}
	if got := st.CounterValue("tcp.missing.downstream_cx_no_route"); got != 1 {
		t.Errorf("downstream_cx_no_route = %d", got)
	}
	// hash_policy source_ip gives consistent-hash balancers a key from the
	// client address, the same for every connection from it.
	cfg = cluster("flaky")
	cfg.MaxConnectAttempts = wrapperspb.UInt32(2)
	cfg.HashPolicy = []*typev3.HashPolicy{{PolicySpecifier: &typev3.HashPolicy_SourceIp_{SourceIp: &typev3.HashPolicy_SourceIp{}}}}
	run(cfg)
	first := cs["flaky"].lb.Load()
	run(cfg)
	second := cs["flaky"].lb.Load()
	if !first.HasHash || first.Hash != second.Hash || first.Downstream == nil {
		t.Errorf("source_ip hash: %+v then %+v", first, second)
	}
	if h := cs["down"].hosts[0]; h.failed.Load() != 0 {
		t.Errorf("unused host observed failures")
	}
	if h := cs["flaky"].hosts[0]; h.failed.Load() < 2 {
		t.Errorf("dead host: %d failures observed, want 2 (one per run)", h.failed.Load())
	}
}

// The idle timeout closes a silent session, but traffic in either
// direction keeps it open.
func TestIdleTimeout(t *testing.T) {
	st := stats.New()
	// chatty sends a byte every 40 ms for 20 ticks, never reading.
	chatty, _ := net.Listen("tcp", "127.0.0.1:0")
	defer chatty.Close()
	go func() {
		for {
			c, err := chatty.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for range 20 {
					time.Sleep(40 * time.Millisecond)
					if _, err := c.Write([]byte("x")); err != nil {
						return
					}
				}
				io.Copy(io.Discard, c)
			}()
		}
	}()
	cs := clusterMap{"silent": newCluster(st, "silent", echoServer(t, "")), "chatty": newCluster(st, "chatty", chatty.Addr().String())}
	mk := func(name string) string {
		cfg := cluster(name)
		cfg.IdleTimeout = durationpb.New(500 * time.Millisecond)
		p, err := NewTCPProxy(cfg, cs, st)
		if err != nil {
			t.Fatal(err)
		}
		return serveProxy(t, p)
	}
	c := dial(t, mk("silent"))
	start := time.Now()
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err == nil {
		t.Fatalf("silent session: read %d, %v; want closed", n, err)
	}
	if el := time.Since(start); el < 450*time.Millisecond || el > 5*time.Second {
		t.Errorf("silent session closed after %v, want about 500ms", el)
	}
	if got := st.CounterValue("tcp.silent.idle_timeout"); got != 1 {
		t.Errorf("idle_timeout = %d", got)
	}
	// 20 bytes over ~800 ms, well past the idle timeout, all arrive.
	c = dial(t, mk("chatty"))
	got, _ := io.ReadAll(io.LimitReader(c, 20))
	if len(got) != 20 {
		t.Errorf("chatty session got %d bytes before closing, want 20", len(got))
	}
	c.Close()
}

func TestMaxDownstreamConnectionDuration(t *testing.T) {
	st := stats.New()
	cs := clusterMap{"echo": newCluster(st, "echo", echoServer(t, ""))}
	cfg := cluster("echo")
	cfg.MaxDownstreamConnectionDuration = durationpb.New(300 * time.Millisecond)
	p, err := NewTCPProxy(cfg, cs, st)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, serveProxy(t, p))
	start := time.Now()
	// Keep the session busy: the limit applies to active sessions too.
	go func() {
		for range 100 {
			if _, err := c.Write([]byte("x")); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	io.Copy(io.Discard, c)
	if el := time.Since(start); el < 250*time.Millisecond || el > 5*time.Second {
		t.Errorf("session lasted %v, want about 300ms", el)
	}
	if got := st.CounterValue("tcp.echo.max_downstream_connection_duration"); got != 1 {
		t.Errorf("max_downstream_connection_duration = %d", got)
	}
}

func TestDrainWithCheckDrainClose(t *testing.T) {
	st := stats.New()
	cs := clusterMap{"echo": newCluster(st, "echo", echoServer(t, ""))}
	for _, check := range []bool{false, true} {
		cfg := cluster("echo")
		cfg.CheckDrainClose = wrapperspb.Bool(check)
		p, err := NewTCPProxy(cfg, cs, st)
		if err != nil {
			t.Fatal(err)
		}
		c := dial(t, serveProxy(t, p))
		b := make([]byte, 4)
		c.Write([]byte("ping"))
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatal(err)
		}
		p.Drain()
		c.Write([]byte("pong"))
		if !check {
			if _, err := io.ReadFull(c, b); err != nil {
				t.Errorf("without check_drain_close the session should continue; read: %v", err)
			}
			if p.Active() != 1 {
				t.Errorf("active sessions = %d, want 1", p.Active())
			}
			// Close (the listener's force close at the end of the drain
			// time) ends it.
			p.Close()
		}
		// The first byte after the drain closes the session; the client
		// sees the connection end (not its 10s deadline).
		_, err = io.ReadAll(c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("check_drain_close=%v: session not closed: %v", check, err)
		}
		waitFor(t, func() bool { return p.Active() == 0 })
		c.Close()
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 5s")
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  *tcpv3.TcpProxy
		want string
	}{
		{&tcpv3.TcpProxy{ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "x"}}, "stat_prefix"},
		{&tcpv3.TcpProxy{StatPrefix: "p"}, "cluster or weighted_clusters"},
		{&tcpv3.TcpProxy{StatPrefix: "p", ClusterSpecifier: &tcpv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpv3.TcpProxy_WeightedCluster{
			Clusters: []*tcpv3.TcpProxy_WeightedCluster_ClusterWeight{{Name: "a"}}}}}, `tcp_proxy "p": weighted_clusters.clusters`},
		{&tcpv3.TcpProxy{StatPrefix: "p", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "x"}, MaxConnectAttempts: wrapperspb.UInt32(0)}, "max_connect_attempts"},
	} {
		_, err := NewTCPProxy(tc.cfg, clusterMap{}, stats.New())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want one containing %q", err, tc.want)
		}
	}
}

// BenchmarkProxyThroughput measures bytes per second through the proxy on
// loopback with 32 KB writes.
func BenchmarkProxyThroughput(b *testing.B) {
	st := stats.New()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	cs := clusterMap{"sink": newCluster(st, "sink", ln.Addr().String())}
	p, _ := NewTCPProxy(cluster("sink"), cs, st)
	pl, _ := net.Listen("tcp", "127.0.0.1:0")
	defer pl.Close()
	go func() {
		for {
			c, err := pl.Accept()
			if err != nil {
				return
			}
			go p.ServeConn(c, &core.ConnInfo{})
		}
	}()
	c, err := net.Dial("tcp", pl.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 32*1024)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
}
