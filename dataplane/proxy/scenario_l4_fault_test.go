package proxy

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
)

// tcpBackend greets each connection with "name\n", echoes what it reads
// and half-closes once the client has.
func tcpBackend(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				io.WriteString(c, name+"\n")
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().String()
}

// Scenario 2: tcp_proxy with weighted_clusters splits connections by
// weight, and a plain tcp_proxy carries a half-closed stream both ways.
func TestScenarioTCPWeightedAndHalfClose(t *testing.T) {
	a, b := tcpBackend(t, "a"), tcpBackend(t, "b")
	split, plain := freeAddr(t), freeAddr(t)
	weighted := &tcpv3.TcpProxy{StatPrefix: "split", ClusterSpecifier: &tcpv3.TcpProxy_WeightedClusters{
		WeightedClusters: &tcpv3.TcpProxy_WeightedCluster{Clusters: []*tcpv3.TcpProxy_WeightedCluster_ClusterWeight{
			{Name: "a", Weight: 75}, {Name: "b", Weight: 25}}}}}
	_, p := scenario(t,
		xdsres.EDSCluster("a"), xdsres.EDSCluster("b"), xdsres.Endpoints("a", a), xdsres.Endpoints("b", b),
		xdsres.Listener("split", split, weighted),
		xdsres.Listener("plain", plain, xdsres.TCPProxy("plain", "b")))

	t.Run("weighted", func(t *testing.T) {
		// 75/25 over 400 connections: mean 300, standard deviation ~8.7.
		counts := map[string]int{}
		deadline := time.Now().Add(30 * time.Second)
		for i := 0; i < 400 && time.Now().Before(deadline); i++ {
			c, err := net.DialTimeout("tcp", split, 2*time.Second)
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			c.SetDeadline(time.Now().Add(3 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if err != nil {
				t.Fatalf("connection %d: reading the greeting: %v", i, err)
			}
			counts[strings.TrimSpace(line)]++
		}
		if counts["a"]+counts["b"] != 400 || counts["a"] < 260 || counts["a"] > 340 {
			t.Fatalf("75/25 over 400 connections gave %v", counts)
		}
	})

	t.Run("echo with half-close", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", plain, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		payload := make([]byte, 1<<20)
		rand.Read(payload)
		werr := make(chan error, 1)
		go func() {
			_, err := c.Write(payload)
			if err == nil {
				err = c.(*net.TCPConn).CloseWrite()
			}
			werr <- err
		}()
		got, err := io.ReadAll(c) // ends only when the far side half-closes in turn
		if err != nil {
			t.Fatalf("reading the echo: %v", err)
		}
		if err := <-werr; err != nil {
			t.Fatalf("writing: %v", err)
		}
		if !bytes.HasPrefix(got, []byte("b\n")) || !bytes.Equal(got[2:], payload) {
			t.Fatalf("echo through tcp_proxy: got %d bytes, want greeting + %d bytes echoed intact", len(got), len(payload))
		}
	})
	page := adminStats(t, p)
	if v := statValue(page, "cluster.a.upstream_cx_total"); v < 260 {
		t.Errorf("cluster.a.upstream_cx_total = %d, want the weighted connections counted", v)
	}
	if v := statValue(page, "tcp.plain.downstream_cx_total"); v != 1 {
		t.Errorf("tcp.plain.downstream_cx_total = %d, want 1", v)
	}
}

// Scenario 3: the fault filter as Istio emits it — empty in the HCM,
// configured per route through typed_per_filter_config.
func TestScenarioFaultInjection(t *testing.T) {
	a, hits := echoBackend(t, "a", nil)
	listen := freeAddr(t)
	hcm := xdsres.HCMFilters("http", "routes", xdsres.FaultFilter())
	_, p := scenario(t, httpStackWith(listen, hcm, map[string][]string{"a": {a}},
		xdsres.PerFilter(to(prefix("/delay"), "a"), xdsres.FaultFilterName, xdsres.FaultDelay(400*time.Millisecond, 100)),
		xdsres.PerFilter(to(prefix("/abort"), "a"), xdsres.FaultFilterName, xdsres.FaultAbort(503, 100)),
		xdsres.PerFilter(to(prefix("/half"), "a"), xdsres.FaultFilterName, xdsres.FaultAbort(503, 50)),
		to(prefix("/"), "a"))...)
	base := "http://" + listen

	t.Run("delay 100%", func(t *testing.T) {
		start := time.Now()
		c, body, _ := get(t, base+"/delay")
		if took := time.Since(start); c != 200 || body != "a /delay" || took < 400*time.Millisecond {
			t.Fatalf("delayed request: %d %q after %v, want 200 after ≥ 400ms", c, body, took)
		}
		start = time.Now()
		if get(t, base+"/plain"); time.Since(start) > 300*time.Millisecond {
			t.Errorf("an undelayed route took %v", time.Since(start))
		}
	})
	t.Run("abort 100%", func(t *testing.T) {
		before := hits.get()
		c, body, h := get(t, base+"/abort")
		if c != 503 || body != "fault filter abort" || flags(h) != "FI" {
			t.Fatalf("abort: %d %q flags %q, want 503 \"fault filter abort\" FI", c, body, flags(h))
		}
		if hits.get() != before {
			t.Errorf("an aborted request reached the upstream")
		}
	})
	t.Run("abort 50%", func(t *testing.T) {
		// 400 requests at 50%: mean 200, standard deviation 10.
		codes, _ := loadLoop(t, base+"/half", 400)
		if codes[503]+codes[200] != 400 || codes[503] < 150 || codes[503] > 250 {
			t.Fatalf("50%% abort over 400 requests gave %v", codes)
		}
	})
	page := adminStats(t, p)
	if v := statValue(page, "http.http.fault.aborts_injected"); v < 151 {
		t.Errorf("http.http.fault.aborts_injected = %d, want the aborts counted", v)
	}
	if v := statValue(page, "http.http.fault.delays_injected"); v != 1 {
		t.Errorf("http.http.fault.delays_injected = %d, want 1", v)
	}
}
