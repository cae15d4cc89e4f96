package xds

import (
	"slices"

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
		for n, v := range r.GetInitialResourceVersions() {
			w.known[n] = v
		}
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
	var added []string
	addedWildcard := false
	for _, n := range r.GetResourceNamesSubscribe() {
		if n == "*" {
			addedWildcard = !w.wildcard
			w.wildcard, w.legacy = true, false
			continue
		}
		// Subscribing again to a name asks for it again (the proxy
		// lost it), so it is sent whatever version we think it holds.
		w.names[n] = struct{}{}
		w.list = nil
		if !isNew {
			delete(w.known, n)
		}
		added = append(added, n)
	}
	for _, n := range r.GetResourceNamesUnsubscribe() {
		if n == "*" {
			w.wildcard, w.legacy = false, false
			continue
		}
		delete(w.names, n)
		delete(w.known, n)
		w.list = nil
	}
	c.mu.Unlock()

	p := &push{req: &PushRequest{Full: true, Reason: "request"}, version: *c.s.version.Load()}
	switch {
	case isNew || addedWildcard:
		_, err := h.send(c, w, nil, p, isNew)
		return err
	case len(added) > 0:
		slices.Sort(added)
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
		for n := range w.names {
			if keep(n) {
				limitedTo = append(limitedTo, n)
			}
		}
		if !w.wildcard && len(limitedTo) == 0 {
			c.mu.Unlock()
			return false, nil
		}
	}
	wildcard := w.wildcard
	c.mu.Unlock()
	if limited && typeURL == EndpointType && !wildcard {
		slices.Sort(limitedTo)
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
	var changed []*encoding
	var removed []string
	present := make(map[string]struct{}, len(res))
	// known belongs to the stream goroutine (this one): no lock.
	for _, m := range res {
		present[m.name] = struct{}{}
		if w.known[m.name] == m.version {
			continue
		}
		changed = append(changed, m)
		w.known[m.name] = m.version
	}
	if whole {
		for n := range w.known {
			if _, ok := present[n]; !ok {
				removed = append(removed, n)
				delete(w.known, n)
			}
		}
		slices.Sort(removed)
	}
	if len(changed) == 0 && len(removed) == 0 && !always {
		return false, nil
	}
	nonce := c.s.nextNonce()
	resp := deltaResponse(w.typeURL, p.version, nonce, changed, removed)
	c.sent(w, nonce, p.version, p)
	if err := c.s.send(c, w.typeURL, func() error { return h.stream.SendMsg(resp) }); err != nil {
		return false, err
	}
	return true, nil
}
