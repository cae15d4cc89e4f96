package server

import (
	"log/slog"
	"maps"
	"slices"
	"strings"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/gen/authz"
	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/gen/lds"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// inboundPolicy fills the inbound chains' policy filters from the
// AuthorizationPolicies and RequestAuthentications that select the proxy's
// workload. authz.Build depends only on the workload's namespace, labels
// and proxy type (not the port), so its answer is computed once per config
// version and workload shape and shared through the index's cache; its
// warnings are logged once per config version.
func inboundPolicy(mesh *meshv1alpha1.MeshConfig, log *slog.Logger) lds.InboundPolicy {
	return lds.InboundPolicyFunc(func(p *xds.Proxy, ix *index.Index, _ int) ([]*hcmv3.HttpFilter, []*listenerv3.Filter) {
		f := workloadPolicy(ix, mesh, log, p.Namespace, p.Labels, p.Type == xds.RouterProxy)
		return f.HTTP, f.Network
	})
}

func workloadPolicy(ix *index.Index, mesh *meshv1alpha1.MeshConfig, log *slog.Logger, ns string, labels map[string]string, gateway bool) authz.Filters {
	policies := ix.Cached("authz.policies", func() any {
		return append(slices.Clone(ix.Objects(config.AuthorizationPolicy)), ix.Objects(config.RequestAuthentication)...)
	}).([]*config.Object)
	if len(policies) == 0 {
		return authz.Filters{}
	}
	var key strings.Builder
	key.WriteString("authz|")
	key.WriteString(ns)
	if gateway {
		key.WriteString("|gw")
	}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		key.WriteString("|" + k + "=" + labels[k])
	}
	return ix.Cached(key.String(), func() any {
		reg := ix.Registry()
		f := authz.Build(authz.Input{
			Namespace: ns, Labels: labels, Gateway: gateway, Policies: policies, Mesh: mesh,
			HasService: func(ns, host string, port uint32) bool {
				s := reg.Service(host, ns)
				if s == nil {
					return false
				}
				for _, sp := range s.Ports {
					if uint32(sp.Port) == port {
						return true
					}
				}
				return false
			},
		})
		for _, w := range f.Warnings {
			log.Warn("authorization policy not applied as written", "workload_namespace", ns, "warning", w.String())
		}
		return f
	}).(authz.Filters)
}
