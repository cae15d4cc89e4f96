package localmesh

import (
	"context"
	"os/exec"
	"time"
)

// Process is one container's process kept running the way `skiff up` keeps
// its pods' containers: output appended to a log file, restarts with
// back-off as the restart policy says, SIGTERM then SIGKILL on Stop. It is
// exported for the test kubelet (internal/testing/kubelet), which runs
// pods from an API server with the same machinery.
type Process struct{ p *proc }

// ProcessOptions configure StartProcess.
type ProcessOptions struct {
	Name    string
	LogPath string
	// NewCmd makes the command for each start (e.g. netns.Pod.Command).
	NewCmd func(ctx context.Context) *exec.Cmd
	// Policy is Always (default), OnFailure or Never.
	Policy  string
	Backoff Backoff
	// Grace is the time between SIGTERM and SIGKILL on Stop (default 5 s).
	Grace time.Duration
	// OnStart and OnExit, when set, hear of each start and of each exit
	// Stop did not cause.
	OnStart func(pid, restarts int)
	OnExit  func(status, logPath string, restartIn time.Duration)
}

// ProcessStatus is what Status reports: State is Running, CrashLoopBackOff,
// Completed or Error; LastErr says how the last run ended.
type ProcessStatus struct {
	PID      int
	Running  bool
	Restarts int
	State    string
	LastErr  string
}

// StartProcess starts the process and its restart loop, which runs until
// ctx ends or Stop is called.
func StartProcess(ctx context.Context, o ProcessOptions) (*Process, error) {
	o.Backoff.defaults()
	if o.Grace <= 0 {
		o.Grace = 5 * time.Second
	}
	p := &proc{name: o.Name, logPath: o.LogPath, newCmd: o.NewCmd, policy: o.Policy,
		backoff: o.Backoff, grace: o.Grace, onStart: o.OnStart, onExit: o.OnExit}
	if err := p.start(ctx); err != nil {
		return nil, err
	}
	return &Process{p}, nil
}

// Status is the process's state now.
func (p *Process) Status() ProcessStatus {
	pid, running, restarts, state, lastErr := p.p.snapshot()
	return ProcessStatus{PID: pid, Running: running, Restarts: restarts, State: state, LastErr: lastErr}
}

// Done is closed once the restart loop has ended: the process exited and
// the policy does not restart it, or Stop was called.
func (p *Process) Done() <-chan struct{} { return p.p.done }

// Stop ends the process (SIGTERM, SIGKILL after the grace period) and
// returns once it is gone.
func (p *Process) Stop() { p.p.stopAndWait() }
