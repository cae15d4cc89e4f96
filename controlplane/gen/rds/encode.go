package rds

import (
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// A sidecar's outbound route configuration has a virtual host per service
// of the mesh, and each namespace (each Sidecar) gets its own: with 1000
// services in 10 namespaces a VirtualService change rebuilt and marshalled
// the same 1000 virtual hosts' routes ten times, a quarter of skiffd's CPU
// in a push and all of it before the first proxy was sent anything.
// A service's routes are in fact the same for every proxy that resolves
// the same inputs, whatever its namespace, so they are translated and
// marshalled once per config version (sharedRoutes) and each namespace's
// route configuration is assembled from those bytes (encodeSidecar). The
// bytes are exactly what marshalling buildSidecar's message gives;
// TestEncodedSidecarMatchesBuilt holds the two together.

// routeConfigType is the type URL of a RouteConfiguration.
const routeConfigType = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

// Field numbers written by hand below (envoy.config.route.v3).
const (
	rcName         = 1  // RouteConfiguration.name
	rcVirtualHosts = 2  // RouteConfiguration.virtual_hosts
	vhName         = 1  // VirtualHost.name
	vhDomains      = 2  // VirtualHost.domains
	vhRoutes       = 3  // VirtualHost.routes
	vhAttemptCount = 14 // VirtualHost.include_request_attempt_count
)

// sidecarTail is every field of a sidecar's RouteConfiguration after
// virtual_hosts, marshalled: they are the same for every port and proxy.
var sidecarTail = marshal(&routev3.RouteConfiguration{
	ValidateClusters:               wrapperspb.Bool(false),
	IgnorePortInHostMatching:       true,
	MaxDirectResponseBodySizeBytes: wrapperspb.UInt32(maxDirectResponseBody),
})

func marshal(m proto.Message) []byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		panic(err) // messages built here; failing is a programming error
	}
	return b
}

