package analyze

import (
	"fmt"
	"slices"

	networking "istio.io/api/networking/v1alpha3"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// gatewaySelectors reports a Gateway whose selector picks no workload
// (IST0101, "selector"), and a server port that no Service in front of the
// selected workloads sends traffic to (IST0162).
func gatewaySelectors(ix *index) []Message {
	var out []Message
	for _, o := range ix.of(config.Gateway) {
		gw, ok := o.Spec.(*networking.Gateway)
		if !ok {
			continue
		}
		sel := labels.Set(gw.Selector)
		selector := labels.SelectorFromSet(sel)
		path := "spec.selector"
		if keys := slices.Sorted(func(yield func(string) bool) {
			for k := range gw.Selector {
				if !yield(k) {
					return
				}
			}
		}); len(keys) > 0 {
			path += "." + keys[0]
		}
		ports := map[uint32]bool{}
		matched := 0
		for _, w := range ix.workloads {
			if !selector.Matches(w.labels) {
				continue
			}
			matched++
			for _, s := range ix.services {
				if s.namespace == w.namespace && s.selector != nil && labels.SelectorFromSet(s.selector).Matches(w.labels) {
					for p := range s.targetPorts {
						ports[p] = true
					}
				}
			}
		}
		if matched == 0 {
			fix := fmt.Sprintf("Deploy a gateway whose pods carry the labels %s, or change spec.selector to the labels of an existing gateway", selector)
			if !ix.opts.LocalMesh {
				fix += " (Istio's default ingress gateway has istio: ingressgateway)"
			}
			out = append(out, report(ReferencedResourceNotFound, o, path, fix+".",
				"Referenced selector not found: %q", selector.String()))
			continue
		}
		for i, s := range gw.Servers {
			n := s.GetPort().GetNumber()
			if n == 0 || ports[n] {
				continue
			}
			out = append(out, report(GatewayPortNotDefinedOnService, o, idx("spec.servers", i)+".port.number",
				fmt.Sprintf("Change spec.servers[%d].port.number to a targetPort of the gateway's Service%s, or add a port with targetPort %d to that Service.", i, ix.portHint(), n),
				"The gateway is listening on a target port (port %d) that is not defined in the Service associated with its workload instances (Pod selector %s). If you need to access the gateway port through the gateway Service, it will not be available.", n, selector))
		}
	}
	return out
}

func (ix *index) portHint() string {
	if ix.opts.LocalMesh {
		return " (80→8080 and 443→8443 on the built-in ingress gateway)"
	}
	return ""
}
