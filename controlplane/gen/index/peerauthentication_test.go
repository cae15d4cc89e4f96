package index_test

import (
	"maps"
	"slices"
	"testing"

	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/gen/index/indextest"
)

func paIndex(t *testing.T, yaml string) *index.Index {
	t.Helper()
	return indextest.Build(indextest.Decode(t, "pa.yaml", []byte(yaml)))
}

var finance = map[string]string{"app": "finance"}

// TestPeerAuthenticationIstioExamples resolves the examples of Istio's
// PeerAuthentication reference page (istio.io, security/peer_authentication).
func TestPeerAuthenticationIstioExamples(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		labels     map[string]string
		port       uint32
		want       index.MTLSMode
	}{
		{"namespace STRICT", `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec: {mtls: {mode: STRICT}}`, map[string]string{"app": "any"}, 9080, index.MTLSStrict},
		{"namespace PERMISSIVE, finance STRICT: other workload", `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: finance, namespace: foo}
spec:
  selector: {matchLabels: {app: finance}}
  mtls: {mode: STRICT}`, map[string]string{"app": "other"}, 9080, index.MTLSPermissive},
		{"namespace PERMISSIVE, finance STRICT: finance", `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: finance, namespace: foo}
spec:
  selector: {matchLabels: {app: finance}}
  mtls: {mode: STRICT}`, finance, 9080, index.MTLSStrict},
		{"finance STRICT but port 8080 DISABLE: port 8080", `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: finance, namespace: foo}
spec:
  selector: {matchLabels: {app: finance}}
  mtls: {mode: STRICT}
  portLevelMtls: {8080: {mode: DISABLE}}`, finance, 8080, index.MTLSDisable},
		{"finance STRICT but port 8080 DISABLE: port 9090", `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: finance, namespace: foo}
spec:
  selector: {matchLabels: {app: finance}}
  mtls: {mode: STRICT}
  portLevelMtls: {8080: {mode: DISABLE}}`, finance, 9090, index.MTLSStrict},
		{"inherit from namespace, port 8080 DISABLE: port 9090", `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: finance, namespace: foo}
spec:
  selector: {matchLabels: {app: finance}}
  portLevelMtls: {8080: {mode: DISABLE}}`, finance, 9090, index.MTLSStrict},
		{"inherit from namespace, port 8080 DISABLE: port 8080", `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: foo}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: finance, namespace: foo}
spec:
  selector: {matchLabels: {app: finance}}
  portLevelMtls: {8080: {mode: DISABLE}}`, finance, 8080, index.MTLSDisable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := paIndex(t, tc.yaml).PeerAuthentication("foo", tc.labels)
			if m := got.ForPort(tc.port); m != tc.want {
				t.Errorf("port %d: %v (policy %+v), want %v", tc.port, m, got, tc.want)
			}
		})
	}
}

// TestPeerAuthenticationPrecedence covers scope, age and inheritance.
func TestPeerAuthenticationPrecedence(t *testing.T) {
	ix := paIndex(t, `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh, namespace: istio-system, creationTimestamp: "2024-01-02T00:00:00Z"}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh-older, namespace: istio-system, creationTimestamp: "2024-01-01T00:00:00Z"}
spec: {mtls: {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: root-selector, namespace: istio-system}
spec:
  selector: {matchLabels: {app: finance}}
  mtls: {mode: PERMISSIVE}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: unset, namespace: bar}
spec: {}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: new, namespace: baz, creationTimestamp: "2024-03-01T00:00:00Z"}
spec:
  selector: {matchLabels: {app: finance}}
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: old, namespace: baz, creationTimestamp: "2024-02-01T00:00:00Z"}
spec:
  selector: {matchLabels: {app: finance}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls: {8080: {}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: elsewhere, namespace: qux}
spec: {mtls: {mode: STRICT}}
`)
	for _, tc := range []struct {
		name, ns string
		labels   map[string]string
		want     index.EffectiveMTLS
	}{
		// The oldest mesh-wide policy wins; a selector in the root
		// namespace is no workload policy.
		{"oldest mesh policy", "foo", finance, index.EffectiveMTLS{Mode: index.MTLSDisable, Sources: []string{"istio-system/mesh-older"}}},
		// A namespace policy without a mode inherits the mesh's.
		{"UNSET inherits", "bar", nil, index.EffectiveMTLS{Mode: index.MTLSDisable, Sources: []string{"istio-system/mesh-older", "bar/unset"}}},
		// Of two workload policies the oldest wins; its UNSET port takes
		// the workload's mode.
		{"oldest workload policy", "baz", finance, index.EffectiveMTLS{Mode: index.MTLSPermissive,
			PerPort: map[uint32]index.MTLSMode{8080: index.MTLSPermissive}, Sources: []string{"istio-system/mesh-older", "baz/old"}}},
		// Another namespace's policy never applies.
		{"other namespace", "foo", nil, index.EffectiveMTLS{Mode: index.MTLSDisable, Sources: []string{"istio-system/mesh-older"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ix.PeerAuthentication(tc.ns, tc.labels)
			if got.Mode != tc.want.Mode || !maps.Equal(got.PerPort, tc.want.PerPort) || !slices.Equal(got.Sources, tc.want.Sources) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	if m := paIndex(t, "").PeerAuthentication("foo", nil).Mode; m != index.MTLSPermissive {
		t.Errorf("no policy: %v, want PERMISSIVE", m)
	}
	for ns, want := range map[string]index.MTLSMode{"foo": index.MTLSDisable, "qux": index.MTLSStrict, "bar": index.MTLSDisable} {
		if m := ix.NamespaceMTLSMode(ns); m != want {
			t.Errorf("NamespaceMTLSMode(%s) = %v, want %v", ns, m, want)
		}
	}
	if m := paIndex(t, "").NamespaceMTLSMode("foo"); m != index.MTLSUnknown {
		t.Errorf("NamespaceMTLSMode without policies = %v, want UNKNOWN", m)
	}
}
