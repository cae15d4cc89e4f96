package xdsclient

import (
	"context"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// stream is what differs between state-of-the-world and delta ADS. The
// request builders are called with Client.mu held and may update t.
type stream interface {
	send(req any) error
	recv() (any, error)
	response(m any) response
	// subscriptionRequest returns the request that tells the server about
	// t's subscription (initial, or a change since the last one sent on
	// this stream), or nil when there is nothing to say.
	subscriptionRequest(t *typeState, withNode bool, node *corev3.Node) any
	// acked records an applied update in t.
	acked(t *typeState, u *Update)
	// ackRequest answers the response with nonce: ACK when nack is nil.
	ackRequest(t *typeState, nonce string, nack error, withNode bool, node *corev3.Node) any
}

// response is the part of a response the client loop needs.
type response struct {
	typeURL, nonce, version string
	decode                  func() (*Update, error)
}

func nodeIf(withNode bool, node *corev3.Node) *corev3.Node {
	if withNode {
		return node
	}
	return nil
}

// errorDetail is the google.rpc.Status of a NACK; Envoy uses INTERNAL.
func errorDetail(nack error) *status.Status {
	if nack == nil {
		return nil
	}
	return &status.Status{Code: int32(codes.Internal), Message: nack.Error()}
}

// sotwStream is state of the world: every request carries the full set of
// names, the version last ACKed and the nonce last received.
type sotwStream struct {
	s grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
}

func newSotwStream(ctx context.Context, conn *grpc.ClientConn) (stream, error) {
	s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	return &sotwStream{s: s}, nil
}

func (s *sotwStream) send(req any) error { return s.s.Send(req.(*discoveryv3.DiscoveryRequest)) }

func (s *sotwStream) recv() (any, error) { return s.s.Recv() }

func (s *sotwStream) response(m any) response {
	r := m.(*discoveryv3.DiscoveryResponse)
	return response{
		typeURL: r.GetTypeUrl(),
		nonce:   r.GetNonce(),
		version: r.GetVersionInfo(),
		decode:  func() (*Update, error) { return decodeSotw(r.GetTypeUrl(), r) },
	}
}

func (s *sotwStream) subscriptionRequest(t *typeState, withNode bool, node *corev3.Node) any {
	if !t.sent {
		// A type with no names is not asked for at all: an empty list
		// would be read as a wildcard.
		if !t.wildcard && len(t.names) == 0 {
			return nil
		}
	} else if t.sentWild == t.wildcard && sameSet(t.sentNames, t.names) {
		return nil
	}
	return &discoveryv3.DiscoveryRequest{
		Node:          nodeIf(withNode, node),
		TypeUrl:       t.url,
		VersionInfo:   t.version,
		ResourceNames: sortedNames(t.names),
		ResponseNonce: t.nonce,
	}
}

func (s *sotwStream) acked(t *typeState, u *Update) { t.count = len(u.Resources) }

func (s *sotwStream) ackRequest(t *typeState, nonce string, nack error, withNode bool, node *corev3.Node) any {
	// The ACK carries the current names too, so a change the handler made
	// while applying this response travels with it.
	t.sentWild, t.sentNames = t.wildcard, copySet(t.names)
	return &discoveryv3.DiscoveryRequest{
		Node:          nodeIf(withNode, node),
		TypeUrl:       t.url,
		VersionInfo:   t.version, // on NACK, still the last good one
		ResourceNames: sortedNames(t.names),
		ResponseNonce: nonce,
		ErrorDetail:   errorDetail(nack),
	}
}

// deltaStream is incremental: requests carry subscription changes, and on a
// new stream the versions of every resource held.
type deltaStream struct {
	s grpc.BidiStreamingClient[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]
}

func newDeltaStream(ctx context.Context, conn *grpc.ClientConn) (stream, error) {
	s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	return &deltaStream{s: s}, nil
}

func (s *deltaStream) send(req any) error {
	return s.s.Send(req.(*discoveryv3.DeltaDiscoveryRequest))
}

func (s *deltaStream) recv() (any, error) { return s.s.Recv() }

func (s *deltaStream) response(m any) response {
	r := m.(*discoveryv3.DeltaDiscoveryResponse)
	return response{
		typeURL: r.GetTypeUrl(),
		nonce:   r.GetNonce(),
		version: r.GetSystemVersionInfo(),
		decode:  func() (*Update, error) { return decodeDelta(r.GetTypeUrl(), r) },
	}
}

func (s *deltaStream) subscriptionRequest(t *typeState, withNode bool, node *corev3.Node) any {
	if !t.sent {
		if !t.wildcard && len(t.names) == 0 {
			return nil
		}
		// An empty subscribe list on the first request is a wildcard.
		var initial map[string]string
		if len(t.known) > 0 {
			initial = make(map[string]string, len(t.known))
			for n, v := range t.known {
				initial[n] = v
			}
		}
		return &discoveryv3.DeltaDiscoveryRequest{
			Node:                    nodeIf(withNode, node),
			TypeUrl:                 t.url,
			ResourceNamesSubscribe:  sortedNames(t.names),
			InitialResourceVersions: initial,
		}
	}
	var sub, unsub []string
	for n := range t.names {
		if _, ok := t.sentNames[n]; !ok {
			sub = append(sub, n)
		}
	}
	for n := range t.sentNames {
		if _, ok := t.names[n]; !ok {
			unsub = append(unsub, n)
			// The server forgets it for us; forget its version too so a
			// later subscribe is not answered as already known.
			delete(t.known, n)
		}
	}
	switch {
	case t.wildcard && !t.sentWild:
		sub = append(sub, "*")
	case !t.wildcard && t.sentWild:
		unsub = append(unsub, "*")
	}
	if len(sub) == 0 && len(unsub) == 0 {
		return nil
	}
	slices.Sort(sub)
	slices.Sort(unsub)
	return &discoveryv3.DeltaDiscoveryRequest{
		Node:                     nodeIf(withNode, node),
		TypeUrl:                  t.url,
		ResourceNamesSubscribe:   sub,
		ResourceNamesUnsubscribe: unsub,
	}
}

func (s *deltaStream) acked(t *typeState, u *Update) {
	for _, r := range u.Resources {
		t.known[r.Name] = r.Version
	}
	for _, n := range u.Removed {
		delete(t.known, n)
	}
	t.count = len(t.known)
}

func (s *deltaStream) ackRequest(t *typeState, nonce string, nack error, withNode bool, node *corev3.Node) any {
	return &discoveryv3.DeltaDiscoveryRequest{
		Node:          nodeIf(withNode, node),
		TypeUrl:       t.url,
		ResponseNonce: nonce,
		ErrorDetail:   errorDetail(nack),
	}
}
