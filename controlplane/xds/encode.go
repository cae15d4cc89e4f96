package xds

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"runtime"
	"slices"
	"strconv"
	"strings"
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
// resource is therefore marshalled once, where it is generated; runs of
// resources are laid out once as the bytes they occupy inside a
// DiscoveryResponse or DeltaDiscoveryResponse (shared chunks, see body);
// a response on one stream is a few bytes of its own (version, nonce,
// type) followed by references to those chunks, handed to gRPC as they
// are. Nothing is copied per stream
// until the transport writes it, so a slow proxy holding its response in
// gRPC's queue costs the server almost nothing.

// NewResource encodes a generated resource once for every stream that will
// send it. m may already be an *anypb.Any. Generators that cache their
// output should cache what this returns.
func NewResource(name string, m proto.Message) (Resource, error) {
	e, own, err := encodeOwn(name, m)
	if err != nil {
		return Resource{}, err
	}
	msg := e.any
	if own != e.any {
		// Equal to a resource encoded before (see internEncoding): the
		// caller still gets a message of its own, sharing that one's
		// bytes, as if nothing had been shared.
		msg = &anypb.Any{TypeUrl: e.any.GetTypeUrl(), Value: e.any.GetValue()}
		if a, ok := m.(*anypb.Any); ok {
			msg = a
		}
	}
	return Resource{Name: name, Message: msg, enc: e}, nil
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

// encoding is one resource as the wire carries it. Its element framing
// (as one DiscoveryResponse.resources entry, or as a delta Resource) is
// written straight into the shared chunks that carry it (see body): the
// marshalled Any is the only per-resource copy of its bytes.
type encoding struct {
	name string
	any  *anypb.Any
	// version is a hash of the resource's bytes: equal config, equal
	// version, which delta compares to skip what a proxy already holds.
	version string
}

func encode(name string, m proto.Message) (*encoding, error) {
	e, _, err := encodeOwn(name, m)
	return e, err
}

// encodeOwn is encode that also returns the Any this call marshalled (or
// was given), which the shared encoding holds unless an equal one was
// encoded before.
func encodeOwn(name string, m proto.Message) (*encoding, *anypb.Any, error) {
	a, ok := m.(*anypb.Any)
	if !ok {
		a = &anypb.Any{}
		if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
			return nil, nil, fmt.Errorf("resource %q: %w", name, err)
		}
	}
	h := fnv.New64a()
	h.Write(a.GetValue())
	return internEncoding(&encoding{name: name, any: a, version: strconv.FormatUint(h.Sum64(), 16)}), a, nil
}

// Generators cache per proxy group (a namespace, a Sidecar), and groups
// mostly get equal resources: the clusters of a mesh of ten namespaces
// were held ten times. Encodings are therefore interned by name and
// content, so equal resources share one encoding whatever group built
// them, and with it their chunks and held runs.
var encodings sync.Map // encodingKey → weak.Pointer[encoding]

type encodingKey struct{ name, typeURL, version string }

func internEncoding(e *encoding) *encoding {
	key := encodingKey{e.name, e.any.GetTypeUrl(), e.version}
	if v, ok := encodings.Load(key); ok {
		if old := v.(weak.Pointer[encoding]).Value(); old != nil && bytes.Equal(old.any.GetValue(), e.any.GetValue()) {
			return old
		}
	}
	wp := weak.Make(e)
	encodings.Store(key, wp)
	runtime.AddCleanup(e, func(key encodingKey) { encodings.CompareAndDelete(key, wp) }, key)
	return e
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

// innerSize is the size of the element's message: the Any (SotW), or a
// discovery.v3.Resource{version=1, resource=2, name=3} (delta).
func (e *encoding) innerSize(delta bool) int {
	anyLen := anySize(e.any)
	if !delta {
		return anyLen
	}
	return protowire.SizeTag(1) + protowire.SizeBytes(len(e.version)) +
		protowire.SizeTag(2) + protowire.SizeBytes(anyLen) +
		protowire.SizeTag(3) + protowire.SizeBytes(len(e.name))
}

// elementSize is the size of the resource as one element of field 2
// (resources) of a DiscoveryResponse or DeltaDiscoveryResponse.
func (e *encoding) elementSize(delta bool) int {
	return protowire.SizeTag(2) + protowire.SizeBytes(e.innerSize(delta))
}

// appendElement appends the resource as one element of field 2 of a
// DiscoveryResponse (delta false) or DeltaDiscoveryResponse.
func (e *encoding) appendElement(b []byte, delta bool) []byte {
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(e.innerSize(delta)))
	if !delta {
		return appendAny(b, e.any)
	}
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, e.version)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(anySize(e.any)))
	b = appendAny(b, e.any)
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	return protowire.AppendString(b, e.name)
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
			if h%chunkEvery == 0 || end-start == chunkMax ||
				(end < len(res) && kindOf(res[end].name) != kindOf(res[end-1].name)) {
				break
			}
		}
		out = append(out, chunkOf(res[start:end], delta))
		start = end
	}
	return out
}

