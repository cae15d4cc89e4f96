package localmesh

import (
	"encoding/json"
	"net"
	"strconv"
)

// Ports of a pod's sidecar on the pod's address (Istio's).
const (
	adminPort      = 15000
	httpProxyPort  = 15080
	prometheusPort = 15090
)

// bootstrapConfig is the Envoy v3 bootstrap a pod's skiff-proxy starts
// with: the node as istio-agent describes it, ADS to skiffd, admin on the
// pod's address.
func bootstrapConfig(p *pod, xdsAddr string, loopback bool) ([]byte, error) {
	host, port, err := net.SplitHostPort(xdsAddr)
	if err != nil {
		return nil, err
	}
	portNum, _ := strconv.Atoi(port)
	kind := "sidecar"
	if p.gateway {
		kind = "router"
	}
	ip := p.ip.String()
	labels := p.labels
	if labels == nil {
		labels = map[string]string{} // skiffd wants a map, never null
	}
	md := map[string]any{
		"NAMESPACE":       p.namespace,
		"NAME":            p.name,
		"LABELS":          labels,
		"SERVICE_ACCOUNT": p.serviceAccount,
		"INSTANCE_IPS":    ip,
		"WORKLOAD_NAME":   p.workloadName(),
		"CLUSTER_ID":      "Kubernetes",
		"ISTIO_VERSION":   istioVersion,
		"POD_PORTS":       p.portsJSON(),
	}
	if loopback {
		md["INTERCEPTION_MODE"] = "NONE"
		if !p.gateway {
			md["HTTP_PROXY_PORT"] = strconv.Itoa(httpProxyPort)
		}
	}
	if p.annotations != nil {
		md["ANNOTATIONS"] = p.annotations
	}
	addr := func(h string, port int) map[string]any {
		return map[string]any{"socket_address": map[string]any{"address": h, "port_value": port}}
	}
	ads := map[string]any{"ads": map[string]any{}, "resource_api_version": "V3"}
	b := map[string]any{
		"node": map[string]any{
			"id":       kind + "~" + ip + "~" + p.name + "." + p.namespace + "~" + p.namespace + ".svc.cluster.local",
			"cluster":  p.workloadName() + "." + p.namespace,
			"metadata": md,
		},
		"admin": map[string]any{"address": addr(ip, adminPort)},
		"dynamic_resources": map[string]any{
			"ads_config": map[string]any{"api_type": "GRPC", "transport_api_version": "V3",
				"grpc_services": []any{map[string]any{"envoy_grpc": map[string]any{"cluster_name": "xds-grpc"}}}},
			"cds_config": ads,
			"lds_config": ads,
		},
		"static_resources": map[string]any{"clusters": []any{map[string]any{
			"name": "xds-grpc", "type": "STATIC", "connect_timeout": "1s",
			"typed_extension_protocol_options": map[string]any{
				"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": map[string]any{
					"@type":                "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
					"explicit_http_config": map[string]any{"http2_protocol_options": map[string]any{}},
				},
			},
			"load_assignment": map[string]any{"cluster_name": "xds-grpc", "endpoints": []any{map[string]any{
				"lb_endpoints": []any{map[string]any{"endpoint": map[string]any{"address": addr(host, portNum)}}},
			}}},
		}}},
	}
	return json.MarshalIndent(b, "", "  ")
}

// istioVersion is the Istio release whose behaviour skiffd follows for
// version-gated features.
const istioVersion = "1.24.0"
