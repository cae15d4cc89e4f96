package listener

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// One listener with tls_inspector and http_inspector, chains told apart by
// SNI (exact beats wildcard beats none), transport protocol and the
// application protocol detected on plaintext.
func TestChainSelectionByInspectors(t *testing.T) {
	f := newFactory()
	st := stats.New()
	m := newTestManager(t, f, Options{Stats: st})
	certPEM, keyPEM, pool := serverCert(t, "api.example.com")
	exact := fchain("sni-exact", &listenerv3.FilterChainMatch{ServerNames: []string{"api.example.com"}, TransportProtocol: "tls"})
	exact.TransportSocket = tlsTransport(certPEM, keyPEM, "h2", "http/1.1")
	l := &listenerv3.Listener{
		Name:            "in",
		Address:         sockAddr("127.0.0.1", 0),
		ListenerFilters: []*listenerv3.ListenerFilter{lf(tlsInspectorName), lf(httpInspectorName)},
		FilterChains: []*listenerv3.FilterChain{
			exact,
			fchain("sni-wild", &listenerv3.FilterChainMatch{ServerNames: []string{"*.example.com"}, TransportProtocol: "tls"}),
			fchain("tls-any", &listenerv3.FilterChainMatch{TransportProtocol: "tls"}),
			fchain("http1", &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer", ApplicationProtocols: []string{"http/1.1", "http/1.0"}}),
			fchain("h2c", &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer", ApplicationProtocols: []string{"h2c"}}),
			fchain("tls-alpn-istio", &listenerv3.FilterChainMatch{TransportProtocol: "tls", ApplicationProtocols: []string{"istio-peer-exchange"}}),
			fchain("raw", &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"}),
		},
	}
	if err := m.AddOrUpdate(l); err != nil {
		t.Fatal(err)
	}

	// TLS terminated on the exact-SNI chain: the handler sees the
	// decrypted stream and the negotiated ALPN.
	tc := tls.Client(dialListener(t, m, "in"), &tls.Config{ServerName: "api.example.com", RootCAs: pool, NextProtos: []string{"h2"}})
	if got := readLine(t, tc); got != "in/sni-exact" {
		t.Errorf("exact SNI: got %q", got)
	}
	s := f.next(t)
	if s.info.TLS == nil || s.info.TLS.NegotiatedProtocol != "h2" || s.info.SNI != "api.example.com" || s.info.TransportProtocol != "tls" {
		t.Errorf("exact SNI: info %+v", s.info)
	}
	if got := st.CounterValue("listener.127.0.0.1_0.ssl.handshake"); got != 1 {
		t.Errorf("ssl.handshake = %d", got)
	}
	io.WriteString(tc, "ping\n")
	if got := readLine(t, tc); got != "ping" {
		t.Errorf("echo over TLS: %q", got)
	}

	// Passthrough chains (no transport socket) see the raw ClientHello
	// replayed: the handler's plaintext greeting breaks the client's
	// handshake, which is fine for telling which chain got it.
	for _, tcase := range []struct{ sni, alpn, want string }{
		{"www.example.com", "", "sni-wild"},
		{"a.b.example.com", "", "sni-wild"},
		{"example.org", "", "tls-any"},
		{"example.org", "istio-peer-exchange", "tls-alpn-istio"},
	} {
		c := dialListener(t, m, "in")
		cfg := &tls.Config{ServerName: tcase.sni, InsecureSkipVerify: true}
		if tcase.alpn != "" {
			cfg.NextProtos = []string{tcase.alpn}
		}
		go tls.Client(c, cfg).Handshake()
		s := f.next(t)
		if s.chain != tcase.want || s.info.SNI != tcase.sni {
			t.Errorf("SNI %q ALPN %q: chain %q (sni %q), want %q", tcase.sni, tcase.alpn, s.chain, s.info.SNI, tcase.want)
		}
		c.Close()
	}

	// Plaintext: HTTP/1.1, the HTTP/2 preface, something else. The bytes
	// the inspectors peeked reach the handler (echoed back in full).
	for _, tcase := range []struct{ send, want, alpn string }{
		{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "http1", "http/1.1"},
		{"POST /x HTTP/1.0\r\n\r\n", "http1", "http/1.0"},
		{string(h2Preface), "h2c", "h2c"},
		{"SSH-2.0-OpenSSH_9.6\r\n", "raw", ""},
		{"G", "raw", ""}, // half a method, then EOF-free silence: decided on the next bytes
	} {
		c := dialListener(t, m, "in")
		io.WriteString(c, tcase.send)
		if tcase.send == "G" {
			io.WriteString(c, "ARBAGE\r\n")
			tcase.send = "GARBAGE\r\n"
		}
		br := bufio.NewReader(c)
		line, _ := br.ReadString('\n')
		s := f.next(t)
		if s.chain != tcase.want || strings.Join(s.info.ALPN, ",") != tcase.alpn || s.info.TransportProtocol != "raw_buffer" {
			t.Errorf("%q: chain %q alpn %v tp %q, want %q %q", tcase.send, s.chain, s.info.ALPN, s.info.TransportProtocol, tcase.want, tcase.alpn)
		}
		if line != "in/"+tcase.want+"\n" {
			t.Errorf("%q: greeting %q", tcase.send, line)
		}
		echo := make([]byte, len(tcase.send))
		if _, err := io.ReadFull(br, echo); err != nil || string(echo) != tcase.send {
			t.Errorf("%q: peeked bytes not replayed: got %q, %v", tcase.send, echo, err)
		}
		c.Close()
	}
	if got := st.CounterValue("listener.127.0.0.1_0.downstream_cx_total"); got < 10 {
		t.Errorf("downstream_cx_total = %d", got)
	}
}

// Destination port, destination prefix (longest wins), source type and
// source ports, with the destination taken from original_dst; no match
// closes the connection and counts no_filter_chain_match; a default chain
// catches it when configured.
func TestChainSelectionByAddresses(t *testing.T) {
	f := newFactory()
	st := stats.New()
	od, queue := queueOriginalDst()
	m := newTestManager(t, f, Options{Stats: st, OriginalDst: od})
	l := &listenerv3.Listener{
		Name:            "out",
		Address:         sockAddr("127.0.0.1", 0),
		ListenerFilters: []*listenerv3.ListenerFilter{lf(originalDstName)},
		FilterChains: []*listenerv3.FilterChain{
			fchain("port-9080", &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(9080)}),
			fchain("port-9080-vip", &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(9080), PrefixRanges: []*corev3.CidrRange{cidr("198.19.0.10", 32)}}),
			fchain("net-16", &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{cidr("198.18.0.0", 16)}}),
			fchain("net-24", &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{cidr("198.18.7.0", 24)}}),
			fchain("local-3306", &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(3306), SourceType: listenerv3.FilterChainMatch_SAME_IP_OR_LOOPBACK}),
			fchain("external-5432", &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(5432), SourceType: listenerv3.FilterChainMatch_EXTERNAL}),
			fchain("src-loopback-6379", &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(6379), SourcePrefixRanges: []*corev3.CidrRange{cidr("127.0.0.0", 8)}}),
		},
	}
	if err := m.AddOrUpdate(l); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dst  string
		want string // "" = closed without a chain
	}{
		{"198.19.0.99:9080", "port-9080"},
		{"198.19.0.10:9080", "port-9080-vip"},
		{"198.18.7.7:80", "net-24"},
		{"198.18.9.9:80", "net-16"},
		{"198.18.7.7:3306", "local-3306"}, // the port step wins over the prefix step
		{"198.18.7.7:5432", ""},           // port matches, but the source is local: no fallback
		{"198.20.0.1:80", ""},             // nothing matches
		{"198.18.1.1:6379", "src-loopback-6379"},
	} {
		queue <- net.TCPAddrFromAddrPort(mustAddrPort(tc.dst))
		c := dialListener(t, m, "out")
		if tc.want == "" {
			if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
				t.Errorf("%s: connection not closed (read %d, %v)", tc.dst, n, err)
			}
			continue
		}
		s := f.next(t)
		if s.chain != tc.want || s.info.OriginalDst.String() != tc.dst {
			t.Errorf("%s: chain %q (original dst %v), want %q", tc.dst, s.chain, s.info.OriginalDst, tc.want)
		}
		c.Close()
	}
	if got := st.CounterValue("listener.127.0.0.1_0.no_filter_chain_match"); got != 2 {
		t.Errorf("no_filter_chain_match = %d, want 2", got)
	}

	// A default chain now catches what nothing matches.
	l.DefaultFilterChain = fchain("default", nil)
	if err := m.AddOrUpdate(l); err != nil {
		t.Fatal(err)
	}
	queue <- net.TCPAddrFromAddrPort(mustAddrPort("198.20.0.1:80"))
	dialListener(t, m, "out")
	if s := f.next(t); s.chain != "default" {
		t.Errorf("unmatched with default chain: %q", s.chain)
	}
}

