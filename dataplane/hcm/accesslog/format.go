package accesslog

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// DefaultFormat is Envoy's default access log format.
const DefaultFormat = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" " +
	"%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% " +
	"%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" " +
	"\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n"

// Formatter is a compiled substitution format string (text or JSON).
type Formatter struct {
	parts []part // text format
	json  *jsonObj
	// omitEmpty is json_format's omit_empty_values.
	omitEmpty bool
}

// jsonObj is a compiled json_format struct: keys sorted (Envoy's order is
// the proto map's, which is unordered too), values typed.
type jsonObj struct {
	fields []jsonField
}

type jsonField struct {
	key string
	// Exactly one of: parts (a string with operators), obj (a nested
	// struct), lit (a literal number, bool or null, rendered as JSON).
	parts []part
	obj   *jsonObj
	lit   string
}

type kind uint8

const (
	kLiteral kind = iota
	kStartTime
	kReq
	kResp
	kTrailer
	kResponseCode
	kResponseFlags
	kBytesReceived
	kBytesSent
	kDuration
	kRequestDuration
	kResponseDuration
	kUpstreamHost
	kUpstreamHostNoPort
	kUpstreamCluster
	kUpstreamLocal
	kUpstreamLocalNoPort
	kUpstreamTransportFailure
	kDownstreamRemote
	kDownstreamRemoteNoPort
	kDownstreamLocal
	kDownstreamLocalNoPort
	kProtocol
	kSNI
	kRouteName
	kResponseCodeDetails
	kTerminationDetails
	kAttempts
	kPeerURISAN
	kLocalURISAN
	kTLSVersion
	kHostname
	kEnvironment
	kTraceID
	kGRPCStatus
	kConnectionID
	kDash
)

type part struct {
	kind     kind
	lit      string
	hdr, alt string // REQ/RESP/TRAILER header keys (canonical, or pseudo ":path")
	maxLen   int
	time     []timeToken // START_TIME's format; nil is Envoy's default
}

var simpleCommands = map[string]kind{
	"START_TIME": kStartTime, "RESPONSE_CODE": kResponseCode, "RESPONSE_FLAGS": kResponseFlags,
	"BYTES_RECEIVED": kBytesReceived, "BYTES_SENT": kBytesSent, "DURATION": kDuration,
	"REQUEST_DURATION": kRequestDuration, "RESPONSE_DURATION": kResponseDuration,
	"UPSTREAM_HOST": kUpstreamHost, "UPSTREAM_REMOTE_ADDRESS": kUpstreamHost,
	"UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": kUpstreamHostNoPort,
	"UPSTREAM_CLUSTER":                     kUpstreamCluster, "UPSTREAM_CLUSTER_RAW": kUpstreamCluster,
	"UPSTREAM_LOCAL_ADDRESS": kUpstreamLocal, "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT": kUpstreamLocalNoPort,
	"UPSTREAM_TRANSPORT_FAILURE_REASON": kUpstreamTransportFailure,
	"DOWNSTREAM_REMOTE_ADDRESS":         kDownstreamRemote, "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": kDownstreamRemoteNoPort,
	"DOWNSTREAM_DIRECT_REMOTE_ADDRESS": kDownstreamRemote, "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT": kDownstreamRemoteNoPort,
	"DOWNSTREAM_LOCAL_ADDRESS": kDownstreamLocal, "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT": kDownstreamLocalNoPort,
	"PROTOCOL": kProtocol, "REQUESTED_SERVER_NAME": kSNI, "ROUTE_NAME": kRouteName,
	"RESPONSE_CODE_DETAILS": kResponseCodeDetails, "CONNECTION_TERMINATION_DETAILS": kTerminationDetails,
	"DOWNSTREAM_PEER_URI_SAN": kPeerURISAN, "DOWNSTREAM_LOCAL_URI_SAN": kLocalURISAN,
	"DOWNSTREAM_TLS_VERSION": kTLSVersion, "UPSTREAM_REQUEST_ATTEMPT_COUNT": kAttempts,
	"HOSTNAME": kHostname, "TRACE_ID": kTraceID, "GRPC_STATUS_NUMBER": kGRPCStatus, "CONNECTION_ID": kConnectionID,
	// Known to Envoy, not tracked by skiff-proxy: rendered as "-".
	"DYNAMIC_METADATA": kDash, "FILTER_STATE": kDash, "UPSTREAM_FILTER_STATE": kDash,
	"CLUSTER_METADATA": kDash, "UPSTREAM_METADATA": kDash, "ROUTE_METADATA": kDash,
}

