package hcm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// This file is the HTTP/1.0 and 1.1 server codec. It replaces net/http's
// server for downstream HTTP/1 connections: the handler runs on the
// connection's goroutine, requests are parsed without textproto, and a
// response goes out with one write when it fits the buffer.

const (
	h1BufSize = 4 << 10
	// h1DrainLimit is how much unread request body is discarded after a
	// response so the connection can be reused; beyond it we close.
	h1DrainLimit = 256 << 10
	// h1WatchAfter is how long a request must be in flight before the
	// connection is watched for the client going away. Watching costs a
	// goroutine and a read, which fast requests should not pay.
	h1WatchAfter = 10 * time.Millisecond
	// h1DefaultHeaderTimeout bounds reading one request's headers once its
	// first byte has arrived, when request_headers_timeout is unset.
	h1DefaultHeaderTimeout = time.Minute
)

var (
	h1ReaderPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, h1BufSize) }}
	h1WriterPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, h1BufSize) }}
	// aLongTimeAgo is a read deadline that makes a pending read return.
	aLongTimeAgo = time.Unix(1, 0)
)

// h1 connection states, for Drain to tell idle connections from busy ones.
const (
	h1Active int32 = iota
	h1Idle
	h1Closed
)

// h1conn is one downstream HTTP/1 connection.
type h1conn struct {
	cm    *ConnectionManager
	nc    net.Conn
	ci    *core.ConnInfo
	base  context.Context
	raddr string
	state atomic.Int32

	br *bufio.Reader
	bw *bufio.Writer
	cr connReader
	rw h1response

	// mu guards the watch state: whether a request is in flight, whether
	// its body is done, and the background read that notices a client
	// going away while the handler waits.
	mu        sync.Mutex
	inFlight  bool
	bodyDone  bool
	wantWatch bool
	watching  bool
	watchDone *sync.Cond
	cancel    context.CancelFunc
	timer     *time.Timer
	hijacked  bool

	body *h1body // the current request's body, nil when none
}

// connReader sits under the bufio.Reader; it hands back the byte the
// background read may have taken.
type connReader struct {
	c       *h1conn
	hasByte bool
	b       [1]byte
	err     error // sticky error from the background read (EOF)
}

func (r *connReader) Read(p []byte) (int, error) {
	c := r.c
	c.mu.Lock()
	if r.hasByte {
		r.hasByte = false
		c.mu.Unlock()
		if len(p) == 0 {
			return 0, nil
		}
		p[0] = r.b[0]
		return 1, nil
	}
	if err := r.err; err != nil {
		c.mu.Unlock()
		return 0, err
	}
	c.mu.Unlock()
	return c.nc.Read(p)
}

// serveH1 serves HTTP/1 requests on nc until the connection closes, the
// client or the proxy asks for close, or the manager drains it while idle.
func (cm *ConnectionManager) serveH1(nc net.Conn, ci *core.ConnInfo) {
	c := &h1conn{cm: cm, nc: nc, ci: ci, raddr: nc.RemoteAddr().String()}
	c.base = context.WithValue(context.Background(), connInfoKey{}, ci)
	c.cr.c = c
	c.watchDone = sync.NewCond(&c.mu)
	c.br = h1ReaderPool.Get().(*bufio.Reader)
	c.br.Reset(&c.cr)
	c.bw = h1WriterPool.Get().(*bufio.Writer)
	c.bw.Reset(nc)
	c.rw.c = c
	c.rw.header = make(http.Header, 8)
	c.state.Store(h1Active)
	cm.trackH1(c, true)
	defer func() {
		cm.trackH1(c, false)
		if c.timer != nil {
			c.timer.Stop()
		}
		if c.hijacked {
			return // the handler owns the connection and its buffers
		}
		nc.Close()
		if c.body != nil {
			// An upstream transport may still be reading the last body:
			// once the close has failed its read, Close waits it out, so
			// the pooled reader is no longer in use.
			c.body.Close()
		}
		c.br.Reset(nil)
		h1ReaderPool.Put(c.br)
		c.bw.Reset(nil)
		h1WriterPool.Put(c.bw)
	}()
	for first := true; c.serveOne(first); first = false {
	}
}

