package xdsload_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/skiff-mesh/skiff/internal/xdsload"
)

// testPods generates a small mesh and returns its pods.
func testPods(t *testing.T, services, endpoints int) []*xdsload.Pod {
	t.Helper()
	m, err := xdsload.Generate(t.TempDir(), xdsload.Spec{Services: services, Endpoints: endpoints, Namespaces: 1})
	if err != nil {
		t.Fatal(err)
	}
	return m.Pods
}

func startFleet(t *testing.T, addr string, pods []*xdsload.Pod, delta bool) *xdsload.Fleet {
	t.Helper()
	f, err := xdsload.StartFleet(context.Background(), pods, xdsload.FleetOptions{Addr: addr, Delta: delta, ProxiesPerConn: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Stop)
	if _, err := f.WaitSynced(context.Background(), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return f
}

// describe renders a request as the test expects it, without the node.
func describe(r *discoveryv3.DiscoveryRequest) string {
	return fmt.Sprintf("%s version=%q nonce=%q names=%v", xdsload.ShortType(r.GetTypeUrl()), r.GetVersionInfo(), r.GetResponseNonce(), r.GetResourceNames())
}

func TestSotWProxyFollowsEnvoyOrderAndACKs(t *testing.T) {
	srv := startADS(t)
	pods := testPods(t, 1, 1)
	f := startFleet(t, srv.Addr, pods, false)

	// Synced means the last ACK went out; the server may still be reading it.
	var reqs []*discoveryv3.DiscoveryRequest
	for i := 0; i < 100; i++ {
		if reqs = srv.requests()[0]; len(reqs) >= 8 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	var got []string
	for _, r := range reqs {
		got = append(got, describe(r))
	}
	want := []string{
		`CDS version="" nonce="" names=[]`,
		// New clusters subscribe (names sorted: '|' sorts after 'v') their endpoints before the CDS ACK, as Envoy does.
		`EDS version="" nonce="" names=[` + clusterV1 + ` ` + clusterV2 + ` ` + clusterAll + `]`,
		`CDS version="c1" nonce="n1" names=[]`,
		`EDS version="e1" nonce="n2" names=[` + clusterV1 + ` ` + clusterV2 + ` ` + clusterAll + `]`,
		// Listeners only once the clusters are warm.
		`LDS version="" nonce="" names=[]`,
		`RDS version="" nonce="" names=[8080]`,
		`LDS version="l1" nonce="n3" names=[]`,
		`RDS version="r1" nonce="n4" names=[8080]`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	node := reqs[0].GetNode()
	if node.GetId() != "sidecar~198.18.0.1~svc-0-v1-0.load-0~load-0.svc.cluster.local" {
		t.Errorf("node id %q", node.GetId())
	}
	md := node.GetMetadata().GetFields()
	for k, v := range map[string]string{"NAMESPACE": "load-0", "SERVICE_ACCOUNT": "svc-0", "INSTANCE_IPS": "198.18.0.1",
		"WORKLOAD_NAME": "svc-0-v1", "ISTIO_VERSION": xdsload.IstioVersion, "NAME": "svc-0-v1-0"} {
		if got := md[k].GetStringValue(); got != v {
			t.Errorf("metadata %s = %q, want %q", k, got, v)
		}
	}
	if l := md["LABELS"].GetStructValue().GetFields(); l["app"].GetStringValue() != "svc-0" || l["version"].GetStringValue() != "v1" {
		t.Errorf("metadata LABELS = %v, want app svc-0, version v1", l)
	}
	if reqs[1].GetNode() != nil {
		t.Errorf("node sent again on the second request; Envoy sends it once per stream")
	}

	st := f.Proxies[0].Status()
	gotSt := fmt.Sprint(st)
	wantSt := "[{CDS c1 n1 1 1 4} {EDS e1 n2 1 1 3} {LDS l1 n3 1 1 2} {RDS r1 n4 1 1 1}]"
	if gotSt != wantSt {
		t.Errorf("status %s, want %s", gotSt, wantSt)
	}
	if v, at, ok := f.Proxies[0].ResourceVersion(xdsload.RouteType, "8080"); !ok || v != "r1" || at.IsZero() {
		t.Errorf("route 8080: version %q at %v (held %v), want r1 with its arrival time", v, at, ok)
	}
	if d, s := f.Errors(); d != 0 || s != 0 {
		t.Errorf("%d decode errors, %d stream errors", d, s)
	}
}

func TestChangeTimeIncludesServerDelay(t *testing.T) {
	srv := startADS(t)
	f := startFleet(t, srv.Addr, testPods(t, 2, 2), false)
	ctx := context.Background()

	w := f.Expect(xdsload.RouteWeights(testHost, testPort, 30, 70))
	srv.push(t, xdsload.RouteType, 300*time.Millisecond, func() { srv.w1, srv.w2 = 30, 70 })
	res := w.Wait(ctx, 5*time.Second)
	if res.Missing != 0 || len(res.Times) != 4 {
		t.Fatalf("route change: %d proxies ACKed, %d missing; want all 4", len(res.Times), res.Missing)
	}
	for i, d := range res.Times {
		if d < 300*time.Millisecond || d > 3*time.Second {
			t.Errorf("proxy %d: route change measured at %v; the server sent it 300ms after T0", i, d)
		}
	}
	if res.Last < 300*time.Millisecond {
		t.Errorf("last proxy at %v, want ≥ 300ms", res.Last)
	}
	// Every proxy ACKed the pushed version with its nonce. The proxy
	// records its ACK as sent; the server may read it a moment later.
	const wantACK = `RDS version="r2" nonce="n5" names=[8080]`
	for i := range srv.requests() {
		got := ""
		for j := 0; j < 100 && got != wantACK; j++ {
			if j > 0 {
				time.Sleep(10 * time.Millisecond)
			}
			reqs := srv.requests()[i]
			got = describe(reqs[len(reqs)-1])
		}
		if got != wantACK {
			t.Errorf("stream %d: last request %s, want %s", i, got, wantACK)
		}
	}

	// Content that never arrives is never counted.
	w = f.Expect(xdsload.RouteWeights(testHost, testPort, 40, 60))
	srv.push(t, xdsload.RouteType, 0, func() { srv.w1, srv.w2 = 45, 55 })
	if res := w.Wait(ctx, 500*time.Millisecond); res.Missing != 4 || len(res.Times) != 0 {
		t.Errorf("weights 45/55 pushed, 40/60 expected: %d proxies counted, %d missing; want 0 and 4", len(res.Times), res.Missing)
	}

	w = f.Expect(xdsload.EndpointAddress(clusterAll, "198.18.7.7"))
	srv.push(t, xdsload.EndpointType, 100*time.Millisecond, func() { srv.endpoint = "198.18.7.7" })
	res = w.Wait(ctx, 5*time.Second)
	if res.Missing != 0 || res.Last < 100*time.Millisecond {
		t.Errorf("endpoint change: %d missing, last at %v; want none missing, ≥ 100ms", res.Missing, res.Last)
	}
	if res.What != "endpoint 198.18.7.7 in "+clusterAll {
		t.Errorf("result named %q", res.What)
	}
}

func TestUndecodableResourceIsCountedAndStillACKed(t *testing.T) {
	srv := startADS(t)
	srv.junk = []byte{0x0a, 0x50, 'x'} // field 1 claims 80 bytes, has 1
	f := startFleet(t, srv.Addr, testPods(t, 1, 1), false)
	decodeErrs, streamErrs, last := f.Proxies[0].Errors()
	if decodeErrs != 1 || streamErrs != 0 {
		t.Errorf("%d decode errors, %d stream errors; want 1 and 0", decodeErrs, streamErrs)
	}
	if want := "CDS version c1: decoding Cluster: "; !strings.HasPrefix(last, want) {
		t.Errorf("last error %q, want it to start with %q", last, want)
	}
	// The good clusters were kept and the response ACKed, never NACKed.
	st := f.Proxies[0].Status()
	if st[0].Resources != 4 || st[0].ACKs != 1 {
		t.Errorf("CDS status %+v, want 4 resources and 1 ACK", st[0])
	}
	for _, r := range srv.requests()[0] {
		if r.GetErrorDetail() != nil {
			t.Errorf("proxy NACKed: %s", describe(r))
		}
	}
}
