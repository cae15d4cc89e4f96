// Package gen dispatches xDS generation: for a proxy and an xDS type it
// calls the generator of that type (cds, eds, lds, rds, sds) over the
// current index. Each generator is a pure function of (proxy, index) in its own
// package; this one only holds the index of the config version in force.
package gen

import (
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/skiff-mesh/skiff/controlplane/gen/cds"
	"github.com/skiff-mesh/skiff/controlplane/gen/eds"
	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/gen/lds"
	"github.com/skiff-mesh/skiff/controlplane/gen/rds"
	"github.com/skiff-mesh/skiff/controlplane/gen/sds"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// The v3 type URLs skiffd serves.
const (
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	ListenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RouteType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	SecretType   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
)

// Options are the mesh settings generation depends on.
type Options struct {
	// DisableAutoMTLS is for meshes without a CA (and tests): no cluster
	// originates auto mTLS, and inbound listeners accept plaintext only,
	// as under PeerAuthentication DISABLE; explicit DestinationRule and
	// Gateway TLS still apply. By default both follow Istio.
	DisableAutoMTLS bool
	// InboundPolicy adds authorization filters to sidecars' inbound chains.
	InboundPolicy lds.InboundPolicy
	// Telemetry decorates listeners with metrics, tracing and access logs.
	Telemetry lds.Telemetry
	// Logger receives what generation refuses (a Secret a proxy may not
	// read, a credential that does not parse); nil discards it.
	Logger *slog.Logger
}

// Generator implements xds.Generator over the index set last.
type Generator struct {
	ix        atomic.Pointer[index.Index]
	clusters  *cds.Generator
	listeners *lds.Generator
	secrets   *sds.Generator
}

// New makes a generator.
func New(o Options) *Generator {
	return &Generator{
		clusters:  cds.New(cds.Options{DisableAutoMTLS: o.DisableAutoMTLS}),
		listeners: lds.New(lds.Options{DisableInboundMTLS: o.DisableAutoMTLS, InboundPolicy: o.InboundPolicy, Telemetry: o.Telemetry}),
		secrets:   sds.New(o.Logger),
	}
}

// Set installs the index of a new config version; later generation uses it.
func (g *Generator) Set(ix *index.Index) { g.ix.Store(ix) }

// Index is the index in force (nil before the first Set).
func (g *Generator) Index() *index.Index { return g.ix.Load() }

// Generate implements xds.Generator.
func (g *Generator) Generate(p *xds.Proxy, typeURL string, names []string, _ *xds.PushRequest) ([]xds.Resource, error) {
	ix := g.ix.Load()
	if ix == nil {
		return nil, fmt.Errorf("no configuration loaded yet")
	}
	switch typeURL {
	case ClusterType:
		return g.clusters.Generate(p, ix), nil
	case EndpointType:
		return eds.Generate(p, ix, names), nil
	case ListenerType:
		return g.listeners.Generate(p, ix), nil
	case RouteType:
		return rds.Generate(p, ix, names), nil
	case SecretType:
		return g.secrets.Generate(p, ix, names), nil
	}
	return nil, fmt.Errorf("skiffd does not serve resource type %s", typeURL)
}

var _ xds.Generator = (*Generator)(nil)
