package bookinfo_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/config/validation"
)

// TestLocalPlatformLoads holds the directory `skiff up` reads, together
// with each of Istio's Bookinfo routing files, to what skiffd accepts.
func TestLocalPlatformLoads(t *testing.T) {
	load := func(files ...string) []*config.Object {
		var objs []*config.Object
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			got, errs := config.Decode(data, f)
			for _, err := range errs {
				t.Errorf("%v", err)
			}
			for _, o := range got {
				if err := validation.Validate(o); err != nil {
					if errs, _ := validation.Split(err); len(errs) > 0 || filepath.Dir(f) == "platform/local" {
						t.Errorf("%s: %v", o.Source, err)
					}
				}
			}
			objs = append(objs, got...)
		}
		return objs
	}
	base := load("platform/local/bookinfo.yaml", "platform/local/bookinfo-gateway.yaml")
	if len(base) != 16 {
		t.Errorf("platform/local: %d objects, want 4 Services, 4 ServiceAccounts, 6 Deployments, Gateway, VirtualService", len(base))
	}
	istio := "../../../shared/istio-samples/bookinfo/networking/"
	for _, f := range []string{"virtual-service-all-v1.yaml", "virtual-service-reviews-test-v2.yaml",
		"virtual-service-ratings-test-delay.yaml", "virtual-service-ratings-test-abort.yaml", "virtual-service-reviews-50-v3.yaml"} {
		objs := append(append(append([]*config.Object(nil), base...), load(istio+"destination-rule-all.yaml")...), load(istio+f)...)
		for _, e := range validation.CheckReferences(objs) {
			t.Errorf("%s: %v", f, e)
		}
	}
}
