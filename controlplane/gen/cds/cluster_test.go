package cds_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/gen/cds"
	"github.com/skiff-mesh/skiff/controlplane/gen/cds/gentest"
	"github.com/skiff-mesh/skiff/controlplane/gen/eds"
	"github.com/skiff-mesh/skiff/controlplane/xds"
	"github.com/skiff-mesh/skiff/internal/testing/golden"
)

// TestServiceEntryResolutions pins the cluster each ServiceEntry
// resolution yields (DNS → STRICT_DNS, DNS_ROUND_ROBIN → LOGICAL_DNS with
// the first endpoint, STATIC → EDS with auto mTLS for a mesh-internal
// entry, NONE → ORIGINAL_DST), plus their endpoints, seen from curl.
func TestServiceEntryResolutions(t *testing.T) {
	objs := append(gentest.Sample(t, "curl/curl.yaml"), gentest.Load(t, "testdata/serviceentries.yaml")...)
	ix := gentest.Index(gentest.WithPods(objs))
	p := gentest.Sidecar(t, ix, "default", "curl-0")
	res := cds.Generate(p, ix)
	var entries []xds.Resource
	for _, r := range res {
		if strings.Contains(r.Name, "example.com") || strings.Contains(r.Name, "vm.internal") {
			entries = append(entries, r)
		}
	}
	var names []string
	for _, r := range entries {
		names = append(names, r.Name)
	}
	want := []string{
		"outbound|3306||db.example.com", "outbound|443||api.example.com",
		"outbound|8080|v2|vm.internal", "outbound|8080||vm.internal", "outbound|80||rr.example.com",
	}
	if !slices.Equal(names, want) {
		t.Fatalf("clusters:\n got %q\nwant %q", names, want)
	}
	golden.Compare(t, filepath.Join("testdata", "serviceentries.json"), golden.MarshalProtos(t, gentest.Messages(t, entries)))
	golden.Compare(t, filepath.Join("testdata", "serviceentries.eds.json"),
		golden.MarshalProtos(t, gentest.Messages(t, eds.Generate(p, ix, []string{"outbound|8080||vm.internal", "outbound|8080|v2|vm.internal"}))))
	gentest.Accept(t, res, func(names []string) []xds.Resource { return eds.Generate(p, ix, names) })
}

func clusters(t *testing.T, res []xds.Resource) map[string]*clusterv3.Cluster {
	t.Helper()
	out := map[string]*clusterv3.Cluster{}
	for _, m := range gentest.Messages(t, res) {
		c := m.(*clusterv3.Cluster)
		out[c.GetName()] = c
	}
	return out
}

func names(res []xds.Resource) []string {
	var out []string
	for _, r := range res {
		out = append(out, r.Name)
	}
	return out
}

