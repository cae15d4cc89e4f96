package xdsload

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// The ADS methods, called through a generic stream so responses arrive as
// bytes: decoding each DiscoveryResponse into messages (thousands of Any
// per proxy) cost the tool as much CPU as skiffd spent serving it.
const (
	sotwMethod  = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
	deltaMethod = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
)

var adsStream = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

// rawCodec marshals requests as protos and hands responses over as bytes.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, err := proto.Marshal(v.(proto.Message))
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*(v.(*[]byte)) = data.Materialize()
	return nil
}

// Name is "proto": the bytes on the wire are protobuf either way.
func (rawCodec) Name() string { return "proto" }

func openStream(ctx context.Context, cc *grpc.ClientConn, method string) (grpc.ClientStream, error) {
	return cc.NewStream(ctx, adsStream, method, grpc.ForceCodecV2(rawCodec{}))
}

// wireResource is one resource of a response, still serialized.
type wireResource struct {
	name, version string // delta only
	value         []byte // the resource (Any.value)
}

// wireResponse is a DiscoveryResponse or DeltaDiscoveryResponse read at
// the wire level.
type wireResponse struct {
	typeURL, version, nonce string
	resources               []wireResource
	removed                 []string
}

// parseSotW reads a DiscoveryResponse: version_info 1, resources 2 (Any:
// type_url 1, value 2), type_url 4, nonce 5.
func parseSotW(b []byte) (wireResponse, error) {
	var r wireResponse
	err := scan(b, func(num protowire.Number, v []byte, _ uint64) error {
		switch num {
		case 1:
			r.version = string(v)
		case 2:
			val, err := anyValue(v)
			if err != nil {
				return err
			}
			r.resources = append(r.resources, wireResource{value: val})
		case 4:
			r.typeURL = string(v)
		case 5:
			r.nonce = string(v)
		}
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("malformed DiscoveryResponse: %w", err)
	}
	return r, nil
}

// parseDelta reads a DeltaDiscoveryResponse: system_version_info 1,
// resources 2 (Resource: version 1, resource 2 as Any, name 3), type_url 4,
// nonce 5, removed_resources 6.
func parseDelta(b []byte) (wireResponse, error) {
	var r wireResponse
	err := scan(b, func(num protowire.Number, v []byte, _ uint64) error {
		switch num {
		case 1:
			r.version = string(v)
		case 2:
			var res wireResource
			err := scan(v, func(num protowire.Number, v []byte, _ uint64) error {
				var err error
				switch num {
				case 1:
					res.version = string(v)
				case 2:
					res.value, err = anyValue(v)
				case 3:
					res.name = string(v)
				}
				return err
			})
			if err != nil {
				return err
			}
			r.resources = append(r.resources, res)
		case 4:
			r.typeURL = string(v)
		case 5:
			r.nonce = string(v)
		case 6:
			r.removed = append(r.removed, string(v))
		}
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("malformed DeltaDiscoveryResponse: %w", err)
	}
	return r, nil
}

// anyValue is the value (field 2) of a google.protobuf.Any.
func anyValue(b []byte) ([]byte, error) {
	var val []byte
	err := scan(b, func(num protowire.Number, v []byte, _ uint64) error {
		if num == 2 {
			val = v
		}
		return nil
	})
	return val, err
}
