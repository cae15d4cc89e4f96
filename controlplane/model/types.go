// Package model owns the control plane's mesh model: the services the
// mesh knows (Kubernetes Services, ServiceEntries), their instances
// (endpoints from EndpointSlices, Pods, WorkloadEntries and ServiceEntry
// endpoints), the workloads proxies run as, and the templates workloads are
// started from (Deployments, WorkloadGroups).
//
// A Registry is built by Build as a pure function of one config snapshot's
// objects and is immutable afterwards, so generators read it from many
// goroutines without locks; a new config version builds a new Registry.
package model

import (
	networking "istio.io/api/networking/v1alpha3"
	corev1 "k8s.io/api/core/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// Resolution is how a proxy finds the endpoints of a service.
type Resolution int

const (
	// ClientSideLB: the control plane sends endpoints (EDS) and the proxy
	// balances across them.
	ClientSideLB Resolution = iota
	// DNS: the proxy resolves the endpoints' host names and uses every
	// address (Envoy STRICT_DNS).
	DNS
	// DNSRoundRobin: the proxy resolves the host names and uses the first
	// address of each answer (Envoy LOGICAL_DNS).
	DNSRoundRobin
	// Passthrough: the proxy forwards to the original destination address
	// (headless services, ServiceEntry resolution NONE).
	Passthrough
	// DynamicDNS: the proxy resolves the request's own host name
	// (ServiceEntry resolution DYNAMIC_DNS, wildcard hosts).
	DynamicDNS
)

func (r Resolution) String() string {
	switch r {
	case ClientSideLB:
		return "ClientSideLB"
	case DNS:
		return "DNS"
	case DNSRoundRobin:
		return "DNSRoundRobin"
	case Passthrough:
		return "Passthrough"
	case DynamicDNS:
		return "DynamicDNS"
	}
	return "Resolution(?)"
}

// Service is one host name the mesh routes to, in one namespace. A
// ServiceEntry with several hosts yields one Service per host.
type Service struct {
	Hostname        string
	Namespace, Name string // of the declaring object
	// Addresses are the virtual IPs (ClusterIPs, ServiceEntry addresses,
	// possibly CIDRs); none for headless services or when not allocated.
	Addresses    []string
	Ports        []*Port // in declaration order
	Resolution   Resolution
	MeshExternal bool
	// ExportTo is as declared (the networking.istio.io/exportTo annotation
	// or the ServiceEntry field); empty means visible to every namespace.
	ExportTo []string
	Labels   map[string]string
	// Selector picks the service's workloads (Service spec.selector,
	// ServiceEntry workloadSelector); nil when the service selects none.
	Selector map[string]string
	// SubjectAltNames are the identities a ServiceEntry declares its
	// endpoints present.
	SubjectAltNames []string
	Source          *config.Object

	instances  map[int][]*Instance // by service port number
	identities []string
}

// Identities are the SPIFFE IDs the service's endpoints may present: its
// subject alt names and its instances' identities, sorted, without
// duplicates. A client verifying the server's certificate accepts these.
func (s *Service) Identities() []string { return s.identities }

// Port is one port of a service.
type Port struct {
	Name string
	Port int
	// TargetPort is the endpoint port when declared by number (0 when not
	// declared); TargetPortName when declared by container port name.
	TargetPort     int
	TargetPortName string
	Protocol       Protocol
}

// Instance is one endpoint of one service port.
type Instance struct {
	Address     string // IP, host name (DNS resolution) or unix:// socket path (Port 0)
	Port        int    // the endpoint's port
	Service     *Service
	ServicePort *Port
	Labels      map[string]string
	// ServiceAccount is the workload's Kubernetes service account name;
	// Identity its SPIFFE ID, spiffe://<trust domain>/ns/<ns>/sa/<sa>.
	// Both are empty when the endpoint declares no account.
	ServiceAccount string
	Identity       string
	Locality       string // region/zone/subzone
	// Healthy is false for endpoints not ready; they are kept so the
	// generator can decide. Terminating is set for endpoints shutting down.
	Healthy     bool
	Terminating bool
	Weight      uint32 // at least 1
	Namespace   string
	Workload    string // the workload's name (Deployment, WorkloadEntry, …)
	// TLSMode is "istio" when the endpoint has a sidecar that accepts
	// Istio mutual TLS, "disabled" otherwise.
	TLSMode string
	Network string
	Source  *config.Object // the Pod, WorkloadEntry, EndpointSlice or ServiceEntry it came from
}

// The kinds of Workload.
const (
	WorkloadKindPod   = "Pod"
	WorkloadKindEntry = "WorkloadEntry"
)

// Workload is a running instance of a program: a Pod or a WorkloadEntry.
type Workload struct {
	Kind            string // WorkloadKindPod or WorkloadKindEntry
	Name, Namespace string // of the Pod or WorkloadEntry
	// WorkloadName names what the workload runs as, for telemetry: the
	// Deployment of a pod (else the pod itself), the WorkloadEntry's name.
	WorkloadName   string
	Labels         map[string]string
	ServiceAccount string
	Identity       string
	IPs            []string
	Locality       string
	Network        string
	Healthy        bool
	TLSMode        string
	Source         *config.Object
}

// The kinds of WorkloadTemplate.
const (
	TemplateKindDeployment    = "Deployment"
	TemplateKindWorkloadGroup = "WorkloadGroup"
)

// WorkloadTemplate describes workloads that are started from it: the pods
// of a Deployment (which the local mesh starts), the entries a
// WorkloadGroup auto-registers.
type WorkloadTemplate struct {
	Kind            string // TemplateKindDeployment or TemplateKindWorkloadGroup
	Name, Namespace string
	Replicas        int // Deployment replicas (default 1); 0 for a WorkloadGroup
	Labels          map[string]string
	Annotations     map[string]string
	ServiceAccount  string
	// Pod is the Deployment's pod template; Entry the WorkloadGroup's entry
	// template (ports, network, locality, weight). Exactly one is set.
	Pod    *corev1.PodTemplateSpec
	Entry  *networking.WorkloadEntry
	Source *config.Object
}
