//go:build netns

package security

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// expect is one request of a task step and the outcome the task's page
// shows for it.
type expect struct {
	what string       // e.g. "curl in foo → httpbin.foo /headers"
	send func() reply // sends the request, as the task does
	want string       // the outcome, in words
	ok   func(reply) bool
	logs []workload // whose logs explain a failure: client and server
}

type workload struct{ ns, deploy string }

// httpExpect is `kubectl exec deploy/curl -n from -- curl URL ARGS…`.
func (m *mesh) httpExpect(from, url string, args []string, want string, ok func(reply) bool, server workload) expect {
	return expect{
		what: "curl in " + from + " → " + url, want: want, ok: ok,
		send: func() reply { return m.curl(from, url, args...) },
		logs: []workload{{from, "curl"}, server},
	}
}

// get expects `curl http://httpbin.TO:8000PATH ARGS…` from curl in from
// to answer with status code (and, for a code other than 200, a body
// containing bodyHas when it is not "").
func (m *mesh) get(from, to, path string, code int, bodyHas string, args ...string) expect {
	want := fmt.Sprintf("HTTP %d", code)
	if bodyHas != "" {
		want += fmt.Sprintf(" with %q in the body", bodyHas)
	}
	return m.httpExpect(from, "http://httpbin."+to+":8000"+path, args, want, func(r reply) bool {
		return r.status == code && strings.Contains(r.body, bodyHas)
	}, workload{to, "httpbin"})
}

// direct is a request from legacy's curl (no sidecar) to a pod's address,
// port 8080, owned by server.
func (m *mesh) direct(ip string, code int, server workload) expect {
	if code == 0 {
		return m.httpExpect("legacy", "http://"+ip+":8080/ip", nil, rejectedWant, rejected, server)
	}
	return m.httpExpect("legacy", "http://"+ip+":8080/ip", nil, fmt.Sprintf("HTTP %d", code),
		func(r reply) bool { return r.status == code }, server)
}

// rejected is how Istio's tasks show a plaintext request refused by a
// STRICT sidecar: curl gets no response (000), exit code 56 (the
// connection reset) or 52 (closed without a reply).
const rejectedWant = "no HTTP response (000) and curl exit code 56 or 52: the server's sidecar closes a plaintext connection under STRICT mTLS"

func rejected(r reply) bool { return r.status == 0 && (r.exit == 56 || r.exit == 52) }

// tcpExpect is the TCP task's `echo "port N" | nc HOST N` from curl in
// foo: echoed, the line comes back prefixed with "hello"; refused, the
// connection closes with nothing.
func (m *mesh) tcpExpect(host string, port int, echoed bool) expect {
	line := fmt.Sprintf("hello port %d", port)
	want := fmt.Sprintf("%q echoed back (connection succeeded)", line)
	if !echoed {
		want = "the connection closed with nothing echoed (connection rejected)"
	}
	return expect{
		what: fmt.Sprintf("curl in foo → tcp %s:%d", host, port), want: want,
		send: func() reply { return m.tcp("foo", host, port) },
		ok:   func(r reply) bool { return strings.Contains(r.body, line) == echoed && (echoed || r.exit != -1) },
		logs: []workload{{"foo", "curl"}, {"foo", "tcp-echo"}},
	}
}

// converge sends every request of a step until all answer as the task
// shows twice in a row (config takes a moment to reach the proxies, and
// each proxy gets it on its own), for at most limit; then it fails the
// test naming the step, each request that did not, what it sent and got,
// and the tails of the proxies' logs.
func (m *mesh) converge(t *testing.T, step string, limit time.Duration, exps ...expect) {
	t.Helper()
	const pause = 150 * time.Millisecond
	var last []reply
	run := 0
	deadline := time.Now().Add(limit)
	for round := 0; round < int(limit/pause)+1 && time.Now().Before(deadline); round++ {
		last = sendAll(exps)
		if bad(exps, last) == nil {
			if run++; run == 2 {
				return
			}
			continue
		}
		run = 0
		time.Sleep(pause)
	}
	t.Fatalf("step %q: after %s not every request answers as the task shows:\n%s", step, limit, m.explain(exps, last))
}

// holds sends each request once and reports (without stopping the test)
// every one that does not answer as the task shows: for outcomes checked
// once a step has converged.
func (m *mesh) holds(t *testing.T, step string, exps ...expect) {
	t.Helper()
	if got := sendAll(exps); bad(exps, got) != nil {
		t.Errorf("step %q:\n%s", step, m.explain(exps, got))
	}
}

// sendAll sends the requests at once: they are independent, and a slow
// one (a timeout) should not hold up the rest of a round.
func sendAll(exps []expect) []reply {
	out := make([]reply, len(exps))
	var wg sync.WaitGroup
	for i, e := range exps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = e.send()
		}()
	}
	wg.Wait()
	return out
}

func bad(exps []expect, got []reply) []int {
	var out []int
	for i, e := range exps {
		if !e.ok(got[i]) {
			out = append(out, i)
		}
	}
	return out
}

func (m *mesh) explain(exps []expect, got []reply) string {
	var b strings.Builder
	logged := map[workload]bool{}
	for _, i := range bad(exps, got) {
		e := exps[i]
		fmt.Fprintf(&b, "• %s: want %s\n%s\n", e.what, e.want, got[i])
		for _, w := range e.logs {
			if !logged[w] {
				logged[w] = true
				b.WriteString(m.logTail(w.ns, w.deploy))
			}
		}
	}
	return b.String()
}

// policy applies one task's YAML (skiff apply -f) and returns its undo
// (skiff delete -f), which also runs when the test ends if the step did
// not get to it, so a failed step leaves no policy behind for the next.
func (m *mesh) policy(t *testing.T, name, yaml string) (undo func()) {
	t.Helper()
	f := m.apply(t, name, yaml)
	var once sync.Once
	undo = func() { once.Do(func() { m.Delete(t, f) }) }
	t.Cleanup(undo)
	return undo
}
