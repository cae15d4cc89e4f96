package bootstrap_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"

	"github.com/skiff-mesh/skiff/dataplane/bootstrap"
)

func TestFrontProxyExampleParses(t *testing.T) {
	b, err := bootstrap.Load("/work/shared/examples/envoy-front-proxy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := b.GetAdmin().GetAddress().GetSocketAddress().GetPortValue(); got != 9901 {
		t.Errorf("admin port %d, want 9901", got)
	}
	ls := b.GetStaticResources().GetListeners()
	if len(ls) != 1 || ls[0].GetName() != "listener_0" {
		t.Fatalf("listeners %v", ls)
	}
	m, err := ls[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalNew()
	if err != nil {
		t.Fatal(err)
	}
	hcm, ok := m.(*hcmv3.HttpConnectionManager)
	if !ok {
		t.Fatalf("typed_config is %T, want HttpConnectionManager", m)
	}
	if hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetCluster() != "some_service" {
		t.Errorf("route does not point at some_service: %v", hcm.GetRouteConfig())
	}
	if hcm.GetCodecType() != hcmv3.HttpConnectionManager_AUTO {
		t.Errorf("codec_type %v", hcm.GetCodecType())
	}
	c := b.GetStaticResources().GetClusters()[0]
	if c.GetConnectTimeout().AsDuration() != 250*time.Millisecond || c.GetType() != clusterv3.Cluster_LOGICAL_DNS {
		t.Errorf("cluster %v", c)
	}
}

const adsYAML = `
node:
  id: sidecar~127.0.0.1~app-1.default~default.svc.cluster.local
  cluster: app.default
  metadata: {ISTIO_VERSION: "1.24"}
dynamic_resources:
  ads_config:
    api_type: API_TYPE
    transport_api_version: V3
    grpc_services:
    - envoy_grpc: { cluster_name: xds-grpc }
  lds_config: { ads: {}, resource_api_version: V3 }
  cds_config: { ads: {}, resource_api_version: V3 }
static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: istiod.istio-system.svc
    load_assignment:
      cluster_name: xds-grpc
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: { socket_address: { address: 127.0.0.1, port_value: 15012 } }
`

func TestADSBootstrap(t *testing.T) {
	for _, tc := range []struct {
		apiType string
		delta   bool
	}{{"GRPC", false}, {"DELTA_GRPC", true}} {
		t.Run(tc.apiType, func(t *testing.T) {
			b, err := bootstrap.Parse([]byte(strings.Replace(adsYAML, "API_TYPE", tc.apiType, 1)), "ads.yaml")
			if err != nil {
				t.Fatal(err)
			}
			addr, c, err := bootstrap.ADSTarget(b)
			if err != nil {
				t.Fatal(err)
			}
			if addr != "127.0.0.1:15012" || c.GetName() != "xds-grpc" {
				t.Errorf("ADSTarget = %q, %q", addr, c.GetName())
			}
			tm, err := c.GetTransportSocket().GetTypedConfig().UnmarshalNew()
			if err != nil {
				t.Fatal(err)
			}
			if tm.(*tlsv3.UpstreamTlsContext).GetSni() != "istiod.istio-system.svc" {
				t.Errorf("transport socket %v", tm)
			}
			po, err := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].UnmarshalNew()
			if err != nil {
				t.Fatal(err)
			}
			if po.(*httpv3.HttpProtocolOptions).GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
				t.Error("HTTP/2 protocol options lost")
			}
			if bootstrap.UsesDelta(b) != tc.delta {
				t.Errorf("UsesDelta = %v", !tc.delta)
			}
			if !bootstrap.LDSFromADS(b) || !bootstrap.CDSFromADS(b) {
				t.Error("lds_config/cds_config not seen as ADS")
			}
		})
	}
}

