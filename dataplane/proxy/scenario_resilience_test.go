package proxy

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
)

// pathCounter counts requests per path, server side.
type pathCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *pathCounter) inc(p string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[p]++
	return c.n[p]
}

func (c *pathCounter) get(p string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[p]
}

func retryPolicy(on string, n uint32) *routev3.RetryPolicy {
	return &routev3.RetryPolicy{RetryOn: on, NumRetries: wrapperspb.UInt32(n)}
}

// Scenario 4: route timeout, retries on 5xx, retries exhausted,
// per_try_timeout, connect-failure retry and the previous_hosts predicate.
func TestScenarioTimeoutsAndRetries(t *testing.T) {
	var seen pathCounter
	a, _ := echoBackend(t, "a", func(w http.ResponseWriter, r *http.Request) bool {
		n := seen.inc(r.URL.Path)
		switch {
		case r.URL.Path == "/slow":
			select {
			case <-time.After(2 * time.Second):
			case <-r.Context().Done():
			}
		case r.URL.Path == "/flaky" && n <= 2, r.URL.Path == "/always":
			w.WriteHeader(503)
			return true
		case r.URL.Path == "/pertry" && n == 1:
			select {
			case <-time.After(2 * time.Second):
			case <-r.Context().Done():
			}
		}
		return false
	})
	good, _ := echoBackend(t, "good", nil)
	slowH2 := h2cSlowBackend(t, 2*time.Second)
	refused := freeAddr(t) // closed again: connections to it are refused
	listen := freeAddr(t)

	slow := to(prefix("/slow"), "a")
	slow.GetRoute().Timeout = durationpb.New(500 * time.Millisecond)
	slow2 := to(prefix("/h2slow"), "a2")
	slow2.GetRoute().Timeout = durationpb.New(500 * time.Millisecond)
	flaky := to(prefix("/flaky"), "a")
	flaky.GetRoute().RetryPolicy = retryPolicy("5xx", 3)
	always := to(prefix("/always"), "a")
	always.GetRoute().RetryPolicy = retryPolicy("5xx", 3)
	pertry := to(prefix("/pertry"), "a")
	pertry.GetRoute().Timeout = durationpb.New(5 * time.Second)
	pertry.GetRoute().RetryPolicy = retryPolicy("5xx", 2)
	pertry.GetRoute().RetryPolicy.PerTryTimeout = durationpb.New(200 * time.Millisecond)
	cf := to(prefix("/cf"), "cf")
	cf.GetRoute().RetryPolicy = retryPolicy("connect-failure", 1)
	cf.GetRoute().RetryPolicy.RetryHostPredicate = []*routev3.RetryPolicy_RetryHostPredicate{{
		Name:       "envoy.retry_host_predicates.previous_hosts",
		ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: xdsres.Any(&previoushostsv3.PreviousHostsPredicate{})}}}
	// Envoy reselects up to this many times before taking the last pick;
	// at 50 a repeat of the refusing host is out of the question.
	cf.GetRoute().RetryPolicy.HostSelectionRetryMaxAttempts = 50

	cfCluster := xdsres.EDSCluster("cf")
	cfCluster.LbPolicy = clusterv3.Cluster_RANDOM
	res := httpStack(listen, map[string][]string{"a": {a}}, slow, slow2, flaky, always, pertry, cf)
	res = append(res, cfCluster, xdsres.Endpoints("cf", refused, good),
		xdsres.HTTP2(xdsres.EDSCluster("a2")), xdsres.Endpoints("a2", slowH2))
	_, p := scenario(t, res...)
	base := "http://" + listen

	t.Run("route timeout", func(t *testing.T) {
		start := time.Now()
		c, body, h := get(t, base+"/slow")
		took := time.Since(start)
		if c != 504 || flags(h) != "UT" || body != "upstream request timeout" {
			t.Errorf("timeout: %d %q flags %q, want 504 \"upstream request timeout\" UT", c, body, flags(h))
		}
		if took < 450*time.Millisecond || took > 1500*time.Millisecond {
			t.Errorf("timeout answered after %v, want ~500ms", took)
		}
	})
	t.Run("route timeout over HTTP/2", func(t *testing.T) {
		start := time.Now()
		c, _, h := get(t, base+"/h2slow")
		if took := time.Since(start); c != 504 || flags(h) != "UT" || took > 1500*time.Millisecond {
			t.Errorf("timeout to an h2c upstream: %d flags %q after %v, want 504 UT after ~500ms", c, flags(h), took)
		}
	})
	t.Run("retry 5xx succeeds", func(t *testing.T) {
		if c, body, _ := get(t, base+"/flaky"); c != 200 || body != "a /flaky" {
			t.Fatalf("flaky with retries: %d %q, want 200", c, body)
		}
		if n := seen.get("/flaky"); n != 3 {
			t.Errorf("upstream saw %d attempts, want 3", n)
		}
	})
	t.Run("retries exhausted", func(t *testing.T) {
		c, _, h := get(t, base+"/always")
		if c != 503 || !strings.Contains(flags(h), "URX") {
			t.Errorf("exhausted: %d flags %q, want 503 with URX", c, flags(h))
		}
		if n := seen.get("/always"); n != 4 {
			t.Errorf("upstream saw %d attempts, want 1 + 3 retries", n)
		}
	})
	t.Run("per try timeout", func(t *testing.T) {
		start := time.Now()
		c, body, _ := get(t, base+"/pertry")
		if took := time.Since(start); c != 200 || body != "a /pertry" || took > 1500*time.Millisecond {
			t.Errorf("per_try_timeout: %d %q after %v, want 200 from the second try well before the slow first one", c, body, took)
		}
		if n := seen.get("/pertry"); n != 2 {
			t.Errorf("upstream saw %d attempts, want 2", n)
		}
	})
	t.Run("connect failure retried on another host", func(t *testing.T) {
		// RANDOM over one refusing and one good host with one retry: without
		// previous_hosts a retry lands on the refusing host half the time.
		codes, ups := loadLoop(t, base+"/cf", 100)
		if codes[200] != 100 || ups["good"] != 100 {
			t.Fatalf("connect-failure retries over 100 requests: codes %v upstreams %v", codes, ups)
		}
	})
	page := adminStats(t, p)
	for name, min := range map[string]int{
		"cluster.a.upstream_rq_timeout":              1,
		"cluster.a.upstream_rq_retry":                5,
		"cluster.a.upstream_rq_retry_success":        2,
		"cluster.a.upstream_rq_retry_limit_exceeded": 1,
		"cluster.a.upstream_rq_per_try_timeout":      1,
		"cluster.cf.upstream_cx_connect_fail":        1,
	} {
		if v := statValue(page, name); v < min {
			t.Errorf("%s = %d, want ≥ %d", name, v, min)
		}
	}
}

