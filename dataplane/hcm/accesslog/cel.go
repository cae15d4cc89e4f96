package accesslog

import (
	"fmt"
	"strconv"
	"strings"
)

// Expr is a compiled expression of the CEL subset the Telemetry API's
// access log filters use: comparisons (== != < <= > >=) of Envoy attributes
// (response.code, request.headers['x'], xds.cluster_name, …) with integer,
// string and bool literals, joined by && || ! and parentheses. An attribute
// that is missing at run time (an absent header) makes its comparison an
// error, and an expression that ends in an error does not match, as in
// Envoy's CEL filter.
type Expr struct{ root node }

// Match evaluates the expression against e.
func (x *Expr) Match(e *Entry) bool {
	v := x.root.eval(e)
	return v.k == vBool && v.b
}

type vkind uint8

const (
	vErr vkind = iota
	vInt
	vStr
	vBool
)

type val struct {
	k vkind
	i int64
	s string
	b bool
}

type node interface{ eval(e *Entry) val }

// attributes maps the supported Envoy attribute paths to their getters.
var attributes = map[string]func(e *Entry) val{
	"response.code":         func(e *Entry) val { return intv(int64(e.Status)) },
	"response.code_details": func(e *Entry) val { return strv(e.CodeDetails()) },
	"response.flags":        func(e *Entry) val { return intv(int64(e.Flags)) },
	"response.size":         func(e *Entry) val { return intv(e.BytesSent) },
	"response.grpc_status": func(e *Entry) val {
		s := firstValue(e.RespHeader, "Grpc-Status")
		if s == "" {
			s = firstValue(e.RespHeader, "Trailer:Grpc-Status")
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return val{}
		}
		return intv(n)
	},
	"request.method":    func(e *Entry) val { return reqv(e, ":method") },
	"request.path":      func(e *Entry) val { return reqv(e, ":path") },
	"request.host":      func(e *Entry) val { return reqv(e, ":authority") },
	"request.scheme":    func(e *Entry) val { return reqv(e, ":scheme") },
	"request.protocol":  func(e *Entry) val { return reqv(e, ":protocol") },
	"request.id":        func(e *Entry) val { return reqv(e, "X-Request-Id") },
	"request.referer":   func(e *Entry) val { return reqv(e, "Referer") },
	"request.useragent": func(e *Entry) val { return reqv(e, "User-Agent") },
	"request.size":      func(e *Entry) val { return intv(e.BytesReceived) },
	"request.url_path": func(e *Entry) val {
		if e.Req == nil || e.Req.URL == nil {
			return val{}
		}
		return strv(e.Req.URL.Path)
	},
	"source.address": func(e *Entry) val {
		if e.Conn == nil || e.Conn.RemoteAddr == nil {
			return val{}
		}
		return strv(e.Conn.RemoteAddr.String())
	},
	"destination.address": func(e *Entry) val {
		if e.Conn == nil || e.Conn.DestinationAddr() == nil {
			return val{}
		}
		return strv(e.Conn.DestinationAddr().String())
	},
	"connection.mtls": func(e *Entry) val {
		return val{k: vBool, b: e.Conn != nil && e.Conn.TLS != nil && len(e.Conn.TLS.PeerCertificates) > 0}
	},
	"connection.requested_server_name": func(e *Entry) val {
		if e.Conn == nil {
			return val{}
		}
		return strv(e.Conn.SNI)
	},
	"upstream.address":       func(e *Entry) val { return strv(e.UpstreamHost) },
	"xds.cluster_name":       func(e *Entry) val { return strv(e.UpstreamCluster) },
	"xds.route_name":         func(e *Entry) val { return strv(e.RouteName) },
	"upstream.local_address": func(e *Entry) val { return strv(e.UpstreamLocalAddress) },
}

func intv(i int64) val  { return val{k: vInt, i: i} }
func strv(s string) val { return val{k: vStr, s: s} }

func reqv(e *Entry, key string) val {
	if e.Req == nil {
		return val{}
	}
	v := reqHeader(e.Req, key)
	if v == "" && key[0] != ':' {
		if _, ok := e.Req.Header[key]; !ok {
			return val{}
		}
	}
	return strv(v)
}

// ParseExpr compiles s. Errors give the column and what is supported.
func ParseExpr(s string) (*Expr, error) {
	p := &parser{src: s}
	p.next()
	n, err := p.or()
	if p.err != nil {
		return nil, p.err // a lexical error explains more than what followed it
	}
	if err != nil {
		return nil, err
	}
	if p.tok.kind != tEOF {
		return nil, p.errf("unexpected %q", p.tok.text)
	}
	return &Expr{root: n}, nil
}

