package upstream

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

func TestOutlierEjectsFailingHostUntilEjectionEnds(t *testing.T) {
	m, st := newTestManager(t)
	good, bad := newBackend(t, "good", nil), newBackend(t, "bad", nil)
	bad.status.Store(500)
	c := staticCluster("od", ep{addr: good.addr()}, ep{addr: bad.addr()})
	c.OutlierDetection = &clusterv3.OutlierDetection{
		Consecutive_5Xx:    wrapperspb.UInt32(3),
		Interval:           durationpb.New(100 * time.Millisecond),
		BaseEjectionTime:   durationpb.New(300 * time.Millisecond),
		MaxEjectionPercent: wrapperspb.UInt32(50),
	}
	cl := mustAdd(t, m, c)
	bad500 := 0
	for range 6 { // round robin: three to each host
		if r := send(cl, nil); r.status == 500 {
			bad500++
		}
	}
	if bad500 != 3 {
		t.Fatalf("bad host answered %d of 6, want 3", bad500)
	}
	ejectedAt := time.Now()
	for i := range 30 {
		if r := send(cl, nil); r.body != "good" {
			t.Fatalf("request %d after ejection went to %s (%d)", i, r.host, r.status)
		}
	}
	if st.CounterValue("cluster.od.outlier_detection.ejections_enforced_consecutive_5xx") != 1 {
		t.Errorf("ejections_enforced_consecutive_5xx = %d, want 1", st.CounterValue("cluster.od.outlier_detection.ejections_enforced_consecutive_5xx"))
	}
	var text bytes.Buffer
	m.WriteClusters(&text, false)
	if !strings.Contains(text.String(), "od::"+bad.addr()+"::health_flags::/failed_outlier_check") {
		t.Errorf("/clusters does not show the ejection:\n%s", text.String())
	}
	// It comes back after base_ejection_time (checked each interval).
	eventually(t, 5*time.Second, "ejected host to return", func() bool {
		return send(cl, nil).body == "bad"
	})
	if back := time.Since(ejectedAt); back < 300*time.Millisecond {
		t.Errorf("host returned after %v, before base_ejection_time 300ms", back)
	}
	// Ejected again within an interval of its return, it stays out twice
	// as long.
	for i := 0; st.CounterValue("cluster.od.outlier_detection.ejections_enforced_consecutive_5xx") < 2; i++ {
		if i == 20 {
			t.Fatal("no second ejection after 20 requests")
		}
		send(cl, nil)
	}
	ejectedAt = time.Now()
	eventually(t, 5*time.Second, "ejected host to return again", func() bool {
		return send(cl, nil).body == "bad"
	})
	if back := time.Since(ejectedAt); back < 550*time.Millisecond {
		t.Errorf("second ejection lasted %v, want 2 × 300ms", back)
	}
}

func TestFailurePercentageOutlierDetection(t *testing.T) {
	m, st := newTestManager(t)
	good, bad := newBackend(t, "good", nil), newBackend(t, "bad", nil)
	bad.status.Store(503)
	c := staticCluster("fp", ep{addr: good.addr()}, ep{addr: bad.addr()})
	c.OutlierDetection = &clusterv3.OutlierDetection{
		Consecutive_5Xx: wrapperspb.UInt32(1000), ConsecutiveGatewayFailure: wrapperspb.UInt32(1000),
		Interval: durationpb.New(time.Hour), BaseEjectionTime: durationpb.New(time.Hour),
		EnforcingSuccessRate:           wrapperspb.UInt32(0),
		FailurePercentageThreshold:     wrapperspb.UInt32(50),
		FailurePercentageMinimumHosts:  wrapperspb.UInt32(2),
		FailurePercentageRequestVolume: wrapperspb.UInt32(10),
		EnforcingFailurePercentage:     wrapperspb.UInt32(100),
		MaxEjectionPercent:             wrapperspb.UInt32(50),
	}
	cl := mustAdd(t, m, c)
	for range 40 {
		send(cl, nil)
	}
	(*m.clusters.Load())["fp"].outlierSweep(time.Now())
	if s := share(cl, 100); s[bad.addr()] != 0 {
		t.Errorf("host failing 100%% still chosen %d of 100 times", s[bad.addr()])
	}
	if st.CounterValue("cluster.fp.outlier_detection.ejections_enforced_total") != 1 {
		t.Errorf("ejections_enforced_total = %d, want 1", st.CounterValue("cluster.fp.outlier_detection.ejections_enforced_total"))
	}
}