// kindOf is a resource name's first "|"-separated part ("inbound",
// "outbound"), empty when it has none. Chunks do not span two kinds: a
// sidecar's own inbound clusters then sit in a chunk of their own (its
// only unshared bytes) instead of making a chunk of up to chunkMax
// outbound clusters unique to it, which cost 50 KB per proxy.
func kindOf(name string) string {
	if i := strings.IndexByte(name, '|'); i >= 0 {
		return name[:i]
	}
	return ""
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
		n += e.elementSize(delta)
	}
	c := &chunk{encs: slices.Clone(res), bytes: make([]byte, 0, n)}
	for _, e := range res {
		c.bytes = e.appendElement(c.bytes, delta)
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
	switch req := v.(type) {
	case *discoveryv3.DiscoveryRequest:
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		ok := decodeRequest(buf.ReadOnlyData(), req)
		buf.Free()
		if ok {
			return nil
		}
		req.Reset()
	case *discoveryv3.DeltaDiscoveryRequest:
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		ok := decodeDeltaRequest(buf.ReadOnlyData(), req)
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
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(codec{proto: grpcencoding.GetCodecV2("proto")}),
		// A push writes the same large responses (a route configuration
		// of every service) to thousands of streams, so the write buffer
		// sets both the system calls per byte and the memory of a push.
		// The buffer is taken from a pool only while a connection has
		// something to write, so an idle proxy costs none; but gRPC takes
		// a whole buffer for any write, and an endpoint change writes a
		// small response on every connection at once: with 2000 sidecars
		// on their own connections (as Envoys connect) 256 KB buffers
		// filled the pool with 2000 of them (skiffd at 600–770 MB); 64 KB
		// ones keep it near 430 MB, for about 0.1 CPU s more per push of a
		// 545 KB route configuration (gRPC's default 32 KB cost a fifth of
		// skiffd's CPU in a push). Large responses are also bounded by the
		// send window (window.go).
		grpc.WriteBufferSize(writeBufferSize),
		grpc.SharedWriteBuffer(true),
	}
}

// writeBufferSize is how much a connection's transport gathers before a
// write system call.
const writeBufferSize = 64 << 10

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
	// An ACK lists thousands of names: size the list once rather than
	// let append grow it a dozen times per ACK.
	var list []string
	if n := countField(b, 3); n > 0 {
		list = make([]string, 0, n)
	}
	rest, ok := splitNames(b, func(num protowire.Number, name []byte) bool {
		if num != 3 {
			return false
		}
		list = append(list, names.intern(name))
		return true
	})
	if !ok {
		return false
	}
	if err := proto.Unmarshal(rest, req); err != nil {
		return false
	}
	req.ResourceNames = list
	return true
}

// decodeDeltaRequest is decodeRequest for a DeltaDiscoveryRequest: its
// first request per type subscribes to thousands of names (every cluster
// of the mesh), the same for every sidecar. Subscribed (3) and
// unsubscribed (4) names are interned.
func decodeDeltaRequest(b []byte, req *discoveryv3.DeltaDiscoveryRequest) bool {
	var sub, unsub []string
	if n := countField(b, 3); n > 0 {
		sub = make([]string, 0, n)
	}
	rest, ok := splitNames(b, func(num protowire.Number, name []byte) bool {
		switch num {
		case 3:
			sub = append(sub, names.intern(name))
		case 4:
			unsub = append(unsub, names.intern(name))
		default:
			return false
		}
		return true
	})
	if !ok {
		return false
	}
	if err := proto.Unmarshal(rest, req); err != nil {
		return false
	}
	req.ResourceNamesSubscribe, req.ResourceNamesUnsubscribe = sub, unsub
	return true
}

// countField counts the length-delimited fields num of message b (a
// guess for sizing: a malformed b is found by the decoding that follows).
func countField(b []byte, num protowire.Number) int {
	n := 0
	for len(b) > 0 {
		f, typ, k := protowire.ConsumeTag(b)
		if k < 0 {
			return n
		}
		m := protowire.ConsumeFieldValue(f, typ, b[k:])
		if m < 0 {
			return n
		}
		if f == num && typ == protowire.BytesType {
			n++
		}
		b = b[k+m:]
	}
	return n
}

// splitNames offers each well-formed string field 3 or 4 of message b to
// take, and returns the fields take declined, for the proto library. It
// reports false when b is not well-formed.
func splitNames(b []byte, take func(num protowire.Number, name []byte) bool) (rest []byte, ok bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, false
		}
		taken := false
		if (num == 3 || num == 4) && typ == protowire.BytesType {
			v, k := protowire.ConsumeBytes(b[n:])
			if k < 0 || !utf8.Valid(v) {
				return nil, false
			}
			taken = take(num, v)
		}
		if !taken {
			rest = append(rest, b[:n+m]...)
		}
		b = b[n+m:]
	}
	return rest, true
}
