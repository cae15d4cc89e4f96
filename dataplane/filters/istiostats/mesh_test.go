package istiostats_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
	statspb "istio.io/api/envoy/extensions/stats"

	"github.com/skiff-mesh/skiff/dataplane/proxy"
	"github.com/skiff-mesh/skiff/internal/testing/proxytest"
	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
	"github.com/skiff-mesh/skiff/internal/testing/xdsserver"
)

const (
	serverMeta = `{NAME: server-v1-7d9f, NAMESPACE: default, WORKLOAD_NAME: server-v1, SERVICE_ACCOUNT: server, CLUSTER_ID: Kubernetes, LABELS: {app: server, version: v1}}`
	clientMeta = `{NAME: client-v2-5c4b, NAMESPACE: default, WORKLOAD_NAME: client-v2, SERVICE_ACCOUNT: client, CLUSTER_ID: Kubernetes, LABELS: {app: client, version: v2, service.istio.io/canonical-name: client-svc}}`

	httpSvc = "server.default.svc.cluster.local"
	grpcSvc = "grpc.default.svc.cluster.local"
	tcpSvc  = "echo.default.svc.cluster.local"
)

// twoSidecars is client app → client sidecar (outbound) → Istio mTLS →
// server sidecar (inbound) → server apps, each sidecar driven by its own
// xDS server.
type twoSidecars struct {
	client, server *proxy.Proxy
	outHTTP        string // the client sidecar's outbound HTTP listener
	outTCP         string // its outbound TCP listener
	inPlain        string // the server sidecar's plaintext HTTP listener
	leaked         atomic.Int32
}

