// Package xdsclient owns skiff-proxy's side of the xDS v3 protocol: one ADS
// stream over gRPC, state-of-the-world or delta, per-type subscriptions,
// decoding and validating resources, ACK/NACK with versions and nonces, and
// reconnecting with backoff while the handler keeps its last good state.
//
// It does not interpret resources: a Handler receives each response already
// decoded and answers with an error (NACK) or nil (ACK).
package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/skiff-mesh/skiff/dataplane/xdstypes"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// Config says how to reach the management server and who receives updates.
type Config struct {
	Dial    func(ctx context.Context) (*grpc.ClientConn, error) // how to reach the management server
	Node    *corev3.Node
	Delta   bool // DELTA_GRPC instead of GRPC
	Handler Handler
	Logger  *slog.Logger
	// Stats, when set, receives Envoy's xDS health statistics:
	// control_plane.connected_state, and per type
	// cluster_manager.cds.*, listener_manager.lds.*, and for routes and
	// endpoints (which Envoy counts per resource) xds.rds.* and xds.eds.*:
	// update_attempt, update_success, update_rejected, update_time (ms
	// since the epoch of the last success) and version (a hash of it).
	Stats *stats.Store
	// Reconnect backoff: exponential from BackoffBase to BackoffMax, with
	// full jitter. Defaults 500ms and 30s.
	BackoffBase, BackoffMax time.Duration
}

// Handler applies updates.
type Handler interface {
	// OnUpdate receives one response's resources of typeURL, already decoded
	// (Any → concrete message, wrapped Resource unwrapped). A non-nil error
	// NACKs the response with that message (the handler must have kept its
	// previous state); nil ACKs it. Called from one goroutine, in order.
	OnUpdate(typeURL string, u *Update) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(typeURL string, u *Update) error

// OnUpdate calls f.
func (f HandlerFunc) OnUpdate(typeURL string, u *Update) error { return f(typeURL, u) }

// Update is one response's worth of resources of one type.
type Update struct {
	// Full is set for state of the world: Resources is the whole set for the
	// type (LDS, CDS) or for the subscribed names (RDS, EDS); anything the
	// handler holds that is missing from it is gone (for LDS/CDS).
	Full      bool
	Resources []Resource
	Removed   []string // delta only
	Version   string   // SotW version_info / delta system_version_info
}

// Resource is one decoded resource.
type Resource struct {
	Name    string
	Version string
	Message proto.Message
}

// TypeStatus is the client's view of one subscribed type, for the admin API
// and proxy-status.
type TypeStatus struct {
	TypeURL    string
	Wildcard   bool
	Names      []string // subscribed names, sorted; empty when Wildcard
	Version    string   // last ACKed version (SotW version_info, delta system_version_info)
	Nonce      string   // nonce of the last response received
	LastNACK   string   // error text of the last NACK, "" if none since the last ACK
	LastNACKAt time.Time
	LastACKAt  time.Time
	Connected  bool
	Resources  int // delta: resources known with their versions; SotW: resources in the last ACKed response
}

// Client is an ADS client. Create it with New, subscribe, then Run.
type Client struct {
	cfg Config
	log *slog.Logger

	// wake is signalled (never blocking) when a subscription changes, so the
	// stream loop sends the new request.
	wake chan struct{}

	mu        sync.Mutex
	types     map[string]*typeState
	connected bool

	connectedState *stats.Gauge         // nil without Config.Stats
	typeStats      map[string]*xdsStats // by type URL, fixed at New
}

// xdsStats are one type's update counters, as Envoy names them.
type xdsStats struct {
	attempt, success, rejected *stats.Counter
	time, version              *stats.Gauge
}

// typeState is one type's subscription and protocol state. Guarded by
// Client.mu; the stream loop copies what it needs and never holds the lock
// across Send or the handler.
type typeState struct {
	url      string
	seq      int // order of first subscription, after xdstypes.Ordered
	wildcard bool
	names    map[string]struct{}

	// Per stream: what this stream has been told.
	sent      bool
	sentWild  bool
	sentNames map[string]struct{}

	version string            // last ACKed
	nonce   string            // last received
	known   map[string]string // delta: name → version, sent as initial_resource_versions
	count   int
	nackErr string
	nackAt  time.Time
	ackAt   time.Time
}

// New returns a client for cfg. It does nothing until Run.
func New(cfg Config) *Client {
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = 500 * time.Millisecond
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 30 * time.Second
	}
	if cfg.BackoffMax < cfg.BackoffBase {
		cfg.BackoffMax = cfg.BackoffBase
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	c := newClient(cfg, log)
	if cfg.Stats != nil {
		c.connectedState = cfg.Stats.Root().Gauge("control_plane.connected_state")
		c.typeStats = map[string]*xdsStats{}
		for typeURL, prefix := range map[string]string{
			xdstypes.Cluster: "cluster_manager.cds.", xdstypes.Listener: "listener_manager.lds.",
			xdstypes.RouteConfiguration: "xds.rds.", xdstypes.ClusterLoadAssignment: "xds.eds.",
		} {
			sc := cfg.Stats.Root()
			c.typeStats[typeURL] = &xdsStats{
				attempt: sc.Counter(prefix + "update_attempt"), success: sc.Counter(prefix + "update_success"),
				rejected: sc.Counter(prefix + "update_rejected"),
				time:     sc.Gauge(prefix + "update_time"), version: sc.Gauge(prefix + "version"),
			}
		}
	}
	return c
}

func newClient(cfg Config, log *slog.Logger) *Client {
	return &Client{
		cfg:   cfg,
		log:   log.With("component", "xdsclient"),
		wake:  make(chan struct{}, 1),
		types: map[string]*typeState{},
	}
}

// Subscribe replaces the set of names subscribed for typeURL. It is safe to
// call from inside OnUpdate; a request goes out only if the set changed.
func (c *Client) Subscribe(typeURL string, names []string) {
	set := make(map[string]struct{}, len(names))
	for _, n := range names {
		set[n] = struct{}{}
	}
	c.mu.Lock()
	t := c.typeLocked(typeURL)
	changed := t.wildcard || !sameSet(t.names, set)
	t.wildcard = false
	t.names = set
	c.mu.Unlock()
	if changed {
		c.poke()
	}
}

// SubscribeWildcard subscribes to every resource of typeURL (LDS and CDS).
func (c *Client) SubscribeWildcard(typeURL string) {
	c.mu.Lock()
	t := c.typeLocked(typeURL)
	changed := !t.wildcard
	t.wildcard = true
	t.names = map[string]struct{}{}
	c.mu.Unlock()
	if changed {
		c.poke()
	}
}

func (c *Client) typeLocked(typeURL string) *typeState {
	t := c.types[typeURL]
	if t == nil {
		t = &typeState{url: typeURL, seq: len(c.types), names: map[string]struct{}{}, known: map[string]string{}}
		c.types[typeURL] = t
	}
	return t
}

func (c *Client) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Status reports every subscribed type, in subscription order.
func (c *Client) Status() []TypeStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]TypeStatus, 0, len(c.types))
	for _, t := range c.orderedLocked() {
		out = append(out, TypeStatus{
			TypeURL:    t.url,
			Wildcard:   t.wildcard,
			Names:      sortedNames(t.names),
			Version:    t.version,
			Nonce:      t.nonce,
			LastNACK:   t.nackErr,
			LastNACKAt: t.nackAt,
			LastACKAt:  t.ackAt,
			Connected:  c.connected,
			Resources:  t.count,
		})
	}
	return out
}

