package analyze

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/model"
)

// systemNamespaces are left out of the workload checks, as Istio's
// injector and analyzers leave them out.
var systemNamespaces = map[string]bool{
	"kube-system": true, "kube-public": true, "kube-node-lease": true, "local-path-storage": true,
}

// servicePortNames reports a Service port whose protocol Istio cannot
// tell from its name or appProtocol, so the proxy sniffs it (IST0118).
func servicePortNames(ix *index) []Message {
	var out []Message
	for _, o := range ix.of(config.Service) {
		svc, ok := o.Spec.(*corev1.Service)
		if !ok || systemNamespaces[o.Meta.Namespace] || svc.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		for i, p := range svc.Spec.Ports {
			if p.AppProtocol != nil && *p.AppProtocol != "" || p.Protocol == corev1.ProtocolUDP {
				continue
			}
			if model.ProtocolFor(p.Name, "") != model.Unsupported {
				continue
			}
			name := p.Name
			suggested := "http-" + name
			if name == "" {
				suggested = "http"
			}
			out = append(out, report(PortNameIsNotUnderNamingConvention, o, idx("spec.ports", i),
				fmt.Sprintf("Name the port <protocol>[-<suffix>] (e.g. %q, or tcp-/grpc-/https-…), or set spec.ports[%d].appProtocol; until then the proxy sniffs the protocol.", suggested, i),
				"Port name %s (port: %d, targetPort: %s) doesn't follow the naming convention of Istio port.", name, p.Port, p.TargetPort.String()))
		}
	}
	return out
}
