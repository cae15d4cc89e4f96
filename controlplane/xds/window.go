package xds

import (
	"context"
	"sync"
	"time"
)

// A push writes one large route configuration to every stream at once.
// Were all 2000 streams to send it together, each proxy would receive its
// copy slowly and all of them late, and every connection would hold a
// write buffer (and the proxies their receive buffers) for the whole
// push. The send window bounds the streams with a large response on its
// way: a stream takes a slot before sending one and gives it back when the
// proxy answers it, when the stream ends, before it takes another, or
// after largeHold, so a proxy that never answers holds up no one for long.
// Small responses (endpoint changes, ACK-sized answers) never wait. At the
// reference scale (docs/performance.md) it brought the median proxy's ACK
// of a VirtualService change from 559–669 to 474–512 ms, skiffd's peak
// from 383–409 to 320–372 MB, and the load tool's from 7.5 to 3–4.4 GB.

// largeResponse is the size from which a response takes a slot.
const largeResponse = 256 << 10

// largeHold is the longest a slot stays with an unanswered response.
const largeHold = time.Second

// sendSlot is a slot of the window, given back once.
type sendSlot struct {
	once   sync.Once
	window chan struct{}
}

func (sl *sendSlot) release() {
	if sl != nil {
		sl.once.Do(func() { <-sl.window })
	}
}

// acquireSlot waits for a slot of the window for a response of size bytes
// (nil for a small one, which needs none), giving back the stream's own
// slots first so that it never waits on itself.
func (c *conn) acquireSlot(ctx context.Context, size int) (*sendSlot, error) {
	if size < largeResponse {
		return nil, nil
	}
	c.releaseSlots()
	window := c.s.window
	select {
	case window <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	sl := &sendSlot{window: window}
	time.AfterFunc(largeHold, sl.release)
	return sl, nil
}

// releaseSlots gives back the slots of every unanswered response.
func (c *conn) releaseSlots() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.watches {
		for _, r := range w.inflight {
			r.slot.release()
		}
	}
}
