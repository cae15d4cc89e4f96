package listener

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"
)

// peekConn replays the bytes listener filters read while inspecting the
// connection, then reads from the socket. Inspectors never consume: the
// filter chain sees the stream from its first byte.
type peekConn struct {
	net.Conn
	buf []byte // bytes read from the socket during inspection
	off int    // replay position once the chain reads
}

// fill reads at least one more chunk from the socket into the buffer.
func (p *peekConn) fill() error {
	if len(p.buf) >= maxPeek {
		return errPeekLimit
	}
	if cap(p.buf)-len(p.buf) < 1024 {
		nb := make([]byte, len(p.buf), 2*cap(p.buf)+4096)
		copy(nb, p.buf)
		p.buf = nb
	}
	n, err := p.Conn.Read(p.buf[len(p.buf):cap(p.buf)])
	p.buf = p.buf[:len(p.buf)+n]
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// ensure makes the first n bytes available, or returns why not.
func (p *peekConn) ensure(n int) error {
	for len(p.buf) < n {
		if err := p.fill(); err != nil {
			return err
		}
	}
	return nil
}

func (p *peekConn) Read(b []byte) (int, error) {
	if p.off < len(p.buf) {
		n := copy(b, p.buf[p.off:])
		p.off += n
		if p.off == len(p.buf) {
			p.buf, p.off = nil, 0
		}
		return n, nil
	}
	return p.Conn.Read(b)
}

// CloseWrite passes a half-close on, so tcp_proxy can propagate it.
func (p *peekConn) CloseWrite() error {
	if cw, ok := p.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("listener: connection does not support half-close")
}

// maxPeek bounds what inspectors may buffer (Envoy's tls_inspector reads
// at most 64 KiB of ClientHello).
const maxPeek = 64 * 1024

var errPeekLimit = errors.New("listener: inspection needs more than 64 KiB")

// inspectTLS reports whether the stream starts with a TLS ClientHello and,
// if so, its SNI and ALPN. It parses the hello with crypto/tls over the
// peeked bytes, so every hello Go can read is understood.
func inspectTLS(p *peekConn) (isTLS bool, sni string, alpn []string, err error) {
	if err := p.ensure(1); err != nil {
		return false, "", nil, err
	}
	if p.buf[0] != 0x16 { // not a TLS handshake record
		return false, "", nil, nil
	}
	var hello *tls.ClientHelloInfo
	r := &replayReader{p: p}
	srv := tls.Server(r, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		hello = h
		return nil, errHelloSeen
	}})
	srv.Handshake() // always fails: GetConfigForClient stops it after the hello
	if hello == nil {
		if r.err != nil {
			return false, "", nil, r.err
		}
		// Starts like TLS but is not a ClientHello Go can parse: treat as
		// plaintext, as Envoy does for a failed inspection.
		return false, "", nil, nil
	}
	return true, hello.ServerName, append([]string(nil), hello.SupportedProtos...), nil
}

var errHelloSeen = errors.New("client hello captured")

// replayReader feeds crypto/tls the peeked bytes, pulling more from the
// socket as the parser needs them, and swallows what it writes (alerts).
type replayReader struct {
	p   *peekConn
	off int
	err error // socket error that cut the hello short
}

func (r *replayReader) Read(b []byte) (int, error) {
	if r.off >= len(r.p.buf) {
		if err := r.p.fill(); err != nil {
			r.err = err
			return 0, err
		}
	}
	n := copy(b, r.p.buf[r.off:])
	r.off += n
	return n, nil
}

func (r *replayReader) Write(b []byte) (int, error)        { return len(b), nil }
func (r *replayReader) Close() error                       { return nil }
func (r *replayReader) LocalAddr() net.Addr                { return r.p.LocalAddr() }
func (r *replayReader) RemoteAddr() net.Addr               { return r.p.RemoteAddr() }
func (r *replayReader) SetDeadline(t time.Time) error      { return nil }
func (r *replayReader) SetReadDeadline(t time.Time) error  { return nil }
func (r *replayReader) SetWriteDeadline(t time.Time) error { return nil }

var h2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// httpMethods are the request methods http_inspector recognises.
var httpMethods = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK"}

// inspectHTTP returns "h2c" for the HTTP/2 preface, "http/1.1" or
// "http/1.0" for an HTTP/1 request line, "" for anything else.
func inspectHTTP(p *peekConn) (string, error) {
	for {
		b := p.buf
		if len(b) > 0 {
			n := min(len(b), len(h2Preface))
			if bytes.Equal(b[:n], h2Preface[:n]) {
				if n == len(h2Preface) {
					return "h2c", nil
				}
			} else if !plausibleMethodPrefix(b) {
				return "", nil
			} else if i := bytes.Index(b, []byte("\r\n")); i >= 0 {
				return requestLineProtocol(b[:i]), nil
			}
		}
		if err := p.fill(); err != nil {
			if errors.Is(err, errPeekLimit) {
				return "", nil
			}
			return "", err
		}
	}
}

// plausibleMethodPrefix is false as soon as the bytes cannot start an
// HTTP/1 request, so a non-HTTP client is not kept waiting for a line end.
func plausibleMethodPrefix(b []byte) bool {
	sp := bytes.IndexByte(b, ' ')
	for _, m := range httpMethods {
		if sp < 0 {
			if len(b) <= len(m) && m[:len(b)] == string(b) {
				return true
			}
		} else if string(b[:sp]) == m {
			return true
		}
	}
	return false
}

func requestLineProtocol(line []byte) string {
	f := bytes.Fields(line)
	if len(f) != 3 {
		return ""
	}
	switch string(f[2]) {
	case "HTTP/1.1":
		return "http/1.1"
	case "HTTP/1.0":
		return "http/1.0"
	}
	return ""
}
