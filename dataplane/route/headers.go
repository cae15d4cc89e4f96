package route

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/skiff-mesh/skiff/dataplane/core"
)

// headerMutation is one level's headers_to_remove and headers_to_add.
type headerMutation struct {
	remove []string // canonical keys
	add    []headerAdd
}

type headerAdd struct {
	key       string // canonical
	value     format
	action    corev3.HeaderValueOption_HeaderAppendAction
	keepEmpty bool
}

// format is a header value with %COMMAND% substitutions, split once at
// compile time into literal and dynamic parts.
type format struct {
	literal string // the whole value when parts is nil
	parts   []formatPart
}

type formatPart struct {
	lit string
	cmd formatCmd
	arg string // canonical header key for %REQ(...)%
}

type formatCmd uint8

const (
	fLiteral formatCmd = iota
	fRemoteAddr
	fRemoteAddrNoPort
	fRemotePort
	fLocalAddr
	fLocalAddrNoPort
	fLocalPort
	fHostname
	fReq
	fSNI
	fPeerURISAN
	fPeerSubject
	fTLSVersion
)

var hostname, _ = os.Hostname()

func compileMutation(add []*corev3.HeaderValueOption, remove []string) (*headerMutation, error) {
	if len(add) == 0 && len(remove) == 0 {
		return nil, nil
	}
	m := &headerMutation{}
	for _, r := range remove {
		m.remove = append(m.remove, http.CanonicalHeaderKey(r))
	}
	for i, o := range add {
		k := o.GetHeader().GetKey()
		if k == "" {
			return nil, fmt.Errorf("[%d].header.key: must not be empty", i)
		}
		if strings.HasPrefix(k, ":") || strings.EqualFold(k, "host") {
			return nil, fmt.Errorf("[%d].header.key: %q cannot be modified by header mutation; use a host or path rewrite", i, k)
		}
		v := o.GetHeader().GetValue()
		if v == "" && len(o.GetHeader().GetRawValue()) > 0 {
			v = string(o.GetHeader().GetRawValue())
		}
		f, err := compileFormat(v)
		if err != nil {
			return nil, fmt.Errorf("[%d].header.value: %w", i, err)
		}
		a := headerAdd{key: http.CanonicalHeaderKey(k), value: f, action: o.GetAppendAction(), keepEmpty: o.GetKeepEmptyValue()}
		if o.GetAppend() != nil {
			// The deprecated bool wins when set, as in Envoy.
			if o.GetAppend().GetValue() {
				a.action = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
			} else {
				a.action = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
			}
		}
		m.add = append(m.add, a)
	}
	return m, nil
}

func compileFormat(v string) (format, error) {
	if !strings.Contains(v, "%") {
		return format{literal: v}, nil
	}
	var f format
	rest := v
	for rest != "" {
		i := strings.IndexByte(rest, '%')
		if i < 0 {
			f.parts = append(f.parts, formatPart{lit: rest})
			break
		}
		if i > 0 {
			f.parts = append(f.parts, formatPart{lit: rest[:i]})
		}
		rest = rest[i+1:]
		if strings.HasPrefix(rest, "%") {
			f.parts = append(f.parts, formatPart{lit: "%"})
			rest = rest[1:]
			continue
		}
		j := strings.IndexByte(rest, '%')
		if j < 0 {
			return f, fmt.Errorf("%q: unterminated %% command", v)
		}
		cmd := rest[:j]
		rest = rest[j+1:]
		p, err := formatCommand(cmd)
		if err != nil {
			return f, fmt.Errorf("%q: %w", v, err)
		}
		f.parts = append(f.parts, p)
	}
	return f, nil
}

func formatCommand(cmd string) (formatPart, error) {
	switch cmd {
	case "DOWNSTREAM_REMOTE_ADDRESS":
		return formatPart{cmd: fRemoteAddr}, nil
	case "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT":
		return formatPart{cmd: fRemoteAddrNoPort}, nil
	case "DOWNSTREAM_REMOTE_PORT":
		return formatPart{cmd: fRemotePort}, nil
	case "DOWNSTREAM_LOCAL_ADDRESS":
		return formatPart{cmd: fLocalAddr}, nil
	case "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT":
		return formatPart{cmd: fLocalAddrNoPort}, nil
	case "DOWNSTREAM_LOCAL_PORT":
		return formatPart{cmd: fLocalPort}, nil
	case "HOSTNAME":
		return formatPart{cmd: fHostname}, nil
	case "REQUESTED_SERVER_NAME":
		return formatPart{cmd: fSNI}, nil
	case "DOWNSTREAM_PEER_URI_SAN":
		return formatPart{cmd: fPeerURISAN}, nil
	case "DOWNSTREAM_PEER_SUBJECT":
		return formatPart{cmd: fPeerSubject}, nil
	case "DOWNSTREAM_TLS_VERSION":
		return formatPart{cmd: fTLSVersion}, nil
	}
	if strings.HasPrefix(cmd, "ENVIRONMENT(") && strings.HasSuffix(cmd, ")") {
		// Resolved once: the proxy's environment does not change.
		return formatPart{lit: os.Getenv(cmd[len("ENVIRONMENT(") : len(cmd)-1])}, nil
	}
	if strings.HasPrefix(cmd, "REQ(") && strings.HasSuffix(cmd, ")") {
		h := cmd[4 : len(cmd)-1]
		if h == "" {
			return formatPart{}, errors.New("%REQ()% needs a header name")
		}
		return formatPart{cmd: fReq, arg: http.CanonicalHeaderKey(h)}, nil
	}
	return formatPart{}, fmt.Errorf("%%%s%% is not a supported command (supported: DOWNSTREAM_REMOTE_ADDRESS[_WITHOUT_PORT], DOWNSTREAM_REMOTE_PORT, DOWNSTREAM_LOCAL_ADDRESS[_WITHOUT_PORT], DOWNSTREAM_LOCAL_PORT, DOWNSTREAM_PEER_URI_SAN, DOWNSTREAM_PEER_SUBJECT, DOWNSTREAM_TLS_VERSION, HOSTNAME, REQUESTED_SERVER_NAME, REQ(header), ENVIRONMENT(var))", cmd)
}