func startSidecars(t *testing.T, serverStats, clientStats *statspb.PluginConfig) *twoSidecars {
	m := &twoSidecars{}
	ca := newPKI(t)
	srvCert, srvKey := ca.leaf(t, "default", "server")
	cliCert, cliKey := ca.leaf(t, "default", "client")

	app := proxytest.ServeHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("x-envoy-peer-metadata") != "" || r.Header.Get("x-envoy-peer-metadata-id") != "" {
			m.leaked.Add(1)
		}
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "hello from server\n")
	}))
	grpcApp := serveGRPC(t)
	echo := proxytest.TCPEcho(t)

	// Server sidecar.
	sx := xdsserver.Start(t)
	inHCM := func(prefix string) *hcmv3.HttpConnectionManager {
		h := xdsres.HCMFilters(prefix, "inbound", httpMX(true), httpStats(serverStats))
		return h
	}
	inHTTP := &listenerv3.Listener{Name: "inbound-http", Address: xdsres.Addr("127.0.0.1:0"), TrafficDirection: corev3.TrafficDirection_INBOUND,
		FilterChains: []*listenerv3.FilterChain{xdsres.FilterChain("mtls", nil, ca.inboundMTLS(srvCert, srvKey, "h2", "http/1.1"), inHCM("inbound_0.0.0.0_9080"))}}
	inPlain := xdsres.Listener("inbound-plain", "127.0.0.1:0", inHCM("inbound_plain"))
	inPlain.TrafficDirection = corev3.TrafficDirection_INBOUND
	inTCPChain := xdsres.FilterChain("mtls-tcp", nil, ca.inboundMTLS(srvCert, srvKey, "istio-peer-exchange", "h2", "http/1.1"), xdsres.TCPProxy("inbound|7070||", "inbound|7070||"))
	inTCPChain.Filters = append([]*listenerv3.Filter{
		netFilter("istio.metadata_exchange", tcpMXTypedConfig()),
		netFilter("istio.stats", xdsres.Any(serverStats)),
	}, inTCPChain.Filters...)
	inTCP := &listenerv3.Listener{Name: "inbound-tcp", Address: xdsres.Addr("127.0.0.1:0"), TrafficDirection: corev3.TrafficDirection_INBOUND,
		FilterChains: []*listenerv3.FilterChain{inTCPChain}}
	sx.Set(t,
		istioServices(xdsres.EDSCluster("inbound|9080||"), httpSvc), xdsres.Endpoints("inbound|9080||", app),
		istioServices(xdsres.HTTP2(xdsres.EDSCluster("inbound|9090||")), grpcSvc), xdsres.Endpoints("inbound|9090||", grpcApp),
		istioServices(xdsres.EDSCluster("inbound|7070||"), tcpSvc), xdsres.Endpoints("inbound|7070||", echo),
		inHTTP, inPlain, inTCP,
		xdsres.RouteConfig("inbound",
			xdsres.PrefixRoute("/grpc.health.v1.Health/", "inbound|9090||"),
			xdsres.PrefixRoute("/", "inbound|9080||")),
	)
	m.server = proxytest.Start(t, xdsres.ADSBootstrap(sx.Addr, xdsserver.NodeID, serverMeta, false))
	srvHTTP := m.server.ListenerAddr("inbound-http").String()
	srvTCP := m.server.ListenerAddr("inbound-tcp").String()
	m.inPlain = m.server.ListenerAddr("inbound-plain").String()

	// Client sidecar.
	cx := xdsserver.Start(t)
	mx := []*clusterv3.Filter{{Name: "istio.metadata_exchange", TypedConfig: tcpMXTypedConfig()}}
	outCluster := func(name, svc string, h2 bool, target string) (*clusterv3.Cluster, types.Resource) {
		c := xdsres.EDSCluster(name)
		alpn := []string{"istio-peer-exchange", "istio"}
		if h2 {
			c = xdsres.HTTP2(c)
			alpn = append(alpn, "h2")
		}
		c = ca.istioMutual(c, cliCert, cliKey, "spiffe://cluster.local/ns/default/sa/server", alpn...)
		c.Filters = mx
		return istioServices(c, svc), xdsres.Endpoints(name, target)
	}
	httpC, httpE := outCluster("outbound|9080||"+httpSvc, httpSvc, false, srvHTTP)
	uoC, uoE := outCluster("outbound|9080|uo|"+httpSvc, httpSvc, false, srvHTTP)
	uoC.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxRequests: wrapperspb.UInt32(0)}}}
	grpcC, grpcE := outCluster("outbound|9090||"+grpcSvc, grpcSvc, true, srvHTTP)
	tcpC, tcpE := outCluster("outbound|7070||"+tcpSvc, tcpSvc, false, srvTCP)

	outHCM := xdsres.HCMFilters("outbound_0.0.0.0_9080", "outbound", httpMX(false), xdsres.FaultFilter(), httpStats(clientStats))
	outHTTP := xdsres.Listener("outbound-http", "127.0.0.1:0", outHCM)
	outHTTP.TrafficDirection = corev3.TrafficDirection_OUTBOUND
	outTCP := xdsres.Listener("outbound-tcp", "127.0.0.1:0", xdsres.TCPProxy("outbound|7070||"+tcpSvc, "outbound|7070||"+tcpSvc))
	outTCP.TrafficDirection = corev3.TrafficDirection_OUTBOUND
	outTCP.FilterChains[0].Filters = append([]*listenerv3.Filter{netFilter("istio.stats", xdsres.Any(clientStats))}, outTCP.FilterChains[0].Filters...)
	cx.Set(t, httpC, httpE, uoC, uoE, grpcC, grpcE, tcpC, tcpE, outHTTP, outTCP,
		xdsres.RouteConfig("outbound",
			xdsres.PerFilter(xdsres.PrefixRoute("/abort", "outbound|9080||"+httpSvc), "envoy.filters.http.fault", xdsres.FaultAbort(503, 100)),
			xdsres.PerFilter(xdsres.PrefixRoute("/delay", "outbound|9080||"+httpSvc), "envoy.filters.http.fault", xdsres.FaultDelay(5*time.Millisecond, 100)),
			xdsres.PrefixRoute("/overflow", "outbound|9080|uo|"+httpSvc),
			xdsres.PrefixRoute("/grpc.health.v1.Health/", "outbound|9090||"+grpcSvc),
			xdsres.PrefixRoute("/", "outbound|9080||"+httpSvc)),
	)
	m.client = proxytest.Start(t, xdsres.ADSBootstrap(cx.Addr, xdsserver.NodeID, clientMeta, false))
	m.outHTTP = m.client.ListenerAddr("outbound-http").String()
	m.outTCP = m.client.ListenerAddr("outbound-tcp").String()
	return m
}

