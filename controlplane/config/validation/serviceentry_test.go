package validation

import "testing"

func TestServiceEntry(t *testing.T) {
	runCases(t, []vcase{
		{"valid static", seDoc(`hosts: [db.internal]
addresses: [10.0.0.0/24]
ports: [{number: 5432, name: tcp-pg, protocol: TCP}]
location: MESH_INTERNAL
resolution: STATIC
endpoints:
- address: 10.0.0.5
  ports: {tcp-pg: 5433}
`), nil},
		{"hosts", seDoc("hosts: []\nports: [{number: 80, name: http, protocol: HTTP}]\n"), []string{"spec.hosts: is empty; a ServiceEntry needs at least one host"}},
		{"star host", seDoc("hosts: [\"*\"]\nports: [{number: 80, name: http, protocol: HTTP}]\n"), []string{`spec.hosts[0]: "*" is not allowed; name the hosts, or use *.domain`}},
		{"addresses", seDoc("hosts: [a.example.com]\naddresses: [\"10.0.0.0/40\", \"foo\", \"10.1.0.0/16\"]\nresolution: DNS\nports: [{number: 80, name: http, protocol: HTTP}]\n"), []string{
			`spec.addresses[0]: "10.0.0.0/40" is not a valid CIDR block: netip.ParsePrefix("10.0.0.0/40"): prefix length out of range`,
			`spec.addresses[1]: "foo" is not an IP address or CIDR block`,
			`spec.addresses[2]: CIDR address "10.1.0.0/16" is allowed only with resolution NONE or STATIC`,
		}},
		{"ports unique", seDoc(`hosts: [a.example.com]
ports:
- {number: 80, name: http, protocol: HTTP}
- {number: 80, name: http, protocol: HTTP}
- {number: 81, name: "", protocol: BOGUS}
`), []string{
			`spec.ports[1].name: port name "http" is already defined; port names must be unique`,
			"spec.ports[1].number: port 80 is already defined; port numbers must be unique",
			"spec.ports[2].name: is empty; every ServiceEntry port needs a name",
			`spec.ports[2].protocol: protocol "BOGUS" is unknown; use one of HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TCP, TLS, MONGO, REDIS, MYSQL`,
		}},
		{"none with endpoints", seDoc("hosts: [a.example.com]\nports: [{number: 80, name: http}]\nresolution: NONE\nendpoints: [{address: 1.1.1.1}]\n"), []string{
			"spec.endpoints: must be empty with resolution NONE; use STATIC or DNS to list endpoints"}},
		{"static needs ips", seDoc("hosts: [a.example.com]\nports: [{number: 80, name: http}]\nresolution: STATIC\nendpoints: [{address: a.example.com, ports: {grpc: 90}}]\n"), []string{
			`spec.endpoints[0].ports[grpc]: port "grpc" is not one of the ServiceEntry's spec.ports names`,
			`spec.endpoints[0].address: "a.example.com" is not an IP address; STATIC resolution needs IPs (use DNS for host names)`,
		}},
		{"dns round robin one endpoint", seDoc("hosts: [a.example.com]\nports: [{number: 80, name: http}]\nresolution: DNS_ROUND_ROBIN\nendpoints: [{address: a.example.com}, {address: b.example.com}]\n"), []string{
			"spec.endpoints: has 2 endpoints; DNS_ROUND_ROBIN takes at most one, use DNS for several"}},
		{"dns wildcard without endpoints", seDoc("hosts: [\"*.example.com\", short]\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: DNS\n"), []string{
			`spec.hosts[0]: wildcard host "*.example.com" cannot be resolved with DNS and no endpoints; use resolution NONE or list endpoints`,
			`warning: spec.hosts[1]: "short" is not a fully qualified name; with DNS and no endpoints the host itself is resolved, so give e.g. short.example.com`,
		}},
		{"several hosts on a tcp port", seDoc("hosts: [a.example.com, b.example.com]\nports: [{number: 443, name: tls, protocol: TLS}, {number: 5432, name: pg}]\nresolution: DNS\n"), []string{
			"spec.ports[1]: port 5432 (TCP) carries no host name, so the 2 hosts cannot share it with resolution DNS; use an HTTP or TLS protocol, one host per ServiceEntry, or resolution NONE"}},
		{"selector with none", seDoc("hosts: [a.example.com]\nports: [{number: 80, name: http, protocol: HTTP}]\nworkloadSelector: {labels: {app: a}}\n"), []string{
			"warning: spec.workloadSelector: is ignored with resolution NONE; use STATIC to send traffic to the selected workloads"}},
		{"unix endpoint", seDoc("hosts: [a.example.com]\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: STATIC\nendpoints: [{address: \"unix://rel/sock\", ports: {http: 80}}]\n"), []string{
			`spec.endpoints[0].address: "unix://rel/sock" is not unix:// followed by an absolute socket path (or @abstract name)`,
			"spec.endpoints[0].ports: must be empty for a unix:// address, which has no ports",
		}},
		{"dns endpoint address", seDoc("hosts: [a.example.com]\nports: [{number: 80, name: http}]\nresolution: DNS\nendpoints: [{address: \"bad_name!\"}]\n"), []string{
			`spec.endpoints[0].address: "bad_name!" is neither an IP address nor a DNS name`}},
		{"endpoint without address", seDoc("hosts: [a.example.com]\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: STATIC\nendpoints: [{labels: {app: a}}, {network: n2}]\n"), []string{
			"spec.endpoints[0].address: is empty; give the endpoint's address, or its network if it is reached through a gateway"}},
		{"selector and endpoints", seDoc("hosts: [a.example.com]\nports: [{number: 80, name: http}]\nresolution: STATIC\nworkloadSelector: {labels: {app: a}}\nendpoints: [{address: 1.1.1.1}]\n"), []string{
			"spec.workloadSelector: cannot be combined with endpoints; select WorkloadEntries or list endpoints, not both"}},
	})
}

