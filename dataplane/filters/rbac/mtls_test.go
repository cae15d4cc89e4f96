package rbac

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
)

const (
	spiffeSleepFoo = "spiffe://cluster.local/ns/foo/sa/sleep"
	spiffeSleepBar = "spiffe://cluster.local/ns/bar/sa/sleep"
	spiffeHTTPBin  = "spiffe://cluster.local/ns/default/sa/httpbin"
)

// mesh is a CA with a server identity and two client identities, as
// Istio's CA would issue them.
type mesh struct {
	ca                  *testCA
	srvCert, srvKey     []byte
	fooCert, fooKey     []byte
	barCert, barKey     []byte
	noSANCert, noSANKey []byte
}

func newMesh(t *testing.T) *mesh {
	m := &mesh{ca: newCA(t)}
	m.srvCert, m.srvKey = m.ca.issue(t, spiffeHTTPBin, "httpbin.default.svc", "other.svc")
	m.fooCert, m.fooKey = m.ca.issue(t, spiffeSleepFoo)
	m.barCert, m.barKey = m.ca.issue(t, spiffeSleepBar)
	m.noSANCert, m.noSANKey = m.ca.issue(t, "")
	return m
}

// Principals against real mTLS peers: Istio's principals (exact SPIFFE
// ID), namespaces (regex on the URI SAN), the waypoint filter state, and
// connection.sni.
func TestMTLSPrincipals(t *testing.T) {
	e := newEnv(t)
	m := newMesh(t)
	nsRegex := func(ns string) *rbacv3.Principal { return idAuth(regex(".*/ns/" + ns + "/.*")) }
	cases := []struct {
		name    string
		perm    *rbacv3.Permission
		id      *rbacv3.Principal
		allow   []string // client names that get 200
		deny    []string // client names that get 403
		sni     string
		denySNI string
	}{
		{name: "principal exact", id: idAuth(exact(spiffeSleepFoo)), allow: []string{"foo"}, deny: []string{"bar", "nosan"}},
		{name: "namespace regex", id: nsRegex("bar"), allow: []string{"bar"}, deny: []string{"foo"}},
		{name: "notPrincipals", id: idNot(idAuth(exact(spiffeSleepFoo))), allow: []string{"bar", "nosan"}, deny: []string{"foo"}},
		{name: "any authenticated peer", id: idAuth(nil), allow: []string{"foo", "bar", "nosan"}},
		{name: "principals * is a non-empty identity", id: idAuth(regex(".+")), allow: []string{"foo", "bar"}, deny: []string{"nosan"}},
		{name: "peer_principal filter state", id: &rbacv3.Principal{Identifier: &rbacv3.Principal_FilterState{FilterState: &matcherv3.FilterStateMatcher{
			Key: peerPrincipalKey, Matcher: &matcherv3.FilterStateMatcher_StringMatch{StringMatch: suffix("/sa/sleep")}}}},
			allow: []string{"foo", "bar"}, deny: []string{"nosan"}},
		{name: "connection.sni", perm: &rbacv3.Permission{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: exact("httpbin.default.svc")}},
			allow: []string{"foo"}, sni: "httpbin.default.svc", denySNI: "other.svc"},
	}
	clients := map[string][2][]byte{"foo": {m.fooCert, m.fooKey}, "bar": {m.barCert, m.barKey}, "nosan": {m.noSANCert, m.noSANKey}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e.t = t
			p := pol([]*rbacv3.Permission{anyPerm()}, []*rbacv3.Principal{anyID()})
			if tc.perm != nil {
				p.Permissions = []*rbacv3.Permission{tc.perm}
			}
			if tc.id != nil {
				p.Principals = []*rbacv3.Principal{tc.id}
			}
			cfg := allowPolicies(rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{"ns[default]-policy[p]-rule[0]": p})
			fc := xdsres.FilterChain("mtls", nil, mtlsSocket(m.ca, m.srvCert, m.srvKey),
				hcmConfig([]*hcmv3.HttpFilter{rbacFilter(cfg)}))
			addr := e.listen("127.0.0.1:0", []*listenerv3.FilterChain{fc}, xdsres.TLSInspector())
			sni := tc.sni
			if sni == "" {
				sni = "httpbin.default.svc"
			}
			check := func(who, sni string, want int) {
				c := clients[who]
				r := do(t, mtlsClient(t, m.ca, c[0], c[1], sni), "GET", "https://"+addr+"/")
				if r.code != want || r.proto != "HTTP/2.0" {
					t.Errorf("client %s (SNI %s): %s %d %q, want HTTP/2.0 %d", who, sni, r.proto, r.code, r.body, want)
				}
			}
			for _, who := range tc.allow {
				check(who, sni, 200)
			}
			for _, who := range tc.deny {
				check(who, sni, 403)
			}
			if tc.denySNI != "" {
				check("foo", tc.denySNI, 403)
			}
		})
	}
}

