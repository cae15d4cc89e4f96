package rbac

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
)

// Many clients with different identities at once on keep-alive HTTP/2
// connections: every request gets its own identity's answer.
func TestConcurrentPeers(t *testing.T) {
	e := newEnv(t)
	m := newMesh(t)
	cfg := allowPolicies(rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
		"ns[default]-policy[p]-rule[0]": pol([]*rbacv3.Permission{permPath(prefix("/api/"))}, []*rbacv3.Principal{idAuth(regex(".*/ns/foo/.*"))})})
	fc := xdsres.FilterChain("mtls", nil, mtlsSocket(m.ca, m.srvCert, m.srvKey), hcmConfig([]*hcmv3.HttpFilter{rbacFilter(cfg)}))
	addr := e.listen("127.0.0.1:0", []*listenerv3.FilterChain{fc}, xdsres.TLSInspector())

	const workers, perWorker = 8, 40
	deadline := time.Now().Add(20 * time.Second)
	var wg sync.WaitGroup
	errs := make(chan string, workers*perWorker)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			cert, key, who := m.fooCert, m.fooKey, "foo"
			if w%2 == 1 {
				cert, key, who = m.barCert, m.barKey, "bar"
			}
			c := mtlsClient(t, m.ca, cert, key, "httpbin.default.svc")
			tr := c.Transport.(*http.Transport)
			tr.DisableKeepAlives = false
			defer tr.CloseIdleConnections()
			for i := 0; i < perWorker && time.Now().Before(deadline); i++ {
				path := "/api/x"
				want := 200
				if i%3 == 0 {
					path, want = "/other", 403
				}
				if who == "bar" {
					want = 403
				}
				req, _ := newGet("https://" + addr + path)
				resp, err := c.Do(req)
				if err != nil {
					errs <- fmt.Sprintf("%s %s: %v", who, path, err)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.Proto != "HTTP/2.0" {
					errs <- fmt.Sprintf("%s %s: %s, want HTTP/2.0", who, path, resp.Proto)
				}
				if resp.StatusCode != want {
					errs <- fmt.Sprintf("%s %s: %d, want %d", who, path, resp.StatusCode, want)
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// A policy change is a new listener config: connections opened after it
// get the new policy.
func TestPolicyUpdate(t *testing.T) {
	e := newEnv(t)
	chain := func(cfg *rbacv3.RBAC) []*listenerv3.FilterChain {
		return []*listenerv3.FilterChain{xdsres.FilterChain("http", nil, nil, hcmConfig([]*hcmv3.HttpFilter{rbacFilter(allowPolicies(cfg.Action, cfg.Policies))}))}
	}
	l := &listenerv3.Listener{Name: "upd", Address: xdsres.Addr("127.0.0.1:0"), FilterChains: chain(&rbacv3.RBAC{})}
	if err := e.lm.AddOrUpdate(l); err != nil {
		t.Fatal(err)
	}
	base := "http://" + e.lm.Addr("upd").String()
	if r := do(t, nil, "GET", base+"/"); r.code != 403 {
		t.Fatalf("deny-all: %d", r.code)
	}
	l.FilterChains = chain(&rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"all": pol([]*rbacv3.Permission{anyPerm()}, []*rbacv3.Principal{anyID()})}})
	if err := e.lm.AddOrUpdate(l); err != nil {
		t.Fatal(err)
	}
	if r := do(t, nil, "GET", base+"/"); r.code != 200 {
		t.Fatalf("after allowing everything: %d", r.code)
	}
}

// The peer identity cache stays bounded and correct past its size.
func TestPeerCacheBounded(t *testing.T) {
	for i := 0; i < peerCacheMax+10; i++ {
		u, _ := url.Parse(fmt.Sprintf("spiffe://cluster.local/ns/n%d/sa/s", i))
		cert := &x509.Certificate{URIs: []*url.URL{u}, DNSNames: []string{"d"}}
		p := peerOf(&tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}})
		if len(p.uris) != 1 || p.uris[0] != u.String() || p.dns[0] != "d" {
			t.Fatalf("peer %d: %+v", i, p)
		}
	}
	if n := peerCacheSize.Load(); n > peerCacheMax {
		t.Errorf("cache holds %d entries, more than %d", n, peerCacheMax)
	}
	if p := peerOf(&tls.ConnectionState{}); p != nil {
		t.Errorf("no peer certificate: %+v, want nil", p)
	}
}
