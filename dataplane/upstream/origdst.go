package upstream

import (
	"maps"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// origDst is an ORIGINAL_DST cluster's host table: hosts are made on
// demand from the connection's original destination (or the override
// header) and dropped when a cleanup interval passes without use. Reads go
// through a copy-on-write map.
type origDst struct {
	c     *cluster
	hosts atomic.Pointer[map[string]*host]
	mu    sync.Mutex // serializes writers
}

func newOrigDst(c *cluster) *origDst {
	o := &origDst{c: c}
	o.hosts.Store(&map[string]*host{})
	return o
}

func (o *origDst) choose(lb *core.LBContext) *host {
	if lb == nil {
		return nil
	}
	var addr string
	if o.c.cfg.origDstHeader != "" && lb.OverrideHost != "" {
		addr = lb.OverrideHost
	} else if lb.Downstream != nil {
		if a := lb.Downstream.DestinationAddr(); a != nil {
			addr = a.String()
		}
	}
	ip, port, err := net.SplitHostPort(addr)
	if err != nil || net.ParseIP(ip) == nil {
		return nil
	}
	if p := o.c.cfg.origDstPortOverr; p != 0 {
		port = strconv.Itoa(int(p))
	}
	addr = net.JoinHostPort(net.ParseIP(ip).String(), port)
	if h := (*o.hosts.Load())[addr]; h != nil {
		if !h.used.Load() {
			h.used.Store(true)
		}
		return h
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	cur := *o.hosts.Load()
	if h := cur[addr]; h != nil {
		return h
	}
	p, _ := strconv.Atoi(port)
	h := newHost(o.c, hostSpec{addr: addr, host: ip, port: uint32(p), weight: 1})
	h.used.Store(true)
	next := maps.Clone(cur)
	next[addr] = h
	o.hosts.Store(&next)
	o.updateMembership(len(next))
	return h
}

func (o *origDst) updateMembership(n int) {
	o.c.stats.MembershipTotal.Set(int64(n))
	o.c.stats.MembershipHealthy.Set(int64(n))
}

func (o *origDst) runCleanup() {
	defer o.c.wg.Done()
	t := time.NewTicker(o.c.cfg.cleanupInterval)
	defer t.Stop()
	for {
		select {
		case <-o.c.stop:
			return
		case <-t.C:
			o.cleanup()
		}
	}
}

// cleanup drops hosts unused since the last round that have no request in
// flight.
func (o *origDst) cleanup() {
	o.mu.Lock()
	cur := *o.hosts.Load()
	next := make(map[string]*host, len(cur))
	var gone []*host
	for a, h := range cur {
		if h.used.Swap(false) || h.rqActive.Load() > 0 {
			next[a] = h
		} else {
			gone = append(gone, h)
		}
	}
	o.hosts.Store(&next)
	o.updateMembership(len(next))
	o.mu.Unlock()
	for _, h := range gone {
		h.close()
	}
}

func (o *origDst) list() []*host {
	m := *o.hosts.Load()
	out := make([]*host, 0, len(m))
	for _, h := range m {
		out = append(out, h)
	}
	return out
}

func (o *origDst) sweepIdle(timeout time.Duration) {
	for _, h := range o.list() {
		if h.h1 != nil {
			h.h1.sweepIdle(timeout)
		}
	}
}

func (o *origDst) closeAll() {
	for _, h := range o.list() {
		h.close()
	}
}
