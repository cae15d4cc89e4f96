package upstream

import (
	"fmt"
	"net"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
)

// hostSpec is one endpoint as configured, before DNS resolution.
type hostSpec struct {
	addr      string // "ip:port", or "name:port" for DNS clusters before resolution
	host      string // the IP or DNS name
	port      uint32
	hostname  string // endpoint.hostname
	weight    uint32
	priority  uint32
	locality  *corev3.Locality
	locWeight uint32
	edsHealth corev3.HealthStatus
	metadata  *corev3.Metadata
}

// endpointSet is a parsed ClusterLoadAssignment.
type endpointSet struct {
	hosts            []hostSpec
	overprovisioning float64 // percent, 140 by default
}

// parseCLA validates a load assignment. allowNames lets addresses be DNS
// names (STRICT_DNS / LOGICAL_DNS); otherwise they must be IP literals.
func parseCLA(cla *endpointv3.ClusterLoadAssignment, allowNames bool) (*endpointSet, error) {
	es := &endpointSet{overprovisioning: 140}
	if v := cla.GetPolicy().GetOverprovisioningFactor(); v != nil {
		if v.GetValue() == 0 {
			return nil, fmt.Errorf("policy.overprovisioning_factor: must be positive")
		}
		es.overprovisioning = float64(v.GetValue())
	}
	for i, loc := range cla.GetEndpoints() {
		for j, le := range loc.GetLbEndpoints() {
			field := fmt.Sprintf("endpoints[%d].lb_endpoints[%d]", i, j)
			ep := le.GetEndpoint()
			if ep == nil {
				return nil, fmt.Errorf("%s.endpoint: required (named endpoints are not supported)", field)
			}
			sa := ep.GetAddress().GetSocketAddress()
			if sa == nil {
				return nil, fmt.Errorf("%s.endpoint.address.socket_address: required", field)
			}
			if sa.GetProtocol() != corev3.SocketAddress_TCP {
				return nil, fmt.Errorf("%s.endpoint.address.socket_address.protocol: only TCP is supported", field)
			}
			port := sa.GetPortValue()
			if port == 0 || port > 65535 {
				return nil, fmt.Errorf("%s.endpoint.address.socket_address.port_value: %d is not a valid port", field, port)
			}
			host := sa.GetAddress()
			if ip := net.ParseIP(host); ip == nil && !allowNames {
				return nil, fmt.Errorf("%s.endpoint.address.socket_address.address: %q is not an IP address", field, host)
			} else if ip != nil {
				host = ip.String()
			}
			if host == "" {
				return nil, fmt.Errorf("%s.endpoint.address.socket_address.address: must not be empty", field)
			}
			w := uint32(1)
			if v := le.GetLoadBalancingWeight(); v != nil {
				if v.GetValue() == 0 {
					return nil, fmt.Errorf("%s.load_balancing_weight: must be at least 1", field)
				}
				w = v.GetValue()
			}
			lw := uint32(1)
			if v := loc.GetLoadBalancingWeight(); v != nil {
				lw = v.GetValue()
			}
			es.hosts = append(es.hosts, hostSpec{
				addr: net.JoinHostPort(host, strconv.Itoa(int(port))), host: host, port: port,
				hostname: ep.GetHostname(), weight: w, priority: loc.GetPriority(),
				locality: loc.GetLocality(), locWeight: lw, edsHealth: le.GetHealthStatus(), metadata: le.GetMetadata(),
			})
		}
	}
	return es, nil
}

// edsUsable says whether the EDS health status lets the host take traffic
// outside panic mode: UNHEALTHY, DRAINING and TIMEOUT hosts do not.
func edsUsable(s corev3.HealthStatus) bool {
	switch s {
	case corev3.HealthStatus_UNHEALTHY, corev3.HealthStatus_DRAINING, corev3.HealthStatus_TIMEOUT:
		return false
	}
	return true
}
