package hcm

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// upgrade proxies an HTTP/1.1 WebSocket handshake over a raw connection to
// the chosen host and, once the upstream answers 101, copies bytes both
// ways until either side closes.
func (rt *router) upgrade(s *Stream, cl core.Cluster, lb *core.LBContext, out *http.Request) {
	cs := cl.Stats()
	host := cl.ChooseHost(lb)
	if host == nil {
		s.SendLocalReply(http.StatusServiceUnavailable, bodyNoHealthy, core.NoHealthyUpstream)
		return
	}
	s.UpstreamHost, s.UpstreamHostRef = host.Address(), host
	cs.RqTotal.Inc()
	start := time.Now()
	uc, err := host.Dial(out.Context())
	if err != nil {
		host.Observe(0, err)
		rt.replyError(s, errorKind(err))
		return
	}
	defer uc.Close()
	out.URL.Host = host.Address()
	if err := out.Write(uc); err != nil {
		host.Observe(0, err)
		rt.replyError(s, core.Reset)
		return
	}
	br := bufio.NewReader(uc)
	resp, err := http.ReadResponse(br, out)
	if err != nil {
		host.Observe(0, err)
		rt.replyError(s, core.Reset)
		return
	}
	cs.CountStatus(resp.StatusCode)
	host.Observe(resp.StatusCode, nil)
	s.upstreamDur = time.Since(start)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		rt.respond(s, s.Route, resp)
		return
	}
	dc, dbuf, err := http.NewResponseController(s.w).Hijack()
	if err != nil {
		s.SendLocalReply(http.StatusInternalServerError, "", core.DownstreamProtocolError)
		return
	}
	defer dc.Close()
	h := resp.Header
	if !rt.suppress {
		h[hdrServiceTime] = []string{strconv.FormatInt(s.upstreamDur.Milliseconds(), 10)}
	}
	s.Route.MutateResponse(h, s.Cluster)
	rt.c.finishResponseHeaders(h)
	s.status = http.StatusSwitchingProtocols
	w := dbuf.Writer
	w.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	h.Write(w)
	w.WriteString("\r\n")
	if err := w.Flush(); err != nil {
		s.Flags |= core.DownstreamConnectionTermination
		return
	}
	// Bytes already buffered on either side go first.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.Copy(uc, io.MultiReader(io.LimitReader(dbuf.Reader, int64(dbuf.Reader.Buffered())), dc))
		closeWrite(uc)
	}()
	n, _ := io.Copy(dc, io.MultiReader(io.LimitReader(br, int64(br.Buffered())), uc))
	s.bytesSent += n
	closeWrite(dc)
	wg.Wait()
}

// closeWrite half-closes c when it can, so the peer sees EOF while the
// other direction drains.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}
