package localmesh

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("after %s: %s", limit, what)
}

// A container that keeps failing is restarted with back-off and counted;
// with restartPolicy Never it is left as it ended.
func TestProcRestartsWithBackoff(t *testing.T) {
	crash := func(policy string) *proc {
		return &proc{
			name: "crasher", logPath: filepath.Join(t.TempDir(), "crasher.log"), policy: policy,
			backoff: Backoff{Initial: 20 * time.Millisecond, Max: 40 * time.Millisecond, Reset: time.Minute}, grace: time.Second,
			newCmd: func(ctx context.Context) *exec.Cmd {
				return exec.CommandContext(ctx, "sh", "-c", "echo started; exit 3")
			},
		}
	}
	p := crash("Always")
	if err := p.start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "three restarts, then waiting in CrashLoopBackOff after exit code 3", func() bool {
		_, running, n, state, last := p.snapshot()
		return n >= 3 && !running && state == "CrashLoopBackOff" && last == "exit code 3"
	})
	p.stopAndWait()

	never := crash("Never")
	if err := never.start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the process to end", func() bool { _, _, _, s, _ := never.snapshot(); return s == "Error" })
	time.Sleep(100 * time.Millisecond) // several back-off periods: a restart would show
	if _, _, n, state, _ := never.snapshot(); n != 0 || state != "Error" {
		t.Errorf("restartPolicy Never: %d restarts, state %q; want none, Error", n, state)
	}
	never.stopAndWait()
}

// Stopping a process that ignores SIGTERM kills it after the grace period.
func TestProcStopKillsAfterGrace(t *testing.T) {
	p := &proc{
		name: "stubborn", logPath: filepath.Join(t.TempDir(), "stubborn.log"), policy: "Always",
		backoff: Backoff{Initial: time.Second, Max: time.Second, Reset: time.Minute}, grace: 200 * time.Millisecond,
		newCmd: func(ctx context.Context) *exec.Cmd {
			return exec.CommandContext(ctx, "sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done")
		},
	}
	if err := p.start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the process running", func() bool { _, r, _, _, _ := p.snapshot(); return r })
	start := time.Now()
	p.stopAndWait()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("stop took %s; want about the 200ms grace", d)
	}
	if _, running, _, _, _ := p.snapshot(); running {
		t.Error("still running after stop")
	}
}
