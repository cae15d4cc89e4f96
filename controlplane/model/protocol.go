package model

import "strings"

// Protocol is what a port carries, with Istio's names so generated config
// and debug output read as Istio's do.
type Protocol string

// The protocols Istio knows. Unsupported means "not declared": the proxy
// sniffs the traffic to tell HTTP from TCP.
const (
	HTTP        Protocol = "HTTP"
	HTTP2       Protocol = "HTTP2"
	HTTPProxy   Protocol = "HTTP_PROXY"
	GRPC        Protocol = "GRPC"
	GRPCWeb     Protocol = "GRPC-Web"
	HTTPS       Protocol = "HTTPS"
	TCP         Protocol = "TCP"
	TLS         Protocol = "TLS"
	UDP         Protocol = "UDP"
	Mongo       Protocol = "Mongo"
	Redis       Protocol = "Redis"
	MySQL       Protocol = "MySQL"
	Unsupported Protocol = "UnsupportedProtocol"
)

// ParseProtocol reads a protocol name as Istio does (ServiceEntry and
// Gateway ports): case-insensitive; anything unknown, including "", is
// Unsupported.
func ParseProtocol(s string) Protocol {
	switch strings.ToLower(s) {
	case "http":
		return HTTP
	case "http2":
		return HTTP2
	case "http_proxy":
		return HTTPProxy
	case "grpc":
		return GRPC
	case "grpc-web":
		return GRPCWeb
	case "https":
		return HTTPS
	case "tcp":
		return TCP
	case "tls":
		return TLS
	case "udp":
		return UDP
	case "mongo":
		return Mongo
	case "redis":
		return Redis
	case "mysql":
		return MySQL
	}
	return Unsupported
}

// ProtocolFor infers a Kubernetes service port's protocol the way Istio
// does: a non-empty appProtocol decides alone (with Kubernetes' own
// kubernetes.io/h2c, ws and wss names); otherwise the port name does, by its
// prefix before the first "-" ("http-api" is HTTP), except that a name
// starting with "grpc-web" is gRPC-Web. Case does not matter. Anything
// unrecognised is Unsupported, which means sniffed.
func ProtocolFor(portName, appProtocol string) Protocol {
	name := portName
	if appProtocol != "" {
		switch appProtocol {
		case "kubernetes.io/h2c":
			return HTTP2
		case "kubernetes.io/ws":
			return HTTP
		case "kubernetes.io/wss":
			return HTTPS
		}
		name = appProtocol
	}
	const grpcWeb = "grpc-web"
	if len(name) >= len(grpcWeb) && strings.EqualFold(name[:len(grpcWeb)], grpcWeb) {
		return GRPCWeb
	}
	if i := strings.IndexByte(name, '-'); i >= 0 {
		name = name[:i]
	}
	return ParseProtocol(name)
}

// wellKnownTCPPorts are ports Istio never sniffs: their servers speak
// first (SMTP, MySQL) or sniffing would break them (DNS, MongoDB), so an
// undeclared protocol on them means TCP.
var wellKnownTCPPorts = map[int]bool{25: true, 53: true, 3306: true, 27017: true}

// kubePortProtocol is ProtocolFor for a whole Kubernetes service port: UDP
// ports are UDP whatever their name, and well-known server-first ports
// default to TCP rather than sniffing.
func kubePortProtocol(port int, name, transport, appProtocol string) Protocol {
	if transport == "UDP" {
		return UDP
	}
	p := ProtocolFor(name, appProtocol)
	if p == Unsupported && wellKnownTCPPorts[port] {
		return TCP
	}
	return p
}

// IsHTTP reports whether the proxy handles the port as HTTP (any version).
func (p Protocol) IsHTTP() bool {
	switch p {
	case HTTP, HTTP2, HTTPProxy, GRPC, GRPCWeb:
		return true
	}
	return false
}

// IsHTTP2 reports whether the protocol runs over HTTP/2 to the upstream.
func (p Protocol) IsHTTP2() bool {
	switch p {
	case HTTP2, GRPC, GRPCWeb:
		return true
	}
	return false
}

// IsTCP reports whether the proxy handles the port as opaque TCP.
func (p Protocol) IsTCP() bool {
	switch p {
	case TCP, HTTPS, TLS, Mongo, Redis, MySQL:
		return true
	}
	return false
}

// IsTLS reports whether the traffic is TLS the proxy can route by SNI.
func (p Protocol) IsTLS() bool { return p == HTTPS || p == TLS }

// IsUnsupported reports whether the protocol is undeclared and sniffed.
func (p Protocol) IsUnsupported() bool { return p == Unsupported }
