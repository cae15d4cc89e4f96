package model

import (
	"strings"
	"testing"
)

const sliceYAML = `
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  clusterIP: 198.19.0.7
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: web
  - name: metrics
    port: 9090
    appProtocol: http
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: shop
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- name: http
  port: 8080
- name: metrics
  port: 9090
endpoints:
- addresses: [198.18.1.1]
  conditions: {ready: true, serving: true, terminating: false}
  targetRef: {kind: Pod, name: web-1, namespace: shop}
- addresses: [198.18.1.2]
  conditions: {ready: false, serving: true, terminating: true}
  nodeName: node-a
- addresses: [198.18.1.3]
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: shop
  labels: {app: web, version: v7, security.istio.io/tlsMode: istio, pod-template-hash: 5d4f}
  ownerReferences:
  - {apiVersion: apps/v1, kind: ReplicaSet, name: web-5d4f, uid: u1, controller: true}
spec:
  serviceAccountName: web-sa
  containers:
  - name: web
    image: web
    ports: [{name: web, containerPort: 8080}]
status:
  podIP: 198.18.1.1
  conditions: [{type: Ready, status: "True"}]
---
# Matches the selector but is not in the slice: slices, when present, are
# the whole truth.
apiVersion: v1
kind: Pod
metadata:
  name: web-2
  namespace: shop
  labels: {app: web}
spec:
  containers:
  - name: web
    image: web
    ports: [{name: web, containerPort: 8080}]
status:
  podIP: 198.18.1.9
  conditions: [{type: Ready, status: "True"}]
---
apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels:
    topology.kubernetes.io/region: eu-west
    topology.kubernetes.io/zone: eu-west-1a
`

func TestEndpointSliceInstances(t *testing.T) {
	r := Build(decode(t, "slice.yaml", sliceYAML), Options{Network: "net1"})
	s := r.Service("web.shop.svc.cluster.local", "shop")
	if s == nil {
		t.Fatal("no service web.shop")
	}
	if s.Resolution != ClientSideLB || strings.Join(s.Addresses, ",") != "198.19.0.7" {
		t.Errorf("resolution %s addresses %v", s.Resolution, s.Addresses)
	}
	if p := s.Port(80); p.Protocol != HTTP || p.TargetPortName != "web" || p.TargetPort != 0 {
		t.Errorf("port 80: %+v", p)
	}
	if p := s.Port(9090); p.Protocol != HTTP || p.TargetPort != 0 {
		t.Errorf("port 9090 (appProtocol http, name metrics): %+v", p)
	}
	diffLines(t, "web:80", instanceLines(r.Instances(s, 80)), []string{
		"198.18.1.1:8080 healthy=true term=false sa=web-sa tls=istio wl=web loc= net=net1 w=1 labels=app=web,pod-template-hash=5d4f,security.istio.io/tlsMode=istio,version=v7",
		"198.18.1.2:8080 healthy=false term=true sa= tls=disabled wl= loc=eu-west/eu-west-1a/ net=net1 w=1 labels=",
		"198.18.1.3:8080 healthy=true term=false sa= tls=disabled wl= loc= net=net1 w=1 labels=",
	})
	if got := len(r.Instances(s, 9090)); got != 3 {
		t.Errorf("web:9090 has %d instances, want 3", got)
	}
	if in := r.Instances(s, 80)[0]; in.Identity != "spiffe://cluster.local/ns/shop/sa/web-sa" || in.Source.Meta.Name != "web-abc" {
		t.Errorf("identity %q source %s", in.Identity, in.Source.Describe())
	}
}

func TestPublishNotReadyAddresses(t *testing.T) {
	yaml := strings.Replace(sliceYAML, "  clusterIP: 198.19.0.7\n", "  clusterIP: 198.19.0.7\n  publishNotReadyAddresses: true\n", 1)
	r := Build(decode(t, "slice.yaml", yaml), Options{})
	for _, in := range r.Instances(r.Service("web.shop.svc.cluster.local", ""), 80) {
		if !in.Healthy {
			t.Errorf("%s:%d not healthy though the service publishes not-ready addresses", in.Address, in.Port)
		}
	}
}

