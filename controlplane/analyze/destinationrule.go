package analyze

import (
	"fmt"

	networking "istio.io/api/networking/v1alpha3"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// destinationRules reports a DestinationRule whose host no service
// provides (IST0174), and a subset that a route sends traffic to but
// whose labels, with the service's selector, select no workload (IST0173).
//
// Istio reports every such subset; Skiff reports those some route uses,
// since only they turn into 503 UH: the samples' destination-rule-all.yaml
// declares ratings v2-mysql and the like for deployments a given set may
// not run, and a subset nothing routes to carries no traffic.
func destinationRules(ix *index) []Message {
	routed := ix.routedSubsets()
	var out []Message
	for _, o := range ix.of(config.DestinationRule) {
		dr, ok := o.Spec.(*networking.DestinationRule)
		if !ok || dr.Host == "" {
			continue
		}
		host := ix.fqdn(dr.Host, o.Meta.Namespace)
		svc := ix.lookup(host, o.Meta.Namespace)
		if svc == nil {
			out = append(out, report(UnknownDestinationRuleHost, o, "spec.host",
				fmt.Sprintf("Check the spelling of spec.host, use the fully qualified name (e.g. NAME.NAMESPACE.svc.%s) for a service in another namespace, or create a ServiceEntry for a host outside the mesh.", ix.opts.DomainSuffix),
				"The host %s defined in the DestinationRule does not match any services in the mesh.", dr.Host))
			continue
		}
		if svc.selector == nil {
			continue // endpoints not chosen by labels (ServiceEntry endpoints, selectorless Service)
		}
		for i, s := range dr.Subsets {
			if s == nil || !routed[subsetKey{svc.host, s.Name}] && !routed[subsetKey{host, s.Name}] {
				continue
			}
			sel := labels.Merge(svc.selector, labels.Set(s.Labels))
			if !ix.selects(svc.namespace, sel) {
				out = append(out, report(DestinationRuleSubsetNotSelectPods, o, idx("spec.subsets", i),
					fmt.Sprintf("Change spec.subsets[%d].labels to select running pods (labels %s in namespace %s), deploy pods with those labels, or remove the subset.", i, sel, svc.namespace),
					"The Subset %s defined in the DestinationRule does not select any pods. Which may lead to 503 UH (NoHealthyUpstream).", s.Name))
			}
		}
	}
	return out
}

type subsetKey struct{ host, subset string }

// routedSubsets are the (host FQDN, subset) pairs VirtualServices route to.
func (ix *index) routedSubsets() map[subsetKey]bool {
	out := map[subsetKey]bool{}
	for _, o := range ix.of(config.VirtualService) {
		vs, ok := o.Spec.(*networking.VirtualService)
		if !ok {
			continue
		}
		for _, rd := range destinations(vs) {
			if rd.d.Subset == "" {
				continue
			}
			host := ix.fqdn(rd.d.Host, o.Meta.Namespace)
			out[subsetKey{host, rd.d.Subset}] = true
			if s := ix.lookup(host, o.Meta.Namespace); s != nil {
				out[subsetKey{s.host, rd.d.Subset}] = true
			}
		}
	}
	return out
}
