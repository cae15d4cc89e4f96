package rbac

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/dataplane/hcm"
	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// istioRule is one rule as Istio compiles it: from a service account in a
// namespace, to methods and paths.
func istioRule(ns, sa, method, pathPrefix string) *rbacv3.Policy {
	return pol(
		[]*rbacv3.Permission{permAnd(
			permOr(permHeader(&routev3.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: method}})),
			permOr(permPath(prefix(pathPrefix)), permPath(exact(pathPrefix+"index"))),
		)},
		[]*rbacv3.Principal{idAnd(
			idOr(idAuth(exact("spiffe://cluster.local/ns/"+ns+"/sa/"+sa))),
			idOr(idAuth(regex(".*/ns/"+ns+"/.*"))),
		)},
	)
}

// BenchmarkIstioPolicy is the per-request cost of the HTTP filter with a
// five-rule ALLOW policy when the request matches only the last rule: every
// rule is evaluated against an mTLS peer identity.
func BenchmarkIstioPolicy(b *testing.B) {
	policies := map[string]*rbacv3.Policy{}
	for i := 0; i < 4; i++ {
		policies[fmt.Sprintf("ns[default]-policy[p]-rule[%d]", i)] = istioRule(fmt.Sprintf("team%d", i), "client", "POST", fmt.Sprintf("/api/v%d/", i))
	}
	policies["ns[default]-policy[p]-rule[4]"] = istioRule("foo", "sleep", "GET", "/api/v4/")
	f, err := newHTTPFilter(hcm.FilterConfig{Name: HTTPFilterName, TypedConfig: xdsres.Any(allowPolicies(rbacv3.RBAC_ALLOW, policies)), StatPrefix: "in", Stats: stats.New()})
	if err != nil {
		b.Fatal(err)
	}
	served := 0
	h := f(hcm.HandlerFunc(func(*hcm.Stream) { served++ }))

	ca := newCA(b)
	certPEM, keyPEM := ca.issue(b, spiffeSleepFoo)
	kp, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		b.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(kp.Certificate[0])
	if err != nil {
		b.Fatal(err)
	}
	ci := &core.ConnInfo{
		LocalAddr:  &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 15006},
		RemoteAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 40000},
		TLS:        &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}},
	}
	req := httptest.NewRequest(http.MethodGet, "/api/v4/items?page=2", nil)
	s := &hcm.Stream{Req: req, Conn: ci}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h.ServeStream(s)
	}
	b.StopTimer()
	if served != b.N {
		b.Fatalf("served %d of %d requests: the policy denied the benchmark request", served, b.N)
	}
}