// serveOne reads and answers one request; it reports whether the
// connection may carry another.
func (c *h1conn) serveOne(first bool) bool {
	cm := c.cm
	if c.br.Buffered() == 0 {
		if !c.state.CompareAndSwap(h1Active, h1Idle) {
			return false
		}
		if !first && cm.draining.Load() {
			// A draining manager still answers a new connection's first
			// request (with Connection: close), but keeps none idle.
			return false
		}
		if cm.h1idle > 0 {
			c.nc.SetReadDeadline(time.Now().Add(cm.h1idle))
		}
		_, err := c.br.Peek(1)
		if !c.state.CompareAndSwap(h1Idle, h1Active) || err != nil {
			return false
		}
	}
	if !c.headersBuffered() {
		// Bound the wait for the rest of the headers, which the idle
		// deadline does not.
		c.nc.SetReadDeadline(time.Now().Add(cm.h1hdrTimeout))
	}
	var parsed http.Request
	perr := c.readRequest(&parsed)
	c.nc.SetReadDeadline(time.Time{})
	if perr != nil {
		if perr.code != 0 {
			c.writeError(perr.code)
		}
		return false
	}
	ctx, cancel := context.WithCancel(c.base)
	// WithContext makes the one heap copy of the parsed request.
	req := parsed.WithContext(ctx)
	w := &c.rw
	w.reset(req)
	body, _ := req.Body.(*h1body)
	c.body = body
	c.mu.Lock()
	c.inFlight = true
	c.bodyDone = body == nil
	c.wantWatch = false
	c.cancel = cancel
	c.mu.Unlock()
	if c.timer == nil {
		c.timer = time.AfterFunc(h1WatchAfter, c.startWatch)
	} else {
		c.timer.Reset(h1WatchAfter)
	}

	ok := c.runHandler(w, req)
	cancel()
	if c.hijacked {
		return false
	}
	c.stopWatch()
	if !ok {
		// The handler aborted the stream: send what was written, then
		// close so the client sees the response cut short.
		c.bw.Flush()
		return false
	}
	keep := w.finish()
	if body != nil && !body.closeAndDrain() {
		keep = false
	}
	if c.bw.Flush() != nil {
		return false
	}
	return keep
}

// runHandler runs the connection manager for one request; false means it
// panicked (http.ErrAbortHandler is how hcm resets a stream).
func (c *h1conn) runHandler(w *h1response, req *http.Request) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			ok = false
		}
	}()
	c.cm.ServeHTTP(w, req)
	return true
}

// startWatch runs (on a timer goroutine) once a request has been in flight
// for h1WatchAfter; it reads the connection to notice the client closing,
// as Envoy resets the upstream request when the downstream goes away.
func (c *h1conn) startWatch() {
	c.mu.Lock()
	if !c.inFlight || c.watching || c.hijacked {
		c.mu.Unlock()
		return
	}
	if !c.bodyDone {
		// The handler still reads the body from the connection; watch
		// once it is done.
		c.wantWatch = true
		c.mu.Unlock()
		return
	}
	c.watching = true
	c.mu.Unlock()
	c.watch()
}

// onBodyEOF starts a watch deferred until the request body was read.
func (c *h1conn) onBodyEOF() {
	c.mu.Lock()
	c.bodyDone = true
	start := c.wantWatch && c.inFlight && !c.watching && !c.hijacked
	if start {
		c.watching = true
	}
	c.mu.Unlock()
	if start {
		go c.watch()
	}
}

// watch blocks in a one-byte read: EOF or an error other than our own
// deadline means the client is gone, so the request is cancelled. A byte
// (a pipelined request) is kept for the next read.
func (c *h1conn) watch() {
	n, err := c.nc.Read(c.cr.b[:])
	c.mu.Lock()
	if n == 1 {
		c.cr.hasByte = true
	}
	var ne net.Error
	if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
		c.cr.err = err
		if c.inFlight && c.cancel != nil {
			c.cancel()
		}
	}
	c.watching = false
	c.watchDone.Broadcast()
	c.mu.Unlock()
}

// stopWatch ends the request's watch: the timer is stopped and a pending
// background read is cut short by a past deadline and waited for.
func (c *h1conn) stopWatch() {
	c.timer.Stop()
	c.mu.Lock()
	c.inFlight = false
	c.cancel = nil
	if c.watching {
		c.nc.SetReadDeadline(aLongTimeAgo)
		for c.watching {
			c.watchDone.Wait()
		}
		c.nc.SetReadDeadline(time.Time{})
	}
	c.mu.Unlock()
}

// h1Error is a request the codec rejects; code 0 closes without a reply.
type h1Error struct{ code int }

