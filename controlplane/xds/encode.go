package xds

import (
	"fmt"
	"hash/fnv"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"unicode/utf8"
	"unsafe"
	"weak"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
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
func sotwResponse(typeURL, version, nonce string, res []*encoding) (*wireMessage, body) {
	var h []byte
	h = protowire.AppendTag(h, 1, protowire.BytesType)
	h = protowire.AppendString(h, version)
	h = protowire.AppendTag(h, 4, protowire.BytesType)
	h = protowire.AppendString(h, typeURL)
	h = protowire.AppendTag(h, 5, protowire.BytesType)
	h = protowire.AppendString(h, nonce)
	b := bodyOf(res, false)
	return &wireMessage{parts: b.parts(h)}, b
}

// deltaResponse encodes a DeltaDiscoveryResponse{system_version_info=1,
// resources=2, type_url=4, nonce=5, removed_resources=6}.
func deltaResponse(typeURL, version, nonce string, res []*encoding, removed []string) (*wireMessage, body) {
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
	b := bodyOf(res, true)
	return &wireMessage{parts: b.parts(h)}, b
}

// body is the resources part of a response as chunks of concatenated
// encodings, each chunk built once for every stream sending the same run
// of resources: the proxies of one namespace get the same clusters,
// endpoints and routes, save a few of their own (inbound clusters), so
// 2000 streams share a few dozen chunks. Chunks end where a resource's
// identity says (content-defined), so a resource of one proxy's own
// changes its chunk and no other.
type body []*chunk

type chunk struct {
	encs  []*encoding
	bytes []byte
}

// chunks interns chunks by a hash of their encodings' identities (and the
// protocol); entries hold weak pointers, as lists do.
var chunks sync.Map // uint64 → weak.Pointer[chunk]

const (
	chunkEvery = 32  // a chunk ends after a resource whose hash is 0 mod this…
	chunkMax   = 256 // …or at this many resources
)

// bodyOf returns the body of res (delta's element encodings when delta).
// Streams keep what it returns for as long as they send it.
func bodyOf(res []*encoding, delta bool) body {
	var out body
	for start := 0; start < len(res); {
		end := start
		for end < len(res) {
			h := ptrHash(res[end])
			end++
			if h%chunkEvery == 0 || end-start == chunkMax {
				break
			}
		}
		out = append(out, chunkOf(res[start:end], delta))
		start = end
	}
	return out
}

func ptrHash(e *encoding) uint64 {
	x := uint64(uintptr(unsafe.Pointer(e)))
	x ^= x >> 33 // pointers are aligned: mix the high bits down
	x *= 0xff51afd7ed558ccd
	return x ^ x>>33
}

func chunkOf(res []*encoding, delta bool) *chunk {
	const offset, prime = 14695981039346656037, 1099511628211 // FNV-1a over pointers
	key := uint64(offset)
	if delta {
		key = (key ^ 1) * prime
	}
	for _, e := range res {
		key = (key ^ uint64(uintptr(unsafe.Pointer(e)))) * prime
	}
	if v, ok := chunks.Load(key); ok {
		if c := v.(weak.Pointer[chunk]).Value(); c != nil && slices.Equal(c.encs, res) {
			return c
		}
	}
	n := 0
	for _, e := range res {
		if delta {
			n += len(e.deltaElement())
		} else {
			n += len(e.sotw)
		}
	}
	c := &chunk{encs: slices.Clone(res), bytes: make([]byte, 0, n)}
	for _, e := range res {
		if delta {
			c.bytes = append(c.bytes, e.deltaElement()...)
		} else {
			c.bytes = append(c.bytes, e.sotw...)
		}
	}
	wp := weak.Make(c)
	chunks.Store(key, wp)
	runtime.AddCleanup(c, func(key uint64) { chunks.CompareAndDelete(key, wp) }, key)
	return c
}

// parts is the header followed by the body's chunks.
func (b body) parts(header []byte) [][]byte {
	out := make([][]byte, 0, 1+len(b))
	out = append(out, header)
	for _, c := range b {
		out = append(out, c.bytes)
	}
	return out
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

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	if req, ok := v.(*discoveryv3.DiscoveryRequest); ok {
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		ok = decodeRequest(buf.ReadOnlyData(), req)
		buf.Free()
		if ok {
			return nil
		}
		req.Reset()
	}
	return c.proto.Unmarshal(data, v)
}

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

// A state-of-the-world ACK repeats the proxy's whole subscription: on an
// endpoint change 2000 sidecars each send the same 2000 cluster names.
// Requests are therefore decoded with their resource names looked up in
// a table of names already seen, so an ACK allocates none and its names
// compare with the shared subscription lists by pointer.

// names interns subscribed resource names.
var names = interner{m: map[string]string{}}

// maxInterned bounds the table: names come from proxies, and names of
// config long gone are never removed, so a full table starts over.
const maxInterned = 1 << 20

type interner struct {
	mu sync.RWMutex
	m  map[string]string
}

func (t *interner) intern(b []byte) string {
	t.mu.RLock()
	s, ok := t.m[string(b)]
	t.mu.RUnlock()
	if ok {
		return s
	}
	s = string(b)
	t.mu.Lock()
	if len(t.m) >= maxInterned {
		t.m = make(map[string]string)
	}
	t.m[s] = s
	t.mu.Unlock()
	return s
}

// decodeRequest decodes a DiscoveryRequest with interned resource names
// (field 3); every other field goes through the proto library. It reports
// false when the message is not well-formed, for the proto library to
// decode and explain.
func decodeRequest(b []byte, req *discoveryv3.DiscoveryRequest) bool {
	var rest []byte
	var list []string
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return false
		}
		if num == 3 && typ == protowire.BytesType {
			v, k := protowire.ConsumeBytes(b[n:])
			if k < 0 || !utf8.Valid(v) {
				return false
			}
			list = append(list, names.intern(v))
		} else {
			rest = append(rest, b[:n+m]...)
		}
		b = b[n+m:]
	}
	if err := proto.Unmarshal(rest, req); err != nil {
		return false
	}
	req.ResourceNames = list
	return true
}