// dialEcho writes a message through a TCP listener and reports what came
// back; a connection RBAC refused yields no bytes and a closed stream.
func dialEcho(t *testing.T, addr string, tlsCfg *tls.Config) (string, error) {
	t.Helper()
	var c net.Conn
	var err error
	if tlsCfg != nil {
		c, err = tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, tlsCfg)
	} else {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
	}
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	const msg = "hello through tcp_proxy"
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	got := make([]byte, len(msg))
	n, err := io.ReadFull(c, got)
	return string(got[:n]), err
}

// closedByPeer reports whether err is the proxy closing the connection
// (EOF or a reset), not a timeout.
func closedByPeer(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func tcpChain(name string, rb *netrbacv3.RBAC) *listenerv3.FilterChain {
	fc := xdsres.FilterChain(name, nil, nil, xdsres.TCPProxy("echo", "echo"))
	fc.Filters = append([]*listenerv3.Filter{netRBACFilter(rb)}, fc.Filters...)
	return fc
}

// The network filter on a tcp_proxy chain, as Istio configures it for TCP
// services: allowed connections are proxied, refused ones are closed
// without a byte, and Envoy's tcp.rbac.* counters say which.
func TestTCP(t *testing.T) {
	e := newEnv(t)
	t.Run("ALLOW from loopback", func(t *testing.T) {
		e.t = t
		before := e.st.CounterValue("tcp.rbac.allowed")
		addr := e.listen("127.0.0.1:0", []*listenerv3.FilterChain{tcpChain("tcp", &netrbacv3.RBAC{StatPrefix: "tcp.", Rules: &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{
			"ns[foo]-policy[tcp]-rule[0]": pol([]*rbacv3.Permission{anyPerm()}, []*rbacv3.Principal{{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr("127.0.0.0", 8)}}})}}})})
		got, err := dialEcho(t, addr, nil)
		if err != nil || got != "hello through tcp_proxy" {
			t.Fatalf("echo: %q %v", got, err)
		}
		if d := e.st.CounterValue("tcp.rbac.allowed") - before; d != 1 {
			t.Errorf("tcp.rbac.allowed rose by %d, want 1", d)
		}
	})
	t.Run("DENY on the destination port closes the connection", func(t *testing.T) {
		e.t = t
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		before := e.st.CounterValue("tcp.rbac.denied")
		addr := e.listen(ln.Addr().String(), []*listenerv3.FilterChain{tcpChain("tcp", &netrbacv3.RBAC{StatPrefix: "tcp.", Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
			"ns[foo]-policy[deny]-rule[0]": pol([]*rbacv3.Permission{{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: uint32(port)}}}, []*rbacv3.Principal{anyID()})}}})})
		got, err := dialEcho(t, addr, nil)
		if got != "" || !closedByPeer(err) {
			t.Fatalf("denied connection: got %q, err %v; want nothing and a close", got, err)
		}
		if d := e.st.CounterValue("tcp.rbac.denied") - before; d != 1 {
			t.Errorf("tcp.rbac.denied rose by %d, want 1", d)
		}
	})
	t.Run("empty ALLOW closes every connection after delay_deny", func(t *testing.T) {
		e.t = t
		addr := e.listen("127.0.0.1:0", []*listenerv3.FilterChain{tcpChain("tcp", &netrbacv3.RBAC{StatPrefix: "tcp.", Rules: &rbacv3.RBAC{},
			DelayDeny: durationpb.New(100 * time.Millisecond)})})
		start := time.Now()
		got, err := dialEcho(t, addr, nil)
		if got != "" || !closedByPeer(err) {
			t.Fatalf("got %q, err %v; want nothing and a close", got, err)
		}
		if el := time.Since(start); el < 100*time.Millisecond {
			t.Errorf("closed after %v, before delay_deny (100ms)", el)
		}
	})
	t.Run("shadow rules count and never refuse", func(t *testing.T) {
		e.t = t
		addr := e.listen("127.0.0.1:0", []*listenerv3.FilterChain{tcpChain("tcp", &netrbacv3.RBAC{StatPrefix: "tcp.",
			ShadowRules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
				"dry": pol([]*rbacv3.Permission{anyPerm()}, []*rbacv3.Principal{anyID()})}},
			ShadowRulesStatPrefix: "istio_dry_run_deny_"})})
		if got, err := dialEcho(t, addr, nil); err != nil || got != "hello through tcp_proxy" {
			t.Fatalf("echo: %q %v", got, err)
		}
		if v := e.st.CounterValue("tcp.rbac.istio_dry_run_deny_shadow_denied"); v != 1 {
			t.Errorf("tcp.rbac.istio_dry_run_deny_shadow_denied = %d, want 1", v)
		}
	})
	t.Run("principal of an mTLS peer", func(t *testing.T) {
		e.t = t
		m := newMesh(t)
		fc := tcpChain("mtls", &netrbacv3.RBAC{StatPrefix: "tcp.", Rules: &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{
			"ns[default]-policy[tcp]-rule[0]": pol([]*rbacv3.Permission{anyPerm()}, []*rbacv3.Principal{idAuth(exact(spiffeSleepFoo))})}}})
		fc.TransportSocket = mtlsSocket(m.ca, m.srvCert, m.srvKey)
		addr := e.listen("127.0.0.1:0", []*listenerv3.FilterChain{fc}, xdsres.TLSInspector())
		pool := x509.NewCertPool()
		pool.AddCert(m.ca.cert)
		cfgFor := func(cert, key []byte) *tls.Config {
			kp, err := tls.X509KeyPair(cert, key)
			if err != nil {
				t.Fatal(err)
			}
			return &tls.Config{RootCAs: pool, ServerName: "httpbin.default.svc", Certificates: []tls.Certificate{kp}}
		}
		if got, err := dialEcho(t, addr, cfgFor(m.fooCert, m.fooKey)); err != nil || got != "hello through tcp_proxy" {
			t.Errorf("foo: %q %v, want the echo", got, err)
		}
		got, err := dialEcho(t, addr, cfgFor(m.barCert, m.barKey))
		if got != "" || !closedByPeer(err) {
			t.Errorf("bar: %q %v, want a closed connection", got, err)
		}
	})
}

