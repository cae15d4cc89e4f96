package model

import (
	"fmt"
	"strings"
	"testing"
)

const entriesYAML = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: passthrough, namespace: egress}
spec:
  hosts: ["*.wikipedia.org"]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: static-internal, namespace: vms}
spec:
  hosts: [billing.vms.internal, billing.legacy]
  addresses: [240.0.0.1]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 80, name: http, protocol: HTTP, targetPort: 8000}
  - {number: 9443, name: grpc-tls, protocol: GRPC}
  endpoints:
  - address: 10.1.0.1
    labels: {version: v1}
    serviceAccount: billing
    ports: {grpc-tls: 19443}
    locality: eu/eu-1a
    network: vm-net
    weight: 5
  - address: 10.1.0.2
    labels: {version: v2, security.istio.io/tlsMode: disabled}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns-hosts, namespace: egress}
spec:
  hosts: [api.example.com, cdn.example.com, "*.cdn.example.com"]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns-endpoints, namespace: egress}
spec:
  hosts: [db.example.com]
  location: MESH_EXTERNAL
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: DNS
  endpoints:
  - address: db-a.example.com
  - address: db-b.example.com
    ports: {tcp: 6432}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dns-rr, namespace: egress}
spec:
  hosts: [mail.example.com]
  ports: [{number: 25, name: smtp, protocol: TCP}]
  resolution: DNS_ROUND_ROBIN
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: dynamic, namespace: egress}
spec:
  hosts: ["*.svc.example.com"]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DYNAMIC_DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: selected, namespace: vms}
spec:
  hosts: [inventory.vms.internal]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  workloadSelector:
    labels: {app: inventory}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: inventory-vm1, namespace: vms}
spec:
  address: 10.2.0.1
  labels: {app: inventory, version: v1}
  serviceAccount: inventory
  ports: {http: 18080}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: inventory-vm2, namespace: vms}
spec:
  address: 10.2.0.2
  labels: {app: inventory, version: v2}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: inventory-elsewhere, namespace: other}
spec:
  address: 10.2.0.3
  labels: {app: inventory}
---
apiVersion: v1
kind: Pod
metadata: {name: inventory-pod, namespace: vms, labels: {app: inventory, version: v3}}
spec: {containers: [{name: inv, image: inv}]}
status:
  podIP: 198.18.4.1
  conditions: [{type: Ready, status: "True"}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: inventory, namespace: vms}
spec:
  metadata:
    labels: {app: inventory, version: v4}
    annotations: {owner: team-a}
  template:
    serviceAccount: inventory
    ports: {http: 18080}
    network: vm-net
