package rds

import (
	"bytes"
	"path/filepath"
	"slices"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	corev1 "k8s.io/api/core/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/gen/index/indextest"
)

// TestEncodedSidecarMatchesBuilt holds the shared, assembled sidecar
// route configurations to the message buildSidecar makes for each proxy
// alone: byte for byte, for every sidecar of every namespace, generated
// one after another on one index so that every proxy reuses what the
// ones before it cached. Inputs: Bookinfo with each networking sample and
// the features file, and testdata/shared.yaml, whose namespaces see
// different VirtualServices and DestinationRules for the same hosts.
func TestEncodedSidecarMatchesBuilt(t *testing.T) {
	cases := map[string][]*config.Object{
		"shared":   indextest.Mesh(indextest.Testdata(t, "shared.yaml")),
		"features": nil,
	}
	files, err := filepath.Glob(filepath.Join(indextest.SamplesDir, "bookinfo/networking/*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no bookinfo networking samples: %v", err)
	}
	for _, f := range files {
		cases[filepath.Base(f)] = nil
	}
	for name, objs := range cases {
		t.Run(name, func(t *testing.T) {
			var ix *index.Index
			switch {
			case objs != nil:
				ix = indextest.Build(objs)
			case name == "features":
				ix = bookinfoIndex(t, indextest.Testdata(t, "features.yaml"))
			default:
				ix = bookinfoIndex(t, indextest.Sample(t, "bookinfo/networking/"+name))
			}
			if checkAgainstBuilt(t, ix) == 0 {
				t.Fatal("no sidecar route configuration was checked")
			}
		})
	}
}

// TestSharedRoutesFollowTheirInputs checks that the namespaces of
// testdata/shared.yaml get the routes their own inputs call for, not
// another namespace's from the cache.
func TestSharedRoutesFollowTheirInputs(t *testing.T) {
	ix := indextest.Build(indextest.Mesh(indextest.Testdata(t, "shared.yaml")))
	route := func(ns, pod, vhost string) *routev3.VirtualHost {
		t.Helper()
		p := indextest.SidecarFor(t, ix, ns, pod)
		rcs := indextest.Unpack[*routev3.RouteConfiguration](t, Generate(p, ix, []string{"80"}))
		return vhostByName(t, rcs[0], vhost)
	}
	const web, api = "web.a.svc.cluster.local:80", "api.b.svc.cluster.local:80"
	// In generation order: each must not see what the one before cached.
	if got := routeNames(route("a", "web-v1-0", web)); len(got) != 1 || got[0] != "rest" {
		t.Errorf("a/web-v1 routes to web = %q, want only rest", got)
	}
	// Both matches are catch-alls for the proxies they apply to.
	if got := routeNames(route("b", "api-0", web)); len(got) != 1 || got[0] != "from-b" {
		t.Errorf("b/api routes to web = %q, want only from-b", got)
	}
	if got := routeNames(route("c", "canary-0", web)); len(got) != 1 || got[0] != "canary" {
		t.Errorf("c/canary routes to web = %q, want only canary", got)
	}
	cw := route("c", "client-0", web)
	if hp := cw.GetRoutes()[0].GetRoute().GetHashPolicy(); len(hp) != 1 || hp[0].GetHeader().GetHeaderName() != "x-user" {
		t.Errorf("c/client web hash policy = %v, want x-user header (c's own DestinationRule)", hp)
	}
	if hp := route("a", "web-v2-0", web).GetRoutes()[0].GetRoute().GetHashPolicy(); len(hp) != 0 {
		t.Errorf("a/web-v2 web hash policy = %v, want none (c's DestinationRule is not exported)", hp)
	}
	// A VirtualService private to c comes before b's public one there, as
	// in Istio, though b's is older.
	if got := routeNames(route("c", "client-0", api)); len(got) != 1 || got[0] != "local-override" {
		t.Errorf("c/client routes to api = %q, want c's local-override", got)
	}
	if got := routeNames(route("a", "web-v1-0", api)); len(got) != 1 || got[0] != "" {
		t.Errorf("a/web-v1 routes to api = %q, want b's unnamed route", got)
	}
	if hp := route("c", "canary-0", api).GetRoutes()[0].GetRoute().GetHashPolicy(); len(hp) != 1 || !hp[0].GetConnectionProperties().GetSourceIp() {
		t.Errorf("c/canary api hash policy = %v, want source IP (selected DestinationRule)", hp)
	}
	if hp := route("c", "client-0", api).GetRoutes()[0].GetRoute().GetHashPolicy(); len(hp) != 0 {
		t.Errorf("c/client api hash policy = %v, want none", hp)
	}
}