func TestOutlierMaxEjectionPercentAndGatewayFailures(t *testing.T) {
	m, _ := newTestManager(t)
	a, b := newBackend(t, "a", nil), newBackend(t, "b", nil)
	a.status.Store(503)
	b.status.Store(503)
	c := staticCluster("gw", ep{addr: a.addr()}, ep{addr: b.addr()})
	c.OutlierDetection = &clusterv3.OutlierDetection{
		Consecutive_5Xx:                    wrapperspb.UInt32(1000),
		ConsecutiveGatewayFailure:          wrapperspb.UInt32(2),
		EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(100),
		Interval:                           durationpb.New(time.Minute),
		BaseEjectionTime:                   durationpb.New(time.Minute),
		MaxEjectionPercent:                 wrapperspb.UInt32(50),
	}
	cl := mustAdd(t, m, c)
	for range 10 {
		send(cl, nil)
	}
	// Only one of two hosts may be ejected at 50%.
	s := share(cl, 100)
	if len(s) != 1 {
		t.Errorf("after both hosts failed, %d hosts take traffic, want exactly 1 (max_ejection_percent 50): %v", len(s), s)
	}
}

func TestSuccessRateOutlierDetection(t *testing.T) {
	m, st := newTestManager(t)
	// The first host fails every other request.
	var flip atomic.Bool
	flaky := newBackend(t, "flaky", func(w http.ResponseWriter, r *http.Request) {
		if flip.Load() {
			w.WriteHeader(500)
		}
		flip.Store(!flip.Load())
	})
	hosts := []*backend{flaky}
	eps := []ep{{addr: flaky.addr()}}
	for i := range 4 {
		b := newBackend(t, string(rune('a'+i)), nil)
		hosts = append(hosts, b)
		eps = append(eps, ep{addr: b.addr()})
	}
	c := staticCluster("sr", eps...)
	c.OutlierDetection = &clusterv3.OutlierDetection{
		Consecutive_5Xx:          wrapperspb.UInt32(1000),
		Interval:                 durationpb.New(time.Hour), // swept by hand below
		BaseEjectionTime:         durationpb.New(time.Hour),
		SuccessRateMinimumHosts:  wrapperspb.UInt32(5),
		SuccessRateRequestVolume: wrapperspb.UInt32(20),
		SuccessRateStdevFactor:   wrapperspb.UInt32(1000),
		MaxEjectionPercent:       wrapperspb.UInt32(100),
	}
	cl := mustAdd(t, m, c)
	for range 200 {
		send(cl, nil)
	}
	(*m.clusters.Load())["sr"].outlierSweep(time.Now())
	if st.CounterValue("cluster.sr.outlier_detection.ejections_enforced_success_rate") != 1 {
		t.Fatalf("ejections_enforced_success_rate = %d, want 1", st.CounterValue("cluster.sr.outlier_detection.ejections_enforced_success_rate"))
	}
	if s := share(cl, 200); s[hosts[0].addr()] != 0 {
		t.Errorf("host with 50%% success still chosen %d times", s[hosts[0].addr()])
	}
}

