//go:build netns

package listener

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestOriginalDstNetns checks the real getsockopt(SO_ORIGINAL_DST) path:
// inside a fresh network namespace, iptables REDIRECTs loopback traffic for
// port 18080 to the capture listener, which must recover 127.0.0.1:18080
// (and [::1]:18080 over IPv6) and hand the connection to the 18080
// listener. It needs root; run with: go test -tags netns -run Netns.
func TestOriginalDstNetns(t *testing.T) {
	if os.Getenv("SKIFF_NETNS_CHILD") == "" {
		if os.Getuid() != 0 {
			t.Fatal("this test needs root to create a network namespace and iptables rules; run it as root (CI) or leave out -tags netns")
		}
		cmd := exec.Command("unshare", "--net", "--", os.Args[0], "-test.run", "^TestOriginalDstNetns$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "SKIFF_NETNS_CHILD=1")
		out, err := cmd.CombinedOutput()
		t.Logf("in the namespace:\n%s", out)
		if err != nil {
			t.Fatalf("namespace run failed: %v", err)
		}
		return
	}
	run := func(args ...string) {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	run("ip", "link", "set", "lo", "up")

	f := newFactory()
	m := newTestManager(t, f, Options{})
	for _, fam := range []struct{ capture, wildcard, dst, iptables string }{
		{"127.0.0.1", "0.0.0.0", "127.0.0.1", "iptables"},
		{"::1", "::", "::1", "ip6tables"},
	} {
		name := "virtualOutbound-" + fam.iptables
		if err := m.AddOrUpdate(&listenerv3.Listener{
			Name: name, Address: sockAddr(fam.capture, 0), UseOriginalDst: wrapperspb.Bool(true),
			ListenerFilters: []*listenerv3.ListenerFilter{lf(originalDstName)},
			FilterChains:    []*listenerv3.FilterChain{fchain("PassthroughFilterChain", nil)},
		}); err != nil {
			t.Fatal(err)
		}
		target := fam.wildcard + "_18080"
		if err := m.AddOrUpdate(&listenerv3.Listener{
			Name: target, Address: sockAddr(fam.wildcard, 18080), BindToPort: wrapperspb.Bool(false),
			FilterChains: []*listenerv3.FilterChain{fchain("svc", nil)},
		}); err != nil {
			t.Fatal(err)
		}
		port := m.Addr(name).(*net.TCPAddr).Port
		run(fam.iptables, "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", fam.dst, "--dport", "18080", "-j", "REDIRECT", "--to-ports", strconv.Itoa(port))

		c, err := net.DialTimeout("tcp", net.JoinHostPort(fam.dst, "18080"), 5*time.Second)
		if err != nil {
			t.Fatalf("%s: dial through the redirect: %v", fam.iptables, err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if got := readLine(t, c); got != target+"/svc" {
			t.Errorf("%s: served by %q, want %s/svc", fam.iptables, got, target)
		}
		s := f.next(t)
		if want := net.JoinHostPort(fam.dst, "18080"); s.info.OriginalDst == nil || s.info.OriginalDst.String() != want {
			t.Errorf("%s: original destination %v, want %s", fam.iptables, s.info.OriginalDst, want)
		}
		// Not redirected: straight to the capture port, kept by the capture
		// listener (its own address is the original destination).
		c2, err := net.Dial("tcp", net.JoinHostPort(fam.capture, strconv.Itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		c2.SetDeadline(time.Now().Add(10 * time.Second))
		if got := readLine(t, c2); got != name+"/PassthroughFilterChain" {
			t.Errorf("%s: direct connection served by %q", fam.iptables, got)
		}
		f.next(t)
		c.Close()
		c2.Close()
		fmt.Fprintf(os.Stderr, "%s ok\n", fam.iptables)
	}
}