// TestInboundClusters checks the inbound side: one cluster per port the
// workload serves — for captured traffic delivered as is to its original
// destination from 127.0.0.6 (Istio ≥1.10), without capture to the
// configured inbound address — and the Sidecar's ingress listeners
// replacing them when declared. Gateways get no inbound or passthrough
// clusters.
func TestInboundClusters(t *testing.T) {
	ix := gentest.Bookinfo(t)
	p := gentest.Sidecar(t, ix, "default", "reviews-v2-0")
	got := clusters(t, cds.New(cds.Options{InboundAddress: "127.0.0.2"}).Generate(p, ix))
	in := got["inbound|9080||"]
	if in == nil {
		t.Fatalf("no inbound|9080|| in %v", slices.Sorted(mapsKeys(got)))
	}
	if in.GetType() != clusterv3.Cluster_ORIGINAL_DST || in.GetLbPolicy() != clusterv3.Cluster_CLUSTER_PROVIDED ||
		in.GetUpstreamBindConfig().GetSourceAddress().GetAddress() != "127.0.0.6" || in.GetLoadAssignment() != nil {
		t.Errorf("captured inbound|9080||: type %s, lb %s, source %q, load assignment %v; want ORIGINAL_DST, CLUSTER_PROVIDED, from 127.0.0.6, none",
			in.GetType(), in.GetLbPolicy(), in.GetUpstreamBindConfig().GetSourceAddress().GetAddress(), in.GetLoadAssignment())
	}
	uncaptured := *p
	uncaptured.InterceptionMode = "NONE"
	in = clusters(t, cds.New(cds.Options{InboundAddress: "127.0.0.2"}).Generate(&uncaptured, ix))["inbound|9080||"]
	sa := in.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if in.GetType() != clusterv3.Cluster_STATIC || sa.GetAddress() != "127.0.0.2" || sa.GetPortValue() != 9080 {
		t.Errorf("uncaptured inbound|9080||: type %s to %s:%d, want STATIC to 127.0.0.2:9080", in.GetType(), sa.GetAddress(), sa.GetPortValue())
	}
	for _, n := range []string{cds.PassthroughCluster, cds.BlackHoleCluster, cds.InboundPassthroughCluster} {
		if got[n] == nil {
			t.Errorf("sidecar lacks %s", n)
		}
	}

	objs := append(gentest.Sample(t, "bookinfo/platform/kube/bookinfo.yaml"), gentest.Decode(t, "sidecar.yaml", `
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: reviews
spec:
  workloadSelector:
    labels:
      app: reviews
  ingress:
  - port:
      number: 9080
      protocol: GRPC
      name: grpc
    defaultEndpoint: 127.0.0.1:7070
  - port:
      number: 9443
      protocol: HTTP
      name: http
    defaultEndpoint: unix:///var/run/app.sock
`)...)
	ix = gentest.Index(gentest.WithPods(objs))
	p = gentest.Sidecar(t, ix, "default", "reviews-v2-0")
	got = clusters(t, cds.Generate(p, ix))
	in = got["inbound|9080||"]
	if in == nil {
		t.Fatal("no inbound|9080|| from the Sidecar ingress listener")
	}
	sa = in.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if sa.GetAddress() != "127.0.0.1" || sa.GetPortValue() != 7070 {
		t.Errorf("inbound|9080|| goes to %s:%d, want the defaultEndpoint 127.0.0.1:7070", sa.GetAddress(), sa.GetPortValue())
	}
	if _, ok := in.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]; !ok {
		t.Error("gRPC ingress port: inbound cluster lacks HTTP/2 protocol options")
	}
	if got["inbound|9443||"] != nil {
		t.Error("a unix socket defaultEndpoint produced a cluster skiff-proxy cannot dial")
	}

	gw := &xds.Proxy{ID: "gw.istio-system", Type: xds.RouterProxy, Namespace: "istio-system", IPs: []string{"198.18.0.99"}}
	gn := names(cds.Generate(gw, ix))
	if gn[0] != cds.BlackHoleCluster || slices.Contains(gn, cds.PassthroughCluster) || strings.HasPrefix(gn[1], "inbound") {
		t.Errorf("gateway clusters start %q; want BlackHoleCluster then outbound only", gn[:2])
	}
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestAutoMTLSOption checks that auto mTLS follows the option and never
// applies to mesh-external services.
func TestAutoMTLSOption(t *testing.T) {
	ix := gentest.Bookinfo(t)
	p := gentest.Sidecar(t, ix, "default", "productpage-v1-0")
	on := clusters(t, cds.Generate(p, ix))["outbound|9080||reviews.default.svc.cluster.local"]
	if n := len(on.GetTransportSocketMatches()); n != 2 {
		t.Errorf("auto mTLS on: %d transport_socket_matches, want 2", n)
	}
	off := clusters(t, cds.New(cds.Options{DisableAutoMTLS: true}).Generate(p, ix))["outbound|9080||reviews.default.svc.cluster.local"]
	if off.GetTransportSocketMatches() != nil || off.GetTransportSocket() != nil {
		t.Errorf("auto mTLS off: cluster still has TLS: %v", off)
	}
}