func TestWorkloadEntryAndGroup(t *testing.T) {
	runCases(t, []vcase{
		{"valid entry", weDoc("address: 10.0.0.1\nports: {http: 8080}\nlabels: {app: a}\nserviceAccount: sa\nlocality: us-west/zone1\n"), nil},
		{"entry needs address or network", weDoc("labels: {app: a}\n"), []string{
			"spec.address: is empty; give the workload's address, or its network if it is reached through a gateway"}},
		{"entry on another network", weDoc("network: vpc-2\n"), []string{
			`warning: spec.address: is empty; the workload is reached only through network "vpc-2"'s gateway`}},
		{"entry fields", weDoc("address: \"a b\"\nports: {HTTP: 0}\nlocality: \"us/*\"\n"), []string{
			`spec.address: "a b" is neither an IP address, a DNS name nor a unix:// path`,
			`spec.ports[HTTP]: port name "HTTP" is invalid; use at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit`,
			"spec.ports[HTTP]: port 0 is out of range; use 1-65535",
			`spec.locality: "us/*" is not region[/zone[/subzone]] without wildcards`,
		}},
		{"valid group", wgDoc("metadata: {labels: {app: a}}\ntemplate: {ports: {http: 8080}, serviceAccount: sa}\nprobe: {httpGet: {port: 8080, path: /ready}}\n"), nil},
		{"group template address and probe", wgDoc("template: {address: 1.2.3.4}\nprobe: {periodSeconds: -1}\n"), []string{
			"spec.probe.periodSeconds: -1 is negative",
			"spec.probe: has no check; set httpGet, tcpSocket, grpc or exec",
			"warning: spec.template.address: is ignored; each workload registers its own address",
		}},
		{"group needs template", wgDoc("probe: {exec: {command: []}}\n"), []string{
			"spec.template: is required; give the template of the WorkloadEntries this group creates",
			"spec.probe.exec.command: is empty; give the command to run",
		}},
	})
}