`

func serviceLine(s *Service) string {
	return fmt.Sprintf("%s ns=%s %s external=%t addrs=%v", s.Hostname, s.Namespace, s.Resolution, s.MeshExternal, s.Addresses)
}

func TestServiceEntries(t *testing.T) {
	r := Build(decode(t, "entries.yaml", entriesYAML), Options{})
	var got []string
	for _, s := range r.Services() {
		got = append(got, serviceLine(s))
	}
	diffLines(t, "services", got, []string{
		"*.cdn.example.com ns=egress DNS external=true addrs=[]",
		"*.svc.example.com ns=egress DynamicDNS external=true addrs=[]",
		"*.wikipedia.org ns=egress Passthrough external=true addrs=[]",
		"api.example.com ns=egress DNS external=true addrs=[]",
		"billing.legacy ns=vms ClientSideLB external=false addrs=[240.0.0.1]",
		"billing.vms.internal ns=vms ClientSideLB external=false addrs=[240.0.0.1]",
		"cdn.example.com ns=egress DNS external=true addrs=[]",
		"db.example.com ns=egress DNS external=true addrs=[]",
		"inventory.vms.internal ns=vms ClientSideLB external=false addrs=[]",
		"mail.example.com ns=egress DNSRoundRobin external=true addrs=[]",
	})
	instances := func(host string, port int) []string {
		t.Helper()
		s := r.Service(host, "")
		if s == nil {
			t.Fatalf("no service %s", host)
		}
		return instanceLines(r.Instances(s, port))
	}
	diffLines(t, "passthrough", instances("*.wikipedia.org", 443), nil)
	diffLines(t, "dynamic DNS", instances("*.svc.example.com", 80), nil)
	billing := []string{
		"10.1.0.1:8000 healthy=true term=false sa=billing tls=istio wl=static-internal-0 loc=eu/eu-1a net=vm-net w=5 labels=version=v1",
		"10.1.0.2:8000 healthy=true term=false sa= tls=disabled wl=static-internal-1 loc= net= w=1 labels=security.istio.io/tlsMode=disabled,version=v2",
	}
	diffLines(t, "billing:80", instances("billing.vms.internal", 80), billing)
	diffLines(t, "billing.legacy:80 (every host gets the endpoints)", instances("billing.legacy", 80), billing)
	diffLines(t, "billing:9443", instances("billing.vms.internal", 9443), []string{
		"10.1.0.1:19443 healthy=true term=false sa=billing tls=istio wl=static-internal-0 loc=eu/eu-1a net=vm-net w=5 labels=version=v1",
		"10.1.0.2:9443 healthy=true term=false sa= tls=disabled wl=static-internal-1 loc= net= w=1 labels=security.istio.io/tlsMode=disabled,version=v2",
	})
	if in := r.Instances(r.Service("billing.vms.internal", ""), 80)[0]; in.Identity != "spiffe://cluster.local/ns/vms/sa/billing" || in.ServicePort.Protocol != HTTP {
		t.Errorf("billing endpoint identity %q protocol %s", in.Identity, in.ServicePort.Protocol)
	}
	diffLines(t, "DNS without endpoints resolves each host", instances("cdn.example.com", 443), []string{
		"cdn.example.com:443 healthy=true term=false sa= tls=disabled wl=dns-hosts loc= net= w=1 labels=",
	})
	diffLines(t, "DNS wildcard host", instances("*.cdn.example.com", 443), nil)
	diffLines(t, "DNS endpoints", instances("db.example.com", 5432), []string{
		"db-a.example.com:5432 healthy=true term=false sa= tls=disabled wl=dns-endpoints-0 loc= net= w=1 labels=",
		"db-b.example.com:6432 healthy=true term=false sa= tls=disabled wl=dns-endpoints-1 loc= net= w=1 labels=",
	})
	diffLines(t, "DNS round robin", instances("mail.example.com", 25), []string{
		"mail.example.com:25 healthy=true term=false sa= tls=disabled wl=dns-rr loc= net= w=1 labels=",
	})
	diffLines(t, "workloadSelector picks entries and pods of its namespace", instances("inventory.vms.internal", 8080), []string{
		"10.2.0.1:18080 healthy=true term=false sa=inventory tls=istio wl=inventory-vm1 loc= net= w=1 labels=app=inventory,version=v1",
		"10.2.0.2:8080 healthy=true term=false sa= tls=disabled wl=inventory-vm2 loc= net= w=1 labels=app=inventory,version=v2",
		"198.18.4.1:8080 healthy=true term=false sa=default tls=disabled wl=inventory-pod loc= net= w=1 labels=app=inventory,version=v3",
	})

	got = nil
	for _, w := range r.WorkloadsFor("vms", map[string]string{"app": "inventory"}) {
		got = append(got, fmt.Sprintf("%s %s ips=%v %s", w.Kind, w.Name, w.IPs, w.Identity))
	}
	diffLines(t, "inventory workloads", got, []string{
		"Pod inventory-pod ips=[198.18.4.1] spiffe://cluster.local/ns/vms/sa/default",
		"WorkloadEntry inventory-vm1 ips=[10.2.0.1] spiffe://cluster.local/ns/vms/sa/inventory",
		"WorkloadEntry inventory-vm2 ips=[10.2.0.2] ",
	})

	tpls := r.WorkloadTemplates()
	if len(tpls) != 1 {
		t.Fatalf("%d templates, want the WorkloadGroup", len(tpls))
	}
	g := tpls[0]
	if got := fmt.Sprintf("%s %s/%s sa=%s labels=%s annotations=%s network=%s port=%d",
		g.Kind, g.Namespace, g.Name, g.ServiceAccount, labelString(g.Labels), labelString(g.Annotations), g.Entry.Network, g.Entry.Ports["http"]); got !=
		"WorkloadGroup vms/inventory sa=inventory labels=app=inventory,version=v4 annotations=owner=team-a network=vm-net port=18080" {
		t.Errorf("template: %s", got)
	}
}

const exportYAML = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partner, namespace: team-a, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  hosts: [partner.example.com]
  exportTo: ["."]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: STATIC
  endpoints: [{address: 192.0.2.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partner, namespace: team-b, creationTimestamp: "2024-02-01T00:00:00Z"}
spec:
  hosts: [partner.example.com]
  exportTo: ["team-b", "team-c"]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: STATIC
  endpoints: [{address: 192.0.2.2}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partner-public, namespace: team-z, creationTimestamp: "2024-03-01T00:00:00Z"}
spec:
  hosts: [partner.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: STATIC
  endpoints: [{address: 192.0.2.3}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partner-again, namespace: team-b}
spec:
  hosts: [partner.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: hidden, namespace: team-a}
spec:
  hosts: [hidden.example.com]
  exportTo: ["~"]
  ports: [{number: 80, name: http, protocol: HTTP}]
`