// NewFormatter compiles lf; nil is Envoy's default text format.
func NewFormatter(lf *corev3.SubstitutionFormatString) (*Formatter, error) {
	if lf == nil {
		return NewTextFormatter(DefaultFormat)
	}
	switch {
	case lf.GetJsonFormat() != nil:
		o, err := compileJSON(lf.GetJsonFormat(), "json_format")
		if err != nil {
			return nil, err
		}
		return &Formatter{json: o, omitEmpty: lf.GetOmitEmptyValues()}, nil
	case lf.GetTextFormatSource() != nil:
		src := lf.GetTextFormatSource()
		s := src.GetInlineString()
		if s == "" && len(src.GetInlineBytes()) > 0 {
			s = string(src.GetInlineBytes())
		}
		if fn := src.GetFilename(); fn != "" {
			b, err := os.ReadFile(fn)
			if err != nil {
				return nil, fmt.Errorf("text_format_source.filename: %w", err)
			}
			s = string(b)
		}
		f, err := NewTextFormatter(s)
		if err != nil {
			return nil, fmt.Errorf("text_format_source: %w", err)
		}
		return f, nil
	case lf.GetTextFormat() != "":
		f, err := NewTextFormatter(lf.GetTextFormat())
		if err != nil {
			return nil, fmt.Errorf("text_format: %w", err)
		}
		return f, nil
	}
	return NewTextFormatter(DefaultFormat)
}

// NewTextFormatter compiles a text format string.
func NewTextFormatter(s string) (*Formatter, error) {
	p, err := parseFormat(s)
	if err != nil {
		return nil, err
	}
	return &Formatter{parts: p}, nil
}

func compileJSON(st *structpb.Struct, path string) (*jsonObj, error) {
	fields := st.GetFields()
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	o := &jsonObj{}
	for _, k := range keys {
		where := path + "." + k
		f := jsonField{key: k}
		switch v := fields[k].GetKind().(type) {
		case *structpb.Value_StringValue:
			p, err := parseFormat(v.StringValue)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			f.parts = p
		case *structpb.Value_StructValue:
			sub, err := compileJSON(v.StructValue, where)
			if err != nil {
				return nil, err
			}
			f.obj = sub
		case *structpb.Value_NumberValue:
			f.lit = strconv.FormatFloat(v.NumberValue, 'g', -1, 64)
		case *structpb.Value_BoolValue:
			f.lit = strconv.FormatBool(v.BoolValue)
		case *structpb.Value_NullValue:
			f.lit = "null"
		default:
			return nil, fmt.Errorf("%s: lists are not supported in json_format; use a string, number, bool or nested struct", where)
		}
		o.fields = append(o.fields, f)
	}
	return o, nil
}

// parseFormat compiles "%COMMAND(arg):len%" operators and literals.
func parseFormat(s string) ([]part, error) {
	var parts []part
	for len(s) > 0 {
		i := strings.IndexByte(s, '%')
		if i < 0 {
			parts = append(parts, part{kind: kLiteral, lit: s})
			break
		}
		if i > 0 {
			parts = append(parts, part{kind: kLiteral, lit: s[:i]})
		}
		s = s[i+1:]
		if strings.HasPrefix(s, "%") { // "%%" is a literal percent sign
			parts = append(parts, part{kind: kLiteral, lit: "%"})
			s = s[1:]
			continue
		}
		// The command runs to the next '%' after its argument, which may
		// itself hold '%' (START_TIME(%Y-%m-%d)).
		j := 0
		for j < len(s) && (s[j] == '_' || 'A' <= s[j] && s[j] <= 'Z' || '0' <= s[j] && s[j] <= '9') {
			j++
		}
		if j < len(s) && s[j] == '(' {
			k := strings.IndexByte(s[j:], ')')
			if k < 0 {
				return nil, fmt.Errorf("command %q: missing ')'", "%"+s)
			}
			j += k + 1
		}
		k := strings.IndexByte(s[j:], '%')
		if k < 0 {
			return nil, fmt.Errorf("unterminated command %q", "%"+s)
		}
		p, err := parseCommand(s[:j+k])
		if err != nil {
			return nil, err
		}
		parts = append(parts, p)
		s = s[j+k+1:]
	}
	return parts, nil
}