// encodeSidecar is buildSidecar marshalled, assembled from routes shared
// with every proxy (of any namespace) that would get the same ones.
func encodeSidecar(p *xds.Proxy, ix *index.Index, port int, labelsKey string) *anypb.Any {
	scope := ix.SidecarScope(p)
	vss := NewVSLookup(ix, ix.VirtualServices(p, "mesh"))
	portStr := strconv.Itoa(port)
	hosts := sidecarHosts(p, ix, port)
	vhosts := make([]encodedVHost, 0, len(hosts))
	size := 0
	for _, h := range hosts {
		vh := encodedVHost{name: h.name, domains: h.domains}
		vh.routes = sharedRoutes(p, ix, vss, h.svc.Hostname, port, vh.name+"/*", labelsKey)
		vhosts = append(vhosts, vh)
		size += protowire.SizeTag(rcVirtualHosts) + protowire.SizeBytes(vh.size())
	}
	catchAll := ix.Cached("rdsca|"+scope.OutboundTrafficPolicy(), func() any {
		return marshal(catchAllVirtualHost(scope.OutboundTrafficPolicy()))
	}).([]byte)
	size += protowire.SizeTag(rcName) + protowire.SizeBytes(len(portStr)) +
		protowire.SizeTag(rcVirtualHosts) + protowire.SizeBytes(len(catchAll)) + len(sidecarTail)

	b := make([]byte, 0, size)
	b = protowire.AppendTag(b, rcName, protowire.BytesType)
	b = protowire.AppendString(b, portStr)
	for _, vh := range vhosts {
		b = protowire.AppendTag(b, rcVirtualHosts, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(vh.size()))
		b = protowire.AppendTag(b, vhName, protowire.BytesType)
		b = protowire.AppendString(b, vh.name)
		for _, d := range vh.domains {
			b = protowire.AppendTag(b, vhDomains, protowire.BytesType)
			b = protowire.AppendString(b, d)
		}
		b = append(b, vh.routes...)
		b = protowire.AppendTag(b, vhAttemptCount, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	b = protowire.AppendTag(b, rcVirtualHosts, protowire.BytesType)
	b = protowire.AppendBytes(b, catchAll)
	b = append(b, sidecarTail...)
	return &anypb.Any{TypeUrl: routeConfigType, Value: b}
}

// encodedVHost is a sidecar virtual host about to be written: its name,
// its domains, and its routes already marshalled.
type encodedVHost struct {
	name    string
	domains []string
	routes  []byte
}

// size is the marshalled size of the virtual host: name, domains,
// routes, include_request_attempt_count (true).
func (vh *encodedVHost) size() int {
	n := protowire.SizeTag(vhName) + protowire.SizeBytes(len(vh.name))
	for _, d := range vh.domains {
		n += protowire.SizeTag(vhDomains) + protowire.SizeBytes(len(d))
	}
	return n + len(vh.routes) + protowire.SizeTag(vhAttemptCount) + protowire.SizeVarint(1)
}

// sharedRoutes is serviceRoutes marshalled as VirtualHost.routes
// elements, built once for all proxies whose routes for the service
// depend on the same inputs (routesKey), and kept across config versions
// while those inputs stay the same: a VirtualService change then
// translates the routes of the services it touches, not of all of them.
func sharedRoutes(p *xds.Proxy, ix *index.Index, vss *VSLookup, host string, port int, operation, labelsKey string) []byte {
	vs := vss.For(host)
	key, refs := routesKey(p, ix, vs, host, port, operation, labelsKey)
	return ix.Cached(key, func() any {
		return carried.get(ix.Seq(), key, refs, func() []byte {
			routesBuilt.Add(1)
			var b []byte
			opts := proto.MarshalOptions{Deterministic: true}
			for _, r := range serviceRoutes(p, ix, vss, host, port, operation) {
				b = protowire.AppendTag(b, vhRoutes, protowire.BytesType)
				b = protowire.AppendVarint(b, uint64(opts.Size(r)))
				var err error
				if b, err = opts.MarshalAppend(b, r); err != nil {
					panic(err)
				}
			}
			return b
		})
	}).([]byte)
}

// routesKey names everything serviceRoutes reads for a service on a
// port, so that two proxies with equal keys get equal routes, in this
// config version or a later one: the VirtualService that applies
// (VSLookup's pick, which depends on the proxy's namespace through
// exportTo), the proxy's namespace when that VirtualService matches on
// sourceNamespace, its values of the labels some VirtualService matches
// on (labelsKey), and for every host the routes send to, the service that
// host resolves to (its namespace and, when it has one, its only port,
// which a destination without a port means) and the DestinationRule
// whose consistent hash becomes the route's hash policy, as seen from the
// proxy's namespace with its labels.
//
// Config objects are named by address: the store keeps an object for as
// long as it is unchanged and replaces it when it changes, so an address
// names one content. refs are the objects whose addresses the key holds;
// a cached entry keeps them, so no other object can take their address
// while the key is in use.
func routesKey(p *xds.Proxy, ix *index.Index, vs *config.Object, host string, port int, operation, labelsKey string) (string, []any) {
	var b strings.Builder
	var refs []any
	b.WriteString("rdsr|")
	b.WriteString(ix.Options().DomainSuffix)
	b.WriteString("|" + operation) // host:port/*
	b.WriteString(labelsKey)
	b.WriteString("|" + strconv.Itoa(port))
	dests := []string{host} // the default route's, also taken when none of the VirtualService's apply
	if vs != nil {
		b.WriteString("|vs:" + ptrKey(unsafe.Pointer(vs)))
		refs = append(refs, vs)
		spec := vs.Spec.(*networking.VirtualService)
		if usesSourceNamespace(spec) {
			b.WriteString("|ns:" + p.Namespace)
		}
		dests = append(destinationHosts(ix, vs, spec), host)
		slices.Sort(dests)
		dests = slices.Compact(dests)
	}
	for _, h := range dests {
		b.WriteString("|" + h + "@")
		if svc := ix.Registry().Service(h, p.Namespace); svc != nil {
			b.WriteString(svc.Namespace)
			if len(svc.Ports) == 1 {
				b.WriteString(":" + strconv.Itoa(svc.Ports[0].Port))
			}
		}
		if dr := ix.DestinationRule(p.Namespace, h, p.Labels); dr != nil {
			if dr.Source != nil && dr.Source.Spec == dr.Rule {
				b.WriteString("#o" + ptrKey(unsafe.Pointer(dr.Source)))
				refs = append(refs, dr.Source)
			} else { // merged from several rules: this version's own
				b.WriteString("#r" + ptrKey(unsafe.Pointer(dr)))
				refs = append(refs, dr)
			}
		}
	}
	return b.String(), refs
}

// routesBuilt counts route translations, for tests to see reuse.
var routesBuilt atomic.Int64

// carried keeps the routes of the newest config version, and of the one
// before it, for the next version to reuse.
var carried carriedRoutes

type carriedRoutes struct {
	mu       sync.Mutex
	seq      uint64                 // Seq of the newest index seen
	cur, old map[string]*routeEntry // used by that version; by the one before
}

type routeEntry struct {
	routes []byte
	refs   []any // the objects the key names by address (see routesKey)
}

// get returns the routes under key, building them if neither the index
// of version seq nor the one before it has. An index older than the
// newest builds its own without keeping them.
func (c *carriedRoutes) get(seq uint64, key string, refs []any, build func() []byte) []byte {
	c.mu.Lock()
	if seq > c.seq {
		c.seq, c.old, c.cur = seq, c.cur, map[string]*routeEntry{}
	}
	if seq == c.seq {
		e := c.cur[key]
		if e == nil {
			if e = c.old[key]; e != nil {
				c.cur[key] = e
			}
		}
		if e != nil {
			c.mu.Unlock()
			return e.routes
		}
	}
	c.mu.Unlock()
	routes := build()
	c.mu.Lock()
	if seq == c.seq {
		c.cur[key] = &routeEntry{routes: routes, refs: refs}
	}
	c.mu.Unlock()
	return routes
}

func ptrKey(p unsafe.Pointer) string { return strconv.FormatUint(uint64(uintptr(p)), 36) }

func usesSourceNamespace(vs *networking.VirtualService) bool {
	for _, r := range vs.GetHttp() {
		for _, m := range r.GetMatch() {
			if m.GetSourceNamespace() != "" {
				return true
			}
		}
	}
	return false
}

// destinationHosts are the hosts a VirtualService's HTTP routes send or
// mirror to, resolved as translation resolves them.
func destinationHosts(ix *index.Index, o *config.Object, vs *networking.VirtualService) []string {
	var out []string
	add := func(d *networking.Destination) {
		if d != nil {
			out = append(out, ix.ResolveHost(d.GetHost(), o.Meta.Namespace))
		}
	}
	for _, r := range vs.GetHttp() {
		for _, d := range r.GetRoute() {
			add(d.GetDestination())
		}
		add(r.GetMirror())
		for _, m := range r.GetMirrors() {
			add(m.GetDestination())
		}
	}
	return out
}

// sourceLabelsKey is the proxy's values of the labels VirtualServices
// match on, the only labels that change its routes.
func sourceLabelsKey(p *xds.Proxy, ix *index.Index) string {
	var b strings.Builder
	for _, k := range ix.SourceLabelKeys() {
		if v, ok := p.Labels[k]; ok {
			b.WriteString("|" + k + "=" + v)
		}
	}
	return b.String()
}
