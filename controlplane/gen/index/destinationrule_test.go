package index_test

import (
	"slices"
	"testing"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/model"
)

// drWorld has a reviews service in namespace svc, ratings in app, and
// DestinationRules in the proxy's namespace, the service's and the root.
const drWorld = `
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: svc}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: app}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-public, namespace: svc, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  host: reviews
  exportTo: ["*"]
  subsets:
  - {name: v1, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-private, namespace: svc, creationTimestamp: "2024-01-02T00:00:00Z"}
spec:
  host: reviews.svc.svc.cluster.local
  exportTo: ["."]
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
  subsets:
  - {name: v1, labels: {version: other}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-local, namespace: app}
spec:
  host: reviews.svc.svc.cluster.local
  exportTo: ["."]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-selected, namespace: app}
spec:
  host: reviews.svc.svc.cluster.local
  workloadSelector:
    matchLabels: {app: special}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: mesh-wide, namespace: istio-system}
spec:
  host: "*.cluster.local"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc-wide, namespace: istio-system}
spec:
  host: "*.svc.svc.cluster.local"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings-for-other, namespace: istio-system}
spec:
  host: ratings.app.svc.cluster.local
  exportTo: [other]
`

func drIndex(t *testing.T) *index.Index {
	t.Helper()
	objs, errs := config.Decode([]byte(drWorld), "world.yaml")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	return index.Build(objs, model.Build(objs, model.Options{}), index.Options{})
}

// TestDestinationRuleLookup checks Istio's lookup order (proxy namespace,
// then the service's namespace, then the root namespace), exportTo,
// workload selectors and host specificity.
func TestDestinationRuleLookup(t *testing.T) {
	ix := drIndex(t)
	const reviews = "reviews.svc.svc.cluster.local"
	const ratings = "ratings.app.svc.cluster.local"
	for _, tc := range []struct {
		proxyNS string
		labels  map[string]string
		host    string
		want    string // namespace/name of the source, "" for none
	}{
		{"app", nil, reviews, "app/reviews-local"},                                    // the proxy's namespace first
		{"app", map[string]string{"app": "special"}, reviews, "app/reviews-selected"}, // a selecting rule before the others
		{"app", map[string]string{"app": "plain"}, reviews, "app/reviews-local"},      // a selector that does not match
		{"other", nil, reviews, "svc/reviews-public"},                                 // the service's namespace, exported to all
		{"svc", nil, reviews, "svc/reviews-public"},                                   // two rules for the host merge, the oldest first
		{"other", nil, ratings, "istio-system/ratings-for-other"},                     // root: exact host beats "*.cluster.local"
		{"third", nil, ratings, "istio-system/mesh-wide"},                             // not exported to third: the wildcard
		{"third", nil, "x.svc.svc.cluster.local", "istio-system/svc-wide"},            // longer wildcard wins
		{"istio-system", nil, "api.example.com", ""},                                  // nothing matches
		{"other", map[string]string{"app": "special"}, reviews, "svc/reviews-public"}, // selectors apply in their namespace only
	} {
		got := ix.DestinationRule(tc.proxyNS, tc.host, tc.labels)
		name := ""
		if got != nil {
			name = got.Source.Meta.Namespace + "/" + got.Source.Meta.Name
		}
		if name != tc.want {
			t.Errorf("proxy in %s %v → %s: got %q, want %q", tc.proxyNS, tc.labels, tc.host, name, tc.want)
		}
	}
}

// TestDestinationRuleMerge checks that two rules for one host in one
// namespace merge as Istio merges them: the oldest rule's subsets win a
// name clash, the newer rule adds its other subsets and, as the oldest
// has none, its traffic policy; the merge is computed once.
func TestDestinationRuleMerge(t *testing.T) {
	ix := drIndex(t)
	got := ix.DestinationRule("svc", "reviews.svc.svc.cluster.local", nil)
	var subsets []string
	for _, s := range got.Rule.GetSubsets() {
		subsets = append(subsets, s.GetName()+"="+s.GetLabels()["version"])
	}
	if want := []string{"v1=v1", "v2=v2"}; !slices.Equal(subsets, want) {
		t.Errorf("merged subsets %q, want %q", subsets, want)
	}
	if lb := got.Rule.GetTrafficPolicy().GetLoadBalancer().GetSimple(); lb != networking.LoadBalancerSettings_RANDOM {
		t.Errorf("merged load balancer %s, want RANDOM from the newer rule", lb)
	}
	if again := ix.DestinationRule("svc", "reviews.svc.svc.cluster.local", nil); again != got {
		t.Error("the merged rule is rebuilt on every lookup; callers caching on it would miss")
	}
	var orig *config.Object
	for _, o := range ix.Objects(config.DestinationRule) {
		if o.Meta.Name == "reviews-public" {
			orig = o
		}
	}
	if n := len(orig.Spec.(*networking.DestinationRule).GetSubsets()); n != 1 {
		t.Errorf("merging modified the stored rule: it has %d subsets", n)
	}
}

// TestDestinationRuleSelectorKey checks the key that tells which proxies
// resolve the same rules.
func TestDestinationRuleSelectorKey(t *testing.T) {
	ix := drIndex(t)
	if k := ix.DestinationRuleSelectorKey("app", map[string]string{"app": "special"}); k != "reviews-selected," {
		t.Errorf("selected proxy key %q", k)
	}
	if k := ix.DestinationRuleSelectorKey("app", map[string]string{"app": "plain"}); k != "" {
		t.Errorf("unselected proxy key %q, want empty", k)
	}
}