func TestActiveHealthCheckRemovesAndRestoresHost(t *testing.T) {
	m, st := newTestManager(t)
	var sick atomic.Bool
	hc := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/healthz" {
				if r.Host != "hc.example" {
					w.WriteHeader(400)
				} else if name == "a" && sick.Load() {
					w.WriteHeader(503)
				}
				return
			}
			io.WriteString(w, name)
		}
	}
	a, b := newBackend(t, "a", hc("a")), newBackend(t, "b", hc("b"))
	c := staticCluster("hc", ep{addr: a.addr()}, ep{addr: b.addr()})
	// Without panic mode, "both chosen" means both passed a check: new
	// hosts start unhealthy.
	c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}}
	c.HealthChecks = []*corev3.HealthCheck{{
		Timeout: durationpb.New(time.Second), Interval: durationpb.New(30 * time.Millisecond),
		NoTrafficInterval:  durationpb.New(30 * time.Millisecond),
		UnhealthyThreshold: wrapperspb.UInt32(2), HealthyThreshold: wrapperspb.UInt32(2),
		HealthChecker: &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{
			Path: "/healthz", Host: "hc.example", ExpectedStatuses: []*typev3.Int64Range{{Start: 200, End: 300}}}},
	}}
	cl := mustAdd(t, m, c)
	both := func() bool { s := share(cl, 100); return s[a.addr()] > 0 && s[b.addr()] > 0 }
	eventually(t, 5*time.Second, "both hosts healthy after first checks", both)
	sick.Store(true)
	eventually(t, 5*time.Second, "sick host removed", func() bool { return share(cl, 100)[a.addr()] == 0 })
	for range 20 {
		if r := send(cl, nil); r.body != "b" {
			t.Fatalf("request went to %s while it fails health checks", r.host)
		}
	}
	sick.Store(false)
	eventually(t, 5*time.Second, "recovered host restored", both)
	if st.CounterValue("cluster.hc.health_check.failure") < 2 || st.CounterValue("cluster.hc.health_check.success") == 0 {
		t.Errorf("health_check.failure=%d success=%d", st.CounterValue("cluster.hc.health_check.failure"), st.CounterValue("cluster.hc.health_check.success"))
	}
}

func TestTCPHealthCheckPayload(t *testing.T) {
	m, _ := newTestManager(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var answer atomic.Value
	answer.Store("PONG")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4)
				if _, err := io.ReadFull(c, buf); err == nil && string(buf) == "PING" {
					io.WriteString(c, "xx"+answer.Load().(string))
				}
			}()
		}
	}()
	c := staticCluster("tcphc", ep{addr: ln.Addr().String()})
	c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}}
	c.HealthChecks = []*corev3.HealthCheck{{
		Timeout: durationpb.New(time.Second), Interval: durationpb.New(30 * time.Millisecond),
		NoTrafficInterval:  durationpb.New(30 * time.Millisecond),
		UnhealthyThreshold: wrapperspb.UInt32(1), HealthyThreshold: wrapperspb.UInt32(1),
		HealthChecker: &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &corev3.HealthCheck_TcpHealthCheck{
			Send:    &corev3.HealthCheck_Payload{Payload: &corev3.HealthCheck_Payload_Text{Text: "50494E47"}}, // PING
			Receive: []*corev3.HealthCheck_Payload{{Payload: &corev3.HealthCheck_Payload_Text{Text: "504F4E47"}}},
		}},
	}}
	cl := mustAdd(t, m, c)
	if cl.ChooseHost(nil) != nil {
		t.Fatal("host usable before its first health check")
	}
	eventually(t, 5*time.Second, "host healthy", func() bool { return cl.ChooseHost(nil) != nil })
	answer.Store("NOPE")
	eventually(t, 5*time.Second, "host unhealthy on wrong payload", func() bool { return cl.ChooseHost(nil) == nil })
}

func TestStrictDNSLocalhost(t *testing.T) {
	m, _ := newTestManager(t)
	b := newBackend(t, "a", nil)
	_, port, _ := net.SplitHostPort(b.addr())
	for _, typ := range []clusterv3.Cluster_DiscoveryType{clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS} {
		c := staticCluster("dns-"+typ.String(), ep{addr: net.JoinHostPort("127.0.0.1", port)})
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: typ}
		c.LoadAssignment.Endpoints[0].LbEndpoints[0].GetEndpoint().Address.GetSocketAddress().Address = "localhost"
		c.DnsLookupFamily = clusterv3.Cluster_V4_ONLY
		c.DnsRefreshRate = durationpb.New(100 * time.Millisecond)
		cl := mustAdd(t, m, c)
		eventually(t, 5*time.Second, "DNS cluster warm", func() bool { return len(m.Warming()) == 0 })
		h := cl.ChooseHost(nil)
		if h == nil || h.Address() != b.addr() {
			t.Fatalf("%s localhost: host %v, want %s", typ, h, b.addr())
		}
		if r := send(cl, nil); r.body != "a" {
			t.Errorf("%s: request got %+v", typ, r)
		}
	}
}

