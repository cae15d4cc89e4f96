package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as bookinfo: re-executed with this variable set it
// runs main, so the tests drive real processes without a separate build.
const asMain = "BOOKINFO_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMain) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type proc struct {
	cmd    *exec.Cmd
	addr   string
	stderr *syncBuffer
	done   chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs `bookinfo args...` with exactly env (nothing inherited, so a
// NO_PROXY on the test machine cannot change the outcome) and waits for its
// "listening on" line.
func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append([]string{asMain + "=1"}, env...)
	pr, pw := io.Pipe()
	p := &proc{cmd: cmd, stderr: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait(); pw.Close() }()
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			p.stderr.Write([]byte(line + "\n"))
			if _, a, ok := strings.Cut(line, " listening on "); ok {
				addrc <- a
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
	})
	select {
	case p.addr = <-addrc:
	case err := <-p.done:
		p.done <- err
		t.Fatalf("bookinfo %v exited before listening: %v\n%s", args, err, p.stderr)
	case <-time.After(10 * time.Second):
		t.Fatalf("bookinfo %v not listening after 10s:\n%s", args, p.stderr)
	}
	return p
}

// stop sends SIGTERM and expects a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("%v after SIGTERM: %v\n%s", p.cmd.Args[1:], err, p.stderr)
		}
		p.done <- err
	case <-time.After(10 * time.Second):
		t.Errorf("%v still running 10s after SIGTERM", p.cmd.Args[1:])
	}
}

// TestServicesThroughAnHTTPProxy runs the four services as processes that
// know each other only by Istio's names (details:9080, ...) and reach them
// through HTTP_PROXY, as the local mesh without root has them do.
func TestServicesThroughAnHTTPProxy(t *testing.T) {
	routes := map[string]string{}
	var mu sync.Mutex
	var seen []string
	proxy := &http.Server{Handler: &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, r.In.Host+" "+r.In.Header.Get("end-user"))
		// Only the services started here are reachable; anything else
		// goes to a closed loopback port and fails.
		target := routes[r.In.Host]
		if target == "" {
			target = "127.0.0.1:1"
		}
		r.SetURL(&url.URL{Scheme: "http", Host: target})
		r.Out.Host = r.In.Host
	}}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go proxy.Serve(ln)
	t.Cleanup(func() { proxy.Close() })
	env := []string{"HTTP_PROXY=http://" + ln.Addr().String()}

	details := start(t, env, "details", "--listen=127.0.0.1:0")
	ratings := start(t, env, "ratings", "--listen=127.0.0.1:0")
	reviews := start(t, append(env, "SERVICE_VERSION=v2", "POD_NAME=reviews-v2-7d9f"), "reviews", "--listen=127.0.0.1:0")
	pp := start(t, append(env, "PORT=0"), "productpage", "--listen=127.0.0.1:0")
	mu.Lock()
	routes["details:9080"], routes["ratings:9080"], routes["reviews:9080"] = details.addr, ratings.addr, reviews.addr
	mu.Unlock()

	req, _ := http.NewRequest("GET", "http://"+pp.addr+"/productpage", nil)
	req.Header.Set("Cookie", "user=jason")
	req.Header.Set("x-request-id", "through-proxy-1")
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(body)
	for _, want := range []string{"<td>PublisherA</td>", `<font color="black">`, "reviews-v2-7d9f", "jason"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q:\n%s", want, page)
		}
	}
	mu.Lock()
	got := strings.Join(seen, ",")
	mu.Unlock()
	for _, want := range []string{"details:9080 jason", "reviews:9080 jason", "ratings:9080 jason"} {
		if !strings.Contains(got, want) {
			t.Errorf("proxy saw %q, missing %q", got, want)
		}
	}
	for _, p := range []*proc{pp, reviews, ratings, details} {
		p.stop(t)
	}
	if !strings.Contains(reviews.stderr.String(), `reviews GET /reviews/0 200`) || !strings.Contains(reviews.stderr.String(), `x-request-id="through-proxy-1"`) {
		t.Errorf("reviews did not log the request with its id:\n%s", reviews.stderr)
	}
}

func TestBadCommandLines(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no service named"},
		{[]string{"inventory"}, `unknown service "inventory": want productpage, details, reviews or ratings`},
		{[]string{"reviews", "--version=v9"}, `reviews version "v9": want v1, v2 or v3`},
		{[]string{"details", "--listen=127.0.0.1:99999"}, "--listen=127.0.0.1:99999"},
		{[]string{"ratings", "extra"}, `unexpected arguments ["extra"]`},
	} {
		cmd := exec.Command(os.Args[0], tc.args...)
		cmd.Env = []string{asMain + "=1"}
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
			t.Errorf("bookinfo %v: %v, want exit status 2", tc.args, err)
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("bookinfo %v said %q, want it to contain %q", tc.args, out, tc.want)
		}
	}
}
