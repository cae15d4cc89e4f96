//go:build netns

package netns

import (
	"bufio"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skiff-mesh/skiff/dataplane/iptables"
)

// These tests need root. Each runs in a private network namespace (the
// "host" side, so the bridge never appears on the machine's real network)
// and creates its pods' namespaces from there; run them with
// go test -tags netns ./localmesh/netns.

var testOpts = Options{Bridge: "skiff-tbr0", Prefix: "skiff-t"}

const helperEnv = "SKIFF_NETNS_HELPER"

// TestMain lets the test binary double as the pods' programs: an HTTP
// server, an HTTP client, the capture rules installer and a tiny capturing
// proxy, chosen by SKIFF_NETNS_HELPER.
func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helper(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

func helper(mode string, args []string) int {
	switch mode {
	case "serve": // serve NAME ADDR...
		for _, addr := range args[1:] {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			go http.Serve(ln, greeter(args[0]))
		}
		fmt.Println("ready")
		select {}
	case "get": // get URL: prints the client's local address, then the body
		var local string
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err == nil {
					local = conn.LocalAddr().String()
				}
				return conn, err
			},
		}}
		resp, err := c.Get(args[0])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		body, _ := io.ReadAll(resp.Body)
		fmt.Printf("local=%s\n%s", local, body)
		return 0
	case "iptables": // iptables FLAGS: as skiff-proxy iptables
		fs := flag.NewFlagSet("iptables", flag.ContinueOnError)
		f := iptables.RegisterFlags(fs)
		if err := fs.Parse(args); err != nil {
			return 2
		}
		var err error
		if f.Cleanup {
			err = iptables.Cleanup(context.Background())
		} else {
			var cfg iptables.Config
			resolv, _ := os.Open("/etc/resolv.conf")
			if cfg, err = f.Config(resolv); err == nil {
				err = iptables.Apply(context.Background(), cfg)
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	case "proxy":
		return proxy()
	case "udp": // udp ADDR MSG: prints the reply
		c, err := net.Dial("udp4", args[0])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 512)
		_, err = c.Write([]byte(args[1]))
		n := 0
		if err == nil {
			n, err = c.Read(buf)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Printf("%s", buf[:n])
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
	return 2
}

// helperEnviron is the environment of a helper process in mode. Under
// -race a program sleeps a second at exit unless told not to, which would
// dominate this test's run time.
func helperEnviron(mode string) []string {
	return append(os.Environ(), helperEnv+"="+mode, "GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
}

func greeter(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s; peer=%s\n", name, r.RemoteAddr)
	})
}

// proxy stands in for skiff-proxy: it accepts on 15001 and 15006, logs
// "accept PORT orig=ADDR peer=ADDR" for each connection and relays it to
// its original destination, inbound ones from 127.0.0.6 as Envoy's
// inbound passthrough does; a service VIP is replaced by its endpoint.
// On UDP 127.0.0.1:15053 it answers "dns:" and
// the query.
func proxy() int {
	// SKIFF_TEST_VIPS maps service VIPs to an endpoint (VIP=IP,...), the
	// part of skiff-proxy's job this stand-in needs.
	vips := map[netip.Addr]netip.Addr{}
	for _, kv := range strings.Split(os.Getenv("SKIFF_TEST_VIPS"), ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vips[netip.MustParseAddr(k)] = netip.MustParseAddr(v)
		}
	}
	// REDIRECT sends the query to 127.0.0.1; replying from there is what
	// lets conntrack map the reply back to the nameserver's address.
	pc, err := net.ListenPacket("udp4", "127.0.0.1:15053")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("dns:"), buf[:n]...), from)
		}
	}()
	var mu sync.Mutex
	logf := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Printf(format+"\n", a...)
	}
	for _, port := range []int{15001, 15006} {
		ln, err := net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", port))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					orig, err := originalDst(c)
					if err != nil {
						logf("accept %d orig=none peer=%s", port, c.RemoteAddr())
						return
					}
					logf("accept %d orig=%s peer=%s", port, orig, c.RemoteAddr())
					if ep, ok := vips[orig.Addr()]; ok {
						orig = netip.AddrPortFrom(ep, orig.Port())
					}
					d := net.Dialer{Timeout: 5 * time.Second}
					if port == 15006 {
						d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 6)}
					}
					up, err := d.Dial("tcp4", orig.String())
					if err != nil {
						logf("dial %s: %v", orig, err)
						return
					}
					defer up.Close()
					go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite() }()
					io.Copy(c, up)
				}()
			}
		}()
	}
	logf("ready uid=%d", os.Getuid())
	select {}
}