func parseCommand(cmd string) (part, error) {
	var p part
	name, arg := cmd, ""
	if k := strings.IndexByte(cmd, '('); k >= 0 {
		e := strings.IndexByte(cmd[k:], ')')
		if e < 0 {
			return p, fmt.Errorf("command %q: missing ')'", cmd)
		}
		e += k
		name, arg = cmd[:k], cmd[k+1:e]
		if rest := cmd[e+1:]; rest != "" {
			if !strings.HasPrefix(rest, ":") {
				return p, fmt.Errorf("command %q: unexpected %q", cmd, rest)
			}
			n, err := strconv.Atoi(rest[1:])
			if err != nil || n <= 0 {
				return p, fmt.Errorf("command %q: bad length %q", cmd, rest[1:])
			}
			p.maxLen = n
		}
	}
	switch name {
	case "REQ", "RESP", "TRAILER", "REQUEST_HEADER", "RESPONSE_HEADER", "RESPONSE_TRAILER":
		if arg == "" {
			return p, fmt.Errorf("command %q: a header name is required", cmd)
		}
		p.kind = map[string]kind{"REQ": kReq, "RESP": kResp, "TRAILER": kTrailer,
			"REQUEST_HEADER": kReq, "RESPONSE_HEADER": kResp, "RESPONSE_TRAILER": kTrailer}[name]
		main, alt, _ := strings.Cut(arg, "?")
		p.hdr, p.alt = headerKey(main), headerKey(alt)
		return p, nil
	case "START_TIME":
		p.kind = kStartTime
		if arg != "" {
			tf, err := parseTimeFormat(arg)
			if err != nil {
				return p, fmt.Errorf("command %q: %w", cmd, err)
			}
			p.time = tf
		}
		return p, nil
	case "ENVIRONMENT":
		if arg == "" {
			return p, fmt.Errorf("command %q: a variable name is required", cmd)
		}
		p.kind, p.lit = kEnvironment, os.Getenv(arg)
		return p, nil
	}
	k, ok := simpleCommands[name]
	if !ok {
		return p, fmt.Errorf("unknown command %q", name)
	}
	if k == kHostname {
		p.lit, _ = os.Hostname()
	}
	p.kind = k
	return p, nil
}

// timeToken is one piece of a strftime-style START_TIME format: a literal
// or a conversion.
type timeToken struct {
	lit  string
	conv byte // 'Y','m','d','H','M','S','z','s','f' (digits fractional digits), 'E' (seconds with digits)
	n    int
}

// parseTimeFormat compiles the strftime subset Envoy users write:
// %Y %m %d %H %M %S %z %s %% %[1-9]f %E[1-9]S and %T %F.
func parseTimeFormat(f string) ([]timeToken, error) {
	var out []timeToken
	for len(f) > 0 {
		i := strings.IndexByte(f, '%')
		if i < 0 {
			out = append(out, timeToken{lit: f})
			break
		}
		if i > 0 {
			out = append(out, timeToken{lit: f[:i]})
		}
		f = f[i+1:]
		if f == "" {
			return nil, errors.New("time format ends in '%'")
		}
		c := f[0]
		switch {
		case strings.IndexByte("YmdHMSzs", c) >= 0:
			out = append(out, timeToken{conv: c})
			f = f[1:]
		case c == '%':
			out = append(out, timeToken{lit: "%"})
			f = f[1:]
		case c == 'T':
			out = append(out, timeToken{conv: 'H'}, timeToken{lit: ":"}, timeToken{conv: 'M'}, timeToken{lit: ":"}, timeToken{conv: 'S'})
			f = f[1:]
		case c == 'F':
			out = append(out, timeToken{conv: 'Y'}, timeToken{lit: "-"}, timeToken{conv: 'm'}, timeToken{lit: "-"}, timeToken{conv: 'd'})
			f = f[1:]
		case '1' <= c && c <= '9' && len(f) > 1 && f[1] == 'f':
			out = append(out, timeToken{conv: 'f', n: int(c - '0')})
			f = f[2:]
		case c == 'E' && len(f) > 2 && '1' <= f[1] && f[1] <= '9' && f[2] == 'S':
			out = append(out, timeToken{conv: 'E', n: int(f[1] - '0')})
			f = f[3:]
		default:
			return nil, fmt.Errorf("time format: %%%c is not supported", c)
		}
	}
	return out, nil
}

