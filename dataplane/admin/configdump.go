package admin

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ConfigSource supplies the proxy's configuration as it stands, for
// /config_dump. The integrator assembles it from the bootstrap, the xDS
// client (versions, rejected updates) and the listener and cluster managers
// (warming and draining states). It is called once per request.
type ConfigSource interface {
	ConfigState() *ConfigState
}

// ConfigSourceFunc adapts a function to ConfigSource.
type ConfigSourceFunc func() *ConfigState

// ConfigState implements ConfigSource.
func (f ConfigSourceFunc) ConfigState() *ConfigState { return f() }

// ConfigState is everything /config_dump shows, as plain data.
type ConfigState struct {
	Bootstrap       *bootstrapv3.Bootstrap
	BootstrapLoaded time.Time
	// ClustersVersion and ListenersVersion are the version_info of the last
	// accepted CDS and LDS responses.
	ClustersVersion  string
	ListenersVersion string
	// Clusters hold *clusterv3.Cluster, Endpoints *endpointv3.ClusterLoadAssignment,
	// Listeners *listenerv3.Listener, Routes *routev3.RouteConfiguration,
	// Secrets *tlsv3.Secret. A listener in several states at once (active
	// while its replacement warms) appears once per state.
	Clusters, Endpoints, Listeners, Routes, Secrets []Resource
}

// ResourceState is where a dynamic resource is in its life.
type ResourceState int

const (
	// Active resources are serving.
	Active ResourceState = iota
	// Warming resources wait for their dependencies (a cluster for its
	// endpoints, a listener for its routes and secrets, a secret for SDS).
	Warming
	// Draining listeners were replaced or removed and finish their
	// connections.
	Draining
)

func (s ResourceState) String() string {
	switch s {
	case Active:
		return "ACTIVE"
	case Warming:
		return "WARMING"
	case Draining:
		return "DRAINING"
	}
	return "ResourceState(" + strconv.Itoa(int(s)) + ")"
}

// Resource is one resource as the proxy holds it.
type Resource struct {
	Name string
	// Static resources come from the bootstrap; they are always Active and
	// have no version.
	Static      bool
	State       ResourceState
	Version     string
	LastUpdated time.Time
	Config      proto.Message
	// Error is the last update of this resource that was rejected, if any.
	Error *UpdateFailure
}

// UpdateFailure is a rejected update, shown as the resource's error_state.
type UpdateFailure struct {
	Details     string
	Version     string
	LastAttempt time.Time
	// Config is the rejected resource, when kept.
	Config proto.Message
}

// BuildConfigDump builds Envoy's /config_dump document from st: the
// bootstrap, clusters, endpoints (only with includeEDS), listeners, scoped
// routes (always empty), routes and secrets dumps, in that order, with
// sensitive fields (private keys, session ticket keys, HMAC secrets)
// replaced by "[redacted]" as Envoy does. st is not modified.
func BuildConfigDump(st *ConfigState, includeEDS bool) (*adminv3.ConfigDump, error) {
	secs, err := buildSections(st, includeEDS, nil)
	if err != nil {
		return nil, err
	}
	dump := &adminv3.ConfigDump{}
	for _, m := range secs {
		a, err := pack(m)
		if err != nil {
			return nil, err
		}
		dump.Configs = append(dump.Configs, a)
	}
	redact(dump.ProtoReflect(), false)
	return dump, nil
}

func pack(m proto.Message) (*anypb.Any, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, err
	}
	return a, nil
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// sectionBuilder packs resources, naming the one that failed.
type sectionBuilder struct {
	kind string
	err  error
}

func (b *sectionBuilder) any(r *Resource, m proto.Message) *anypb.Any {
	if m == nil || b.err != nil {
		return nil
	}
	a, err := pack(m)
	if err != nil {
		b.err = fmt.Errorf("%s %q: config: %w", b.kind, r.Name, err)
	}
	return a
}

func (b *sectionBuilder) failure(r *Resource) *adminv3.UpdateFailureState {
	if r.Error == nil {
		return nil
	}
	return &adminv3.UpdateFailureState{
		FailedConfiguration: b.any(r, r.Error.Config),
		LastUpdateAttempt:   ts(r.Error.LastAttempt),
		Details:             r.Error.Details,
		VersionInfo:         r.Error.Version,
	}
}

