package model

import "testing"

func TestProtocolFor(t *testing.T) {
	for _, c := range []struct {
		name, appProtocol string
		want              Protocol
	}{
		{"http", "", HTTP},
		{"HTTP", "", HTTP},
		{"http-web", "", HTTP},
		{"http2", "", HTTP2},
		{"http2-api", "", HTTP2},
		{"https", "", HTTPS},
		{"https-admin", "", HTTPS},
		{"grpc", "", GRPC},
		{"grpc-api", "", GRPC},
		{"grpc-web", "", GRPCWeb},
		{"GRPC-Web-ui", "", GRPCWeb},
		{"tcp", "", TCP},
		{"tcp-echo", "", TCP},
		{"tls", "", TLS},
		{"mongo", "", Mongo},
		{"redis-cache", "", Redis},
		{"MySQL", "", MySQL},
		{"udp-dns", "", UDP},
		{"", "", Unsupported},
		{"web", "", Unsupported},
		{"httpx", "", Unsupported},
		{"metrics-http", "", Unsupported}, // the prefix decides, not a suffix
		// appProtocol decides alone when set, even over a known name.
		{"tcp", "http", HTTP},
		{"http", "grpc", GRPC},
		{"http", "web", Unsupported},
		{"web", "HTTP2", HTTP2},
		{"web", "grpc-web", GRPCWeb},
		{"tcp", "kubernetes.io/h2c", HTTP2},
		{"tcp", "kubernetes.io/ws", HTTP},
		{"tcp", "kubernetes.io/wss", HTTPS},
	} {
		if got := ProtocolFor(c.name, c.appProtocol); got != c.want {
			t.Errorf("ProtocolFor(%q, %q) = %s, want %s", c.name, c.appProtocol, got, c.want)
		}
	}
}

func TestKubePortProtocol(t *testing.T) {
	for _, c := range []struct {
		port            int
		name, transport string
		want            Protocol
	}{
		{80, "http", "TCP", HTTP},
		{80, "", "TCP", Unsupported},
		{53, "dns", "UDP", UDP},
		{9080, "http", "UDP", UDP}, // the transport wins over the name
		{3306, "", "TCP", TCP},     // server-first protocols are never sniffed
		{27017, "db", "TCP", TCP},
		{25, "", "", TCP},
		{3306, "mysql", "TCP", MySQL},
		{8080, "db", "TCP", Unsupported},
	} {
		if got := kubePortProtocol(c.port, c.name, c.transport, ""); got != c.want {
			t.Errorf("port %d name %q transport %q: %s, want %s", c.port, c.name, c.transport, got, c.want)
		}
	}
}

func TestParseProtocolAndClasses(t *testing.T) {
	if ParseProtocol("") != Unsupported || ParseProtocol("Http_Proxy") != HTTPProxy || ParseProtocol("tls") != TLS {
		t.Error("ParseProtocol")
	}
	for _, c := range []struct {
		p                          Protocol
		http, http2, tcp, tls, unk bool
	}{
		{HTTP, true, false, false, false, false},
		{GRPC, true, true, false, false, false},
		{HTTP2, true, true, false, false, false},
		{HTTPS, false, false, true, true, false},
		{TLS, false, false, true, true, false},
		{Mongo, false, false, true, false, false},
		{UDP, false, false, false, false, false},
		{Unsupported, false, false, false, false, true},
	} {
		if c.p.IsHTTP() != c.http || c.p.IsHTTP2() != c.http2 || c.p.IsTCP() != c.tcp || c.p.IsTLS() != c.tls || c.p.IsUnsupported() != c.unk {
			t.Errorf("%s: IsHTTP %t IsHTTP2 %t IsTCP %t IsTLS %t IsUnsupported %t", c.p, c.p.IsHTTP(), c.p.IsHTTP2(), c.p.IsTCP(), c.p.IsTLS(), c.p.IsUnsupported())
		}
	}
}
