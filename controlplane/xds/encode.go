package xds

import (
	"fmt"
	"hash/fnv"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"weak"

	"google.golang.org/grpc"
	grpcencoding "google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the proto codec this one falls back to
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// A response to 2000 proxies holds the same resources 2000 times. Each
// resource is therefore encoded once, where it is generated, into the
// exact bytes it occupies inside a DiscoveryResponse (and, on demand, a
// DeltaDiscoveryResponse); a response on one stream is a few bytes of its
// own (version, nonce, type) followed by references to those shared
// encodings, handed to gRPC as they are. Nothing is copied per stream
// until the transport writes it, so a slow proxy holding its response in
// gRPC's queue costs the server almost nothing.

// NewResource encodes a generated resource once for every stream that will
// send it. m may already be an *anypb.Any. Generators that cache their
// output should cache what this returns.
func NewResource(name string, m proto.Message) (Resource, error) {
	e, err := encode(name, m)
	if err != nil {
		return Resource{}, err
	}
	return Resource{Name: name, Message: e.any, enc: e}, nil
}

// MustResource is NewResource for messages the generator built itself,
// where failing to marshal is a programming error.
func MustResource(name string, m proto.Message) Resource {
	r, err := NewResource(name, m)
	if err != nil {
		panic(err)
	}
	return r
}

// encoding is one resource as the wire carries it.
type encoding struct {
	name string
	any  *anypb.Any
	// version is a hash of the resource's bytes: equal config, equal
	// version, which delta compares to skip what a proxy already holds.
	version string
	// sotw is the resource as one element of DiscoveryResponse.resources
	// (field tag, length, the Any).
	sotw []byte

	deltaOnce sync.Once
	delta     []byte // one element of DeltaDiscoveryResponse.resources
}

func encode(name string, m proto.Message) (*encoding, error) {
	a, ok := m.(*anypb.Any)
	if !ok {
		a = &anypb.Any{}
		if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
			return nil, fmt.Errorf("resource %q: %w", name, err)
		}
	}
	h := fnv.New64a()
	h.Write(a.GetValue())
	e := &encoding{name: name, any: a, version: strconv.FormatUint(h.Sum64(), 16)}
	anyLen := anySize(a)
	b := make([]byte, 0, 1+protowire.SizeVarint(uint64(anyLen))+anyLen)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(anyLen))
	e.sotw = appendAny(b, a)
	return e, nil
}

func anySize(a *anypb.Any) int {
	return protowire.SizeTag(1) + protowire.SizeBytes(len(a.GetTypeUrl())) +
		protowire.SizeTag(2) + protowire.SizeBytes(len(a.GetValue()))
}

func appendAny(b []byte, a *anypb.Any) []byte {
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, a.GetTypeUrl())
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	return protowire.AppendBytes(b, a.GetValue())
}

// deltaElement is the resource as a discovery.v3.Resource{version=1,
// resource=2, name=3} element of DeltaDiscoveryResponse.resources (2).
func (e *encoding) deltaElement() []byte {
	e.deltaOnce.Do(func() {
		anyLen := anySize(e.any)
		inner := protowire.SizeTag(1) + protowire.SizeBytes(len(e.version)) +
			protowire.SizeTag(2) + protowire.SizeBytes(anyLen) +
			protowire.SizeTag(3) + protowire.SizeBytes(len(e.name))
		b := make([]byte, 0, 1+protowire.SizeVarint(uint64(inner))+inner)
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(inner))
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, e.version)
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(anyLen))
		b = appendAny(b, e.any)
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		e.delta = protowire.AppendString(b, e.name)
	})
	return e.delta
}

// encodingOf returns r's encoding, encoding it now if the generator did
// not (tests, and generators that do not cache), checking its type.
func encodingOf(typeURL string, r Resource) (*encoding, error) {
	e := r.enc
	if e == nil {
		var err error
		if e, err = encode(r.Name, r.Message); err != nil {
			return nil, err
		}
	}
	if e.any.GetTypeUrl() != typeURL {
		return nil, fmt.Errorf("resource %q is a %s, not a %s", r.Name, e.any.GetTypeUrl(), typeURL)
	}
	return e, nil
}

