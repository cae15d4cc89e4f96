package hcm

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// DefaultLogFormat is Envoy's default access log format.
const DefaultLogFormat = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" " +
	"%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% " +
	"%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" " +
	"\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n"

const (
	fileLogType   = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
	stdoutLogType = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
	stderrLogType = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog"
)

// accessLogger is one compiled access_log entry.
type accessLogger struct {
	f *formatter
	w *logWriter
}

func newAccessLogger(al *accesslogv3.AccessLog) (*accessLogger, error) {
	if al.GetFilter() != nil {
		return nil, errors.New("filter: access log filters are not supported")
	}
	tc := al.GetTypedConfig()
	var lf *corev3.SubstitutionFormatString
	var w *logWriter
	switch tc.GetTypeUrl() {
	case fileLogType:
		fl := &filev3.FileAccessLog{}
		if err := tc.UnmarshalTo(fl); err != nil {
			return nil, fmt.Errorf("typed_config: %w", err)
		}
		if fl.GetPath() == "" {
			return nil, errors.New("typed_config.path: must not be empty")
		}
		switch {
		case fl.GetLogFormat() != nil:
			lf = fl.GetLogFormat()
		case fl.GetFormat() != "":
			lf = &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: fl.GetFormat()}}
		case fl.GetJsonFormat() != nil:
			lf = &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: fl.GetJsonFormat()}}
		}
		var err error
		if w, err = fileWriter(fl.GetPath()); err != nil {
			return nil, fmt.Errorf("typed_config.path: %w", err)
		}
	case stdoutLogType, stderrLogType:
		sl := &streamv3.StdoutAccessLog{}
		if tc.GetTypeUrl() == stdoutLogType {
			if err := tc.UnmarshalTo(sl); err != nil {
				return nil, fmt.Errorf("typed_config: %w", err)
			}
			w, _ = fileWriter("/dev/stdout")
		} else {
			el := &streamv3.StderrAccessLog{}
			if err := tc.UnmarshalTo(el); err != nil {
				return nil, fmt.Errorf("typed_config: %w", err)
			}
			sl.AccessLogFormat = &streamv3.StdoutAccessLog_LogFormat{LogFormat: el.GetLogFormat()}
			w, _ = fileWriter("/dev/stderr")
		}
		lf = sl.GetLogFormat()
	default:
		return nil, fmt.Errorf("typed_config: unsupported access logger %q (use envoy.access_loggers.file or envoy.access_loggers.stdout)", tc.GetTypeUrl())
	}
	f, err := newFormatter(lf)
	if err != nil {
		return nil, fmt.Errorf("typed_config.log_format: %w", err)
	}
	return &accessLogger{f: f, w: w}, nil
}

func (l *accessLogger) log(s *Stream) {
	bp := logBufPool.Get().(*[]byte)
	*bp = l.f.append((*bp)[:0], s)
	l.w.ch <- logMsg{b: bp}
}

func (l *accessLogger) flush() { l.w.flush() }

var logBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// logWriter owns one output file; its goroutine does the writes so a slow
// disk never holds a request.
type logWriter struct{ ch chan logMsg }

type logMsg struct {
	b   *[]byte
	ack chan struct{}
}

var (
	writersMu sync.Mutex
	writers   = map[string]*logWriter{}
)

// fileWriter returns the process-wide writer of path, opening the file in
// append mode on first use; loggers of several listeners share it.
func fileWriter(path string) (*logWriter, error) {
	writersMu.Lock()
	defer writersMu.Unlock()
	if w, ok := writers[path]; ok {
		return w, nil
	}
	var out io.Writer
	switch path {
	case "/dev/stdout":
		out = os.Stdout
	case "/dev/stderr":
		out = os.Stderr
	default:
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		out = f
	}
	w := &logWriter{ch: make(chan logMsg, 4096)}
	writers[path] = w
	go w.run(out)
	return w, nil
}

func (w *logWriter) run(out io.Writer) {
	bw := bufio.NewWriterSize(out, 64<<10)
	for m := range w.ch {
		if m.b != nil {
			bw.Write(*m.b)
			logBufPool.Put(m.b)
		}
		if m.ack != nil || len(w.ch) == 0 {
			bw.Flush()
		}
		if m.ack != nil {
			close(m.ack)
		}
	}
}

// flush waits until everything logged so far is written.
func (w *logWriter) flush() {
	ack := make(chan struct{})
	w.ch <- logMsg{ack: ack}
	<-ack
}

// formatter is a compiled substitution format string.
type formatter struct {
	parts []fmtPart // text format
	json  []jsonField
}

type jsonField struct {
	key   string
	parts []fmtPart
}

type fmtKind uint8