func serveGRPC(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, health.NewServer())
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return l.Addr().String()
}

func get(t *testing.T, c *http.Client, url string, wantCode int) http.Header {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != wantCode {
		t.Fatalf("GET %s: %d (flags %q), want %d", url, resp.StatusCode, resp.Header.Get("x-skiff-response-flags"), wantCode)
	}
	return resp.Header
}

// Istio's label values for the two workloads.
var (
	srcClient = map[string]string{
		"source_workload": "client-v2", "source_workload_namespace": "default", "source_principal": "spiffe://cluster.local/ns/default/sa/client",
		"source_app": "client", "source_version": "v2", "source_canonical_service": "client-svc", "source_canonical_revision": "v2", "source_cluster": "Kubernetes",
	}
	srcUnknown = map[string]string{
		"source_workload": "unknown", "source_workload_namespace": "unknown", "source_principal": "unknown",
		"source_app": "unknown", "source_version": "unknown", "source_canonical_service": "unknown", "source_canonical_revision": "unknown", "source_cluster": "unknown",
	}
	dstServer = map[string]string{
		"destination_workload": "server-v1", "destination_workload_namespace": "default", "destination_principal": "spiffe://cluster.local/ns/default/sa/server",
		"destination_app": "server", "destination_version": "v1", "destination_canonical_service": "server", "destination_canonical_revision": "v1", "destination_cluster": "Kubernetes",
	}
	dstUnknown = map[string]string{
		"destination_workload": "unknown", "destination_workload_namespace": "unknown", "destination_principal": "unknown",
		"destination_app": "unknown", "destination_version": "unknown", "destination_canonical_service": "unknown", "destination_canonical_revision": "unknown", "destination_cluster": "unknown",
	}
)

func svc(host string) map[string]string {
	name, rest, _ := strings.Cut(host, ".")
	ns, _, _ := strings.Cut(rest, ".")
	return map[string]string{"destination_service": host, "destination_service_name": name, "destination_service_namespace": ns}
}

func httpRq(code, flags string) map[string]string {
	return map[string]string{"request_protocol": "http", "response_code": code, "grpc_response_status": "", "response_flags": flags}
}

var (
	source      = map[string]string{"reporter": "source", "connection_security_policy": "unknown"}
	destination = map[string]string{"reporter": "destination", "connection_security_policy": "mutual_tls"}
)

