package inject

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Decision says whether a pod gets a sidecar, and why, in words a user can
// act on.
type Decision struct {
	Inject bool
	Reason string
}

// ignoredNamespaces are never injected, as in Istio (its IgnoredNamespaces).
var ignoredNamespaces = map[string]bool{
	"kube-system": true, "kube-public": true, "kube-node-lease": true, "local-path-storage": true,
}

// podSelector reads sidecar.istio.io/inject: the label wins over the
// deprecated annotation. ok is false when neither is set. Istio reads
// YAML-style booleans: y, yes, true and on inject; any other value does not.
func podSelector(meta *metav1.ObjectMeta) (inject, fromLabel, ok bool) {
	v, set := meta.Annotations[AnnotationInject]
	if l, has := meta.Labels[LabelInject]; has {
		v, set, fromLabel = l, true, true
	}
	if !set || v == "" {
		return false, false, false
	}
	switch strings.ToLower(v) {
	case "y", "yes", "true", "on":
		return true, fromLabel, true
	}
	return false, fromLabel, true
}

// decide is Istio's injection decision: the mutating webhook's namespace and
// object selectors (which the API server evaluates before calling istiod),
// then istiod's own injectRequired. ns is nil when the namespace is not known
// (skiff kube-inject, or a webhook the API server already filtered by
// namespace): then only the pod decides, with Istio's "enabled" policy.
func decide(meta *metav1.ObjectMeta, spec *corev1.PodSpec, ns *corev1.Namespace, opts Options) Decision {
	if spec.HostNetwork {
		return Decision{Reason: "pod uses hostNetwork; hostNetwork pods are never injected"}
	}
	if _, done := meta.Annotations[AnnotationStatus]; done {
		return Decision{Reason: "pod is already injected (it has the " + AnnotationStatus + " annotation)"}
	}
	nsName := meta.Namespace
	if ns != nil && ns.Name != "" {
		nsName = ns.Name
	}
	if ignoredNamespaces[nsName] {
		return Decision{Reason: "namespace " + nsName + " is never injected"}
	}
	podInject, fromLabel, podSet := podSelector(meta)
	if podSet && !podInject {
		where := "annotation"
		if fromLabel {
			where = "label"
		}
		return Decision{Reason: "pod " + where + " " + LabelInject + " is not \"true\""}
	}
	rev := opts.revision()
	podRev, podHasRev := meta.Labels[LabelRev]
	if ns == nil {
		if podHasRev && podRev != rev {
			return Decision{Reason: "pod label " + LabelRev + "=" + podRev + " selects another control plane revision than " + rev}
		}
		return Decision{Inject: true, Reason: "injection is on unless the pod opts out"}
	}
	nsInjection, nsHasInjection := ns.Labels[LabelInjection]
	nsRev, nsHasRev := ns.Labels[LabelRev]
	switch {
	case nsHasInjection:
		// istio-injection takes precedence over istio.io/rev, and only the
		// default revision answers to it.
		if nsInjection != "enabled" {
			return Decision{Reason: "namespace label " + LabelInjection + "=" + nsInjection + " (only \"enabled\" injects)"}
		}
		if rev != DefaultRevision {
			return Decision{Reason: "namespace label " + LabelInjection + "=enabled belongs to the default revision; this injector is revision " + rev}
		}
		return Decision{Inject: true, Reason: "namespace label " + LabelInjection + "=enabled"}
	case nsHasRev:
		if nsRev != rev {
			return Decision{Reason: "namespace label " + LabelRev + "=" + nsRev + " selects another control plane revision than " + rev}
		}
		return Decision{Inject: true, Reason: "namespace label " + LabelRev + "=" + nsRev}
	case podHasRev:
		if podRev != rev {
			return Decision{Reason: "pod label " + LabelRev + "=" + podRev + " selects another control plane revision than " + rev}
		}
		return Decision{Inject: true, Reason: "pod label " + LabelRev + "=" + podRev}
	case podInject && fromLabel:
		if rev != DefaultRevision {
			return Decision{Reason: "pod label " + LabelInject + "=true belongs to the default revision; this injector is revision " + rev}
		}
		return Decision{Inject: true, Reason: "pod label " + LabelInject + "=true"}
	case opts.EnableNamespacesByDefault && rev == DefaultRevision:
		return Decision{Inject: true, Reason: "namespace has no injection label and enableNamespacesByDefault is on"}
	}
	if podInject {
		// Webhook object selectors see labels only: the annotation alone
		// never reaches the injector in an unlabeled namespace.
		return Decision{Reason: "namespace " + nsName + " has no " + LabelInjection + " label and the pod sets " + AnnotationInject + " as an annotation, which is deprecated; set it as a label"}
	}
	return Decision{Reason: "namespace " + nsName + " has no " + LabelInjection + " or " + LabelRev + " label; label it " + LabelInjection + "=enabled or the pod " + LabelInject + "=true"}
}
