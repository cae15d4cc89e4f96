package istiostats

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// expr is one dimension expression of the CEL subset the proxy evaluates:
// a string literal, request.headers['name'], request.host,
// request.method, request.url_path, response.code, and
// upstream_peer.FIELD / downstream_peer.FIELD.
type expr struct {
	src     string
	kind    exprKind
	literal string
	header  string // canonical header key
	peerUp  bool
	field   string // peer field
}

type exprKind uint8

const (
	exLiteral exprKind = iota
	exHeader
	exHost
	exMethod
	exPath
	exCode
	exPeer
)

// peerFields are the peer attributes an expression may name.
var peerFields = []string{"app", "version", "service", "revision", "namespace", "workload", "name", "cluster", "id", "canonical_service", "canonical_revision"}

func parseExpr(src string) (expr, error) {
	s := strings.TrimSpace(src)
	e := expr{src: src}
	switch {
	case len(s) >= 2 && (s[0] == '\'' && s[len(s)-1] == '\'' || s[0] == '"' && s[len(s)-1] == '"'):
		e.kind, e.literal = exLiteral, s[1:len(s)-1]
		if strings.ContainsAny(e.literal, `'"\`) {
			return e, fmt.Errorf("string literal %s: quotes and escapes inside are not supported", s)
		}
		return e, nil
	case s == "request.host":
		e.kind = exHost
	case s == "request.method":
		e.kind = exMethod
	case s == "request.url_path", s == "request.path":
		e.kind = exPath
	case s == "response.code":
		e.kind = exCode
	case strings.HasPrefix(s, "request.headers[") && strings.HasSuffix(s, "]"):
		name := s[len("request.headers[") : len(s)-1]
		if len(name) < 2 || !(name[0] == '\'' && name[len(name)-1] == '\'' || name[0] == '"' && name[len(name)-1] == '"') {
			return e, fmt.Errorf("%s: the header name must be a quoted string", s)
		}
		e.kind, e.header = exHeader, http.CanonicalHeaderKey(name[1:len(name)-1])
	case strings.HasPrefix(s, "upstream_peer.") || strings.HasPrefix(s, "downstream_peer."):
		who, f, _ := strings.Cut(s, ".")
		ok := false
		for _, pf := range peerFields {
			ok = ok || pf == f
		}
		if !ok {
			return e, fmt.Errorf("%s: unknown peer field %q; known: %s", s, f, strings.Join(peerFields, ", "))
		}
		e.kind, e.peerUp, e.field = exPeer, who == "upstream_peer", f
	default:
		return e, fmt.Errorf("cannot evaluate %q: supported are string literals, request.headers['name'], request.host, request.method, request.url_path, response.code, upstream_peer.FIELD and downstream_peer.FIELD", s)
	}
	return e, nil
}

// evalCtx is what an expression can read; req is nil for TCP.
type evalCtx struct {
	req      *http.Request
	code     int
	up, down *Peer
}

func (e *expr) eval(c *evalCtx) string {
	switch e.kind {
	case exLiteral:
		return e.literal
	case exPeer:
		p := c.down
		if e.peerUp {
			p = c.up
		}
		return peerField(p, e.field)
	case exCode:
		if c.req == nil {
			return unknown
		}
		return statusText(c.code)
	}
	if c.req == nil {
		return unknown
	}
	switch e.kind {
	case exHeader:
		if v := c.req.Header[e.header]; len(v) > 0 {
			return v[0]
		}
		if e.header == "Host" {
			return c.req.Host
		}
		return unknown
	case exHost:
		return c.req.Host
	case exMethod:
		return c.req.Method
	case exPath:
		if c.req.URL != nil {
			return c.req.URL.Path
		}
	}
	return unknown
}

func peerField(p *Peer, f string) string {
	if p == nil {
		return unknown
	}
	var v string
	switch f {
	case "app":
		v = p.App
	case "version":
		v = p.Version
	case "service", "canonical_service":
		v = p.CanonicalService
	case "revision", "canonical_revision":
		v = p.CanonicalRevision
	case "namespace":
		v = p.Namespace
	case "workload":
		v = p.Workload
	case "name":
		v = p.Name
	case "cluster":
		v = p.Cluster
	case "id":
		v = p.ID
	}
	return orUnknown(v)
}

// statusTexts are the decimal status codes, made once so the request path
// never formats a number.
var statusTexts = func() [600]string {
	var t [600]string
	for i := range t {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

func statusText(code int) string {
	if code >= 0 && code < len(statusTexts) {
		return statusTexts[code]
	}
	return strconv.Itoa(code)
}
