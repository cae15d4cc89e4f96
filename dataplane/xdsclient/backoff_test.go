package xdsclient

import (
	"testing"
	"time"
)

// Reconnect delays grow exponentially from the base, never pass the cap, and
// are jittered over the upper half of each step.
func TestBackoffBounds(t *testing.T) {
	c := New(Config{BackoffBase: 100 * time.Millisecond, BackoffMax: time.Second})
	for attempt, step := range []time.Duration{100, 200, 400, 800, 1000, 1000, 1000} {
		step *= time.Millisecond
		lo, hi := step, time.Duration(0)
		for range 200 {
			d := c.backoff(attempt)
			lo, hi = min(lo, d), max(hi, d)
		}
		if lo < step/2 || hi > step {
			t.Errorf("attempt %d: delays in [%v, %v], want within [%v, %v]", attempt, lo, hi, step/2, step)
		}
		if hi-lo < step/10 {
			t.Errorf("attempt %d: delays in [%v, %v] show no jitter", attempt, lo, hi)
		}
	}
	if d := New(Config{}).backoff(100); d > 30*time.Second || d < 15*time.Second {
		t.Errorf("default cap: %v, want 15s..30s", d)
	}
}
