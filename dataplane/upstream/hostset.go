package upstream

import (
	"math/rand/v2"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// lbSnapshot is everything ChooseHost reads, rebuilt whenever membership or
// health changes and published with an atomic pointer.
type lbSnapshot struct {
	prios []*prioLB // non-empty priorities, lowest number first
}

type prioLB struct {
	load    uint32 // percent of traffic for this priority
	panic   bool   // route to all hosts, healthy or not
	healthy picker
	all     picker
	locs    []*localityLB // set when locality-weighted LB applies
}

type localityLB struct {
	healthyW, allW float64 // effective weights outside and inside panic
	healthy, all   picker
}

// buildSnapshot computes Envoy's priority loads (overprovisioning factor,
// normalized total health, panic per priority and total panic) and the
// per-priority pickers.
func buildSnapshot(cfg *config, hosts []*host, overprov float64) *lbSnapshot {
	byPrio := map[uint32][]*host{}
	for _, h := range hosts {
		byPrio[h.spec.priority] = append(byPrio[h.spec.priority], h)
	}
	keys := make([]uint32, 0, len(byPrio))
	for k := range byPrio {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	s := &lbSnapshot{}
	health := make([]uint32, len(keys))
	var total uint32
	var totalHosts int
	for i, k := range keys {
		hs := byPrio[k]
		p := &prioLB{}
		var healthy, all []entry
		for _, h := range hs {
			e := entry{h: h, w: h.spec.weight}
			all = append(all, e)
			if h.usable() {
				healthy = append(healthy, e)
			}
		}
		p.healthy, p.all = newPicker(cfg, healthy), newPicker(cfg, all)
		if cfg.localityWeights {
			p.locs = buildLocalities(cfg, hs, overprov)
		}
		health[i] = uint32(min(100, overprov*float64(len(healthy))/float64(len(hs))))
		total += health[i]
		totalHosts += len(hs)
		p.panic = cfg.panicThreshold > 0 && 100*float64(len(healthy))/float64(len(hs)) < cfg.panicThreshold
		s.prios = append(s.prios, p)
	}
	norm := min(total, 100)
	if norm == 100 {
		for _, p := range s.prios {
			p.panic = false
		}
	}
	allPanic := cfg.panicThreshold > 0
	for _, p := range s.prios {
		allPanic = allPanic && p.panic
	}
	if allPanic {
		// Total panic: spread by host count across all priorities.
		remaining := uint32(100)
		for i, k := range keys {
			l := uint32(100 * len(byPrio[k]) / totalHosts)
			s.prios[i].load = l
			remaining -= l
		}
		if len(s.prios) > 0 {
			s.prios[0].load += remaining
		}
		return s
	}
	if norm == 0 {
		return s // nothing healthy and panic disabled: every load stays 0
	}
	remaining := uint32(100)
	first := -1
	for i := range s.prios {
		l := min(remaining, health[i]*100/norm)
		s.prios[i].load = l
		remaining -= l
		if first < 0 && health[i] > 0 {
			first = i
		}
	}
	s.prios[first].load += remaining
	return s
}

func buildLocalities(cfg *config, hs []*host, overprov float64) []*localityLB {
	type group struct {
		loc          *corev3.Locality
		w            uint32
		healthy, all []entry
	}
	var gs []*group
outer:
	for _, h := range hs {
		e := entry{h: h, w: h.spec.weight}
		for _, g := range gs {
			if proto.Equal(g.loc, h.spec.locality) {
				g.all = append(g.all, e)
				if h.usable() {
					g.healthy = append(g.healthy, e)
				}
				continue outer
			}
		}
		g := &group{loc: h.spec.locality, w: h.spec.locWeight, all: []entry{e}}
		if h.usable() {
			g.healthy = []entry{e}
		}
		gs = append(gs, g)
	}
	out := make([]*localityLB, 0, len(gs))
	for _, g := range gs {
		avail := min(1, overprov/100*float64(len(g.healthy))/float64(len(g.all)))
		out = append(out, &localityLB{
			healthyW: float64(g.w) * avail, allW: float64(g.w),
			healthy: newPicker(cfg, g.healthy), all: newPicker(cfg, g.all),
		})
	}
	return out
}

// choose picks a host for one attempt.
func (s *lbSnapshot) choose(lb *core.LBContext, seed uint64) *host {
	if len(s.prios) == 0 {
		return nil
	}
	var r uint64
	if lb != nil && lb.HasHash && seed == 0 {
		r = lb.Hash % 100
	} else {
		r = rand.Uint64N(100)
	}
	var p *prioLB
	var acc uint64
	for _, c := range s.prios {
		acc += uint64(c.load)
		if r < acc {
			p = c
			break
		}
	}
	if p == nil {
		return nil
	}
	if p.locs != nil {
		if h := p.chooseLocality(lb, seed); h != nil {
			return h
		}
	}
	pk := p.healthy
	if p.panic || pk == nil {
		if !p.panic {
			return nil
		}
		pk = p.all
	}
	return pk.pick(lb, seed)
}

func (p *prioLB) chooseLocality(lb *core.LBContext, seed uint64) *host {
	var sum float64
	for _, l := range p.locs {
		if p.panic {
			sum += l.allW
		} else {
			sum += l.healthyW
		}
	}
	if sum == 0 {
		return nil
	}
	x := rand.Float64() * sum
	for _, l := range p.locs {
		w, pk := l.healthyW, l.healthy
		if p.panic {
			w, pk = l.allW, l.all
		}
		if x < w && pk != nil {
			return pk.pick(lb, seed)
		}
		x -= w
	}
	return nil
}
