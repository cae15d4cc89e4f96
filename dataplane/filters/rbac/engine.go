package rbac

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"

	"github.com/skiff-mesh/skiff/pkg/stats"
)

// engine is one compiled envoy.config.rbac.v3.RBAC.
type engine struct {
	action   rbacv3.RBAC_Action
	policies []policy // in name order, the order Envoy evaluates them in
}

// policy matches when one of its permissions and one of its principals do.
type policy struct {
	name        string
	permissions []matcher
	principals  []matcher
}

func compileEngine(r *rbacv3.RBAC, o compileOptions) (*engine, error) {
	e := &engine{action: r.GetAction()}
	switch e.action {
	case rbacv3.RBAC_ALLOW, rbacv3.RBAC_DENY, rbacv3.RBAC_LOG:
	default:
		return nil, fmt.Errorf("action: %v is not one of ALLOW, DENY, LOG", e.action)
	}
	if len(r.GetAuditLoggingOptions().GetLoggerConfigs()) > 0 {
		return nil, errors.New("audit_logging_options: RBAC audit loggers are not supported by skiff-proxy; use action LOG with an access log")
	}
	names := make([]string, 0, len(r.GetPolicies()))
	for n := range r.GetPolicies() {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p, err := compilePolicy(n, r.GetPolicies()[n], o)
		if err != nil {
			return nil, fmt.Errorf("policies[%q].%w", n, err)
		}
		e.policies = append(e.policies, p)
	}
	return e, nil
}

func compilePolicy(name string, p *rbacv3.Policy, o compileOptions) (policy, error) {
	pol := policy{name: name}
	if p.GetCondition() != nil || p.GetCheckedCondition() != nil {
		return pol, errors.New("condition: CEL conditions are not supported by skiff-proxy; express the condition with permissions and principals")
	}
	if len(p.GetPermissions()) == 0 {
		return pol, errors.New("permissions: at least one is required (use any: true to match every action)")
	}
	if len(p.GetPrincipals()) == 0 {
		return pol, errors.New("principals: at least one is required (use any: true to match every downstream)")
	}
	var err error
	if pol.permissions, err = compilePermissions(p.GetPermissions(), o, "permissions"); err != nil {
		return pol, err
	}
	if pol.principals, err = compilePrincipals(p.GetPrincipals(), o, "principals"); err != nil {
		return pol, err
	}
	return pol, nil
}

// firstMatch returns the index of the first policy that matches, -1 when
// none does.
func (e *engine) firstMatch(a *attrs) int {
	for i := range e.policies {
		p := &e.policies[i]
		if orMatcher(p.permissions).match(a) && orMatcher(p.principals).match(a) {
			return i
		}
	}
	return -1
}

// decide returns whether the engine admits a, and the matched policy (-1
// for none). LOG admits everything.
func (e *engine) decide(a *attrs) (allowed bool, matched int) {
	matched = e.firstMatch(a)
	switch e.action {
	case rbacv3.RBAC_ALLOW:
		return matched >= 0, matched
	case rbacv3.RBAC_DENY:
		return matched < 0, matched
	}
	return true, matched
}

// counters are the allowed / denied pair of one stats prefix, with the
// per-policy pairs when track_per_rule_stats is set.
type counters struct {
	allowed, denied *stats.Counter
	perPolicy       []policyCounters // indexed like engine.policies; nil when not tracked
}

type policyCounters struct{ allowed, denied *stats.Counter }

// newCounters creates Envoy's <scope>.<prefix>allowed / denied (or
// shadow_allowed / shadow_denied), and <scope>.<prefix>[.]policy.<name>.allowed
// / denied for each policy when perPolicy is set: Envoy joins the policy
// part with a dot unless the prefix is empty or already ends in one.
func newCounters(sc *stats.Scope, prefix, allowedName, deniedName string, e *engine, perPolicy bool) counters {
	c := counters{allowed: sc.Counter(prefix + allowedName), denied: sc.Counter(prefix + deniedName)}
	if perPolicy && e != nil {
		pp := prefix
		if pp != "" && !strings.HasSuffix(pp, ".") {
			pp += "."
		}
		pp += "policy."
		for _, p := range e.policies {
			c.perPolicy = append(c.perPolicy, policyCounters{
				allowed: sc.Counter(pp + p.name + ".allowed"),
				denied:  sc.Counter(pp + p.name + ".denied"),
			})
		}
	}
	return c
}

func (c *counters) record(allowed bool, matched int) {
	if allowed {
		c.allowed.Inc()
	} else {
		c.denied.Inc()
	}
	if matched >= 0 && matched < len(c.perPolicy) {
		if allowed {
			c.perPolicy[matched].allowed.Inc()
		} else {
			c.perPolicy[matched].denied.Inc()
		}
	}
}
