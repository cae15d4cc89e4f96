package eds_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/skiff-mesh/skiff/controlplane/gen/cds"
	"github.com/skiff-mesh/skiff/controlplane/gen/cds/gentest"
	"github.com/skiff-mesh/skiff/controlplane/gen/eds"
	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/xds"
	"github.com/skiff-mesh/skiff/internal/testing/golden"
)

func assignments(t *testing.T, res []xds.Resource) []*endpointv3.ClusterLoadAssignment {
	t.Helper()
	var out []*endpointv3.ClusterLoadAssignment
	for _, m := range gentest.Messages(t, res) {
		out = append(out, m.(*endpointv3.ClusterLoadAssignment))
	}
	return out
}

// lines renders an assignment one endpoint per line:
// "priority locality(weight) address:port weight health".
func lines(cla *endpointv3.ClusterLoadAssignment) []string {
	var out []string
	for _, l := range cla.GetEndpoints() {
		loc := l.GetLocality().GetRegion() + "/" + l.GetLocality().GetZone() + "/" + l.GetLocality().GetSubZone()
		for _, e := range l.GetLbEndpoints() {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			out = append(out, fmt.Sprintf("p%d %s(%d) %s:%d w%d %s", l.GetPriority(), loc, l.GetLoadBalancingWeight().GetValue(),
				sa.GetAddress(), sa.GetPortValue(), e.GetLoadBalancingWeight().GetValue(), e.GetHealthStatus()))
		}
	}
	return out
}

func diff(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got:\n  %s\nwant:\n  %s", what, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestBookinfoGolden pins the endpoints of every cluster productpage has
// with Bookinfo's DestinationRules (subsets narrowed by labels), asked
// for by wildcard, and checks the wildcard covers exactly its EDS clusters.
func TestBookinfoGolden(t *testing.T) {
	ix := gentest.Bookinfo(t, "bookinfo/networking/destination-rule-all.yaml")
	p := gentest.Sidecar(t, ix, "default", "productpage-v1-0")
	res := eds.Generate(p, ix, nil)
	golden.Compare(t, filepath.Join("testdata", "bookinfo-destination-rule-all.json"), golden.MarshalProtos(t, gentest.Messages(t, res)))

	var want []string
	for _, r := range cds.Generate(p, ix) {
		if strings.HasPrefix(r.Name, "outbound|") {
			want = append(want, r.Name)
		}
	}
	var got []string
	for _, r := range res {
		got = append(got, r.Name)
	}
	diff(t, "wildcard EDS names", got, want)
	for _, cla := range assignments(t, res) {
		if cla.GetClusterName() == "outbound|9080|v2|reviews.default.svc.cluster.local" {
			diff(t, "reviews v2", lines(cla), []string{"p0 //(1) 198.18.0.14:9080 w1 HEALTHY"})
		}
	}
}

// TestNamesWithoutEndpoints checks that names the proxy cannot have
// endpoints for get an empty assignment (so its cluster does not wait
// forever), in the order asked.
func TestNamesWithoutEndpoints(t *testing.T) {
	ix := gentest.Bookinfo(t, "bookinfo/networking/destination-rule-all.yaml")
	p := gentest.Sidecar(t, ix, "default", "productpage-v1-0")
	names := []string{
		"outbound|9080|nosuch|reviews.default.svc.cluster.local", // no such subset
		"outbound|1234||reviews.default.svc.cluster.local",       // no such port
		"outbound|9080||nosuch.default.svc.cluster.local",        // no such service
		"PassthroughCluster", // not an Istio cluster name
		"inbound|9080||",     // not outbound
		"outbound|9080||reviews.default.svc.cluster.local",
	}
	res := assignments(t, eds.Generate(p, ix, names))
	for i, cla := range res {
		if cla.GetClusterName() != names[i] {
			t.Errorf("answer %d is for %q, want %q", i, cla.GetClusterName(), names[i])
		}
		if n := len(cla.GetEndpoints()); (i < 5 && n != 0) || (i == 5 && n == 0) {
			t.Errorf("%s: %d locality groups", names[i], n)
		}
	}
}

// TestHealthAndWeights checks endpoint states from an EndpointSlice:
// ready → HEALTHY, not ready → UNHEALTHY (kept, so the proxy knows it),
// terminating → DRAINING; and a service whose port is declared by name.
func TestHealthAndWeights(t *testing.T) {
	objs := gentest.Decode(t, "slice.yaml", `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [198.18.3.1]
  conditions: {ready: true}
- addresses: [198.18.3.2]
  conditions: {ready: false}
- addresses: [198.18.3.3]
  conditions: {ready: false, terminating: true}
`)
	ix := gentest.Index(objs)
	p := &xds.Proxy{ID: "client.default", Type: xds.SidecarProxy, Namespace: "default", IPs: []string{"198.18.9.9"}}
	res := assignments(t, eds.Generate(p, ix, []string{"outbound|80||web.default.svc.cluster.local"}))
	diff(t, "web", lines(res[0]), []string{
		"p0 //(3) 198.18.3.1:8080 w1 HEALTHY",
		"p0 //(3) 198.18.3.2:8080 w1 UNHEALTHY",
		"p0 //(3) 198.18.3.3:8080 w1 DRAINING",
	})
}

// localityWorld is a mesh-internal service with one endpoint per
// locality, and a DestinationRule per locality feature (by subset).
const localityWorld = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.internal]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - {address: 198.18.4.1, locality: us-west/zone1/sub1, labels: {rack: a}}
  - {address: 198.18.4.2, locality: us-west/zone1/sub2, labels: {rack: b}, weight: 3}
  - {address: 198.18.4.3, locality: us-west/zone2, labels: {rack: a}}
  - {address: 198.18.4.4, locality: us-east/zone1, labels: {rack: a}}
  - {address: 198.18.4.5, locality: eu/zone1, labels: {rack: c}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: default}