func TestHTTPAndGRPCMetricsBothReporters(t *testing.T) {
	m := startSidecars(t, &statspb.PluginConfig{}, &statspb.PluginConfig{})
	c := &http.Client{Timeout: 10 * time.Second}
	base := "http://" + m.outHTTP
	for range 3 {
		h := get(t, c, base+"/hello", 200)
		if h.Get("x-envoy-peer-metadata") != "" {
			t.Errorf("the client app saw x-envoy-peer-metadata: the outbound sidecar must remove it")
		}
	}
	get(t, c, base+"/delay", 200)
	for range 2 {
		get(t, c, base+"/abort", 503)
	}
	for range 2 {
		get(t, c, base+"/overflow", 503)
	}
	get(t, c, "http://"+m.inPlain+"/direct", 200) // plaintext, not from a sidecar

	conn, err := grpc.NewClient(m.outHTTP, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 2 {
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("gRPC Check through the sidecars: %v", err)
		}
	}
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("gRPC Check(nope) = %v, want NotFound", err)
	}
	if n := m.leaked.Load(); n != 0 {
		t.Errorf("the server app saw x-envoy-peer-metadata on %d requests: the inbound sidecar must remove it", n)
	}

	cs := scrape(t, m.client.AdminAddr().String())
	ss := scrape(t, m.server.AdminAddr().String())
	const rq = "istio_requests_total"
	cases := []struct {
		name    string
		samples []sample
		want    map[string]string
		n       float64
	}{
		{"source 200", cs, labels(source, srcClient, dstServer, svc(httpSvc), httpRq("200", "-")), 3},
		{"source 200 DI", cs, labels(source, srcClient, dstServer, svc(httpSvc), httpRq("200", "DI")), 1},
		{"source 503 FI", cs, labels(source, srcClient, dstUnknown, svc(httpSvc), httpRq("503", "FI"), map[string]string{"source_principal": "unknown"}), 2},
		{"source 503 UO", cs, labels(source, srcClient, dstUnknown, svc(httpSvc), httpRq("503", "UO"), map[string]string{"source_principal": "unknown"}), 2},
		{"source grpc 0", cs, labels(source, srcClient, dstServer, svc(grpcSvc), map[string]string{"request_protocol": "grpc", "response_code": "200", "grpc_response_status": "0", "response_flags": "-"}), 2},
		{"source grpc 5", cs, labels(source, srcClient, dstServer, svc(grpcSvc), map[string]string{"request_protocol": "grpc", "response_code": "200", "grpc_response_status": "5", "response_flags": "-"}), 1},
		{"destination 200", ss, labels(destination, srcClient, dstServer, svc(httpSvc), httpRq("200", "-")), 4},
		{"destination grpc 0", ss, labels(destination, srcClient, dstServer, svc(grpcSvc), map[string]string{"request_protocol": "grpc", "response_code": "200", "grpc_response_status": "0", "response_flags": "-"}), 2},
		{"destination grpc 5", ss, labels(destination, srcClient, dstServer, svc(grpcSvc), map[string]string{"request_protocol": "grpc", "response_code": "200", "grpc_response_status": "5", "response_flags": "-"}), 1},
		{"destination plaintext", ss, labels(map[string]string{"reporter": "destination", "connection_security_policy": "none"}, srcUnknown, dstServer,
			map[string]string{"destination_principal": "unknown"}, svc(httpSvc), httpRq("200", "-")), 1},
	}
	for _, tc := range cases {
		got, ok := find(tc.samples, rq, tc.want)
		if !ok || got != tc.n {
			t.Errorf("%s: istio_requests_total%v = %v (found %v), want %v; series:\n%s", tc.name, tc.want, got, ok, tc.n, dump(tc.samples, rq))
		}
	}
	// The histograms carry the same label sets and count the same requests.
	want := labels(destination, srcClient, dstServer, svc(httpSvc), httpRq("200", "-"))
	for _, h := range []string{"istio_request_duration_milliseconds_count", "istio_request_bytes_count", "istio_response_bytes_count"} {
		if got, _ := find(ss, h, want); got != 4 {
			t.Errorf("%s = %v, want 4; series:\n%s", h, got, dump(ss, h))
		}
	}
	want["le"] = "+Inf"
	if got, _ := find(ss, "istio_request_duration_milliseconds_bucket", want); got != 4 {
		t.Errorf("istio_request_duration_milliseconds_bucket{le=+Inf} = %v, want 4", got)
	}
	delete(want, "le")
	if sum, _ := find(ss, "istio_response_bytes_sum", want); sum < 4*float64(len("hello from server\n")) {
		t.Errorf("istio_response_bytes_sum = %v, want at least the 4 bodies", sum)
	}
}

