package xds

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// Proxy types as Istio names them in the node id.
const (
	SidecarProxy = "sidecar"
	RouterProxy  = "router"
)

// Proxy is a connected proxy as the generators see it, parsed once from
// the Envoy node of the stream's first request. Generators must treat it as
// read-only: it is shared by every push to the connection.
type Proxy struct {
	// ID is the node id's third field, "pod.namespace" ("reviews-v1-abc.default").
	ID string
	// NodeID is the node id as sent ("sidecar~10.0.0.1~reviews-v1-abc.default~default.svc.cluster.local").
	NodeID string
	// Type is SidecarProxy or RouterProxy (Istio's older "ingress" reads as router).
	Type string
	// IPs are the workload's addresses: INSTANCE_IPS, else the node id's IP.
	IPs []string
	// DNSDomain is the node id's last field ("default.svc.cluster.local").
	DNSDomain string

	Namespace      string            // NAMESPACE, else from ID or DNSDomain
	ServiceAccount string            // SERVICE_ACCOUNT
	Workload       string            // WORKLOAD_NAME
	PodName        string            // NAME, else from ID
	Labels         map[string]string // LABELS
	Annotations    map[string]string // ANNOTATIONS
	IstioVersion   string            // ISTIO_VERSION
	ClusterID      string            // CLUSTER_ID
	Network        string            // NETWORK
	MeshID         string            // MESH_ID
	// Proxyless is set for gRPC clients that use xDS directly (GENERATOR
	// "grpc", as istio-agent writes it into a proxyless bootstrap).
	Proxyless bool
	// InterceptionMode is how traffic reaches the proxy (INTERCEPTION_MODE:
	// "REDIRECT", "TPROXY" or "NONE"). With NONE nothing is captured: the
	// proxy binds its listeners on its own IP instead of capture ports.
	InterceptionMode string
	// HTTPProxyPort, from HTTP_PROXY_PORT, asks for an explicit HTTP proxy
	// listener on that port (applications set HTTP_PROXY to it).
	HTTPProxyPort int
	// Locality is the node's locality, if it sent one.
	Locality *corev3.Locality
	// Metadata is the node metadata as sent, for fields not parsed above.
	Metadata *structpb.Struct
}

// ParseNode fills a Proxy from the Envoy node as Istio's pilot-agent (or a
// proxyless gRPC bootstrap) sends it: id "type~ip~pod.namespace~domain" and
// metadata NAMESPACE, LABELS, SERVICE_ACCOUNT, INSTANCE_IPS, WORKLOAD_NAME,
// ISTIO_VERSION, CLUSTER_ID, ... A node Istio would refuse is refused, with
// the reason.
func ParseNode(node *corev3.Node) (*Proxy, error) {
	if node == nil || node.GetId() == "" {
		return nil, fmt.Errorf("xDS request has no node id: the first request on a stream must carry node.id (\"sidecar~IP~pod.namespace~namespace.svc.cluster.local\")")
	}
	parts := strings.Split(node.GetId(), "~")
	if len(parts) != 4 {
		return nil, fmt.Errorf("node id %q: want 4 fields separated by \"~\" (type~ip~pod.namespace~domain), got %d", node.GetId(), len(parts))
	}
	p := &Proxy{
		NodeID:    node.GetId(),
		ID:        parts[2],
		DNSDomain: parts[3],
		Metadata:  node.GetMetadata(),
		Locality:  node.GetLocality(),
	}
	switch parts[0] {
	case SidecarProxy:
		p.Type = SidecarProxy
	case RouterProxy, "ingress":
		p.Type = RouterProxy
	default:
		return nil, fmt.Errorf("node id %q: proxy type %q is not %q or %q", node.GetId(), parts[0], SidecarProxy, RouterProxy)
	}
	if p.ID == "" {
		return nil, fmt.Errorf("node id %q: empty pod.namespace field", node.GetId())
	}
	md := node.GetMetadata().GetFields()
	str := func(key string) string { return md[key].GetStringValue() }

	if ips := str("INSTANCE_IPS"); ips != "" {
		for _, ip := range strings.Split(ips, ",") {
			p.IPs = append(p.IPs, strings.TrimSpace(ip))
		}
	} else if parts[1] != "" {
		p.IPs = []string{parts[1]}
	}
	for _, ip := range p.IPs {
		if _, err := netip.ParseAddr(ip); err != nil {
			return nil, fmt.Errorf("node %q: IP %q (from INSTANCE_IPS or the node id) is not an IP address", node.GetId(), ip)
		}
	}

	p.Namespace = str("NAMESPACE")
	pod, ns, hasNS := strings.Cut(p.ID, ".")
	if p.Namespace == "" {
		switch {
		case hasNS:
			p.Namespace = ns
		default:
			p.Namespace, _, _ = strings.Cut(p.DNSDomain, ".")
		}
	}
	p.PodName = str("NAME")
	if p.PodName == "" {
		p.PodName = pod
	}
	p.ServiceAccount = str("SERVICE_ACCOUNT")
	p.Workload = str("WORKLOAD_NAME")
	p.IstioVersion = str("ISTIO_VERSION")
	p.ClusterID = str("CLUSTER_ID")
	p.Network = str("NETWORK")
	p.MeshID = str("MESH_ID")
	p.Proxyless = str("GENERATOR") == "grpc"
	p.InterceptionMode = str("INTERCEPTION_MODE")
	switch p.InterceptionMode {
	case "", "REDIRECT", "TPROXY", "NONE":
	default:
		return nil, fmt.Errorf("node %q: INTERCEPTION_MODE %q: want REDIRECT, TPROXY or NONE", node.GetId(), p.InterceptionMode)
	}
	if s := str("HTTP_PROXY_PORT"); s != "" {
		port, err := strconv.Atoi(s)
		if err != nil || port < 1 || port > 65535 {
			return nil, fmt.Errorf("node %q: HTTP_PROXY_PORT %q is not a port number (1-65535)", node.GetId(), s)
		}
		p.HTTPProxyPort = port
	}
	var err error
	if p.Labels, err = stringMap(md, "LABELS"); err != nil {
		return nil, fmt.Errorf("node %q: %w", node.GetId(), err)
	}
	if p.Annotations, err = stringMap(md, "ANNOTATIONS"); err != nil {
		return nil, fmt.Errorf("node %q: %w", node.GetId(), err)
	}
	return p, nil
}

// stringMap reads a metadata field holding a map of strings (LABELS).
func stringMap(md map[string]*structpb.Value, key string) (map[string]string, error) {
	v, ok := md[key]
	if !ok {
		return nil, nil
	}
	s := v.GetStructValue()
	if s == nil {
		return nil, fmt.Errorf("metadata %s must be a map of strings, got %T", key, v.GetKind())
	}
	out := make(map[string]string, len(s.GetFields()))
	for k, f := range s.GetFields() {
		sv, ok := f.GetKind().(*structpb.Value_StringValue)
		if !ok {
			return nil, fmt.Errorf("metadata %s.%s must be a string, got %T", key, k, f.GetKind())
		}
		out[k] = sv.StringValue
	}
	return out, nil
}

// Captured reports whether traffic reaches the proxy by redirection (the
// capture listeners 15001 and 15006 are then used).
func (p *Proxy) Captured() bool { return p.InterceptionMode != "NONE" }

// BindAddress is where the proxy's own listeners bind: every address when
// traffic is captured (each pod has its own network), its own IP when not
// (proxies then share the host's network, one loopback address each).
func (p *Proxy) BindAddress() string {
	if p.Captured() || len(p.IPs) == 0 {
		return "0.0.0.0"
	}
	return p.IPs[0]
}