const (
	fkLiteral fmtKind = iota
	fkStartTime
	fkReq
	fkResp
	fkTrailer
	fkResponseCode
	fkResponseFlags
	fkBytesReceived
	fkBytesSent
	fkDuration
	fkUpstreamHost
	fkUpstreamCluster
	fkDownstreamRemote
	fkDownstreamRemoteNoPort
	fkDownstreamLocal
	fkDownstreamLocalNoPort
	fkProtocol
	fkSNI
	fkRouteName
	fkResponseCodeDetails
	fkAttempts
	fkPeerURISAN
	fkDash
)

type fmtPart struct {
	kind     fmtKind
	lit      string
	hdr, alt string // REQ/RESP header keys (canonical, or pseudo ":path")
	maxLen   int
	time     []timeToken // START_TIME's format; nil is Envoy's default
}

var simpleCommands = map[string]fmtKind{
	"START_TIME": fkStartTime, "RESPONSE_CODE": fkResponseCode, "RESPONSE_FLAGS": fkResponseFlags,
	"BYTES_RECEIVED": fkBytesReceived, "BYTES_SENT": fkBytesSent, "DURATION": fkDuration,
	"UPSTREAM_HOST": fkUpstreamHost, "UPSTREAM_CLUSTER": fkUpstreamCluster, "UPSTREAM_CLUSTER_RAW": fkUpstreamCluster,
	"DOWNSTREAM_REMOTE_ADDRESS": fkDownstreamRemote, "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": fkDownstreamRemoteNoPort,
	"DOWNSTREAM_DIRECT_REMOTE_ADDRESS": fkDownstreamRemote, "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT": fkDownstreamRemoteNoPort,
	"DOWNSTREAM_LOCAL_ADDRESS": fkDownstreamLocal, "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT": fkDownstreamLocalNoPort,
	"PROTOCOL": fkProtocol, "REQUESTED_SERVER_NAME": fkSNI, "ROUTE_NAME": fkRouteName,
	"RESPONSE_CODE_DETAILS": fkResponseCodeDetails, "DOWNSTREAM_PEER_URI_SAN": fkPeerURISAN,
	// Known to Envoy but not tracked here: rendered as "-".
	"CONNECTION_TERMINATION_DETAILS": fkDash, "UPSTREAM_TRANSPORT_FAILURE_REASON": fkDash,
	"UPSTREAM_LOCAL_ADDRESS": fkDash, "UPSTREAM_REQUEST_ATTEMPT_COUNT": fkAttempts,
}

func newFormatter(lf *corev3.SubstitutionFormatString) (*formatter, error) {
	if lf == nil {
		p, err := parseFormat(DefaultLogFormat)
		return &formatter{parts: p}, err
	}
	switch {
	case lf.GetJsonFormat() != nil:
		f := &formatter{}
		fields := lf.GetJsonFormat().GetFields()
		keys := make([]string, 0, len(fields))
		for k := range fields {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			sv, ok := fields[k].GetKind().(*structpb.Value_StringValue)
			if !ok {
				return nil, fmt.Errorf("json_format.%s: only string values are supported", k)
			}
			p, err := parseFormat(sv.StringValue)
			if err != nil {
				return nil, fmt.Errorf("json_format.%s: %w", k, err)
			}
			f.json = append(f.json, jsonField{key: k, parts: p})
		}
		return f, nil
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
		p, err := parseFormat(s)
		if err != nil {
			return nil, fmt.Errorf("text_format_source: %w", err)
		}
		return &formatter{parts: p}, nil
	case lf.GetTextFormat() != "":
		p, err := parseFormat(lf.GetTextFormat())
		if err != nil {
			return nil, fmt.Errorf("text_format: %w", err)
		}
		return &formatter{parts: p}, nil
	}
	p, err := parseFormat(DefaultLogFormat)
	return &formatter{parts: p}, err
}

