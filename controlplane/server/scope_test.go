package server

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/config/validation"
	"github.com/skiff-mesh/skiff/controlplane/gen"
	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/gen/index/indextest"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// A push must reach every proxy whose config the change alters, with every
// type that changed: a proxy or a type it leaves out keeps stale config.
// For each config object of testdata/scope.yaml, removed and added back,
// and for edits that move a route's destination, this generates each
// proxy's clusters, endpoints, listeners and routes before and after and
// requires the push classify makes to cover whatever differs. It also
// requires the push to leave out the proxies a change cannot reach, as
// Istio's do: another namespace's private config, a Sidecar's namespace,
// a gateway-only VirtualService for sidecars.
func TestPushReachesEveryProxyWhoseConfigChanges(t *testing.T) {
	data, err := os.ReadFile("testdata/scope.yaml")
	if err != nil {
		t.Fatal(err)
	}
	load := func(text string) []*config.Object {
		return indextest.Mesh(indextest.Decode(t, "testdata/scope.yaml", []byte(text)))
	}
	all := load(string(data))
	changes := removals(all)
	for _, e := range []struct{ name, old, new string }{
		// Namespace a's Sidecar imports what its VirtualServices route
		// to: a new destination is a new cluster there.
		{"VirtualService a/web-to-api routing to search instead of api", "{uri: {prefix: /api}}]\n    route: [{destination: {host: api.b.svc.cluster.local}}]",
			"{uri: {prefix: /api}}]\n    route: [{destination: {host: search.b.svc.cluster.local}}]"},
		{"VirtualService b/api-private with 3 retries", "attempts: 5", "attempts: 3"},
		{"DestinationRule b/search with 8 pending requests", "http1MaxPendingRequests: 7", "http1MaxPendingRequests: 8"},
		{"Gateway istio-system/ingress on port 8080", "number: 80, name: http", "number: 8080, name: http"},
	} {
		if !strings.Contains(string(data), e.old) {
			t.Fatalf("%s: testdata/scope.yaml lacks %q", e.name, e.old)
		}
		edited := load(strings.Replace(string(data), e.old, e.new, 1))
		var key config.Key
		for i := range all {
			if !proto.Equal(protoOf(all[i]), protoOf(edited[i])) {
				key = all[i].Key()
			}
		}
		changes = append(changes, change{e.name, key, all, edited}, change{e.name + ", undone", key, edited, all})
	}

	left := checkPushes(t, changes)
	for _, want := range []string{
		"removing VirtualService/b/api-private → web-0.a",                // exported to b alone
		"removing VirtualService/b/api-private → client-0.c",             // exported to b alone
		"removing VirtualService/b/api-private → ingress-0.istio-system", // bound to the mesh alone
		"removing VirtualService/b/api-ingress → web-0.a",                // bound to the gateway alone
		"removing VirtualService/b/api-ingress → api-0.b",
		"removing VirtualService/b/search → web-0.a",  // not imported by a's Sidecar
		"removing DestinationRule/b/api → client-0.c", // exported to b alone
		"removing DestinationRule/b/db → web-0.a",     // not imported by a's Sidecar
		"removing Sidecar/a/default → api-0.b",        // another namespace's
		"removing Sidecar/b/db-only → api-0.b",        // selects db alone
		"removing Sidecar/a/default → ingress-0.istio-system",
		"removing Gateway/istio-system/ingress → web-0.a", // gateways are not sidecars' config
	} {
		if !left[want] {
			t.Errorf("the push of %q reaches that proxy; its config cannot change", want)
		}
	}
}

type change struct {
	name          string
	key           config.Key
	before, after []*config.Object
}

// removals are the changes of removing, then adding back, each object of
// a kind that index.Affects scopes (and ServiceEntries, which it does not).
func removals(all []*config.Object) []change {
	var changes []change
	for _, o := range all {
		switch o.Kind {
		case config.VirtualService, config.DestinationRule, config.Sidecar, config.Gateway, config.ServiceEntry:
		default:
			continue
		}
		without := slices.DeleteFunc(slices.Clone(all), func(x *config.Object) bool { return x == o })
		k := o.Key()
		changes = append(changes,
			change{"removing " + k.String(), k, all, without},
			change{"adding " + k.String(), k, without, all})
	}
	return changes
}

