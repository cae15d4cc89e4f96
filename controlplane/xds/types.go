package xds

import (
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
)

// Type URLs of the xDS v3 resources skiffd serves.
const (
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	ListenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RouteType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	SecretType   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
)

// pushOrder is the order types go out in one push: clusters before their
// endpoints, listeners before their routes, so Envoy never holds a
// reference to something it has not been sent (make-before-break).
var pushOrder = []string{ClusterType, EndpointType, ListenerType, RouteType, SecretType}

// ShortType is the short name of a type URL used in metric labels and logs
// ("cds", "eds", "lds", "rds", "sds"), or the URL's last segment.
func ShortType(typeURL string) string {
	switch typeURL {
	case ClusterType:
		return "cds"
	case EndpointType:
		return "eds"
	case ListenerType:
		return "lds"
	case RouteType:
		return "rds"
	case SecretType:
		return "sds"
	}
	return typeURL[strings.LastIndexByte(typeURL, '.')+1:]
}

// Resource is one generated resource. Made by NewResource it carries its
// wire encoding, shared by every proxy that receives it; otherwise the
// server encodes it per response.
type Resource struct {
	Name    string
	Message proto.Message
	enc     *encoding
}

// Generator produces the resources of one xDS type for one proxy. names
// lists the subscribed resource names, nil for a wildcard subscription.
// It must be safe for concurrent use; the server calls it from many
// connections at once.
type Generator interface {
	Generate(p *Proxy, typeURL string, names []string, req *PushRequest) ([]Resource, error)
}

// Scope decides which proxies a push concerns. Without one every connected
// proxy is pushed to.
type Scope interface {
	Affected(p *Proxy, req *PushRequest) bool
}

// ConfigKey names one config object at one resource version: what a push
// carries so it can be traced to the proxies that received and ACKed it.
type ConfigKey struct {
	Kind, Namespace, Name string
	ResourceVersion       string
}

// id is the key without its version.
func (k ConfigKey) id() ConfigKey { k.ResourceVersion = ""; return k }

func (k ConfigKey) String() string {
	s := k.Kind + "/" + k.Namespace + "/" + k.Name
	if k.ResourceVersion != "" {
		s += "@" + k.ResourceVersion
	}
	return s
}

// PushRequest asks for proxies to be brought up to date.
type PushRequest struct {
	// Full means the proxy's whole configuration may have changed; when
	// false only endpoints did (Types should then be just EndpointType).
	Full bool
	// Types lists the xDS types that changed; empty means every type.
	Types map[string]bool
	// ConfigsUpdated names the objects (with resource versions) that
	// caused the push.
	ConfigsUpdated []ConfigKey
	// Reason says what triggered the push ("config", "endpoint",
	// "service", ...); merged requests join their reasons with ",".
	Reason string
	// EndpointsOf, when not nil, limits the endpoint part of the push to
	// the clusters of these service host names: only their endpoints
	// changed, so only their ClusterLoadAssignments are sent (state of the
	// world allows that for EDS), and proxies that watch none of them get
	// nothing. nil means every cluster's.
	EndpointsOf map[string]bool
	// Start is when the first change behind this push happened; Push
	// fills it in when zero. Convergence time is measured from it.
	Start time.Time
	// Proxies, when not nil, limits the push to the proxies it accepts:
	// config only some proxies see (another namespace's private
	// VirtualService, a Sidecar, a gateway's) leaves the others' config as
	// it was, and they are not pushed to, as Istio's ProxyNeedsPush
	// decides. nil reaches every proxy. It must accept every proxy whose
	// config of the covered types may differ.
	Proxies func(*Proxy) bool
}

// covers reports whether the request asks for typeURL.
func (r *PushRequest) covers(typeURL string) bool {
	return len(r.Types) == 0 || r.Types[typeURL]
}

// edsOnly reports whether only endpoints changed: such pushes use the
// short debounce window.
func (r *PushRequest) edsOnly() bool {
	return len(r.Types) == 1 && r.Types[EndpointType]
}

// merge returns a request covering both a and b. Neither is modified.
func merge(a, b *PushRequest) *PushRequest {
	if a == nil {
		return b
	}
	if b == nil {
		return a
	}
	out := &PushRequest{Full: a.Full || b.Full, Start: a.Start}
	if b.Start.Before(out.Start) || out.Start.IsZero() {
		out.Start = b.Start
	}
	if len(a.Types) > 0 && len(b.Types) > 0 {
		out.Types = make(map[string]bool, len(a.Types)+len(b.Types))
		for t := range a.Types {
			out.Types[t] = true
		}
		for t := range b.Types {
			out.Types[t] = true
		}
	}
	// The newer version of an object wins: b is the later request.
	idx := make(map[ConfigKey]int, len(a.ConfigsUpdated)+len(b.ConfigsUpdated))
	for _, list := range [][]ConfigKey{a.ConfigsUpdated, b.ConfigsUpdated} {
		for _, k := range list {
			if i, ok := idx[k.id()]; ok {
				out.ConfigsUpdated[i] = k
				continue
			}
			idx[k.id()] = len(out.ConfigsUpdated)
			out.ConfigsUpdated = append(out.ConfigsUpdated, k)
		}
	}
	out.EndpointsOf = mergeEndpoints(a, b)
	if a.Proxies != nil && b.Proxies != nil {
		pa, pb := a.Proxies, b.Proxies
		out.Proxies = func(p *Proxy) bool { return pa(p) || pb(p) }
	}
	out.Reason = joinReasons(a.Reason, b.Reason)
	return out
}

// mergeEndpoints is the endpoint limit of a merged request: the union of
// the limits of the requests that cover EDS, or none if one of them
// covers it without a limit.
func mergeEndpoints(a, b *PushRequest) map[string]bool {
	var out map[string]bool
	for _, r := range []*PushRequest{a, b} {
		if !r.covers(EndpointType) {
			continue
		}
		if r.EndpointsOf == nil {
			return nil
		}
		if out == nil {
			out = make(map[string]bool, len(r.EndpointsOf))
		}
		for h := range r.EndpointsOf {
			out[h] = true
		}
	}
	return out
}

// endpointsLimited reports whether p sends only some clusters' endpoints,
// and keep tells which (by cluster name, "outbound|PORT|SUBSET|HOST").
func (r *PushRequest) endpointsLimited() (keep func(cluster string) bool, limited bool) {
	if r.EndpointsOf == nil {
		return nil, false
	}
	if len(r.EndpointsOf) <= 4 {
		// Usually one service changed: compare name suffixes rather than
		// split every subscribed name (thousands per proxy).
		var suffixes []string
		for h := range r.EndpointsOf {
			suffixes = append(suffixes, "|"+h)
		}
		return func(cluster string) bool {
			for _, s := range suffixes {
				if strings.HasSuffix(cluster, s) {
					return true
				}
			}
			return false
		}, true
	}
	return func(cluster string) bool {
		return r.EndpointsOf[cluster[strings.LastIndexByte(cluster, '|')+1:]]
	}, true
}

func joinReasons(a, b string) string {
	if a == "" {
		return b
	}
	if b == "" {
		return a
	}
	parts := strings.Split(a, ",")
	for _, r := range strings.Split(b, ",") {
		if !slices.Contains(parts, r) {
			parts = append(parts, r)
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}
