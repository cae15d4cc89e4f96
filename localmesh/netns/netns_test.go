package netns

import (
	"context"
	"net/netip"
	"strings"
	"testing"
)

func TestOptionsDefaultsAndLimits(t *testing.T) {
	o, err := Options{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if o.Bridge != "skiff0" || o.Prefix != "skiff-" || o.Gateway.String() != "198.18.0.1/15" {
		t.Errorf("defaults: %+v", o)
	}
	for _, bad := range []Options{
		{Bridge: "a-very-long-bridge"},
		{Prefix: "much-too-long-"},
		{Gateway: netip.MustParsePrefix("fd00::1/64")},
		{Gateway: netip.MustParsePrefix("198.18.0.1/32")},
	} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// TestVethNames: host-side names fit Linux's 15 characters, keep the
// prefix (so Cleanup finds them), and differ between pods.
func TestVethNames(t *testing.T) {
	seen := map[string]string{}
	for _, pod := range []string{"productpage-v1-0", "reviews-v1-0", "reviews-v2-0", "reviews-v3-0", "a"} {
		n := vethName("skiff-", pod)
		if len(n) != maxIfName || !strings.HasPrefix(n, "skiff-v") {
			t.Errorf("vethName(%q) = %q", pod, n)
		}
		if o, dup := seen[n]; dup {
			t.Errorf("%s and %s share veth name %s", o, pod, n)
		}
		seen[n] = pod
		if vethName("skiff-", pod) != n {
			t.Errorf("vethName(%q) is not stable", pod)
		}
	}
}

func TestHostsFile(t *testing.T) {
	p := &Pod{name: "reviews-v1-0", ip: netip.MustParseAddr("198.18.0.7")}
	got := string(p.hostsFile([]HostEntry{
		{IP: netip.MustParseAddr("198.19.0.10"), Names: []string{"reviews", "reviews.default", "reviews.default.svc.cluster.local"}},
		{IP: netip.MustParseAddr("198.19.0.11")},
	}))
	for _, want := range []string{
		"127.0.0.1\tlocalhost\n",
		"198.18.0.7\treviews-v1-0\n",
		"198.19.0.10\treviews reviews.default reviews.default.svc.cluster.local\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("hosts file lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "198.19.0.11") {
		t.Errorf("an entry without names was written:\n%s", got)
	}
}

func TestAddPodRejectsBadInput(t *testing.T) {
	h := &Host{opts: Options{Bridge: "skiff0", Prefix: "skiff-", Gateway: netip.MustParsePrefix("198.18.0.1/15")}, pods: map[string]*Pod{}}
	for _, tc := range []struct {
		name, ip, want string
	}{
		{"Reviews", "198.18.0.5", `character 'R' not allowed`},
		{"a/b", "198.18.0.5", `character '/' not allowed`},
		{"ok", "10.0.0.5", "not a host address in 198.18.0.0/15"},
		{"ok", "198.18.0.1", "other than the gateway"},
	} {
		_, err := h.AddPod(context.Background(), tc.name, netip.MustParseAddr(tc.ip), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("AddPod(%q, %s): %v, want an error containing %q", tc.name, tc.ip, err, tc.want)
		}
	}
}
