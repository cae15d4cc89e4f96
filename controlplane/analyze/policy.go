package analyze

import (
	"fmt"

	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	telemetry "istio.io/api/telemetry/v1alpha1"
	typev1beta1 "istio.io/api/type/v1beta1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// policySelectors reports workload-scoped config whose selector picks no
// workload, so it applies to nothing: AuthorizationPolicy,
// PeerAuthentication, RequestAuthentication and Telemetry as
// NoMatchingWorkloadsFound (IST0127, Istio's code for AuthorizationPolicy),
// Sidecar as ReferencedResourceNotFound "selector" (IST0101, as Istio).
// A policy in the root namespace selects across the mesh; elsewhere, in
// its own namespace. Policies bound with targetRef(s) are not checked.
func policySelectors(ix *index) []Message {
	var out []Message
	for _, o := range ix.objs {
		var sel *typev1beta1.WorkloadSelector
		path := "spec.selector.matchLabels"
		switch spec := o.Spec.(type) {
		case *security.AuthorizationPolicy:
			if spec.TargetRef != nil || len(spec.TargetRefs) > 0 {
				continue
			}
			sel = spec.Selector
			if sel == nil && o.Meta.Namespace != ix.opts.RootNamespace && !ix.hasWorkloads(o.Meta.Namespace) {
				// Istio: a namespace-wide policy in a namespace that runs nothing.
				out = append(out, report(NoMatchingWorkloadsFound, o, "spec",
					fmt.Sprintf("Deploy workloads in namespace %s, or move the policy to the namespace it is meant for.", o.Meta.Namespace),
					"No matching workloads for this resource with the following labels: %s", ""))
				continue
			}
		case *security.PeerAuthentication:
			sel = spec.Selector
		case *security.RequestAuthentication:
			if spec.TargetRef != nil || len(spec.TargetRefs) > 0 {
				continue
			}
			sel = spec.Selector
		case *telemetry.Telemetry:
			if spec.TargetRef != nil || len(spec.TargetRefs) > 0 {
				continue
			}
			sel = spec.Selector
		case *networking.Sidecar:
			ws := spec.GetWorkloadSelector()
			if len(ws.GetLabels()) == 0 {
				continue
			}
			set := labels.Set(ws.GetLabels())
			if !ix.selects(ix.scope(o), set) {
				out = append(out, report(ReferencedResourceNotFound, o, "spec.workloadSelector.labels",
					fmt.Sprintf("Change spec.workloadSelector.labels to the labels of pods in namespace %s, or remove the selector to make the Sidecar namespace-wide.", o.Meta.Namespace),
					"Referenced selector not found: %q", labels.SelectorFromSet(set).String()))
			}
			continue
		default:
			continue
		}
		if len(sel.GetMatchLabels()) == 0 {
			continue
		}
		set := labels.Set(sel.GetMatchLabels())
		if ix.selects(ix.scope(o), set) {
			continue
		}
		where := "namespace " + o.Meta.Namespace
		if ix.scope(o) == "" {
			where = "the mesh"
		}
		out = append(out, report(NoMatchingWorkloadsFound, o, path,
			fmt.Sprintf("Change %s to the labels of workloads in %s, or remove the selector to apply the %s to the whole namespace; as written it applies to nothing.", path, where, o.Kind.Kind),
			"No matching workloads for this resource with the following labels: %s", labels.SelectorFromSet(set).String()))
	}
	return out
}

// scope is the namespace a workload selector of o looks in: "" (every
// namespace) for the root namespace's policies.
func (ix *index) scope(o *config.Object) string {
	if o.Meta.Namespace == ix.opts.RootNamespace {
		return ""
	}
	return o.Meta.Namespace
}