// orderedLocked returns the types in the order Envoy subscribes: CDS, EDS,
// LDS, RDS, SDS, then any other in the order first subscribed.
func (c *Client) orderedLocked() []*typeState {
	ts := make([]*typeState, 0, len(c.types))
	for _, t := range c.types {
		ts = append(ts, t)
	}
	rank := func(t *typeState) int {
		if i := slices.Index(xdstypes.Ordered, t.url); i >= 0 {
			return i
		}
		return len(xdstypes.Ordered) + t.seq
	}
	slices.SortFunc(ts, func(a, b *typeState) int { return rank(a) - rank(b) })
	return ts
}

// Run connects, serves the stream and reconnects with backoff until ctx
// ends. Every last-good resource stays with the handler across reconnects;
// on a new stream every subscription is sent again with its last versions.
// Call it once per Client.
func (c *Client) Run(ctx context.Context) error {
	if c.cfg.Dial == nil || c.cfg.Handler == nil {
		return errors.New("xdsclient: Config.Dial and Config.Handler are required")
	}
	attempt := 0
	for {
		progressed, err := c.runOnce(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if progressed {
			attempt = 0
		}
		wait := c.backoff(attempt)
		attempt++
		c.log.Warn("xDS stream ended; reconnecting", "error", err, "retry_in", wait)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
}

// backoff is exponential with full jitter, so that many proxies losing the
// same server do not return in step.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.cfg.BackoffBase
	for i := 0; i < attempt && d < c.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, c.cfg.BackoffMax)
	return d/2 + rand.N(d/2+1)
}

