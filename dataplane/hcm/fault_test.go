package hcm

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	commonfaultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

var all = &typev3.FractionalPercent{Numerator: 100}

func faultFilterCfg(t testing.TB, f *faultv3.HTTPFault) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: "envoy.filters.http.fault", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, f)}}
}

func withFault(t testing.TB, r *routev3.Route, f *faultv3.HTTPFault) *routev3.Route {
	r.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.fault": mustAny(t, f)}
	return r
}

func TestFaultDelayAbortAndPerRoute(t *testing.T) {
	e := newEnv(t)
	up := e.upstream("backend", echo("backend"))
	base := &faultv3.HTTPFault{
		Delay: &commonfaultv3.FaultDelay{FaultDelaySecifier: &commonfaultv3.FaultDelay_HeaderDelay_{HeaderDelay: &commonfaultv3.FaultDelay_HeaderDelay{}}, Percentage: all},
		Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HeaderAbort_{HeaderAbort: &faultv3.FaultAbort_HeaderAbort{}}, Percentage: all},
	}
	rc := simpleRoutes(
		withFault(t, prefixRoute("/delay", "backend"), &faultv3.HTTPFault{Delay: &commonfaultv3.FaultDelay{
			FaultDelaySecifier: &commonfaultv3.FaultDelay_FixedDelay{FixedDelay: dur(200 * time.Millisecond)}, Percentage: all}}),
		withFault(t, prefixRoute("/abort", "backend"), &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{
			ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 418}, Percentage: all}}),
		withFault(t, prefixRoute("/never", "backend"), &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{
			ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 500}, Percentage: &typev3.FractionalPercent{Numerator: 0}}}),
		prefixRoute("/", "backend"),
	)
	e.start(hcmConfig(t, rc, faultFilterCfg(t, base)))

	start := time.Now()
	resp, body := e.get("/delay")
	if el := time.Since(start); el < 190*time.Millisecond || el > 3*time.Second {
		t.Errorf("fixed delay took %v, want about 200ms", el)
	}
	if resp.StatusCode != 200 || resp.Header.Get("X-Upstream") != "backend" {
		t.Errorf("delayed request: %d %q", resp.StatusCode, body)
	}
	before := up.requests.Load()
	resp, body = e.get("/abort")
	if resp.StatusCode != 418 || body != "fault filter abort" || resp.Header.Get("X-Skiff-Response-Flags") != "FI" {
		t.Errorf("abort: %d %q %q", resp.StatusCode, body, resp.Header.Get("X-Skiff-Response-Flags"))
	}
	if up.requests.Load() != before {
		t.Error("an aborted request reached the upstream")
	}
	if resp, _ = e.get("/never"); resp.StatusCode != 200 {
		t.Errorf("0%% abort fired: %d", resp.StatusCode)
	}
	// Header-controlled faults from the filter's own config.
	if resp, _ = e.get("/x"); resp.StatusCode != 200 {
		t.Errorf("no fault headers: %d", resp.StatusCode)
	}
	resp, _ = e.get("/x", "X-Envoy-Fault-Abort-Request", "429")
	if resp.StatusCode != 429 {
		t.Errorf("header abort: %d", resp.StatusCode)
	}
	start = time.Now()
	resp, _ = e.get("/x", "X-Envoy-Fault-Delay-Request", "150")
	if el := time.Since(start); resp.StatusCode != 200 || el < 140*time.Millisecond {
		t.Errorf("header delay: %d after %v", resp.StatusCode, el)
	}
	if e.counter("http.inbound_0.0.0.0_80.fault.delays_injected") != 2 || e.counter("http.inbound_0.0.0.0_80.fault.aborts_injected") != 2 {
		t.Errorf("delays_injected %d aborts_injected %d", e.counter("http.inbound_0.0.0.0_80.fault.delays_injected"), e.counter("http.inbound_0.0.0.0_80.fault.aborts_injected"))
	}
}

func TestFaultMaxActiveAndGRPCAbort(t *testing.T) {
	e := newEnv(t)
	startGRPC(t, e, "grpc")
	e.upstream("backend", echo("backend"))
	delay := &faultv3.HTTPFault{
		Delay:           &commonfaultv3.FaultDelay{FaultDelaySecifier: &commonfaultv3.FaultDelay_FixedDelay{FixedDelay: dur(400 * time.Millisecond)}, Percentage: all},
		MaxActiveFaults: wrapperspb.UInt32(1),
	}
	grpcAbort := &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: uint32(codes.ResourceExhausted)}, Percentage: all}}
	rc := simpleRoutes(
		withFault(t, prefixRoute("/grpc.health.v1.Health/", "grpc"), grpcAbort),
		withFault(t, prefixRoute("/", "backend"), delay),
	)
	e.start(hcmConfig(t, rc, faultFilterCfg(t, &faultv3.HTTPFault{})))

	// Two concurrent requests with max_active_faults 1: one is delayed,
	// the other overflows and goes straight through.
	var wg sync.WaitGroup
	durs := make([]time.Duration, 2)
	for i := range durs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if i == 1 {
				time.Sleep(100 * time.Millisecond)
			}
			start := time.Now()
			resp, err := e.client.Get(e.url("/"))
			if err == nil {
				resp.Body.Close()
			}
			durs[i] = time.Since(start)
		}(i)
	}
	wg.Wait()
	if durs[0] < 390*time.Millisecond || durs[1] > 300*time.Millisecond {
		t.Errorf("durations %v: want the first delayed and the second not", durs)
	}
	if e.counter("http.inbound_0.0.0.0_80.fault.faults_overflow") != 1 {
		t.Errorf("faults_overflow %d", e.counter("http.inbound_0.0.0.0_80.fault.faults_overflow"))
	}

	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if st, _ := status.FromError(err); st.Code() != codes.ResourceExhausted || st.Message() != "fault filter abort" {
		t.Errorf("gRPC abort: %v", err)
	}
}