func TestExportTo(t *testing.T) {
	r := Build(decode(t, "export.yaml", exportYAML), Options{})
	for ns, want := range map[string]string{
		"team-a": "192.0.2.1", // its own declaration, though exported only to itself
		"team-b": "192.0.2.2",
		"team-c": "192.0.2.2", // team-b's is exported to team-c and older than team-z's
		"team-d": "192.0.2.3", // only team-z's is exported everywhere
	} {
		s := r.Service("partner.example.com", ns)
		if s == nil {
			t.Errorf("from %s: no service", ns)
			continue
		}
		if got := r.Instances(s, 443)[0].Address; got != want {
			t.Errorf("from %s: endpoint %s (namespace %s), want %s", ns, got, s.Namespace, want)
		}
	}
	if s := r.Service("hidden.example.com", "team-a"); s == nil {
		t.Error(`exportTo "~" still lets the declaring namespace see its own object`)
	}
	if s := r.Service("hidden.example.com", "team-b"); s != nil {
		t.Error(`exportTo "~" hides the service from other namespaces`)
	}
	if n := len(r.Services()); n != 4 {
		t.Errorf("%d services, want 4 (the second declaration in team-b is dropped)", n)
	}
	diffLines(t, "warnings", r.Warnings(), []string{
		"export.yaml:31: ServiceEntry/team-b/partner-again: host partner.example.com is already declared in namespace team-b by export.yaml:12: ServiceEntry/team-b/partner; this declaration is ignored. Declare each host once per namespace.",
	})
}

func TestEgressSample(t *testing.T) {
	r := Build(loadFile(t, "bookinfo/networking/egress-rule-google-apis.yaml"), Options{})
	s := r.Service("www.googleapis.com", "default")
	if s == nil {
		t.Fatal("no service www.googleapis.com")
	}
	if got := serviceLine(s); got != "www.googleapis.com ns=default DNS external=true addrs=[]" {
		t.Errorf("service: %s", got)
	}
	var ports []string
	for _, p := range s.Ports {
		ports = append(ports, fmt.Sprintf("%s/%d/%s", p.Name, p.Port, p.Protocol))
	}
	if got := strings.Join(ports, " "); got != "http/80/HTTP https/443/HTTPS" {
		t.Errorf("ports: %s", got)
	}
	diffLines(t, "googleapis:443", instanceLines(r.Instances(s, 443)), []string{
		"www.googleapis.com:443 healthy=true term=false sa= tls=disabled wl=googleapis loc= net= w=1 labels=",
	})
}

