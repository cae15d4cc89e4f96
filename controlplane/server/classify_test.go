package server

import (
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/config/validation"
	"github.com/skiff-mesh/skiff/controlplane/model"
)

func registry(t *testing.T, yaml string) *model.Registry {
	t.Helper()
	objs, errs := config.Decode([]byte(yaml), "mesh.yaml")
	if len(errs) > 0 {
		t.Fatalf("decoding: %v", errs)
	}
	return model.Build(objs, model.Options{})
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
		req := classify(config.Change{Keys: podKey}, config.NewStore(validation.Validate, slog.New(slog.DiscardHandler)).Snapshot(), before, after)
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
