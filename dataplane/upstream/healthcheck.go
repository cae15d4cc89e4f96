package upstream

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// startHealthCheck begins active health checking of a new host; c.mu is
// held.
func (c *cluster) startHealthCheck(h *host) {
	if len(c.cfg.healthChecks) == 0 || c.closed {
		return
	}
	h.hcStop = make(chan struct{})
	c.wg.Add(1)
	go c.runHealthCheck(h, c.cfg.healthChecks[0], h.hcStop)
}

// runHealthCheck probes one host until it leaves the cluster. As in Envoy,
// a new host is unhealthy until its first success; afterwards
// unhealthy_threshold failures in a row take it out and healthy_threshold
// successes bring it back.
func (c *cluster) runHealthCheck(h *host, hc *corev3.HealthCheck, stop chan struct{}) {
	defer c.wg.Done()
	interval := hc.GetInterval().AsDuration()
	noTraffic := durOr(hc.GetNoTrafficInterval(), 60*time.Second)
	unhealthyInterval := durOr(hc.GetUnhealthyInterval(), interval)
	healthyThr, unhealthyThr := hc.GetHealthyThreshold().GetValue(), hc.GetUnhealthyThreshold().GetValue()
	var check func(context.Context) error
	if hh := hc.GetHttpHealthCheck(); hh != nil {
		tr := &http.Transport{
			DialContext:         func(ctx context.Context, _, _ string) (net.Conn, error) { return c.hcDial(ctx, h, h.tls.Load().h1) },
			DisableCompression:  true,
			MaxIdleConnsPerHost: 1,
		}
		if hc.GetReuseConnection() != nil && !hc.GetReuseConnection().GetValue() {
			tr.DisableKeepAlives = true
		}
		defer tr.CloseIdleConnections()
		check = func(ctx context.Context) error { return c.httpCheck(ctx, h, hh, tr) }
	} else {
		check = func(ctx context.Context) error { return c.tcpCheck(ctx, h, hc.GetTcpHealthCheck()) }
	}
	var succ, fail uint32
	delay := durOr(hc.GetInitialJitter(), 0)
	for {
		select {
		case <-stop:
			return
		case <-c.stop:
			return
		case <-time.After(delay):
		}
		ctx, cancel := context.WithTimeout(context.Background(), hc.GetTimeout().AsDuration())
		err := check(ctx)
		cancel()
		c.stats.HealthCheckAttempt.Inc()
		flags := h.flags.Load()
		if err == nil {
			c.stats.HealthCheckSuccess.Inc()
			fail = 0
			succ++
			if flags&flagPendingActiveHC != 0 || (flags&flagFailedActiveHC != 0 && succ >= healthyThr) {
				c.setFlag(h, flagFailedActiveHC|flagPendingActiveHC, false)
			}
		} else {
			c.stats.HealthCheckFailure.Inc()
			succ = 0
			fail++
			switch {
			case flags&flagPendingActiveHC != 0:
				c.setFlag(h, flagPendingActiveHC, false)
			case flags&flagFailedActiveHC == 0 && fail >= unhealthyThr:
				c.setFlag(h, flagFailedActiveHC, true)
			}
		}
		switch {
		case !c.hadTraffic.Load():
			delay = noTraffic
		case h.flags.Load()&flagFailedActiveHC != 0:
			delay = unhealthyInterval
		default:
			delay = interval
		}
	}
}

// hcDial connects for a health check; these connections are not traffic
// and count against no circuit breaker.
func (c *cluster) hcDial(ctx context.Context, h *host, tc *tls.Config) (net.Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", h.addr)
	if err != nil || tc == nil {
		return nc, err
	}
	t := tls.Client(nc, tc)
	if err := t.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	return t, nil
}

func (c *cluster) httpCheck(ctx context.Context, h *host, hh *corev3.HealthCheck_HttpHealthCheck, tr *http.Transport) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+h.addr+hh.GetPath(), nil)
	if err != nil {
		return err
	}
	req.Host = hh.GetHost()
	if req.Host == "" {
		req.Host = c.cfg.name
	}
	req.Header.Set("User-Agent", "Envoy/HC")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	ranges := hh.GetExpectedStatuses()
	if len(ranges) == 0 {
		if resp.StatusCode == http.StatusOK {
			return nil
		}
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	for _, r := range ranges {
		if int64(resp.StatusCode) >= r.GetStart() && int64(resp.StatusCode) < r.GetEnd() {
			return nil
		}
	}
	return fmt.Errorf("status %d not expected", resp.StatusCode)
}

// tcpCheck connects, sends the payload if any, and looks for each receive
// block in order (not necessarily contiguous), as Envoy's fuzzy match does.
func (c *cluster) tcpCheck(ctx context.Context, h *host, th *corev3.HealthCheck_TcpHealthCheck) error {
	nc, err := c.hcDial(ctx, h, h.tls.Load().raw)
	if err != nil {
		return err
	}
	defer nc.Close()
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	if s := th.GetSend(); s != nil {
		b, err := payload(s)
		if err != nil {
			return err
		}
		if _, err := nc.Write(b); err != nil {
			return err
		}
	}
	var want [][]byte
	for _, r := range th.GetReceive() {
		b, err := payload(r)
		if err != nil {
			return err
		}
		want = append(want, b)
	}
	if len(want) == 0 {
		return nil
	}
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := nc.Read(buf)
		got = append(got, buf[:n]...)
		if fuzzyMatch(got, want) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("response did not match: %w", err)
		}
		if len(got) > 1<<20 {
			return fmt.Errorf("response did not match in 1 MiB")
		}
	}
}

func fuzzyMatch(got []byte, want [][]byte) bool {
	for _, w := range want {
		i := bytes.Index(got, w)
		if i < 0 {
			return false
		}
		got = got[i+len(w):]
	}
	return true
}

func payload(p *corev3.HealthCheck_Payload) ([]byte, error) {
	if t := p.GetText(); t != "" {
		return hex.DecodeString(t)
	}
	return p.GetBinary(), nil
}
