package rbac

import (
	"fmt"
	"net/http"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// Decision is what one RBAC filter's enforced rules decide, for tools that
// explain a dumped config (skiff why). Shadow rules never decide and are
// left out.
type Decision struct {
	// Enforced is false when the filter has no rules (it admits everything).
	Enforced bool
	// Action is the rules' action: ALLOW, DENY or LOG.
	Action  string
	Allowed bool
	// Policy is the policy that matched ("" for none); Policies are every
	// policy name, in the order they are tried.
	Policy   string
	Policies []string
}

// EvaluateHTTP decides req on the connection ci as the HTTP filter
// configured with cfg does. ci.TLS carries the peer certificate that
// authenticated principals match.
func EvaluateHTTP(cfg *httprbacv3.RBAC, req *http.Request, ci *core.ConnInfo) (Decision, error) {
	c, err := compileHTTP(cfg)
	if err != nil {
		return Decision{}, fmt.Errorf("envoy.filters.http.rbac: %w", err)
	}
	if ci == nil {
		ci = &noConn
	}
	return decision(c.engine, &attrs{conn: ci, req: req}), nil
}

// EvaluateNetwork decides the connection ci as the network filter
// configured with cfg does.
func EvaluateNetwork(cfg *netrbacv3.RBAC, ci *core.ConnInfo) (Decision, error) {
	f, err := compileNetwork(cfg)
	if err != nil {
		return Decision{}, fmt.Errorf("envoy.filters.network.rbac: %w", err)
	}
	if ci == nil {
		ci = &noConn
	}
	return decision(f.engine, &attrs{conn: ci}), nil
}

func decision(e *engine, a *attrs) Decision {
	if e == nil {
		return Decision{Allowed: true}
	}
	d := Decision{Enforced: true, Action: rbacv3.RBAC_Action_name[int32(e.action)]}
	for _, p := range e.policies {
		d.Policies = append(d.Policies, p.name)
	}
	var matched int
	d.Allowed, matched = e.decide(a)
	if matched >= 0 {
		d.Policy = e.policies[matched].name
	}
	return d
}
