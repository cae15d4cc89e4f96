// Package deps guards each binary's imports: the data plane's only inputs
// are xDS, its certificate and its bootstrap, so skiff-proxy must never link
// a Kubernetes client library.
package deps

import (
	"os/exec"
	"strings"
	"testing"
)

// forbidden maps a binary to import path prefixes it must not depend on.
var forbidden = map[string][]string{
	"github.com/skiff-mesh/skiff/cmd/skiff-proxy": {
		"k8s.io/", "sigs.k8s.io/", "istio.io/client-go", "github.com/skiff-mesh/skiff/controlplane",
	},
}

func TestBinaryDependencies(t *testing.T) {
	for bin, bad := range forbidden {
		out, err := exec.Command("go", "list", "-deps", bin).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", bin, err, out)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 10 {
			t.Fatalf("go list -deps %s listed only %d packages; the check would prove nothing", bin, len(deps))
		}
		for _, d := range deps {
			for _, prefix := range bad {
				if strings.HasPrefix(d, prefix) {
					t.Errorf("%s depends on %s (forbidden prefix %q): the data plane must not import Kubernetes or control-plane code", bin, d, prefix)
				}
			}
		}
	}
}
