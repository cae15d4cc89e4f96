package xds

import (
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
)

// deltaHandler speaks incremental xDS: subscriptions change by difference,
// and responses carry only resources whose version (a hash of their bytes)
// differs from what the proxy holds, plus the names it must drop.
type deltaHandler struct {
	stream grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]
}

func (deltaHandler) node(r *discoveryv3.DeltaDiscoveryRequest) *corev3.Node { return r.GetNode() }

func (h deltaHandler) onRequest(c *conn, r *discoveryv3.DeltaDiscoveryRequest) error {
	t := r.GetTypeUrl()
	if r.GetErrorDetail() != nil {
		c.nack(t, r.GetResponseNonce(), r.GetErrorDetail().GetMessage())
		return nil
	}
	c.mu.Lock()
	w := c.watches[t]
	isNew := w == nil
	if isNew {
		w = newWatch(t)
		c.watches[t] = w
		// What the proxy already holds (after a reconnect) is not resent
		// unless it changed.
		var held []*encoding
		for n, v := range r.GetInitialResourceVersions() {
			held = append(held, &encoding{name: n, version: v})
		}
		slices.SortFunc(held, byName)
		w.held = packHeld(held)
		if len(r.GetResourceNamesSubscribe()) == 0 {
			w.wildcard, w.legacy = true, true
		}
	}
	if nonce := r.GetResponseNonce(); !isNew && nonce != "" {
		c.mu.Unlock()
		if !c.ack(w, nonce, "") {
			c.expired(t)
		}
		c.mu.Lock()
	}
	// Subscription changes apply whatever the nonce: each request carries
	// only its own difference, so dropping one would lose it.
	var added, removed []string
	addedWildcard := false
	for _, n := range r.GetResourceNamesSubscribe() {
		if n == "*" {
			addedWildcard = !w.wildcard
			w.wildcard, w.legacy = true, false
			continue
		}
		added = append(added, n)
	}
	for _, n := range r.GetResourceNamesUnsubscribe() {
		if n == "*" {
			w.wildcard, w.legacy = false, false
			continue
		}
		removed = append(removed, n)
	}
	if len(added) > 0 || len(removed) > 0 {
		added, removed = sortedNames(added), sortedNames(removed)
		w.list = internList(withNames(w.subscribed(), added, removed))
		// Subscribing again to a name asks for it again (the proxy lost
		// it), so it is sent whatever version we think it holds; an
		// unsubscribed one is no longer held.
		drop := added
		if !isNew {
			drop = append(slices.Clone(added), removed...)
			slices.Sort(drop)
		} else {
			drop = removed
		}
		if len(drop) > 0 && w.held.len() > 0 {
			w.held = packHeld(withoutNames(w.held.flat(), drop))
		}
	}
	c.mu.Unlock()

	p := &push{req: &PushRequest{Full: true, Reason: "request"}, version: *c.s.version.Load()}
	switch {
	case isNew || addedWildcard:
		_, err := h.send(c, w, nil, p, isNew)
		return err
	case len(added) > 0:
		_, err := h.send(c, w, added, p, false)
		return err
	}
	return nil
}

func (h deltaHandler) push(c *conn, typeURL string, p *push) (bool, error) {
	c.mu.Lock()
	w := c.watches[typeURL]
	var limitedTo []string
	keep, limited := p.req.endpointsLimited()
	if limited && typeURL == EndpointType {
		// Only these clusters' endpoints changed: generate just them.
		limitedTo = p.limitedNames(w.list, keep)
		if !w.wildcard && len(limitedTo) == 0 {
			c.mu.Unlock()
			return false, nil
		}
	}
	wildcard := w.wildcard
	c.mu.Unlock()
	if limited && typeURL == EndpointType && !wildcard {
		return h.send(c, w, limitedTo, p, false)
	}
	return h.send(c, w, nil, p, false)
}

