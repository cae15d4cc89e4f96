package xdsload

import (
	"errors"
	"fmt"
	"unique"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/encoding/protowire"
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
	raw  span
}

// decode reads a resource of typeURL. Clusters, load assignments and
// route configurations are only scanned for the few fields a sidecar's
// subscriptions depend on, where they lie in gRPC's buffers: every proxy
// gets the same megabytes, and fully decoding thousands of resources per
// proxy would make the load tool, not skiffd, the bottleneck.
func decode(typeURL string, raw span) (decoded, error) {
	d := decoded{raw: raw}
	switch typeURL {
	case ClusterType:
		var name, service span
		typ := uint64(clusterv3.Cluster_STATIC)
		err := scanSpan(raw, fields(1, 3), func(num protowire.Number, v span, n uint64) error {
			switch num {
			case 1:
				name = v
			case 2:
				typ = n
			case 3: // eds_cluster_config: service_name 2
				return scanSpan(v, fields(2), func(num protowire.Number, v span, _ uint64) error {
					if num == 2 {
						service = v
					}
					return nil
				})
			}
			return nil
		})
		if err != nil {
			return d, fmt.Errorf("decoding Cluster: %w", err)
		}
		d.name = internSpan(name)
		if typ == uint64(clusterv3.Cluster_EDS) {
			if service.len() == 0 {
				service = name
			}
			d.deps = []unique.Handle[string]{internSpan(service)}
		}
	case EndpointType, RouteType:
		name, err := firstField(raw, 1) // cluster_name, name
		if err != nil {
			return d, fmt.Errorf("decoding %s: %w", ShortType(typeURL), err)
		}
		d.name = internSpan(name)
	case ListenerType:
		// A sidecar has a few listeners: read them from one slice.
		b := raw.bytes()
		var name []byte
		var chains [][]byte
		err := scan(b, func(num protowire.Number, v []byte, _ uint64) error {
			switch num {
			case 1:
				name = v
			case 3, 25: // filter_chains, default_filter_chain
				chains = append(chains, v)
			}
			return nil
		})
		if err != nil {
			return d, fmt.Errorf("decoding Listener: %w", err)
		}
		d.name = intern(name)
		for _, fc := range chains {
			deps, err := routeNames(fc)
			if err != nil {
				return d, fmt.Errorf("listener %s: %w", name, err)
			}
			d.deps = append(d.deps, deps...)
		}
	default:
		return d, fmt.Errorf("resource of unexpected type %s", typeURL)
	}
	return d, nil
}

// spanField is the last value of length-delimited field num in s.
func spanField(s span, num protowire.Number) (span, error) { return fieldOf(s, num, false) }

// firstField is the first value of length-delimited field num in s: for
// a name written first (as every encoder writes field 1 of these), the
// rest of a large resource is not read at all. Reading on to find a later
// value, as protobuf's "last one wins" would, walked every virtual host of
// every route configuration the fleet received.
func firstField(s span, num protowire.Number) (span, error) { return fieldOf(s, num, true) }

func fieldOf(s span, num protowire.Number, first bool) (span, error) {
	var out span
	err := scanSpan(s, fields(num), func(n protowire.Number, v span, _ uint64) error {
		if n == num {
			out = v
			if first {
				return errStop
			}
		}
		return nil
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	return out, err
}

// errStop, returned by a scanSpan callback, ends the scan early; scanSpan
// returns it.
var errStop = errors.New("stop scanning")

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

// bytesField is the last value of length-delimited field num in message b
// (a sub-slice of b).
func bytesField(b []byte, num protowire.Number) ([]byte, error) {
	var out []byte
	err := scan(b, func(n protowire.Number, v []byte, _ uint64) error {
		if n == num {
			out = v
		}
		return nil
	})
	return out, err
}

// hcmType is the type URL of the HTTP connection manager filter's config.
const hcmType = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

// routeNames are the RDS route configs the HTTP connection managers of a
// filter chain name, read from the wire as Envoy's would be found:
// FilterChain.filters 3 → Filter{name 1, typed_config 4: Any{type_url 1,
// value 2}} → HttpConnectionManager.rds 3 → Rds.route_config_name 2.
func routeNames(chain []byte) ([]unique.Handle[string], error) {
	var out []unique.Handle[string]
	err := scan(chain, func(num protowire.Number, filter []byte, _ uint64) error {
		if num != 3 {
			return nil
		}
		tc, err := bytesField(filter, 4)
		if err != nil || tc == nil {
			return err
		}
		var url, val []byte
		if err := scan(tc, func(num protowire.Number, v []byte, _ uint64) error {
			switch num {
			case 1:
				url = v
			case 2:
				val = v
			}
			return nil
		}); err != nil {
			return err
		}
		if string(url) != hcmType {
			return nil
		}
		rds, err := bytesField(val, 3)
		if err != nil {
			return fmt.Errorf("decoding HttpConnectionManager: %w", err)
		}
		if rds == nil {
			return nil
		}
		name, err := bytesField(rds, 2)
		if err != nil {
			return fmt.Errorf("decoding HttpConnectionManager.rds: %w", err)
		}
		if len(name) > 0 {
			out = append(out, intern(name))
		}
		return nil
	})
	return out, err
}