// h2cSlowBackend serves h2c and answers after d unless the stream is
// reset first.
func h2cSlowBackend(t *testing.T, d time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h2c.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
		}
	}), &http2.Server{})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// Scenario 5: Istio's circuit-breaking task — one connection, one pending
// request, one request per connection — overflows under 20 concurrent
// clients; default thresholds do not.
func TestScenarioCircuitBreaking(t *testing.T) {
	hold := func(w http.ResponseWriter, r *http.Request) bool {
		time.Sleep(50 * time.Millisecond)
		return false
	}
	a, _ := echoBackend(t, "a", hold)
	listen := freeAddr(t)
	tight := xdsres.HTTPOptions(xdsres.EDSCluster("tight"), &corev3.HttpProtocolOptions{MaxRequestsPerConnection: wrapperspb.UInt32(1)})
	tight.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxConnections: wrapperspb.UInt32(1), MaxPendingRequests: wrapperspb.UInt32(1)}}}
	res := []types.Resource{tight, xdsres.Endpoints("tight", a), xdsres.EDSCluster("roomy"), xdsres.Endpoints("roomy", a),
		xdsres.Listener("http", listen, xdsres.HCM("http", "routes")),
		xdsres.RouteConfig("routes", to(prefix("/tight"), "tight"), to(prefix("/roomy"), "roomy"))}
	_, p := scenario(t, res...)

	fire := func(path string) (ok, overflow, other int, otherDesc string) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for g := 0; g < 20; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				client := &http.Client{Timeout: 10 * time.Second}
				defer client.CloseIdleConnections()
				for i := 0; i < 5; i++ {
					resp, err := client.Get("http://" + listen + path)
					mu.Lock()
					switch {
					case err != nil:
						other++
						otherDesc = err.Error()
					case resp.StatusCode == 200:
						ok++
					case resp.StatusCode == 503 && resp.Header.Get("x-envoy-overloaded") == "true" && flags(resp.Header) == "UO":
						overflow++
					default:
						other++
						otherDesc = resp.Status + " flags " + flags(resp.Header)
					}
					mu.Unlock()
					if err == nil {
						resp.Body.Close()
					}
				}
			}()
		}
		wg.Wait()
		return
	}
	ok, overflow, other, desc := fire("/tight")
	if overflow == 0 || ok == 0 || other != 0 {
		t.Errorf("tight breaker: %d ok, %d overflowed (503 UO x-envoy-overloaded), %d other (%s); want some of each of the first two only", ok, overflow, other, desc)
	}
	if v := statValue(adminStats(t, p), "cluster.tight.upstream_rq_pending_overflow"); v <= 0 {
		t.Errorf("cluster.tight.upstream_rq_pending_overflow = %d, want > 0", v)
	}
	if ok, overflow, other, desc := fire("/roomy"); ok != 100 {
		t.Errorf("default thresholds: %d ok, %d overflowed, %d other (%s); want all 100 ok", ok, overflow, other, desc)
	}
}

