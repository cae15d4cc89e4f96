package authz

import (
	"fmt"
	"slices"
	"strings"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	security "istio.io/api/security/v1beta1"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// Filter names, as Istio's wellknown package spells them.
const (
	HTTPRBACFilter     = "envoy.filters.http.rbac"
	NetworkRBACFilter  = "envoy.filters.network.rbac"
	JWTAuthnFilter     = "envoy.filters.http.jwt_authn"
	HTTPExtAuthzFilter = "envoy.filters.http.ext_authz"
	NetExtAuthzFilter  = "envoy.filters.network.ext_authz"
)

// Input is one workload as the policies see it.
type Input struct {
	// Namespace and Labels of the workload (a pod, a WorkloadEntry, a
	// gateway deployment). A Gateway API gateway's pods carry
	// gateway.networking.k8s.io/gateway-name, which targetRef policies
	// attach to.
	Namespace string
	Labels    map[string]string
	// Gateway is true for a router proxy (ingress/egress gateway): the
	// jwt_authn filter then clears the route cache so routes can match
	// claims copied into headers, as Istio does at gateways.
	Gateway bool
	// Policies holds AuthorizationPolicy and RequestAuthentication objects
	// of every namespace (other kinds are ignored); Build selects those
	// that apply to the workload.
	Policies []*config.Object
	// Mesh supplies rootNamespace, trustDomain, trustDomainAliases and the
	// extensionProviders CUSTOM policies name. Nil is Istio's defaults.
	Mesh *meshv1alpha1.MeshConfig
	// HasService reports whether the registry has hostname:port (within
	// namespace when it is not empty). It checks CUSTOM providers' and
	// JWKS hosts as istiod does; nil assumes every service exists.
	HasService func(namespace, hostname string, port uint32) bool
}

// Filters are the authentication and authorization filters of one
// workload, in the order they go into a chain before the terminal filter:
// HTTP before the router, Network before tcp_proxy. Istio's output does not
// depend on the port; destination ports are matched by the filters.
type Filters struct {
	HTTP    []*hcmv3.HttpFilter
	Network []*listenerv3.Filter
	// Warnings are what istiod would log or refuse, with the object and
	// field. Warnings whose Chain is "tcp" matter only for TCP ports.
	Warnings []Warning
}

// Warning is one problem in a policy or in the MeshConfig.
type Warning struct {
	Object config.Key // zero for MeshConfig problems
	Field  string     // field path in the object, e.g. spec.rules[0].to[0].operation.paths
	Chain  string     // "http" or "tcp" when it concerns only that kind of chain
	Msg    string
}

func (w Warning) String() string {
	var b strings.Builder
	if w.Object.Name != "" {
		b.WriteString(w.Object.String())
	} else {
		b.WriteString("MeshConfig")
	}
	if w.Field != "" {
		b.WriteString(": ")
		b.WriteString(w.Field)
	}
	if w.Chain != "" {
		fmt.Fprintf(&b, " (%s)", w.Chain)
	}
	b.WriteString(": ")
	b.WriteString(w.Msg)
	return b.String()
}

// policy is one selected AuthorizationPolicy.
type policy struct {
	key    config.Key
	spec   *security.AuthorizationPolicy
	dryRun bool
}

// Build returns the filters for in's workload. No policy yields no
// filters (everything allowed, tokens not checked).
func Build(in Input) Filters {
	b := &builder{in: in, mesh: in.Mesh}
	if b.mesh == nil {
		b.mesh = &meshv1alpha1.MeshConfig{}
	}
	b.trust = newTrustBundle(b.mesh.GetTrustDomain(), b.mesh.GetTrustDomainAliases())
	var out Filters
	aps, ras := b.selectPolicies()

	if f := b.jwtFilter(ras); f != nil {
		out.HTTP = append(out.HTTP, f)
	}

	var custom, audit, deny, allow []policy
	for _, p := range aps {
		switch p.spec.GetAction() {
		case security.AuthorizationPolicy_CUSTOM:
			custom = append(custom, p)
		case security.AuthorizationPolicy_AUDIT:
			audit = append(audit, p)
		case security.AuthorizationPolicy_DENY:
			deny = append(deny, p)
		default:
			allow = append(allow, p)
		}
	}
	h, n := b.custom(custom)
	out.HTTP = append(out.HTTP, h...)
	out.Network = append(out.Network, n...)
	// Istio's order: AUDIT, DENY, ALLOW (pilot/pkg/security/authz/builder).
	for _, set := range []struct {
		ps     []policy
		action rbacv3.RBAC_Action
	}{{audit, rbacv3.RBAC_LOG}, {deny, rbacv3.RBAC_DENY}, {allow, rbacv3.RBAC_ALLOW}} {
		if len(set.ps) == 0 {
			continue
		}
		out.HTTP = append(out.HTTP, httpRBAC(b.rules(set.ps, set.action, false, "")))
		out.Network = append(out.Network, networkRBAC(b.rules(set.ps, set.action, true, "")))
	}
	out.Warnings = b.warnings
	return out
}

type builder struct {
	in       Input
	mesh     *meshv1alpha1.MeshConfig
	trust    trustBundle
	warnings []Warning
}

func (b *builder) warn(k config.Key, field, chain, format string, args ...any) {
	w := Warning{Object: k, Field: field, Chain: chain, Msg: fmt.Sprintf(format, args...)}
	if !slices.Contains(b.warnings, w) {
		b.warnings = append(b.warnings, w)
	}
}

func (b *builder) rootNamespace() string {
	if ns := b.mesh.GetRootNamespace(); ns != "" {
		return ns
	}
	return "istio-system"
}