func originalDst(c net.Conn) (netip.AddrPort, error) {
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var out netip.AddrPort
	var serr error
	err = raw.Control(func(fd uintptr) {
		mr, e := unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
		if e != nil {
			serr = e
			return
		}
		b := mr.Multiaddr
		out = netip.AddrPortFrom(netip.AddrFrom4([4]byte{b[4], b[5], b[6], b[7]}), binary.BigEndian.Uint16(b[2:4]))
	})
	if err == nil {
		err = serr
	}
	return out, err
}

// inPrivateNetns re-runs the calling test inside `unshare --net` and
// reports whether the caller is that child (and should do the work).
func inPrivateNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv("SKIFF_NETNS_CHILD") != "" {
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			t.Fatalf("ip link set lo up: %v: %s", err, out)
		}
		return true
	}
	if os.Getuid() != 0 {
		t.Fatal("this test needs root to create network namespaces; run it as root (CI) or leave out -tags netns")
	}
	cmd := exec.Command("unshare", "--net", "--", os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "SKIFF_NETNS_CHILD=1", "GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
	out, err := cmd.CombinedOutput()
	t.Logf("in the private namespace:\n%s", out)
	if err != nil {
		t.Fatalf("namespace run failed: %v", err)
	}
	// Named namespaces and /etc/netns are shared with the machine: the
	// child's teardown must have removed them.
	assertNoLeftovers(t, false)
	return false
}

// assertNoLeftovers checks nothing with the test prefix remains: named
// namespaces, /etc/netns directories and, when links is set, interfaces
// in the current namespace.
func assertNoLeftovers(t *testing.T, links bool) {
	t.Helper()
	for _, dir := range []string{runDir, etcDir} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), testOpts.Prefix) {
				t.Errorf("left behind: %s", filepath.Join(dir, e.Name()))
			}
		}
	}
	if links {
		names, err := linkNames(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if strings.HasPrefix(n, testOpts.Prefix) {
				t.Errorf("left behind: link %s", n)
			}
		}
	}
}