spec:
  host: api.internal
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 3}
  subsets:
  - name: failover
    labels: {}
    trafficPolicy:
      outlierDetection: {consecutive5xxErrors: 3}
      loadBalancer:
        localityLbSetting:
          failover: [{from: us-west, to: eu}]
  - name: by-rack
    trafficPolicy:
      outlierDetection: {consecutive5xxErrors: 3}
      loadBalancer:
        localityLbSetting:
          failoverPriority: [rack]
  - name: distribute
    trafficPolicy:
      loadBalancer:
        localityLbSetting:
          distribute:
          - from: us-west/zone1/*
            to: {"us-west/zone1/*": 80, "us-west/zone2/*": 20}
  - name: no-outlier
    trafficPolicy:
      outlierDetection: {}
      loadBalancer:
        localityLbSetting:
          enabled: false
`

func localityProxy(region, zone, sub string, labels map[string]string) *xds.Proxy {
	return &xds.Proxy{ID: "client.default", Type: xds.SidecarProxy, Namespace: "default", IPs: []string{"198.18.9.9"},
		Labels: labels, Locality: &corev3.Locality{Region: region, Zone: zone, SubZone: sub}}
}

func localityIndex(t *testing.T) *index.Index {
	return gentest.Index(gentest.Decode(t, "locality.yaml", localityWorld))
}

// TestLocalityFailover checks Istio's locality failover priorities, which
// apply only with outlier detection: same subzone 0, same zone 1, same
// region 2, elsewhere 3; a failover rule from the proxy's region keeps
// only its target region at 3; priorities are renumbered without gaps.
func TestLocalityFailover(t *testing.T) {
	ix := localityIndex(t)
	p := localityProxy("us-west", "zone1", "sub1", nil)
	res := assignments(t, eds.Generate(p, ix, []string{"outbound|80||api.internal", "outbound|80|failover|api.internal"}))
	diff(t, "default failover", lines(res[0]), []string{
		"p0 us-west/zone1/sub1(1) 198.18.4.1:80 w1 HEALTHY",
		"p1 us-west/zone1/sub2(3) 198.18.4.2:80 w3 HEALTHY",
		"p2 us-west/zone2/(1) 198.18.4.3:80 w1 HEALTHY",
		"p3 eu/zone1/(1) 198.18.4.5:80 w1 HEALTHY",
		"p3 us-east/zone1/(1) 198.18.4.4:80 w1 HEALTHY",
	})
	diff(t, "failover us-west → eu", lines(res[1]), []string{
		"p0 us-west/zone1/sub1(1) 198.18.4.1:80 w1 HEALTHY",
		"p1 us-west/zone1/sub2(3) 198.18.4.2:80 w3 HEALTHY",
		"p2 us-west/zone2/(1) 198.18.4.3:80 w1 HEALTHY",
		"p3 eu/zone1/(1) 198.18.4.5:80 w1 HEALTHY",
		"p4 us-east/zone1/(1) 198.18.4.4:80 w1 HEALTHY",
	})

	// Without outlier detection (or with locality balancing off) there
	// is one priority.
	res = assignments(t, eds.Generate(p, ix, []string{"outbound|80|no-outlier|api.internal"}))
	for _, l := range res[0].GetEndpoints() {
		if l.GetPriority() != 0 {
			t.Errorf("locality balancing disabled: %v has priority %d", l.GetLocality(), l.GetPriority())
		}
	}

	// Another proxy locality sees other priorities; both answers stay right.
	east := assignments(t, eds.Generate(localityProxy("us-east", "zone1", "", nil), ix, []string{"outbound|80||api.internal"}))
	if got := lines(east[0])[0]; got != "p0 us-east/zone1/(1) 198.18.4.4:80 w1 HEALTHY" {
		t.Errorf("us-east proxy: first endpoint %q", got)
	}
	again := assignments(t, eds.Generate(p, ix, []string{"outbound|80||api.internal"}))
	if got := lines(again[0])[0]; got != "p0 us-west/zone1/sub1(1) 198.18.4.1:80 w1 HEALTHY" {
		t.Errorf("us-west proxy after us-east: first endpoint %q", got)
	}
}

// TestFailoverPriority checks failoverPriority: endpoints whose labels
// match the proxy's on the listed labels come first.
func TestFailoverPriority(t *testing.T) {
	ix := localityIndex(t)
	res := assignments(t, eds.Generate(localityProxy("us-west", "zone1", "sub1", map[string]string{"rack": "a"}), ix,
		[]string{"outbound|80|by-rack|api.internal"}))
	diff(t, "by rack a", lines(res[0]), []string{
		"p0 us-east/zone1/(1) 198.18.4.4:80 w1 HEALTHY",
		"p0 us-west/zone1/sub1(1) 198.18.4.1:80 w1 HEALTHY",
		"p0 us-west/zone2/(1) 198.18.4.3:80 w1 HEALTHY",
		"p1 eu/zone1/(1) 198.18.4.5:80 w1 HEALTHY",
		"p1 us-west/zone1/sub2(3) 198.18.4.2:80 w3 HEALTHY",
	})
}

// TestLocalityDistribute checks distribute: for a proxy in the "from"
// locality each "to" weight is shared by the localities it matches in
// proportion to their weights, and unlisted localities are dropped; other
// proxies keep the plain weights.
func TestLocalityDistribute(t *testing.T) {
	ix := localityIndex(t)
	name := []string{"outbound|80|distribute|api.internal"}
	res := assignments(t, eds.Generate(localityProxy("us-west", "zone1", "sub2", nil), ix, name))
	diff(t, "from us-west/zone1", lines(res[0]), []string{
		"p0 us-west/zone1/sub1(20) 198.18.4.1:80 w1 HEALTHY",
		"p0 us-west/zone1/sub2(60) 198.18.4.2:80 w3 HEALTHY",
		"p0 us-west/zone2/(20) 198.18.4.3:80 w1 HEALTHY",
	})
	res = assignments(t, eds.Generate(localityProxy("eu", "zone1", "", nil), ix, name))
	if n := len(lines(res[0])); n != 5 {
		t.Errorf("proxy outside every from: %d endpoints, want all 5", n)
	}
}

// TestSharedOutput checks that proxies share one encoding per assignment.
func TestSharedOutput(t *testing.T) {
	ix := gentest.Bookinfo(t)
	a := eds.Generate(gentest.Sidecar(t, ix, "default", "productpage-v1-0"), ix, []string{"outbound|9080||reviews.default.svc.cluster.local"})
	b := eds.Generate(gentest.Sidecar(t, ix, "default", "reviews-v1-0"), ix, []string{"outbound|9080||reviews.default.svc.cluster.local"})
	if a[0].Message != b[0].Message {
		t.Error("two proxies got separately built assignments for the same cluster")
	}
	diff(t, "reviews", lines(assignments(t, a)[0]), []string{
		"p0 //(3) 198.18.0.13:9080 w1 HEALTHY",
		"p0 //(3) 198.18.0.14:9080 w1 HEALTHY",
		"p0 //(3) 198.18.0.15:9080 w1 HEALTHY",
	})
}

// TestVisibility checks that what one namespace cannot see does not leak
// into, or hide from, another through the shared cache: a service
// exported only to its own namespace has no endpoints for a proxy
// elsewhere, whichever asks first.
func TestVisibility(t *testing.T) {
	ix := gentest.Index(gentest.Decode(t, "private.yaml", `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: private, namespace: team}
spec:
  hosts: [private.internal]
  exportTo: ["."]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 198.18.6.1}]
`))
	name := []string{"outbound|80||private.internal"}
	outside := &xds.Proxy{ID: "a.other", Type: xds.SidecarProxy, Namespace: "other", IPs: []string{"198.18.9.1"}}
	inside := &xds.Proxy{ID: "b.team", Type: xds.SidecarProxy, Namespace: "team", IPs: []string{"198.18.9.2"}}
	if got := lines(assignments(t, eds.Generate(outside, ix, name))[0]); len(got) != 0 {
		t.Errorf("proxy outside the service's namespace got endpoints %q", got)
	}
	diff(t, "proxy inside", lines(assignments(t, eds.Generate(inside, ix, name))[0]), []string{"p0 //(1) 198.18.6.1:80 w1 HEALTHY"})
	if got := lines(assignments(t, eds.Generate(outside, ix, name))[0]); len(got) != 0 {
		t.Errorf("after the inside proxy, the outside proxy got endpoints %q", got)
	}
}
