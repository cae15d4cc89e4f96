package config

import (
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	telemetry "istio.io/api/telemetry/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1alpha2 "sigs.k8s.io/gateway-api/apis/v1alpha2"
)

// family says how a kind's document is decoded.
type family int

const (
	istioFamily   family = iota // spec is an istio.io/api proto, read with protojson
	gatewayFamily               // spec and status are Gateway API structs
	kubeFamily                  // the whole document is one typed Kubernetes object
)

// kindInfo is what the decoder knows about one kind it reads.
type kindInfo struct {
	kind       Kind
	versions   []string // every version accepted in apiVersion; all map to kind
	namespaced bool
	family     family
	// newSpec returns an empty value of the Go type Object.Spec holds; for
	// the kube family, the whole object, for the others the spec.
	newSpec func() any
	// newStatus returns the Gateway API status struct; nil otherwise.
	newStatus func() any
}

func istio(k Kind, versions []string, newMsg func() proto.Message) kindInfo {
	return kindInfo{kind: k, versions: versions, namespaced: true, family: istioFamily,
		newSpec: func() any { return newMsg() }}
}

func gatewayAPI[S, T any](k Kind, versions []string, namespaced bool) kindInfo {
	return kindInfo{kind: k, versions: versions, namespaced: namespaced, family: gatewayFamily,
		newSpec: func() any { return new(S) }, newStatus: func() any { return new(T) }}
}

func kube[T any](k Kind, namespaced bool) kindInfo {
	return kindInfo{kind: k, versions: []string{k.Version}, namespaced: namespaced, family: kubeFamily,
		newSpec: func() any { return new(T) }}
}

var (
	networkingVersions = []string{"v1", "v1beta1", "v1alpha3"}
	securityVersions   = []string{"v1", "v1beta1"}
	telemetryVersions  = []string{"v1", "v1alpha1"}
)

// kinds lists every kind the decoder reads, with the versions Istio and the
// Gateway API serve for it (from Istio's CRDs and gateway-api v1.6).
var kinds = []kindInfo{
	istio(VirtualService, networkingVersions, func() proto.Message { return &networking.VirtualService{} }),
	istio(DestinationRule, networkingVersions, func() proto.Message { return &networking.DestinationRule{} }),
	istio(Gateway, networkingVersions, func() proto.Message { return &networking.Gateway{} }),
	istio(ServiceEntry, networkingVersions, func() proto.Message { return &networking.ServiceEntry{} }),
	istio(Sidecar, networkingVersions, func() proto.Message { return &networking.Sidecar{} }),
	istio(WorkloadEntry, networkingVersions, func() proto.Message { return &networking.WorkloadEntry{} }),
	istio(WorkloadGroup, networkingVersions, func() proto.Message { return &networking.WorkloadGroup{} }),
	istio(PeerAuthentication, securityVersions, func() proto.Message { return &security.PeerAuthentication{} }),
	istio(AuthorizationPolicy, securityVersions, func() proto.Message { return &security.AuthorizationPolicy{} }),
	istio(RequestAuthentication, securityVersions, func() proto.Message { return &security.RequestAuthentication{} }),
	istio(Telemetry, telemetryVersions, func() proto.Message { return &telemetry.Telemetry{} }),

	gatewayAPI[gatewayv1.GatewaySpec, gatewayv1.GatewayStatus](KubeGateway, []string{"v1", "v1beta1"}, true),
	gatewayAPI[gatewayv1.HTTPRouteSpec, gatewayv1.HTTPRouteStatus](HTTPRoute, []string{"v1", "v1beta1"}, true),
	gatewayAPI[gatewayv1.GRPCRouteSpec, gatewayv1.GRPCRouteStatus](GRPCRoute, []string{"v1", "v1alpha2"}, true),
	gatewayAPI[gatewayv1alpha2.TCPRouteSpec, gatewayv1alpha2.TCPRouteStatus](TCPRoute, []string{"v1alpha2", "v1"}, true),
	gatewayAPI[gatewayv1.ReferenceGrantSpec, struct{}](ReferenceGrant, []string{"v1beta1", "v1", "v1alpha2"}, true),
	gatewayAPI[gatewayv1.GatewayClassSpec, gatewayv1.GatewayClassStatus](GatewayClass, []string{"v1", "v1beta1"}, false),

	kube[corev1.Namespace](Namespace, false),
	kube[corev1.Service](Service, true),
	kube[corev1.ServiceAccount](ServiceAccount, true),
	kube[corev1.Pod](Pod, true),
	kube[corev1.Secret](Secret, true),
	kube[corev1.ConfigMap](ConfigMap, true),
	kube[appsv1.Deployment](Deployment, true),
	kube[discoveryv1.EndpointSlice](EndpointSlice, true),
}

