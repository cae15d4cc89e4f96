package why_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/cli/why"
	"github.com/skiff-mesh/skiff/internal/testing/meshtest"
)

// These tests run `skiff up` on Bookinfo's local manifests with netns
// capture (sidecars speak mTLS, as in Kubernetes), apply Istio's sample
// YAML unchanged, and read `skiff why` as a user does: its text and its
// -o json.

var bin, repo, samples string

func TestMain(m *testing.M) {
	flag.Parse()
	if os.Getuid() != 0 || testing.Short() {
		// The black-box test needs network namespaces; the unit tests run anyway.
		os.Exit(m.Run())
	}
	dir, err := meshtest.Build(map[string]string{
		"skiff": "github.com/skiff-mesh/skiff/cmd/skiff", "skiffd": "github.com/skiff-mesh/skiff/cmd/skiffd",
		"skiff-proxy": "github.com/skiff-mesh/skiff/cmd/skiff-proxy", "bookinfo": "github.com/skiff-mesh/skiff/samples/bookinfo/cmd/bookinfo",
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = dir
	repo, _ = filepath.Abs("../..")
	samples = filepath.Join(filepath.Dir(repo), "shared", "istio-samples", "bookinfo", "networking")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func sample(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(samples, name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("Istio's Bookinfo sample %s is missing (%v): check out ../shared/istio-samples beside the repository", p, err)
	}
	return p
}

// whyRun is one `skiff why` run: its text and its -o json.
type whyRun struct {
	text string
	rep  why.Report
}

func runWhy(t *testing.T, m *meshtest.Mesh, args ...string) whyRun {
	t.Helper()
	var w whyRun
	out := m.Skiff(t, append([]string{"why", "-o", "json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &w.rep); err != nil {
		t.Fatalf("skiff why -o json %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	// Second, so that once the JSON shows the config a test waits for,
	// the text does too (config only moves forward).
	w.text = m.Skiff(t, append([]string{"why"}, args...)...)
	return w
}

// until runs skiff why until want holds (config takes a moment to reach
// the proxies after skiff apply), for at most 30 s, and returns the last run.
func until(t *testing.T, m *meshtest.Mesh, what string, want func(why.Report) bool, args ...string) whyRun {
	t.Helper()
	var w whyRun
	for deadline := time.Now().Add(30 * time.Second); ; {
		w = runWhy(t, m, args...)
		if want(w.rep) {
			return w
		}
		if time.Now().After(deadline) {
			t.Fatalf("skiff why %s: still not %s after 30 s; last answer:\n%s", strings.Join(args, " "), what, w.text)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func mustContain(t *testing.T, text string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(text, w) {
			t.Errorf("skiff why printed no %q:\n%s", w, text)
		}
	}
}

func subset(r why.Report) string {
	if r.Cluster == nil {
		return ""
	}
	return r.Cluster.Subset
}

func TestWhyBookinfo(t *testing.T) {
	if bin == "" {
		t.Skip("needs root (network namespaces) and not -short")
	}
	m := meshtest.Start(t, bin, []string{filepath.Join(repo, "samples/bookinfo/platform/local"),
		"--capture", "netns", "--gateway-port", "0", "--monitoring-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0"},
		func(l string) (bool, error) { return strings.HasPrefix(l, "product page:"), nil })
	m.Apply(t, sample(t, "destination-rule-all.yaml"))

	t.Run("all-v1 names the reviews-v1 subset and its DestinationRule", func(t *testing.T) {
		m.Apply(t, sample(t, "virtual-service-all-v1.yaml"))
		w := until(t, m, "routed to subset v1", func(r why.Report) bool { return subset(r) == "v1" },
			"productpage", "reviews:9080/reviews/0")
		r := w.rep
		if r.Listener.Via != "virtualOutbound" || r.Listener.Listener != "0.0.0.0_9080" || r.Listener.RouteConfig != "9080" {
			t.Errorf("listener step %+v, want virtualOutbound → 0.0.0.0_9080 → route config 9080", r.Listener)
		}
		if vs := r.Route.VirtualService; vs == nil || vs.Namespace != "default" || vs.Name != "reviews" || r.Route.HTTPRoute != 0 {
			t.Errorf("route step %+v, want VirtualService default/reviews http[0]", r.Route)
		}
		if dr := r.Cluster.DestinationRule; dr == nil || dr.Name != "reviews" || r.Cluster.Name != "outbound|9080|v1|reviews.default.svc.cluster.local" {
			t.Errorf("cluster step %+v, want outbound|9080|v1|reviews… shaped by DestinationRule default/reviews", r.Cluster)
		}
		if r.Endpoints.Healthy != 1 || !strings.HasPrefix(r.Endpoints.Hosts[0].Pod, "reviews-v1-") {
			t.Errorf("endpoints %+v, want one healthy reviews-v1 pod", r.Endpoints)
		}
		if r.MTLS.SourceMode != "ISTIO_MUTUAL" || r.MTLS.DestMode != "PERMISSIVE" || !r.MTLS.OK {
			t.Errorf("mTLS step %+v, want ISTIO_MUTUAL to a PERMISSIVE destination", r.MTLS)
		}
		if !r.Authz.Allowed || r.Authz.Principal != "cluster.local/ns/default/sa/bookinfo-productpage" {
			t.Errorf("authorization step %+v, want allowed for productpage's principal", r.Authz)
		}
		if r.Verdict.Step != "delivered" || r.Verdict.Status != 0 {
			t.Errorf("verdict %+v, want delivered", r.Verdict)
		}
		mustContain(t, w.text,
			"from VirtualService default/reviews http[0]",
			"→ outbound|9080|v1|reviews.default.svc.cluster.local  weight 100%",
			"shaped by DestinationRule default/reviews, subset v1",
			"verdict: delivered: the request reaches reviews-v1-")
	})

	t.Run("reviews-test-v2 sends jason to v2", func(t *testing.T) {
		m.Apply(t, sample(t, "virtual-service-reviews-test-v2.yaml"))
		w := until(t, m, "routed to subset v2", func(r why.Report) bool { return subset(r) == "v2" },
			"productpage", "reviews:9080/reviews/0", "-H", "end-user: jason")
		if w.rep.Route.HTTPRoute != 0 || !strings.HasPrefix(w.rep.Endpoints.Hosts[0].Pod, "reviews-v2-") {
			t.Errorf("jason: route %+v endpoints %+v, want http[0] to reviews-v2", w.rep.Route, w.rep.Endpoints)
		}
		mustContain(t, w.text, "header End-User: jason", "from VirtualService default/reviews http[0]", "outbound|9080|v2|reviews.default.svc.cluster.local")
		other := runWhy(t, m, "productpage", "reviews:9080/reviews/0", "-H", "end-user: mary")
		if subset(other.rep) != "v1" || other.rep.Route.HTTPRoute != 1 {
			t.Errorf("another user: %s", other.text)
		}
	})

	t.Run("reviews-50-v3 lists both weights", func(t *testing.T) {
		m.Apply(t, sample(t, "virtual-service-reviews-50-v3.yaml"))
		w := until(t, m, "split 50/50", func(r why.Report) bool { return r.Route != nil && len(r.Route.Destinations) == 2 },
			"productpage", "reviews:9080/reviews/0")
		d := w.rep.Route.Destinations
		if d[0].Cluster != "outbound|9080|v1|reviews.default.svc.cluster.local" || d[0].Weight != 50 ||
			d[1].Cluster != "outbound|9080|v3|reviews.default.svc.cluster.local" || d[1].Weight != 50 {
			t.Errorf("destinations %+v, want v1 and v3 at 50%% each", d)
		}
		mustContain(t, w.text, "→ outbound|9080|v3|reviews.default.svc.cluster.local  weight 50%", "note: the route splits traffic over 2 clusters")
	})

	t.Run("an abort fault on ratings explains the 500", func(t *testing.T) {
		m.Apply(t, sample(t, "virtual-service-ratings-test-abort.yaml"))
		w := until(t, m, "aborted", func(r why.Report) bool { return r.Verdict.Flags == "FI" },
			"deploy/reviews-v2", "ratings:9080/ratings/0", "-H", "end-user: jason")
		if w.rep.Verdict.Status != 500 || w.rep.Verdict.Step != "route" || w.rep.Route.Fault == nil || w.rep.Route.Fault.AbortPercent != 100 {
			t.Errorf("verdict %+v fault %+v, want 500 FI from the route's fault", w.rep.Verdict, w.rep.Route.Fault)
		}
		if w.rep.Cluster != nil {
			t.Errorf("an aborted request reaches no cluster, got cluster step %+v", w.rep.Cluster)
		}
		mustContain(t, w.text, "fault injection: abort 500 for 100% of requests", "verdict: 500 FI (step route)", "from VirtualService default/ratings http[0]")
		ok := runWhy(t, m, "deploy/reviews-v2", "ratings:9080/ratings/0")
		if ok.rep.Verdict.Step != "delivered" || ok.rep.Route.HTTPRoute != 1 {
			t.Errorf("without end-user: jason the fault does not apply:\n%s", ok.text)
		}
	})

	t.Run("an AuthorizationPolicy denying productpage explains the 403", func(t *testing.T) {
		m.ApplyInline(t, "deny-productpage.yaml", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-productpage
  namespace: default
spec:
  selector:
    matchLabels:
      app: details
  action: DENY
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/bookinfo-productpage"]
`)
		w := until(t, m, "denied", func(r why.Report) bool { return r.Verdict.Status == 403 },
			"productpage", "details:9080/details/0")
		a := w.rep.Authz
		if a == nil || a.Allowed || a.Policy == nil || a.Policy.Name != "deny-productpage" || a.Policy.Namespace != "default" || a.Rule != 0 {
			t.Errorf("authorization step %+v, want denied by AuthorizationPolicy default/deny-productpage rule 0", a)
		}
		mustContain(t, w.text, "403 RBAC: access denied by AuthorizationPolicy default/deny-productpage rule[0]",
			"matched ns[default]-policy[deny-productpage]-rule[0]")
		// Another source is not denied.
		if r := runWhy(t, m, "deploy/reviews-v1", "details:9080/details/0"); !r.rep.Authz.Allowed {
			t.Errorf("reviews → details is not named by the policy, yet:\n%s", r.text)
		}
	})

	t.Run("a subset without pods explains 503 UH", func(t *testing.T) {
		m.Apply(t, sample(t, "virtual-service-ratings-mysql.yaml"))
		w := until(t, m, "routed to v2-mysql", func(r why.Report) bool { return subset(r) == "v2-mysql" },
			"deploy/reviews-v3", "ratings:9080/ratings/0")
		if w.rep.Verdict.Status != 503 || w.rep.Verdict.Flags != "UH" || w.rep.Endpoints.Healthy != 0 {
			t.Errorf("verdict %+v endpoints %+v, want 503 UH with no endpoints", w.rep.Verdict, w.rep.Endpoints)
		}
		mustContain(t, w.text, "0 healthy, 0 unhealthy", "503 UH (no healthy upstream)")
	})

	t.Run("STRICT destination and plaintext source explain a reset", func(t *testing.T) {
		m.ApplyInline(t, "strict.yaml", `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: details-strict
  namespace: default
spec:
  selector:
    matchLabels:
      app: details
  mtls:
    mode: STRICT
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: details
  namespace: default
spec:
  host: details
  trafficPolicy:
    tls:
      mode: DISABLE
  subsets:
  - name: v1
    labels:
      version: v1
`)
		w := until(t, m, "an mTLS mismatch", func(r why.Report) bool { return r.Verdict.Step == "mtls" },
			"deploy/reviews-v1", "details:9080/details/0")
		ms := w.rep.MTLS
		if ms.SourceMode != "DISABLE" || ms.DestMode != "STRICT" || ms.PeerAuthentication == nil || ms.PeerAuthentication.Name != "details-strict" {
			t.Errorf("mTLS step %+v, want plaintext to STRICT set by PeerAuthentication default/details-strict", ms)
		}
		mustContain(t, w.text, "mismatch: STRICT destination, plaintext source → connection reset (503 UF/URX)")
	})

	t.Run("an unknown source says which pods there are", func(t *testing.T) {
		cmd := exec.Command(filepath.Join(bin, "skiff"), "why", "nosuchpod", "reviews", "--state-dir", m.State)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "its pods: details-v1-") {
			t.Errorf("skiff why nosuchpod: %v\n%s\nwant exit 2 listing the pods", err, out)
		}
	})
}