// Server-first protocols: tls_inspector waits for the client's first bytes
// up to listener_filters_timeout; then either continues as plaintext or
// closes. A client that speaks first is never held up.
func TestListenerFiltersTimeout(t *testing.T) {
	f := newFactory()
	st := stats.New()
	m := newTestManager(t, f, Options{Stats: st})
	mk := func(name string, cont bool) *listenerv3.Listener {
		return &listenerv3.Listener{
			Name: name, Address: sockAddr("127.0.0.1", 0), StatPrefix: name,
			ListenerFilters:                  []*listenerv3.ListenerFilter{lf(tlsInspectorName), lf(httpInspectorName)},
			ListenerFiltersTimeout:           durationpb.New(300 * time.Millisecond),
			ContinueOnListenerFiltersTimeout: cont,
			FilterChains:                     []*listenerv3.FilterChain{fchain("any", nil)},
		}
	}
	patient := mk("patient", false)
	patient.ListenerFiltersTimeout = durationpb.New(10 * time.Second)
	for _, l := range []*listenerv3.Listener{mk("cont", true), mk("strict", false), patient} {
		if err := m.AddOrUpdate(l); err != nil {
			t.Fatal(err)
		}
	}
	// Silent client, continue: the chain gets it after the timeout.
	start := time.Now()
	c := dialListener(t, m, "cont")
	if got := readLine(t, c); got != "cont/any" {
		t.Errorf("got %q", got)
	}
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Errorf("chain reached after %v, before the 300ms timeout", el)
	}
	if s := f.next(t); s.info.TransportProtocol != "raw_buffer" {
		t.Errorf("transport protocol %q", s.info.TransportProtocol)
	}
	// Silent client, strict: closed.
	c = dialListener(t, m, "strict")
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("strict listener kept a silent connection: %d, %v", n, err)
	}
	if got := st.CounterValue("listener.strict.downstream_pre_cx_timeout"); got != 1 {
		t.Errorf("downstream_pre_cx_timeout = %d", got)
	}
	// A client speaking a non-TLS, non-HTTP protocol first goes straight
	// through, long before the 10s timeout.
	start = time.Now()
	c = dialListener(t, m, "patient")
	io.WriteString(c, "\x00binary\n")
	if got := readLine(t, c); got != "patient/any" {
		t.Errorf("got %q", got)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("speaking client waited %v for the listener filters", el)
	}
	f.next(t)
}

