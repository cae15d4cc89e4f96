package kubetest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is one child process (etcd, kube-apiserver, kube-controller-manager)
// whose output goes to a log file that survives restarts.
type proc struct {
	name    string
	bin     string
	args    []string
	logPath string

	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has been reaped
	err    error         // Wait's result, valid once exited is closed
}

func startProc(name, bin string, args []string, logPath string) (*proc, error) {
	p := &proc{name: name, bin: bin, args: args, logPath: logPath}
	return p, p.start()
}

func (p *proc) start() error {
	logFile, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child holds its own descriptor
	fmt.Fprintf(logFile, "=== kubetest %s: %s %s\n", time.Now().Format(time.RFC3339Nano), p.bin, strings.Join(p.args, " "))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// A test binary killed by its timeout must not leave servers behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s (%s): %v", p.name, p.bin, err)
	}
	p.cmd = cmd
	p.exited = make(chan struct{})
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return nil
}

func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM, then SIGKILL after grace, and waits for the exit. It
// reports whether the process had to be killed.
func (p *proc) stop(grace time.Duration) (killed bool) {
	if p.cmd == nil || !p.running() {
		return false
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return false
	case <-time.After(grace):
	}
	p.cmd.Process.Kill()
	<-p.exited
	return true
}

// exitError describes an unexpected exit with the log tail.
func (p *proc) exitError() error {
	return fmt.Errorf("%s exited: %v\nlast lines of %s:\n%s", p.name, p.err, p.logPath, tailFile(p.logPath, 40))
}

// rss is the resident set size in bytes, from /proc.
func (p *proc) rss() (int64, error) {
	if p.cmd == nil || !p.running() {
		return 0, fmt.Errorf("%s is not running", p.name)
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := strings.Fields(string(rest))
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", p.cmd.Process.Pid)
}

// freePorts reserves n distinct loopback ports by binding them together, then
// releases them for the child processes. Another process could take one in
// between; startup retries with fresh ports when a bind fails.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("reserving a loopback port: %v", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitFor polls check every interval until it returns true, the process
// exits, or timeout passes.
func waitFor(p *proc, what string, timeout time.Duration, check func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := check()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		if !p.running() {
			return fmt.Errorf("waiting for %s: %w", what, p.exitError())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v (last error: %v)\nlast lines of %s:\n%s", what, timeout, last, p.logPath, tailFile(p.logPath, 40))
		}
		select {
		case <-p.exited:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// bindConflict reports whether a failed start was a port taken in between.
func bindConflict(p *proc) bool {
	return strings.Contains(tailFile(p.logPath, 40), "address already in use")
}
