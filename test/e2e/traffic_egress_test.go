package e2e

import (
	"regexp"
	"strings"
	"testing"
)

const registryOnly = `  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
`

// Istio's egress tasks (accessing external services): under
// REGISTRY_ONLY a host the registry does not know is refused with 502 by
// the block_all route; a ServiceEntry makes the host reachable; back
// under ALLOW_ANY the route config hands unknown hosts to the
// PassthroughCluster (checked in config_dump, not with traffic: without
// capture the original destination of a bound listener's connection is
// that listener itself).
func TestTrafficEgressRegistryOnly(t *testing.T) {
	serveHTTP(t, "127.0.7.1:9080", named("external"))
	serveHTTP(t, "127.0.7.2:9080", named("reviews-v1"))
	m := startMesh(t, map[string]string{
		"reviews.yaml": service("reviews", "http", 9080, map[string]string{"v1": "127.0.7.2"}),
		"sidecar.yaml": clientSidecar("127.0.7.10", 9080, registryOnly),
	})
	p := m.sidecar()
	const url = "http://127.0.7.10:9080/"
	eventually(t, "reviews reachable under REGISTRY_ONLY", func() (bool, string) {
		r := get(client, url, "reviews:9080")
		return r.String() == "200 reviews-v1", r.String()
	})
	if r := get(client, url, "api.external.example:9080"); r.String() != "502 " {
		t.Fatalf("REGISTRY_ONLY, a host not in the registry: %s, want 502 from block_all", r)
	}

	m.apply("serviceentry.yaml", `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: external-svc
spec:
  hosts:
  - api.external.example
  ports:
  - number: 9080
    name: http
    protocol: HTTP
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints:
  - address: 127.0.7.1
`)
	eventually(t, "the ServiceEntry host reachable under REGISTRY_ONLY", func() (bool, string) {
		r := get(client, url, "api.external.example:9080")
		return r.String() == "200 external", r.String()
	})
	if r := get(client, url, "other.external.example:9080"); r.String() != "502 " {
		t.Fatalf("REGISTRY_ONLY, another host not in the registry: %s, want 502 from block_all", r)
	}

	if d := adminGet(t, p, "/config_dump"); !strings.Contains(d, `"block_all"`) || strings.Contains(d, `"allow_any"`) {
		t.Fatalf("REGISTRY_ONLY: config_dump should hold block_all and no allow_any virtual host")
	}

	m.apply("sidecar.yaml", clientSidecar("127.0.7.10", 9080, ""))
	allowAny := regexp.MustCompile(`"name":\s*"allow_any",\s*"domains":\s*\[\s*"\*"\s*\],\s*"routes":\s*\[\s*\{\s*"name":\s*"allow_any",\s*"match":\s*\{\s*"prefix":\s*"/"\s*\},\s*"route":\s*\{\s*"cluster":\s*"PassthroughCluster"`)
	eventually(t, "ALLOW_ANY's allow_any virtual host", func() (bool, string) {
		return allowAny.MatchString(adminGet(t, p, "/config_dump")), "no allow_any → PassthroughCluster in config_dump yet"
	})
	if r := get(client, url, "reviews:9080"); r.String() != "200 reviews-v1" {
		t.Fatalf("reviews under ALLOW_ANY: %s, want 200 reviews-v1", r)
	}
}