func TestCORSPreflightAndSimpleRequests(t *testing.T) {
	e := newEnv(t)
	up := e.upstream("backend", echo("backend"))
	policy := &corsv3.CorsPolicy{
		AllowOriginStringMatch: []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "https://app.example"}}},
		AllowMethods:           "GET,POST",
		AllowHeaders:           "content-type,x-custom",
		ExposeHeaders:          "x-upstream",
		MaxAge:                 "600",
		AllowCredentials:       wrapperspb.Bool(true),
	}
	r := prefixRoute("/", "backend")
	r.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.cors": mustAny(t, policy)}
	cors := &hcmv3.HttpFilter{Name: "envoy.filters.http.cors", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &corsv3.Cors{})}}
	e.start(hcmConfig(t, simpleRoutes(r), cors))

	pre := func(origin string) *http.Response {
		req, _ := http.NewRequest("OPTIONS", e.url("/api"), nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		resp := e.do(req)
		readAll(t, resp)
		resp.Body.Close()
		return resp
	}
	before := up.requests.Load()
	resp := pre("https://app.example")
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		resp.Header.Get("Access-Control-Allow-Methods") != "GET,POST" || resp.Header.Get("Access-Control-Allow-Headers") != "content-type,x-custom" ||
		resp.Header.Get("Access-Control-Max-Age") != "600" || resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
		t.Errorf("allowed preflight: %d %v", resp.StatusCode, resp.Header)
	}
	if up.requests.Load() != before {
		t.Error("an allowed preflight reached the upstream")
	}
	resp = pre("https://evil.example")
	if resp.Header.Get("Access-Control-Allow-Origin") != "" || resp.Header.Get("X-Upstream") != "backend" {
		t.Errorf("disallowed preflight should pass to the upstream without CORS headers: %v", resp.Header)
	}
	resp, _ = e.get("/api", "Origin", "https://app.example")
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" || resp.Header.Get("Access-Control-Expose-Headers") != "x-upstream" {
		t.Errorf("simple request CORS headers: %v", resp.Header)
	}
	resp, _ = e.get("/api", "Origin", "https://evil.example")
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("disallowed origin got %q", resp.Header.Get("Access-Control-Allow-Origin"))
	}
	if !strings.Contains(resp.Header.Get("X-Upstream"), "backend") {
		t.Error("simple request not proxied")
	}
}

func TestWeightedClustersAndTheirFilterConfig(t *testing.T) {
	e := newEnv(t)
	e.upstream("a", echo("a"))
	e.upstream("b", echo("b"))
	abort := mustAny(t, &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 402}, Percentage: all}})
	a := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
		{Name: "a", Weight: wrapperspb.UInt32(50)},
		{Name: "b", Weight: wrapperspb.UInt32(50)},
	}}}}
	withAbort := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
		{Name: "a", Weight: wrapperspb.UInt32(1)},
		{Name: "b", Weight: wrapperspb.UInt32(1), TypedPerFilterConfig: map[string]*anypb.Any{"envoy.filters.http.fault": abort}},
	}}}}
	e.start(hcmConfig(t, simpleRoutes(actionRoute("/split", a), actionRoute("/", withAbort)), faultFilterCfg(t, &faultv3.HTTPFault{})))
	counts := map[string]int{}
	for i := 0; i < 200; i++ {
		resp, _ := e.get("/split")
		counts[resp.Header.Get("X-Upstream")]++
	}
	// 50/50 over 200 requests: each side well inside [60, 140] (p < 1e-8 to fail by chance).
	if counts["a"] < 60 || counts["b"] < 60 || counts["a"]+counts["b"] != 200 {
		t.Errorf("split %v", counts)
	}
	got := map[int]int{}
	for i := 0; i < 60; i++ {
		resp, _ := e.get("/")
		got[resp.StatusCode]++
		if resp.StatusCode == 200 && resp.Header.Get("X-Upstream") != "a" {
			t.Fatalf("cluster b's fault config did not apply to b")
		}
	}
	if got[402] == 0 || got[200] == 0 {
		t.Errorf("statuses %v: want aborts exactly when b is chosen", got)
	}
	if e.store.Lookup("http.inbound_0.0.0.0_80.downstream_rq_active").(interface{ Value() int64 }).Value() != 0 {
		t.Error("downstream_rq_active did not return to 0")
	}
}

func TestDisabledFilterRunsOnlyWhereARouteEnablesIt(t *testing.T) {
	e := newEnv(t)
	e.upstream("backend", echo("backend"))
	abort := &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 503}, Percentage: all}}
	f := faultFilterCfg(t, abort)
	f.Disabled = true
	on := withFault(t, prefixRoute("/on", "backend"), abort)
	e.start(hcmConfig(t, simpleRoutes(on, prefixRoute("/", "backend")), f))
	if resp, _ := e.get("/off"); resp.StatusCode != 200 {
		t.Errorf("disabled filter ran on a route without config: %d", resp.StatusCode)
	}
	if resp, body := e.get("/on"); resp.StatusCode != 503 || body != "fault filter abort" {
		t.Errorf("route enabling the filter: %d %q", resp.StatusCode, body)
	}
}
