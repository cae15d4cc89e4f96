package server_test

import (
	"strings"
	"testing"

	"github.com/skiff-mesh/skiff/controlplane/server"
)

func TestParseMeshConfig(t *testing.T) {
	// Istio's documented ext_authz provider shape, plus fields left to
	// their defaults.
	mc, err := server.ParseMeshConfig([]byte(`
trustDomain: example.org
enableAutoMtls: false
extensionProviders:
- name: sample-ext-authz-http
  envoyExtAuthzHttp:
    service: ext-authz.foo.svc.cluster.local
    port: 8000
    includeRequestHeadersInCheck: ["x-ext-authz"]
`))
	if err != nil {
		t.Fatal(err)
	}
	if mc.GetTrustDomain() != "example.org" || mc.GetRootNamespace() != "istio-system" {
		t.Errorf("trustDomain %q rootNamespace %q; want example.org and the default istio-system", mc.GetTrustDomain(), mc.GetRootNamespace())
	}
	if mc.GetEnableAutoMtls() == nil || mc.GetEnableAutoMtls().GetValue() {
		t.Errorf("enableAutoMtls %v; want the file's false over the default true", mc.GetEnableAutoMtls())
	}
	if mc.GetIngressClass() != "istio" || mc.GetConnectTimeout().AsDuration().Seconds() != 10 {
		t.Errorf("ingressClass %q connectTimeout %v; want Istio's defaults istio and 10s", mc.GetIngressClass(), mc.GetConnectTimeout())
	}
	ps := mc.GetExtensionProviders()
	if len(ps) != 1 || ps[0].GetEnvoyExtAuthzHttp().GetService() != "ext-authz.foo.svc.cluster.local" || ps[0].GetEnvoyExtAuthzHttp().GetPort() != 8000 {
		t.Errorf("extensionProviders = %v", ps)
	}

	def, err := server.ParseMeshConfig(nil)
	if err != nil || def.GetTrustDomain() != "cluster.local" || def.GetRootNamespace() != "istio-system" {
		t.Errorf("empty mesh config: %v, %v; want Istio's defaults", def, err)
	}

	for in, want := range map[string]string{
		"trustDomian: x\n": "trustDomian: unknown field",
		"extensionProviders:\n- name: a\n  envoyExtAuthzGrpc: {service: s, port: 1, timeOut: 1s}\n": "extensionProviders[0].envoyExtAuthzGrpc.timeOut: unknown field",
		"defaultConfig:\n  proxyMetadata: {A: b}\n  tracing: {zipkin: {adress: z}}\n":               "defaultConfig.tracing.zipkin.adress: unknown field",
		"- a\n- b\n":               "want a MeshConfig mapping",
		"trustDomain: [a]\n":       "trustDomain",
		"connectTimeout: soon\n":   "connectTimeout",
		"trustDomain: a\n  b: c\n": "not YAML",
	} {
		if _, err := server.ParseMeshConfig([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v; want it to say %q", in, err, want)
		}
	}
}