func appendTime(b []byte, t time.Time, toks []timeToken) []byte {
	pad := func(b []byte, v, w int) []byte {
		s := strconv.Itoa(v)
		for i := len(s); i < w; i++ {
			b = append(b, '0')
		}
		return append(b, s...)
	}
	frac := func(b []byte, n int) []byte {
		ns := strconv.Itoa(t.Nanosecond() + 1e9)[1:] // nine digits
		return append(b, ns[:n]...)
	}
	for _, tk := range toks {
		switch tk.conv {
		case 0:
			b = append(b, tk.lit...)
		case 'Y':
			b = pad(b, t.Year(), 4)
		case 'm':
			b = pad(b, int(t.Month()), 2)
		case 'd':
			b = pad(b, t.Day(), 2)
		case 'H':
			b = pad(b, t.Hour(), 2)
		case 'M':
			b = pad(b, t.Minute(), 2)
		case 'S':
			b = pad(b, t.Second(), 2)
		case 'z':
			b = t.AppendFormat(b, "-0700")
		case 's':
			b = strconv.AppendInt(b, t.Unix(), 10)
		case 'f':
			b = frac(b, tk.n)
		case 'E':
			b = pad(b, t.Second(), 2)
			b = append(b, '.')
			b = frac(b, tk.n)
		}
	}
	return b
}

func headerKey(h string) string {
	if h == "" || h[0] == ':' {
		return strings.ToLower(h)
	}
	return http.CanonicalHeaderKey(h)
}

// Append renders e's log line into b.
func (f *Formatter) Append(b []byte, e *Entry) []byte {
	if f.json == nil {
		for i := range f.parts {
			b = f.parts[i].appendText(b, e)
		}
		return b
	}
	b = f.json.append(b, e, f.omitEmpty)
	return append(b, '\n')
}

func (o *jsonObj) append(b []byte, e *Entry, omitEmpty bool) []byte {
	b = append(b, '{')
	first := true
	for i := range o.fields {
		fld := &o.fields[i]
		mark := len(b)
		if !first {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, fld.key)
		b = append(b, ':')
		switch {
		case fld.obj != nil:
			b = fld.obj.append(b, e, omitEmpty)
		case fld.lit != "":
			b = append(b, fld.lit...)
		case len(fld.parts) == 1 && fld.parts[0].kind != kLiteral:
			// A lone operator keeps its type: numbers stay numbers and a
			// missing value is null, as in Envoy's JSON logs.
			p := &fld.parts[0]
			v := p.value(e)
			switch {
			case v == "":
				if omitEmpty {
					b = b[:mark]
					continue
				}
				b = append(b, "null"...)
			case p.numeric():
				b = append(b, v...)
			default:
				b = strconv.AppendQuote(b, v)
			}
		default:
			var tmp []byte
			for j := range fld.parts {
				tmp = fld.parts[j].appendText(tmp, e)
			}
			b = strconv.AppendQuote(b, string(tmp))
		}
		first = false
	}
	return append(b, '}')
}

func (p *part) numeric() bool {
	switch p.kind {
	case kResponseCode, kBytesReceived, kBytesSent, kDuration, kRequestDuration, kResponseDuration, kAttempts, kGRPCStatus, kConnectionID:
		return true
	}
	return false
}

func (p *part) appendText(b []byte, e *Entry) []byte {
	if p.kind == kLiteral {
		return append(b, p.lit...)
	}
	v := p.value(e)
	if v == "" {
		return append(b, '-')
	}
	return append(b, v...)
}

