package upstream

import (
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync/atomic"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// entry is a host with the weight it has in one balancer.
type entry struct {
	h *host
	w uint32
}

// picker chooses among a fixed list of hosts. Pickers are built when
// membership or health changes and then only read; seed varies the choice
// for hash-based pickers on retries (LBContext.Reject).
type picker interface {
	pick(lb *core.LBContext, seed uint64) *host
}

func newPicker(cfg *config, es []entry) picker {
	if len(es) == 0 {
		return nil
	}
	switch cfg.lb {
	case lbLeastRequest:
		return newLeastRequest(es, cfg.choiceCount)
	case lbRandom:
		return newRandom(es)
	case lbRingHash:
		return &hashPicker{inner: newRing(es, cfg.ringMin, cfg.ringMax), fallback: newRandom(es)}
	case lbMaglev:
		return &hashPicker{inner: newMaglev(es, cfg.maglevSize), fallback: newRandom(es)}
	default:
		return newRoundRobin(es)
	}
}

// roundRobin walks a precomputed smooth weighted schedule with one atomic
// counter, so weighted round robin costs the same as plain round robin.
type roundRobin struct {
	sched []*host
	next  atomic.Uint64
}

const maxSchedule = 1 << 16

func newRoundRobin(es []entry) *roundRobin {
	rr := &roundRobin{}
	ws := make([]uint64, len(es))
	var sum uint64
	g := uint64(0)
	for i, e := range es {
		ws[i] = uint64(e.w)
		g = gcd(g, ws[i])
	}
	for i := range ws {
		ws[i] /= g
		sum += ws[i]
	}
	if sum > maxSchedule {
		// Scale down so the schedule stays small; relative weights keep
		// their proportions to within 1/65536.
		var s2 uint64
		for i := range ws {
			ws[i] = max(1, ws[i]*maxSchedule/sum)
			s2 += ws[i]
		}
		sum = s2
	}
	cur := make([]int64, len(es))
	rr.sched = make([]*host, 0, sum)
	for range sum {
		best := 0
		for i := range es {
			cur[i] += int64(ws[i])
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= int64(sum)
		rr.sched = append(rr.sched, es[best].h)
	}
	// Start at a random point so that many proxies do not all hit host 0 first.
	rr.next.Store(rand.Uint64N(uint64(len(rr.sched))))
	return rr
}

func (r *roundRobin) pick(*core.LBContext, uint64) *host {
	return r.sched[(r.next.Add(1)-1)%uint64(len(r.sched))]
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// random picks by weight with a binary search over cumulative weights.
type random struct {
	hosts []*host
	cum   []uint64
}

func newRandom(es []entry) *random {
	r := &random{hosts: make([]*host, len(es)), cum: make([]uint64, len(es))}
	var s uint64
	for i, e := range es {
		s += uint64(e.w)
		r.hosts[i], r.cum[i] = e.h, s
	}
	return r
}

func (r *random) pick(*core.LBContext, uint64) *host {
	x := rand.Uint64N(r.cum[len(r.cum)-1])
	i, _ := slices.BinarySearch(r.cum, x+1)
	return r.hosts[i]
}

// leastRequest is Envoy's power-of-N-choices: sample choiceCount hosts and
// take the one with the fewest active requests relative to its weight.
type leastRequest struct {
	es     []entry
	choice int
}

func newLeastRequest(es []entry, choice int) *leastRequest {
	return &leastRequest{es: es, choice: choice}
}

func (l *leastRequest) pick(*core.LBContext, uint64) *host {
	n := uint64(len(l.es))
	best := l.es[rand.Uint64N(n)]
	for i := 1; i < l.choice; i++ {
		c := l.es[rand.Uint64N(n)]
		// active/weight compared without division.
		if c.h.rqActive.Load()*int64(best.w) < best.h.rqActive.Load()*int64(c.w) {
			best = c
		}
	}
	return best.h
}

// hashPicker uses a consistent-hash table when the request has a hash and
// falls back to random choice when it has none, as Envoy does.
type hashPicker struct {
	inner    picker
	fallback *random
}

func (p *hashPicker) pick(lb *core.LBContext, seed uint64) *host {
	if lb == nil || !lb.HasHash {
		return p.fallback.pick(lb, seed)
	}
	return p.inner.pick(lb, seed)
}

type ringEntry struct {
	hash uint64
	h    *host
}

// ring is a ketama-style hash ring: each host owns a number of points in
// proportion to its weight, the total between the min and max ring sizes.
type ring struct{ entries []ringEntry }

func newRing(es []entry, minSize, maxSize uint64) *ring {
	var sum float64
	for _, e := range es {
		sum += float64(e.w)
	}
	minNorm := math.MaxFloat64
	for _, e := range es {
		minNorm = min(minNorm, float64(e.w)/sum)
	}
	// As Envoy: scale so the lightest host gets at least one entry and the
	// ring has at least minSize entries, capped at maxSize.
	scale := min(math.Ceil(minNorm*float64(minSize))/minNorm, float64(maxSize))
	r := &ring{}
	var target, current float64
	for _, e := range es {
		target += scale * float64(e.w) / sum
		key := e.h.addr + "_"
		// Per-host suffixes keep a host's points where they are when
		// other hosts come and go.
		for i := 0; current < target; i++ {
			r.entries = append(r.entries, ringEntry{hash: hashString(key + strconv.Itoa(i)), h: e.h})
			current++
		}
	}
	slices.SortFunc(r.entries, func(a, b ringEntry) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return 0
	})
	return r
}

func (r *ring) pick(lb *core.LBContext, seed uint64) *host {
	// Callers' hashes (FNV of a header value, say) can be weak in the bits
	// that decide the slot; finalize them so similar keys spread.
	k := mix64(lb.Hash)
	if seed != 0 {
		k = mix64(k ^ seed)
	}
	i, _ := slices.BinarySearchFunc(r.entries, k, func(e ringEntry, k uint64) int {
		if e.hash < k {
			return -1
		}
		if e.hash > k {
			return 1
		}
		return 0
	})
	if i == len(r.entries) {
		i = 0
	}
	return r.entries[i].h
}

// maglev is the Maglev lookup table (Eisenbud et al.), weighted as Envoy
// weights it: a host fills a slot in a round only while its share allows.
type maglev struct{ table []*host }

func newMaglev(es []entry, size uint64) *maglev {
	type perm struct{ offset, skip, next, target uint64 }
	ps := make([]perm, len(es))
	var maxW uint64
	for i, e := range es {
		h := hashString(e.h.addr)
		ps[i] = perm{offset: h % size, skip: mix64(h)%(size-1) + 1}
		maxW = max(maxW, uint64(e.w))
	}
	table := make([]*host, size)
	filled := uint64(0)
	for iter := uint64(1); filled < size; iter++ {
		for i := range es {
			p := &ps[i]
			if iter*uint64(es[i].w) < p.target {
				continue
			}
			p.target += maxW
			for {
				slot := (p.offset + p.next*p.skip) % size
				p.next++
				if table[slot] == nil {
					table[slot] = es[i].h
					filled++
					break
				}
			}
			if filled == size {
				break
			}
		}
	}
	return &maglev{table: table}
}

func (m *maglev) pick(lb *core.LBContext, seed uint64) *host {
	// Callers' hashes (FNV of a header value, say) can be weak in the bits
	// that decide the slot; finalize them so similar keys spread.
	k := mix64(lb.Hash)
	if seed != 0 {
		k = mix64(k ^ seed)
	}
	return m.table[k%uint64(len(m.table))]
}

// hashString is FNV-1a followed by a 64-bit finalizer, so that similar keys
// ("10.0.0.1:80_0", "_1") spread over the whole ring.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return mix64(h)
}

func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
