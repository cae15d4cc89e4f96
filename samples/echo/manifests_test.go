package echo_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/config/validation"
)

// load decodes and validates files as skiffd would, failing on any error
// or warning.
func load(t *testing.T, files ...string) []*config.Object {
	t.Helper()
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
				t.Errorf("%s: %v", o.Source, err)
			}
		}
		objs = append(objs, got...)
	}
	return objs
}

// TestManifestsLoad holds the local manifest and every task rule to what
// skiffd accepts, each rule together with the directory skiff up reads.
func TestManifestsLoad(t *testing.T) {
	base := load(t, "platform/local/echo.yaml")
	if len(base) != 5 {
		t.Errorf("platform/local/echo.yaml: %d objects, want Service, ServiceAccount, 2 Deployments, Gateway", len(base))
	}
	rules, err := filepath.Glob("networking/*.yaml")
	if err != nil || len(rules) < 6 {
		t.Fatalf("networking rules: %v %v", rules, err)
	}
	dr := load(t, "networking/destination-rule.yaml")
	for _, f := range rules {
		if f == "networking/destination-rule.yaml" {
			continue
		}
		objs := append(append(append([]*config.Object(nil), base...), dr...), load(t, f)...)
		for _, e := range validation.CheckReferences(objs) {
			t.Errorf("%s: %v", f, e)
		}
	}
}