// value is the operator's value, "" when not available.
func (p *part) value(e *Entry) string {
	var v string
	switch p.kind {
	case kStartTime:
		if p.time != nil {
			v = string(appendTime(nil, e.Start.UTC(), p.time))
		} else {
			v = e.Start.UTC().Format("2006-01-02T15:04:05.000Z")
		}
	case kReq:
		if e.Req != nil {
			v = reqHeader(e.Req, p.hdr)
			if v == "" && p.alt != "" {
				v = reqHeader(e.Req, p.alt)
			}
		}
	case kResp:
		v = firstValue(e.RespHeader, p.hdr)
		if v == "" && p.alt != "" {
			v = firstValue(e.RespHeader, p.alt)
		}
	case kTrailer:
		v = firstValue(e.RespHeader, http.TrailerPrefix+p.hdr)
		if v == "" && p.alt != "" {
			v = firstValue(e.RespHeader, http.TrailerPrefix+p.alt)
		}
	case kResponseCode:
		v = strconv.Itoa(e.Status) // 0 for TCP, as in Envoy
	case kResponseFlags:
		v = e.Flags.String()
	case kBytesReceived:
		v = strconv.FormatInt(e.BytesReceived, 10)
	case kBytesSent:
		v = strconv.FormatInt(e.BytesSent, 10)
	case kDuration:
		v = strconv.FormatInt(e.Duration.Milliseconds(), 10)
	case kRequestDuration:
		if e.Req != nil {
			v = strconv.FormatInt(e.Duration.Milliseconds(), 10)
		}
	case kResponseDuration:
		if !e.ResponseStarted.IsZero() {
			v = strconv.FormatInt(e.ResponseStarted.Sub(e.Start).Milliseconds(), 10)
		}
	case kUpstreamHost:
		v = e.UpstreamHost
	case kUpstreamHostNoPort:
		v = hostOnly(e.UpstreamHost)
	case kUpstreamCluster:
		v = e.UpstreamCluster
	case kUpstreamLocal:
		v = e.UpstreamLocalAddress
	case kUpstreamLocalNoPort:
		v = hostOnly(e.UpstreamLocalAddress)
	case kUpstreamTransportFailure:
		v = e.UpstreamTransportFailed
	case kDownstreamRemote, kDownstreamRemoteNoPort:
		if e.Conn != nil && e.Conn.RemoteAddr != nil {
			v = e.Conn.RemoteAddr.String()
			if p.kind == kDownstreamRemoteNoPort {
				v = hostOnly(v)
			}
		}
	case kDownstreamLocal, kDownstreamLocalNoPort:
		if e.Conn != nil {
			if a := e.Conn.DestinationAddr(); a != nil {
				v = a.String()
				if p.kind == kDownstreamLocalNoPort {
					v = hostOnly(v)
				}
			}
		}
	case kProtocol:
		if r := e.Req; r != nil {
			v = r.Proto
			if r.ProtoMajor == 2 {
				v = "HTTP/2" // Envoy's spelling
			}
		}
	case kPeerURISAN:
		if e.Conn != nil {
			if t := e.Conn.TLS; t != nil && len(t.PeerCertificates) > 0 && len(t.PeerCertificates[0].URIs) > 0 {
				v = t.PeerCertificates[0].URIs[0].String()
			}
		}
	case kLocalURISAN:
		// The local certificate is not kept on the connection state.
	case kTLSVersion:
		if e.Conn != nil && e.Conn.TLS != nil {
			v = tlsVersion(e.Conn.TLS.Version)
		}
	case kAttempts:
		if e.Attempts > 0 {
			v = strconv.Itoa(e.Attempts)
		}
	case kSNI:
		if e.Conn != nil {
			v = e.Conn.SNI
		}
	case kRouteName:
		v = e.RouteName
	case kResponseCodeDetails:
		v = e.CodeDetails()
	case kTerminationDetails:
		v = e.TerminationDetails
	case kHostname, kEnvironment:
		v = p.lit
	case kTraceID:
		v = e.TraceID
	case kGRPCStatus:
		v = firstValue(e.RespHeader, "Grpc-Status")
		if v == "" {
			v = firstValue(e.RespHeader, http.TrailerPrefix+"Grpc-Status")
		}
	}
	if p.maxLen > 0 && len(v) > p.maxLen {
		v = v[:p.maxLen]
	}
	return v
}

func tlsVersion(v uint16) string {
	switch v {
	case 0x0301:
		return "TLSv1"
	case 0x0302:
		return "TLSv1.1"
	case 0x0303:
		return "TLSv1.2"
	case 0x0304:
		return "TLSv1.3"
	}
	return ""
}

func reqHeader(r *http.Request, key string) string {
	switch key {
	case ":method":
		return r.Method
	case ":path":
		if r.URL == nil {
			return ""
		}
		return r.URL.RequestURI()
	case ":authority":
		return r.Host
	case ":scheme":
		return firstValue(r.Header, "X-Forwarded-Proto")
	case ":protocol":
		return r.Proto
	}
	return firstValue(r.Header, key)
}

func firstValue(h map[string][]string, k string) string {
	if v := h[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func hostOnly(hostport string) string {
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 && !strings.HasSuffix(hostport, "]") {
		h := hostport[:i]
		return strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	}
	return hostport
}