// ignoredKinds are Kubernetes kinds often found next to a mesh's manifests
// that carry nothing the mesh acts on; the decoder skips them without an
// error so that whole application manifests load. Keyed by API group.
var ignoredKinds = map[string][]string{
	"":                             {"Endpoints", "LimitRange", "PersistentVolume", "PersistentVolumeClaim", "ResourceQuota"},
	"rbac.authorization.k8s.io":    {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"},
	"policy":                       {"PodDisruptionBudget"},
	"autoscaling":                  {"HorizontalPodAutoscaler"},
	"networking.k8s.io":            {"NetworkPolicy"},
	"scheduling.k8s.io":            {"PriorityClass"},
	"storage.k8s.io":               {"StorageClass"},
	"apiextensions.k8s.io":         {"CustomResourceDefinition"},
	"admissionregistration.k8s.io": {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"},
}

// IgnoredKinds lists, as "Kind.group" ("Role.rbac.authorization.k8s.io",
// "Endpoints" for the core group), the kinds Decode skips silently.
func IgnoredKinds() []string {
	var out []string
	for g, ks := range ignoredKinds {
		for _, k := range ks {
			if g == "" {
				out = append(out, k)
			} else {
				out = append(out, k+"."+g)
			}
		}
	}
	slices.Sort(out)
	return out
}

// SupportedKinds lists the kinds Decode reads, as "Kind.group/version" at
// the version Skiff holds them.
func SupportedKinds() []Kind {
	out := make([]Kind, len(kinds))
	for i, ki := range kinds {
		out[i] = ki.kind
	}
	return out
}

// Namespaced reports whether objects of kind k live in a namespace.
// Kinds the decoder does not read are reported as namespaced.
func Namespaced(k Kind) bool {
	for _, ki := range kinds {
		if ki.kind == k {
			return ki.namespaced
		}
	}
	return true
}

// lookupKind maps an apiVersion and kind as written to the kind's entry.
// found is false for kinds not read; ignored is true for those skipped
// on purpose.
func lookupKind(apiVersion, kind string) (ki *kindInfo, ignored bool) {
	group, version := "", apiVersion
	if i := strings.LastIndex(apiVersion, "/"); i >= 0 {
		group, version = apiVersion[:i], apiVersion[i+1:]
	}
	for i := range kinds {
		k := &kinds[i]
		if k.kind.Group == group && k.kind.Kind == kind && slices.Contains(k.versions, version) {
			return k, false
		}
	}
	return nil, slices.Contains(ignoredKinds[group], kind)
}

// supportedList names the kinds read, grouped by API group, for the
// unknown-kind message.
func supportedList() string {
	var groups []string
	byGroup := map[string][]string{}
	for _, ki := range kinds {
		g := ki.kind.Group
		if g == "" {
			g = "core"
		}
		if _, ok := byGroup[g]; !ok {
			groups = append(groups, g)
		}
		byGroup[g] = append(byGroup[g], ki.kind.Kind)
	}
	parts := make([]string, len(groups))
	for i, g := range groups {
		parts[i] = g + ": " + strings.Join(byGroup[g], ", ")
	}
	return strings.Join(parts, "; ")
}

// knownVersions returns the versions read for group and kind, when the
// kind is read at some version.
func knownVersions(apiVersion, kind string) []string {
	group := ""
	if i := strings.LastIndex(apiVersion, "/"); i >= 0 {
		group = apiVersion[:i]
	}
	for _, ki := range kinds {
		if ki.kind.Group == group && ki.kind.Kind == kind {
			return ki.versions
		}
	}
	return nil
}
