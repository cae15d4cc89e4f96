package index

import (
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// drTable holds an Index's DestinationRules by namespace, each with its
// host resolved to a full name, in Istio's order (oldest first).
type drTable struct {
	byNS map[string][]*drEntry
	// The same entries by namespace and host: exact holds those whose
	// host is a name, wild those whose host is a wildcard. A lookup per
	// service per proxy group scanned every rule of the namespace.
	exact map[string]map[string][]*drEntry
	wild  map[string][]*drEntry
	// merged caches the merge of several rules for one host and namespace,
	// so every caller gets the same *ResolvedDR and caches keyed on it hit.
	mu     sync.Mutex
	merged map[string]*ResolvedDR
}

type drEntry struct {
	obj      *config.Object
	rule     *networking.DestinationRule
	host     string // full name, or a wildcard
	selector map[string]string
	resolved *ResolvedDR
}

// drTable returns the index's DestinationRule table, built on first use.
// Cached may call its builder more than once, so it builds only the
// once-guard and the table is built by whichever guard is kept.
func (ix *Index) drTable() *drTable {
	f := ix.Cached("index/destinationrule", func() any {
		return sync.OnceValue(func() *drTable { return buildDRTable(ix) })
	})
	return f.(func() *drTable)()
}

func buildDRTable(ix *Index) *drTable {
	t := &drTable{byNS: map[string][]*drEntry{}, merged: map[string]*ResolvedDR{},
		exact: map[string]map[string][]*drEntry{}, wild: map[string][]*drEntry{}}
	for _, o := range ix.byKind[config.DestinationRule] {
		dr, ok := o.Spec.(*networking.DestinationRule)
		if !ok {
			continue
		}
		e := &drEntry{
			obj: o, rule: dr,
			host:     ix.ResolveHost(dr.GetHost(), o.Meta.Namespace),
			selector: dr.GetWorkloadSelector().GetMatchLabels(),
			resolved: &ResolvedDR{Rule: dr, Source: o},
		}
		ns := o.Meta.Namespace
		t.byNS[ns] = append(t.byNS[ns], e)
		if strings.HasPrefix(e.host, "*") {
			t.wild[ns] = append(t.wild[ns], e)
			continue
		}
		if t.exact[ns] == nil {
			t.exact[ns] = map[string][]*drEntry{}
		}
		t.exact[ns][e.host] = append(t.exact[ns][e.host], e)
	}
	return t
}

// DestinationRule returns the DestinationRule that applies to traffic from
// a proxy in namespace proxyNS (with workload labels workloadLabels) to
// host, looked up as Istio does: rules in the proxy's namespace first (one
// whose workloadSelector matches the workload before those without), then
// rules in the service's namespace exported to proxyNS, then rules in the
// root namespace exported to proxyNS. Within a namespace an exact host
// wins over a wildcard and a longer wildcard over a shorter; several rules
// for the same host are merged as Istio merges them (the oldest first:
// subsets added unless their name is taken, the first traffic policy
// kept). It returns nil when no rule applies.
func (ix *Index) DestinationRule(proxyNS, host string, workloadLabels map[string]string) *ResolvedDR {
	t := ix.drTable()
	if len(t.byNS) == 0 {
		return nil
	}
	if r := t.lookup(proxyNS, host, func(e *drEntry) bool {
		return len(e.selector) > 0 && labelsMatch(e.selector, workloadLabels)
	}); r != nil {
		return r
	}
	if r := t.lookup(proxyNS, host, func(e *drEntry) bool { return len(e.selector) == 0 }); r != nil {
		return r
	}
	exported := func(ns string) func(e *drEntry) bool {
		return func(e *drEntry) bool {
			return len(e.selector) == 0 && visibleTo(e.rule.GetExportTo(), ns, proxyNS)
		}
	}
	if svc := ix.reg.Service(host, proxyNS); svc != nil && svc.Namespace != proxyNS {
		if r := t.lookup(svc.Namespace, host, exported(svc.Namespace)); r != nil {
			return r
		}
	}
	if root := ix.opts.RootNamespace; root != proxyNS {
		return t.lookup(root, host, exported(root))
	}
	return nil
}

// DestinationRuleSelectorKey names the workload-selected DestinationRules
// in namespace ns that match these labels ("" when none). Proxies of one
// namespace with equal keys resolve every host to the same rules, so
// output generated from rules can be shared between them.
func (ix *Index) DestinationRuleSelectorKey(ns string, workloadLabels map[string]string) string {
	var b strings.Builder
	for _, e := range ix.drTable().byNS[ns] {
		if len(e.selector) > 0 && labelsMatch(e.selector, workloadLabels) {
			b.WriteString(e.obj.Meta.Name)
			b.WriteByte(',')
		}
	}
	return b.String()
}

// lookup finds the most specific rules in ns for host among those keep
// accepts, merging several for the same host.
func (t *drTable) lookup(ns, host string, keep func(*drEntry) bool) *ResolvedDR {
	// Rules naming host exactly beat every wildcard.
	var best []*drEntry
	bestHost := host
	for _, e := range t.exact[ns][host] {
		if keep(e) {
			best = append(best, e)
		}
	}
	if len(best) == 0 {
		for _, e := range t.wild[ns] {
			if !keep(e) || !hostMatches(e.host, host) {
				continue
			}
			switch {
			case len(best) > 0 && e.host == bestHost:
				best = append(best, e)
			case len(best) == 0 || moreSpecific(e.host, bestHost):
				best, bestHost = []*drEntry{e}, e.host
			}
		}
	}
	switch len(best) {
	case 0:
		return nil
	case 1:
		return best[0].resolved
	}
	key := ns + "\x00" + bestHost
	for _, e := range best {
		key += "\x00" + e.obj.Meta.Name
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if r, ok := t.merged[key]; ok {
		return r
	}
	r := mergeRules(best)
	t.merged[key] = r
	return r
}

// moreSpecific reports whether host pattern a is a better match than b:
// an exact name beats a wildcard, a longer wildcard a shorter one.
func moreSpecific(a, b string) bool {
	aw, bw := strings.HasPrefix(a, "*"), strings.HasPrefix(b, "*")
	if aw != bw {
		return !aw
	}
	return len(a) > len(b)
}

// mergeRules merges rules for one host as Istio does for rules without
// workload selectors: the oldest is the base, later ones add subsets whose
// names are not taken and a traffic policy when the base has none.
func mergeRules(list []*drEntry) *ResolvedDR {
	out := proto.Clone(list[0].rule).(*networking.DestinationRule)
	for _, e := range list[1:] {
		for _, s := range e.rule.GetSubsets() {
			if !slices.ContainsFunc(out.Subsets, func(x *networking.Subset) bool { return x.GetName() == s.GetName() }) {
				out.Subsets = append(out.Subsets, s)
			}
		}
		if out.TrafficPolicy == nil {
			out.TrafficPolicy = e.rule.GetTrafficPolicy()
		}
	}
	return &ResolvedDR{Rule: out, Source: list[0].obj}
}
