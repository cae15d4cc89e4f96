// Package childport runs a test's helper process (chromedriver,
// Prometheus) on a free loopback port that the child binds itself.
//
// A port picked by binding port 0 and closing is free only until another
// process binds it; tests run many packages at once, and a child that
// loses its port exits at start. Start then tries again on a new port.
package childport

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// attempts is how many ports Start tries before failing the test.
const attempts = 3

// Log is a child's output, safe to read while the child writes it.
type Log struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Start runs newCmd(port) on a free loopback port and polls ready(port)
// until it is true. A child that exits before it is ready is started again
// on another port, up to three times; a child still not ready after
// timeout fails the test with its output. The child is killed when the
// test ends, and its output logged if the test failed.
func Start(t testing.TB, what string, timeout time.Duration, newCmd func(port int) *exec.Cmd, ready func(port int) bool) (int, *Log) {
	t.Helper()
	var earlier []string
	for attempt := 1; ; attempt++ {
		port := freePort(t)
		log := &Log{}
		cmd := newCmd(port)
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting %s: %v", what, err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-exited
			if t.Failed() {
				t.Logf("%s (port %d):\n%s", what, port, log.String())
			}
		})
		deadline := time.Now().Add(timeout)
	wait:
		for !ready(port) {
			select {
			case <-exited:
				earlier = append(earlier, fmt.Sprintf("port %d: %s", port, cmd.ProcessState))
				if attempt == attempts {
					t.Fatalf("%s exited before it was ready on each of %d free ports (%v); its output on the last:\n%s", what, attempts, earlier, log.String())
				}
				t.Logf("%s exited before it was ready on port %d (%s); another process may have bound the port: trying another", what, port, cmd.ProcessState)
				break wait
			case <-time.After(100 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s on port %d not ready within %v:\n%s", what, port, timeout, log.String())
			}
		}
		select {
		case <-exited: // next attempt
		default:
			return port, log
		}
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
