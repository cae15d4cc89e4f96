package xdsload

import (
	"context"
	"fmt"
	"math/bits"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// FleetOptions shape how the simulated proxies connect.
type FleetOptions struct {
	Addr           string // skiffd's xDS address (127.0.0.1:PORT)
	Delta          bool   // delta xDS instead of state of the world
	ProxiesPerConn int    // proxies sharing one grpc.ClientConn (1: one each; default 50)
	// WantClusters must all be held before a proxy counts as synced, so a
	// control plane still reading the mesh is not taken as done.
	WantClusters []string
}

// Fleet is a set of simulated proxies on live ADS streams.
type Fleet struct {
	Proxies []*Proxy

	conns   []*grpc.ClientConn
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	start   time.Time
	nsynced atomic.Int64
	allSync chan struct{}
	cur     atomic.Pointer[Wait]
	want    []unique.Handle[string]
	// received counts the bytes of every response the proxies read.
	received atomic.Int64
}

// Received is how many bytes of responses the proxies have read so far.
func (f *Fleet) Received() int64 { return f.received.Load() }

// StartFleet opens one ADS stream per pod in pods and returns at once; the
// streams run until Stop.
func StartFleet(ctx context.Context, pods []*Pod, o FleetOptions) (*Fleet, error) {
	if len(pods) == 0 {
		return nil, fmt.Errorf("no proxies to run: give at least one")
	}
	if o.ProxiesPerConn < 1 {
		o.ProxiesPerConn = 50
	}
	ctx, cancel := context.WithCancel(ctx)
	f := &Fleet{cancel: cancel, allSync: make(chan struct{}), start: time.Now()}
	for _, n := range o.WantClusters {
		f.want = append(f.want, unique.Make(n))
	}
	var cc *grpc.ClientConn
	for i, pod := range pods {
		if i%o.ProxiesPerConn == 0 {
			var err error
			cc, err = grpc.NewClient(o.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
				// One EDS response for a thousand services exceeds gRPC's 4 MB default.
				grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(512<<20)),
				// Many proxies share a connection here, where each Envoy
				// reads its own: a larger read buffer saves the tool read
				// system calls (skiffd writes up to 256 KB at once).
				grpc.WithReadBufferSize(readBufferSize(o.ProxiesPerConn)),
				// Envoy's HTTP/2 windows toward its xDS cluster are large
				// (initial_stream_window_size and initial_connection_window_size
				// default to 256 MiB): a proxy never makes skiffd wait for
				// WINDOW_UPDATEs mid-response. gRPC's 64 KB start and BDP
				// estimation would make each 0.5 MB route response cost
				// round trips a real sidecar does not have.
				grpc.WithInitialWindowSize(streamWindow), grpc.WithInitialConnWindowSize(connWindow),
				experimental.WithBufferPool(framePool))
			if err != nil {
				f.Stop()
				return nil, fmt.Errorf("xDS address %q: %w", o.Addr, err)
			}
			f.conns = append(f.conns, cc)
		}
		p := &Proxy{Index: i, Pod: pod, Node: NodeFor(pod), fleet: f}
		f.Proxies = append(f.Proxies, p)
	}
	for i, p := range f.Proxies {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			p.run(ctx, f.conns[i/o.ProxiesPerConn], o.Delta)
		}()
	}
	return f, nil
}

// framePool hands gRPC the buffers it reads frames into, as its default
// pool does but without zeroing each one first: the transport fills a
// buffer whole before anything reads it, and zeroing 1 GB per route
// change cost the tool an eighth of its CPU, on skiffd's cores.
var framePool = &dirtyPool{}

// dirtyPool pools buffers by power-of-two capacity up to 64 KB (gRPC's
// frames are at most 16 KB); larger ones are not kept.
type dirtyPool struct{ tiers [17]sync.Pool }

func (p *dirtyPool) Get(n int) *[]byte {
	t := bits.Len(uint(max(n, 1) - 1)) // the smallest 2^t ≥ n
	if t >= len(p.tiers) {
		b := make([]byte, n)
		return &b
	}
	if b, ok := p.tiers[t].Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<t)
	return &b
}

