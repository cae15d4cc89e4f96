package childport_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/internal/testing/childport"
)

// The test binary is its own child: with CHILDPORT_SERVE=PORT it serves
// "hello" on 127.0.0.1:PORT, or exits 1 if it cannot bind it.
func TestMain(m *testing.M) {
	if port := os.Getenv("CHILDPORT_SERVE"); port != "" {
		ln, err := net.Listen("tcp", "127.0.0.1:"+port)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }))
	}
	os.Exit(m.Run())
}

func child(port int) *exec.Cmd {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "CHILDPORT_SERVE="+strconv.Itoa(port))
	return cmd
}

func answers(port int) bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://127.0.0.1:" + strconv.Itoa(port))
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b) == "hello"
}

// Another process binding the picked port before the child does makes the
// child exit; Start starts it again on another port, where it serves.
func TestStartMovesToAnotherPortWhenOneIsTaken(t *testing.T) {
	var taken []int
	port, log := childport.Start(t, "server", 10*time.Second, func(port int) *exec.Cmd {
		if len(taken) == 0 { // the race, made certain: take the port first
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
		}
		taken = append(taken, port)
		return child(port)
	}, answers)
	if len(taken) != 2 || port != taken[1] || port == taken[0] {
		t.Errorf("ports tried %v, serving on %d; want the second, new port", taken, port)
	}
	if !answers(port) {
		t.Errorf("nothing serves on the returned port %d; output:\n%s", port, log)
	}
}

// A child that binds at once is started once.
func TestStartOnce(t *testing.T) {
	n := 0
	port, _ := childport.Start(t, "server", 10*time.Second, func(port int) *exec.Cmd { n++; return child(port) }, answers)
	if n != 1 || !answers(port) {
		t.Errorf("started %d times; serving on %d: %v", n, port, answers(port))
	}
}
