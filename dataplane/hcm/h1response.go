package hcm

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// h1response is the http.ResponseWriter of the HTTP/1 codec, reused for
// every request of a connection. Headers are serialised on the first body
// write (or at the end), so a response that fits the buffer leaves in one
// write: Content-Length when declared, else chunked (HTTP/1.1) or
// close-delimited (HTTP/1.0).
type h1response struct {
	c      *h1conn
	req    *http.Request
	header http.Header
	status int

	headerOut   bool
	bodyAllowed bool
	head        bool
	chunked     bool
	closeAfter  bool
	clen        int64 // declared Content-Length, -1 when unknown
	written     int64
	trailers    []string // names declared in the Trailer header

	expectContinue bool
	wmu            sync.Mutex // orders 100 Continue before the response
	canContinue    bool
}

func (w *h1response) reset(req *http.Request) {
	clear(w.header)
	body, _ := req.Body.(*h1body)
	*w = h1response{c: w.c, req: req, header: w.header, clen: -1, trailers: w.trailers[:0],
		head: req.Method == http.MethodHead}
	w.expectContinue = body != nil && body.continue_
	w.canContinue = w.expectContinue
}

func (w *h1response) Header() http.Header { return w.header }

func (w *h1response) WriteHeader(code int) {
	if w.status != 0 || w.c.hijacked {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		// Informational responses go out at once; the final one follows.
		w.wmu.Lock()
		writeStatusLine(w.c.bw, w.req.ProtoMinor, code)
		w.writeFields()
		w.c.bw.WriteString("\r\n")
		w.c.bw.Flush()
		w.wmu.Unlock()
		return
	}
	w.status = code
}

// writeHeaderNow serialises the status line and headers; final says the
// handler is done, so an unframed empty body can get Content-Length: 0.
func (w *h1response) writeHeaderNow(final bool) {
	if w.headerOut {
		return
	}
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.headerOut = true
	if w.expectContinue {
		w.wmu.Lock()
		w.canContinue = false
		w.wmu.Unlock()
	}
	h, code, bw := w.header, w.status, w.c.bw
	if v := h[hdrContentLength]; len(v) > 0 {
		n, err := strconv.ParseInt(v[0], 10, 64)
		if err != nil || n < 0 {
			delete(h, hdrContentLength)
		} else {
			w.clen = n
		}
	}
	w.bodyAllowed = code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
	addLength := false
	if w.bodyAllowed && !w.head && w.clen < 0 {
		switch {
		case final:
			w.clen, addLength = 0, true
		case w.req.ProtoMinor == 1:
			w.chunked = true
		default:
			w.closeAfter = true // HTTP/1.0: the end of the body is the close
		}
	}
	if w.req.Close || w.c.cm.draining.Load() || hasToken(h[hdrConnection], "close") {
		w.closeAfter = true
	}
	if w.chunked {
		for _, v := range h["Trailer"] {
			for _, f := range strings.Split(v, ",") {
				if f = strings.TrimSpace(f); f != "" {
					w.trailers = append(w.trailers, http.CanonicalHeaderKey(f))
				}
			}
		}
	}
	writeStatusLine(bw, w.req.ProtoMinor, code)
	w.writeFields()
	if _, ok := h["Date"]; !ok {
		bw.WriteString("Date: ")
		bw.WriteString(httpDate())
		bw.WriteString("\r\n")
	}
	if addLength {
		bw.WriteString("Content-Length: 0\r\n")
	}
	if w.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	switch {
	case w.closeAfter:
		if !hasToken(h[hdrConnection], "close") {
			bw.WriteString("Connection: close\r\n")
		}
	case w.req.ProtoMinor == 0:
		bw.WriteString("Connection: keep-alive\r\n")
	}
	bw.WriteString("\r\n")
}

// writeFields writes the header map, leaving out trailers, the framing
// the codec owns and anything that would split a header line.
func (w *h1response) writeFields() {
	bw := w.c.bw
	for k, vs := range w.header {
		if len(vs) == 0 || k == "Transfer-Encoding" || strings.HasPrefix(k, http.TrailerPrefix) || !validToken(k) {
			continue
		}
		for _, v := range vs {
			writeField(bw, k, v)
		}
	}
}

func writeField(bw *bufio.Writer, k, v string) {
	bw.WriteString(k)
	bw.WriteString(": ")
	if strings.ContainsAny(v, "\r\n") {
		v = strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
	}
	bw.WriteString(v)
	bw.WriteString("\r\n")
}

