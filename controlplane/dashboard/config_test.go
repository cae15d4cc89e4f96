package dashboard

import (
	"context"
	"strings"
	"testing"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/config/validation"
)

// The config a service page shows comes from skiffd's store, with the
// validation messages of each object: a VirtualService edited into an
// invalid one keeps its last good version, and the page says why the edit
// was refused.
func TestStoreConfigCarriesValidationMessages(t *testing.T) {
	store := config.NewStore(validation.Validate, nil)
	load := func(yaml string) {
		objs, errs := config.Decode([]byte(yaml), "reviews.yaml")
		store.Replace("reviews.yaml", objs, errs)
	}
	const svc = `apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
`
	load(svc + `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
`)
	load(svc + `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
      weight: -5
`)
	v, err := StoreConfig(store)(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var vs *ConfigObject
	for _, o := range AppliesTo(v, "reviews", "default") {
		if o.Kind == "VirtualService" {
			vs = &o
		}
	}
	if vs == nil {
		t.Fatalf("the VirtualService reviews is not among the config of reviews.default: %+v", v.Objects)
	}
	if !strings.Contains(string(vs.Spec), `"hosts":["reviews"]`) {
		t.Errorf("its spec as JSON: %s", vs.Spec)
	}
	if len(vs.Messages) == 0 || vs.Messages[0].Level != "error" || !strings.Contains(vs.Messages[0].Text, "weight") || !strings.Contains(vs.Messages[0].Text, "reviews.yaml:") {
		t.Errorf("the refused edit's message: %+v, want an error naming the weight and the file", vs.Messages)
	}
}
