package agentcmd

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"

	"github.com/skiff-mesh/skiff/dataplane/bootstrap"
)

// BootstrapOptions are the bootstrap's inputs besides the pod.
type BootstrapOptions struct {
	AdminPort int
	// RootCert is the PEM file of roots that verify the discovery
	// server's certificate.
	RootCert string
	// Delta selects the incremental protocol (Istio's ISTIO_DELTA_XDS,
	// on by default since 1.22).
	Delta bool
}

// Bootstrap renders the Envoy v3 bootstrap istio-agent's template would give
// this pod, in the shape the local mesh uses (localmesh: bootstrapConfig):
// the node (id, cluster, metadata), admin on 127.0.0.1, and ADS to the
// discovery address over TLS, the server checked against the mesh roots
// and the DNS name pilot-agent expects on it (PILOT_SAN). The result is
// checked by the same parser `skiff-proxy -c` uses.
func Bootstrap(p *Pod, o BootstrapOptions) ([]byte, error) {
	host, portStr, err := net.SplitHostPort(p.ProxyConfig.GetDiscoveryAddress())
	if err != nil {
		return nil, fmt.Errorf("PROXY_CONFIG discoveryAddress %q: %v", p.ProxyConfig.GetDiscoveryAddress(), err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return nil, fmt.Errorf("PROXY_CONFIG discoveryAddress %q: port %q is not a number between 1 and 65535", p.ProxyConfig.GetDiscoveryAddress(), portStr)
	}
	addr := func(h string, port int) map[string]any {
		return map[string]any{"socket_address": map[string]any{"address": h, "port_value": port}}
	}
	apiType := "GRPC"
	if o.Delta {
		apiType = "DELTA_GRPC"
	}
	discovery := "STRICT_DNS"
	if net.ParseIP(host) != nil {
		discovery = "STATIC"
	}
	sni := serverName(host)
	ads := map[string]any{"ads": map[string]any{}, "resource_api_version": "V3"}
	b := map[string]any{
		"node": map[string]any{
			"id":       p.NodeID(),
			"cluster":  p.ServiceCluster(),
			"metadata": p.Meta,
		},
		"admin": map[string]any{"address": addr("127.0.0.1", o.AdminPort)},
		"dynamic_resources": map[string]any{
			"ads_config": map[string]any{"api_type": apiType, "transport_api_version": "V3",
				"grpc_services": []any{map[string]any{"envoy_grpc": map[string]any{"cluster_name": "xds-grpc"}}}},
			"cds_config": ads,
			"lds_config": ads,
		},
		"static_resources": map[string]any{"clusters": []any{map[string]any{
			"name": "xds-grpc", "type": discovery, "connect_timeout": "1s",
			"typed_extension_protocol_options": map[string]any{
				"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": map[string]any{
					"@type":                "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
					"explicit_http_config": map[string]any{"http2_protocol_options": map[string]any{}},
				},
			},
			"transport_socket": map[string]any{
				"name": "envoy.transport_sockets.tls",
				"typed_config": map[string]any{
					"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
					"sni":   sni,
					"common_tls_context": map[string]any{
						"alpn_protocols": []any{"h2"},
						"validation_context": map[string]any{
							"trusted_ca": map[string]any{"filename": o.RootCert},
							"match_typed_subject_alt_names": []any{map[string]any{
								"san_type": "DNS", "matcher": map[string]any{"exact": sni},
							}},
						},
					},
				},
			},
			"load_assignment": map[string]any{"cluster_name": "xds-grpc", "endpoints": []any{map[string]any{
				"lb_endpoints": []any{map[string]any{"endpoint": map[string]any{"address": addr(host, port)}}},
			}}},
		}}},
	}
	out, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return nil, err
	}
	if _, err := bootstrap.Parse(out, "generated bootstrap"); err != nil {
		return nil, fmt.Errorf("the bootstrap built from the environment is invalid: %w", err)
	}
	return append(out, '\n'), nil
}
