package e2e

import (
	"net/http"
	"regexp"
	"sync/atomic"
	"testing"
	"time"
)

// Istio's request timeouts task: a VirtualService timeout of 0.5s toward
// a backend that takes 2s answers 504 after about 0.5s.
func TestTrafficRequestTimeout(t *testing.T) {
	serveHTTP(t, "127.0.5.1:9080", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(2 * time.Second):
			w.Write([]byte("slow"))
		case <-r.Context().Done():
		}
	})
	m := startMesh(t, map[string]string{
		"slow.yaml":    service("slow", "http", 9080, map[string]string{"v1": "127.0.5.1"}),
		"sidecar.yaml": clientSidecar("127.0.5.10", 9080, ""),
		"vs.yaml": `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: slow}
spec:
  hosts: [slow]
  http:
  - route: [{destination: {host: slow}}]
    timeout: 0.5s
`,
	})
	m.sidecar()
	eventually(t, "the timeout to apply", func() (bool, string) {
		r := get(client, "http://127.0.5.10:9080/", "slow:9080")
		return r.code == http.StatusGatewayTimeout, r.String() + " after " + r.elapsed.String()
	})
	r := get(client, "http://127.0.5.10:9080/", "slow:9080")
	if r.String() != "504 upstream request timeout" || r.elapsed < 500*time.Millisecond || r.elapsed > 1500*time.Millisecond {
		t.Fatalf("0.5s timeout toward a 2s backend: %s after %v, want 504 upstream request timeout after 0.5s..1.5s", r, r.elapsed)
	}
}

// Istio's retries: attempts 3 on 5xx toward a backend whose first two
// answers are 500 gives the client the third answer, 200.
func TestTrafficRetries(t *testing.T) {
	var calls atomic.Int32
	serveHTTP(t, "127.0.5.2:9080", func(w http.ResponseWriter, r *http.Request) {
		if n := calls.Add(1); n <= 2 {
			http.Error(w, "failing", http.StatusInternalServerError)
			return
		}
		w.Write([]byte("flaky ok"))
	})
	m := startMesh(t, map[string]string{
		"flaky.yaml":   service("flaky", "http", 9080, map[string]string{"v1": "127.0.5.2"}),
		"sidecar.yaml": clientSidecar("127.0.5.11", 9080, ""),
		"vs.yaml": `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: flaky}
spec:
  hosts: [flaky]
  http:
  - route: [{destination: {host: flaky}}]
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: 5xx}
`,
	})
	p := m.sidecar()
	// The backend counts requests, so the first request must already see
	// the retry policy: wait for it in the proxy's config_dump.
	retry := regexp.MustCompile(`"retry_on":\s*"5xx",\s*"num_retries":\s*3`)
	eventually(t, "the route with retries", func() (bool, string) {
		return retry.MatchString(adminGet(t, p, "/config_dump")), "no retry_on 5xx, num_retries 3 in config_dump yet"
	})
	if calls.Load() != 0 {
		t.Fatalf("backend saw %d requests before the test sent any", calls.Load())
	}
	r := get(client, "http://127.0.5.11:9080/", "flaky:9080")
	if r.String() != "200 flaky ok" || calls.Load() != 3 {
		t.Fatalf("attempts 3 on 5xx, backend failing twice: client got %s, backend saw %d requests; want 200 flaky ok after 3", r, calls.Load())
	}
}
