package index

import (
	"maps"
	"slices"
	"strconv"
	"strings"

	security "istio.io/api/security/v1beta1"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// MTLSMode is the mutual TLS mode a workload port accepts, as
// PeerAuthentication sets it.
type MTLSMode int

// The modes. MTLSUnknown means no policy said anything.
const (
	MTLSUnknown MTLSMode = iota
	MTLSDisable
	MTLSPermissive
	MTLSStrict
)

func (m MTLSMode) String() string {
	switch m {
	case MTLSDisable:
		return "DISABLE"
	case MTLSPermissive:
		return "PERMISSIVE"
	case MTLSStrict:
		return "STRICT"
	}
	return "UNKNOWN"
}

func modeOf(m *security.PeerAuthentication_MutualTLS) MTLSMode {
	switch m.GetMode() {
	case security.PeerAuthentication_MutualTLS_DISABLE:
		return MTLSDisable
	case security.PeerAuthentication_MutualTLS_PERMISSIVE:
		return MTLSPermissive
	case security.PeerAuthentication_MutualTLS_STRICT:
		return MTLSStrict
	}
	return MTLSUnknown // UNSET or no mtls: inherit
}

// EffectiveMTLS is the PeerAuthentication in force for one workload: a
// mode for the workload and, from a workload-selecting policy's
// portLevelMtls, modes for some of its (target) ports.
type EffectiveMTLS struct {
	Mode    MTLSMode
	PerPort map[uint32]MTLSMode
	// Sources are the policies that decided, mesh first, as "ns/name".
	Sources []string
}

// ForPort is the mode of one workload port.
func (e EffectiveMTLS) ForPort(port uint32) MTLSMode {
	if m, ok := e.PerPort[port]; ok {
		return m
	}
	return e.Mode
}

// Key identifies the effective policy for caching generated output.
func (e EffectiveMTLS) Key() string {
	var b strings.Builder
	b.WriteString(e.Mode.String())
	for _, p := range slices.Sorted(maps.Keys(e.PerPort)) {
		b.WriteString("," + strconv.Itoa(int(p)) + "=" + e.PerPort[p].String())
	}
	return b.String()
}

// PeerAuthentication is the effective mutual TLS policy of a workload in
// namespace ns with these labels, as Istio computes it.
func (ix *Index) PeerAuthentication(ns string, labels map[string]string) EffectiveMTLS {
	var applicable []*config.Object
	for _, o := range ix.byKind[config.PeerAuthentication] {
		if o.Meta.Namespace != ns && o.Meta.Namespace != ix.opts.RootNamespace {
			continue
		}
		pa, ok := o.Spec.(*security.PeerAuthentication)
		if !ok {
			continue
		}
		if labelsMatch(pa.GetSelector().GetMatchLabels(), labels) {
			applicable = append(applicable, o)
		}
	}
	return ComposePeerAuthentication(ix.opts.RootNamespace, applicable)
}

// ComposePeerAuthentication merges the policies that apply to one
// workload (objects in Istio's order, oldest first), as Istio does: the
// mesh-wide policy (root namespace, no selector), the namespace's (no
// selector) and the workload's (a selector, outside the root namespace);
// in each scope the oldest wins; the narrowest scope that sets a mode
// decides, UNSET inheriting from the wider one; port-level modes come only
// from the workload policy, UNSET taking the workload's mode. With no
// policy at all the mode is PERMISSIVE.
func ComposePeerAuthentication(rootNamespace string, objs []*config.Object) EffectiveMTLS {
	var mesh, namespace, workload *config.Object
	for _, o := range objs { // oldest first: keep the first seen per scope
		pa := o.Spec.(*security.PeerAuthentication)
		switch {
		case len(pa.GetSelector().GetMatchLabels()) == 0 && o.Meta.Namespace == rootNamespace:
			if mesh == nil {
				mesh = o
			}
		case len(pa.GetSelector().GetMatchLabels()) == 0:
			if namespace == nil {
				namespace = o
			}
		case o.Meta.Namespace != rootNamespace:
			if workload == nil {
				workload = o
			}
		}
	}
	out := EffectiveMTLS{Mode: MTLSPermissive}
	for _, o := range []*config.Object{mesh, namespace, workload} {
		if o == nil {
			continue
		}
		out.Sources = append(out.Sources, o.Meta.Namespace+"/"+o.Meta.Name)
		if m := modeOf(o.Spec.(*security.PeerAuthentication).GetMtls()); m != MTLSUnknown {
			out.Mode = m
		}
	}
	if workload != nil {
		for port, m := range workload.Spec.(*security.PeerAuthentication).GetPortLevelMtls() {
			if out.PerPort == nil {
				out.PerPort = map[uint32]MTLSMode{}
			}
			mode := modeOf(m)
			if mode == MTLSUnknown {
				mode = out.Mode
			}
			out.PerPort[port] = mode
		}
	}
	return out
}

// NamespaceMTLSMode is the mode the mesh-wide and namespace-wide
// policies give namespace ns, MTLSUnknown when neither exists: what Istio
// uses as the best-effort hint for auto mTLS toward a service, since a
// client cannot know which workload-level policies its peer runs under.
func (ix *Index) NamespaceMTLSMode(ns string) MTLSMode {
	return ix.Cached("peerauthn|ns|"+ns, func() any {
		var mesh, namespace *config.Object
		for _, o := range ix.byKind[config.PeerAuthentication] {
			pa, ok := o.Spec.(*security.PeerAuthentication)
			if !ok || len(pa.GetSelector().GetMatchLabels()) > 0 {
				continue
			}
			switch o.Meta.Namespace {
			case ix.opts.RootNamespace:
				if mesh == nil {
					mesh = o
				}
			case ns:
				if namespace == nil {
					namespace = o
				}
			}
		}
		mode := MTLSUnknown
		if mesh != nil {
			// A mesh-wide policy without a mode is PERMISSIVE.
			mode = MTLSPermissive
			if m := modeOf(mesh.Spec.(*security.PeerAuthentication).GetMtls()); m != MTLSUnknown {
				mode = m
			}
		}
		if namespace != nil {
			if mode == MTLSUnknown {
				mode = MTLSPermissive
			}
			if m := modeOf(namespace.Spec.(*security.PeerAuthentication).GetMtls()); m != MTLSUnknown {
				mode = m
			}
		}
		return mode
	}).(MTLSMode)
}

// MTLSDisabled reports whether a workload (namespace, labels) accepts
// only plaintext on a port under its effective PeerAuthentication. Auto
// mTLS must not pick mTLS toward such an endpoint: Istio leaves its tlsMode
// out of EDS so the cluster's plaintext transport socket applies.
func (ix *Index) MTLSDisabled(ns string, labels map[string]string, port int) bool {
	if len(ix.byKind[config.PeerAuthentication]) == 0 {
		return false
	}
	return ix.PeerAuthentication(ns, labels).ForPort(uint32(port)) == MTLSDisable
}
