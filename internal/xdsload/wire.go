package xdsload

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"unique"

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

// rawCodec marshals requests as protos and hands responses over as the
// buffers gRPC read them into (see wireMsg).
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, err := proto.Marshal(v.(proto.Message))
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m := v.(*wireMsg)
	data.Ref() // gRPC frees its reference when this returns; ours lasts until m.free
	m.bufs = data
	return nil
}

// Name is "proto": the bytes on the wire are protobuf either way.
func (rawCodec) Name() string { return "proto" }

func openStream(ctx context.Context, cc *grpc.ClientConn, method string) (grpc.ClientStream, error) {
	return cc.NewStream(ctx, adsStream, method, grpc.ForceCodecV2(rawCodec{}))
}

// wireMsg is a received response still in gRPC's buffers (one per HTTP/2
// data frame, 16 KB by default). Copying a response into one slice was
// the tool's largest cost (a CDS response is megabytes, for each of
// thousands of proxies); responses are instead read where they lie, and
// only a resource that straddles two buffers is copied.
type wireMsg struct{ bufs mem.BufferSlice }

// free returns the buffers to gRPC's pool: nothing read from them may be
// used afterwards (names and versions are interned copies).
func (m *wireMsg) free() {
	m.bufs.Free()
	m.bufs = nil
}

// span is a run of bytes that may lie across several of gRPC's buffers:
// first, then more. Reading it copies nothing.
type span struct {
	first []byte
	more  [][]byte
}

func spanOf(b []byte) span { return span{first: b} }

// len is the span's length in bytes.
func (s span) len() int {
	n := len(s.first)
	for _, b := range s.more {
		n += len(b)
	}
	return n
}

// bytes is the span as one slice: itself when it lies in one buffer, else
// a copy.
func (s span) bytes() []byte {
	if len(s.more) == 0 {
		return s.first
	}
	out := make([]byte, 0, s.len())
	out = append(out, s.first...)
	for _, b := range s.more {
		out = append(out, b...)
	}
	return out
}

// equal reports whether the span holds exactly str.
func (s span) equal(str string) bool {
	if len(s.more) == 0 {
		return string(s.first) == str
	}
	if s.len() != len(str) {
		return false
	}
	for _, b := range append([][]byte{s.first}, s.more...) {
		if string(b) != str[:len(b)] {
			return false
		}
		str = str[len(b):]
	}
	return true
}

// cursor reads protobuf wire format from a span.
type cursor struct {
	cur  []byte   // what is left of the current segment
	more [][]byte // the segments after it
}

func (c *cursor) reset(s span) {
	c.cur, c.more = s.first, s.more
	c.next()
}

// next moves to the next non-empty segment (cur stays empty at the end).
func (c *cursor) next() {
	for len(c.cur) == 0 && len(c.more) > 0 {
		c.cur, c.more = c.more[0], c.more[1:]
	}
}

func (c *cursor) done() bool { return len(c.cur) == 0 }

func (c *cursor) varint() (uint64, error) {
	if v, n := protowire.ConsumeVarint(c.cur); n > 0 {
		c.cur = c.cur[n:]
		c.next()
		return v, nil
	} else if len(c.cur) >= maxVarintLen || len(c.more) == 0 {
		return 0, protowire.ParseError(n)
	}
	// The varint straddles two segments.
	var v uint64
	for shift := 0; shift < 64; shift += 7 {
		if len(c.cur) == 0 {
			return 0, protowire.ParseError(-1) // truncated
		}
		b := c.cur[0]
		c.cur = c.cur[1:]
		c.next()
		v |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return v, nil
		}
	}
	return 0, protowire.ParseError(-3) // overflow
}

const maxVarintLen = 10

// sub returns the next n bytes as a span and moves past them.
func (c *cursor) sub(n int) (span, error) {
	if n <= len(c.cur) {
		s := span{first: c.cur[:n:n]}
		c.cur = c.cur[n:]
		c.next()
		return s, nil
	}
	s := span{first: c.cur[:len(c.cur):len(c.cur)]}
	n -= len(c.cur)
	c.cur = nil
	for n > 0 {
		if len(c.more) == 0 {
			return span{}, protowire.ParseError(-1) // truncated
		}
		b := c.more[0]
		c.more = c.more[1:]
		k := min(n, len(b))
		s.more = append(s.more, b[:k:k])
		n -= k
		c.cur = b[k:]
	}
	c.next()
	return s, nil
}

func (c *cursor) skip(n int) error {
	for n > 0 {
		if len(c.cur) == 0 {
			return protowire.ParseError(-1)
		}
		k := min(n, len(c.cur))
		c.cur = c.cur[k:]
		n -= k
		c.next()
	}
	return nil
}