// use_original_dst: virtualOutbound hands a redirected connection to the
// listener of its original destination (exact address, else 0.0.0.0 with
// the port), which runs its own listener filters and chains; with no such
// listener virtualOutbound's own chain serves it.
func TestUseOriginalDstHandOff(t *testing.T) {
	f := newFactory()
	st := stats.New()
	od, queue := queueOriginalDst()
	m := newTestManager(t, f, Options{Stats: st, OriginalDst: od, DrainTime: 200 * time.Millisecond})
	listeners := []*listenerv3.Listener{
		{
			Name: "virtualOutbound", Address: sockAddr("127.0.0.1", 0),
			UseOriginalDst:  wrapperspb.Bool(true),
			ListenerFilters: []*listenerv3.ListenerFilter{lf(originalDstName)},
			FilterChains:    []*listenerv3.FilterChain{fchain("PassthroughFilterChain", nil)},
		},
		{
			Name: "0.0.0.0_9080", Address: sockAddr("0.0.0.0", 9080), BindToPort: wrapperspb.Bool(false),
			ListenerFilters: []*listenerv3.ListenerFilter{lf(httpInspectorName)},
			FilterChains:    []*listenerv3.FilterChain{fchain("http", &listenerv3.FilterChainMatch{ApplicationProtocols: []string{"http/1.1"}}), fchain("tcp", nil)},
		},
		{
			Name: "198.18.0.5_3306", Address: sockAddr("198.18.0.5", 3306), BindToPort: wrapperspb.Bool(false),
			FilterChains: []*listenerv3.FilterChain{fchain("mysql", nil)},
		},
	}
	for _, l := range listeners {
		if err := m.AddOrUpdate(l); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		dst, send, listener, chain string
	}{
		{"198.19.0.1:9080", "GET / HTTP/1.1\r\n\r\n", "0.0.0.0_9080", "http"},
		{"198.19.0.1:9080", "hello\n", "0.0.0.0_9080", "tcp"},
		{"198.18.0.5:3306", "", "198.18.0.5_3306", "mysql"},
		{"198.18.0.6:3306", "", "virtualOutbound", "PassthroughFilterChain"},
		{"198.19.0.1:7777", "", "virtualOutbound", "PassthroughFilterChain"},
	} {
		queue <- net.TCPAddrFromAddrPort(mustAddrPort(tc.dst))
		c := dialListener(t, m, "virtualOutbound")
		io.WriteString(c, tc.send)
		if got := readLine(t, c); got != tc.listener+"/"+tc.chain {
			t.Errorf("%s %q: served by %q, want %s/%s", tc.dst, tc.send, got, tc.listener, tc.chain)
		}
		s := f.next(t)
		if s.info.TransportProtocol != "raw_buffer" {
			t.Errorf("%s: transport protocol %q, want Envoy's default raw_buffer", tc.dst, s.info.TransportProtocol)
		}
		if s.listener != tc.listener || s.info.OriginalDst.String() != tc.dst {
			t.Errorf("%s: info %+v", tc.dst, s.info)
		}
		c.Close()
	}
	if got := st.CounterValue("listener.0.0.0.0_9080.downstream_cx_total"); got != 2 {
		t.Errorf("0.0.0.0_9080 downstream_cx_total = %d, want 2", got)
	}

	// A handed-off connection belongs to its target: updating
	// virtualOutbound leaves it alone, updating 0.0.0.0_9080 drains it.
	queue <- net.TCPAddrFromAddrPort(mustAddrPort("198.19.0.1:9080"))
	c := dialListener(t, m, "virtualOutbound")
	br := bufio.NewReader(c)
	io.WriteString(c, "hello\n")
	if line, _ := br.ReadString('\n'); line != "0.0.0.0_9080/tcp\n" {
		t.Fatalf("greeting %q", line)
	}
	f.next(t)
	listeners[0].StatPrefix = "vo2"
	if err := m.AddOrUpdate(listeners[0]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(600 * time.Millisecond) // three drain times
	io.WriteString(c, "still there\n")
	if line, _ := br.ReadString('\n'); line != "hello\n" {
		t.Errorf("after a virtualOutbound update: %q", line)
	}
	if line, _ := br.ReadString('\n'); line != "still there\n" {
		t.Errorf("handed-off connection closed by a virtualOutbound update: %q", line)
	}
	listeners[1].StatPrefix = "t2"
	if err := m.AddOrUpdate(listeners[1]); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadString('\n'); err == nil || isTimeout(err) {
		t.Errorf("handed-off connection survived its own listener's drain: %v", err)
	}
}

// Fifty updates of a listener on the same address: the socket is handed
// over, so a client dialling throughout is never refused and every
// connection is served; connections end up on the newest config, and the
// replaced configs' handlers are drained.
func TestUpdateKeepsAccepting(t *testing.T) {
	f := newFactory()
	f.drainable = true
	m := newTestManager(t, f, Options{DrainTime: 200 * time.Millisecond})
	mk := func(v int) *listenerv3.Listener {
		return &listenerv3.Listener{Name: "l", Address: sockAddr("127.0.0.1", 0),
			FilterChains: []*listenerv3.FilterChain{fchain("v"+strconv.Itoa(v), nil)}}
	}
	if err := m.AddOrUpdate(mk(0)); err != nil {
		t.Fatal(err)
	}
	addr := m.Addr("l").String()
	go func() {
		for range f.seen {
		}
	}()
	var stop atomic.Bool
	var served, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			deadline := time.Now().Add(20 * time.Second)
			for !stop.Load() && time.Now().Before(deadline) {
				c, err := net.DialTimeout("tcp", addr, 2*time.Second)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				io.WriteString(c, "req\n")
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil || !strings.HasPrefix(line, "resp") {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, "request: "+line+" "+errString(err))
				} else {
					served.Add(1)
				}
				c.Close()
			}
		}()
	}
	for v := 1; v <= 50; v++ {
		if err := m.AddOrUpdate(mk(v)); err != nil {
			t.Fatal(err)
		}
		if m.Addr("l").String() != addr {
			t.Fatalf("update %d moved the listener to %s", v, m.Addr("l"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d connections failed during updates; first: %v", failed.Load(), failed.Load()+served.Load(), firstErr.Load())
	}
	if served.Load() < 50 {
		t.Fatalf("only %d connections served", served.Load())
	}
	f.mu.Lock()
	drained := len(f.drained)
	f.mu.Unlock()
	if drained != 50 {
		t.Errorf("%d replaced chains drained, want 50", drained)
	}
	// The same config again is a no-op: no drain.
	if err := m.AddOrUpdate(mk(50)); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.drained) != 50 {
		t.Errorf("unchanged config drained a chain")
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Removing a listener stops accepting at once; an HTTP-like handler is
// told to drain and ends its connection after the request in flight; a
// connection still open when the drain time ends is closed.
func TestRemoveDrains(t *testing.T) {
	f := newFactory()
	f.drainable = true
	st := stats.New()
	m := newTestManager(t, f, Options{Stats: st, DrainTime: 500 * time.Millisecond})
	l := &listenerv3.Listener{Name: "http", Address: sockAddr("127.0.0.1", 0), FilterChains: []*listenerv3.FilterChain{fchain("hcm", nil)}}
	if err := m.AddOrUpdate(l); err != nil {
		t.Fatal(err)
	}
	if got := st.Lookup("listener_manager.total_listeners_active").(*stats.Gauge).Value(); got != 1 {
		t.Errorf("total_listeners_active = %d", got)
	}
	addr := m.Addr("http").String()
	busy := dialListener(t, m, "http")
	idle := dialListener(t, m, "http")
	br := bufio.NewReader(busy)
	io.WriteString(busy, "req\n")
	if line, _ := br.ReadString('\n'); line != "resp\n" {
		t.Fatalf("before drain: %q", line)
	}
	f.next(t)
	f.next(t)
	removed := time.Now()
	m.Remove("http")
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("removed listener still accepts")
	}
	if len(m.Names()) != 0 {
		t.Errorf("names after remove: %v", m.Names())
	}
	// The next request is answered, marked close, and the connection ends.
	io.WriteString(busy, "req\n")
	if line, _ := br.ReadString('\n'); line != "resp close\n" {
		t.Errorf("request during drain: %q", line)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("connection after drained response: %v, want EOF", err)
	}
	// The idle connection is closed when the drain time ends, not before.
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := idle.Read(make([]byte, 1))
	el := time.Since(removed)
	if n != 0 || err == nil || isTimeout(err) {
		t.Errorf("idle connection: read %d, %v; want closed", n, err)
	}
	if el < 400*time.Millisecond {
		t.Errorf("idle connection closed after %v, before the 500ms drain time", el)
	}
	waitFor(t, func() bool {
		g, _ := st.Lookup("listener.127.0.0.1_0.downstream_cx_active").(*stats.Gauge)
		return g != nil && g.Value() == 0
	})
	if got := st.Lookup("listener_manager.total_listeners_active").(*stats.Gauge).Value(); got != 0 {
		t.Errorf("total_listeners_active = %d after remove", got)
	}
}

func TestDrainAllAndInboundOnly(t *testing.T) {
	f := newFactory()
	m := newTestManager(t, f, Options{DrainTime: 100 * time.Millisecond})
	in := &listenerv3.Listener{Name: "virtualInbound", Address: sockAddr("127.0.0.1", 0), TrafficDirection: corev3.TrafficDirection_INBOUND,
		FilterChains: []*listenerv3.FilterChain{fchain("c", nil)}}
	out := &listenerv3.Listener{Name: "virtualOutbound", Address: sockAddr("127.0.0.1", 0), TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		FilterChains: []*listenerv3.FilterChain{fchain("c", nil)}}
	for _, l := range []*listenerv3.Listener{in, out} {
		if err := m.AddOrUpdate(l); err != nil {
			t.Fatal(err)
		}
	}
	inAddr, outAddr := m.Addr("virtualInbound").String(), m.Addr("virtualOutbound").String()
	m.DrainListeners(true, false)
	if _, err := net.DialTimeout("tcp", inAddr, time.Second); err == nil {
		t.Error("inbound listener still accepts after inbound-only drain")
	}
	c := dialListener(t, m, "virtualOutbound")
	if got := readLine(t, c); got != "virtualOutbound/c" {
		t.Errorf("outbound after inbound-only drain: %q", got)
	}
	m.DrainAll()
	if _, err := net.DialTimeout("tcp", outAddr, time.Second); err == nil {
		t.Error("outbound listener still accepts after DrainAll")
	}
	// Graceful: still accepting, but handlers drain; closed after the
	// drain time. (A fresh manager: DrainAll above ended this one.)
	f2 := newFactory()
	f2.drainable = true
	m2 := newTestManager(t, f2, Options{DrainTime: 400 * time.Millisecond})
	if err := m2.AddOrUpdate(&listenerv3.Listener{Name: "g", Address: sockAddr("127.0.0.1", 0), FilterChains: []*listenerv3.FilterChain{fchain("c", nil)}}); err != nil {
		t.Fatal(err)
	}
	gAddr := m2.Addr("g").String()
	start := time.Now()
	m2.DrainListeners(false, true)
	gc := dialListener(t, m2, "g")
	io.WriteString(gc, "req\n")
	if line, _ := bufio.NewReader(gc).ReadString('\n'); line != "resp close\n" {
		t.Errorf("new connection during graceful drain: %q, want a drained response", line)
	}
	waitFor(t, func() bool {
		c, err := net.DialTimeout("tcp", gAddr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if el := time.Since(start); el < 350*time.Millisecond {
		t.Errorf("graceful drain stopped accepting after %v, before the 400ms drain time", el)
	}

	// Updates after a full drain are accepted but not bound.
	in.StatPrefix = "changed"
	if err := m.AddOrUpdate(in); err != nil || len(m.Names()) != 0 {
		t.Errorf("update after DrainAll: %v, names %v", err, m.Names())
	}
}

func TestBindValidateAndAdminOutput(t *testing.T) {
	f := newFactory()
	m := newTestManager(t, f, Options{})
	a := &listenerv3.Listener{Name: "a", Address: sockAddr("127.0.0.1", 0), FilterChains: []*listenerv3.FilterChain{fchain("c", nil)}}
	if err := m.AddOrUpdate(a); err != nil {
		t.Fatal(err)
	}
	port := uint32(m.Addr("a").(*net.TCPAddr).Port)
	b := &listenerv3.Listener{Name: "b", Address: sockAddr("127.0.0.1", port), FilterChains: []*listenerv3.FilterChain{fchain("c", nil)}}
	err := m.AddOrUpdate(b)
	if err == nil || !strings.Contains(err.Error(), `listener "b": address 127.0.0.1:`) || !strings.Contains(err.Error(), "bind") {
		t.Errorf("bind conflict error: %v", err)
	}
	if slices.Contains(m.Names(), "b") {
		t.Error("failed listener was added")
	}
	// Moving a listener to new addresses (a main and an additional one)
	// rebinds it and frees the old address.
	a2 := &listenerv3.Listener{Name: "a", Address: sockAddr("127.0.0.1", 0), StatPrefix: "moved",
		AdditionalAddresses: []*listenerv3.AdditionalAddress{{Address: sockAddr("127.0.0.1", 0)}},
		FilterChains:        []*listenerv3.FilterChain{fchain("c", nil)}}
	if err := m.AddOrUpdate(a2); err != nil {
		t.Fatal(err)
	}
	if m.Addr("a").(*net.TCPAddr).Port == int(port) {
		t.Fatal("listener a did not move")
	}
	if b.Address = sockAddr("127.0.0.1", port); m.AddOrUpdate(b) != nil {
		t.Errorf("old address of a not freed: %v", m.AddOrUpdate(b))
	}
	c := dialListener(t, m, "a")
	if got := readLine(t, c); got != "a/c" {
		t.Errorf("moved listener serves %q", got)
	}
	f.next(t)

	var text bytes.Buffer
	m.WriteListeners(&text, false)
	want := "a::" + m.Addr("a").String() + "\nb::127.0.0.1:" + strconv.Itoa(int(port)) + "\n"
	if text.String() != want {
		t.Errorf("/listeners:\n%s\nwant\n%s", text.String(), want)
	}
	var js bytes.Buffer
	m.WriteListeners(&js, true)
	if !strings.Contains(js.String(), "additional_local_addresses") {
		t.Errorf("json lacks the additional address:\n%s", js.String())
	}
	// The additional address serves too.
	var extra struct {
		Statuses []struct {
			Additional []struct {
				SocketAddress struct {
					Address   string `json:"address"`
					PortValue int    `json:"port_value"`
				} `json:"socket_address"`
			} `json:"additional_local_addresses"`
		} `json:"listener_statuses"`
	}
	json.Unmarshal(js.Bytes(), &extra)
	if len(extra.Statuses) > 0 && len(extra.Statuses[0].Additional) == 1 {
		sa := extra.Statuses[0].Additional[0].SocketAddress
		c, err := net.DialTimeout("tcp", net.JoinHostPort(sa.Address, strconv.Itoa(sa.PortValue)), 5*time.Second)
		if err != nil {
			t.Fatalf("additional address: %v", err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if got := readLine(t, c); got != "a/c" {
			t.Errorf("additional address serves %q", got)
		}
		c.Close()
		f.next(t)
	} else {
		t.Errorf("additional address missing from json: %s", js.String())
	}
	var parsed struct {
		Statuses []struct {
			Name         string `json:"name"`
			LocalAddress struct {
				SocketAddress struct {
					Address   string `json:"address"`
					PortValue int    `json:"port_value"`
				} `json:"socket_address"`
			} `json:"local_address"`
		} `json:"listener_statuses"`
	}
	if err := json.Unmarshal(js.Bytes(), &parsed); err != nil || len(parsed.Statuses) != 2 || parsed.Statuses[1].LocalAddress.SocketAddress.PortValue != int(port) {
		t.Errorf("/listeners?format=json: %v\n%s", err, js.String())
	}

	for _, tc := range []struct {
		l    *listenerv3.Listener
		want string
	}{
		{&listenerv3.Listener{Name: "x", Address: sockAddr("not-an-ip", 1), FilterChains: []*listenerv3.FilterChain{fchain("c", nil)}},
			`listener "x": address.socket_address.address: "not-an-ip"`},
		{&listenerv3.Listener{Name: "x", Address: sockAddr("127.0.0.1", 1)}, `listener "x": filter_chains: at least one`},
		{&listenerv3.Listener{Name: "x", Address: sockAddr("127.0.0.1", 1), FilterChains: []*listenerv3.FilterChain{fchain("c", nil)},
			ListenerFilters: []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.proxy_protocol"}}}, `listener "x": listener_filters[0]: "envoy.filters.listener.proxy_protocol"`},
		{&listenerv3.Listener{Name: "x", Address: sockAddr("127.0.0.1", 1), FilterChains: []*listenerv3.FilterChain{
			fchain("c1", &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(80)}), fchain("c2", &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(80)})}},
			`listener "x": filter_chains[1].filter_chain_match: same matching rules as filter_chains[0]`},
		{&listenerv3.Listener{Name: "x", Address: sockAddr("127.0.0.1", 1), FilterChains: []*listenerv3.FilterChain{
			fchain("c", &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{cidr("10.0.0.0", 40)}})}},
			`listener "x": filter_chains[0] ("c").filter_chain_match.prefix_ranges[0].prefix_len: 40`},
		{&listenerv3.Listener{Name: "x", Address: sockAddr("127.0.0.1", 1), FilterChains: []*listenerv3.FilterChain{
			fchain("c", &listenerv3.FilterChainMatch{ServerNames: []string{"a.*.com"}})}},
			`server_names[0]: "a.*.com"`},
		{&listenerv3.Listener{Name: "x", Address: sockAddr("127.0.0.1", 1), FilterChains: []*listenerv3.FilterChain{{Name: "c",
			TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.alts"}}}},
			`filter_chains[0] ("c").transport_socket: "envoy.transport_sockets.alts"`},
	} {
		err := m.Validate(tc.l)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate: %v, want an error containing %q", err, tc.want)
		}
	}
	// The factory's error reaches the caller with the chain named.
	bad := &listenerv3.Listener{Name: "y", Address: sockAddr("127.0.0.1", 0), FilterChains: []*listenerv3.FilterChain{fchain("c", nil)}}
	mf := newTestManager(t, failingFactory{}, Options{})
	if err := mf.Validate(bad); err == nil || !strings.Contains(err.Error(), `listener "y": filter_chains[0] ("c").filters: tcp_proxy: cluster: empty`) {
		t.Errorf("factory error: %v", err)
	}
}

type failingFactory struct{}

func (failingFactory) NetworkFilters(*listenerv3.Listener, *listenerv3.FilterChain) (core.ConnHandler, error) {
	return nil, errors.New("tcp_proxy: cluster: empty")
}

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 5s")
}

// filter_disabled turns a listener filter off by destination port (Istio
// disables http_inspector on some ports); transport_socket_connect_timeout
// bounds a TLS handshake that never starts.
func TestFilterDisabledAndHandshakeTimeout(t *testing.T) {
	f := newFactory()
	od, queue := queueOriginalDst()
	m := newTestManager(t, f, Options{OriginalDst: od})
	certPEM, keyPEM, _ := serverCert(t, "svc")
	httpInsp := lf(httpInspectorName)
	httpInsp.FilterDisabled = &listenerv3.ListenerFilterChainMatchPredicate{Rule: &listenerv3.ListenerFilterChainMatchPredicate_NotMatch{
		NotMatch: &listenerv3.ListenerFilterChainMatchPredicate{Rule: &listenerv3.ListenerFilterChainMatchPredicate_DestinationPortRange{
			DestinationPortRange: &typev3.Int32Range{Start: 9080, End: 9081}}}}}
	l := &listenerv3.Listener{Name: "in", Address: sockAddr("127.0.0.1", 0),
		ListenerFilters: []*listenerv3.ListenerFilter{lf(originalDstName), httpInsp},
		FilterChains:    []*listenerv3.FilterChain{fchain("any", nil)}}
	if err := m.AddOrUpdate(l); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dst, alpn string
	}{{"198.18.0.1:9080", "http/1.1"}, {"198.18.0.1:9090", ""}} {
		queue <- net.TCPAddrFromAddrPort(mustAddrPort(tc.dst))
		c := dialListener(t, m, "in")
		io.WriteString(c, "GET / HTTP/1.1\r\n\r\n")
		if s := f.next(t); strings.Join(s.info.ALPN, ",") != tc.alpn {
			t.Errorf("%s: ALPN %v, want %q", tc.dst, s.info.ALPN, tc.alpn)
		}
	}

	tlsChain := fchain("tls", nil)
	tlsChain.TransportSocket = tlsTransport(certPEM, keyPEM)
	tlsChain.TransportSocketConnectTimeout = durationpb.New(200 * time.Millisecond)
	if err := m.AddOrUpdate(&listenerv3.Listener{Name: "tls", Address: sockAddr("127.0.0.1", 0), FilterChains: []*listenerv3.FilterChain{tlsChain}}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c := dialListener(t, m, "tls")
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || isTimeout(err) {
		t.Errorf("silent TLS client: read %d, %v; want the proxy to close", n, err)
	}
	if el := time.Since(start); el < 150*time.Millisecond || el > 5*time.Second {
		t.Errorf("handshake abandoned after %v, want about 200ms", el)
	}
	waitFor(t, func() bool {
		return m.o.Stats.CounterValue("listener.127.0.0.1_0.downstream_cx_transport_socket_connect_timeout") == 1
	})
}
