package xdsload

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"
)

// IstioVersion is the ISTIO_VERSION the simulated sidecars announce.
const IstioVersion = "1.28.0"

// NodeFor is the node a sidecar of pod p sends, as istio-agent fills it in
// a Kubernetes pod, so skiffd treats the simulated proxy as that workload.
func NodeFor(p *Pod) *corev3.Node {
	labels := map[string]any{"app": p.App, "version": p.Version}
	md, err := structpb.NewStruct(map[string]any{
		"NAMESPACE":       p.Namespace,
		"NAME":            p.Name,
		"LABELS":          labels,
		"SERVICE_ACCOUNT": p.ServiceAccount,
		"INSTANCE_IPS":    p.IP,
		"WORKLOAD_NAME":   p.App + "-" + p.Version,
		"ISTIO_VERSION":   IstioVersion,
		"CLUSTER_ID":      "Kubernetes",
	})
	if err != nil { // only strings and string maps above: cannot fail
		panic(err)
	}
	return &corev3.Node{
		Id:            fmt.Sprintf("sidecar~%s~%s.%s~%s.svc.cluster.local", p.IP, p.Name, p.Namespace, p.Namespace),
		Cluster:       p.App + "." + p.Namespace,
		Metadata:      md,
		UserAgentName: "envoy",
	}
}

// typeState is what one proxy holds for one xDS type.
type typeState struct {
	version, nonce string
	responses      int
	acks           int
	requested      bool
	names          []unique.Handle[string] // subscribed names (EDS, RDS), sorted; nil for wildcard
	resources      map[unique.Handle[string]]resState
}

// resState is one resource a proxy holds: the version it came with, when it
// arrived, and what it depends on. It is small on purpose: 2000 proxies
// each hold thousands.
type resState struct {
	version unique.Handle[string]
	at      int64 // unix nanoseconds
	deps    []unique.Handle[string]
}

// TypeStatus is a proxy's view of one xDS type.
type TypeStatus struct {
	Type      string // CDS, EDS, LDS, RDS
	Version   string // last version received (and ACKed)
	Nonce     string // last nonce ACKed
	Responses int
	ACKs      int
	Resources int
}

// Proxy is one simulated sidecar on its own ADS stream.
type Proxy struct {
	Index int
	Pod   *Pod
	Node  *corev3.Node

	fleet *Fleet

	mu       sync.Mutex
	types    [4]typeState // indexed like Types
	syncedAt time.Time

	decodeErrors atomic.Int64
	streamErrors atomic.Int64
	lastErr      atomic.Pointer[string]
}

func typeIndex(typeURL string) int { return slices.Index(Types, typeURL) }

// Status is the proxy's per-type state.
func (p *Proxy) Status() []TypeStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]TypeStatus, len(Types))
	for i, t := range p.types {
		out[i] = TypeStatus{Type: ShortType(Types[i]), Version: t.version, Nonce: t.nonce,
			Responses: t.responses, ACKs: t.acks, Resources: len(t.resources)}
	}
	return out
}

