// Package config is the control plane's config store: what users declare
// (Istio and Gateway API kinds) and what exists (Kubernetes-style services,
// workloads and endpoints), decoded into the published Go types, validated,
// and kept with where each object came from. Sources (a directory of YAML
// files, memory for tests, the Kubernetes API later) feed the store through
// one interface; readers see immutable snapshots.
package config

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Kind names an object type by its API group, version and kind, as it is
// written in YAML (apiVersion: group/version, kind: Kind).
type Kind struct {
	Group, Version, Kind string
}

// APIVersion is the apiVersion string ("networking.istio.io/v1", "v1").
func (k Kind) APIVersion() string {
	if k.Group == "" {
		return k.Version
	}
	return k.Group + "/" + k.Version
}

func (k Kind) String() string { return k.Kind + "." + k.APIVersion() }

// The kinds Skiff reads. Istio's kinds are listed at their v1 (or the
// newest) version; the decoder also accepts the older versions Istio
// serves (v1beta1, v1alpha3 for networking) and maps them here.
var (
	VirtualService        = Kind{"networking.istio.io", "v1", "VirtualService"}
	DestinationRule       = Kind{"networking.istio.io", "v1", "DestinationRule"}
	Gateway               = Kind{"networking.istio.io", "v1", "Gateway"}
	ServiceEntry          = Kind{"networking.istio.io", "v1", "ServiceEntry"}
	Sidecar               = Kind{"networking.istio.io", "v1", "Sidecar"}
	WorkloadEntry         = Kind{"networking.istio.io", "v1", "WorkloadEntry"}
	WorkloadGroup         = Kind{"networking.istio.io", "v1", "WorkloadGroup"}
	PeerAuthentication    = Kind{"security.istio.io", "v1", "PeerAuthentication"}
	AuthorizationPolicy   = Kind{"security.istio.io", "v1", "AuthorizationPolicy"}
	RequestAuthentication = Kind{"security.istio.io", "v1", "RequestAuthentication"}
	Telemetry             = Kind{"telemetry.istio.io", "v1", "Telemetry"}

	KubeGateway    = Kind{"gateway.networking.k8s.io", "v1", "Gateway"}
	HTTPRoute      = Kind{"gateway.networking.k8s.io", "v1", "HTTPRoute"}
	GRPCRoute      = Kind{"gateway.networking.k8s.io", "v1", "GRPCRoute"}
	TCPRoute       = Kind{"gateway.networking.k8s.io", "v1alpha2", "TCPRoute"}
	ReferenceGrant = Kind{"gateway.networking.k8s.io", "v1beta1", "ReferenceGrant"}
	GatewayClass   = Kind{"gateway.networking.k8s.io", "v1", "GatewayClass"}

	Namespace      = Kind{"", "v1", "Namespace"}
	Service        = Kind{"", "v1", "Service"}
	ServiceAccount = Kind{"", "v1", "ServiceAccount"}
	Pod            = Kind{"", "v1", "Pod"}
	Secret         = Kind{"", "v1", "Secret"}
	ConfigMap      = Kind{"", "v1", "ConfigMap"}
	Deployment     = Kind{"apps", "v1", "Deployment"}
	EndpointSlice  = Kind{"discovery.k8s.io", "v1", "EndpointSlice"}
)

// Position is where an object was declared: a file and the line of its
// document's first line. Objects from an API server have no file.
type Position struct {
	File string
	Line int
}

func (p Position) String() string {
	if p.File == "" {
		return ""
	}
	if p.Line == 0 {
		return p.File
	}
	return fmt.Sprintf("%s:%d", p.File, p.Line)
}

// Object is one config object in its published Go type.
//
// Spec holds, by kind:
//   - Istio kinds: the istio.io/api proto of the spec (*networkingv1alpha3.VirtualService, …);
//   - Gateway API kinds: the spec struct (*gatewayv1.HTTPRouteSpec, …);
//   - Kubernetes kinds: the whole typed object (*corev1.Service, *corev1.Pod,
//     *appsv1.Deployment, *discoveryv1.EndpointSlice, …), whose ObjectMeta
//     equals Meta.
//
// Status holds the status when the source has one (Gateway API, Kubernetes).
// Objects in a snapshot are shared and must not be modified.
type Object struct {
	Kind   Kind
	Meta   metav1.ObjectMeta
	Spec   any
	Status any
	Source Position

	// lines maps each field path of a decoded document to its YAML line,
	// so errors found later (validation) can name the line; see FieldLine.
	lines map[string]int
}

// Key identifies an object within a store.
type Key struct {
	Kind      Kind
	Namespace string
	Name      string
}

func (k Key) String() string {
	if k.Namespace == "" {
		return k.Kind.Kind + "/" + k.Name
	}
	return k.Kind.Kind + "/" + k.Namespace + "/" + k.Name
}

// Key returns the object's key.
func (o *Object) Key() Key { return Key{Kind: o.Kind, Namespace: o.Meta.Namespace, Name: o.Meta.Name} }

// Describe names the object for messages: kind, namespace/name and, when
// known, the file and line it came from.
func (o *Object) Describe() string {
	s := o.Key().String()
	if pos := o.Source.String(); pos != "" {
		s = pos + ": " + s
	}
	return s
}