func TestIdentities(t *testing.T) {
	yaml := entriesYAML + `
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partner, namespace: egress}
spec:
  hosts: [partner.example.com]
  subjectAltNames: ["spiffe://partner.example/sa/api"]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
`
	r := Build(decode(t, "entries.yaml", yaml), Options{TrustDomain: "td.example"})
	for host, want := range map[string]string{
		"inventory.vms.internal": "spiffe://td.example/ns/vms/sa/default spiffe://td.example/ns/vms/sa/inventory",
		"billing.vms.internal":   "spiffe://td.example/ns/vms/sa/billing",
		"partner.example.com":    "spiffe://partner.example/sa/api",
		"cdn.example.com":        "",
	} {
		if got := strings.Join(r.Service(host, "").Identities(), " "); got != want {
			t.Errorf("%s: identities %q, want %q", host, got, want)
		}
	}
}

const selectionYAML = `
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: cache-vm
  namespace: data
  labels: {app: cache, version: meta}
  annotations: {istio.io/autoRegistrationGroup: cache}
spec:
  address: 10.3.0.1
  labels: {app: cache, version: spec, istio-locality: eu.eu-2b}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: cache-by-name, namespace: data}
spec:
  address: cache-7.example.net
  labels: {app: cache}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: cache-socket, namespace: data}
spec:
  address: unix:///var/run/cache.sock
  labels: {app: cache}
---
apiVersion: v1
kind: Pod
metadata: {name: cache-pod, namespace: data, labels: {app: cache}}
spec:
  containers: [{name: c, image: c, ports: [{name: redis, containerPort: 16379}]}]
status:
  podIP: 198.18.5.1
  conditions: [{type: Ready, status: "True"}]
---
apiVersion: v1
kind: Service
metadata: {name: cache, namespace: data}
spec:
  selector: {app: cache}
  ports: [{name: redis, port: 6379}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cache-static, namespace: data}
spec:
  hosts: [cache.static.internal]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 6379, name: redis, protocol: REDIS}]
  workloadSelector: {labels: {app: cache}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cache-dns, namespace: data}
spec:
  hosts: [cache.dns.internal]
  location: MESH_INTERNAL
  resolution: DNS
  ports: [{number: 6379, name: redis, protocol: REDIS}]
  workloadSelector: {labels: {app: cache}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: select-nothing, namespace: data}
spec:
  hosts: [nothing.internal]
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP}]
  workloadSelector: {}
`

func TestWorkloadSelection(t *testing.T) {
	r := Build(decode(t, "selection.yaml", selectionYAML), Options{})
	vm := "10.3.0.1:6379 healthy=true term=false sa= tls=disabled wl=cache loc=eu/eu-2b net= w=1 labels=app=cache,istio-locality=eu.eu-2b,version=meta"
	pod := "198.18.5.1:%d healthy=true term=false sa=default tls=disabled wl=cache-pod loc= net= w=1 labels=app=cache"
	// Kubernetes Services and STATIC entries take only entries with IPs.
	diffLines(t, "kubernetes service", instanceLines(r.Instances(r.Service("cache.data.svc.cluster.local", ""), 6379)), []string{
		vm, fmt.Sprintf(pod, 6379),
	})
	// A ServiceEntry maps a pod's named container port like an entry's ports.
	diffLines(t, "STATIC entry", instanceLines(r.Instances(r.Service("cache.static.internal", ""), 6379)), []string{
		vm, fmt.Sprintf(pod, 16379),
	})
	diffLines(t, "DNS entry", instanceLines(r.Instances(r.Service("cache.dns.internal", ""), 6379)), []string{
		vm, fmt.Sprintf(pod, 16379),
		"cache-7.example.net:6379 healthy=true term=false sa= tls=disabled wl=cache-by-name loc= net= w=1 labels=app=cache",
		"unix:///var/run/cache.sock:0 healthy=true term=false sa= tls=disabled wl=cache-socket loc= net= w=1 labels=app=cache",
	})
	diffLines(t, "empty selector", instanceLines(r.Instances(r.Service("nothing.internal", ""), 80)), nil)
	if s := r.Service("cache.static.internal", ""); s.Port(6379).Protocol != Redis {
		t.Errorf("protocol %s, want Redis", s.Port(6379).Protocol)
	}
}