func (p *dirtyPool) Put(b *[]byte) {
	c := cap(*b)
	if t := bits.Len(uint(c)) - 1; c > 0 && c == 1<<t && t < len(p.tiers) {
		p.tiers[t].Put(b)
	}
}

// readBufferSize is a connection's read buffer: gRPC's 32 KB for a
// proxy of its own, up to 256 KB for many.
func readBufferSize(proxies int) int { return min(proxies, 8) * 32 << 10 }

// Conns is how many gRPC client connections carry the streams.
func (f *Fleet) Conns() int { return len(f.conns) }

// Stop ends every stream and connection and waits for the proxies.
func (f *Fleet) Stop() {
	f.cancel()
	f.wg.Wait()
	for _, c := range f.conns {
		c.Close()
	}
}

func (f *Fleet) synced(*Proxy) {
	if f.nsynced.Add(1) == int64(len(f.Proxies)) {
		close(f.allSync)
	}
}

// WaitSynced waits until every proxy holds every resource it subscribed
// to, and returns how long that took from StartFleet.
func (f *Fleet) WaitSynced(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-f.allSync:
		var last time.Time
		for _, p := range f.Proxies {
			if s := p.SyncedAt(); s.After(last) {
				last = s
			}
		}
		return last.Sub(f.start), nil
	case <-t.C:
	case <-ctx.Done():
	}
	return 0, fmt.Errorf("%d of %d proxies synced within %v: %s", f.nsynced.Load(), len(f.Proxies), timeout, f.errorSummary())
}

// errorSummary counts the proxies' errors and quotes one.
func (f *Fleet) errorSummary() string {
	var dec, str int64
	last := ""
	for _, p := range f.Proxies {
		d, s, l := p.Errors()
		dec, str = dec+d, str+s
		if l != "" {
			last = l
		}
	}
	if last == "" {
		return "no decode or stream errors"
	}
	return fmt.Sprintf("%d decode errors, %d stream errors, last: %s", dec, str, last)
}

// Errors sums the proxies' decode and stream errors.
func (f *Fleet) Errors() (decode, stream int64) {
	for _, p := range f.Proxies {
		d, s, _ := p.Errors()
		decode, stream = decode+d, stream+s
	}
	return decode, stream
}

// Expectation is content a change should bring to every proxy: a resource
// of TypeURL whose serialized form satisfies match. Matchers read only the
// part they look at, where it lies: every proxy runs them on every
// response.
type Expectation struct {
	TypeURL string
	What    string // for messages: "route weights 30/70 for reviews.default.svc.cluster.local:9080"
	match   func(raw span) bool
}

// Match reports whether the serialized resource raw holds the expected
// content.
func (e Expectation) Match(raw []byte) bool { return e.match(spanOf(raw)) }

// RouteWeights expects a route configuration whose virtual host for
// host:port (Istio's name for it) has a route splitting between the v1 and
// v2 subset clusters with weights w1 and w2.
func RouteWeights(host string, port, w1, w2 int) Expectation {
	c1 := "outbound|" + strconv.Itoa(port) + "|v1|" + host
	c2 := "outbound|" + strconv.Itoa(port) + "|v2|" + host
	vh := host + ":" + strconv.Itoa(port)
	return Expectation{
		TypeURL: RouteType,
		What:    fmt.Sprintf("route weights %d/%d for %s", w1, w2, vh),
		match: func(raw span) bool {
			found := false
			// A malformed body was already counted when the proxy decoded it.
			_ = scanSpan(raw, fields(2), func(num protowire.Number, v span, _ uint64) error {
				if num != 2 || found { // virtual_hosts
					return nil
				}
				if name, err := firstField(v, 1); err != nil || !name.equal(vh) {
					return nil
				}
				h := &routev3.VirtualHost{}
				if proto.Unmarshal(v.bytes(), h) != nil {
					return errStop
				}
				for _, r := range h.GetRoutes() {
					got := map[string]uint32{}
					for _, c := range r.GetRoute().GetWeightedClusters().GetClusters() {
						got[c.GetName()] = c.GetWeight().GetValue()
					}
					if got[c1] == uint32(w1) && got[c2] == uint32(w2) {
						found = true
					}
				}
				return errStop // virtual host names are unique
			})
			return found
		},
	}
}