// Scenario 6: consecutive 5xx outlier detection ejects the failing host.
func TestScenarioOutlierDetection(t *testing.T) {
	good, goodHits := echoBackend(t, "good", nil)
	bad, badHits := echoBackend(t, "bad", func(w http.ResponseWriter, r *http.Request) bool {
		w.WriteHeader(500)
		return true
	})
	listen := freeAddr(t)
	od := xdsres.EDSCluster("od")
	od.OutlierDetection = &clusterv3.OutlierDetection{
		Consecutive_5Xx: wrapperspb.UInt32(3), Interval: durationpb.New(100 * time.Millisecond),
		BaseEjectionTime: durationpb.New(30 * time.Second), MaxEjectionPercent: wrapperspb.UInt32(100)}
	_, p := scenario(t, od, xdsres.Endpoints("od", good, bad),
		xdsres.Listener("http", listen, xdsres.HCM("http", "routes")),
		xdsres.RouteConfig("routes", to(prefix("/"), "od")))
	url := "http://" + listen + "/"

	loadLoop(t, url, 20)
	if badHits.get() < 3 {
		t.Fatalf("the bad host saw %d requests of the first 20", badHits.get())
	}
	eventually(t, "ejections_active to be 1", func() (bool, string) {
		v := statValue(adminStats(t, p), "cluster.od.outlier_detection.ejections_active")
		return v == 1, "ejections_active " + itoa(v)
	})
	if v := statValue(adminStats(t, p), "cluster.od.outlier_detection.ejections_enforced_consecutive_5xx"); v != 1 {
		t.Errorf("cluster.od.outlier_detection.ejections_enforced_consecutive_5xx = %d, want 1", v)
	}
	badBefore, goodBefore := badHits.get(), goodHits.get()
	codes, _ := loadLoop(t, url, 50)
	if codes[200] != 50 || badHits.get() != badBefore || goodHits.get()-goodBefore != 50 {
		t.Fatalf("after ejection: codes %v, bad host got %d more, good host %d more", codes, badHits.get()-badBefore, goodHits.get()-goodBefore)
	}
}

// Scenario 7: an HTTP health check takes a failing host out of rotation
// and brings it back when it passes again.
func TestScenarioActiveHealthCheck(t *testing.T) {
	var healthy atomic.Bool
	var served atomic.Int64
	a, _ := echoBackend(t, "a", nil)
	b, _ := echoBackend(t, "b", func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/healthz" {
			if !healthy.Load() {
				w.WriteHeader(503)
			}
			return true
		}
		served.Add(1)
		return false
	})
	listen := freeAddr(t)
	hc := xdsres.EDSCluster("hc")
	hc.HealthChecks = []*corev3.HealthCheck{{
		Timeout: durationpb.New(time.Second), Interval: durationpb.New(100 * time.Millisecond),
		// Without it Envoy probes a cluster that has seen no traffic yet
		// only every 60 s.
		NoTrafficInterval:  durationpb.New(100 * time.Millisecond),
		UnhealthyThreshold: wrapperspb.UInt32(1), HealthyThreshold: wrapperspb.UInt32(1),
		HealthChecker: &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{Path: "/healthz"}}}}
	_, p := scenario(t, hc, xdsres.Endpoints("hc", a, b),
		xdsres.Listener("http", listen, xdsres.HCM("http", "routes")),
		xdsres.RouteConfig("routes", to(prefix("/"), "hc")))
	url := "http://" + listen + "/"

	eventually(t, "the failing host to leave rotation", func() (bool, string) {
		v := statValue(adminStats(t, p), "cluster.hc.membership_healthy")
		return v == 1, "membership_healthy " + itoa(v)
	})
	before := served.Load()
	if codes, ups := loadLoop(t, url, 30); codes[200] != 30 || ups["a"] != 30 || served.Load() != before {
		t.Fatalf("with b failing its health check: codes %v upstreams %v", codes, ups)
	}
	healthy.Store(true)
	eventually(t, "the recovered host to rejoin", func() (bool, string) {
		_, ups := loadLoop(t, url, 10)
		return ups["b"] > 0, "upstreams " + fmtMap(ups)
	})
	if v := statValue(adminStats(t, p), "cluster.hc.health_check.failure"); v < 1 {
		t.Errorf("cluster.hc.health_check.failure = %d, want ≥ 1", v)
	}
}