func writeStatusLine(bw *bufio.Writer, minor, code int) {
	if minor == 0 {
		bw.WriteString("HTTP/1.0 ")
	} else {
		bw.WriteString("HTTP/1.1 ")
	}
	var num [8]byte
	bw.Write(strconv.AppendInt(num[:0], int64(code), 10))
	bw.WriteByte(' ')
	text := http.StatusText(code)
	if text == "" {
		text = "status code " + strconv.Itoa(code)
	}
	bw.WriteString(text)
	bw.WriteString("\r\n")
}

func hasToken(vs []string, tok string) bool {
	for _, v := range vs {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), tok) {
				return true
			}
		}
	}
	return false
}

func (w *h1response) Write(p []byte) (int, error) {
	if w.c.hijacked {
		return 0, http.ErrHijacked
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	w.writeHeaderNow(false)
	if !w.bodyAllowed {
		return 0, http.ErrBodyNotAllowed
	}
	if w.head {
		return len(p), nil
	}
	var lenErr error
	if w.clen >= 0 && w.written+int64(len(p)) > w.clen {
		p = p[:w.clen-w.written]
		lenErr = http.ErrContentLength
	}
	if len(p) == 0 {
		return 0, lenErr
	}
	bw := w.c.bw
	if w.chunked {
		var num [16]byte
		bw.Write(strconv.AppendInt(num[:0], int64(len(p)), 16))
		bw.WriteString("\r\n")
	}
	n, err := bw.Write(p)
	if w.chunked && err == nil {
		_, err = bw.WriteString("\r\n")
	}
	w.written += int64(n)
	if err == nil {
		err = lenErr
	}
	return n, err
}

// Flush sends the headers and what is buffered of the body.
func (w *h1response) Flush() {
	if w.c.hijacked {
		return
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	w.writeHeaderNow(false)
	w.c.bw.Flush()
}

// finish completes the response after the handler returned and reports
// whether the connection can carry another request.
func (w *h1response) finish() bool {
	w.writeHeaderNow(true)
	bw := w.c.bw
	if w.chunked {
		bw.WriteString("0\r\n")
		for _, k := range w.trailers {
			for _, v := range w.header[k] {
				writeField(bw, k, v)
			}
		}
		for k, vs := range w.header {
			if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && validToken(name) {
				for _, v := range vs {
					writeField(bw, name, v)
				}
			}
		}
		bw.WriteString("\r\n")
	} else if w.bodyAllowed && !w.head && w.written < w.clen {
		// The handler wrote less than it declared: only a close tells
		// the client the response is incomplete.
		w.closeAfter = true
	}
	return !w.closeAfter
}

// writeContinue sends "100 Continue" the first time the handler reads an
// Expect: 100-continue body, unless the response has begun.
func (w *h1response) writeContinue() {
	w.wmu.Lock()
	if w.canContinue {
		w.canContinue = false
		w.c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		w.c.bw.Flush()
	}
	w.wmu.Unlock()
}

// Hijack hands the connection to the handler (WebSocket upgrades): the
// watch for a closing client stops and a byte it may have read goes back
// into the returned reader.
func (w *h1response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c := w.c
	if c.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.headerOut {
		return nil, nil, errors.New("hcm: Hijack after the response started")
	}
	c.timer.Stop()
	c.mu.Lock()
	c.hijacked = true
	c.inFlight = false
	if c.watching {
		c.nc.SetReadDeadline(aLongTimeAgo)
		for c.watching {
			c.watchDone.Wait()
		}
		c.nc.SetReadDeadline(time.Time{})
	}
	has := c.cr.hasByte
	c.mu.Unlock()
	if has {
		c.br.Peek(c.br.Buffered() + 1)
	}
	return c.nc, bufio.NewReadWriter(c.br, c.bw), nil
}

// dateCache holds the Date header value, formatted once a second.
type dateCache struct {
	sec int64
	s   string
}

var cachedDate atomic.Pointer[dateCache]

func httpDate() string {
	now := time.Now()
	if d := cachedDate.Load(); d != nil && d.sec == now.Unix() {
		return d.s
	}
	d := &dateCache{sec: now.Unix(), s: now.UTC().Format(http.TimeFormat)}
	cachedDate.Store(d)
	return d.s
}

var (
	_ http.ResponseWriter = (*h1response)(nil)
	_ http.Flusher        = (*h1response)(nil)
	_ http.Hijacker       = (*h1response)(nil)
)
