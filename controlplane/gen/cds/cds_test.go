package cds_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/skiff-mesh/skiff/controlplane/gen/cds"
	"github.com/skiff-mesh/skiff/controlplane/gen/cds/gentest"
	"github.com/skiff-mesh/skiff/controlplane/gen/eds"
	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/xds"
	"github.com/skiff-mesh/skiff/internal/testing/golden"
)

// bookinfoNetworking lists every Bookinfo networking sample; each must
// generate clusters and endpoints skiff-proxy accepts.
var bookinfoNetworking = []string{
	"bookinfo-gateway.yaml", "certmanager-gateway.yaml", "destination-rule-all-mtls.yaml",
	"destination-rule-all.yaml", "destination-rule-reviews.yaml", "egress-rule-google-apis.yaml",
	"fault-injection-details-v1.yaml", "virtual-service-all-v1.yaml", "virtual-service-details-v2.yaml",
	"virtual-service-ratings-db.yaml", "virtual-service-ratings-mysql-vm.yaml", "virtual-service-ratings-mysql.yaml",
	"virtual-service-ratings-test-abort.yaml", "virtual-service-ratings-test-delay.yaml",
	"virtual-service-reviews-50-v3.yaml", "virtual-service-reviews-80-20.yaml", "virtual-service-reviews-90-10.yaml",
	"virtual-service-reviews-jason-v2-v3.yaml", "virtual-service-reviews-test-v2.yaml",
	"virtual-service-reviews-v2-v3.yaml", "virtual-service-reviews-v3.yaml",
}

// TestBookinfoGolden pins the clusters of Bookinfo's productpage sidecar
// alone and with each DestinationRule sample, and checks them (and the
// endpoints they ask for) against skiff-proxy's cluster manager.
func TestBookinfoGolden(t *testing.T) {
	for _, tc := range []struct{ name, file string }{
		{"bookinfo", ""},
		{"destination-rule-all", "destination-rule-all.yaml"},
		{"destination-rule-all-mtls", "destination-rule-all-mtls.yaml"},
		{"destination-rule-reviews", "destination-rule-reviews.yaml"},
		{"egress-rule-google-apis", "egress-rule-google-apis.yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var extra []string
			if tc.file != "" {
				extra = append(extra, "bookinfo/networking/"+tc.file)
			}
			ix := gentest.Bookinfo(t, extra...)
			p := gentest.Sidecar(t, ix, "default", "productpage-v1-0")
			res := cds.Generate(p, ix)
			golden.Compare(t, filepath.Join("testdata", "bookinfo", tc.name+".json"), golden.MarshalProtos(t, gentest.Messages(t, res)))
			gentest.Accept(t, res, func(names []string) []xds.Resource { return eds.Generate(p, ix, names) })
		})
	}
}

// TestBookinfoNetworkingAccepted generates, for every Bookinfo networking
// sample, the clusters and endpoints of every Bookinfo sidecar and of an
// ingress gateway, and has skiff-proxy accept them all.
func TestBookinfoNetworkingAccepted(t *testing.T) {
	for _, f := range bookinfoNetworking {
		t.Run(strings.TrimSuffix(f, ".yaml"), func(t *testing.T) {
			ix := gentest.Bookinfo(t, "bookinfo/networking/"+f)
			proxies := []*xds.Proxy{{ID: "ingress.istio-system", Type: xds.RouterProxy, Namespace: "istio-system",
				Labels: map[string]string{"istio": "ingressgateway"}, IPs: []string{"198.18.1.1"}}}
			for _, w := range ix.Registry().Workloads() {
				proxies = append(proxies, gentest.Sidecar(t, ix, w.Namespace, w.Name))
			}
			if len(proxies) < 7 {
				t.Fatalf("want the 6 Bookinfo pods and a gateway, have %d proxies", len(proxies))
			}
			for _, p := range proxies {
				res := cds.Generate(p, ix)
				if len(res) < 5 {
					t.Errorf("%s: only %d clusters", p.ID, len(res))
				}
				gentest.Accept(t, res, func(names []string) []xds.Resource { return eds.Generate(p, ix, names) })
			}
		})
	}
}

// TestDestinationRuleFeatures pins how each DestinationRule feature maps
// to cluster fields: one input file per feature under
// testdata/features, applied to Bookinfo's reviews service, seen from
// productpage; the golden holds the reviews clusters only.
func TestDestinationRuleFeatures(t *testing.T) {
	files, err := filepath.Glob("testdata/features/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no feature inputs: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			ix := featureIndex(t, f)
			p := gentest.Sidecar(t, ix, "default", "productpage-v1-0")
			res := cds.Generate(p, ix)
			gentest.Accept(t, res, func(names []string) []xds.Resource { return eds.Generate(p, ix, names) })
			var reviews []xds.Resource
			for _, r := range res {
				if strings.HasSuffix(r.Name, "|reviews.default.svc.cluster.local") {
					reviews = append(reviews, r)
				}
			}
			golden.Compare(t, strings.TrimSuffix(f, ".yaml")+".json", golden.MarshalProtos(t, gentest.Messages(t, reviews)))
		})
	}
}

func featureIndex(t *testing.T, file string) *index.Index {
	t.Helper()
	objs := gentest.Sample(t, "bookinfo/platform/kube/bookinfo.yaml")
	objs = append(objs, gentest.Load(t, file)...)
	return gentest.Index(gentest.WithPods(objs))
}