// scanSpan calls f for each field of the message in s with its number and
// either its bytes (length-delimited fields whose number want accepts; the
// others are skipped unread) or its value (varints).
func scanSpan(s span, want func(protowire.Number) bool, f func(num protowire.Number, v span, n uint64) error) error {
	var c cursor
	c.reset(s)
	for !c.done() {
		tag, err := c.varint()
		if err != nil {
			return err
		}
		num, typ := protowire.DecodeTag(tag)
		if num < protowire.MinValidNumber {
			return fmt.Errorf("invalid field number %d", num)
		}
		var v span
		var n uint64
		switch typ {
		case protowire.VarintType:
			n, err = c.varint()
		case protowire.Fixed32Type:
			err = c.skip(4)
		case protowire.Fixed64Type:
			err = c.skip(8)
		case protowire.BytesType:
			var l uint64
			if l, err = c.varint(); err != nil {
				break
			}
			if l > uint64(c.remaining()) {
				err = protowire.ParseError(-1) // truncated
				break
			}
			if want(num) {
				v, err = c.sub(int(l))
			} else {
				err = c.skip(int(l))
				continue
			}
		default: // groups: none in xDS
			return fmt.Errorf("field %d: unsupported wire type %d", num, typ)
		}
		if err != nil {
			return fmt.Errorf("field %d: %w", num, err)
		}
		if err := f(num, v, n); err != nil {
			return err
		}
	}
	return nil
}

// remaining is how many bytes are left.
func (c *cursor) remaining() int {
	n := len(c.cur)
	for _, b := range c.more {
		n += len(b)
	}
	return n
}

func fields(nums ...protowire.Number) func(protowire.Number) bool {
	return func(n protowire.Number) bool {
		for _, x := range nums {
			if x == n {
				return true
			}
		}
		return false
	}
}

// msgSpan is the whole received message as a span.
func (m *wireMsg) span() span {
	var s span
	for _, b := range m.bufs {
		d := b.ReadOnlyData()
		if len(d) == 0 {
			continue
		}
		if s.first == nil {
			s.first = d
		} else {
			s.more = append(s.more, d)
		}
	}
	return s
}

// wireResource is one resource of a response, still serialized.
type wireResource struct {
	version unique.Handle[string] // delta only
	value   span                  // the resource (Any.value)
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
func parseSotW(m *wireMsg) (wireResponse, error) {
	var r wireResponse
	err := scanSpan(m.span(), fields(1, 2, 4, 5), func(num protowire.Number, v span, _ uint64) error {
		switch num {
		case 1:
			r.version = string(v.bytes())
		case 2:
			val, err := anyValue(v)
			if err != nil {
				return err
			}
			r.resources = append(r.resources, wireResource{value: val})
		case 4:
			r.typeURL = internSpan(v).Value()
		case 5:
			r.nonce = string(v.bytes())
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
func parseDelta(m *wireMsg) (wireResponse, error) {
	var r wireResponse
	err := scanSpan(m.span(), fields(1, 2, 4, 5, 6), func(num protowire.Number, v span, _ uint64) error {
		switch num {
		case 1:
			r.version = string(v.bytes())
		case 2:
			var res wireResource
			err := scanSpan(v, fields(1, 2), func(num protowire.Number, v span, _ uint64) error {
				var err error
				switch num {
				case 1:
					res.version = internSpan(v)
				case 2:
					res.value, err = anyValue(v)
				}
				return err
			})
			if err != nil {
				return err
			}
			r.resources = append(r.resources, res)
		case 4:
			r.typeURL = internSpan(v).Value()
		case 5:
			r.nonce = string(v.bytes())
		case 6:
			r.removed = append(r.removed, string(v.bytes()))
		}
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("malformed DeltaDiscoveryResponse: %w", err)
	}
	return r, nil
}

// anyValue is the value (field 2) of a google.protobuf.Any.
func anyValue(s span) (span, error) {
	var val span
	err := scanSpan(s, fields(2), func(num protowire.Number, v span, _ uint64) error {
		if num == 2 {
			val = v
		}
		return nil
	})
	return val, err
}

// The fleet's proxies read the same few thousand names and versions over
// and over: intern finds their handle from the bytes without allocating a
// string each time.
var interned struct {
	seed   maphash.Seed
	shards [64]internShard
}

type internShard struct {
	mu sync.RWMutex
	m  map[string]unique.Handle[string]
}

// maxInternedPerShard bounds the table (versions of changed resources
// accumulate over a long run); a full shard starts over.
const maxInternedPerShard = 1 << 16

func init() { interned.seed = maphash.MakeSeed() }

// internSpan is intern for a span (copied only when it straddles buffers).
func internSpan(s span) unique.Handle[string] { return intern(s.bytes()) }

func intern(b []byte) unique.Handle[string] {
	s := &interned.shards[maphash.Bytes(interned.seed, b)%uint64(len(interned.shards))]
	s.mu.RLock()
	h, ok := s.m[string(b)]
	s.mu.RUnlock()
	if ok {
		return h
	}
	str := string(b)
	h = unique.Make(str)
	s.mu.Lock()
	if s.m == nil || len(s.m) >= maxInternedPerShard {
		s.m = make(map[string]unique.Handle[string])
	}
	s.m[str] = h
	s.mu.Unlock()
	return h
}