func TestOriginalDst(t *testing.T) {
	m, st := newTestManager(t)
	a, b := newBackend(t, "a", nil), newBackend(t, "b", nil)
	c := &clusterv3.Cluster{
		Name:                 "passthrough",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		CleanupInterval:      durationpb.New(100 * time.Millisecond),
		LbConfig: &clusterv3.Cluster_OriginalDstLbConfig_{OriginalDstLbConfig: &clusterv3.Cluster_OriginalDstLbConfig{
			UseHttpHeader: true}},
	}
	cl := mustAdd(t, m, c)
	dst := b.Listener.Addr().(*net.TCPAddr)
	if r := send(cl, &core.LBContext{Downstream: &core.ConnInfo{OriginalDst: dst}}); r.body != "b" {
		t.Errorf("original destination %s: got %+v", dst, r)
	}
	if r := send(cl, &core.LBContext{Downstream: &core.ConnInfo{OriginalDst: dst}, OverrideHost: a.addr()}); r.body != "a" {
		t.Errorf("override host %s: got %+v", a.addr(), r)
	}
	if cl.ChooseHost(&core.LBContext{}) != nil {
		t.Error("no destination: want no host")
	}
	if g := st.Lookup("cluster.passthrough.membership_total").(interface{ Value() int64 }); g.Value() != 2 {
		t.Errorf("membership_total = %d, want 2", g.Value())
	}
	eventually(t, 5*time.Second, "unused hosts cleaned up", func() bool {
		return st.Lookup("cluster.passthrough.membership_total").(interface{ Value() int64 }).Value() == 0
	})
	eventually(t, 5*time.Second, "idle connections of cleaned hosts closed", func() bool {
		return a.closed.Load() == 1 && b.closed.Load() == 1
	})
}

func TestUpdatePreservesState(t *testing.T) {
	m, _ := newTestManager(t)
	a, b := newBackend(t, "a", nil), newBackend(t, "b", nil)
	c := edsCluster("u")
	c.OutlierDetection = &clusterv3.OutlierDetection{
		Consecutive_5Xx: wrapperspb.UInt32(1), Interval: durationpb.New(time.Hour),
		BaseEjectionTime: durationpb.New(time.Hour), MaxEjectionPercent: wrapperspb.UInt32(100),
	}
	cl := mustAdd(t, m, c)
	if err := m.SetEndpoints(cla("u", ep{addr: a.addr()}, ep{addr: b.addr()})); err != nil {
		t.Fatal(err)
	}
	b.status.Store(500)
	for range 4 {
		send(cl, nil)
	}
	if s := share(cl, 50); s[b.addr()] != 0 {
		t.Fatalf("b not ejected: %v", s)
	}
	// Same cluster again: same object, same pools, same ejection.
	if err := m.AddOrUpdate(proto.Clone(c).(*clusterv3.Cluster)); err != nil {
		t.Fatal(err)
	}
	if m.Cluster("u") != cl {
		t.Fatal("unchanged cluster was replaced")
	}
	// New EDS with the same addresses plus one: b stays ejected, a keeps
	// its connection.
	d := newBackend(t, "d", nil)
	if err := m.SetEndpoints(cla("u", ep{addr: a.addr()}, ep{addr: b.addr()}, ep{addr: d.addr()})); err != nil {
		t.Fatal(err)
	}
	s := share(cl, 300)
	if s[b.addr()] != 0 || s[d.addr()] == 0 {
		t.Errorf("after EDS update: %v; want b still ejected, d in", s)
	}
	for range 10 {
		if r := send(cl, nil); r.err != nil {
			t.Fatal(r.err)
		}
	}
	if a.accepted.Load() != 1 {
		t.Errorf("a accepted %d connections across updates, want 1 (pool kept)", a.accepted.Load())
	}
	// A changed cluster is a new object; the old one closes idle conns.
	c2 := proto.Clone(c).(*clusterv3.Cluster)
	c2.ConnectTimeout = durationpb.New(3 * time.Second)
	if err := m.AddOrUpdate(c2); err != nil {
		t.Fatal(err)
	}
	if m.Cluster("u") == cl {
		t.Fatal("changed cluster was not replaced")
	}
	if len(m.Warming()) != 0 {
		t.Errorf("replaced EDS cluster warming %v; it should reuse the last assignment", m.Warming())
	}
	eventually(t, 5*time.Second, "old cluster's idle connection closed", func() bool { return a.closed.Load() == 1 })
	if r := send(m.Cluster("u"), nil); r.err != nil {
		t.Errorf("request on updated cluster: %v", r.err)
	}
	m.Remove("u")
	if m.Cluster("u") != nil || len(m.Names()) != 0 {
		t.Errorf("after Remove: names %v", m.Names())
	}
}

