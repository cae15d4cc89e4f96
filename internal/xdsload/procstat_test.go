package xdsload_test

import (
	"crypto/sha256"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/internal/xdsload"
)

func TestSampleProcReadsMemoryAndCPU(t *testing.T) {
	before, err := xdsload.SampleProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Burn 300ms of CPU (bounded by time) so the counter must move.
	sum := sha256.Sum256(nil)
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
		sum = sha256.Sum256(sum[:])
	}
	after, err := xdsload.SampleProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after.RSSBytes < 1<<20 || after.HWMBytes < after.RSSBytes {
		t.Errorf("RSS %d bytes, peak %d: want at least 1 MiB and peak ≥ RSS", after.RSSBytes, after.HWMBytes)
	}
	if d := after.CPUSec - before.CPUSec; d < 0.2 || d > 5 {
		t.Errorf("CPU seconds moved by %.2f over a 300ms busy loop", d)
	}
	if _, err := xdsload.SampleProc(1 << 30); err == nil || !strings.Contains(err.Error(), "is pid 1073741824 running?") {
		t.Errorf("sampling a missing process: %v", err)
	}
}
