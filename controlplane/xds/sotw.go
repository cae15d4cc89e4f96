package xds

import (
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
)

// sotwHandler speaks state of the world: every response holds the whole
// set of the type's subscribed resources.
type sotwHandler struct {
	stream grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
}

func (sotwHandler) node(r *discoveryv3.DiscoveryRequest) *corev3.Node { return r.GetNode() }

// onRequest tells an ACK, a NACK, a stale request and a subscription
// change apart by nonce, as Envoy's protocol defines them, and answers the
// new subscriptions.
func (h sotwHandler) onRequest(c *conn, r *discoveryv3.DiscoveryRequest) error {
	t := r.GetTypeUrl()
	if r.GetErrorDetail() != nil {
		c.nack(t, r.GetResponseNonce(), r.GetErrorDetail().GetMessage())
		return nil
	}
	names, star := splitWildcard(r.GetResourceNames())

	c.mu.Lock()
	w := c.watches[t]
	isNew := w == nil
	if isNew {
		w = newWatch(t)
		c.watches[t] = w
	}
	// Without a nonce (or on a stream that never sent this type, as
	// after a reconnect) it is a first request: always answered.
	nonce := r.GetResponseNonce()
	if !isNew && nonce != "" {
		c.mu.Unlock()
		if !c.ack(w, nonce, r.GetVersionInfo()) {
			// An answer to a response superseded since: the proxy
			// will also answer the newer one.
			c.expired(t)
			return nil
		}
		c.mu.Lock()
	}
	wildcard := star || (len(names) == 0 && (isNew || w.legacy))
	legacy := !star && wildcard
	names = sortedNames(names)
	// Every ACK repeats the subscription: comparing it must stay cheap
	// (thousands of proxies × thousands of names).
	changed := isNew || nonce == "" || wildcard != w.wildcard || w.list == nil || !slices.Equal(w.list.names, names)
	w.wildcard, w.legacy = wildcard, legacy
	if changed {
		w.list = internList(names)
	}
	c.mu.Unlock()
	if !changed {
		return nil // a pure ACK
	}
	_, err := h.send(c, w, &push{req: &PushRequest{Full: true, Reason: "request"}, version: *c.s.version.Load()})
	return err
}

func (h sotwHandler) push(c *conn, typeURL string, p *push) (bool, error) {
	c.mu.Lock()
	w := c.watches[typeURL]
	c.mu.Unlock()
	return h.send(c, w, p)
}

// send generates the type's full subscribed set and sends it.
func (h sotwHandler) send(c *conn, w *watch, p *push) (bool, error) {
	c.mu.Lock()
	names, list, wildcard := w.subscription(), w.list, w.wildcard
	c.mu.Unlock()
	if !wildcard && len(names) == 0 {
		return false, nil
	}
	keep, limited := func(string) bool { return true }, false
	if w.typeURL == EndpointType {
		if k, ok := p.req.endpointsLimited(); ok {
			// Only these clusters' endpoints changed: state of the world
			// lets EDS carry just them, the proxy keeps the rest.
			keep, limited = k, true
			if !wildcard {
				names = p.limitedNames(list, keep)
			}
			if !wildcard && len(names) == 0 {
				return false, nil
			}
		}
	}
	res, err := c.generate(w.typeURL, names, p.req)
	if err != nil {
		return false, nil // logged and counted; the proxy keeps what it has
	}
	if limited {
		res = slices.DeleteFunc(res, func(e *encoding) bool { return !keep(e.name) })
		if len(res) == 0 {
			return false, nil
		}
	}
	nonce := c.s.nextNonce()
	resp, b := sotwResponse(w.typeURL, p.version, nonce, res)
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

// splitWildcard separates the explicit wildcard "*" from real names.
func splitWildcard(in []string) (names []string, star bool) {
	for _, n := range in {
		if n == "*" {
			star = true
			continue
		}
		names = append(names, n)
	}
	return names, star
}

// sortedNames returns names sorted and without repeats, copying only
// when they are not already so (Envoy sends them sorted).
func sortedNames(names []string) []string {
	for i := 1; i < len(names); i++ {
		if names[i-1] >= names[i] {
			names = slices.Clone(names)
			slices.Sort(names)
			return slices.Compact(names)
		}
	}
	return names
}
