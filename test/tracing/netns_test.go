//go:build netns

package tracing

import (
	"testing"

	"github.com/skiff-mesh/skiff/dataplane/tracing/tracetest"
)

// TestProductPageViewIsOneTraceNetns: each pod in its own network
// namespace with Istio's capture, so every hop passes two sidecars and the
// trace has them all: the gateway's span, then for each service its
// sidecar's inbound SERVER span under the caller's CLIENT span, and its
// outbound CLIENT spans under its own SERVER span. The collector listens
// on the mesh bridge, where the pods reach the host.
func TestProductPageViewIsOneTraceNetns(t *testing.T) {
	tr := viewOnePage(t, "netns", func(t *testing.T) *tracetest.Collector {
		return tracetest.StartOTLPGRPCOn(t, "198.18.0.1:0")
	}, "--xds-addr", "198.18.0.1:0")
	checkTrace(t, tr, map[hop]int{
		{"istio-ingressgateway", "SERVER"}: 1,
		{"productpage", "SERVER"}:          1, {"productpage", "CLIENT"}: 2,
		{"details", "SERVER"}: 1,
		{"reviews", "SERVER"}: 1, {"reviews", "CLIENT"}: 1,
		{"ratings", "SERVER"}: 1,
	}, map[string]hop{
		"productpage/SERVER": {"istio-ingressgateway", "SERVER"},
		"productpage/CLIENT": {"productpage", "SERVER"},
		"details/SERVER":     {"productpage", "CLIENT"},
		"reviews/SERVER":     {"productpage", "CLIENT"},
		"reviews/CLIENT":     {"reviews", "SERVER"},
		"ratings/SERVER":     {"reviews", "CLIENT"},
	})
}
