package authz_test

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	security "istio.io/api/security/v1beta1"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/gen/authz"
)

func object(name string, spec *security.AuthorizationPolicy) *config.Object {
	return &config.Object{Kind: config.AuthorizationPolicy, Meta: metav1.ObjectMeta{Namespace: "foo", Name: name}, Spec: spec}
}

// TestBadInput: what validation would refuse, or what Skiff cannot
// generate, still yields filters (never a panic) and a warning naming the
// object and field; ALLOW drops the rule, DENY drops only the value.
func TestBadInput(t *testing.T) {
	badWhen := &security.Rule{When: []*security.Condition{{Key: "request.nonsense", Values: []string{"x"}}}}
	badIP := &security.Rule{From: []*security.Rule_From{{Source: &security.Source{IpBlocks: []string{"10.0.0.1", "not-an-ip"}}}}}
	td := &security.Rule{From: []*security.Rule_From{{Source: &security.Source{TrustDomains: []string{"td"}}}}}
	f := authz.Build(authz.Input{Namespace: "foo", Policies: []*config.Object{
		object("allow-bad", &security.AuthorizationPolicy{Rules: []*security.Rule{badWhen, badIP, td, nil}}),
		object("deny-bad", &security.AuthorizationPolicy{Action: security.AuthorizationPolicy_DENY, Rules: []*security.Rule{badIP}}),
		{Kind: config.AuthorizationPolicy, Meta: metav1.ObjectMeta{Namespace: "foo", Name: "wrong-type"}, Spec: "not a policy"},
		{Kind: config.RequestAuthentication, Meta: metav1.ObjectMeta{Namespace: "foo", Name: "wrong-type"}, Spec: 42},
	}})
	var ws []string
	for _, w := range f.Warnings {
		ws = append(ws, w.String())
	}
	all := strings.Join(ws, "\n")
	for _, want := range []string{
		`AuthorizationPolicy/foo/allow-bad: spec.rules[0].when[0].key: unknown attribute "request.nonsense"`,
		`AuthorizationPolicy/foo/allow-bad: spec.rules[1].from[0].source.ipBlocks: "not-an-ip" is not an IP address or CIDR range (e.g. 10.1.2.3 or 10.1.0.0/16); rule ns[foo]-policy[allow-bad]-rule[1] is skipped`,
		`AuthorizationPolicy/foo/allow-bad: spec.rules[2].from[0].source.trustDomains: trustDomains is not supported by Skiff yet`,
		`AuthorizationPolicy/foo/allow-bad: spec.rules[3]: empty rule skipped`,
		`AuthorizationPolicy/foo/deny-bad: spec.rules[0].from[0].source.ipBlocks: "not-an-ip" is not an IP address or CIDR range (e.g. 10.1.2.3 or 10.1.0.0/16); the value is ignored, so rule ns[foo]-policy[deny-bad]-rule[0] matches more traffic`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("warnings lack %q; got:\n%s", want, all)
		}
	}
	// DENY then ALLOW; the ALLOW filter has no policy left (denies all),
	// the DENY keeps the good address.
	if len(f.HTTP) != 2 || len(f.Network) != 2 {
		t.Fatalf("got %d HTTP and %d network filters, want 2 and 2", len(f.HTTP), len(f.Network))
	}
	got := render(t, f)
	if !strings.Contains(string(got), `"addressPrefix": "10.0.0.1"`) || strings.Contains(string(got), `"ns[foo]-policy[allow-bad]-rule[`) {
		t.Errorf("want the DENY with 10.0.0.1 and no allow-bad rule:\n%s", got)
	}
}
