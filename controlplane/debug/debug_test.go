package debug_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/skiff-mesh/skiff/controlplane/debug"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// gen serves two clusters and one listener to everyone.
type gen struct{}

func (gen) Generate(_ *xds.Proxy, typeURL string, _ []string, _ *xds.PushRequest) ([]xds.Resource, error) {
	switch typeURL {
	case xds.ClusterType:
		return []xds.Resource{
			{Name: "inbound|9080||", Message: &clusterv3.Cluster{Name: "inbound|9080||"}},
			{Name: "outbound|9080||reviews.default.svc.cluster.local", Message: &clusterv3.Cluster{Name: "outbound|9080||reviews.default.svc.cluster.local"}},
		}, nil
	case xds.ListenerType:
		return []xds.Resource{{Name: "0.0.0.0_9080", Message: &listenerv3.Listener{Name: "0.0.0.0_9080"}}}, nil
	}
	return nil, nil
}

// env is an ADS server with one connected proxy that has ACKed CDS and
// NACKed LDS, and the debug handler over it.
type env struct {
	http       *httptest.Server
	cdsVersion string
}

func setup(t *testing.T, ready func() error) *env {
	t.Helper()
	s := xds.New(xds.Options{Generator: gen{}, Logger: slog.New(slog.DiscardHandler)})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(xds.GRPCServerOptions()...)
	s.Register(g)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)

	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	md, _ := structpb.NewStruct(map[string]any{"NAMESPACE": "default", "ISTIO_VERSION": "1.28.0"})
	send := func(r *discoveryv3.DiscoveryRequest) {
		if err := st.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	send(&discoveryv3.DiscoveryRequest{TypeUrl: xds.ClusterType,
		Node: &corev3.Node{Id: "sidecar~10.0.0.1~productpage-v1-x.default~default.svc.cluster.local", Metadata: md}})
	cds, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	send(&discoveryv3.DiscoveryRequest{TypeUrl: xds.ClusterType, VersionInfo: cds.GetVersionInfo(), ResponseNonce: cds.GetNonce()})
	send(&discoveryv3.DiscoveryRequest{TypeUrl: xds.ListenerType})
	lds, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	send(&discoveryv3.DiscoveryRequest{TypeUrl: xds.ListenerType, ResponseNonce: lds.GetNonce(),
		ErrorDetail: &status.Status{Code: 3, Message: "listener 0.0.0.0_9080: no filter chains"}})

	h := httptest.NewServer(debug.Handler(debug.Options{
		XDS:     s,
		Configz: func(w io.Writer) error { _, err := io.WriteString(w, `[{"kind":"VirtualService"}]`); return err },
		Ready:   ready,
		Metrics: s.Registry(),
	}))
	t.Cleanup(h.Close)
	e := &env{http: h, cdsVersion: cds.GetVersionInfo()}
	// Wait (bounded) until the server has processed the ACK and the NACK.
	for range 1000 {
		var ps []xds.ProxyStatus
		e.getJSON(t, "/debug/syncz", &ps)
		if len(ps) == 1 && len(ps[0].Types) == 2 && ps[0].Types[0].VersionAcked != "" && ps[0].Types[1].NACKs == 1 {
			return e
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("ACK and NACK not recorded within 5s")
	return nil
}

func (e *env) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(e.http.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func (e *env) getJSON(t *testing.T, path string, v any) {
	t.Helper()
	code, body := e.get(t, path)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %v in %s", path, err, body)
	}
}

func TestSyncz(t *testing.T) {
	e := setup(t, func() error { return nil })
	var ps []xds.ProxyStatus
	e.getJSON(t, "/debug/syncz", &ps)
	p := ps[0]
	if p.ProxyID != "productpage-v1-x.default" || p.Namespace != "default" || p.IstioVersion != "1.28.0" || p.Delta {
		t.Errorf("proxy %+v", p)
	}
	cds, lds := p.Types[0], p.Types[1]
	if cds.TypeURL != xds.ClusterType || cds.VersionSent != e.cdsVersion || cds.VersionAcked != e.cdsVersion || cds.NonceAcked != cds.NonceSent || cds.LastNACK != "" {
		t.Errorf("CDS status %+v", cds)
	}
	if lds.TypeURL != xds.ListenerType || lds.VersionAcked != "" || lds.LastNACK != "listener 0.0.0.0_9080: no filter chains" || lds.LastNACKNonce != lds.NonceSent {
		t.Errorf("LDS status %+v", lds)
	}
}

// config_dump has Envoy's shape: a ConfigDump of typed sections, each
// resource with the version the proxy ACKed.
func TestConfigDump(t *testing.T) {
	e := setup(t, func() error { return nil })
	code, body := e.get(t, "/debug/config_dump?proxyID=productpage-v1-x.default")
	if code != http.StatusOK {
		t.Fatalf("%d %s", code, body)
	}
	var dump adminv3.ConfigDump
	if err := protojson.Unmarshal([]byte(body), &dump); err != nil {
		t.Fatalf("%v in %s", err, body)
	}
	if len(dump.GetConfigs()) != 2 {
		t.Fatalf("%d sections, want clusters and listeners: %s", len(dump.GetConfigs()), body)
	}
	var clusters adminv3.ClustersConfigDump
	if err := dump.GetConfigs()[0].UnmarshalTo(&clusters); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range clusters.GetDynamicActiveClusters() {
		var cl clusterv3.Cluster
		if err := c.GetCluster().UnmarshalTo(&cl); err != nil {
			t.Fatal(err)
		}
		names = append(names, cl.GetName())
		if c.GetVersionInfo() != e.cdsVersion {
			t.Errorf("cluster %s version %q, want ACKed %q", cl.GetName(), c.GetVersionInfo(), e.cdsVersion)
		}
	}
	if want := []string{"inbound|9080||", "outbound|9080||reviews.default.svc.cluster.local"}; !slices.Equal(names, want) {
		t.Errorf("clusters %v, want %v", names, want)
	}
	var listeners adminv3.ListenersConfigDump
	if err := dump.GetConfigs()[1].UnmarshalTo(&listeners); err != nil {
		t.Fatal(err)
	}
	if l := listeners.GetDynamicListeners(); len(l) != 1 || l[0].GetName() != "0.0.0.0_9080" || l[0].GetActiveState().GetVersionInfo() != "" {
		t.Errorf("listeners %v (never ACKed: version must be empty)", l)
	}

	for path, want := range map[string]string{
		"/debug/config_dump":                    "400 config_dump needs ?proxyID=<pod>.<namespace> (see /debug/syncz for connected proxies)\n",
		"/debug/config_dump?proxyID=nope.other": "404 no proxy \"nope.other\" is connected: see /debug/syncz for connected proxies\n",
	} {
		if code, body := e.get(t, path); fmt.Sprintf("%d %s", code, body) != want {
			t.Errorf("GET %s: %d %q, want %q", path, code, body, want)
		}
	}
}

func TestReadyConfigzMetrics(t *testing.T) {
	ready := errors.New("config store not synced")
	e := setup(t, func() error { return ready })
	if code, body := e.get(t, "/ready"); code != http.StatusServiceUnavailable || body != "not ready: config store not synced\n" {
		t.Errorf("/ready before sync: %d %q", code, body)
	}
	ready = nil
	if code, body := e.get(t, "/ready"); code != http.StatusOK || body != "ready\n" {
		t.Errorf("/ready after sync: %d %q", code, body)
	}
	if code, body := e.get(t, "/debug/configz"); code != http.StatusOK || body != `[{"kind":"VirtualService"}]` {
		t.Errorf("/debug/configz: %d %q", code, body)
	}
	code, body := e.get(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`pilot_xds{version="1.28.0"} 1`,
		`pilot_xds_pushes{type="cds"} 1`,
		`pilot_xds_pushes{type="lds"} 1`,
		`pilot_total_xds_rejects{type="lds"} 1`,
		`skiff_xds_ack_latency_seconds_count{type="cds"} 1`,
		`skiff_xds_ack_latency_seconds_count{type="lds"} 1`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
}

func TestTrace(t *testing.T) {
	e := setup(t, func() error { return nil })
	var d []xds.Delivery
	e.getJSON(t, "/debug/trace?kind=VirtualService&namespace=default&name=reviews&version=7", &d)
	if len(d) != 0 {
		t.Errorf("never-pushed config traced to %v", d)
	}
	if code, body := e.get(t, "/debug/trace?kind=VirtualService"); code != http.StatusBadRequest || !strings.HasPrefix(body, "trace needs kind, name and version") {
		t.Errorf("bad trace query: %d %q", code, body)
	}
}
