// Package bookinfo replays Istio's Bookinfo tasks (request routing, fault
// injection, traffic shifting, request timeouts, ingress, the Gateway API
// variants) on the local mesh, black box: it builds the real skiff,
// skiff-proxy and bookinfo binaries, runs `skiff up
// samples/bookinfo/platform/local`, applies Istio's sample YAML unchanged
// from ../shared/istio-samples with `skiff apply`, and looks at the product
// page as a user does, with an HTTP client and in headless Chromium.
package bookinfo

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skiff-mesh/skiff/internal/testing/bookinfotest"
	"github.com/skiff-mesh/skiff/internal/testing/meshtest"
)

var (
	bin string
	// repo is the repository root; samples is Istio's Bookinfo samples
	// directory beside it (../shared/istio-samples/bookinfo).
	repo, samples = meshtest.Repo, filepath.Join(meshtest.IstioSamples, "bookinfo")
)

func TestMain(m *testing.M) { meshtest.Main(m, meshtest.Bookinfo, &bin) }

// sample is one of Istio's Bookinfo files, e.g. "networking/virtual-service-all-v1.yaml".
func sample(t *testing.T, rel string) string {
	t.Helper()
	return meshtest.Sample(t, filepath.Join("bookinfo", rel))
}

// mesh is one running `skiff up` of Bookinfo.
type mesh struct {
	*meshtest.Mesh
	ingress string // the ingress gateway, http://127.0.0.1:PORT
}

// startMesh runs skiff up on Bookinfo's local manifests with free ports
// and waits for "mesh ready" and the product page URL; the mesh goes down
// when t ends.
func startMesh(t *testing.T, capture string, extra ...string) *mesh {
	t.Helper()
	m := &mesh{}
	ready := false
	args := append([]string{filepath.Join(repo, "samples/bookinfo/platform/local"),
		"--capture", capture, "--gateway-port", "0", "--monitoring-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0"}, extra...)
	m.Mesh = meshtest.Start(t, bin, args, func(l string) (bool, error) {
		if l == "mesh ready" {
			ready = true
		}
		if u, ok := strings.CutPrefix(l, "product page:"); ok {
			m.ingress = strings.TrimSuffix(strings.TrimSpace(u), "/productpage")
			if !ready {
				return false, fmt.Errorf("the product page was announced without \"mesh ready\"")
			}
			return true, nil
		}
		return false, nil
	})
	if !strings.HasPrefix(m.ingress, "http://127.0.0.1:") {
		t.Fatalf("product page URL %q is not on 127.0.0.1", m.ingress)
	}
	var rep struct {
		Capture string `json:"capture"`
	}
	if out := m.Skiff(t, "status", "-o", "json"); json.Unmarshal([]byte(out), &rep) != nil || rep.Capture != capture {
		t.Fatalf("skiff status -o json: capture %q, want %q:\n%s", rep.Capture, capture, out)
	}
	return m
}

// The product page as Bookinfo's users read it (internal/testing/bookinfotest).
type page = bookinfotest.Page

var (
	newReader  = bookinfotest.NewReader
	v1, v2, v3 = bookinfotest.V1, bookinfotest.V2, bookinfotest.V3
)

const (
	reviewsUnavailable = bookinfotest.ReviewsUnavailable
	ratingsUnavailable = bookinfotest.RatingsUnavailable
)

// gatewayURL is the URL skiff status -o json lists for the Gateway API
// Gateway default/name, or "", and what status said.
func (m *mesh) gatewayURL(t *testing.T, name string) (string, string) {
	t.Helper()
	out := m.Skiff(t, "status", "-o", "json")
	var rep struct {
		Gateways []struct {
			Gateway string `json:"gateway"` // namespace/name
			URL     string `json:"url"`
		} `json:"gateways"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("skiff status -o json: %v\n%s", err, out)
	}
	for _, g := range rep.Gateways {
		if g.Gateway == "default/"+name && g.URL != "" {
			return g.URL, out
		}
	}
	return "", out
}
