package xds

import (
	"slices"
	"sync"
	"time"
)

// conn is one ADS stream. Its stream goroutine is the only one that sends;
// other goroutines only enqueue pushes and read status under mu.
type conn struct {
	s           *Server
	id          string
	proxy       *Proxy
	delta       bool
	connectedAt time.Time

	wake chan struct{} // cap 1: a push is pending

	mu      sync.Mutex
	pending *push // at most one; later pushes merge into it
	watches map[string]*watch
}

// watch is the protocol state of one type on one connection.
type watch struct {
	typeURL  string
	wildcard bool
	// legacy marks a wildcard that came from an empty first request
	// rather than an explicit "*": an empty list keeps it.
	legacy bool
	// list is the subscription, sorted, shared with every other stream
	// subscribed to the same names.
	list *nameList

	nonceSent    string
	versionSent  string
	sentAt       time.Time
	sentConfigs  []ConfigKey // what caused the response with nonceSent
	inflight     []response  // sent, not yet ACKed or NACKed, oldest first
	versionAcked string
	nonceAcked   string
	ackedAt      time.Time
	nacks        int
	lastNACK     string
	nackNonce    string
	nackAt       time.Time

	// configs records, per object, the latest version sent and ACKed.
	configs map[ConfigKey]*configState

	// held is, for delta, what the proxy holds (as far as we have told
	// it), sorted by name: pushes send only what differs. Its runs are
	// shared with the other proxies holding the same (see held.go).
	held heldList
	// lastBody is the body of the last response until the proxy answers
	// it: while a push is on its way to thousands of streams, their
	// pending responses keep its chunks (weakly interned) alive for the
	// streams that send the same later in the push. Once answered, the
	// bytes are in the proxy, and the chunks are freed when no response
	// in flight holds them (they had doubled the memory of every
	// resource at rest).
	lastBody body
}

type configState struct{ sent, acked string }

func newWatch(typeURL string) *watch {
	return &watch{typeURL: typeURL, configs: map[ConfigKey]*configState{}}
}

// subscription returns the names to generate, sorted: nil for a
// wildcard. The slice is shared: callers must not modify it.
func (w *watch) subscription() []string {
	if w.wildcard {
		return nil
	}
	return w.subscribed()
}

// subscribed returns the explicitly subscribed names (shared, sorted),
// empty rather than nil.
func (w *watch) subscribed() []string {
	if w.list == nil {
		return []string{}
	}
	return w.list.names
}

func (c *conn) enqueue(p *push) {
	c.mu.Lock()
	c.pending = mergePush(c.pending, p)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *conn) dequeue() *push {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pending
	c.pending = nil
	return p
}

// watchedTypes lists the subscribed types, known ones in push order first.
func (c *conn) watchedTypes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.watches))
	for _, t := range pushOrder {
		if _, ok := c.watches[t]; ok {
			out = append(out, t)
		}
	}
	var rest []string
	for t := range c.watches {
		if !slices.Contains(pushOrder, t) {
			rest = append(rest, t)
		}
	}
	slices.Sort(rest)
	return append(out, rest...)
}

// maxInflight bounds the responses remembered while unanswered; a proxy
// answers in order, so older ones than this will never be answered.
const maxInflight = 16

// response is a response sent and not yet answered.
type response struct {
	nonce, version string
	at             time.Time
	configs        []ConfigKey
	slot           *sendSlot // of the send window, for a large response
}

// sent records a response about to go out (with its slot of the send
// window, if it took one).
func (c *conn) sent(w *watch, nonce, version string, p *push, slot *sendSlot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	w.nonceSent, w.versionSent, w.sentAt = nonce, version, now
	w.sentConfigs = p.req.ConfigsUpdated
	for _, k := range p.req.ConfigsUpdated {
		st := w.configs[k.id()]
		if st == nil {
			st = &configState{}
			w.configs[k.id()] = st
		}
		st.sent = k.ResourceVersion
	}
	w.inflight = append(w.inflight, response{nonce: nonce, version: version, at: now, configs: p.req.ConfigsUpdated, slot: slot})
	if len(w.inflight) > maxInflight {
		for _, r := range w.inflight[:len(w.inflight)-maxInflight] {
			r.slot.release()
		}
		w.inflight = slices.Delete(w.inflight, 0, len(w.inflight)-maxInflight)
	}
}

// answered removes the responses up to and including nonce from the
// in-flight list and returns the one with nonce.
func (w *watch) answered(nonce string) (response, bool) {
	for i, r := range w.inflight {
		if r.nonce == nonce {
			for _, done := range w.inflight[:i+1] {
				done.slot.release()
			}
			w.inflight = slices.Delete(w.inflight, 0, i+1)
			return r, true
		}
	}
	return response{}, false
}

// ack records that the proxy applied the response with nonce, and reports
// false if that is not a response it may still answer. In SotW only the
// latest response counts, and it holds the whole state, so every config
// sent so far is applied. In delta every response is a separate change:
// each ACK applies that response's configs.
func (c *conn) ack(w *watch, nonce, version string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.delta && nonce != w.nonceSent {
		return false
	}
	r, ok := w.answered(nonce)
	if !ok {
		return false
	}
	now := time.Now()
	c.s.m.ackLatency.WithLabelValues(ShortType(w.typeURL)).Observe(now.Sub(r.at).Seconds())
	if c.delta {
		version = r.version
		for _, k := range r.configs {
			if st := w.configs[k.id()]; st != nil {
				st.acked = k.ResourceVersion
			}
		}
	} else {
		for _, st := range w.configs {
			st.acked = st.sent
		}
	}
	if nonce == w.nonceSent {
		w.versionAcked, w.nonceAcked, w.ackedAt = version, nonce, now
		w.lastNACK, w.nackNonce = "", ""
		w.lastBody = nil // the proxy has it all: see lastBody
	}
	return true
}

// nack records a rejection: the last ACKed version stays as it was.
func (c *conn) nack(typeURL, nonce, msg string) {
	c.s.m.rejects.WithLabelValues(ShortType(typeURL)).Inc()
	c.s.log.Warn("proxy rejected config (NACK)", "proxy", c.proxy.ID, "conn", c.id, "type", ShortType(typeURL), "nonce", nonce, "err", msg)
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.watches[typeURL]
	if w == nil {
		w = newWatch(typeURL)
		c.watches[typeURL] = w
	}
	now := time.Now()
	if r, ok := w.answered(nonce); ok {
		c.s.m.ackLatency.WithLabelValues(ShortType(typeURL)).Observe(now.Sub(r.at).Seconds())
	}
	w.nacks++
	w.lastNACK, w.nackNonce, w.nackAt = msg, nonce, now
	if nonce == w.nonceSent {
		w.lastBody = nil
	}
}

func (c *conn) expired(typeURL string) {
	c.s.m.expiredNonce.WithLabelValues(ShortType(typeURL)).Inc()
}