// runOnce serves one stream. progressed reports whether the server answered
// at least once, which resets the backoff.
func (c *Client) runOnce(ctx context.Context) (progressed bool, err error) {
	conn, err := c.cfg.Dial(ctx)
	if err != nil {
		return false, fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var s stream
	if c.cfg.Delta {
		s, err = newDeltaStream(sctx, conn)
	} else {
		s, err = newSotwStream(sctx, conn)
	}
	if err != nil {
		return false, fmt.Errorf("open ADS stream: %w", err)
	}
	c.startStream()
	defer c.endStream()

	// The receiver only reads; this goroutine sends, decodes and calls the
	// handler, so the handler sees responses one at a time, in order.
	recv := make(chan any)
	recvErr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			m, err := s.recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case recv <- m:
			case <-sctx.Done():
				return
			}
		}
	}()
	defer wg.Wait()
	defer cancel()

	first := true
	if err := c.flush(s, &first); err != nil {
		return false, err
	}
	for {
		select {
		case <-ctx.Done():
			return progressed, ctx.Err()
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				err = errors.New("server closed the stream")
			}
			return progressed, err
		case m := <-recv:
			progressed = true
			if err := c.handle(s, m, &first); err != nil {
				return progressed, err
			}
			// The handler may have changed subscriptions.
			if err := c.flush(s, &first); err != nil {
				return progressed, err
			}
		case <-c.wake:
			if err := c.flush(s, &first); err != nil {
				return progressed, err
			}
		}
	}
}

func (c *Client) startStream() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.connected = true
	if c.connectedState != nil {
		c.connectedState.Set(1)
	}
	for _, t := range c.types {
		t.sent, t.sentWild, t.sentNames = false, false, nil
		// A nonce belongs to the stream that sent it.
		t.nonce = ""
	}
}

func (c *Client) endStream() {
	c.mu.Lock()
	c.connected = false
	if c.connectedState != nil {
		c.connectedState.Set(0)
	}
	c.mu.Unlock()
}

// flush sends, per type in Envoy's order, the initial request or the
// subscription change the stream has not seen yet.
func (c *Client) flush(s stream, first *bool) error {
	c.mu.Lock()
	var reqs []any
	for _, t := range c.orderedLocked() {
		if r := s.subscriptionRequest(t, *first && len(reqs) == 0, c.cfg.Node); r != nil {
			reqs = append(reqs, r)
			t.sent, t.sentWild, t.sentNames = true, t.wildcard, copySet(t.names)
		}
	}
	c.mu.Unlock()
	for _, r := range reqs {
		if err := s.send(r); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		*first = false
	}
	return nil
}

// handle decodes one response, hands it to the handler and answers it.
func (c *Client) handle(s stream, m any, first *bool) error {
	r := s.response(m)
	c.mu.Lock()
	t, subscribed := c.types[r.typeURL]
	if subscribed {
		t.nonce = r.nonce
	}
	c.mu.Unlock()
	if !subscribed {
		// As Envoy does: a response for a type nobody asked for is ignored
		// rather than answered, since an answer would subscribe to it.
		c.log.Warn("ignoring response for a type not subscribed", "type", r.typeURL, "nonce", r.nonce)
		return nil
	}

	u, nack := r.decode()
	if nack == nil {
		nack = c.cfg.Handler.OnUpdate(r.typeURL, u)
	}

	c.mu.Lock()
	now := time.Now()
	if ts := c.typeStats[r.typeURL]; ts != nil {
		ts.attempt.Inc()
		if nack != nil {
			ts.rejected.Inc()
		} else {
			ts.success.Inc()
			ts.time.Set(now.UnixMilli())
			h := fnv.New64a()
			h.Write([]byte(r.version))
			ts.version.Set(int64(h.Sum64() >> 1))
		}
	}
	if nack != nil {
		t.nackErr, t.nackAt = nack.Error(), now
		c.log.Warn("NACK", "type", r.typeURL, "version", r.version, "nonce", r.nonce, "error", nack)
	} else {
		t.nackErr, t.ackAt = "", now
		t.version = r.version
		s.acked(t, u)
	}
	ack := s.ackRequest(t, r.nonce, nack, *first, c.cfg.Node)
	c.mu.Unlock()

	if err := s.send(ack); err != nil {
		return fmt.Errorf("send ACK: %w", err)
	}
	*first = false
	return nil
}

func sameSet(a, b map[string]struct{}) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			return false
		}
	}
	return true
}

func copySet(m map[string]struct{}) map[string]struct{} {
	out := make(map[string]struct{}, len(m))
	for k := range m {
		out[k] = struct{}{}
	}
	return out
}

func sortedNames(m map[string]struct{}) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