// TestSharedOutput checks that proxies with the same scope share one
// encoding of each outbound cluster within an Index, that a workload
// selected DestinationRule separates them, and that a new Index (a new
// config version) is generated afresh.
func TestSharedOutput(t *testing.T) {
	objs := append(gentest.Sample(t, "bookinfo/platform/kube/bookinfo.yaml"), gentest.Decode(t, "dr.yaml", `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: ratings-for-v3
spec:
  host: ratings
  workloadSelector:
    matchLabels:
      version: v3
  trafficPolicy:
    loadBalancer:
      simple: RANDOM
`)...)
	objs = gentest.WithPods(objs)
	ix := gentest.Index(objs)
	find := func(res []xds.Resource, name string) xds.Resource {
		for _, r := range res {
			if r.Name == name {
				return r
			}
		}
		t.Fatalf("no cluster %s", name)
		return xds.Resource{}
	}
	const ratings = "outbound|9080||ratings.default.svc.cluster.local"
	v1 := find(cds.Generate(gentest.Sidecar(t, ix, "default", "reviews-v1-0"), ix), ratings)
	v2 := find(cds.Generate(gentest.Sidecar(t, ix, "default", "reviews-v2-0"), ix), ratings)
	v3 := find(cds.Generate(gentest.Sidecar(t, ix, "default", "reviews-v3-0"), ix), ratings)
	if v1.Message != v2.Message {
		t.Error("reviews v1 and v2 have the same scope but do not share the ratings cluster")
	}
	if v3.Message == v1.Message {
		t.Error("reviews v3 has its own DestinationRule but got v1's ratings cluster")
	}
	lb := func(r xds.Resource) clusterv3.Cluster_LbPolicy {
		return clusters(t, []xds.Resource{r})[r.Name].GetLbPolicy()
	}
	if lb(v3) != clusterv3.Cluster_RANDOM || lb(v1) != clusterv3.Cluster_LEAST_REQUEST {
		t.Errorf("ratings lb: v1 %s, v3 %s; want LEAST_REQUEST and RANDOM (workloadSelector)", lb(v1), lb(v3))
	}
	ix2 := gentest.Index(objs)
	again := find(cds.Generate(gentest.Sidecar(t, ix2, "default", "reviews-v1-0"), ix2), ratings)
	if again.Message == v1.Message {
		t.Error("a new Index reused the previous Index's output")
	}
	if !proto.Equal(again.Message, v1.Message) {
		t.Error("the same config generated different clusters")
	}
}

// TestHashPolicy checks the route hash policies the routes generator
// gets for consistent-hash rules, per port and per subset.
func TestHashPolicy(t *testing.T) {
	objs := gentest.Decode(t, "dr.yaml", `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie:
          name: user
          path: /
          ttl: 0s
    portLevelSettings:
    - port:
        number: 9090
      loadBalancer:
        consistentHash:
          useSourceIp: true
  subsets:
  - name: v1
    labels:
      version: v1
    trafficPolicy:
      loadBalancer:
        consistentHash:
          httpHeaderName: x-user
  - name: v2
    labels:
      version: v2
    trafficPolicy:
      loadBalancer:
        simple: ROUND_ROBIN
`)
	var dr *networking.DestinationRule
	for _, o := range objs {
		if o.Kind == config.DestinationRule {
			dr = o.Spec.(*networking.DestinationRule)
		}
	}
	js := func(hp []*routev3.RouteAction_HashPolicy) string {
		var parts []string
		for _, h := range hp {
			parts = append(parts, protojson.Format(h))
		}
		return strings.Join(strings.Fields(strings.Join(parts, ",")), "")
	}
	for _, tc := range []struct {
		port   int
		subset string
		want   string
	}{
		{9080, "", `{"cookie":{"name":"user","path":"/"}}`},
		{9090, "", `{"connectionProperties":{"sourceIp":true}}`},
		{9080, "v1", `{"header":{"headerName":"x-user"}}`},
		{9080, "v2", ``},
		{9080, "nosuch", `{"cookie":{"name":"user","path":"/"}}`},
	} {
		var got []*routev3.RouteAction_HashPolicy
		if tc.subset == "" {
			got = cds.HashPolicy(dr, tc.port)
		} else {
			got = cds.SubsetHashPolicy(dr, tc.port, tc.subset)
		}
		if js(got) != tc.want {
			t.Errorf("port %d subset %q: got %s, want %s", tc.port, tc.subset, js(got), tc.want)
		}
	}
	if cds.HashPolicy(nil, 9080) != nil {
		t.Error("no rule: want no hash policy")
	}
}

// TestClusterNames checks Istio's cluster naming both ways.
func TestClusterNames(t *testing.T) {
	n := cds.ClusterName("outbound", 9080, "v1", "reviews.default.svc.cluster.local")
	if n != "outbound|9080|v1|reviews.default.svc.cluster.local" {
		t.Errorf("ClusterName = %q", n)
	}
	dir, port, subset, host, ok := cds.ParseClusterName(n)
	if !ok || dir != "outbound" || port != 9080 || subset != "v1" || host != "reviews.default.svc.cluster.local" {
		t.Errorf("ParseClusterName(%q) = %q %d %q %q %v", n, dir, port, subset, host, ok)
	}
	for _, bad := range []string{"PassthroughCluster", "outbound|x||h", "outbound|80|"} {
		if _, _, _, _, ok := cds.ParseClusterName(bad); ok {
			t.Errorf("ParseClusterName(%q) accepted", bad)
		}
	}
	if s := cds.IstioSNI(9080, "", "reviews.default.svc.cluster.local"); s != "outbound_.9080_._.reviews.default.svc.cluster.local" {
		t.Errorf("IstioSNI = %q", s)
	}
}
