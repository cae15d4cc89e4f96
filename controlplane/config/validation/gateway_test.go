package validation

import "testing"

func TestGateway(t *testing.T) {
	runCases(t, []vcase{
		{"valid https", gwDoc(`selector: {istio: ingressgateway}
servers:
- port: {number: 443, name: https, protocol: HTTPS}
  hosts: ["bookinfo/*.example.com", "./a.example.com", "*"]
  tls: {mode: SIMPLE, credentialName: cert}
- port: {number: 80, name: http, protocol: HTTP}
  hosts: ["*"]
  tls: {httpsRedirect: true}
`), nil},
		{"no servers", gwDoc("selector: {istio: ingressgateway}\n"), []string{"spec.servers: is empty; a Gateway needs at least one server"}},
		{"server fields", gwDoc(`servers:
- port: {number: 0, name: "", protocol: FTP, targetPort: 8080}
  hosts: []
  bind: "not-an-ip"
`), []string{
			`spec.servers[0].hosts: is empty; give at least one host, e.g. "*" or "ns/host.example.com"`,
			"spec.servers[0].port.number: port 0 is out of range; use 1-65535",
			`spec.servers[0].port.protocol: protocol "FTP" is unknown; use one of HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TCP, TLS, MONGO, REDIS, MYSQL`,
			"spec.servers[0].port.name: is empty; every server port needs a name",
			"spec.servers[0].port.targetPort: has no effect on a Gateway; remove it",
			`spec.servers[0].bind: "not-an-ip" is not an IP address or unix:// path`,
		}},
		{"hosts with namespace", gwDoc(`servers:
- port: {number: 80, name: http, protocol: HTTP}
  hosts: ["Bad/a.com", "ns/a.*.com"]
`), []string{
			`spec.servers[0].hosts[0]: "Bad/a.com": namespace "Bad" is invalid; use at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit`,
			`spec.servers[0].hosts[1]: "a.*.com" is not a valid host: a wildcard is allowed only as the first label (*.example.com)`,
		}},
		{"https needs tls", gwDoc("servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [\"*\"]\n"), []string{
			"spec.servers[0].tls: is required for a HTTPS server; set mode and credentialName (or serverCertificate and privateKey)"}},
		{"simple needs cert and key", gwDoc("servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [\"*\"]\n  tls: {mode: SIMPLE}\n"), []string{
			"spec.servers[0].tls.serverCertificate: is required for SIMPLE TLS unless credentialName is set",
			"spec.servers[0].tls.privateKey: is required for SIMPLE TLS unless credentialName is set",
		}},
		{"mutual needs ca", gwDoc("servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [\"*\"]\n  tls: {mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}\n"), []string{
			"spec.servers[0].tls.caCertificates: is required for MUTUAL TLS unless credentialName is set; give the CA that signs client certificates"}},
		{"https redirect on https", gwDoc("servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [\"*\"]\n  tls: {httpsRedirect: true, mode: SIMPLE, credentialName: c}\n"), []string{
			"warning: spec.servers[0].tls.httpsRedirect: applies only to HTTP servers; this server is HTTPS"}},
		{"one certificate source", gwDoc("servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [\"*\"]\n  tls: {mode: SIMPLE, credentialName: c, serverCertificate: /c.pem, privateKey: /k.pem, caCrl: /crl.pem}\n"), []string{
			"spec.servers[0].tls: sets more than one of credentialName, credentialNames, serverCertificate/privateKey and tlsCertificates; keep one",
			"spec.servers[0].tls.caCrl: cannot be combined with credentialName; put the CRL in the credential",
			"spec.servers[0].tls.caCrl: applies to client certificates, which SIMPLE TLS does not ask for; use MUTUAL or remove it",
		}},
		{"passthrough ignores certificates", gwDoc("servers:\n- port: {number: 443, name: tls, protocol: TLS}\n  hosts: [\"*\"]\n  tls: {mode: PASSTHROUGH, credentialName: c}\n"), []string{
			"warning: spec.servers[0].tls: PASSTHROUGH does not terminate TLS, so its certificates are ignored; remove them"}},
		{"gateway name has no dots", `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: my.gateway}
spec:
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
`, []string{`metadata.name: "my.gateway" is not a valid Gateway name; use at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit`}},
		{"tls on plain http", gwDoc("servers:\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: [\"*\"]\n  tls: {mode: SIMPLE, credentialName: c}\n"), []string{
			"spec.servers[0].tls: a HTTP server cannot terminate TLS; use protocol HTTPS or TLS, or keep only httpsRedirect"}},
		{"auto passthrough needs tls protocol", gwDoc("servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [\"*\"]\n  tls: {mode: AUTO_PASSTHROUGH}\n"), []string{
			"spec.servers[0].tls.mode: AUTO_PASSTHROUGH needs protocol TLS; this server is HTTPS"}},
		{"duplicate port names", gwDoc(`servers:
- port: {number: 80, name: http, protocol: HTTP}
  hosts: ["a.example.com"]
- port: {number: 8080, name: http, protocol: HTTP}
  hosts: ["b.example.com"]
`), []string{`spec.servers[1].port.name: port name "http" is already used by spec.servers[0]; server port names must be unique`}},
	})
}
