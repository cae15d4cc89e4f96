package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// backend is a real HTTP server on 127.0.0.1 that answers with its name
// and counts the connections it accepted and saw closed.
type backend struct {
	*httptest.Server
	name     string
	accepted atomic.Int64
	closed   atomic.Int64
	status   atomic.Int64 // status to answer with; 200 when 0
}

func newBackend(t *testing.T, name string, h http.HandlerFunc) *backend {
	t.Helper()
	b := &backend{name: name}
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) {
			if s := b.status.Load(); s != 0 {
				w.WriteHeader(int(s))
			}
			io.WriteString(w, b.name)
		}
	}
	b.Server = httptest.NewUnstartedServer(h)
	b.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			b.accepted.Add(1)
		case http.StateClosed, http.StateHijacked:
			b.closed.Add(1)
		}
	}
	b.Start()
	t.Cleanup(b.Close)
	return b
}

// newBackendTB starts a plain handler server for benchmarks.
func newBackendTB(tb testing.TB, h http.HandlerFunc) string {
	s := httptest.NewServer(h)
	tb.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

func (b *backend) addr() string { return b.Listener.Addr().String() }

type ep struct {
	addr     string
	weight   uint32
	priority uint32
	health   corev3.HealthStatus
	zone     string
}

func sockAddr(addr string) *corev3.Address {
	h, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: h, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}}
}

func cla(name string, eps ...ep) *endpointv3.ClusterLoadAssignment {
	out := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	byKey := map[string]*endpointv3.LocalityLbEndpoints{}
	for _, e := range eps {
		k := fmt.Sprint(e.priority, "/", e.zone)
		l := byKey[k]
		if l == nil {
			l = &endpointv3.LocalityLbEndpoints{Priority: e.priority, Locality: &corev3.Locality{Zone: e.zone}}
			byKey[k] = l
			out.Endpoints = append(out.Endpoints, l)
		}
		le := &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: sockAddr(e.addr)}},
			HealthStatus:   e.health,
		}
		if e.weight != 0 {
			le.LoadBalancingWeight = wrapperspb.UInt32(e.weight)
		}
		l.LbEndpoints = append(l.LbEndpoints, le)
	}
	return out
}

func staticCluster(name string, eps ...ep) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(2 * time.Second),
		LoadAssignment:       cla(name, eps...),
	}
}

func edsCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{
			EdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
		},
		ConnectTimeout: durationpb.New(2 * time.Second),
	}
}

func newTestManager(t *testing.T) (*Manager, *stats.Store) {
	t.Helper()
	st := stats.New()
	m := NewManager(Options{Stats: st})
	t.Cleanup(m.Close)
	return m, st
}

func mustAdd(t *testing.T, m *Manager, c *clusterv3.Cluster) core.Cluster {
	t.Helper()
	if err := m.AddOrUpdate(c); err != nil {
		t.Fatalf("AddOrUpdate: %v", err)
	}
	cl := m.Cluster(c.GetName())
	if cl == nil {
		t.Fatalf("cluster %q missing after AddOrUpdate", c.GetName())
	}
	return cl
}

// result is what a client of the cluster saw for one request.
type result struct {
	status int
	body   string
	host   string
	err    error
}

// send does what the router does for one attempt: choose, send, read,
// observe.
func send(c core.Cluster, lb *core.LBContext) result {
	h := c.ChooseHost(lb)
	if h == nil {
		return result{err: errors.New("no healthy upstream")}
	}
	req, _ := http.NewRequest(http.MethodGet, "http://svc/", nil)
	resp, err := h.RoundTrip(req)
	if err != nil {
		h.Observe(0, err)
		return result{host: h.Address(), err: err}
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	h.Observe(resp.StatusCode, err)
	return result{status: resp.StatusCode, body: string(b), host: h.Address(), err: err}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