// helperBinary copies the test binary where UID 1337 can run it (go test's
// build directory is private to root).
func helperBinary(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "skiff-netns-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "helper")
	if err := os.WriteFile(bin, src, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// started is a long-running helper inside a pod with its stdout lines.
type started struct {
	lines chan string
}

// next returns the next stdout line, failing the test after a deadline.
func (s *started) next(t *testing.T, what string) string {
	t.Helper()
	select {
	case l, ok := <-s.lines:
		if !ok {
			t.Fatalf("%s: the process exited", what)
		}
		return l
	case <-time.After(15 * time.Second):
		t.Fatalf("%s: no output within 15s", what)
	}
	return ""
}

func start(t *testing.T, ctx context.Context, p *Pod, uid int, bin, mode string, args ...string) *started {
	t.Helper()
	cmd := p.Command(ctx, uid, bin, args...)
	cmd.Env = helperEnviron(mode)
	cmd.Dir = "/"
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	s := &started{lines: make(chan string, 64)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		close(s.lines)
	}()
	if l := s.next(t, mode+" in "+p.Name()); !strings.HasPrefix(l, "ready") {
		t.Fatalf("%s in %s: first line %q, want ready", mode, p.Name(), l)
	}
	return s
}

// get runs the HTTP client in pod p as uid and returns its local address
// and the response body.
func get(t *testing.T, ctx context.Context, p *Pod, uid int, bin, url string) (local, body string) {
	t.Helper()
	cmd := p.Command(ctx, uid, bin, url)
	cmd.Env = helperEnviron("get")
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("GET %s from pod %s as uid %d: %v\n%s", url, p.Name(), uid, err, out)
	}
	first, rest, _ := strings.Cut(string(out), "\n")
	return strings.TrimPrefix(first, "local="), rest
}

func hostGet(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s from the host: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func wantPrefix(t *testing.T, what, got, want string) {
	t.Helper()
	if !strings.HasPrefix(got, want) {
		t.Errorf("%s: got %q, want it to start with %q", what, got, want)
	}
}

func TestPodsAndCaptureNetns(t *testing.T) {
	if !inPrivateNetns(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	bin := helperBinary(t)

	h, err := Setup(ctx, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			h.Close()
		}
	}()
	ipA, ipB := netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3")
	a, err := h.AddPod(ctx, "a", ipA, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.AddPod(ctx, "b", ipB, []HostEntry{{IP: ipA, Names: []string{"a-svc", "a-svc.default.svc.cluster.local"}}})
	if err != nil {
		t.Fatal(err)
	}
	start(t, ctx, a, -1, bin, "serve", "a", "0.0.0.0:8080")
	start(t, ctx, a, -1, bin, "serve", "a-excluded", "0.0.0.0:15020")

	// Host side: a server on the gateway address the pods can reach.
	hostLn, err := net.Listen("tcp4", h.Gateway().String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	go http.Serve(hostLn, greeter("host"))
	hostURL := "http://" + hostLn.Addr().String() + "/"

	// Plain networking: pod to pod by a hosts name, host to pod, pod to host.
	_, body := get(t, ctx, b, -1, bin, "http://a-svc.default.svc.cluster.local:8080/")
	wantPrefix(t, "b → a by name", body, "hello from a; peer=198.18.0.3:")
	wantPrefix(t, "host → a", hostGet(t, "http://198.18.0.2:8080/"), "hello from a; peer=198.18.0.1:")
	_, body = get(t, ctx, a, -1, bin, hostURL)
	wantPrefix(t, "a → host", body, "hello from host; peer=198.18.0.2:")

	// Names added later are seen by new processes.
	if err := b.SetHosts([]HostEntry{
		{IP: ipA, Names: []string{"a-svc", "a-later"}},
		{IP: netip.MustParseAddr("198.19.0.10"), Names: []string{"a-vip", "a-vip.default.svc.cluster.local"}},
	}); err != nil {
		t.Fatal(err)
	}
	_, body = get(t, ctx, b, -1, bin, "http://a-later:8080/")
	wantPrefix(t, "b → a by a name added later", body, "hello from a;")

	// Capture: Istio's sidecar rules in both pods; b also excludes the
	// host's address and outbound port 15020, and captures DNS.
	sidecar := []string{"-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-b", "*", "-d", "15090,15021,15020"}
	for _, pc := range []struct {
		p    *Pod
		args []string
	}{{a, sidecar}, {b, append(append([]string{}, sidecar...), "-x", h.Gateway().String()+"/32", "-o", "15020", "--redirect-dns")}} {
		cmd := pc.p.Command(ctx, -1, bin, pc.args...)
		cmd.Env = helperEnviron("iptables")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("installing capture rules in %s: %v\n%s", pc.p.Name(), err, out)
		}
	}
	t.Setenv("SKIFF_TEST_VIPS", "198.19.0.10=198.18.0.2")
	proxyA := start(t, ctx, a, 1337, bin, "proxy")
	proxyB := start(t, ctx, b, 1337, bin, "proxy")

	// b's app → a: b's outbound capture sees the original destination, its
	// proxy's own connection (UID 1337) goes out unredirected, and a's
	// inbound capture hands it to a's proxy, which reaches the app from
	// 127.0.0.6.
	local, body := get(t, ctx, b, -1, bin, "http://a-svc:8080/")
	wantPrefix(t, "captured b → a", body, "hello from a; peer=127.0.0.6:")
	if l, want := proxyB.next(t, "b's proxy"), "accept 15001 orig=198.18.0.2:8080 peer="+local; l != want {
		t.Errorf("b's proxy logged %q, want %q", l, want)
	}
	if l := proxyA.next(t, "a's proxy"); !strings.HasPrefix(l, "accept 15006 orig=198.18.0.2:8080 peer=198.18.0.3:") {
		t.Errorf("a's proxy logged %q, want an inbound capture of 198.18.0.2:8080 from b", l)
	}

	// A service name resolves to its VIP, which exists nowhere: only the
	// capture makes the call work, with the VIP as original destination.
	local, body = get(t, ctx, b, -1, bin, "http://a-vip:8080/")
	wantPrefix(t, "captured b → a's VIP", body, "hello from a; peer=127.0.0.6:")
	if l, want := proxyB.next(t, "b's proxy"), "accept 15001 orig=198.19.0.10:8080 peer="+local; l != want {
		t.Errorf("b's proxy logged %q, want %q", l, want)
	}
	proxyA.next(t, "a's proxy")

	// The same call made as UID 1337 is not captured in b (still captured
	// inbound in a). The next root call is b's proxy's next line.
	local1337, body := get(t, ctx, b, 1337, bin, "http://a-svc:8080/")
	wantPrefix(t, "uid 1337 b → a", body, "hello from a; peer=127.0.0.6:")
	proxyA.next(t, "a's proxy")
	local, _ = get(t, ctx, b, -1, bin, "http://a-svc:8080/")
	if l := proxyB.next(t, "b's proxy"); !strings.HasSuffix(l, "peer="+local) {
		t.Errorf("b's proxy logged %q, want the root client %s (the uid 1337 client %s must not be captured)", l, local, local1337)
	}
	proxyA.next(t, "a's proxy")

	// Excluded: inbound port 15020 in a, outbound port 15020 and the host's
	// address in b. None reaches a proxy; the next captured call proves it.
	wantPrefix(t, "host → a:15020", hostGet(t, "http://198.18.0.2:15020/"), "hello from a-excluded; peer=198.18.0.1:")
	_, body = get(t, ctx, b, -1, bin, "http://a-svc:15020/")
	wantPrefix(t, "b → a:15020", body, "hello from a-excluded; peer=198.18.0.3:")
	_, body = get(t, ctx, b, -1, bin, hostURL)
	wantPrefix(t, "b → host (excluded CIDR)", body, "hello from host; peer=198.18.0.3:")
	// a's app calling its own pod address stays on lo, uncaptured.
	_, body = get(t, ctx, a, -1, bin, "http://198.18.0.2:8080/")
	wantPrefix(t, "a → itself", body, "hello from a; peer=198.18.0.2:")

	// Host → a is captured inbound.
	wantPrefix(t, "captured host → a", hostGet(t, "http://198.18.0.2:8080/"), "hello from a; peer=127.0.0.6:")
	if l := proxyA.next(t, "a's proxy"); !strings.HasPrefix(l, "accept 15006 orig=198.18.0.2:8080 peer=198.18.0.1:") {
		t.Errorf("a's proxy logged %q, want the host's call to 198.18.0.2:8080 (excluded ones must not be captured)", l)
	}
	local, _ = get(t, ctx, b, -1, bin, "http://a-svc:8080/")
	if l := proxyB.next(t, "b's proxy"); !strings.HasSuffix(l, "peer="+local) {
		t.Errorf("b's proxy logged %q, want the call from %s (excluded ones must not be captured)", l, local)
	}

	// DNS to the pod's nameserver (the gateway, from its resolv.conf) is
	// answered by the proxy's DNS port; the reply appears to come from the
	// nameserver, so a resolver accepts it.
	dns := b.Command(ctx, -1, bin, h.Gateway().String()+":53", "ping")
	dns.Env = helperEnviron("udp")
	if out, err := dns.CombinedOutput(); err != nil || string(out) != "dns:ping" {
		t.Errorf("UDP to the nameserver from b: %q, %v; want the proxy's reply dns:ping", out, err)
		for _, tb := range []string{"nat", "raw"} {
			o, _ := b.Command(ctx, -1, "iptables", "-t", tb, "-S").CombinedOutput()
			t.Logf("%s", o)
		}
	}

	// Cleanup in a pod leaves its table empty of ISTIO_ chains.
	cmd := a.Command(ctx, -1, "iptables", "-t", "nat", "-S")
	clean := a.Command(ctx, -1, bin, "-cleanup-only")
	clean.Env = helperEnviron("iptables")
	if out, err := clean.CombinedOutput(); err != nil {
		t.Fatalf("cleanup in a: %v\n%s", err, out)
	}
	if out, err := cmd.CombinedOutput(); err != nil || strings.Contains(string(out), "ISTIO_") {
		t.Errorf("after cleanup a's nat table still has ISTIO_ rules (err %v):\n%s", err, out)
	}
	wantPrefix(t, "host → a after cleanup", hostGet(t, "http://198.18.0.2:8080/"), "hello from a; peer=198.18.0.1:")

	cancel()
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	assertNoLeftovers(t, true)
}

// TestSetupRemovesLeftovers: a run that crashed without Close leaves its
// namespaces and links; the next Setup removes them and starts clean.
func TestSetupRemovesLeftovers(t *testing.T) {
	if !inPrivateNetns(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := Setup(ctx, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.AddPod(ctx, "crashed", netip.MustParseAddr("198.18.0.9"), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Abandon h as a crash would.
	h2, err := Setup(ctx, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(runDir, p.NetNS())); err == nil {
		t.Errorf("the crashed run's namespace %s survived Setup", p.NetNS())
	}
	if _, err := os.Stat(filepath.Join(etcDir, p.NetNS())); err == nil {
		t.Errorf("the crashed run's /etc/netns/%s survived Setup", p.NetNS())
	}
	// The same name and address are usable again.
	if _, err := h2.AddPod(ctx, "crashed", netip.MustParseAddr("198.18.0.9"), nil); err != nil {
		t.Fatalf("re-adding the pod after cleanup: %v", err)
	}
	if _, err := h2.AddPod(ctx, "crashed", netip.MustParseAddr("198.18.0.10"), nil); err == nil || !strings.Contains(err.Error(), "unique") {
		t.Errorf("adding a second pod named crashed: error %v, want a clash", err)
	}
	if err := h2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h2.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	assertNoLeftovers(t, true)
}