const podsYAML = `
apiVersion: v1
kind: Namespace
metadata:
  name: legacy
  labels: {istio-injection: disabled}
---
apiVersion: v1
kind: Service
metadata:
  name: api
  namespace: shop
  annotations:
    networking.istio.io/exportTo: "., frontend"
spec:
  selector: {app: api}
  ports:
  - {name: grpc, port: 7070, targetPort: grpc}
  - {name: tcp-raw, port: 9000, targetPort: 9001}
  - {port: 3306}
---
apiVersion: v1
kind: Pod
metadata:
  name: api-ready
  namespace: shop
  labels: {app: api, istio-locality: us-east.us-east-1b.rack4, topology.istio.io/network: vpc2}
spec:
  containers:
  - {name: api, image: api, ports: [{name: grpc, containerPort: 17070}]}
status:
  podIP: 198.18.2.1
  podIPs: [{ip: 198.18.2.1}, {ip: "fd00::1"}]
  conditions: [{type: Ready, status: "True"}]
---
apiVersion: v1
kind: Pod
metadata:
  name: api-starting
  namespace: shop
  labels: {app: api}
  annotations: {sidecar.istio.io/inject: "false"}
spec:
  serviceAccountName: api
  containers:
  - {name: api, image: api, ports: [{name: grpc, containerPort: 17070}]}
status:
  podIP: 198.18.2.2
  conditions: [{type: Ready, status: "False"}]
---
# No container port named grpc: an endpoint of 9000 and 3306 only.
apiVersion: v1
kind: Pod
metadata:
  name: api-old
  namespace: shop
  labels: {app: api}
spec:
  nodeName: node-b
  containers:
  - {name: api, image: api}
status:
  podIP: 198.18.2.3
  conditions: [{type: Ready, status: "True"}]
---
apiVersion: v1
kind: Pod
metadata:
  name: api-pending
  namespace: shop
  labels: {app: api}
spec:
  containers: [{name: api, image: api}]
---
apiVersion: v1
kind: Pod
metadata:
  name: api-done
  namespace: shop
  labels: {app: api}
spec:
  containers: [{name: api, image: api}]
status:
  phase: Succeeded
  podIP: 198.18.2.4
---
apiVersion: v1
kind: Node
metadata:
  name: node-b
  labels: {topology.kubernetes.io/region: us-east, topology.kubernetes.io/zone: us-east-1a, topology.istio.io/subzone: rack1}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: api-vm
  namespace: shop
spec:
  address: 10.0.0.5
  labels: {app: api, version: vm}
  ports: {grpc: 27070}
  serviceAccount: api-vm
  locality: us-west/us-west-2a
  weight: 3
---
apiVersion: v1
kind: Pod
metadata:
  name: worker
  namespace: legacy
  labels: {app: worker}
spec:
  containers: [{name: w, image: w}]
status:
  podIP: 198.18.2.9
`

func TestPodInstances(t *testing.T) {
	r := Build(decode(t, "pods.yaml", podsYAML), Options{SidecarByDefault: true})
	s := r.Service("api.shop.svc.cluster.local", "shop")
	if s == nil {
		t.Fatal("no service api.shop")
	}
	if s.Resolution != ClientSideLB || len(s.Addresses) != 0 {
		t.Errorf("a service without clusterIP in its manifest is not headless: %s %v", s.Resolution, s.Addresses)
	}
	var protos []string
	for _, p := range s.Ports {
		protos = append(protos, string(p.Protocol))
	}
	if got := strings.Join(protos, ","); got != "GRPC,TCP,TCP" {
		t.Errorf("protocols %s, want GRPC,TCP,TCP", got)
	}
	diffLines(t, "api:7070", instanceLines(r.Instances(s, 7070)), []string{
		"10.0.0.5:27070 healthy=true term=false sa=api-vm tls=istio wl=api-vm loc=us-west/us-west-2a net= w=3 labels=app=api,version=vm",
		"198.18.2.1:17070 healthy=true term=false sa=default tls=istio wl=api-ready loc=us-east/us-east-1b/rack4 net=vpc2 w=1 labels=app=api,istio-locality=us-east.us-east-1b.rack4,topology.istio.io/network=vpc2",
		"198.18.2.2:17070 healthy=false term=false sa=api tls=disabled wl=api-starting loc= net= w=1 labels=app=api",
	})
	diffLines(t, "api:9000", instanceLines(r.Instances(s, 9000)), []string{
		"10.0.0.5:9001 healthy=true term=false sa=api-vm tls=istio wl=api-vm loc=us-west/us-west-2a net= w=3 labels=app=api,version=vm",
		"198.18.2.1:9001 healthy=true term=false sa=default tls=istio wl=api-ready loc=us-east/us-east-1b/rack4 net=vpc2 w=1 labels=app=api,istio-locality=us-east.us-east-1b.rack4,topology.istio.io/network=vpc2",
		"198.18.2.2:9001 healthy=false term=false sa=api tls=disabled wl=api-starting loc= net= w=1 labels=app=api",
		"198.18.2.3:9001 healthy=true term=false sa=default tls=istio wl=api-old loc=us-east/us-east-1a/rack1 net= w=1 labels=app=api",
	})
	if got := len(r.Instances(s, 3306)); got != 4 {
		t.Errorf("api:3306 has %d instances, want 4", got)
	}
	if w := r.WorkloadByIP("fd00::1"); w == nil || w.Name != "api-ready" {
		t.Errorf("WorkloadByIP(fd00::1) = %+v", w)
	}
	if w := r.WorkloadByIP("198.18.2.4"); w != nil {
		t.Errorf("a succeeded pod is no workload, got %s", w.Name)
	}
	if ws := r.WorkloadsFor("legacy", nil); len(ws) != 1 || ws[0].TLSMode != "disabled" {
		t.Errorf("a pod in a namespace with istio-injection=disabled has no sidecar: %+v", ws)
	}

	// exportTo "., frontend": its own namespace and frontend see it.
	for ns, want := range map[string]bool{"shop": true, "frontend": true, "backend": false} {
		if got := r.Service("api.shop.svc.cluster.local", ns) != nil; got != want {
			t.Errorf("visible from %s: %t, want %t", ns, got, want)
		}
	}
	if !slicesEqual(s.ExportTo, []string{".", "frontend"}) {
		t.Errorf("exportTo %q", s.ExportTo)
	}
}