// ResourceVersion is the version and arrival time of one resource the
// proxy holds.
func (p *Proxy) ResourceVersion(typeURL, name string) (version string, at time.Time, ok bool) {
	i := typeIndex(typeURL)
	if i < 0 {
		return "", time.Time{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.types[i].resources[unique.Make(name)]
	if !ok {
		return "", time.Time{}, false
	}
	return r.version.Value(), time.Unix(0, r.at), true
}

// SyncedAt is when the proxy first held every resource it subscribed to
// (zero until then).
func (p *Proxy) SyncedAt() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.syncedAt
}

// Errors are the responses (or resources) the proxy could not decode and
// the streams that broke.
func (p *Proxy) Errors() (decode, stream int64, last string) {
	if s := p.lastErr.Load(); s != nil {
		last = *s
	}
	return p.decodeErrors.Load(), p.streamErrors.Load(), last
}

func (p *Proxy) fail(kind *atomic.Int64, err error) {
	kind.Add(1)
	s := err.Error()
	p.lastErr.Store(&s)
}

// run keeps the proxy's stream up until ctx ends, reconnecting (with a
// fresh state, as a restarted Envoy would) after a bounded pause.
func (p *Proxy) run(ctx context.Context, cc *grpc.ClientConn, delta bool) {
	for backoff := 50 * time.Millisecond; ctx.Err() == nil; backoff = min(backoff*2, 2*time.Second) {
		p.mu.Lock()
		p.types = [4]typeState{}
		p.mu.Unlock()
		var err error
		if delta {
			err = p.runDelta(ctx, cc)
		} else {
			err = p.runSotW(ctx, cc)
		}
		if ctx.Err() != nil {
			return
		}
		p.fail(&p.streamErrors, err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
	}
}

// sender is the part of a stream the protocol logic writes to; the SotW
// and delta streams each adapt to it.
type sender func(typeURL string, ack bool, names []string, unsubscribe []string) error

func (p *Proxy) runSotW(ctx context.Context, cc *grpc.ClientConn) error {
	stream, err := openStream(ctx, cc, sotwMethod)
	if err != nil {
		return err
	}
	first := true
	send := func(typeURL string, _ bool, names, _ []string) error {
		p.mu.Lock()
		t := &p.types[typeIndex(typeURL)]
		req := &discoveryv3.DiscoveryRequest{TypeUrl: typeURL, VersionInfo: t.version, ResponseNonce: t.nonce, ResourceNames: values(t.names)}
		p.mu.Unlock()
		if first {
			req.Node, first = p.Node, false
		}
		return stream.SendMsg(req)
	}
	if err := p.start(send); err != nil {
		return err
	}
	for {
		if err := p.handleSotW(stream, send); err != nil {
			return err
		}
	}
}

// handleSotW receives and handles one response; the resources' bytes stay
// in gRPC's buffers until it returns.
func (p *Proxy) handleSotW(stream grpc.ClientStream, send sender) error {
	var m wireMsg
	if err := stream.RecvMsg(&m); err != nil {
		return err
	}
	defer m.free()
	now := time.Now()
	p.fleet.received.Add(int64(m.bufs.Len()))
	resp, err := parseSotW(&m)
	if err != nil {
		// The nonce is unknown: nothing can be ACKed, as Envoy would fail.
		return err
	}
	got := make([]decoded, 0, len(resp.resources))
	for _, r := range resp.resources {
		d, err := decode(resp.typeURL, r.value)
		if err != nil {
			p.fail(&p.decodeErrors, fmt.Errorf("%s version %s: %w", ShortType(resp.typeURL), resp.version, err))
			continue
		}
		got = append(got, d)
	}
	ver := intern([]byte(resp.version))
	full := resp.typeURL == ClusterType || resp.typeURL == ListenerType
	return p.apply(send, resp.typeURL, resp.version, resp.nonce, full, func(m map[unique.Handle[string]]resState) {
		for _, d := range got {
			m[d.name] = resState{version: ver, at: now.UnixNano(), deps: d.deps}
		}
	}, got)
}

func (p *Proxy) runDelta(ctx context.Context, cc *grpc.ClientConn) error {
	stream, err := openStream(ctx, cc, deltaMethod)
	if err != nil {
		return err
	}
	first := true
	send := func(typeURL string, ack bool, names, unsubscribe []string) error {
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeURL, ResourceNamesSubscribe: names, ResourceNamesUnsubscribe: unsubscribe}
		if ack {
			p.mu.Lock()
			req.ResponseNonce = p.types[typeIndex(typeURL)].nonce
			p.mu.Unlock()
		}
		if first {
			req.Node, first = p.Node, false
		}
		return stream.SendMsg(req)
	}
	if err := p.start(send); err != nil {
		return err
	}
	for {
		if err := p.handleDelta(stream, send); err != nil {
			return err
		}
	}
}

// handleDelta receives and handles one response; the resources' bytes
// stay in gRPC's buffers until it returns.
func (p *Proxy) handleDelta(stream grpc.ClientStream, send sender) error {
	var m wireMsg
	if err := stream.RecvMsg(&m); err != nil {
		return err
	}
	defer m.free()
	now := time.Now()
	p.fleet.received.Add(int64(m.bufs.Len()))
	resp, err := parseDelta(&m)
	if err != nil {
		return err
	}
	type upd struct {
		d   decoded
		ver unique.Handle[string]
	}
	ups := make([]upd, 0, len(resp.resources))
	got := make([]decoded, 0, len(resp.resources))
	for i, r := range resp.resources {
		d, err := decode(resp.typeURL, r.value)
		if err != nil {
			p.fail(&p.decodeErrors, fmt.Errorf("%s version %s, resource %d: %w", ShortType(resp.typeURL), resp.version, i, err))
			continue
		}
		ups = append(ups, upd{d, r.version})
		got = append(got, d)
	}
	removed := resp.removed
	return p.apply(send, resp.typeURL, resp.version, resp.nonce, false, func(m map[unique.Handle[string]]resState) {
		for _, u := range ups {
			m[u.d.name] = resState{version: u.ver, at: now.UnixNano(), deps: u.d.deps}
		}
		for _, n := range removed {
			delete(m, unique.Make(n))
		}
	}, got)
}

// start subscribes to clusters, as Envoy does first; listeners follow once
// the clusters are warm.
func (p *Proxy) start(send sender) error {
	p.mu.Lock()
	p.types[0].requested = true
	p.mu.Unlock()
	return send(ClusterType, false, nil, nil)
}

// apply records one response, then follows Envoy's order: new EDS (or
// RDS) subscriptions go out before the CDS (or LDS) ACK, LDS is requested
// once the first clusters are warm, and every response is ACKed (never
// NACKed: what failed to decode is counted instead).
func (p *Proxy) apply(send sender, typeURL, version, nonce string, full bool, update func(map[unique.Handle[string]]resState), got []decoded) error {
	i := typeIndex(typeURL)
	if i < 0 {
		p.fail(&p.decodeErrors, fmt.Errorf("response of unsubscribed type %s", typeURL))
		return nil
	}
	p.mu.Lock()
	t := &p.types[i]
	t.version, t.nonce = version, nonce
	t.responses++
	if full || t.resources == nil {
		t.resources = make(map[unique.Handle[string]]resState, len(got))
	}
	update(t.resources)
	follow := -1 // the type whose subscription this response drives
	var want []unique.Handle[string]
	switch typeURL {
	case ClusterType:
		follow, want = 1, depsOf(t.resources)
	case ListenerType:
		follow, want = 3, depsOf(t.resources)
	}
	var sub, unsub []string
	resubscribe := false
	if follow >= 0 {
		f := &p.types[follow]
		if !f.requested || !slices.Equal(f.names, want) { // interned: equal handles, equal names
			sub, unsub = diff(f.names, want)
			resubscribe = f.requested || len(want) > 0
			f.names = want
			f.requested = f.requested || len(want) > 0
			if f.resources != nil { // SotW keeps only what is subscribed
				keep := make(map[unique.Handle[string]]bool, len(want))
				for _, n := range want {
					keep[n] = true
				}
				for n := range f.resources {
					if !keep[n] {
						delete(f.resources, n)
					}
				}
			}
		}
	}
	askLDS := !p.types[2].requested && (typeURL == EndpointType || (typeURL == ClusterType && len(p.types[1].names) == 0))
	if askLDS {
		p.types[2].requested = true
	}
	p.mu.Unlock()

	if resubscribe {
		if err := send(Types[follow], false, sub, unsub); err != nil {
			return err
		}
	}
	if err := send(typeURL, true, nil, nil); err != nil {
		return err
	}
	acked := time.Now()
	p.mu.Lock()
	t.acks++
	p.mu.Unlock()
	if askLDS {
		if err := send(ListenerType, false, nil, nil); err != nil {
			return err
		}
	}
	p.fleet.observe(p, typeURL, got, acked)
	p.checkSynced(acked)
	return nil
}

// depsOf lists, sorted by name and deduplicated, what the held resources
// depend on.
func depsOf(m map[unique.Handle[string]]resState) []unique.Handle[string] {
	out := make([]unique.Handle[string], 0, len(m))
	for _, r := range m {
		out = append(out, r.deps...)
	}
	slices.SortFunc(out, byName)
	return slices.Compact(out)
}

func byName(a, b unique.Handle[string]) int { return strings.Compare(a.Value(), b.Value()) }

func values(hs []unique.Handle[string]) []string {
	if hs == nil {
		return nil
	}
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.Value()
	}
	return out
}

// diff is what to subscribe and unsubscribe to go from old to new (both
// sorted by name).
func diff(old, new []unique.Handle[string]) (sub, unsub []string) {
	for _, n := range new {
		if _, ok := slices.BinarySearchFunc(old, n, byName); !ok {
			sub = append(sub, n.Value())
		}
	}
	for _, n := range old {
		if _, ok := slices.BinarySearchFunc(new, n, byName); !ok {
			unsub = append(unsub, n.Value())
		}
	}
	return sub, unsub
}

// checkSynced marks the proxy synced once it has ACKed clusters and
// listeners, holds the clusters the fleet wants, and holds every endpoint
// and route config they name.
func (p *Proxy) checkSynced(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.syncedAt.IsZero() || p.types[0].acks == 0 || p.types[2].acks == 0 {
		return
	}
	for _, n := range p.fleet.want {
		if _, ok := p.types[0].resources[n]; !ok {
			return
		}
	}
	for _, f := range []int{1, 3} {
		for _, n := range p.types[f].names {
			if _, ok := p.types[f].resources[n]; !ok {
				return
			}
		}
	}
	p.syncedAt = now
	p.fleet.synced(p)
}