func (c *h1conn) writeError(code int) {
	if code == http.StatusRequestTimeout {
		c.nc.SetWriteDeadline(time.Now().Add(time.Second)) // the client may not be reading either
	}
	text := strconv.Itoa(code) + " " + http.StatusText(code)
	c.bw.WriteString("HTTP/1.1 " + text + "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: " +
		strconv.Itoa(len(text)) + "\r\n\r\n" + text)
	c.bw.Flush()
	// Counted as requests, as Envoy counts its codec errors' local replies.
	st := c.cm.cfg.stats
	st.rqTotal.Inc()
	st.rqHTTP1.Inc()
	st.rq4xx.Inc()
}

// readLine returns the next line without its CRLF; the slice is valid
// until the next read. Lines longer than the buffer are gathered in
// scratch. *budget is the header bytes still allowed.
func (c *h1conn) readLine(scratch *[]byte, budget *int) ([]byte, *h1Error) {
	line, err := c.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		*scratch = append((*scratch)[:0], line...)
		for err == bufio.ErrBufferFull {
			if len(*scratch) > *budget {
				return nil, &h1Error{http.StatusRequestHeaderFieldsTooLarge}
			}
			line, err = c.br.ReadSlice('\n')
			*scratch = append(*scratch, line...)
		}
		line = *scratch
	}
	*budget -= len(line)
	if *budget < 0 {
		return nil, &h1Error{http.StatusRequestHeaderFieldsTooLarge}
	}
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			// Envoy answers request_headers_timeout with 408.
			return nil, &h1Error{http.StatusRequestTimeout}
		}
		// A closed connection: nobody is left to answer.
		return nil, &h1Error{}
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

var (
	bad     = &h1Error{http.StatusBadRequest}
	methods = map[string]string{"GET": "GET", "POST": "POST", "PUT": "PUT", "DELETE": "DELETE", "HEAD": "HEAD",
		"OPTIONS": "OPTIONS", "PATCH": "PATCH", "CONNECT": "CONNECT", "TRACE": "TRACE"}
)

// headersBuffered reports whether a whole header block is already in the
// read buffer, the common case, where no header deadline is needed.
func (c *h1conn) headersBuffered() bool {
	b, _ := c.br.Peek(c.br.Buffered())
	return bytes.Contains(b, crlfcrlf)
}

var crlfcrlf = []byte("\r\n\r\n")

// readRequest parses a request line and header block into r with
// net/http's conventions: canonical header keys, Host moved out of the
// header map, Transfer-Encoding into TransferEncoding.
func (c *h1conn) readRequest(r *http.Request) *h1Error {
	budget := c.cm.h1maxHdr
	var scratch []byte
	line, perr := c.readLine(&scratch, &budget)
	for perr == nil && len(line) == 0 {
		// RFC 9112 2.2: ignore at least one empty line before a request.
		line, perr = c.readLine(&scratch, &budget)
	}
	if perr != nil {
		return perr
	}
	sp1 := indexByte(line, ' ')
	if sp1 <= 0 {
		return bad
	}
	rest := line[sp1+1:]
	sp2 := indexByte(rest, ' ')
	if sp2 <= 0 {
		return bad
	}
	if m, ok := methods[string(line[:sp1])]; ok {
		r.Method = m
	} else {
		if !validToken(line[:sp1]) {
			return bad
		}
		r.Method = string(line[:sp1])
	}
	switch string(rest[sp2+1:]) {
	case "HTTP/1.1":
		r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
	case "HTTP/1.0":
		r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.0", 1, 0
	default:
		return bad
	}
	r.RequestURI = string(rest[:sp2])
	if r.Method == http.MethodConnect && !strings.HasPrefix(r.RequestURI, "/") {
		r.URL = &url.URL{Host: r.RequestURI}
	} else {
		u, err := url.ParseRequestURI(r.RequestURI)
		if err != nil {
			return bad
		}
		r.URL = u
	}

	h := make(http.Header, 16)
	vals := make([]string, 0, 16)
	for {
		line, perr = c.readLine(&scratch, &budget)
		if perr != nil {
			return perr
		}
		if len(line) == 0 {
			break
		}
		colon := indexByte(line, ':')
		if colon <= 0 {
			return bad
		}
		key, ok := canonicalKey(line[:colon])
		if !ok {
			return bad
		}
		v := trimOWS(line[colon+1:])
		if !validValue(v) {
			return bad
		}
		vals = append(vals, string(v))
		if prev, ok := h[key]; ok {
			h[key] = append(prev, vals[len(vals)-1])
		} else {
			h[key] = vals[len(vals)-1 : len(vals) : len(vals)]
		}
	}
	r.Header = h
	r.RemoteAddr = c.raddr
	r.TLS = c.ci.TLS

	hosts := h["Host"]
	if len(hosts) > 1 || (r.ProtoMinor == 1 && len(hosts) == 0) {
		return bad
	}
	r.Host = r.URL.Host
	if r.Host == "" && len(hosts) == 1 {
		r.Host = hosts[0]
	}
	delete(h, "Host")

	r.Close = shouldClose(r.ProtoMinor, h[hdrConnection])
	return c.readBodyFraming(r)
}