// wireMessage is a response already encoded: its parts, concatenated, are
// the message. Only the codec below knows how to send it.
type wireMessage struct{ parts [][]byte }

func (w *wireMessage) size() int {
	n := 0
	for _, p := range w.parts {
		n += len(p)
	}
	return n
}

// sotwResponse encodes a DiscoveryResponse{version_info=1, resources=2,
// type_url=4, nonce=5} around shared resource encodings.
func sotwResponse(typeURL, version, nonce string, res []*encoding) *wireMessage {
	var h []byte
	h = protowire.AppendTag(h, 1, protowire.BytesType)
	h = protowire.AppendString(h, version)
	h = protowire.AppendTag(h, 4, protowire.BytesType)
	h = protowire.AppendString(h, typeURL)
	h = protowire.AppendTag(h, 5, protowire.BytesType)
	h = protowire.AppendString(h, nonce)
	parts := make([][]byte, 0, 1+len(res))
	parts = append(parts, h)
	for _, e := range res {
		parts = append(parts, e.sotw)
	}
	return &wireMessage{parts: parts}
}

// deltaResponse encodes a DeltaDiscoveryResponse{system_version_info=1,
// resources=2, type_url=4, nonce=5, removed_resources=6}.
func deltaResponse(typeURL, version, nonce string, res []*encoding, removed []string) *wireMessage {
	var h []byte
	h = protowire.AppendTag(h, 1, protowire.BytesType)
	h = protowire.AppendString(h, version)
	h = protowire.AppendTag(h, 4, protowire.BytesType)
	h = protowire.AppendString(h, typeURL)
	h = protowire.AppendTag(h, 5, protowire.BytesType)
	h = protowire.AppendString(h, nonce)
	for _, r := range removed {
		h = protowire.AppendTag(h, 6, protowire.BytesType)
		h = protowire.AppendString(h, r)
	}
	parts := make([][]byte, 0, 1+len(res))
	parts = append(parts, h)
	for _, e := range res {
		parts = append(parts, e.deltaElement())
	}
	return &wireMessage{parts: parts}
}

// codec is gRPC's proto codec that also sends wireMessages without
// copying them. Requests are decoded by the proto codec as usual.
type codec struct{ proto grpcencoding.CodecV2 }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if w, ok := v.(*wireMessage); ok {
		out := make(mem.BufferSlice, len(w.parts))
		for i, p := range w.parts {
			out[i] = mem.SliceBuffer(p) // not pooled: freeing it is a no-op, the bytes stay shared
		}
		return out, nil
	}
	return c.proto.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

func (codec) Name() string { return "proto" }

// GRPCServerOptions are the options the gRPC server the ADS server is
// Registered on must be created with: they install the codec that sends
// pre-encoded responses (without it every response fails to marshal).
func GRPCServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ForceServerCodecV2(codec{proto: grpcencoding.GetCodecV2("proto")})}
}

// nameList is a sorted subscription. Proxies alike subscribe to the same
// thousands of names; each list is kept once and shared by every watch
// holding it (2000 sidecars × 2000 cluster names would otherwise be 4
// million map entries).
type nameList struct{ names []string }

// lists interns nameLists by a hash of their names. Entries hold weak
// pointers: a list no watch holds any more is collected and its entry
// removed.
var lists sync.Map // uint64 → weak.Pointer[nameList]

// internList returns the shared list equal to sorted (which it may keep).
func internList(sorted []string) *nameList {
	const offset, prime = 14695981039346656037, 1099511628211 // FNV-1a
	key := uint64(offset)
	for _, n := range sorted {
		for i := 0; i < len(n); i++ {
			key = (key ^ uint64(n[i])) * prime
		}
		key *= prime // a separator, so ["ab"] and ["a", "b"] differ
	}
	if v, ok := lists.Load(key); ok {
		if l := v.(weak.Pointer[nameList]).Value(); l != nil && slices.Equal(l.names, sorted) {
			return l
		}
	}
	l := &nameList{names: sorted}
	wp := weak.Make(l)
	lists.Store(key, wp)
	runtime.AddCleanup(l, func(key uint64) { lists.CompareAndDelete(key, wp) }, key)
	return l
}
