package index

import (
	"maps"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// mergeDelegates returns the VirtualServices that apply directly, in the
// given order: every VirtualService that is not used as a delegate, with
// each root's delegate routes merged in where the root delegates. A root
// whose delegate is missing (or not exported to the root's namespace)
// keeps its other routes; the delegating route is dropped, as in Istio.
func mergeDelegates(vss []*config.Object) []*config.Object {
	byKey := make(map[string]*config.Object, len(vss))
	for _, o := range vss {
		byKey[o.Meta.Namespace+"/"+o.Meta.Name] = o
	}
	isDelegate := make(map[*config.Object]bool)
	for _, o := range vss {
		vs, ok := o.Spec.(*networking.VirtualService)
		if !ok {
			continue
		}
		for _, r := range vs.GetHttp() {
			if d := r.GetDelegate(); d != nil {
				if dobj := byKey[delegateKey(d, o.Meta.Namespace)]; dobj != nil {
					isDelegate[dobj] = true
				}
			}
		}
	}
	var out []*config.Object
	for _, o := range vss {
		vs, ok := o.Spec.(*networking.VirtualService)
		if !ok || isDelegate[o] {
			continue
		}
		if !hasDelegate(vs) {
			out = append(out, o)
			continue
		}
		merged := proto.Clone(vs).(*networking.VirtualService)
		merged.Http = nil
		for _, r := range vs.GetHttp() {
			d := r.GetDelegate()
			if d == nil {
				merged.Http = append(merged.Http, r)
				continue
			}
			dobj := byKey[delegateKey(d, o.Meta.Namespace)]
			if dobj == nil {
				continue
			}
			dvs := dobj.Spec.(*networking.VirtualService)
			if !visibleTo(dvs.GetExportTo(), dobj.Meta.Namespace, o.Meta.Namespace) {
				continue
			}
			for _, dr := range dvs.GetHttp() {
				if m := mergeRoute(r, dr); m != nil {
					merged.Http = append(merged.Http, m)
				}
			}
		}
		cp := *o
		cp.Spec = merged
		out = append(out, &cp)
	}
	return out
}

func hasDelegate(vs *networking.VirtualService) bool {
	for _, r := range vs.GetHttp() {
		if r.GetDelegate() != nil {
			return true
		}
	}
	return false
}

func delegateKey(d *networking.Delegate, rootNS string) string {
	ns := d.GetNamespace()
	if ns == "" {
		ns = rootNS
	}
	return ns + "/" + d.GetName()
}

// mergeRoute merges a delegate's route under the root route that
// delegates to it, as Istio does: the delegate's actions, and matches that
// are the delegate's conditions within the root's. A delegate match that
// contradicts every root match makes the route unreachable: nil.
func mergeRoute(root, del *networking.HTTPRoute) *networking.HTTPRoute {
	out := proto.Clone(del).(*networking.HTTPRoute)
	if len(root.GetMatch()) == 0 {
		return out
	}
	if len(del.GetMatch()) == 0 {
		out.Match = root.GetMatch()
		return out
	}
	out.Match = nil
	for _, rm := range root.GetMatch() {
		for _, dm := range del.GetMatch() {
			if m := mergeMatch(rm, dm); m != nil {
				out.Match = append(out.Match, m)
			}
		}
	}
	if len(out.Match) == 0 {
		return nil
	}
	return out
}

// mergeMatch combines a root match with a delegate match: conditions the
// delegate leaves unset come from the root; a delegate URI must lie within
// the root's prefix (or equal its exact URI), else the pair never matches.
func mergeMatch(root, del *networking.HTTPMatchRequest) *networking.HTTPMatchRequest {
	out := proto.Clone(del).(*networking.HTTPMatchRequest)
	if out.Uri == nil {
		out.Uri = root.GetUri()
	} else if ru := root.GetUri(); ru != nil && !uriWithin(out.Uri, ru) {
		return nil
	}
	if out.Scheme == nil {
		out.Scheme = root.GetScheme()
	}
	if out.Method == nil {
		out.Method = root.GetMethod()
	}
	if out.Authority == nil {
		out.Authority = root.GetAuthority()
	}
	if out.Port == 0 {
		out.Port = root.GetPort()
	}
	if out.SourceNamespace == "" {
		out.SourceNamespace = root.GetSourceNamespace()
	}
	if len(out.Gateways) == 0 {
		out.Gateways = root.GetGateways()
	}
	out.Headers = mergeMaps(root.GetHeaders(), out.GetHeaders())
	out.QueryParams = mergeMaps(root.GetQueryParams(), out.GetQueryParams())
	out.WithoutHeaders = mergeMaps(root.GetWithoutHeaders(), out.GetWithoutHeaders())
	out.SourceLabels = mergeMaps(root.GetSourceLabels(), out.GetSourceLabels())
	return out
}

// mergeMaps returns root's entries overridden by the delegate's.
func mergeMaps[V any](root, del map[string]V) map[string]V {
	if len(root) == 0 {
		return del
	}
	out := maps.Clone(root)
	maps.Copy(out, del)
	return out
}

// uriWithin reports whether a delegate URI match stays inside the root's:
// a root prefix must prefix the delegate's prefix or exact path; a root
// exact path must equal the delegate's. Regexes cannot be compared and are
// accepted (Istio requires the delegate not to use regex then).
func uriWithin(del, root *networking.StringMatch) bool {
	rp := root.GetPrefix()
	switch {
	case root.GetRegex() != "" || del.GetRegex() != "":
		return true
	case root.GetExact() != "":
		return del.GetExact() == root.GetExact()
	case del.GetExact() != "":
		return len(del.GetExact()) >= len(rp) && del.GetExact()[:len(rp)] == rp
	}
	return len(del.GetPrefix()) >= len(rp) && del.GetPrefix()[:len(rp)] == rp
}