// readBodyFraming sets ContentLength, TransferEncoding and Body.
func (c *h1conn) readBodyFraming(r *http.Request) *h1Error {
	h := r.Header
	te := h["Transfer-Encoding"]
	cl := h[hdrContentLength]
	if len(te) > 0 && r.ProtoMinor == 1 {
		if len(te) != 1 || !strings.EqualFold(te[0], "chunked") || len(cl) > 0 {
			// Envoy rejects other codings and chunked with a length
			// (request smuggling) unless allow_chunked_length is set.
			return bad
		}
		delete(h, "Transfer-Encoding")
		r.TransferEncoding = []string{"chunked"}
		r.ContentLength = -1
		r.Body = c.newBody(r, -1)
		return nil
	}
	if len(cl) > 0 {
		for _, v := range cl[1:] {
			if v != cl[0] {
				return bad
			}
		}
		n, err := strconv.ParseInt(cl[0], 10, 64)
		if err != nil || n < 0 || cl[0][0] == '+' {
			return bad
		}
		r.ContentLength = n
		if n > 0 {
			r.Body = c.newBody(r, n)
			return nil
		}
	}
	r.Body = http.NoBody
	return nil
}

func shouldClose(minor int, conn []string) bool {
	keepAlive, closeTok := false, false
	for _, v := range conn {
		for _, f := range strings.Split(v, ",") {
			f = strings.TrimSpace(f)
			switch {
			case strings.EqualFold(f, "close"):
				closeTok = true
			case strings.EqualFold(f, "keep-alive"):
				keepAlive = true
			}
		}
	}
	if minor == 0 {
		return closeTok || !keepAlive
	}
	return closeTok
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// tokenTable marks RFC 9110 token characters.
var tokenTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func validToken[T string | []byte](b T) bool {
	if len(b) == 0 {
		return false
	}
	for i := 0; i < len(b); i++ {
		if !tokenTable[b[i]] {
			return false
		}
	}
	return true
}

func validValue(b []byte) bool {
	for _, c := range b {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// commonKeys interns canonical names of frequent headers so parsing them
// allocates no key string.
var commonKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Cache-Control",
		"Connection", "Content-Length", "Content-Type", "Cookie", "Expect", "Host", "Keep-Alive", "Origin",
		"Referer", "Te", "Transfer-Encoding", "Upgrade", "User-Agent", "Via", "X-Forwarded-For",
		"X-Forwarded-Proto", "X-Request-Id", "X-B3-Traceid", "X-B3-Spanid", "X-B3-Parentspanid",
		"X-B3-Sampled", "Traceparent", "Tracestate", "X-Envoy-Attempt-Count", "X-Envoy-Internal",
		"X-Envoy-Expected-Rq-Timeout-Ms", "X-Envoy-Decorator-Operation", "Grpc-Timeout", "Sec-Websocket-Key",
		"Sec-Websocket-Version", "Sec-Websocket-Protocol", "Sec-Websocket-Extensions"} {
		m[k] = k
	}
	return m
}()

// canonicalKey validates a header name and returns its canonical form
// (http.CanonicalHeaderKey's), interned for common names.
func canonicalKey(b []byte) (string, bool) {
	var buf [64]byte
	var k []byte
	if len(b) <= len(buf) {
		k = buf[:len(b)]
	} else {
		k = make([]byte, len(b))
	}
	upper := true
	for i, c := range b {
		if !tokenTable[c] {
			return "", false
		}
		if upper && 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		} else if !upper && 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		k[i] = c
		upper = c == '-'
	}
	if s, ok := commonKeys[string(k)]; ok {
		return s, true
	}
	return string(k), true
}

