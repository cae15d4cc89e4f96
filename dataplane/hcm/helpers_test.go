package hcm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// testHost is a core.Host over a real loopback server.
type testHost struct {
	addr      string
	rt        http.RoundTripper
	observed  []int
	mu        sync.Mutex
	requests  atomic.Int64
	dialCount atomic.Int64
}

func newTestHost(addr string, h2c bool) *testHost {
	h := &testHost{addr: addr}
	if h2c {
		h.rt = &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, a string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, a)
		}}
	} else {
		h.rt = &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	}
	return h
}

func (h *testHost) Address() string { return h.addr }

func (h *testHost) RoundTrip(r *http.Request) (*http.Response, error) {
	h.requests.Add(1)
	r.URL.Scheme = "http"
	r.URL.Host = h.addr
	resp, err := h.rt.RoundTrip(r)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Op == "dial" {
			return nil, &core.UpstreamError{Kind: core.ConnectFailure, Err: err}
		}
		return nil, &core.UpstreamError{Kind: core.Reset, Err: err}
	}
	return resp, nil
}

func (h *testHost) Dial(ctx context.Context) (net.Conn, error) {
	h.dialCount.Add(1)
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", h.addr)
	if err != nil {
		return nil, &core.UpstreamError{Kind: core.ConnectFailure, Err: err}
	}
	return c, nil
}

func (h *testHost) Observe(status int, err error) {
	h.mu.Lock()
	h.observed = append(h.observed, status)
	h.mu.Unlock()
}

// testCluster is a core.Cluster choosing hosts round robin, honouring
// LBContext.Reject, with counting circuit breakers.
type testCluster struct {
	name        string
	hosts       []*testHost
	next        atomic.Uint64
	stats       *core.ClusterStats
	maxRequests int64 // 0 = unlimited, < 0 = always open
	maxRetries  int64 // -1 = none allowed
	active      atomic.Int64
	lastHash    atomic.Uint64
	retriesHeld atomic.Int64
	// sticky picks the first host the LBContext accepts instead of round
	// robin, so tests can tell previous_hosts from luck.
	sticky bool
}

func (c *testCluster) Name() string { return c.name }

func (c *testCluster) ChooseHost(lb *core.LBContext) core.Host {
	if len(c.hosts) == 0 {
		return nil
	}
	if lb.HasHash {
		c.lastHash.Store(lb.Hash)
		return c.hosts[lb.Hash%uint64(len(c.hosts))]
	}
	for i := 0; i < len(c.hosts); i++ {
		h := c.hosts[c.next.Add(1)%uint64(len(c.hosts))]
		if c.sticky {
			h = c.hosts[i]
		}
		if lb.Reject == nil || !lb.Reject(h) {
			return h
		}
	}
	return c.hosts[0]
}

// The breakers count their own overflows, as dataplane/upstream's do.
func (c *testCluster) AcquireRequest() bool {
	if c.maxRequests < 0 {
		c.stats.RqPendingOverflow.Inc()
		return false
	}
	if c.maxRequests > 0 && c.active.Add(1) > c.maxRequests {
		c.active.Add(-1)
		return false
	}
	if c.maxRequests == 0 {
		c.active.Add(1)
	}
	return true
}
func (c *testCluster) ReleaseRequest() { c.active.Add(-1) }
func (c *testCluster) AcquireRetry() bool {
	if c.maxRetries < 0 {
		c.stats.RqRetryOverflow.Inc()
		return false
	}
	c.retriesHeld.Add(1)
	return true
}
func (c *testCluster) ReleaseRetry()             { c.retriesHeld.Add(-1) }
func (c *testCluster) Stats() *core.ClusterStats { return c.stats }

type testClusters map[string]*testCluster

func (m testClusters) Cluster(name string) core.Cluster {
	if c, ok := m[name]; ok {
		return c
	}
	return nil
}

// env is one connection manager under test with its upstreams.
type env struct {
	t        testing.TB
	store    *stats.Store
	clusters testClusters
	cm       *ConnectionManager
	addr     string
	tlsAddr  string
	routes   *RouteRegistry
	client   *http.Client
}

func newEnv(t testing.TB) *env {
	return &env{t: t, store: stats.New(), clusters: testClusters{}, routes: NewRouteRegistry()}
}

