package rbac

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/url"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// EvaluateHTTP and EvaluateNetwork decide as the filters do, for an
// mTLS peer named by its certificate's URI SAN, and name the policy.
func TestEvaluate(t *testing.T) {
	peer := func(spiffe string) *core.ConnInfo {
		u, _ := url.Parse(spiffe)
		return &core.ConnInfo{TLS: &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{URIs: []*url.URL{u}}}}}
	}
	deny := allowPolicies(rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{
		"ns[default]-policy[deny-pp]-rule[0]": pol([]*rbacv3.Permission{anyPerm()}, []*rbacv3.Principal{idAuth(exact("spiffe://cluster.local/ns/default/sa/productpage"))}),
	})
	req, _ := http.NewRequest(http.MethodGet, "http://details:9080/details/0", nil)
	d, err := EvaluateHTTP(deny, req, peer("spiffe://cluster.local/ns/default/sa/productpage"))
	if err != nil || d.Allowed || !d.Enforced || d.Action != "DENY" || d.Policy != "ns[default]-policy[deny-pp]-rule[0]" {
		t.Errorf("productpage: %+v, %v; want denied by the DENY policy", d, err)
	}
	if d, _ := EvaluateHTTP(deny, req, peer("spiffe://cluster.local/ns/default/sa/reviews")); !d.Allowed || d.Policy != "" {
		t.Errorf("reviews: %+v; want allowed, no policy matched", d)
	}
	if d, _ := EvaluateHTTP(deny, req, nil); !d.Allowed {
		t.Errorf("plaintext: %+v; want allowed (no principal to match)", d)
	}
	allowNothing := allowPolicies(rbacv3.RBAC_ALLOW, nil)
	if d, _ := EvaluateHTTP(allowNothing, req, nil); d.Allowed || !d.Enforced {
		t.Errorf("allow-nothing: %+v; want denied", d)
	}
	net := &netrbacv3.RBAC{StatPrefix: "tcp.", Rules: deny.GetRules()}
	if d, err := EvaluateNetwork(net, peer("spiffe://cluster.local/ns/default/sa/productpage")); err != nil || d.Allowed {
		t.Errorf("network, productpage: %+v, %v; want denied", d, err)
	}
	if _, err := EvaluateNetwork(&netrbacv3.RBAC{}, nil); err == nil {
		t.Error("a network RBAC without stat_prefix evaluated")
	}
}

func TestEvaluateNoRules(t *testing.T) {
	d, err := EvaluateHTTP(&httprbacv3.RBAC{ShadowRulesStatPrefix: "istio_dry_run_allow_"}, nil, nil)
	if err != nil || d.Enforced || !d.Allowed {
		t.Errorf("shadow only: %+v, %v; want not enforced, allowed", d, err)
	}
}
