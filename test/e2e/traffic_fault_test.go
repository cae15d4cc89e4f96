package e2e

import (
	"testing"
	"time"
)

// ratingsDelay is virtual-service-ratings-test-delay.yaml with a 1 s delay
// instead of 7 s, to keep the test fast.
const ratingsDelay = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    fault:
      delay:
        percentage:
          value: 100.0
        fixedDelay: 1s
    route:
    - destination:
        host: ratings
        subset: v1
  - route:
    - destination:
        host: ratings
        subset: v1
`

// Istio's fault injection task: a delay for jason toward ratings, then
// an HTTP 500 abort for jason (Bookinfo's abort file unchanged); other
// users are untouched.
func TestTrafficFaultInjection(t *testing.T) {
	serveHTTP(t, "127.0.3.1:9080", named("ratings-v1"))
	m := startMesh(t, map[string]string{
		"ratings.yaml": service("ratings", "http", 9080, map[string]string{"v1": "127.0.3.1"}),
		"sidecar.yaml": clientSidecar("127.0.3.10", 9080, ""),
		"dr.yaml":      sample(t, "bookinfo/networking/destination-rule-all.yaml"),
		"vs.yaml":      ratingsDelay,
	})
	m.sidecar()
	const url = "http://127.0.3.10:9080/ratings/0"
	eventually(t, "ratings reachable", func() (bool, string) {
		r := get(client, url, "ratings:9080")
		return r.String() == "200 ratings-v1", r.String()
	})
	// The VirtualService may still be on its way: wait until jason is
	// delayed once, then check the delay and its scope.
	eventually(t, "jason delayed", func() (bool, string) {
		r := get(client, url, "ratings:9080", "end-user", "jason")
		return r.String() == "200 ratings-v1" && r.elapsed >= time.Second, r.String() + " after " + r.elapsed.String()
	})
	if r := get(client, url, "ratings:9080", "end-user", "jason"); r.String() != "200 ratings-v1" || r.elapsed < time.Second || r.elapsed > 3*time.Second {
		t.Errorf("jason with a 1s delay: %s after %v, want 200 ratings-v1 after 1s..3s", r, r.elapsed)
	}
	if r := get(client, url, "ratings:9080", "end-user", "mike"); r.String() != "200 ratings-v1" || r.elapsed >= time.Second {
		t.Errorf("mike (not delayed): %s after %v, want 200 ratings-v1 well under 1s", r, r.elapsed)
	}

	m.apply("vs.yaml", sample(t, "bookinfo/networking/virtual-service-ratings-test-abort.yaml"))
	eventually(t, "jason aborted with 500", func() (bool, string) {
		r := get(client, url, "ratings:9080", "end-user", "jason")
		return r.String() == "500 fault filter abort", r.String()
	})
	for i := 0; i < 10; i++ {
		if r := get(client, url, "ratings:9080", "end-user", "jason"); r.String() != "500 fault filter abort" {
			t.Fatalf("jason request %d: %s, want 500 fault filter abort", i, r)
		}
		if r := get(client, url, "ratings:9080"); r.String() != "200 ratings-v1" {
			t.Fatalf("anonymous request %d: %s, want 200 ratings-v1", i, r)
		}
	}
}
