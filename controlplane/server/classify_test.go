package server

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/config/validation"
	"github.com/skiff-mesh/skiff/controlplane/gen"
	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/model"
)

// registry is the index (and so the registry) of a mesh's YAML.
func registry(t *testing.T, yaml string) *index.Index {
	t.Helper()
	objs, errs := config.Decode([]byte(yaml), "mesh.yaml")
	if len(errs) > 0 {
		t.Fatalf("decoding: %v", errs)
	}
	return index.Build(objs, model.Build(objs, model.Options{}), index.Options{})
}

const twoServices = `apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec: {selector: {app: ratings}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: ratings-1, namespace: default, labels: {app: ratings}}
spec: {containers: [{name: app, image: ratings}]}
status: {podIP: 10.0.0.1, conditions: [{type: Ready, status: "True"}]}
`

func pod(name, app, ip, ready string) string {
	return "---\napiVersion: v1\nkind: Pod\nmetadata: {name: " + name + ", namespace: default, labels: {app: " + app + "}}\n" +
		"spec: {containers: [{name: app, image: x}]}\nstatus: {podIP: " + ip + ", conditions: [{type: Ready, status: \"" + ready + "\"}]}\n"
}

// An endpoint change pushes only the ClusterLoadAssignments of the
// services whose endpoints differ: a pod added, turned unready, or
// relabelled; the other services are left out.
func TestEndpointChangeNamesChangedServices(t *testing.T) {
	before := registry(t, twoServices+pod("reviews-1", "reviews", "10.0.0.2", "True"))
	podKey := []config.Key{{Kind: config.Pod, Namespace: "default", Name: "reviews-2"}}
	for _, c := range []struct {
		name, after string
		want        []string
	}{
		{"a pod added", twoServices + pod("reviews-1", "reviews", "10.0.0.2", "True") + pod("reviews-2", "reviews", "10.0.0.3", "True"), []string{"reviews.default.svc.cluster.local"}},
		{"a pod no longer ready", twoServices + pod("reviews-1", "reviews", "10.0.0.2", "False"), []string{"reviews.default.svc.cluster.local"}},
		{"a pod moving to another service", twoServices + pod("reviews-1", "ratings", "10.0.0.2", "True"), []string{"ratings.default.svc.cluster.local", "reviews.default.svc.cluster.local"}},
		{"nothing an endpoint is made of", twoServices + pod("reviews-1", "reviews", "10.0.0.2", "True"), nil},
	} {
		after := registry(t, c.after)
		empty := config.NewStore(validation.Validate, slog.New(slog.DiscardHandler)).Snapshot()
		req := classify(config.Change{Keys: podKey}, empty, empty, before, after)
		if req.Full || req.Reason != "endpoint" {
			t.Errorf("%s: full=%v reason=%q, want an endpoint push", c.name, req.Full, req.Reason)
		}
		var got []string
		for h := range req.EndpointsOf {
			got = append(got, h)
		}
		if strings.Join(slices.Sorted(slices.Values(got)), ",") != strings.Join(c.want, ",") {
			t.Errorf("%s: endpoints pushed for %v, want %v", c.name, got, c.want)
		}
	}
}

func snapshot(t *testing.T, yaml string) *config.Snapshot {
	t.Helper()
	st := config.NewStore(validation.Validate, slog.New(slog.DiscardHandler))
	objs, errs := config.Decode([]byte(yaml), "vs.yaml")
	if len(errs) > 0 {
		t.Fatalf("decoding: %v", errs)
	}
	st.Replace("vs.yaml", objs, nil)
	return st.Snapshot()
}

// A VirtualService change pushes routes; listeners only when the old or
// the new version has tcp or tls routes (the only parts listeners read).
func TestVirtualServiceChangePushesListenersOnlyForL4Routes(t *testing.T) {
	reg := registry(t, twoServices)
	const httpVS = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}, weight: %d}, {destination: {host: ratings}, weight: %d}]}]
`
	const tcpVS = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  tcp: [{route: [{destination: {host: reviews}}]}]
`
	key := []config.Key{{Kind: config.VirtualService, Namespace: "default", Name: "reviews"}}
	empty := snapshot(t, "")
	for _, c := range []struct {
		name          string
		before, after *config.Snapshot
		listeners     bool
	}{
		{"http weights changed", snapshot(t, fmt.Sprintf(httpVS, 90, 10)), snapshot(t, fmt.Sprintf(httpVS, 50, 50)), false},
		{"http VirtualService created", empty, snapshot(t, fmt.Sprintf(httpVS, 90, 10)), false},
		{"http VirtualService deleted", snapshot(t, fmt.Sprintf(httpVS, 90, 10)), empty, false},
		{"tcp VirtualService created", empty, snapshot(t, tcpVS), true},
		{"tcp routes replaced by http ones", snapshot(t, tcpVS), snapshot(t, fmt.Sprintf(httpVS, 90, 10)), true},
	} {
		req := classify(config.Change{Keys: key}, c.before, c.after, reg, reg)
		if !req.Types[gen.RouteType] || req.Types[gen.ListenerType] != c.listeners || req.Types[gen.ClusterType] || req.Types[gen.EndpointType] {
			t.Errorf("%s: pushes %v, want routes%s", c.name, req.Types, map[bool]string{true: " and listeners", false: " only"}[c.listeners])
		}
	}
}