// TestRoutesCarriedAcrossVersions changes one object at a time, as a
// config edit does (the store keeps every other object as it was), and
// checks that each new version's sidecar route configurations are
// exactly what buildSidecar makes from that version alone, while routes
// whose inputs did not change were reused rather than translated again.
func TestRoutesCarriedAcrossVersions(t *testing.T) {
	base := indextest.Mesh(indextest.Testdata(t, "shared.yaml"))
	find := func(kind config.Kind, ns, name string) int {
		for i, o := range base {
			if o.Kind == kind && o.Meta.Namespace == ns && o.Meta.Name == name {
				return i
			}
		}
		t.Fatalf("no %s %s/%s in shared.yaml", kind.Kind, ns, name)
		return -1
	}
	// edit returns base with one object replaced by an edited copy.
	edit := func(kind config.Kind, ns, name string, change func(spec proto.Message)) []*config.Object {
		i := find(kind, ns, name)
		o := *base[i]
		spec := proto.Clone(o.Spec.(proto.Message))
		change(spec)
		o.Spec = spec
		out := slices.Clone(base)
		out[i] = &o
		return out
	}
	without := func(kind config.Kind, ns, name string) []*config.Object {
		i := find(kind, ns, name)
		return slices.Delete(slices.Clone(base), i, i+1)
	}
	versions := []struct {
		name string
		objs []*config.Object
	}{
		{"weights", edit(config.VirtualService, "a", "web", func(m proto.Message) {
			r := m.(*networking.VirtualService).GetHttp()[2].GetRoute()
			r[0].Weight, r[1].Weight = 50, 50
		})},
		{"hash policy dropped", edit(config.DestinationRule, "c", "web-hash", func(m proto.Message) {
			m.(*networking.DestinationRule).TrafficPolicy = nil
		})},
		{"selector moved", edit(config.DestinationRule, "c", "api-canary", func(m proto.Message) {
			m.(*networking.DestinationRule).WorkloadSelector.MatchLabels = map[string]string{"app": "client"}
		})},
		{"private override removed", without(config.VirtualService, "c", "api-local")},
		{"destination gains a port", func() []*config.Object {
			i := find(config.Service, "b", "legacy")
			o := *base[i]
			svc := o.Spec.(*corev1.Service).DeepCopy()
			svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "http", Port: 80})
			o.Spec = svc
			out := slices.Clone(base)
			out[i] = &o
			return out
		}()},
		{"source namespace changed", edit(config.VirtualService, "a", "web", func(m proto.Message) {
			m.(*networking.VirtualService).GetHttp()[0].GetMatch()[0].SourceNamespace = "c"
		})},
	}
	before := routesBuilt.Load()
	checkAgainstBuilt(t, indextest.Build(base))
	all := routesBuilt.Load() - before // every route of the first version
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			checkAgainstBuilt(t, indextest.Build(base)) // the version before the edit, cached
			before := routesBuilt.Load()
			checkAgainstBuilt(t, indextest.Build(v.objs))
			if built := routesBuilt.Load() - before; built == 0 || built >= all {
				t.Errorf("the edit translated %d routes of %d; want those it changed, not every one", built, all)
			}
		})
	}
}

// checkAgainstBuilt generates every sidecar's route configurations from
// ix, one proxy after another (so each reuses what the ones before it
// cached), and checks each against marshalling buildSidecar's message for
// that proxy alone. It returns how many it checked.
func checkAgainstBuilt(t *testing.T, ix *index.Index) int {
	t.Helper()
	checked := 0
	for _, w := range ix.Registry().Workloads() {
		p := indextest.SidecarFor(t, ix, w.Namespace, w.Name)
		for _, r := range Generate(p, ix, nil) {
			port, ok := sidecarPort(p, r.Name)
			if !ok {
				continue
			}
			want, err := proto.MarshalOptions{Deterministic: true}.Marshal(buildSidecar(p, ix, port))
			if err != nil {
				t.Fatal(err)
			}
			if got := r.Message.(interface{ GetValue() []byte }).GetValue(); !bytes.Equal(got, want) {
				var rc routev3.RouteConfiguration
				err := proto.Unmarshal(got, &rc)
				t.Errorf("%s route configuration %s: assembled bytes differ from the message built for it alone (decodes: %v)\ngot  %v\nwant %v",
					p.ID, r.Name, err, &rc, buildSidecar(p, ix, port))
			}
			checked++
		}
	}
	return checked
}