// h1body is a request body read from the connection: a fixed length or
// chunked. It is safe to read from another goroutine (an upstream
// transport) and stops at Close so it never reads past its request.
type h1body struct {
	c         *h1conn
	mu        sync.Mutex
	remaining int64 // fixed length left; -1 for chunked
	cr        io.Reader
	continue_ bool // 100-continue still owed
	eof       bool
	closed    bool
	err       error
}

func (c *h1conn) newBody(r *http.Request, n int64) *h1body {
	b := &h1body{c: c, remaining: n}
	if n < 0 {
		b.cr = newChunkedReader(c.br)
	}
	if r.ProtoMinor == 1 {
		for _, v := range r.Header["Expect"] {
			if strings.EqualFold(v, "100-continue") {
				b.continue_ = true
			}
		}
	}
	return b
}

func (b *h1body) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return 0, http.ErrBodyReadAfterClose
	}
	n, err, hitEOF := b.readLocked(p)
	b.mu.Unlock()
	if hitEOF {
		b.c.onBodyEOF()
	}
	return n, err
}

func (b *h1body) readLocked(p []byte) (n int, err error, hitEOF bool) {
	if b.err != nil {
		return 0, b.err, false
	}
	if b.eof {
		return 0, io.EOF, false
	}
	if b.continue_ {
		b.continue_ = false
		b.c.rw.writeContinue()
	}
	if b.remaining >= 0 {
		if int64(len(p)) > b.remaining {
			p = p[:b.remaining]
		}
		n, err = b.c.br.Read(p)
		b.remaining -= int64(n)
		if b.remaining == 0 {
			b.eof = true
			return n, io.EOF, true
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
	} else {
		n, err = b.cr.Read(p)
		if err == io.EOF {
			b.eof = true
			return n, io.EOF, true
		}
	}
	if err != nil {
		b.err = err
	}
	return n, err, false
}

// Close stops further reads; what is left is drained by the connection.
func (b *h1body) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

// closeAndDrain closes the body after its request and discards up to
// h1DrainLimit of what was not read; it reports whether the connection is
// positioned at the next request.
func (b *h1body) closeAndDrain() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.eof {
		return true
	}
	if b.continue_ {
		// The client waits for 100 Continue that never came: it may or
		// may not send the body, so the connection cannot be reused.
		return false
	}
	var buf [1024]byte
	for total := 0; total <= h1DrainLimit; {
		n, err, _ := b.readLocked(buf[:])
		total += n
		if err == io.EOF {
			return true
		}
		if err != nil {
			return false
		}
	}
	return false
}

// chunkedReader decodes a chunked request body and consumes its trailer
// section.
type chunkedReader struct {
	br   *bufio.Reader
	left int64 // bytes left in the current chunk
	done bool
	err  error
}

func newChunkedReader(br *bufio.Reader) *chunkedReader { return &chunkedReader{br: br} }

func (r *chunkedReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.left == 0 {
		if r.err = r.beginChunk(); r.err != nil {
			return 0, r.err
		}
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.br.Read(p)
	r.left -= int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err == nil && r.left == 0 {
		err = r.crlf()
	}
	if err != nil {
		r.err = err
	}
	return n, err
}

// beginChunk reads a chunk-size line; a zero size ends the body after the
// trailer section (which a proxy does not forward from HTTP/1).
func (r *chunkedReader) beginChunk() error {
	line, err := r.line()
	if err != nil {
		return err
	}
	if i := indexByte(line, ';'); i >= 0 {
		line = line[:i] // chunk extensions are ignored
	}
	line = trimOWS(line)
	if len(line) == 0 || len(line) > 16 {
		return errChunk
	}
	var n int64
	for _, c := range line {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return errChunk
		}
		n = n<<4 | int64(d)
	}
	if n < 0 {
		return errChunk
	}
	if n == 0 {
		for {
			t, err := r.line()
			if err != nil {
				return err
			}
			if len(t) == 0 {
				return io.EOF
			}
		}
	}
	r.left = n
	return nil
}

func (r *chunkedReader) crlf() error {
	l, err := r.line()
	if err == nil && len(l) != 0 {
		err = errChunk
	}
	return err
}

func (r *chunkedReader) line() ([]byte, error) {
	l, err := r.br.ReadSlice('\n')
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		} else if err == bufio.ErrBufferFull {
			err = errChunk
		}
		return nil, err
	}
	l = l[:len(l)-1]
	if n := len(l); n > 0 && l[n-1] == '\r' {
		l = l[:n-1]
	}
	return l, nil
}

var errChunk = errors.New("malformed chunked encoding")