// eval renders the value; req is the request header map for %REQ()%
// (nil on responses before the request is known).
func (f *format) eval(ci *core.ConnInfo, req http.Header) string {
	if f.parts == nil {
		return f.literal
	}
	var b strings.Builder
	for _, p := range f.parts {
		switch p.cmd {
		case fLiteral:
			b.WriteString(p.lit)
		case fRemoteAddr, fRemoteAddrNoPort, fRemotePort:
			if ci != nil {
				b.WriteString(addrPart(ci.RemoteAddr, p.cmd-fRemoteAddr))
			}
		case fLocalAddr, fLocalAddrNoPort, fLocalPort:
			if ci != nil {
				b.WriteString(addrPart(ci.DestinationAddr(), p.cmd-fLocalAddr))
			}
		case fHostname:
			b.WriteString(hostname)
		case fSNI:
			if ci != nil {
				b.WriteString(ci.SNI)
			}
		case fReq:
			if req != nil {
				b.WriteString(req.Get(p.arg))
			}
		case fPeerURISAN, fPeerSubject, fTLSVersion:
			b.WriteString(tlsPart(ci, p.cmd))
		}
	}
	return b.String()
}

// tlsPart renders the downstream TLS facts Envoy's formatter offers; ""
// for plaintext connections. Several URI SANs are joined with ",".
func tlsPart(ci *core.ConnInfo, cmd formatCmd) string {
	if ci == nil || ci.TLS == nil {
		return ""
	}
	switch cmd {
	case fTLSVersion:
		return tlsVersionName(ci.TLS.Version)
	}
	if len(ci.TLS.PeerCertificates) == 0 {
		return ""
	}
	leaf := ci.TLS.PeerCertificates[0]
	if cmd == fPeerSubject {
		return leaf.Subject.String()
	}
	uris := make([]string, len(leaf.URIs))
	for i, u := range leaf.URIs {
		uris[i] = u.String()
	}
	return strings.Join(uris, ",")
}

// tlsVersionName spells versions as Envoy does (TLSv1.2, TLSv1.3).
func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLSv1"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return ""
}

// addrPart renders a as ip:port (0), ip (1) or port (2).
func addrPart(a net.Addr, which formatCmd) string {
	if a == nil {
		return ""
	}
	s := a.String()
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return s
	}
	switch which {
	case 1:
		return host
	case 2:
		return port
	}
	return s
}

func (m *headerMutation) apply(h http.Header, ci *core.ConnInfo, req http.Header) {
	for _, k := range m.remove {
		delete(h, k)
	}
	for i := range m.add {
		a := &m.add[i]
		v := a.value.eval(ci, req)
		if v == "" && !a.keepEmpty {
			continue
		}
		_, exists := h[a.key]
		switch a.action {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			h[a.key] = append(h[a.key], v)
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if !exists {
				h[a.key] = []string{v}
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			h[a.key] = []string{v}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if exists {
				h[a.key] = []string{v}
			}
		}
	}
}

// levels returns the mutations in application order. Envoy applies the
// most specific level first (weighted cluster, route, virtual host, route
// configuration) so the route configuration's overwrites win, unless
// most_specific_header_mutations_wins reverses the order.
func (e *Entry) apply(levels []*headerMutation, wc *headerMutation, h http.Header, ci *core.ConnInfo, req http.Header) {
	if e.mostSpecificWins {
		for i := len(levels) - 1; i >= 0; i-- {
			levels[i].apply(h, ci, req)
		}
		if wc != nil {
			wc.apply(h, ci, req)
		}
		return
	}
	if wc != nil {
		wc.apply(h, ci, req)
	}
	for _, m := range levels {
		m.apply(h, ci, req)
	}
}

// MutateRequest applies request header mutations of the weighted cluster
// (if any), route, virtual host and route configuration, and strips
// internal_only_headers from requests that come from outside.
func (e *Entry) MutateRequest(h http.Header, cluster *WeightedCluster, ci *core.ConnInfo) {
	if len(e.internalOnly) > 0 && !isInternal(ci) {
		for _, k := range e.internalOnly {
			delete(h, k)
		}
	}
	var wc *headerMutation
	if cluster != nil {
		wc = cluster.reqMut
	}
	e.apply(e.reqMut, wc, h, ci, h)
}

// MutateResponse applies response header mutations in the same order as
// MutateRequest.
func (e *Entry) MutateResponse(h http.Header, cluster *WeightedCluster) {
	var wc *headerMutation
	if cluster != nil {
		wc = cluster.respMut
	}
	e.apply(e.respMut, wc, h, nil, nil)
}

// isInternal follows Envoy's default: a request is internal when its
// downstream peer has a loopback or RFC 1918 / RFC 4193 address.
func isInternal(ci *core.ConnInfo) bool {
	if ci == nil || ci.RemoteAddr == nil {
		return false
	}
	var ip netip.Addr
	switch a := ci.RemoteAddr.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	default:
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return false
		}
		ip = ap.Addr()
	}
	ip = ip.Unmap()
	return ip.IsLoopback() || ip.IsPrivate()
}
