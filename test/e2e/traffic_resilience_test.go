package e2e

import (
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// circuitBreakerDR is the DestinationRule of Istio's circuit breaking task.
const circuitBreakerDR = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: httpbin
spec:
  host: httpbin
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 1
      http:
        http1MaxPendingRequests: 1
        maxRequestsPerConnection: 1
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 3m
      maxEjectionPercent: 100
`

// Istio's circuit breaking task: with one connection and one pending
// request allowed, three concurrent clients (fortio -c 3) see some
// requests refused with 503 and x-envoy-overloaded, and the proxy's
// stats count the pending overflow.
func TestTrafficCircuitBreaking(t *testing.T) {
	// The backend takes a little time so that concurrent requests queue.
	serveHTTP(t, "127.0.6.1:8000", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		w.Write([]byte("httpbin"))
	})
	m := startMesh(t, map[string]string{
		"httpbin.yaml": service("httpbin", "http", 8000, map[string]string{"v1": "127.0.6.1"}),
		"sidecar.yaml": clientSidecar("127.0.6.10", 8000, ""),
		"dr.yaml":      circuitBreakerDR,
	})
	p := m.sidecar()
	const url = "http://127.0.6.10:8000/get"
	overflow := regexp.MustCompile(`(?m)^cluster\.outbound\|8000\|\|httpbin\.default\.svc\.cluster\.local\.upstream_rq_pending_overflow: (\d+)$`)
	eventually(t, "httpbin reachable with the circuit breaker", func() (bool, string) {
		r := get(client, url, "httpbin:8000")
		return r.String() == "200 httpbin" && overflow.MatchString(adminGet(t, p, "/stats")), r.String()
	})

	const clients, perClient = 3, 20
	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each client keeps its own connection, as fortio's do.
			hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxConnsPerHost: 1}}
			defer hc.CloseIdleConnections()
			for i := 0; i < perClient; i++ {
				r := get(hc, url, "httpbin:8000")
				key := r.String()
				if r.code == http.StatusServiceUnavailable {
					key = fmt.Sprintf("503 x-envoy-overloaded=%s", r.header.Get("x-envoy-overloaded"))
				}
				mu.Lock()
				counts[key]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	ok, refused := counts["200 httpbin"], counts["503 x-envoy-overloaded=true"]
	if ok+refused != clients*perClient || ok == 0 || refused == 0 {
		t.Fatalf("3 clients × 20 requests through a 1-connection breaker: %v; want some 200 httpbin and some 503 with x-envoy-overloaded: true, nothing else", counts)
	}
	got := overflow.FindStringSubmatch(adminGet(t, p, "/stats"))
	if n, _ := strconv.Atoi(got[1]); n < refused {
		t.Fatalf("upstream_rq_pending_overflow = %s, want at least the %d refused requests", got[1], refused)
	}
}

// Istio's mirroring task: all traffic to v1, mirrored 100% to v2; the
// client answers from v1 while v2 receives the copies with the -shadow
// host.
func TestTrafficMirroring(t *testing.T) {
	v1 := serveHTTP(t, "127.0.6.2:8000", named("httpbin-v1"))
	v2 := serveHTTP(t, "127.0.6.3:8000", named("httpbin-v2"))
	m := startMesh(t, map[string]string{
		"httpbin.yaml": service("httpbin", "http", 8000, map[string]string{"v1": "127.0.6.2", "v2": "127.0.6.3"}),
		"sidecar.yaml": clientSidecar("127.0.6.11", 8000, ""),
		"dr.yaml": `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: httpbin
spec:
  host: httpbin
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
`,
		"vs.yaml": `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin
spec:
  hosts:
  - httpbin
  http:
  - route:
    - destination:
        host: httpbin
        subset: v1
      weight: 100
    mirror:
      host: httpbin
      subset: v2
    mirrorPercentage:
      value: 100.0
`,
	})
	m.sidecar()
	const url = "http://127.0.6.11:8000/headers"
	eventually(t, "the mirror to apply", func() (bool, string) {
		r := get(client, url, "httpbin:8000")
		return r.String() == "200 httpbin-v1" && len(v2.seen()) > 0, fmt.Sprintf("%s; v2 saw %q", r, v2.seen())
	})
	before1, before2 := len(v1.seen()), len(v2.seen())
	const n = 10
	for i := 0; i < n; i++ {
		if r := get(client, url, "httpbin:8000"); r.String() != "200 httpbin-v1" {
			t.Fatalf("request %d: %s, want 200 httpbin-v1 (mirrored answers are dropped)", i, r)
		}
	}
	// Mirrored requests are sent without waiting on them.
	eventually(t, "v2 to receive every copy", func() (bool, string) {
		return len(v2.seen())-before2 == n, fmt.Sprintf("v2 saw %d copies", len(v2.seen())-before2)
	})
	for _, h := range v2.seen() {
		if h != "httpbin-shadow:8000" {
			t.Fatalf("v2 saw Host %q, want httpbin-shadow:8000", h)
		}
	}
	if got := v1.seen()[before1:]; len(got) != n || strings.Count(strings.Join(got, " ")+" ", "httpbin:8000 ") != n {
		t.Fatalf("v1 saw %q, want %d requests with Host httpbin:8000", got, n)
	}
}