// upstream starts a loopback HTTP/1.1 server and adds it as a host of
// cluster name.
func (e *env) upstream(name string, h http.HandlerFunc) *testHost {
	srv := httptest.NewServer(h)
	e.t.Cleanup(srv.Close)
	host := newTestHost(srv.Listener.Addr().String(), false)
	e.addHost(name, host)
	return host
}

func (e *env) addHost(name string, host *testHost) {
	c := e.clusters[name]
	if c == nil {
		c = &testCluster{name: name, stats: core.NewClusterStats(e.store, name)}
		e.clusters[name] = c
	}
	c.hosts = append(c.hosts, host)
}

func (e *env) cluster(name string) *testCluster {
	c := e.clusters[name]
	if c == nil {
		c = &testCluster{name: name, stats: core.NewClusterStats(e.store, name)}
		e.clusters[name] = c
	}
	return c
}

// start builds the manager and serves it on a loopback listener (and a TLS
// one offering h2 and http/1.1).
func (e *env) start(cfg *hcmv3.HttpConnectionManager) *ConnectionManager {
	e.t.Helper()
	cm, err := New(cfg, Deps{Clusters: e.clusters, Routes: e.routes, Stats: e.store})
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	e.cm = cm
	e.t.Cleanup(func() { cm.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { ln.Close() })
	e.addr = ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go cm.ServeConn(c, &core.ConnInfo{LocalAddr: c.LocalAddr(), RemoteAddr: c.RemoteAddr(), TransportProtocol: "raw_buffer"})
		}
	}()
	tln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { tln.Close() })
	e.tlsAddr = tln.Addr().String()
	cert := selfSigned(e.t)
	go func() {
		for {
			c, err := tln.Accept()
			if err != nil {
				return
			}
			go func() {
				tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}, ClientAuth: tls.RequestClientCert})
				if err := tc.Handshake(); err != nil {
					c.Close()
					return
				}
				st := tc.ConnectionState()
				cm.ServeConn(tc, &core.ConnInfo{LocalAddr: c.LocalAddr(), RemoteAddr: c.RemoteAddr(), TransportProtocol: "tls", TLS: &st, SNI: st.ServerName})
			}()
		}
	}()
	tr := &http.Transport{DisableCompression: true}
	e.t.Cleanup(tr.CloseIdleConnections)
	e.client = &http.Client{Transport: tr, Timeout: 20 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return cm
}

func (e *env) url(path string) string { return "http://" + e.addr + path }

func (e *env) do(req *http.Request) *http.Response {
	e.t.Helper()
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	return resp
}

func (e *env) get(path string, hdr ...string) (*http.Response, string) {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.url(path), nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp := e.do(req)
	defer resp.Body.Close()
	b := readAll(e.t, resp)
	return resp, b
}

func (e *env) counter(name string) uint64 { return e.store.CounterValue(name) }

func readAll(t testing.TB, resp *http.Response) string {
	t.Helper()
	var b []byte
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b = append(b, buf[:n]...)
		if err != nil {
			break
		}
	}
	return string(b)
}

func selfSigned(t testing.TB, uris ...string) tls.Certificate {
	t.Helper()
	var us []*url.URL
	for _, u := range uris {
		pu, _ := url.Parse(u)
		us = append(us, pu)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "skiff-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"}, URIs: us,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func routerFilter(t testing.TB) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}}
}

// hcmConfig builds an HCM with an inline route config and the given filters
// before the router.
func hcmConfig(t testing.TB, rc *routev3.RouteConfiguration, filters ...*hcmv3.HttpFilter) *hcmv3.HttpConnectionManager {
	return &hcmv3.HttpConnectionManager{
		StatPrefix:     "inbound_0.0.0.0_80",
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc},
		HttpFilters:    append(filters, routerFilter(t)),
	}
}

// simpleRoutes is one virtual host "*" with the given routes.
func simpleRoutes(routes ...*routev3.Route) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: "80", VirtualHosts: []*routev3.VirtualHost{{Name: "all", Domains: []string{"*"}, Routes: routes}}}
}

func prefixRoute(prefix, cluster string) *routev3.Route {
	return &routev3.Route{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
	}
}

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

func newH2CClient() *http2.Transport {
	return &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, a string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, a)
	}}
}
