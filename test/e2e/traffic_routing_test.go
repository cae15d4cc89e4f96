package e2e

import (
	"fmt"
	"testing"
)

// bookinfoReviews is Bookinfo's reviews service with three versions on
// loopback addresses base.1, base.2, base.3, each answering its name.
func bookinfoReviews(t *testing.T, base string) string {
	t.Helper()
	pods := map[string]string{}
	for i, v := range []string{"v1", "v2", "v3"} {
		ip := fmt.Sprintf("%s.%d", base, i+1)
		pods[v] = ip
		serveHTTP(t, ip+":9080", named("reviews-"+v))
	}
	return service("reviews", "http", 9080, pods)
}

// Istio's request routing task: all traffic to v1, then jason to v2 by
// the end-user header, with Bookinfo's files unchanged, through the
// client's sidecar.
func TestTrafficRequestRouting(t *testing.T) {
	m := startMesh(t, map[string]string{
		"reviews.yaml": bookinfoReviews(t, "127.0.1"),
		"sidecar.yaml": clientSidecar("127.0.1.10", 9080, ""),
		"dr.yaml":      sample(t, "bookinfo/networking/destination-rule-all.yaml"),
		"vs.yaml":      sample(t, "bookinfo/networking/virtual-service-all-v1.yaml"),
	})
	m.sidecar()
	const url = "http://127.0.1.10:9080/reviews/0"
	eventually(t, "all traffic to reviews v1", func() (bool, string) {
		counts := tally(20, func() result { return get(client, url, "reviews:9080") })
		return counts["200 reviews-v1"] == 20, fmt.Sprint(counts)
	})
	for _, host := range []string{"reviews", "reviews.default.svc.cluster.local:9080", "reviews.default:9080"} {
		if r := get(client, url, host); r.String() != "200 reviews-v1" {
			t.Errorf("Host %s: %s, want 200 reviews-v1", host, r)
		}
	}

	m.apply("vs-reviews.yaml", sample(t, "bookinfo/networking/virtual-service-reviews-test-v2.yaml"))
	m.apply("vs.yaml", "")
	eventually(t, "jason routed to reviews v2", func() (bool, string) {
		jason := get(client, url, "reviews:9080", "end-user", "jason")
		other := get(client, url, "reviews:9080", "end-user", "mike")
		anon := get(client, url, "reviews:9080")
		return jason.String() == "200 reviews-v2" && other.String() == "200 reviews-v1" && anon.String() == "200 reviews-v1",
			fmt.Sprintf("jason: %s, mike: %s, anonymous: %s", jason, other, anon)
	})
	for i := 0; i < 10; i++ {
		if r := get(client, url, "reviews:9080", "end-user", "jason"); r.String() != "200 reviews-v2" {
			t.Fatalf("jason request %d: %s, want 200 reviews-v2", i, r)
		}
	}
}
