package extauthz

import (
	"context"
	"net/http"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// verdict is the outcome of one check, as Envoy's CheckStatus.
type verdict uint8

const (
	verdictOK verdict = iota
	verdictDenied
	verdictError
)

// headerOp is one header mutation with Envoy's HeaderAppendAction
// semantics. Names are lower case.
type headerOp struct {
	name, value string
	action      corev3.HeaderValueOption_HeaderAppendAction
}

// response is an authorizer's answer in the terms the filters act on.
type response struct {
	verdict verdict
	// status, body and clientHeaders make the client's answer for a
	// denial (and for an error_response the authorizer sent).
	status        int
	body          string
	clientHeaders []headerOp
	// Request mutations and response headers of an OK.
	upstream      []headerOp
	remove        []string
	onSuccess     []headerOp
	querySet      [][2]string
	queryRemove   []string
	metadata      map[string]any
	err           error // why, for an error
	customErrResp bool  // an error_response with its own status
}

// checkInput is what a check is about: a request (nil for a connection)
// and the connection it came on.
type checkInput struct {
	req      *http.Request
	conn     *core.ConnInfo
	body     []byte
	partial  bool
	ctxExt   map[string]string
	metadata func(ns string) any
}

// service is an authorizer reached through a cluster.
type service interface {
	check(ctx context.Context, in *checkInput) *response
}

func errorResponse(err error) *response { return &response{verdict: verdictError, err: err} }

// applyOp applies op to h with Envoy's append_action semantics.
func applyOp(h http.Header, op headerOp) {
	k := http.CanonicalHeaderKey(op.name)
	switch op.action {
	case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
		h[k] = append(h[k], op.value)
	case corev3.HeaderValueOption_ADD_IF_ABSENT:
		if len(h[k]) == 0 {
			h[k] = []string{op.value}
		}
	case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
		if len(h[k]) > 0 {
			h[k] = []string{op.value}
		}
	default: // OVERWRITE_IF_EXISTS_OR_ADD
		h[k] = []string{op.value}
	}
}

// opsFrom converts HeaderValueOptions as Envoy's gRPC client does: the
// append field, when set, says append (true) or overwrite (false); unset,
// it overwrites, or follows append_action when useAction (the response
// headers of an OK, whose append_action default appends).
func opsFrom(hs []*corev3.HeaderValueOption, useAction bool) []headerOp {
	if len(hs) == 0 {
		return nil
	}
	out := make([]headerOp, 0, len(hs))
	for _, h := range hs {
		op := headerOp{name: lower(h.GetHeader().GetKey()), value: h.GetHeader().GetValue(), action: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}
		if op.value == "" && len(h.GetHeader().GetRawValue()) > 0 {
			op.value = string(h.GetHeader().GetRawValue())
		}
		switch {
		case h.GetAppend() != nil && h.GetAppend().GetValue():
			op.action = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
		case h.GetAppend() == nil && useAction:
			op.action = h.GetAppendAction()
		}
		if op.name != "" {
			out = append(out, op)
		}
	}
	return out
}

// lower lower-cases ASCII without allocating when already lower case.
func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; c >= 'A' && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
