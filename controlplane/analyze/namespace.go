package analyze

import (
	"fmt"
)

// namespaceInjection reports a declared Namespace that runs workloads but
// carries neither istio-injection nor istio.io/rev, so Kubernetes would
// start its pods without sidecars (IST0102). Only with
// Options.NamespaceInjection: the local mesh injects everywhere.
func namespaceInjection(ix *index) []Message {
	if !ix.opts.NamespaceInjection {
		return nil
	}
	var out []Message
	for _, o := range ix.namespaces {
		ns := o.Meta.Name
		if systemNamespaces[ns] || ns == ix.opts.RootNamespace || !ix.hasWorkloads(ns) {
			continue
		}
		if _, ok := o.Meta.Labels["istio-injection"]; ok {
			continue
		}
		if _, ok := o.Meta.Labels["istio.io/rev"]; ok {
			continue
		}
		out = append(out, report(NamespaceNotInjected, o, "metadata",
			fmt.Sprintf("Add the label istio-injection: enabled to Namespace %s (or istio-injection: disabled to say it needs no sidecars).", ns),
			"The namespace is not enabled for Istio injection. Run 'kubectl label namespace %s istio-injection=enabled' to enable it, or 'kubectl label namespace %s istio-injection=disabled' to explicitly mark it as not needing injection.", ns, ns))
	}
	return out
}