func TestInFlightRequestSurvivesClusterUpdate(t *testing.T) {
	m, _ := newTestManager(t)
	release := make(chan struct{})
	a := newBackend(t, "a", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "done")
	})
	c := staticCluster("inflight", ep{addr: a.addr()})
	cl := mustAdd(t, m, c)
	req, _ := http.NewRequest("GET", "http://svc/", nil)
	resp, err := cl.ChooseHost(nil).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	c2 := proto.Clone(c).(*clusterv3.Cluster)
	c2.ConnectTimeout = durationpb.New(time.Second)
	if err := m.AddOrUpdate(c2); err != nil {
		t.Fatal(err)
	}
	close(release)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(body) != "done" {
		t.Errorf("in-flight response across update: %q, %v", body, err)
	}
}

func TestValidateNamesClusterAndField(t *testing.T) {
	m, _ := newTestManager(t)
	mk := func(f func(c *clusterv3.Cluster)) *clusterv3.Cluster {
		c := staticCluster("outbound|80||a", ep{addr: "127.0.0.1:80"})
		f(c)
		return c
	}
	for _, tc := range []struct {
		c     *clusterv3.Cluster
		field string
	}{
		{mk(func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED }), "lb_policy"},
		{mk(func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_RING_HASH
			c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
				MinimumRingSize: wrapperspb.UInt64(100), MaximumRingSize: wrapperspb.UInt64(10)}}
		}), "ring_hash_lb_config"},
		{mk(func(c *clusterv3.Cluster) {
			c.LoadAssignment.Endpoints[0].LbEndpoints[0].GetEndpoint().Address.GetSocketAddress().Address = "not-an-ip"
		}), "socket_address.address"},
		{mk(func(c *clusterv3.Cluster) { c.ConnectTimeout = durationpb.New(-time.Second) }), "connect_timeout"},
		{mk(func(c *clusterv3.Cluster) {
			c.OutlierDetection = &clusterv3.OutlierDetection{MaxEjectionPercent: wrapperspb.UInt32(101)}
		}), "outlier_detection.max_ejection_percent"},
		{mk(func(c *clusterv3.Cluster) {
			c.HealthChecks = []*corev3.HealthCheck{{Timeout: durationpb.New(time.Second), Interval: durationpb.New(time.Second)}}
		}), "health_checks[0]"},
		{mk(func(c *clusterv3.Cluster) {
			c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.alts"}
		}), "transport_socket.name"},
		{mk(func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_MAGLEV
			c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(100)}}
		}), "maglev_lb_config.table_size"},
	} {
		err := m.Validate(tc.c)
		if err == nil || !strings.Contains(err.Error(), `cluster "outbound|80||a"`) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("Validate: err = %v, want it to name the cluster and %q", err, tc.field)
		}
		if m.AddOrUpdate(tc.c) == nil {
			t.Errorf("AddOrUpdate accepted what Validate rejected (%s)", tc.field)
		}
	}
	if err := m.Validate(staticCluster("ok", ep{addr: "127.0.0.1:80"})); err != nil {
		t.Errorf("valid cluster: %v", err)
	}
	if len(m.Names()) != 0 {
		t.Errorf("Validate applied clusters: %v", m.Names())
	}
	if err := m.SetEndpoints(cla("x", ep{addr: "127.0.0.1:0"})); err == nil || !strings.Contains(err.Error(), `cluster_load_assignment "x"`) || !strings.Contains(err.Error(), "port_value") {
		t.Errorf("SetEndpoints with port 0: %v", err)
	}
}

