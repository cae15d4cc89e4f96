package e2e

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
)

// Istio's traffic shifting task: 50/50 between reviews v1 and v3, then
// 80/20 between v1 and v2, with Bookinfo's files unchanged; the counts
// fall within statistical bounds.
func TestTrafficShiftingHTTP(t *testing.T) {
	m := startMesh(t, map[string]string{
		"reviews.yaml": bookinfoReviews(t, "127.0.2"),
		"sidecar.yaml": clientSidecar("127.0.2.10", 9080, ""),
		"dr.yaml":      sample(t, "bookinfo/networking/destination-rule-all.yaml"),
		"vs.yaml":      sample(t, "bookinfo/networking/virtual-service-reviews-50-v3.yaml"),
	})
	m.sidecar()
	send := func() result { return get(client, "http://127.0.2.10:9080/", "reviews:9080") }
	eventually(t, "the 50/50 split to apply", func() (bool, string) {
		r := send()
		return r.String() == "200 reviews-v3", r.String()
	})
	const n = 200
	counts := tally(n, send)
	if counts["200 reviews-v1"]+counts["200 reviews-v3"] != n {
		t.Fatalf("50/50 v1/v3: answers outside v1 and v3: %v", counts)
	}
	within(t, "reviews-v1 under 50/50", counts["200 reviews-v1"], n, 0.5, counts)

	m.apply("vs.yaml", sample(t, "bookinfo/networking/virtual-service-reviews-80-20.yaml"))
	eventually(t, "the 80/20 split to apply", func() (bool, string) {
		r := send()
		return r.String() == "200 reviews-v2", r.String()
	})
	counts = tally(n, send)
	if counts["200 reviews-v1"]+counts["200 reviews-v2"] != n {
		t.Fatalf("80/20 v1/v2: answers outside v1 and v2: %v", counts)
	}
	within(t, "reviews-v1 under 80/20", counts["200 reviews-v1"], n, 0.8, counts)
}

// Istio's TCP traffic shifting task: tcp-echo behind the ingress gateway,
// all to v1, then 80/20 between v1 and v2. The samples are used as
// published except for the gateway port (31400 becomes a free port).
func TestTrafficShiftingTCP(t *testing.T) {
	tcpEcho(t, "127.0.4.1:9000", "one")
	tcpEcho(t, "127.0.4.2:9000", "two")
	port := freePort(t)
	ported := func(s string) string { return strings.ReplaceAll(s, "31400", strconv.Itoa(port)) }
	m := startMesh(t, map[string]string{
		"tcp-echo.yaml": service("tcp-echo", "tcp", 9000, map[string]string{"v1": "127.0.4.1", "v2": "127.0.4.2"}),
		"all-v1.yaml":   ported(sample(t, "tcp-echo/tcp-echo-all-v1.yaml")),
	})
	m.ingress()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	eventually(t, "tcp-echo through the gateway", func() (bool, string) {
		got := echoOnce(addr, "hello")
		return got == "one hello", got
	})
	for i := 0; i < 10; i++ {
		if got := echoOnce(addr, "hello"); got != "one hello" {
			t.Fatalf("all-v1, connection %d: %q, want \"one hello\"", i, got)
		}
	}

	// 20-v2 replaces the VirtualService of all-v1; the Gateway and
	// DestinationRule stay.
	m.apply("20-v2.yaml", ported(sample(t, "tcp-echo/tcp-echo-20-v2.yaml")))
	m.apply("all-v1.yaml", without(ported(sample(t, "tcp-echo/tcp-echo-all-v1.yaml")), "VirtualService"))
	eventually(t, "the 80/20 TCP split to apply", func() (bool, string) {
		got := echoOnce(addr, "hello")
		return got == "two hello", got
	})
	const n = 200
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		counts[echoOnce(addr, "hello")]++
	}
	if counts["one hello"]+counts["two hello"] != n {
		t.Fatalf("80/20 TCP: answers other than one/two: %v", counts)
	}
	within(t, "tcp-echo v1 under 80/20", counts["one hello"], n, 0.8, counts)
}

// without drops the documents of kind from a multi-document YAML file.
func without(yaml, kind string) string {
	var keep []string
	for _, doc := range strings.Split(yaml, "\n---\n") {
		if !strings.Contains(doc, "\nkind: "+kind+"\n") {
			keep = append(keep, doc)
		}
	}
	return strings.Join(keep, "\n---\n")
}

// The Gateway API flavour of Istio's traffic shifting task (GAMMA: an
// HTTPRoute whose parent is the reviews Service), with Bookinfo's
// gateway-api files unchanged: 90/10 between reviews-v1 and reviews-v2,
// then all to reviews-v1, through the client's sidecar.
func TestTrafficShiftingGatewayAPIMesh(t *testing.T) {
	serveHTTP(t, "127.0.2.21:9080", named("reviews-v1"))
	serveHTTP(t, "127.0.2.22:9080", named("reviews-v2"))
	m := startMesh(t, map[string]string{
		"reviews.yaml": `apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
` + versionServices("127.0.2.21", "127.0.2.22"),
		"sidecar.yaml": clientSidecar("127.0.2.30", 9080, ""),
		"route.yaml":   sample(t, "bookinfo/gateway-api/route-reviews-90-10.yaml"),
	})
	m.sidecar()
	send := func() result { return get(client, "http://127.0.2.30:9080/reviews/0", "reviews:9080") }
	eventually(t, "the 90/10 HTTPRoute to apply", func() (bool, string) {
		r := send()
		return r.String() == "200 reviews-v2", r.String()
	})
	const n = 300
	counts := tally(n, send)
	if counts["200 reviews-v1"]+counts["200 reviews-v2"] != n {
		t.Fatalf("90/10: answers outside reviews-v1 and reviews-v2: %v", counts)
	}
	within(t, "reviews-v1 under 90/10", counts["200 reviews-v1"], n, 0.9, counts)

	m.apply("route.yaml", sample(t, "bookinfo/gateway-api/route-reviews-v1.yaml"))
	eventually(t, "all to reviews-v1", func() (bool, string) {
		counts := tally(20, send)
		return counts["200 reviews-v1"] == 20, fmt.Sprint(counts)
	})
}
