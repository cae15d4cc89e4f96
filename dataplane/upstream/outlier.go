package upstream

import (
	"math"
	"time"
)

type ejectReason int

const (
	ejectConsecutive5xx ejectReason = iota
	ejectGatewayFailure
	ejectSuccessRate
	ejectFailurePercentage
)

// outlierEvent handles a consecutive-errors threshold crossed in Observe.
func (c *cluster) outlierEvent(h *host, why ejectReason) {
	// Either way the streak is over: a new one has to build up.
	if why == ejectConsecutive5xx {
		h.cons5xx.Store(0)
	} else {
		h.consGw.Store(0)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ejectLocked(h, why, time.Now())
}

// ejectLocked ejects h if the reason is enforced and max_ejection_percent
// allows it; c.mu is held.
func (c *cluster) ejectLocked(h *host, why ejectReason, now time.Time) {
	od := c.cfg.outlier
	if h.ejected || h.removed.Load() || c.closed {
		return
	}
	c.stats.OutlierEjectionsTotal.Inc()
	var enforce uint32
	switch why {
	case ejectConsecutive5xx:
		enforce = od.enforcing5xx
	case ejectGatewayFailure:
		enforce = od.enforcingGw
	case ejectSuccessRate:
		enforce = od.enforcingSR
	case ejectFailurePercentage:
		enforce = od.enforcingFP
	}
	if !roll(enforce) {
		return
	}
	active := 0
	for _, o := range c.hosts {
		if o.ejected {
			active++
		}
	}
	if pct := 100 * float64(active+1) / float64(len(c.hosts)); pct > float64(od.maxEjectionPercent) && !(od.alwaysEjectOne && active == 0) {
		return
	}
	h.ejected, h.ejectedAt = true, now
	h.numEjections++
	h.cons5xx.Store(0)
	h.consGw.Store(0)
	c.stats.OutlierEjectionsEnforcedTotal.Inc()
	c.stats.OutlierEjectionsActive.Inc()
	switch why {
	case ejectConsecutive5xx:
		c.stats.OutlierEjectionsConsecutive5xx.Inc()
	case ejectGatewayFailure:
		c.stats.OutlierEjectionsGatewayFailure.Inc()
	case ejectSuccessRate:
		c.stats.OutlierEjectionsSuccessRate.Inc()
	}
	h.flags.Or(flagFailedOutlier)
	c.rebuildLocked()
}

func (c *cluster) runOutlier() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.outlier.interval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case now := <-t.C:
			c.outlierSweep(now)
		}
	}
}

// outlierSweep runs once per interval: it returns hosts whose ejection time
// is over and applies success-rate and failure-percentage detection to the
// interval's traffic.
func (c *cluster) outlierSweep(now time.Time) {
	od := c.cfg.outlier
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	changed := false
	type sample struct {
		h    *host
		rate float64 // success percentage
	}
	var srs, fps []sample
	for _, h := range c.hosts {
		succ, total := h.odSuccess.Swap(0), h.odTotal.Swap(0)
		if h.ejected {
			// Ejection lasts base_ejection_time × times ejected, capped.
			if now.Sub(h.ejectedAt) >= clampDuration(od.baseEjection, h.numEjections, od.maxEjection) {
				h.ejected, h.unejectedAt = false, now
				h.flags.And(^flagFailedOutlier)
				h.cons5xx.Store(0)
				h.consGw.Store(0)
				c.stats.OutlierEjectionsActive.Dec()
				changed = true
			}
			continue
		}
		if h.numEjections > 0 && now.Sub(h.unejectedAt) >= od.interval {
			// As Envoy: each interval a returned host stays in lowers its
			// next ejection time by one step.
			h.numEjections--
		}
		if total == 0 {
			continue
		}
		rate := 100 * float64(succ) / float64(total)
		if total >= uint64(od.srVolume) {
			srs = append(srs, sample{h, rate})
		}
		if total >= uint64(od.fpVolume) {
			fps = append(fps, sample{h, rate})
		}
	}
	if changed {
		c.rebuildLocked()
	}
	if len(srs) >= int(od.srMinHosts) && len(srs) > 0 {
		var mean float64
		for _, s := range srs {
			mean += s.rate
		}
		mean /= float64(len(srs))
		var v float64
		for _, s := range srs {
			v += (s.rate - mean) * (s.rate - mean)
		}
		threshold := mean - float64(od.srStdev)/1000*math.Sqrt(v/float64(len(srs)))
		for _, s := range srs {
			if s.rate < threshold {
				c.ejectLocked(s.h, ejectSuccessRate, now)
			}
		}
	}
	if len(fps) >= int(od.fpMinHosts) && len(fps) > 0 {
		for _, s := range fps {
			if 100-s.rate >= float64(od.fpThreshold) {
				c.ejectLocked(s.h, ejectFailurePercentage, now)
			}
		}
	}
}
