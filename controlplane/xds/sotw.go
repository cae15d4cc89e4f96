package xds

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
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
	changed := isNew || nonce == "" || wildcard != w.wildcard || !sameNames(w.names, names)
	w.wildcard, w.legacy = wildcard, legacy
	w.names = toSet(names)
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
	names, wildcard := w.subscription(), w.wildcard
	c.mu.Unlock()
	if !wildcard && len(names) == 0 {
		return false, nil
	}
	res, err := c.generate(w.typeURL, names, p.req)
	if err != nil {
		return false, nil // logged and counted; the proxy keeps what it has
	}
	anys := make([]*anypb.Any, len(res))
	for i, m := range res {
		anys[i] = m.any
	}
	nonce := c.s.nextNonce()
	resp := &discoveryv3.DiscoveryResponse{TypeUrl: w.typeURL, VersionInfo: p.version, Nonce: nonce, Resources: anys}
	c.sent(w, nonce, p.version, p)
	if err := c.s.send(c, w.typeURL, func() error { return h.stream.Send(resp) }); err != nil {
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

func toSet(names []string) map[string]struct{} {
	m := make(map[string]struct{}, len(names))
	for _, n := range names {
		m[n] = struct{}{}
	}
	return m
}

func sameNames(set map[string]struct{}, names []string) bool {
	other := toSet(names)
	if len(other) != len(set) {
		return false
	}
	for n := range other {
		if _, ok := set[n]; !ok {
			return false
		}
	}
	return true
}