// checkPushes classifies each change as skiffd does and fails the test for
// any proxy whose generated config of some type differs while the push
// leaves out that proxy or that type. It returns the "change → proxy"
// pairs the pushes left out.
func checkPushes(t *testing.T, changes []change) map[string]bool {
	t.Helper()
	left := map[string]bool{}
	for _, c := range changes {
		ixB, ixA := indextest.Build(c.before), indextest.Build(c.after)
		req := classify(config.Change{Keys: []config.Key{c.key}}, snapshotOf(t, c.before), snapshotOf(t, c.after), ixB, ixA)
		for _, p := range scopeProxies(t, ixA) {
			reached := req.Proxies == nil || req.Proxies(p)
			if !reached {
				left[c.name+" → "+p.ID] = true
			}
			for _, typ := range []string{gen.ClusterType, gen.EndpointType, gen.ListenerType, gen.RouteType} {
				if reached && (len(req.Types) == 0 || req.Types[typ]) {
					continue
				}
				if diff := changed(t, p, typ, ixB, ixA); diff != "" {
					t.Errorf("%s changes %s's %s (%s), but the push (types %v, proxy reached: %v) leaves it out",
						c.name, p.ID, xds.ShortType(typ), diff, slices.Sorted(mapsKeys(req.Types)), reached)
				}
			}
		}
	}
	return left
}

// The same over Bookinfo with each of Istio's networking samples: every
// object of the sample removed and added back.
func TestBookinfoPushesReachEveryProxyWhoseConfigChanges(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(indextest.SamplesDir, "bookinfo", "networking", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Bookinfo networking samples under %s: %v", indextest.SamplesDir, err)
	}
	platform := indextest.Sample(t, "bookinfo/platform/kube/bookinfo.yaml")
	gatewayLeftSidecars := false
	for _, f := range files {
		rel, _ := filepath.Rel(indextest.SamplesDir, f)
		t.Run(filepath.Base(f), func(t *testing.T) {
			all := indextest.Mesh(append(slices.Clone(platform), indextest.Sample(t, rel)...))
			left := checkPushes(t, removals(all))
			gatewayLeftSidecars = gatewayLeftSidecars || left["removing Gateway/default/bookinfo-gateway → productpage-v1-0.default"]
		})
	}
	if !gatewayLeftSidecars {
		t.Errorf("removing bookinfo-gateway was pushed to productpage's sidecar; sidecars do not take Gateways")
	}
}

func protoOf(o *config.Object) proto.Message {
	m, _ := o.Spec.(proto.Message)
	return m
}

func mapsKeys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(xds.ShortType(k)) {
				return
			}
		}
	}
}

// snapshotOf is a store snapshot holding objs.
func snapshotOf(t *testing.T, objs []*config.Object) *config.Snapshot {
	t.Helper()
	st := config.NewStore(validation.Validate, slog.New(slog.DiscardHandler))
	st.Replace("scope.yaml", objs, nil)
	if got := len(st.Snapshot().All()); got != len(objs) {
		t.Fatalf("the store holds %d of %d objects: %v", got, len(objs), st.Errors())
	}
	return st.Snapshot()
}

// scopeProxies is a sidecar for every workload and the ingress gateway.
func scopeProxies(t *testing.T, ix *index.Index) []*xds.Proxy {
	var out []*xds.Proxy
	for _, w := range ix.Registry().Workloads() {
		out = append(out, indextest.SidecarFor(t, ix, w.Namespace, w.Name))
	}
	gw := indextest.Router("istio-system", map[string]string{"istio": "ingressgateway"})
	gw.ID = "ingress-0.istio-system"
	return append(out, gw)
}

// changed describes how p's resources of typ differ between two indexes,
// or is "" when they do not. Endpoints and routes are compared by name
// for names both versions have: a name that comes or goes follows a
// change of clusters or listeners, which the proxy subscribes after.
func changed(t *testing.T, p *xds.Proxy, typ string, before, after *index.Index) string {
	t.Helper()
	b, a := generate(t, p, typ, before), generate(t, p, typ, after)
	common := typ == gen.EndpointType || typ == gen.RouteType
	var diffs []string
	for name, x := range b {
		y, ok := a[name]
		switch {
		case !ok && !common:
			diffs = append(diffs, "-"+name)
		case ok && !bytes.Equal(x, y):
			diffs = append(diffs, "~"+name)
		}
	}
	for name := range a {
		if _, ok := b[name]; !ok && !common {
			diffs = append(diffs, "+"+name)
		}
	}
	slices.Sort(diffs)
	return strings.Join(diffs, " ")
}

func generate(t *testing.T, p *xds.Proxy, typ string, ix *index.Index) map[string][]byte {
	t.Helper()
	g := gen.New(gen.Options{})
	g.Set(ix)
	res, err := g.Generate(p, typ, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, r := range res {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r.Message)
		if err != nil {
			t.Fatal(err)
		}
		out[r.Name] = b
	}
	return out
}