// A refused TCP connection never reaches the upstream: the filter decides
// before tcp_proxy connects.
func TestTCPDenialOpensNoUpstream(t *testing.T) {
	e := newEnv(t)
	const cx = "cluster.echo.upstream_cx_total"
	open := e.listen("127.0.0.1:0", []*listenerv3.FilterChain{tcpChain("tcp", &netrbacv3.RBAC{StatPrefix: "tcp."})})
	before := e.st.CounterValue(cx)
	if got, err := dialEcho(t, open, nil); err != nil || got != "hello through tcp_proxy" {
		t.Fatalf("no rules: %q %v", got, err)
	}
	if d := e.st.CounterValue(cx) - before; d != 1 {
		t.Fatalf("%s rose by %d for an allowed connection, want 1", cx, d)
	}
	closed := e.listen("127.0.0.1:0", []*listenerv3.FilterChain{tcpChain("tcp", &netrbacv3.RBAC{StatPrefix: "tcp.", Rules: &rbacv3.RBAC{}})})
	before = e.st.CounterValue(cx)
	if got, err := dialEcho(t, closed, nil); got != "" || !closedByPeer(err) {
		t.Fatalf("empty ALLOW: %q %v", got, err)
	}
	if d := e.st.CounterValue(cx) - before; d != 0 {
		t.Errorf("%s rose by %d for a refused connection", cx, d)
	}
}
