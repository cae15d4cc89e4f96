package why

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

func TestParseDestination(t *testing.T) {
	for _, c := range []struct {
		in         string
		host, path string
		port       int
	}{
		{"reviews", "reviews", "/", 0},
		{"reviews:9080/reviews/0", "reviews", "/reviews/0", 9080},
		{"Reviews.default.svc.cluster.local/x?y=1", "reviews.default.svc.cluster.local", "/x?y=1", 0},
		{"198.19.0.7:80", "198.19.0.7", "/", 80},
		{"[::1]:8080/a", "::1", "/a", 8080},
	} {
		d, err := parseDestination(c.in)
		if err != nil || d.host != c.host || d.port != c.port || d.path != c.path {
			t.Errorf("parseDestination(%q) = %+v, %v; want host %q port %d path %q", c.in, d, err, c.host, c.port, c.path)
		}
	}
	for _, in := range []string{"reviews:0", "reviews:http", ":9080/x", "/x"} {
		var ue *usageError
		if _, err := parseDestination(in); !errors.As(err, &ue) || !strings.Contains(err.Error(), in) {
			t.Errorf("parseDestination(%q): %v, want a usage error naming it", in, err)
		}
	}
}

func TestParseArgs(t *testing.T) {
	o, err := parseArgs([]string{"-n", "shop", "productpage", "-H", "end-user: jason", "reviews:9080", "--method", "post", "-H", "x-a:1", "-o", "json"})
	if err != nil {
		t.Fatal(err)
	}
	if o.Namespace != "shop" || o.Source != "productpage" || o.Destination != "reviews:9080" || o.Method != http.MethodPost || o.Output != "json" {
		t.Errorf("options %+v", o)
	}
	if o.Headers.Get("End-User") != "jason" || o.Headers.Get("X-A") != "1" {
		t.Errorf("headers %v, want End-User: jason and X-A: 1", o.Headers)
	}
	for _, args := range [][]string{{"productpage"}, {"a", "b", "c"}, {"a", "b", "-H", "novalue"}, {"a", "b", "-o", "yaml"}} {
		var ue *usageError
		if _, err := parseArgs(args); !errors.As(err, &ue) {
			t.Errorf("parseArgs(%q): %v, want a usage error", args, err)
		}
	}
}

func TestParsePolicyName(t *testing.T) {
	ns, name, rule, ok := parsePolicyName("ns[default]-policy[deny-productpage]-rule[2]")
	if !ok || ns != "default" || name != "deny-productpage" || rule != 2 {
		t.Errorf("got %q %q %d %v", ns, name, rule, ok)
	}
	for _, s := range []string{"", "my-policy", "ns[a]-policy[b]-rule[x]", "ns[a]-policy[b]"} {
		if _, _, _, ok := parsePolicyName(s); ok {
			t.Errorf("parsePolicyName(%q) ok, want not an Istio name", s)
		}
	}
}

func TestParseConfigPath(t *testing.T) {
	kind, ns, name, ok := parseConfigPath("/apis/networking.istio.io/v1/namespaces/default/virtual-service/reviews")
	if !ok || kind != "virtual-service" || ns != "default" || name != "reviews" {
		t.Errorf("got %q %q %q %v", kind, ns, name, ok)
	}
	if _, _, _, ok := parseConfigPath("/apis/x"); ok {
		t.Error("a short path parsed")
	}
}

func TestRunWithoutMesh(t *testing.T) {
	var out, errb strings.Builder
	if code := Run(t.Context(), []string{"productpage", "reviews", "--state-dir", t.TempDir()}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "skiff up") {
		t.Errorf("without a mesh: exit %d, stderr %q; want 1 and how to start one", code, errb.String())
	}
	out.Reset()
	if code := Run(t.Context(), []string{"-h"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "usage: skiff why") {
		t.Errorf("-h: exit %d, %q", code, out.String())
	}
	errb.Reset()
	if code := Run(t.Context(), []string{"productpage"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "want SOURCE and DESTINATION") {
		t.Errorf("one argument: exit %d, %q; want 2", code, errb.String())
	}
}
