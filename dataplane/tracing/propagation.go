package tracing

import (
	"encoding/hex"
	"net/http"
	"strings"
)

// Header keys in Go's canonical form, so lookups need no canonicalisation.
const (
	hdrTraceparent  = "Traceparent"
	hdrTracestate   = "Tracestate"
	hdrB3TraceID    = "X-B3-Traceid"
	hdrB3SpanID     = "X-B3-Spanid"
	hdrB3ParentID   = "X-B3-Parentspanid"
	hdrB3Sampled    = "X-B3-Sampled"
	hdrB3Flags      = "X-B3-Flags"
	hdrB3Single     = "B3"
	hdrRequestID    = "X-Request-Id"
	hdrClientTrace  = "X-Client-Trace-Id"
	hdrForceTrace   = "X-Envoy-Force-Trace"
	hdrDownstreamSC = "X-Envoy-Downstream-Service-Cluster"
)

// sampling is a propagated sampling decision.
type sampling uint8

const (
	sampleDefer sampling = iota // no decision carried: decide locally
	sampleYes
	sampleNo
)

// spanContext is what a request carries in from the previous hop.
type spanContext struct {
	traceID [16]byte
	// short: a 64-bit trace id (B3 allows them); traceID holds it in its
	// low eight bytes and B3 injection keeps the 16-hex-digit form.
	short      bool
	spanID     [8]byte
	sampled    sampling
	tracestate string
}

// extractW3C reads traceparent (version 00 layout; later versions are read
// as 00, as the spec asks).
func extractW3C(h http.Header) (spanContext, bool) {
	var sc spanContext
	v := first(h, hdrTraceparent)
	if len(v) < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' || (len(v) > 55 && v[55] != '-') {
		return sc, false
	}
	if v[:2] == "ff" || (v[:2] == "00" && len(v) != 55) {
		return sc, false
	}
	if !decodeHex(sc.traceID[:], v[3:35]) || !decodeHex(sc.spanID[:], v[36:52]) || isZero(sc.traceID[:]) || isZero(sc.spanID[:]) {
		return sc, false
	}
	var flags [1]byte
	if !decodeHex(flags[:], v[53:55]) {
		return sc, false
	}
	sc.sampled = sampleNo
	if flags[0]&1 != 0 {
		sc.sampled = sampleYes
	}
	sc.tracestate = strings.Join(h[hdrTracestate], ",")
	return sc, true
}

// extractB3 reads the multi-header form, then the single b3 header.
func extractB3(h http.Header) (spanContext, bool) {
	var sc spanContext
	if tid := first(h, hdrB3TraceID); tid != "" {
		if !parseTraceID(&sc, tid) || !parseSpanID(&sc.spanID, first(h, hdrB3SpanID)) {
			return sc, false
		}
		sc.sampled = b3Sampled(first(h, hdrB3Sampled))
		if first(h, hdrB3Flags) == "1" {
			sc.sampled = sampleYes // debug
		}
		return sc, true
	}
	v := first(h, hdrB3Single)
	if v == "" {
		return sc, false
	}
	// b3: {traceid}-{spanid}[-{sampled}[-{parentspanid}]], or a lone
	// sampling state ("0", "1", "d") which carries no context.
	parts := strings.Split(v, "-")
	if len(parts) == 1 {
		return sc, false
	}
	if !parseTraceID(&sc, parts[0]) || !parseSpanID(&sc.spanID, parts[1]) {
		return sc, false
	}
	if len(parts) > 2 {
		sc.sampled = b3Sampled(parts[2])
	}
	return sc, true
}

// b3SingleSampling is the decision of a lone "b3: 0|1|d" header.
func b3SingleSampling(h http.Header) sampling {
	v := first(h, hdrB3Single)
	if strings.IndexByte(v, '-') >= 0 {
		return sampleDefer
	}
	return b3Sampled(v)
}

func b3Sampled(v string) sampling {
	switch v {
	case "1", "true", "d":
		return sampleYes
	case "0", "false":
		return sampleNo
	}
	return sampleDefer
}

func parseTraceID(sc *spanContext, s string) bool {
	switch len(s) {
	case 32:
		return decodeHex(sc.traceID[:], s) && !isZero(sc.traceID[:])
	case 16:
		sc.short = true
		return decodeHex(sc.traceID[8:], s) && !isZero(sc.traceID[8:])
	}
	return false
}

func parseSpanID(id *[8]byte, s string) bool {
	return len(s) == 16 && decodeHex(id[:], s) && !isZero(id[:])
}

// decodeHex accepts lower-case hex only, as W3C requires (B3 writers use
// lower case too).
func decodeHex(dst []byte, s string) bool {
	if len(s) != 2*len(dst) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	_, err := hex.Decode(dst, []byte(s))
	return err == nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func first(h http.Header, k string) string {
	if v := h[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// injectW3C writes the span's context as traceparent (and keeps tracestate).
func (sp *Span) injectW3C(h http.Header) {
	b := make([]byte, 0, 55)
	b = append(b, "00-"...)
	b = hex.AppendEncode(b, sp.traceID[:])
	b = append(b, '-')
	b = hex.AppendEncode(b, sp.spanID[:])
	if sp.sampled {
		b = append(b, "-01"...)
	} else {
		b = append(b, "-00"...)
	}
	h[hdrTraceparent] = []string{string(b)}
	if sp.tracestate != "" {
		h[hdrTracestate] = []string{sp.tracestate}
	}
}

// injectB3 writes the multi-header B3 form, and the single header too when
// the request came with one, so the two never disagree.
func (sp *Span) injectB3(h http.Header) {
	tid := sp.traceIDHex()
	sid := hex.EncodeToString(sp.spanID[:])
	h[hdrB3TraceID] = []string{tid}
	h[hdrB3SpanID] = []string{sid}
	if sp.hasParent {
		h[hdrB3ParentID] = []string{hex.EncodeToString(sp.parentID[:])}
	} else {
		delete(h, hdrB3ParentID)
	}
	s := "0"
	if sp.sampled {
		s = "1"
	}
	h[hdrB3Sampled] = []string{s}
	delete(h, hdrB3Flags)
	if _, ok := h[hdrB3Single]; ok {
		v := tid + "-" + sid + "-" + s
		if sp.hasParent {
			v += "-" + hex.EncodeToString(sp.parentID[:])
		}
		h[hdrB3Single] = []string{v}
	}
}
