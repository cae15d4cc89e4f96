package cds_test

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/skiff-mesh/skiff/controlplane/gen/cds"
	"github.com/skiff-mesh/skiff/controlplane/gen/cds/gentest"
	"github.com/skiff-mesh/skiff/controlplane/gen/eds"
)

// TestAutoMTLSWorkloadDisable: a workload-level PeerAuthentication
// DISABLE (reviews-v1) keeps auto mTLS on the cluster but takes that
// workload's endpoint out of the tlsMode-istio match, as Istio's EDS does;
// the other versions keep mTLS. With auto mTLS off no cluster matches.
func TestAutoMTLSWorkloadDisable(t *testing.T) {
	objs := gentest.Sample(t, "bookinfo/platform/kube/bookinfo.yaml")
	objs = append(objs, gentest.Decode(t, "pa.yaml", `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews-v1, namespace: default}
spec:
  selector: {matchLabels: {app: reviews, version: v1}}
  mtls: {mode: DISABLE}`)...)
	ix := gentest.Index(gentest.WithPods(objs))
	p := gentest.Sidecar(t, ix, "default", "productpage-v1-0")
	const name = "outbound|9080||reviews.default.svc.cluster.local"

	var c *clusterv3.Cluster
	for _, m := range gentest.Messages(t, cds.Generate(p, ix)) {
		if cl := m.(*clusterv3.Cluster); cl.GetName() == name {
			c = cl
		}
	}
	if ms := c.GetTransportSocketMatches(); len(ms) != 2 || ms[0].GetName() != "tlsMode-istio" || ms[1].GetName() != "tlsMode-disabled" {
		t.Fatalf("reviews cluster transport socket matches: %v", ms)
	}
	cla := gentest.Messages(t, eds.Generate(p, ix, []string{name}))[0].(*endpointv3.ClusterLoadAssignment)
	istio := map[string]bool{}
	for _, l := range cla.GetEndpoints() {
		for _, ep := range l.GetLbEndpoints() {
			addr := ep.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()
			istio[addr] = ep.GetMetadata().GetFilterMetadata()["envoy.transport_socket_match"].GetFields()["tlsMode"].GetStringValue() == "istio"
		}
	}
	v1 := ix.Registry().WorkloadsFor("default", map[string]string{"app": "reviews", "version": "v1"})[0].IPs[0]
	v2 := ix.Registry().WorkloadsFor("default", map[string]string{"app": "reviews", "version": "v2"})[0].IPs[0]
	if len(istio) != 3 || istio[v1] || !istio[v2] {
		t.Errorf("endpoints matching tlsMode istio: %v (v1 %s must not, v2 %s must)", istio, v1, v2)
	}

	off := cds.New(cds.Options{DisableAutoMTLS: true})
	for _, m := range gentest.Messages(t, off.Generate(p, ix)) {
		if cl := m.(*clusterv3.Cluster); cl.GetTransportSocketMatches() != nil || cl.GetTransportSocket() != nil {
			t.Errorf("auto mTLS disabled, yet cluster %s has TLS", cl.GetName())
		}
	}
}