func TestTCPMetricsBothReporters(t *testing.T) {
	m := startSidecars(t, &statspb.PluginConfig{}, &statspb.PluginConfig{})
	const conns, msg = 2, "ping through two sidecars\n"
	for range conns {
		c, err := net.DialTimeout("tcp", m.outTCP, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || line != msg {
			t.Fatalf("echo through the sidecars = %q, %v", line, err)
		}
		c.Close()
	}
	tcpLabels := map[string]string{"request_protocol": "tcp", "response_flags": "-"}
	srcWant := labels(source, srcClient, dstServer, svc(tcpSvc), tcpLabels)
	// The destination side names the service its tcp_proxy's inbound
	// cluster carries in filter_metadata.istio.services.
	dstWant := labels(destination, srcClient, dstServer, svc(tcpSvc), tcpLabels)
	// Connections close asynchronously: wait (bounded) for both sides.
	deadline := time.Now().Add(10 * time.Second)
	var cs, ss []sample
	for {
		cs = scrape(t, m.client.AdminAddr().String())
		ss = scrape(t, m.server.AdminAddr().String())
		a, _ := find(cs, "istio_tcp_connections_closed_total", srcWant)
		b, _ := find(ss, "istio_tcp_connections_closed_total", dstWant)
		if a == conns && b == conns || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, side := range []struct {
		name    string
		samples []sample
		want    map[string]string
	}{{"source", cs, srcWant}, {"destination", ss, dstWant}} {
		for metric, n := range map[string]float64{
			"istio_tcp_connections_opened_total": conns, "istio_tcp_connections_closed_total": conns,
			"istio_tcp_received_bytes_total": conns * float64(len(msg)), "istio_tcp_sent_bytes_total": conns * float64(len(msg)),
		} {
			if got, ok := find(side.samples, metric, side.want); got != n {
				t.Errorf("%s: %s = %v (found %v), want %v; series:\n%s", side.name, metric, got, ok, n, dump(side.samples, metric))
			}
		}
	}
}

func TestOverrides(t *testing.T) {
	pc := &statspb.PluginConfig{Metrics: []*statspb.MetricConfig{
		{Name: "requests_total", Dimensions: map[string]string{"request_host": "request.host", "method": "request.method", "peer_app": "upstream_peer.app", "mesh": "'skiff'"},
			TagsToRemove: []string{"source_cluster", "destination_cluster"}},
		{Name: "request_duration_milliseconds", Drop: true},
		{Dimensions: map[string]string{"response_code": "'overridden'"}},
	}}
	m := startSidecars(t, &statspb.PluginConfig{}, pc)
	c := &http.Client{Timeout: 10 * time.Second}
	get(t, c, "http://"+m.outHTTP+"/hello", 200)
	cs := scrape(t, m.client.AdminAddr().String())
	want := labels(source, srcClient, dstServer, svc(httpSvc), httpRq("overridden", "-"),
		map[string]string{"request_host": m.outHTTP, "method": "GET", "peer_app": "server", "mesh": "skiff"})
	delete(want, "source_cluster")
	delete(want, "destination_cluster")
	if got, ok := find(cs, "istio_requests_total", want); got != 1 {
		t.Errorf("istio_requests_total%v = %v (found %v), want 1; series:\n%s", want, got, ok, dump(cs, "istio_requests_total"))
	}
	for _, s := range cs {
		if strings.HasPrefix(s.name, "istio_request_duration_milliseconds") {
			t.Fatalf("dropped metric still reported: %s %v", s.name, s.labels)
		}
	}
	if _, ok := find(cs, "istio_request_bytes_count", labels(source, srcClient, dstServer, svc(httpSvc), httpRq("overridden", "-"))); !ok {
		t.Errorf("istio_request_bytes lost the override for all metrics; series:\n%s", dump(cs, "istio_request_bytes_count"))
	}
}

// A config the proxy cannot evaluate is refused (NACK) with the field.
func TestBadDimensionNACK(t *testing.T) {
	x := xdsserver.Start(t)
	pc := &statspb.PluginConfig{Metrics: []*statspb.MetricConfig{{Name: "requests_total", Dimensions: map[string]string{"x": "request.auth.claims['sub']"}}}}
	l := xdsres.Listener("l", "127.0.0.1:0", xdsres.HCMFilters("p", "r", httpStats(pc)))
	// go-control-plane answers CDS only when the snapshot has a cluster.
	x.Set(t, xdsres.EDSCluster("nowhere"), xdsres.Endpoints("nowhere", "127.0.0.1:1"), l, xdsres.RouteConfig("r", xdsres.PrefixRoute("/", "nowhere")))
	path := filepath.Join(t.TempDir(), "bootstrap.yaml")
	if err := os.WriteFile(path, []byte(x.Bootstrap(false)), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := proxy.New(proxy.Options{ConfigPath: path, DrainTime: 100 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	r := x.WaitFor(t, 15*time.Second, "NACK of the listener", func(r xdsserver.Response) bool { return r.NACK != "" })
	for _, want := range []string{"istio.stats", "metrics[0].dimensions[\"x\"]", "request.auth.claims"} {
		if !strings.Contains(r.NACK, want) {
			t.Errorf("NACK %q does not name %q", r.NACK, want)
		}
	}
}