func TestWriteClustersTextAndJSON(t *testing.T) {
	m, _ := newTestManager(t)
	a := newBackend(t, "a", nil)
	c := staticCluster("outbound|80||a.ns.svc.cluster.local", ep{addr: a.addr(), weight: 3, zone: "z1"})
	cl := mustAdd(t, m, c)
	mustAdd(t, m, edsCluster("e"))
	if r := send(cl, nil); r.err != nil {
		t.Fatal(r.err)
	}
	var text bytes.Buffer
	m.WriteClusters(&text, false)
	pre := "outbound|80||a.ns.svc.cluster.local::" + a.addr() + "::"
	for _, want := range []string{
		"outbound|80||a.ns.svc.cluster.local::default_priority::max_connections::1024\n",
		"outbound|80||a.ns.svc.cluster.local::default_priority::max_retries::3\n",
		pre + "cx_active::1\n", pre + "rq_total::1\n", pre + "rq_success::1\n",
		pre + "health_flags::healthy\n", pre + "weight::3\n", pre + "zone::z1\n",
		"e::eds_service_name::e\n",
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("/clusters lacks %q:\n%s", want, text.String())
		}
	}
	var js bytes.Buffer
	m.WriteClusters(&js, true)
	var out struct {
		ClusterStatuses []struct {
			Name         string `json:"name"`
			HostStatuses []struct {
				Weight int `json:"weight"`
				Stats  []struct {
					Name  string `json:"name"`
					Value string `json:"value"`
				} `json:"stats"`
			} `json:"host_statuses"`
		} `json:"cluster_statuses"`
	}
	if err := json.Unmarshal(js.Bytes(), &out); err != nil {
		t.Fatalf("/clusters?format=json: %v\n%s", err, js.String())
	}
	if len(out.ClusterStatuses) != 2 || out.ClusterStatuses[1].Name != "outbound|80||a.ns.svc.cluster.local" ||
		len(out.ClusterStatuses[1].HostStatuses) != 1 || out.ClusterStatuses[1].HostStatuses[0].Weight != 3 {
		t.Errorf("json /clusters: %s", js.String())
	}
}

// upstream_bind_config's source address is where connections leave from:
// Istio's inbound clusters deliver from 127.0.0.6, which capture rules
// let through. A source that is not an IP is refused naming the field.
func TestUpstreamBindConfigSourceAddress(t *testing.T) {
	m, _ := newTestManager(t)
	b := newBackend(t, "b", func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		io.WriteString(w, host)
	})
	c := staticCluster("inbound|9080||", ep{addr: b.addr()})
	c.UpstreamBindConfig = &corev3.BindConfig{SourceAddress: &corev3.SocketAddress{Address: "127.0.0.6"}}
	cl := mustAdd(t, m, c)
	if r := send(cl, &core.LBContext{}); r.body != "127.0.0.6" {
		t.Errorf("backend saw the connection from %+v, want 127.0.0.6", r)
	}

	bad := staticCluster("inbound|9081||", ep{addr: b.addr()})
	bad.UpstreamBindConfig = &corev3.BindConfig{SourceAddress: &corev3.SocketAddress{Address: "localhost"}}
	err := m.Validate(bad)
	if err == nil || !strings.Contains(err.Error(), `cluster "inbound|9081||"`) || !strings.Contains(err.Error(), "upstream_bind_config.source_address.address") {
		t.Errorf("a source address that is not an IP: %v, want an error naming the cluster and field", err)
	}
}