func TestNode(t *testing.T) {
	b, err := bootstrap.Parse([]byte(strings.Replace(adsYAML, "API_TYPE", "GRPC", 1)), "ads.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n := bootstrap.Node(b, bootstrap.NodeOverrides{})
	if n.GetId() != b.GetNode().GetId() || n.GetCluster() != "app.default" || n.GetUserAgentName() != "skiff-proxy" {
		t.Errorf("node %v", n)
	}
	if n.GetMetadata().GetFields()["ISTIO_VERSION"].GetStringValue() != "1.24" {
		t.Errorf("metadata lost: %v", n.GetMetadata())
	}
	o := bootstrap.Node(b, bootstrap.NodeOverrides{ID: "router~1~gw~ns", Cluster: "gw", Zone: "z1", Version: "0.1.0"})
	if o.GetId() != "router~1~gw~ns" || o.GetCluster() != "gw" || o.GetLocality().GetZone() != "z1" || o.GetUserAgentVersion() != "0.1.0" {
		t.Errorf("overrides not applied: %v", o)
	}
	if b.GetNode().GetId() == "router~1~gw~ns" || b.GetNode().GetUserAgentName() != "" {
		t.Error("Node modified the bootstrap")
	}
	if e := bootstrap.Node(&bootstrapv3.Bootstrap{}, bootstrap.NodeOverrides{ID: "x"}); e.GetId() != "x" || e.GetUserAgentName() != "skiff-proxy" {
		t.Errorf("node from empty bootstrap %v", e)
	}
}

func TestADSTargetErrors(t *testing.T) {
	base := strings.Replace(adsYAML, "API_TYPE", "GRPC", 1)
	for _, tc := range []struct {
		name, src, want string
	}{
		{"no ads", "static_resources: {clusters: [{name: a, connect_timeout: 1s}]}\n",
			"dynamic_resources.ads_config: not set"},
		{"rest", strings.Replace(base, "api_type: GRPC", "api_type: REST", 1),
			"dynamic_resources.ads_config.api_type: REST is not supported"},
		{"google grpc", strings.Replace(base, "- envoy_grpc: { cluster_name: xds-grpc }", "- google_grpc: { target_uri: 127.0.0.1:1, stat_prefix: x }", 1),
			"grpc_services[0]: only envoy_grpc is supported"},
		{"missing cluster", strings.Replace(base, "cluster_name: xds-grpc }", "cluster_name: nope }", 1),
			`cluster_name: cluster "nope" is not in static_resources.clusters`},
		{"no endpoint", base[:strings.Index(base, "      endpoints:")] + "      endpoints: []\n",
			`cluster "xds-grpc": load_assignment: no endpoint`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := bootstrap.Parse([]byte(tc.src), "ads.yaml")
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = bootstrap.ADSTarget(b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// Bad inputs are refused with the file, the YAML (or JSON) line and the
// field path.
func TestBadInputs(t *testing.T) {
	for _, tc := range []struct {
		name, src, want string
	}{
		{"unknown field", "admin:\n  address:\n    socket_address: { address: 127.0.0.1, port_value: 9901 }\n  bogus: 1\n",
			`bad.yaml:4: admin.bogus: unknown field "bogus"`},
		{"bad duration", "static_resources:\n  clusters:\n  - name: a\n    connect_timeout: fast\n",
			`bad.yaml:4: static_resources.clusters[0].connect_timeout: invalid google.protobuf.Duration value "fast"`},
		{"unknown @type", "static_resources:\n  listeners:\n  - name: l\n    filter_chains:\n    - filters:\n      - name: x\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.Nope\n",
			`bad.yaml:8: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.@type: unable to resolve "type.googleapis.com/envoy.Nope"`},
		{"field of another @type", "static_resources:\n  listeners:\n  - name: l\n    filter_chains:\n    - filters:\n      - name: x\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n          stat_prefix: x\n",
			`bad.yaml:9: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.stat_prefix: unknown field "stat_prefix"`},
		{"rule violated", "static_resources:\n  clusters:\n  - name: a\n    connect_timeout: -1s\n",
			`bad.yaml:4: static_resources.clusters[0].connect_timeout: value must be greater than 0s`},
		{"rule violated inside typed_config", "static_resources:\n  listeners:\n  - name: l\n    filter_chains:\n    - filters:\n      - name: x\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n          stat_prefix: \"\"\n          route_config: {name: r}\n",
			`bad.yaml:9: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.stat_prefix: value length must be at least 1 runes`},
		{"required field missing", "static_resources:\n  clusters:\n  - connect_timeout: 1s\n",
			`bad.yaml:3: static_resources.clusters[0].name: value length must be at least 1 runes`},
		{"JSON unknown field", "{\n\t\"admin\": {\n\t\t\"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", \"port_value\": 9901}}\n\t},\n\t\"statsFlushIntervall\": \"5s\"\n}\n",
			`bad.yaml:5: stats_flush_intervall: unknown field "statsFlushIntervall"`},
		{"bad enum", "static_resources:\n  clusters:\n  - name: a\n    connect_timeout: 1s\n    lb_policy: FASTEST\n",
			`bad.yaml:5: static_resources.clusters[0].lb_policy: invalid value for enum field lbPolicy: "FASTEST"`},
		{"YAML syntax", "admin: [\n", "bad.yaml:1: did not find expected node content"},
		{"not a mapping", "- a\n- b\n", "bad.yaml:1: the bootstrap must be a mapping"},
		{"empty", "", "bad.yaml: empty bootstrap"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := bootstrap.Parse([]byte(tc.src), "bad.yaml")
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error\n  %v\nwant it to contain\n  %s", err, tc.want)
			}
		})
	}
}

// JSON with camelCase names, and YAML anchors and merge keys, read as Envoy
// reads them.
func TestJSONAndYAMLFeatures(t *testing.T) {
	yamlSrc := `
static_resources:
  clusters:
  - name: a
    <<: &timeouts {connect_timeout: 2s, type: STATIC}
  - name: b
    <<: *timeouts
    connect_timeout: 3s
`
	jsonSrc := `{"staticResources": {"clusters": [
		{"name": "a", "connectTimeout": "2s", "type": "STATIC"},
		{"name": "b", "connect_timeout": "3s", "type": "STATIC"}]}}`
	fromYAML, err := bootstrap.Parse([]byte(yamlSrc), "anchors.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "b.json")
	if err := os.WriteFile(path, []byte(jsonSrc), 0o600); err != nil {
		t.Fatal(err)
	}
	fromJSON, err := bootstrap.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(fromYAML, fromJSON) {
		t.Errorf("YAML and JSON differ:\n%v\n%v", fromYAML, fromJSON)
	}
	if d := fromYAML.GetStaticResources().GetClusters()[1].GetConnectTimeout().AsDuration(); d != 3*time.Second {
		t.Errorf("merge key overrode an explicit field: %v", d)
	}
	if _, err := bootstrap.Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file error %v", err)
	}
}
