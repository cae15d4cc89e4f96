package bootstrap

import (
	"fmt"
	"net"
	"strconv"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
)

// ADSTarget finds the management server of dynamic_resources.ads_config:
// its api_type must be GRPC or DELTA_GRPC and its first grpc_service an
// envoy_grpc naming a cluster in static_resources. It returns that
// cluster's first endpoint as "host:port" ("unix:PATH" for a pipe address)
// and the cluster itself, whose transport_socket says how to secure the
// connection.
func ADSTarget(b *bootstrapv3.Bootstrap) (addr string, cluster *clusterv3.Cluster, err error) {
	ads := b.GetDynamicResources().GetAdsConfig()
	if ads == nil {
		return "", nil, fmt.Errorf("bootstrap: dynamic_resources.ads_config: not set")
	}
	switch ads.GetApiType() {
	case corev3.ApiConfigSource_GRPC, corev3.ApiConfigSource_DELTA_GRPC:
	default:
		return "", nil, fmt.Errorf("bootstrap: dynamic_resources.ads_config.api_type: %s is not supported; use GRPC or DELTA_GRPC", ads.GetApiType())
	}
	if len(ads.GetGrpcServices()) == 0 {
		return "", nil, fmt.Errorf("bootstrap: dynamic_resources.ads_config.grpc_services: at least one is required")
	}
	eg := ads.GetGrpcServices()[0].GetEnvoyGrpc()
	if eg == nil {
		return "", nil, fmt.Errorf("bootstrap: dynamic_resources.ads_config.grpc_services[0]: only envoy_grpc is supported (google_grpc is not)")
	}
	name := eg.GetClusterName()
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() == name {
			cluster = c
			break
		}
	}
	if cluster == nil {
		return "", nil, fmt.Errorf("bootstrap: dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name: cluster %q is not in static_resources.clusters", name)
	}
	for _, le := range cluster.GetLoadAssignment().GetEndpoints() {
		for _, lb := range le.GetLbEndpoints() {
			a := lb.GetEndpoint().GetAddress()
			if p := a.GetPipe(); p != nil {
				return "unix:" + p.GetPath(), cluster, nil
			}
			if sa := a.GetSocketAddress(); sa != nil {
				port, ok := sa.GetPortSpecifier().(*corev3.SocketAddress_PortValue)
				if !ok {
					return "", nil, fmt.Errorf("bootstrap: cluster %q: load_assignment: the ADS endpoint needs a port_value", name)
				}
				return net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(port.PortValue), 10)), cluster, nil
			}
		}
	}
	return "", nil, fmt.Errorf("bootstrap: cluster %q: load_assignment: no endpoint with a socket_address or pipe for the ADS server", name)
}

// UsesDelta reports whether ads_config asks for the incremental protocol.
func UsesDelta(b *bootstrapv3.Bootstrap) bool {
	return b.GetDynamicResources().GetAdsConfig().GetApiType() == corev3.ApiConfigSource_DELTA_GRPC
}

// LDSFromADS reports whether dynamic_resources.lds_config is `ads: {}`.
func LDSFromADS(b *bootstrapv3.Bootstrap) bool {
	return b.GetDynamicResources().GetLdsConfig().GetAds() != nil
}

// CDSFromADS reports whether dynamic_resources.cds_config is `ads: {}`.
func CDSFromADS(b *bootstrapv3.Bootstrap) bool {
	return b.GetDynamicResources().GetCdsConfig().GetAds() != nil
}

// NodeOverrides are Envoy's command-line overrides of the bootstrap's node:
// --service-node, --service-cluster, --service-zone. Empty means keep.
type NodeOverrides struct {
	ID      string // --service-node
	Cluster string // --service-cluster
	Zone    string // --service-zone
	// Version is reported as user_agent_version.
	Version string
}

// UserAgent is the user_agent_name skiff-proxy announces.
const UserAgent = "skiff-proxy"

// Node returns the node to announce to the management server: the
// bootstrap's node (never modified) with the overrides applied and the
// user agent set.
func Node(b *bootstrapv3.Bootstrap, o NodeOverrides) *corev3.Node {
	n := &corev3.Node{}
	if b.GetNode() != nil {
		n = proto.Clone(b.GetNode()).(*corev3.Node)
	}
	if o.ID != "" {
		n.Id = o.ID
	}
	if o.Cluster != "" {
		n.Cluster = o.Cluster
	}
	if o.Zone != "" {
		if n.Locality == nil {
			n.Locality = &corev3.Locality{}
		}
		n.Locality.Zone = o.Zone
	}
	n.UserAgentName = UserAgent
	if o.Version != "" {
		n.UserAgentVersionType = &corev3.Node_UserAgentVersion{UserAgentVersion: o.Version}
	}
	return n
}
