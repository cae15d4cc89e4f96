package validation

import "testing"

func TestSidecar(t *testing.T) {
	runCases(t, []vcase{
		{"valid", scDoc(`workloadSelector: {labels: {app: a}}
ingress:
- port: {number: 9080, protocol: HTTP, name: http}
  defaultEndpoint: 127.0.0.1:8080
egress:
- port: {number: 3306, protocol: MYSQL, name: mysql}
  hosts: ["*/mysql.example.com"]
- hosts: ["./*", "istio-system/*"]
outboundTrafficPolicy: {mode: REGISTRY_ONLY}
`), nil},
		{"empty", scDoc("{}\n"), []string{"spec: is empty; set egress, ingress, outboundTrafficPolicy or inboundConnectionPool"}},
		{"egress hosts need namespace", scDoc("egress:\n- hosts: [\"reviews\", \"Bad/x\", \"./a.*.b\"]\n"), []string{
			`spec.egress[0].hosts[0]: "reviews" must be namespace/host, e.g. "./*", "istio-system/*" or "*/reviews.default.svc.cluster.local"`,
			`spec.egress[0].hosts[1]: "Bad/x": namespace "Bad" is invalid; use at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit`,
			`spec.egress[0].hosts[2]: "a.*.b" is not a valid host: a wildcard is allowed only as the first label (*.example.com)`,
		}},
		{"one portless egress, last", scDoc(`egress:
- hosts: ["./*"]
- hosts: ["istio-system/*"]
- port: {number: 80, protocol: HTTP}
  hosts: []
- port: {number: 80, protocol: HTTP}
  hosts: ["./*"]
`), []string{
			"spec.egress[0]: has no port but is not the last egress listener; move the catch-all listener last",
			"spec.egress[1]: is a second egress listener without a port (spec.egress[0] is the first); only one may omit the port",
			"spec.egress[1]: has no port but is not the last egress listener; move the catch-all listener last",
			`spec.egress[2].hosts: is empty; give at least one namespace/host, e.g. "./*" or "istio-system/*"`,
			"spec.egress[3].port.number: port 80 is already used by spec.egress[2]; egress ports must be unique",
		}},
		{"ingress", scDoc(`ingress:
- defaultEndpoint: 127.0.0.1:80
- port: {number: 80, protocol: HTTP}
  defaultEndpoint: "10.0.0.1:80"
- port: {number: 80, protocol: TCP}
  defaultEndpoint: "localhost"
  tls: {mode: ISTIO_MUTUAL}
`), []string{
			"spec.ingress[0].port: is required for an ingress listener",
			`spec.ingress[1].defaultEndpoint: "10.0.0.1:80" must use a loopback or unspecified address (127.0.0.1, 0.0.0.0, [::1] or [::])`,
			"spec.ingress[2].port.number: port 80 is already used by spec.ingress[1]; ingress ports must be unique",
			`spec.ingress[2].defaultEndpoint: "localhost" is not IP:PORT or unix:///path; use e.g. 127.0.0.1:8080`,
			"spec.ingress[2].tls.mode: ISTIO_MUTUAL is not supported on a sidecar ingress listener; use SIMPLE or MUTUAL",
			"spec.ingress[2].tls: needs the port's protocol to be HTTPS or TLS; it is TCP",
		}},
		{"ingress tls from files only", scDoc(`ingress:
- port: {number: 8443, protocol: HTTPS, targetPort: 8443}
  defaultEndpoint: ":8443"
  tls: {mode: SIMPLE, credentialName: c}
egress:
- port: {number: 0, protocol: HTTP}
  hosts: ["./*"]
`), []string{
			"spec.ingress[0].port.targetPort: has no effect on a Sidecar; remove it",
			"spec.ingress[0].tls.credentialName: is not supported on a sidecar ingress listener; give serverCertificate and privateKey files",
			"spec.egress[0].port.number: port 0 needs a unix:// bind address; give a port number 1-65535",
		}},
		{"egress proxy", scDoc("outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n  egressProxy: {host: egress.example.com}\n"), []string{
			"spec.outboundTrafficPolicy.egressProxy: takes effect only with mode ALLOW_ANY; set the mode or remove egressProxy",
			"spec.outboundTrafficPolicy.egressProxy.port: is required; give the egress proxy's port",
		}},
		{"empty selector", scDoc("workloadSelector: {labels: {}}\negress: [{hosts: [\"./*\"]}]\n"), []string{
			"warning: spec.workloadSelector.labels: is empty, so this Sidecar applies to the whole namespace; give labels or remove workloadSelector"}},
	})
}
