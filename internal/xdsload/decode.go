package xdsload

import (
	"fmt"
	"unique"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// The four xDS types a sidecar subscribes to, in the order Envoy asks.
const (
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	ListenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RouteType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
)

// Types lists the subscribed types in Envoy's order.
var Types = []string{ClusterType, EndpointType, ListenerType, RouteType}

// ShortType names a type URL as Istio's debug pages do (CDS, EDS, LDS, RDS).
func ShortType(typeURL string) string {
	switch typeURL {
	case ClusterType:
		return "CDS"
	case EndpointType:
		return "EDS"
	case ListenerType:
		return "LDS"
	case RouteType:
		return "RDS"
	}
	return typeURL
}

// decoded is what a proxy takes from one resource: its name, what it makes
// the proxy subscribe to next, and (only while the response is handled)
// its bytes for the change detector. Names are interned: 2000 proxies hold
// the same few thousand names.
type decoded struct {
	name unique.Handle[string]
	// deps are the EDS service name of an EDS Cluster, or the route
	// config names of a Listener's HTTP connection managers.
	deps []unique.Handle[string]
	raw  []byte
}

// decode reads a resource of typeURL. Clusters, load assignments and
// route configurations are only scanned for the few fields a sidecar's
// subscriptions depend on: control planes marshal per proxy and not
// deterministically, so every proxy gets different bytes, and fully
// decoding thousands of resources per proxy would make the load tool,
// not skiffd, the bottleneck.
func decode(typeURL string, raw []byte) (decoded, error) {
	d := decoded{raw: raw}
	switch typeURL {
	case ClusterType:
		var name, service string
		typ := uint64(clusterv3.Cluster_STATIC)
		err := scan(raw, func(num protowire.Number, v []byte, n uint64) error {
			switch num {
			case 1:
				name = string(v)
			case 2:
				typ = n
			case 3:
				return scan(v, func(num protowire.Number, v []byte, _ uint64) error {
					if num == 2 {
						service = string(v)
					}
					return nil
				})
			}
			return nil
		})
		if err != nil {
			return d, fmt.Errorf("decoding Cluster: %w", err)
		}
		d.name = unique.Make(name)
		if typ == uint64(clusterv3.Cluster_EDS) {
			if service == "" {
				service = name
			}
			d.deps = []unique.Handle[string]{unique.Make(service)}
		}
	case EndpointType, RouteType:
		name, err := stringField(raw, 1) // cluster_name, name
		if err != nil {
			return d, fmt.Errorf("decoding %s: %w", ShortType(typeURL), err)
		}
		d.name = unique.Make(name)
	case ListenerType:
		l := &listenerv3.Listener{}
		if err := proto.Unmarshal(raw, l); err != nil {
			return d, fmt.Errorf("decoding Listener: %w", err)
		}
		d.name = unique.Make(l.GetName())
		deps, err := routeNames(l)
		if err != nil {
			return d, fmt.Errorf("listener %s: %w", l.GetName(), err)
		}
		d.deps = deps
	default:
		return d, fmt.Errorf("resource of unexpected type %s", typeURL)
	}
	return d, nil
}

// scan calls f for each field of the message in b with its number and
// either its bytes (length-delimited fields) or its value (varints).
func scan(b []byte, f func(num protowire.Number, v []byte, n uint64) error) error {
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return protowire.ParseError(l)
		}
		b = b[l:]
		var v []byte
		var n uint64
		switch typ {
		case protowire.BytesType:
			v, l = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			n, l = protowire.ConsumeVarint(b)
		default:
			l = protowire.ConsumeFieldValue(num, typ, b)
		}
		if l < 0 {
			return fmt.Errorf("field %d: %w", num, protowire.ParseError(l))
		}
		b = b[l:]
		if err := f(num, v, n); err != nil {
			return err
		}
	}
	return nil
}

// stringField is the last value of string field num in message b.
func stringField(b []byte, num protowire.Number) (string, error) {
	var s string
	err := scan(b, func(n protowire.Number, v []byte, _ uint64) error {
		if n == num {
			s = string(v)
		}
		return nil
	})
	return s, err
}

// routeNames are the RDS route configs the listener's HTTP connection
// managers name, in every filter chain and the default one.
func routeNames(l *listenerv3.Listener) ([]unique.Handle[string], error) {
	chains := l.GetFilterChains()
	if dc := l.GetDefaultFilterChain(); dc != nil {
		chains = append(chains[:len(chains):len(chains)], dc)
	}
	var out []unique.Handle[string]
	for _, fc := range chains {
		for _, f := range fc.GetFilters() {
			tc := f.GetTypedConfig()
			if tc == nil || tc.GetTypeUrl() != "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager" {
				continue
			}
			h := &hcmv3.HttpConnectionManager{}
			if err := tc.UnmarshalTo(h); err != nil {
				return nil, fmt.Errorf("decoding HttpConnectionManager in filter chain %q: %w", fc.GetName(), err)
			}
			if n := h.GetRds().GetRouteConfigName(); n != "" {
				out = append(out, unique.Make(n))
			}
		}
	}
	return out, nil
}