func slicesEqual(a, b []string) bool { return strings.Join(a, "\x00") == strings.Join(b, "\x00") }

const headlessYAML = `
apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: tcp-pg, port: 5432}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: data, labels: {app: db}}
spec: {containers: [{name: db, image: db}]}
status:
  podIP: 198.18.3.1
  conditions: [{type: Ready, status: "True"}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: data, labels: {app: db}, deletionTimestamp: "2024-05-01T00:00:00Z"}
spec: {containers: [{name: db, image: db}]}
status:
  podIP: 198.18.3.2
  conditions: [{type: Ready, status: "True"}]
---
apiVersion: v1
kind: Service
metadata: {name: search, namespace: data}
spec:
  type: ExternalName
  externalName: search.example.com
  ports: [{name: https, port: 443}]
---
apiVersion: v1
kind: Service
metadata: {name: dual, namespace: data}
spec:
  clusterIP: 198.19.0.9
  clusterIPs: [198.19.0.9, "fd00:19::9"]
  ports: [{name: http, port: 80}]
`

func TestHeadlessAndExternalName(t *testing.T) {
	r := Build(decode(t, "headless.yaml", headlessYAML), Options{DomainSuffix: "mesh.test"})
	db := r.Service("db.data.svc.mesh.test", "data")
	if db == nil || db.Resolution != Passthrough || len(db.Addresses) != 0 {
		t.Fatalf("headless db: %+v", db)
	}
	diffLines(t, "db:5432", instanceLines(r.Instances(db, 5432)), []string{
		"198.18.3.1:5432 healthy=true term=false sa=default tls=disabled wl=db-0 loc= net= w=1 labels=app=db",
		"198.18.3.2:5432 healthy=false term=true sa=default tls=disabled wl=db-1 loc= net= w=1 labels=app=db",
	})
	search := r.Service("search.data.svc.mesh.test", "data")
	if search == nil || search.Resolution != DNS || !search.MeshExternal || search.Port(443).Protocol != HTTPS {
		t.Fatalf("external name search: %+v", search)
	}
	diffLines(t, "search:443", instanceLines(r.Instances(search, 443)), []string{
		"search.example.com:443 healthy=true term=false sa= tls=disabled wl= loc= net= w=1 labels=",
	})
	if dual := r.Service("dual.data.svc.mesh.test", ""); dual == nil || !slicesEqual(dual.Addresses, []string{"198.19.0.9", "fd00:19::9"}) {
		t.Errorf("dual-stack service: %+v", dual)
	}
	if r.Service("db.data.svc.cluster.local", "") != nil {
		t.Error("host names use the configured domain suffix")
	}
}
