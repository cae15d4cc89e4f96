package localmesh

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Backoff is the restart delay of a crashing container: Kubernetes'
// CrashLoopBackOff starts at 10 s and doubles to 5 min; a container that
// ran for Reset without exiting starts over at Initial.
type Backoff struct {
	Initial, Max, Reset time.Duration
}

func (b *Backoff) defaults() {
	if b.Initial <= 0 {
		b.Initial = 10 * time.Second
	}
	if b.Max <= 0 {
		b.Max = 5 * time.Minute
	}
	if b.Reset <= 0 {
		b.Reset = 10 * time.Minute
	}
}

// proc keeps one container (or the sidecar) running: it starts the command
// newCmd makes, appends its output to a log file, and restarts it on exit
// as restartPolicy says, with back-off.
type proc struct {
	name    string
	logPath string
	newCmd  func(ctx context.Context) *exec.Cmd
	policy  string // Always, OnFailure, Never
	backoff Backoff
	grace   time.Duration

	mu       sync.Mutex
	pid      int
	running  bool
	restarts int
	state    string // Running, CrashLoopBackOff, Completed, Error
	lastErr  string
	done     chan struct{}
	cancel   context.CancelFunc
	// onExit, if set, hears of each exit the supervisor did not ask for.
	onExit func(status, logPath string, restartIn time.Duration)
	// onStart, if set, hears of each start: the pid and how many restarts
	// came before it.
	onStart func(pid, restarts int)
}

func (p *proc) snapshot() (pid int, running bool, restarts int, state, lastErr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid, p.running, p.restarts, p.state, p.lastErr
}

// start runs the loop until ctx ends or stopAndWait is called.
func (p *proc) start(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Dir(p.logPath), 0o755); err != nil {
		return fmt.Errorf("log directory for %s: %w", p.name, err)
	}
	ctx, p.cancel = context.WithCancel(ctx)
	p.done = make(chan struct{})
	go p.loop(ctx)
	return nil
}

// stopAndWait stops the process (SIGTERM, then SIGKILL after the grace
// period) and returns once it is gone.
func (p *proc) stopAndWait() {
	if p.done == nil {
		return
	}
	p.cancel()
	<-p.done
}

func (p *proc) loop(ctx context.Context) {
	defer close(p.done)
	delay := p.backoff.Initial
	for {
		began := time.Now()
		code, err := p.runOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		ran := time.Since(began)
		p.mu.Lock()
		var sig errSignaled
		switch {
		case errors.As(err, &sig):
			p.state, p.lastErr = "Error", "signal: "+sig.sig.String()
		case err != nil:
			p.state, p.lastErr = "Error", err.Error()
		case code == 0:
			p.state, p.lastErr = "Completed", ""
		default:
			p.state, p.lastErr = "Error", fmt.Sprintf("exit code %d", code)
		}
		restart := p.policy == "Always" || p.policy == "" || (p.policy == "OnFailure" && (code != 0 || err != nil))
		status := p.lastErr
		if status == "" {
			status = "exit code 0"
		}
		if restart {
			p.state = "CrashLoopBackOff"
		}
		p.mu.Unlock()
		if ran >= p.backoff.Reset {
			delay = p.backoff.Initial
		}
		if p.onExit != nil {
			in := delay
			if !restart {
				in = 0
			}
			p.onExit(status, p.logPath, in)
		}
		if !restart {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, p.backoff.Max)
		p.mu.Lock()
		p.restarts++
		p.mu.Unlock()
	}
}

// runOnce starts the command and waits for it; when ctx ends, the process
// group gets SIGTERM, then SIGKILL after the grace period.
func (p *proc) runOnce(ctx context.Context) (int, error) {
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return -1, err
	}
	defer logf.Close()
	cmd := p.newCmd(context.WithoutCancel(ctx))
	cmd.Stdout, cmd.Stderr = logf, logf
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// Its own process group, so stopping it reaches what it started; and
	// it dies with the supervisor even if the supervisor is killed.
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(logf, "skiff: cannot start %s: %v\n", p.name, err)
		return -1, err
	}
	p.mu.Lock()
	p.pid, p.running, p.state, p.lastErr = cmd.Process.Pid, true, "Running", ""
	restarts := p.restarts
	p.mu.Unlock()
	if p.onStart != nil {
		p.onStart(cmd.Process.Pid, restarts)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var werr error
	select {
	case werr = <-exited:
	case <-ctx.Done():
		pgid := cmd.Process.Pid
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case werr = <-exited:
		case <-time.After(p.grace):
			syscall.Kill(-pgid, syscall.SIGKILL)
			werr = <-exited
		}
		// Anything left in the group (a child that ignored SIGTERM).
		syscall.Kill(-pgid, syscall.SIGKILL)
	}
	p.mu.Lock()
	p.running = false
	p.mu.Unlock()
	var ee *exec.ExitError
	if errors.As(werr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			// As the kubelet reports it: 128 + the signal's number.
			return 128 + int(ws.Signal()), errSignaled{ws.Signal()}
		}
		return ee.ExitCode(), nil
	}
	return 0, werr
}

// errSignaled is a process ended by a signal (kill -9), told apart from
// one that could not start.
type errSignaled struct{ sig syscall.Signal }

func (e errSignaled) Error() string { return "signal: " + e.sig.String() }