type tkind uint8

const (
	tEOF tkind = iota
	tIdent
	tInt
	tStr
	tOp
)

type token struct {
	kind tkind
	text string
	pos  int
}

type parser struct {
	src string
	i   int
	tok token
	err error
}

func (p *parser) errf(f string, a ...any) error {
	return fmt.Errorf("column %d: %s", p.tok.pos+1, fmt.Sprintf(f, a...))
}

func (p *parser) next() {
	for p.i < len(p.src) && (p.src[p.i] == ' ' || p.src[p.i] == '\t' || p.src[p.i] == '\n') {
		p.i++
	}
	start := p.i
	if p.i >= len(p.src) {
		p.tok = token{kind: tEOF, pos: start}
		return
	}
	c := p.src[p.i]
	switch {
	case c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z':
		for p.i < len(p.src) && (p.src[p.i] == '_' || 'a' <= p.src[p.i] && p.src[p.i] <= 'z' || 'A' <= p.src[p.i] && p.src[p.i] <= 'Z' || '0' <= p.src[p.i] && p.src[p.i] <= '9') {
			p.i++
		}
		p.tok = token{kind: tIdent, text: p.src[start:p.i], pos: start}
	case '0' <= c && c <= '9' || c == '-' && p.i+1 < len(p.src) && '0' <= p.src[p.i+1] && p.src[p.i+1] <= '9':
		p.i++
		for p.i < len(p.src) && '0' <= p.src[p.i] && p.src[p.i] <= '9' {
			p.i++
		}
		p.tok = token{kind: tInt, text: p.src[start:p.i], pos: start}
	case c == '\'' || c == '"':
		p.i++
		var b strings.Builder
		for p.i < len(p.src) && p.src[p.i] != c {
			if p.src[p.i] == '\\' && p.i+1 < len(p.src) {
				p.i++
			}
			b.WriteByte(p.src[p.i])
			p.i++
		}
		if p.i >= len(p.src) {
			p.tok = token{kind: tOp, text: "unterminated string", pos: start}
			p.err = fmt.Errorf("column %d: unterminated string", start+1)
			return
		}
		p.i++
		p.tok = token{kind: tStr, text: b.String(), pos: start}
	default:
		for _, op := range []string{"&&", "||", "==", "!=", "<=", ">=", "<", ">", "!", "(", ")", "[", "]", "."} {
			if strings.HasPrefix(p.src[p.i:], op) {
				p.i += len(op)
				p.tok = token{kind: tOp, text: op, pos: start}
				return
			}
		}
		p.tok = token{kind: tOp, text: string(c), pos: start}
		p.err = fmt.Errorf("column %d: unexpected character %q", start+1, c)
		p.i++
	}
}

func (p *parser) is(op string) bool { return p.tok.kind == tOp && p.tok.text == op }

func (p *parser) or() (node, error) {
	l, err := p.and()
	for err == nil && p.is("||") {
		p.next()
		var r node
		if r, err = p.and(); err == nil {
			l = orNode{l, r}
		}
	}
	return l, err
}

func (p *parser) and() (node, error) {
	l, err := p.unary()
	for err == nil && p.is("&&") {
		p.next()
		var r node
		if r, err = p.unary(); err == nil {
			l = andNode{l, r}
		}
	}
	return l, err
}

func (p *parser) unary() (node, error) {
	if p.is("!") {
		p.next()
		n, err := p.unary()
		return notNode{n}, err
	}
	return p.cmp()
}

func (p *parser) cmp() (node, error) {
	l, err := p.primary()
	if err != nil {
		return nil, err
	}
	for _, op := range []string{"==", "!=", "<=", ">=", "<", ">"} {
		if p.is(op) {
			p.next()
			r, err := p.primary()
			if err != nil {
				return nil, err
			}
			return cmpNode{op: op, l: l, r: r}, nil
		}
	}
	return l, nil
}

func (p *parser) primary() (node, error) {
	if p.err != nil {
		return nil, p.err
	}
	t := p.tok
	switch t.kind {
	case tInt:
		n, err := strconv.ParseInt(t.text, 10, 64)
		if err != nil {
			return nil, p.errf("bad integer %q", t.text)
		}
		p.next()
		return litNode{intv(n)}, nil
	case tStr:
		p.next()
		return litNode{strv(t.text)}, nil
	case tIdent:
		switch t.text {
		case "true", "false":
			p.next()
			return litNode{val{k: vBool, b: t.text == "true"}}, nil
		}
		return p.attribute()
	case tOp:
		if t.text == "(" {
			p.next()
			n, err := p.or()
			if err != nil {
				return nil, err
			}
			if !p.is(")") {
				return nil, p.errf("missing ')'")
			}
			p.next()
			return n, nil
		}
	case tEOF:
		return nil, p.errf("unexpected end of expression")
	}
	return nil, p.errf("unexpected %q", t.text)
}