// check rejects states a resource kind cannot be in.
func (b *sectionBuilder) check(r *Resource, allowed ...ResourceState) {
	if b.err != nil {
		return
	}
	if r.Static && r.State != Active {
		b.err = fmt.Errorf("%s %q: state: a static resource is always ACTIVE, got %s", b.kind, r.Name, r.State)
		return
	}
	if !slices.Contains(allowed, r.State) {
		b.err = fmt.Errorf("%s %q: state: %s does not apply to a %s", b.kind, r.Name, r.State, b.kind)
	}
}

// selectResources returns rs sorted by name (stable), keeping those whose
// name matches; rs itself is left in its order.
func selectResources(rs []Resource, match *regexp.Regexp) []Resource {
	out := make([]Resource, 0, len(rs))
	for _, r := range rs {
		if match == nil || match.MatchString(r.Name) {
			out = append(out, r)
		}
	}
	slices.SortStableFunc(out, func(a, b Resource) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// buildSections makes the per-type dumps in Envoy's order; match, when set,
// keeps only resources whose name it matches (the bootstrap is kept whole).
func buildSections(st *ConfigState, includeEDS bool, match *regexp.Regexp) ([]proto.Message, error) {
	secs := []proto.Message{&adminv3.BootstrapConfigDump{Bootstrap: st.Bootstrap, LastUpdated: ts(st.BootstrapLoaded)}}

	cb := &sectionBuilder{kind: "cluster"}
	cd := &adminv3.ClustersConfigDump{VersionInfo: st.ClustersVersion}
	for _, r := range selectResources(st.Clusters, match) {
		cb.check(&r, Active, Warming)
		if r.Static {
			cd.StaticClusters = append(cd.StaticClusters, &adminv3.ClustersConfigDump_StaticCluster{
				Cluster: cb.any(&r, r.Config), LastUpdated: ts(r.LastUpdated)})
			continue
		}
		dc := &adminv3.ClustersConfigDump_DynamicCluster{VersionInfo: r.Version, Cluster: cb.any(&r, r.Config),
			LastUpdated: ts(r.LastUpdated), ErrorState: cb.failure(&r)}
		if r.State == Warming {
			cd.DynamicWarmingClusters = append(cd.DynamicWarmingClusters, dc)
		} else {
			cd.DynamicActiveClusters = append(cd.DynamicActiveClusters, dc)
		}
	}
	if cb.err != nil {
		return nil, cb.err
	}
	secs = append(secs, cd)

	if includeEDS {
		eb := &sectionBuilder{kind: "endpoints"}
		ed := &adminv3.EndpointsConfigDump{}
		for _, r := range selectResources(st.Endpoints, match) {
			eb.check(&r, Active)
			if r.Static {
				ed.StaticEndpointConfigs = append(ed.StaticEndpointConfigs, &adminv3.EndpointsConfigDump_StaticEndpointConfig{
					EndpointConfig: eb.any(&r, r.Config), LastUpdated: ts(r.LastUpdated)})
				continue
			}
			ed.DynamicEndpointConfigs = append(ed.DynamicEndpointConfigs, &adminv3.EndpointsConfigDump_DynamicEndpointConfig{
				VersionInfo: r.Version, EndpointConfig: eb.any(&r, r.Config), LastUpdated: ts(r.LastUpdated), ErrorState: eb.failure(&r)})
		}
		if eb.err != nil {
			return nil, eb.err
		}
		secs = append(secs, ed)
	}

	lb := &sectionBuilder{kind: "listener"}
	ld := &adminv3.ListenersConfigDump{VersionInfo: st.ListenersVersion}
	var cur *adminv3.ListenersConfigDump_DynamicListener
	for _, r := range selectResources(st.Listeners, match) {
		lb.check(&r, Active, Warming, Draining)
		if r.Static {
			ld.StaticListeners = append(ld.StaticListeners, &adminv3.ListenersConfigDump_StaticListener{
				Listener: lb.any(&r, r.Config), LastUpdated: ts(r.LastUpdated)})
			continue
		}
		// Sorted by name, so one listener's states are adjacent.
		if cur == nil || cur.Name != r.Name {
			cur = &adminv3.ListenersConfigDump_DynamicListener{Name: r.Name}
			ld.DynamicListeners = append(ld.DynamicListeners, cur)
		}
		state := &adminv3.ListenersConfigDump_DynamicListenerState{VersionInfo: r.Version,
			Listener: lb.any(&r, r.Config), LastUpdated: ts(r.LastUpdated)}
		slot := &cur.ActiveState
		switch r.State {
		case Warming:
			slot = &cur.WarmingState
		case Draining:
			slot = &cur.DrainingState
		}
		if *slot != nil && lb.err == nil {
			lb.err = fmt.Errorf("listener %q: state: listed twice as %s", r.Name, r.State)
		}
		if r.Config != nil {
			*slot = state
		}
		if f := lb.failure(&r); f != nil {
			cur.ErrorState = f
		}
	}
	if lb.err != nil {
		return nil, lb.err
	}
	secs = append(secs, ld, &adminv3.ScopedRoutesConfigDump{})

	rb := &sectionBuilder{kind: "route_config"}
	rd := &adminv3.RoutesConfigDump{}
	for _, r := range selectResources(st.Routes, match) {
		rb.check(&r, Active)
		if r.Static {
			rd.StaticRouteConfigs = append(rd.StaticRouteConfigs, &adminv3.RoutesConfigDump_StaticRouteConfig{
				RouteConfig: rb.any(&r, r.Config), LastUpdated: ts(r.LastUpdated)})
			continue
		}
		rd.DynamicRouteConfigs = append(rd.DynamicRouteConfigs, &adminv3.RoutesConfigDump_DynamicRouteConfig{
			VersionInfo: r.Version, RouteConfig: rb.any(&r, r.Config), LastUpdated: ts(r.LastUpdated), ErrorState: rb.failure(&r)})
	}
	if rb.err != nil {
		return nil, rb.err
	}
	secs = append(secs, rd)

	sb := &sectionBuilder{kind: "secret"}
	sd := &adminv3.SecretsConfigDump{}
	for _, r := range selectResources(st.Secrets, match) {
		sb.check(&r, Active, Warming)
		if r.Static {
			sd.StaticSecrets = append(sd.StaticSecrets, &adminv3.SecretsConfigDump_StaticSecret{
				Name: r.Name, Secret: sb.any(&r, r.Config), LastUpdated: ts(r.LastUpdated)})
			continue
		}
		ds := &adminv3.SecretsConfigDump_DynamicSecret{Name: r.Name, VersionInfo: r.Version,
			Secret: sb.any(&r, r.Config), LastUpdated: ts(r.LastUpdated), ErrorState: sb.failure(&r)}
		if r.State == Warming {
			sd.DynamicWarmingSecrets = append(sd.DynamicWarmingSecrets, ds)
		} else {
			sd.DynamicActiveSecrets = append(sd.DynamicActiveSecrets, ds)
		}
	}
	if sb.err != nil {
		return nil, sb.err
	}
	return append(secs, sd), nil
}

// serveConfigDump is GET /config_dump with Envoy's ?resource=, ?mask=,
// ?name_regex= and ?include_eds.
func (s *Server) serveConfigDump(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var match *regexp.Regexp
	if expr := q.Get("name_regex"); expr != "" {
		var err error
		// Envoy's regex matchers are RE2 full matches, not searches.
		if match, err = regexp.Compile(`^(?:` + expr + `)$`); err != nil {
			textReply(w, http.StatusBadRequest, "Error while parsing name_regex from "+expr+": "+err.Error()+"\n")
			return
		}
	}
	secs, err := buildSections(s.o.Config.ConfigState(), q.Has("include_eds"), match)
	if err != nil {
		textReply(w, http.StatusInternalServerError, "config_dump: "+err.Error()+"\n")
		return
	}
	var paths []string
	if m := q.Get("mask"); m != "" {
		paths = strings.Split(m, ",")
	}
	dump := &adminv3.ConfigDump{}
	code, msg := http.StatusOK, ""
	if res := q.Get("resource"); res != "" {
		code, msg = addResource(dump, secs, res, paths)
	} else {
		code, msg = addSections(dump, secs, paths)
	}
	if code != http.StatusOK {
		textReply(w, code, msg+"\n")
		return
	}
	redact(dump.ProtoReflect(), false)
	writeProtoJSON(w, dump, jsonOut)
}

// addSections packs each section, trimmed to the mask; a section the mask
// does not fit is left out, as in Envoy.
func addSections(dump *adminv3.ConfigDump, secs []proto.Message, paths []string) (int, string) {
	for _, m := range secs {
		if paths != nil {
			t, ok := parseMask(m.ProtoReflect().Descriptor(), paths)
			if !ok {
				continue
			}
			trim(m.ProtoReflect(), t)
		}
		a, err := pack(m)
		if err != nil {
			return http.StatusInternalServerError, "config_dump: " + err.Error()
		}
		dump.Configs = append(dump.Configs, a)
	}
	if len(dump.Configs) == 0 && paths != nil {
		return http.StatusBadRequest, "FieldMask " + strings.Join(paths, ",") + " could not be successfully applied to any configs."
	}
	return http.StatusOK, ""
}

// addResource packs each element of the first section's repeated field
// named res, each trimmed to the mask.
func addResource(dump *adminv3.ConfigDump, secs []proto.Message, res string, paths []string) (int, string) {
	for _, m := range secs {
		pm := m.ProtoReflect()
		fd := pm.Descriptor().Fields().ByName(protoreflect.Name(res))
		if fd == nil {
			continue
		}
		if !fd.IsList() || fd.Message() == nil {
			return http.StatusBadRequest, fmt.Sprintf("%s is not a repeated field. Use ?mask=%s to get only this field", res, res)
		}
		l := pm.Get(fd).List()
		for i := 0; i < l.Len(); i++ {
			el := l.Get(i).Message()
			if paths != nil && !trimResource(el, paths) {
				return http.StatusBadRequest, "FieldMask " + strings.Join(paths, ",") + " could not be successfully used."
			}
			a, err := pack(el.Interface())
			if err != nil {
				return http.StatusInternalServerError, "config_dump: " + err.Error()
			}
			dump.Configs = append(dump.Configs, a)
		}
		return http.StatusOK, ""
	}
	return http.StatusNotFound, res + " not found in config dump"
}

// maskTree is a parsed FieldMask: a field mapped to nil is kept whole, to a
// subtree is trimmed further.
type maskTree map[protoreflect.Name]maskTree

// parseMask checks paths against md as protobuf's FieldMaskUtil does: every
// segment names a field, and every segment but the last a singular message.
func parseMask(md protoreflect.MessageDescriptor, paths []string) (maskTree, bool) {
	t := maskTree{}
	for _, p := range paths {
		segs := strings.Split(p, ".")
		d, node := md, t
		for i, seg := range segs {
			if d == nil {
				return nil, false
			}
			fd := d.Fields().ByName(protoreflect.Name(seg))
			if fd == nil {
				return nil, false
			}
			name := fd.Name()
			if i == len(segs)-1 {
				node[name] = nil
				break
			}
			if fd.IsList() || fd.IsMap() || fd.Message() == nil {
				return nil, false
			}
			sub, seen := node[name]
			if seen && sub == nil {
				// An enclosing path already keeps this field whole; the
				// rest of this path must still name real fields.
				sub = maskTree{}
			} else if !seen {
				sub = maskTree{}
				node[name] = sub
			}
			d, node = fd.Message(), sub
		}
	}
	return t, true
}

// trim clears every field of m that t does not keep.
func trim(m protoreflect.Message, t maskTree) {
	var drop []protoreflect.FieldDescriptor
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		sub, keep := t[fd.Name()]
		switch {
		case !keep:
			drop = append(drop, fd)
		case sub != nil && fd.Message() != nil && !fd.IsList() && !fd.IsMap():
			trim(v.Message(), sub)
		}
		return true
	})
	for _, fd := range drop {
		m.Clear(fd)
	}
}