// send generates names (nil: the whole subscription) and sends what the
// proxy does not hold yet, and, for a whole-subscription send, the names
// it holds that no longer exist. always sends even an empty response, which
// a proxy's first request for a type waits for.
func (h deltaHandler) send(c *conn, w *watch, names []string, p *push, always bool) (bool, error) {
	whole := names == nil
	if whole {
		c.mu.Lock()
		names = w.subscription()
		wildcard := w.wildcard
		c.mu.Unlock()
		if !wildcard && len(names) == 0 && !always {
			return false, nil
		}
	}
	var res []*encoding
	// An empty named subscription generates nothing: only an (empty)
	// first answer can be due.
	if names == nil || len(names) > 0 {
		var err error
		if res, err = c.generate(w.typeURL, names, p.req); err != nil {
			return false, nil // logged and counted; the proxy keeps what it has
		}
	}
	// held belongs to the stream goroutine (this one) outside onRequest,
	// which runs on it too: no lock. Both lists are sorted by name.
	var changed []*encoding
	var removed []string
	if whole {
		held := w.held.flat()
		i := 0
		for _, m := range res {
			for i < len(held) && held[i].name < m.name {
				removed = append(removed, held[i].name)
				i++
			}
			if i < len(held) && held[i].name == m.name {
				if held[i].version != m.version {
					changed = append(changed, m)
				}
				i++
				continue
			}
			changed = append(changed, m)
		}
		for ; i < len(held); i++ {
			removed = append(removed, held[i].name)
		}
		w.held = packHeld(res) // what the proxy holds now: exactly the generated set
	} else {
		// A few names (an endpoint change): look each up.
		for _, m := range res {
			if e, ok := w.held.find(m.name); !ok || e.version != m.version {
				changed = append(changed, m)
			}
		}
		w.held = w.held.merge(res)
	}
	if len(changed) == 0 && len(removed) == 0 && !always {
		return false, nil
	}
	nonce := c.s.nextNonce()
	resp, b := deltaResponse(w.typeURL, p.version, nonce, changed, removed)
	w.lastBody = b // keeps the shared body for the streams sending the same
	slot, err := c.acquireSlot(h.stream.Context(), resp.size())
	if err != nil {
		return false, err
	}
	c.sent(w, nonce, p.version, p, slot)
	if err := c.s.send(c, w.typeURL, func() error { return h.stream.SendMsg(resp) }); err != nil {
		return false, err
	}
	return true, nil
}

func byName(a, b *encoding) int { return strings.Compare(a.name, b.name) }

// withNames returns the sorted names of cur plus add minus remove (all
// sorted), as a new slice.
func withNames(cur, add, remove []string) []string {
	out := make([]string, 0, len(cur)+len(add))
	out = append(append(out, cur...), add...)
	slices.Sort(out)
	out = slices.Compact(out)
	if len(remove) > 0 {
		out = slices.DeleteFunc(out, func(n string) bool { _, ok := slices.BinarySearch(remove, n); return ok })
	}
	return out
}

// withoutNames returns held without the sorted names, as a new slice when
// anything is removed (held may be shared with a generated list).
func withoutNames(held []*encoding, names []string) []*encoding {
	if len(names) == 0 || len(held) == 0 {
		return held
	}
	out := make([]*encoding, 0, len(held))
	for _, e := range held {
		if _, ok := slices.BinarySearch(names, e.name); !ok {
			out = append(out, e)
		}
	}
	return out
}

// mergeHeld returns held with res's entries added or replacing those of
// the same name (both sorted), as a new slice.
func mergeHeld(held, res []*encoding) []*encoding {
	out := make([]*encoding, 0, len(held)+len(res))
	i := 0
	for _, m := range res {
		for i < len(held) && held[i].name < m.name {
			out = append(out, held[i])
			i++
		}
		if i < len(held) && held[i].name == m.name {
			i++
		}
		out = append(out, m)
	}
	return append(out, held[i:]...)
}