func (p *parser) attribute() (node, error) {
	start := p.tok
	path := p.tok.text
	p.next()
	for p.is(".") {
		p.next()
		if p.tok.kind != tIdent {
			return nil, p.errf("an attribute name must follow '.'")
		}
		path += "." + p.tok.text
		p.next()
	}
	if p.is("[") {
		p.next()
		if p.tok.kind != tStr {
			return nil, p.errf("a quoted key must follow '['")
		}
		key := p.tok.text
		p.next()
		if !p.is("]") {
			return nil, p.errf("missing ']'")
		}
		p.next()
		switch path {
		case "request.headers":
			return headerNode{req: true, key: strings.ToLower(key)}, nil
		case "response.headers":
			return headerNode{key: strings.ToLower(key)}, nil
		case "response.trailers":
			return headerNode{key: strings.ToLower(key), trailer: true}, nil
		}
		return nil, fmt.Errorf("column %d: %s[...] is not supported; use request.headers, response.headers or response.trailers", start.pos+1, path)
	}
	get, ok := attributes[path]
	if !ok {
		return nil, fmt.Errorf("column %d: unknown attribute %q (supported: response.code, response.code_details, response.flags, response.grpc_status, request.method, request.path, request.url_path, request.host, request.headers['name'], response.headers['name'], xds.cluster_name, upstream.address, connection.mtls, …)", start.pos+1, path)
	}
	return attrNode(get), nil
}

type litNode struct{ v val }

func (n litNode) eval(*Entry) val { return n.v }

type attrNode func(e *Entry) val

func (n attrNode) eval(e *Entry) val { return n(e) }

type headerNode struct {
	key          string
	req, trailer bool
}

func (n headerNode) eval(e *Entry) val {
	k := canonical(n.key)
	if n.req {
		if e.Req == nil {
			return val{}
		}
		vs, ok := e.Req.Header[k]
		if !ok {
			return val{}
		}
		return strv(strings.Join(vs, ","))
	}
	if n.trailer {
		k = "Trailer:" + k
	}
	vs, ok := e.RespHeader[k]
	if !ok {
		return val{}
	}
	return strv(strings.Join(vs, ","))
}

func canonical(k string) string { return headerKey(k) }

type notNode struct{ n node }

func (n notNode) eval(e *Entry) val {
	v := n.n.eval(e)
	if v.k != vBool {
		return val{}
	}
	return val{k: vBool, b: !v.b}
}

type andNode struct{ l, r node }

func (n andNode) eval(e *Entry) val {
	l, r := n.l.eval(e), n.r.eval(e)
	// CEL: false wins over an error on either side.
	if l.k == vBool && !l.b || r.k == vBool && !r.b {
		return val{k: vBool}
	}
	if l.k != vBool || r.k != vBool {
		return val{}
	}
	return val{k: vBool, b: true}
}

type orNode struct{ l, r node }

func (n orNode) eval(e *Entry) val {
	l, r := n.l.eval(e), n.r.eval(e)
	if l.k == vBool && l.b || r.k == vBool && r.b {
		return val{k: vBool, b: true}
	}
	if l.k != vBool || r.k != vBool {
		return val{}
	}
	return val{k: vBool}
}

type cmpNode struct {
	op   string
	l, r node
}

func (n cmpNode) eval(e *Entry) val {
	l, r := n.l.eval(e), n.r.eval(e)
	if l.k == vErr || r.k == vErr || l.k != r.k {
		return val{}
	}
	var c int
	switch l.k {
	case vInt:
		c = cmpOrd(l.i, r.i)
	case vStr:
		c = strings.Compare(l.s, r.s)
	case vBool:
		if n.op != "==" && n.op != "!=" {
			return val{}
		}
		if l.b != r.b {
			c = 1
		}
	}
	var b bool
	switch n.op {
	case "==":
		b = c == 0
	case "!=":
		b = c != 0
	case "<":
		b = c < 0
	case "<=":
		b = c <= 0
	case ">":
		b = c > 0
	case ">=":
		b = c >= 0
	}
	return val{k: vBool, b: b}
}

func cmpOrd(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