// parseFormat compiles "%COMMAND(arg):len%" operators and literals.
func parseFormat(s string) ([]fmtPart, error) {
	var parts []fmtPart
	for len(s) > 0 {
		i := strings.IndexByte(s, '%')
		if i < 0 {
			parts = append(parts, fmtPart{kind: fkLiteral, lit: s})
			break
		}
		if i > 0 {
			parts = append(parts, fmtPart{kind: fkLiteral, lit: s[:i]})
		}
		s = s[i+1:]
		if strings.HasPrefix(s, "%") { // "%%" is a literal percent sign
			parts = append(parts, fmtPart{kind: fkLiteral, lit: "%"})
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

func parseCommand(cmd string) (fmtPart, error) {
	var p fmtPart
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
	case "REQ", "RESP", "TRAILER":
		if arg == "" {
			return p, fmt.Errorf("command %q: a header name is required", cmd)
		}
		p.kind = map[string]fmtKind{"REQ": fkReq, "RESP": fkResp, "TRAILER": fkTrailer}[name]
		main, alt, _ := strings.Cut(arg, "?")
		p.hdr, p.alt = headerKey(main), headerKey(alt)
		return p, nil
	case "START_TIME":
		p.kind = fkStartTime
		if arg != "" {
			tf, err := parseTimeFormat(arg)
			if err != nil {
				return p, fmt.Errorf("command %q: %w", cmd, err)
			}
			p.time = tf
		}
		return p, nil
	}
	k, ok := simpleCommands[name]
	if !ok {
		return p, fmt.Errorf("unknown command %q", name)
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

// append renders the stream's log line into b.
func (f *formatter) append(b []byte, s *Stream) []byte {
	if f.json == nil {
		for i := range f.parts {
			b = f.parts[i].appendText(b, s)
		}
		return b
	}
	b = append(b, '{')
	for i, fld := range f.json {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, fld.key)
		b = append(b, ':')
		if len(fld.parts) == 1 && fld.parts[0].kind != fkLiteral {
			p := &fld.parts[0]
			v := p.value(s)
			switch {
			case v == "":
				b = append(b, "null"...)
			case p.numeric():
				b = append(b, v...)
			default:
				b = strconv.AppendQuote(b, v)
			}
			continue
		}
		var tmp []byte
		for j := range fld.parts {
			tmp = fld.parts[j].appendText(tmp, s)
		}
		b = strconv.AppendQuote(b, string(tmp))
	}
	return append(b, '}', '\n')
}

func (p *fmtPart) numeric() bool {
	switch p.kind {
	case fkResponseCode, fkBytesReceived, fkBytesSent, fkDuration:
		return true
	}
	return false
}

func (p *fmtPart) appendText(b []byte, s *Stream) []byte {
	if p.kind == fkLiteral {
		return append(b, p.lit...)
	}
	v := p.value(s)
	if v == "" {
		return append(b, '-')
	}
	return append(b, v...)
}

// value is the operator's value, "" when not available.
func (p *fmtPart) value(s *Stream) string {
	var v string
	switch p.kind {
	case fkStartTime:
		if p.time != nil {
			v = string(appendTime(nil, s.Start.UTC(), p.time))
		} else {
			v = s.Start.UTC().Format("2006-01-02T15:04:05.000Z")
		}
	case fkReq:
		v = reqHeader(s, p.hdr)
		if v == "" && p.alt != "" {
			v = reqHeader(s, p.alt)
		}
	case fkResp:
		h := s.w.Header()
		v = firstValue(h, p.hdr)
		if v == "" && p.alt != "" {
			v = firstValue(h, p.alt)
		}
	case fkTrailer:
		// The router sets trailers with net/http's TrailerPrefix.
		h := s.w.Header()
		v = firstValue(h, http.TrailerPrefix+p.hdr)
		if v == "" && p.alt != "" {
			v = firstValue(h, http.TrailerPrefix+p.alt)
		}
	case fkResponseCode:
		v = strconv.Itoa(s.status)
	case fkResponseFlags:
		v = s.Flags.String()
	case fkBytesReceived:
		v = strconv.FormatInt(s.BytesReceived(), 10)
	case fkBytesSent:
		v = strconv.FormatInt(s.bytesSent, 10)
	case fkDuration:
		v = strconv.FormatInt(time.Since(s.Start).Milliseconds(), 10)
	case fkUpstreamHost:
		v = s.UpstreamHost
	case fkUpstreamCluster:
		v = s.UpstreamCluster
	case fkDownstreamRemote, fkDownstreamRemoteNoPort:
		if s.Conn.RemoteAddr != nil {
			v = s.Conn.RemoteAddr.String()
			if p.kind == fkDownstreamRemoteNoPort {
				v = hostOnly(v)
			}
		}
	case fkDownstreamLocal, fkDownstreamLocalNoPort:
		if a := s.Conn.DestinationAddr(); a != nil {
			v = a.String()
			if p.kind == fkDownstreamLocalNoPort {
				v = hostOnly(v)
			}
		}
	case fkProtocol:
		v = s.Req.Proto
		if s.Req.ProtoMajor == 2 {
			v = "HTTP/2" // Envoy's spelling
		}
	case fkPeerURISAN:
		if t := s.Conn.TLS; t != nil && len(t.PeerCertificates) > 0 && len(t.PeerCertificates[0].URIs) > 0 {
			v = t.PeerCertificates[0].URIs[0].String()
		}
	case fkAttempts:
		if s.attempts > 0 {
			v = strconv.Itoa(s.attempts)
		}
	case fkSNI:
		v = s.Conn.SNI
	case fkRouteName:
		if s.Route != nil {
			v = s.Route.Name
		}
	case fkResponseCodeDetails:
		if s.UpstreamHost != "" && s.Flags == 0 {
			v = "via_upstream"
		}
	}
	if p.maxLen > 0 && len(v) > p.maxLen {
		v = v[:p.maxLen]
	}
	return v
}

func reqHeader(s *Stream, key string) string {
	r := s.Req
	switch key {
	case ":method":
		return r.Method
	case ":path":
		return r.URL.RequestURI()
	case ":authority":
		return r.Host
	case ":scheme":
		return firstValue(r.Header, hdrXFP)
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