// trimResource masks one element of a repeated dump field. Paths that go
// through the element's Any field ("cluster.name") are applied to the
// message packed inside it, as Envoy does.
func trimResource(el protoreflect.Message, paths []string) bool {
	md := el.Descriptor()
	var outer, inner []string
	var anyField protoreflect.FieldDescriptor
	for _, p := range paths {
		first, rest, _ := strings.Cut(p, ".")
		fd := md.Fields().ByName(protoreflect.Name(first))
		if fd != nil && !fd.IsList() && fd.Message() != nil && fd.Message().FullName() == "google.protobuf.Any" {
			if anyField != nil && anyField != fd {
				return false
			}
			anyField = fd
			outer = append(outer, first)
			if rest != "" {
				inner = append(inner, rest)
			}
			continue
		}
		outer = append(outer, p)
	}
	if anyField != nil && len(inner) > 0 && el.Has(anyField) {
		a := el.Get(anyField).Message().Interface().(*anypb.Any)
		m, err := a.UnmarshalNew()
		if err != nil {
			return false
		}
		t, ok := parseMask(m.ProtoReflect().Descriptor(), inner)
		if !ok {
			return false
		}
		trim(m.ProtoReflect(), t)
		packed, err := pack(m)
		if err != nil {
			return false
		}
		el.Set(anyField, protoreflect.ValueOfMessage(packed.ProtoReflect()))
	}
	t, ok := parseMask(md, outer)
	if !ok {
		return false
	}
	trim(el, t)
	return true
}
