package xdsload_test

import (
	"crypto/sha256"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/internal/xdsload"
)

func TestSampleProcReadsMemoryAndCPU(t *testing.T) {
	before, err := xdsload.SampleProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	ruBefore := rusageCPU(t)
	// Burn 300ms of CPU, as getrusage counts it: on a busy machine that
	// takes longer than 300ms of wall time (bounded at 30s).
	sum := sha256.Sum256(nil)
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end) && rusageCPU(t)-ruBefore < 0.3; {
		for range 10000 {
			sum = sha256.Sum256(sum[:])
		}
	}
	burnt := rusageCPU(t) - ruBefore
	after, err := xdsload.SampleProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after.RSSBytes < 1<<20 || after.HWMBytes < after.RSSBytes {
		t.Errorf("RSS %d bytes, peak %d: want at least 1 MiB and peak ≥ RSS", after.RSSBytes, after.HWMBytes)
	}
	// /proc counts in ticks of 10ms; other goroutines (the test runner's)
	// may add a little.
	if d := after.CPUSec - before.CPUSec; burnt < 0.3 || d < burnt-0.05 || d > burnt+1 {
		t.Errorf("CPU seconds moved by %.2f while getrusage counted %.2f", d, burnt)
	}
	if _, err := xdsload.SampleProc(1 << 30); err == nil || !strings.Contains(err.Error(), "is pid 1073741824 running?") {
		t.Errorf("sampling a missing process: %v", err)
	}
}

// rusageCPU is this process's user + system CPU seconds from getrusage.
func rusageCPU(t *testing.T) float64 {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