// EndpointAddress expects the load assignment of cluster to hold ip.
func EndpointAddress(cluster, ip string) Expectation {
	return Expectation{
		TypeURL: EndpointType,
		What:    fmt.Sprintf("endpoint %s in %s", ip, cluster),
		match: func(raw span) bool {
			if name, err := firstField(raw, 1); err != nil || !name.equal(cluster) {
				return false
			}
			la := &endpointv3.ClusterLoadAssignment{}
			if proto.Unmarshal(raw.bytes(), la) != nil {
				return false
			}
			for _, le := range la.GetEndpoints() {
				for _, e := range le.GetLbEndpoints() {
					if e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress() == ip {
						return true
					}
				}
			}
			return false
		},
	}
}

// Wait follows one expectation across the fleet: for each proxy, the time
// from T0 until it ACKed a response carrying the expected content.
type Wait struct {
	exp     Expectation
	t0      time.Time
	acked   []atomic.Int64 // nanoseconds after T0; 0 until seen
	pending atomic.Int64
	others  atomic.Int64 // responses of the type to proxies not concerned
	done    chan struct{}
}

// Expect starts timing exp: T0 is now, so call it just before making the
// change. One expectation is followed at a time; Expect replaces the last.
func (f *Fleet) Expect(exp Expectation) *Wait { return f.ExpectOf(exp, nil) }

// ExpectOf is Expect for the proxies concerned accepts (all when nil):
// the others are neither waited for nor counted.
func (f *Fleet) ExpectOf(exp Expectation, concerned func(*Proxy) bool) *Wait {
	w := &Wait{exp: exp, acked: make([]atomic.Int64, len(f.Proxies)), done: make(chan struct{})}
	n := 0
	for i, p := range f.Proxies {
		if concerned == nil || concerned(p) {
			n++
		} else {
			w.acked[i].Store(notConcerned)
		}
	}
	w.pending.Store(int64(n))
	if n == 0 {
		close(w.done)
	}
	w.t0 = time.Now()
	f.cur.Store(w)
	return w
}

// notConcerned marks, in Wait.acked, a proxy the expectation leaves out.
const notConcerned = -1

// observe is called by a proxy after it ACKed a response.
func (f *Fleet) observe(p *Proxy, typeURL string, got []decoded, acked time.Time) {
	w := f.cur.Load()
	if w == nil || w.exp.TypeURL != typeURL {
		return
	}
	switch w.acked[p.Index].Load() {
	case 0:
	case notConcerned:
		w.others.Add(1)
		return
	default:
		return
	}
	for _, d := range got {
		if w.exp.match(d.raw) {
			if w.acked[p.Index].CompareAndSwap(0, max(int64(acked.Sub(w.t0)), 1)) && w.pending.Add(-1) == 0 {
				close(w.done)
			}
			return
		}
	}
}

// Result is how one change reached the fleet.
type Result struct {
	What    string
	Times   []time.Duration // per proxy, from T0 to its ACK; only those that got it
	Last    time.Duration   // the slowest proxy: when the change was everywhere
	Missing int             // proxies that had not ACKed it at the deadline
	// Others counts the responses of the expected type that proxies the
	// change does not concern (ExpectOf) received while it was followed.
	Others int
}

// Wait blocks until every proxy ACKed the expected content, or timeout.
func (w *Wait) Wait(ctx context.Context, timeout time.Duration) Result {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-w.done:
	case <-t.C:
	case <-ctx.Done():
	}
	r := Result{What: w.exp.What, Others: int(w.others.Load())}
	for i := range w.acked {
		v := w.acked[i].Load()
		if v == notConcerned {
			continue
		}
		if v == 0 {
			r.Missing++
			continue
		}
		d := time.Duration(v)
		r.Times = append(r.Times, d)
		r.Last = max(r.Last, d)
	}
	return r
}

// HTTP/2 flow-control windows of the simulated proxies (see New).
const (
	streamWindow = 16 << 20
	connWindow   = 256 << 20
)
