package authz

import (
	"cmp"
	"slices"
	"strconv"

	security "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

const (
	// gatewayNameLabel is on the pods of a Gateway API gateway; targetRef
	// policies attach through it.
	gatewayNameLabel       = "gateway.networking.k8s.io/gateway-name"
	legacyGatewayNameLabel = "istio.io/gateway-name"
	dryRunAnnotation       = "istio.io/dry-run"
)

// targetable is what AuthorizationPolicy and RequestAuthentication share.
type targetable interface {
	GetSelector() *typev1beta1.WorkloadSelector
	GetTargetRef() *typev1beta1.PolicyTargetReference
	GetTargetRefs() []*typev1beta1.PolicyTargetReference
}

// selectPolicies picks the policies that apply to the workload, as Istio's
// policy attachment does: in the root namespace without selector, mesh
// wide; with a selector, on matching workloads of every namespace; in the
// workload's namespace without selector, namespace wide; a selector on
// matching labels; targetRef(s) only on the named Gateway API gateway.
// Root namespace policies come first, then the namespace's, each ordered by
// creation time and name as istiod orders them.
func (b *builder) selectPolicies() ([]policy, []*config.Object) {
	root := b.rootNamespace()
	var objs []*config.Object
	for _, o := range b.in.Policies {
		if o.Kind != config.AuthorizationPolicy && o.Kind != config.RequestAuthentication {
			continue
		}
		ns := o.Meta.Namespace
		if ns != root && ns != b.in.Namespace {
			continue
		}
		spec, ok := o.Spec.(targetable)
		if !ok || !b.attaches(o, spec, ns == root) {
			continue
		}
		objs = append(objs, o)
	}
	slices.SortStableFunc(objs, func(a, c *config.Object) int {
		ar, cr := a.Meta.Namespace == root, c.Meta.Namespace == root
		if ar != cr {
			if ar {
				return -1
			}
			return 1
		}
		if t := a.Meta.CreationTimestamp.Compare(c.Meta.CreationTimestamp.Time); t != 0 {
			return t
		}
		return cmp.Or(cmp.Compare(a.Meta.Namespace, c.Meta.Namespace), cmp.Compare(a.Meta.Name, c.Meta.Name))
	})
	var aps []policy
	var ras []*config.Object
	for _, o := range objs {
		if o.Kind == config.RequestAuthentication {
			ras = append(ras, o)
			continue
		}
		spec, ok := o.Spec.(*security.AuthorizationPolicy)
		if !ok {
			continue // not from the decoder; nothing to generate
		}
		p := policy{key: o.Key(), spec: spec}
		if v, ok := o.Meta.Annotations[dryRunAnnotation]; ok {
			d, err := strconv.ParseBool(v)
			if err != nil {
				b.warn(p.key, "metadata.annotations["+dryRunAnnotation+"]", "", "%q is not a boolean (true or false); the policy is enforced", v)
			}
			p.dryRun = d
		}
		aps = append(aps, p)
	}
	return aps, ras
}

func (b *builder) attaches(o *config.Object, spec targetable, inRoot bool) bool {
	refs := spec.GetTargetRefs()
	if r := spec.GetTargetRef(); r != nil {
		refs = append([]*typev1beta1.PolicyTargetReference{r}, refs...)
	}
	if len(refs) > 0 {
		gw := b.in.Labels[gatewayNameLabel]
		if gw == "" {
			gw = b.in.Labels[legacyGatewayNameLabel]
		}
		if gw == "" || o.Meta.Namespace != b.in.Namespace {
			return false
		}
		// Only Gateway targets concern sidecars and gateways; Service,
		// ServiceEntry and GatewayClass targets are for waypoints.
		for _, r := range refs {
			if r.GetKind() == "Gateway" && r.GetGroup() == "gateway.networking.k8s.io" && r.GetName() == gw &&
				(r.GetNamespace() == "" || r.GetNamespace() == o.Meta.Namespace) {
				return true
			}
		}
		return false
	}
	sel := spec.GetSelector().GetMatchLabels()
	if len(sel) == 0 {
		// Without a selector: mesh wide from the root namespace, namespace
		// wide otherwise (selectPolicies already kept only those two).
		return inRoot || o.Meta.Namespace == b.in.Namespace
	}
	for k, v := range sel {
		if got, ok := b.in.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
