package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as echo-server when this variable is set, so the
// tests run the real command as a process.
const asMain = "ECHO_SERVER_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMain) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestServerProcess(t *testing.T) {
	cmd := exec.Command(os.Args[0], "--version=v2", "--listen=127.0.0.1:0", "--tcp-listen=127.0.0.1:0")
	cmd.Env = []string{asMain + "=1", "POD_NAME=echo-v2-abc"}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	addrs := make(chan [2]string, 1)
	logs := make(chan string, 100)
	go func() {
		var a [2]string
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			if _, v, ok := strings.Cut(line, " http listening on "); ok {
				a[0] = v
			} else if _, v, ok := strings.Cut(line, " tcp listening on "); ok {
				a[1] = v
				addrs <- a
			} else {
				logs <- line
			}
		}
		done <- cmd.Wait()
	}()
	var a [2]string
	select {
	case a = <-addrs:
	case <-time.After(10 * time.Second):
		t.Fatal("echo-server not listening after 10s")
	}

	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + a[0] + "/hi?status=201")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 || !strings.Contains(string(body), "ServiceName=echo\nServiceVersion=v2\nHostname=echo-v2-abc\n") {
		t.Errorf("%d\n%s", resp.StatusCode, body)
	}
	select {
	case line := <-logs:
		if !strings.Contains(line, "HTTP/1.1 GET /hi?status=201") {
			t.Errorf("log line %q", line)
		}
	case <-time.After(5 * time.Second):
		t.Error("no log line for the request")
	}

	c, err := net.DialTimeout("tcp", a[1], 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "ping\n")
	if line, err := bufio.NewReader(c).ReadString('\n'); line != "v2 ping\n" {
		t.Errorf("tcp echo %q (%v)", line, err)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("after SIGTERM: %v", err)
		}
		done <- err
	case <-time.After(10 * time.Second):
		t.Error("still running 10s after SIGTERM")
	}
}

func TestServerBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--listen=127.0.0.1:99999"}, "--listen=127.0.0.1:99999"},
		{[]string{"--listen=127.0.0.1:0", "--tcp-listen=nope"}, "--tcp-listen=nope"},
		{[]string{"v1"}, `unexpected arguments ["v1"]`},
	} {
		cmd := exec.Command(os.Args[0], tc.args...)
		cmd.Env = []string{asMain + "=1"}
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), tc.want) {
			t.Errorf("echo-server %v: %v %q, want exit 2 saying %q", tc.args, err, out, tc.want)
		}
	}
}
