package authz

import (
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	uritemplatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/path/match/uri_template/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	security "istio.io/api/security/v1beta1"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// Stat prefixes Istio gives the RBAC filters.
const (
	tcpStatPrefix           = "tcp."
	dryRunAllowStatPrefix   = "istio_dry_run_allow_"
	dryRunDenyStatPrefix    = "istio_dry_run_deny_"
	extAuthzShadowPrefix    = "istio_ext_authz_"
	extAuthzPolicyPrefix    = "istio-ext-authz"
	badCustomPolicySuffix   = "-deny-due-to-bad-CUSTOM-action"
	shadowEffectivePolicyID = "shadow_effective_policy_id"
)

// matchNever is the policy of an AuthorizationPolicy without rules: an
// ALLOW policy {} then allows nothing, a DENY policy {} denies nothing.
func matchNever() *rbacv3.Policy {
	return &rbacv3.Policy{
		Permissions: []*rbacv3.Permission{permNot(permAny())},
		Principals:  []*rbacv3.Principal{prinNot(prinAny())},
	}
}

// builtRules are the enforced and dry-run (shadow) rules of one action.
type builtRules struct {
	rules, shadow *rbacv3.RBAC
}

func policyName(prefix string, k config.Key, i int) string {
	return fmt.Sprintf("%sns[%s]-policy[%s]-rule[%d]", prefix, k.Namespace, k.Name, i)
}

// rules compiles the policies of one action for an HTTP (tcp false) or a
// TCP chain. prefix names CUSTOM policies.
func (b *builder) rules(ps []policy, action rbacv3.RBAC_Action, tcp bool, prefix string) builtRules {
	enforce := &rbacv3.RBAC{Action: action, Policies: map[string]*rbacv3.Policy{}}
	shadow := &rbacv3.RBAC{Action: action, Policies: map[string]*rbacv3.Policy{}}
	var hasEnforce, hasShadow bool
	chain := "http"
	if tcp {
		chain = "tcp"
	}
	for _, p := range ps {
		target := enforce
		if p.dryRun {
			target, hasShadow = shadow, true
		} else {
			hasEnforce = true
		}
		for i, r := range p.spec.GetRules() {
			name := policyName(prefix, p.key, i)
			path := fmt.Sprintf("spec.rules[%d]", i)
			if r == nil {
				b.warn(p.key, path, "", "empty rule skipped")
				continue
			}
			m, fe := b.newModel(p.key, r, path)
			if fe != nil {
				b.warn(p.key, fe.path, "", "%s; rule %s is skipped", fe.msg, name)
				continue
			}
			pol, fe := m.generate(tcp, action != rbacv3.RBAC_ALLOW, func(fe *fieldError) {
				if fe.httpOnly {
					b.warn(p.key, fe.path, chain, "applies to HTTP only; ignored on TCP ports, where rule %s matches more traffic", name)
				} else {
					b.warn(p.key, fe.path, "", "%s; the value is ignored, so rule %s matches more traffic", fe.msg, name)
				}
			})
			if fe != nil {
				if fe.httpOnly {
					b.warn(p.key, fe.path, chain, "applies to HTTP only; on TCP ports rule %s never matches", name)
				} else {
					b.warn(p.key, fe.path, "", "%s; rule %s is skipped", fe.msg, name)
				}
				continue
			}
			target.Policies[name] = pol
		}
		if len(p.spec.GetRules()) == 0 {
			target.Policies[policyName(prefix, p.key, 0)] = matchNever()
		}
	}
	var out builtRules
	if hasEnforce {
		out.rules = enforce
	}
	if hasShadow {
		out.shadow = shadow
	}
	return out
}

// shadowStatPrefix is Istio's: it reads the action of possibly nil shadow
// rules, so a filter without them still carries istio_dry_run_allow_.
func shadowStatPrefix(r *rbacv3.RBAC) string {
	switch r.GetAction() {
	case rbacv3.RBAC_ALLOW:
		return dryRunAllowStatPrefix
	case rbacv3.RBAC_DENY:
		return dryRunDenyStatPrefix
	}
	return ""
}

func httpRBAC(r builtRules) *hcmv3.HttpFilter {
	return httpFilter(HTTPRBACFilter, &rbachttpv3.RBAC{Rules: r.rules, ShadowRules: r.shadow, ShadowRulesStatPrefix: shadowStatPrefix(r.shadow)})
}

func networkRBAC(r builtRules) *listenerv3.Filter {
	return networkFilter(NetworkRBACFilter, &rbacnetv3.RBAC{Rules: r.rules, StatPrefix: tcpStatPrefix, ShadowRules: r.shadow, ShadowRulesStatPrefix: shadowStatPrefix(r.shadow)})
}

func httpFilter(name string, m proto.Message) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed(m)}}
}

func networkFilter(name string, m proto.Message) *listenerv3.Filter {
	return &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: typed(m)}}
}

// typed packs m deterministically (policies are a map), so equal configs
// encode to equal bytes and pushes are not mistaken for changes.
func typed(m proto.Message) *anypb.Any {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("authz: marshal %T: %v", m, err)) // generated messages always marshal
	}
	return &anypb.Any{TypeUrl: "type.googleapis.com/" + string(m.ProtoReflect().Descriptor().FullName()), Value: b}
}

// fieldError is a problem with one field of a rule.
type fieldError struct {
	path     string
	msg      string
	httpOnly bool
}

// cond is one field of a rule (a source or operation list, or a when
// condition) with the generator of its Envoy matcher: per value (the
// values are OR-ed) or, for JWT and metadata attributes, for the whole
// list at once.
type cond struct {
	path              string
	values, notValues []string
	httpOnly          bool
	perm              func(v string) (*rbacv3.Permission, error)
	prin              func(v string) (*rbacv3.Principal, error)
	permList          func(vs []string) (*rbacv3.Permission, error)
	prinList          func(vs []string) (*rbacv3.Principal, error)
	unsupported       string // non-empty: the field cannot be generated
}

func (c *cond) empty() bool { return len(c.values) == 0 && len(c.notValues) == 0 }

// model is one rule: permissions (one per to, or one) and principals (one
// per from, or one), each an AND of conditions.
type model struct {
	permissions [][]*cond
	principals  [][]*cond
}

func (b *builder) newModel(k config.Key, r *security.Rule, path string) (*model, *fieldError) {
	var basePerm, basePrin []*cond
	for i, w := range r.GetWhen() {
		c, isPerm, fe := b.whenCond(k, w, fmt.Sprintf("%s.when[%d]", path, i))
		if fe != nil {
			return nil, fe
		}
		if c.empty() {
			continue
		}
		if isPerm {
			basePerm = append(basePerm, c)
		} else {
			basePrin = append(basePrin, c)
		}
	}
	m := &model{}
	for i, f := range r.GetFrom() {
		s := f.GetSource()
		p := fmt.Sprintf("%s.from[%d].source.", path, i)
		front := []*cond{
			b.principalCond(p+"principals", s.GetPrincipals(), s.GetNotPrincipals(), k),
			requestPrincipalCond(p+"requestPrincipals", s.GetRequestPrincipals(), s.GetNotRequestPrincipals()),
			serviceAccountCond(p+"serviceAccounts", s.GetServiceAccounts(), s.GetNotServiceAccounts(), k.Namespace),
			namespaceCond(p+"namespaces", s.GetNamespaces(), s.GetNotNamespaces()),
			{path: p + "trustDomains", values: s.GetTrustDomains(), notValues: s.GetNotTrustDomains(),
				unsupported: "trustDomains is not supported by Skiff yet; use principals with the trust domain (e.g. td/ns/NS/sa/SA or td/*)"},
			ipCond(p+"remoteIpBlocks", s.GetRemoteIpBlocks(), s.GetNotRemoteIpBlocks(), true),
			ipCond(p+"ipBlocks", s.GetIpBlocks(), s.GetNotIpBlocks(), false),
		}
		m.principals = append(m.principals, appendConds(front, basePrin))
	}
	if len(r.GetFrom()) == 0 {
		m.principals = append(m.principals, basePrin)
	}
	for i, t := range r.GetTo() {
		o := t.GetOperation()
		p := fmt.Sprintf("%s.to[%d].operation.", path, i)
		front := []*cond{
			hostCond(p+"hosts", o.GetHosts(), o.GetNotHosts()),
			methodCond(p+"methods", o.GetMethods(), o.GetNotMethods()),
			pathCond(p+"paths", o.GetPaths(), o.GetNotPaths()),
			portCond(p+"ports", o.GetPorts(), o.GetNotPorts()),
		}
		m.permissions = append(m.permissions, appendConds(front, basePerm))
	}
	if len(r.GetTo()) == 0 {
		m.permissions = append(m.permissions, basePerm)
	}
	return m, nil
}

// appendConds is the non-empty conditions of front followed by base.
func appendConds(front, base []*cond) []*cond {
	var out []*cond
	for _, c := range front {
		if !c.empty() {
			out = append(out, c)
		}
	}
	return append(out, base...)
}

// generate builds the policy. lenient (DENY, AUDIT, CUSTOM) drops a value
// that cannot be generated and reports it through dropped; strict (ALLOW)
// fails the rule.
func (m *model) generate(tcp, lenient bool, dropped func(*fieldError)) (*rbacv3.Policy, *fieldError) {
	pol := &rbacv3.Policy{}
	for _, conds := range m.permissions {
		var and []*rbacv3.Permission
		for _, c := range conds {
			ps, fe := c.permissions(tcp, lenient, dropped)
			if fe != nil {
				return nil, fe
			}
			and = append(and, ps...)
		}
		if len(and) == 0 {
			and = append(and, permAny())
		}
		pol.Permissions = append(pol.Permissions, permAnd(and))
	}
	for _, conds := range m.principals {
		var and []*rbacv3.Principal
		for _, c := range conds {
			ps, fe := c.principals(tcp, lenient, dropped)
			if fe != nil {
				return nil, fe
			}
			and = append(and, ps...)
		}
		if len(and) == 0 {
			and = append(and, prinAny())
		}
		pol.Principals = append(pol.Principals, prinAnd(and))
	}
	return pol, nil
}

// check is the error for a field that cannot be generated on this chain.
func (c *cond) check(tcp bool) *fieldError {
	if c.unsupported != "" {
		return &fieldError{path: c.path, msg: c.unsupported}
	}
	if tcp && c.httpOnly {
		return &fieldError{path: c.path, msg: "applies to HTTP only", httpOnly: true}
	}
	return nil
}

func (c *cond) permissions(tcp, lenient bool, dropped func(*fieldError)) ([]*rbacv3.Permission, *fieldError) {
	return matchers(c, tcp, lenient, dropped, c.permList, c.perm, permOr, permNot)
}

func (c *cond) principals(tcp, lenient bool, dropped func(*fieldError)) ([]*rbacv3.Principal, *fieldError) {
	return matchers(c, tcp, lenient, dropped, c.prinList, c.prin, prinOr, prinNot)
}

// matchers builds a condition's RBAC matchers (permissions or principals):
// one for its values (list builds them together when set, else one each,
// ORed) and a negated one for its notValues. A value that cannot be
// expressed fails the rule, or with lenient is dropped and reported.
func matchers[T any](c *cond, tcp, lenient bool, dropped func(*fieldError),
	list func([]string) (T, error), one func(string) (T, error), or func([]T) T, not func(T) T) ([]T, *fieldError) {
	if fe := c.check(tcp); fe != nil {
		if !lenient {
			return nil, fe
		}
		dropped(fe)
		return nil, nil
	}
	var out []T
	for _, neg := range []bool{false, true} {
		vs := c.values
		if neg {
			vs = c.notValues
		}
		if len(vs) == 0 {
			continue
		}
		var p T
		if list != nil {
			var err error
			if p, err = list(vs); err != nil {
				if !lenient {
					return nil, &fieldError{path: c.path, msg: err.Error()}
				}
				dropped(&fieldError{path: c.path, msg: err.Error()})
				continue
			}
		} else {
			var ors []T
			for _, v := range vs {
				x, err := one(v)
				if err != nil {
					if !lenient {
						return nil, &fieldError{path: c.path, msg: err.Error()}
					}
					dropped(&fieldError{path: c.path, msg: err.Error()})
					continue
				}
				ors = append(ors, x)
			}
			if len(ors) == 0 {
				continue
			}
			p = or(ors)
		}
		if neg {
			p = not(p)
		}
		out = append(out, p)
	}
	return out, nil
}

// Operation fields.

func hostCond(path string, vs, not []string) *cond {
	return &cond{path: path, values: vs, notValues: not, httpOnly: true, perm: func(v string) (*rbacv3.Permission, error) {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: headerMatch(":authority", v, true)}}, nil
	}}
}

func methodCond(path string, vs, not []string) *cond {
	return &cond{path: path, values: vs, notValues: not, httpOnly: true, perm: func(v string) (*rbacv3.Permission, error) {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: headerMatch(":method", v, false)}}, nil
	}}
}

func pathCond(path string, vs, not []string) *cond {
	return &cond{path: path, values: vs, notValues: not, httpOnly: true, perm: func(v string) (*rbacv3.Permission, error) {
		if pathTemplate(v) {
			return &rbacv3.Permission{Rule: &rbacv3.Permission_UriTemplate{UriTemplate: &corev3.TypedExtensionConfig{
				Name:        "uri-template",
				TypedConfig: typed(&uritemplatev3.UriTemplateMatchConfig{PathTemplate: templateReplacer.Replace(v)}),
			}}}, nil
		}
		return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
			Rule: &matcherv3.PathMatcher_Path{Path: stringMatch(v, "")}}}}, nil
	}}
}

func portCond(path string, vs, not []string) *cond {
	return &cond{path: path, values: vs, notValues: not, perm: func(v string) (*rbacv3.Permission, error) {
		n, err := port(v)
		if err != nil {
			return nil, err
		}
		return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: n}}, nil
	}}
}

// Source fields.

func (b *builder) principalCond(path string, vs, not []string, k config.Key) *cond {
	vs2, f1 := b.trust.expand(vs)
	not2, f2 := b.trust.expand(not)
	for _, f := range append(f1, f2...) {
		b.warn(k, path, "", "trust domain of %q is neither the mesh's %q nor one of its aliases %v; it only matches peers of that trust domain", f, b.trust[0], []string(b.trust[1:]))
	}
	return &cond{path: path, values: vs2, notValues: not2, prin: func(v string) (*rbacv3.Principal, error) {
		return prinAuthenticated(stringMatch(v, "spiffe://")), nil
	}}
}

func namespaceCond(path string, vs, not []string) *cond {
	return &cond{path: path, values: vs, notValues: not, prin: func(v string) (*rbacv3.Principal, error) {
		return prinAuthenticated(regexMatch(".*/ns/" + strings.ReplaceAll(v, "*", ".*") + "/.*")), nil
	}}
}

func serviceAccountCond(path string, vs, not []string, policyNS string) *cond {
	return &cond{path: path, values: vs, notValues: not, prin: func(v string) (*rbacv3.Principal, error) {
		ns, sa, ok := strings.Cut(v, "/")
		if !ok {
			ns, sa = policyNS, v
		}
		return prinAuthenticated(regexMatch(fmt.Sprintf("spiffe://.+/ns/%s/(.+/|)sa/%s(/.+)?", ns, sa))), nil
	}}
}

func ipCond(path string, vs, not []string, remote bool) *cond {
	return &cond{path: path, values: vs, notValues: not, prin: func(v string) (*rbacv3.Principal, error) {
		c, err := cidr(v)
		if err != nil {
			return nil, err
		}
		if remote {
			return &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: c}}, nil
		}
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: c}}, nil
	}}
}

// requestPrincipalCond matches ISS/SUB against the verified JWT's iss and
// sub claims; the last "/" splits them, since an issuer may be a URL.
func requestPrincipalCond(path string, vs, not []string) *cond {
	return &cond{path: path, values: vs, notValues: not, httpOnly: true, prinList: func(vs []string) (*rbacv3.Principal, error) {
		var or []*rbacv3.Principal
		for _, v := range vs {
			iss, sub := v, ""
			idx := strings.LastIndex(v, "/")
			found := idx >= 0
			if found {
				iss, sub = v[:idx], v[idx+1:]
			}
			var mi, ms *matcherv3.StringMatcher
			switch {
			case v == "*":
				mi, ms = matchAny, matchAny
			case strings.HasPrefix(v, "*"):
				if found {
					mi = suffixMatch(strings.TrimPrefix(iss, "*"), false)
					if iss == "*" {
						mi = matchAny
					}
					ms = exactMatch(sub, false)
				} else {
					mi, ms = matchAny, suffixMatch(v[1:], false)
				}
			case strings.HasSuffix(v, "*"):
				if found {
					mi = exactMatch(iss, false)
					ms = prefixMatch(strings.TrimSuffix(sub, "*"), false)
					if sub == "*" {
						ms = matchAny
					}
				} else {
					mi, ms = prefixMatch(v[:len(v)-1], false), matchAny
				}
			default:
				mi, ms = exactMatch(iss, false), exactMatch(sub, false)
			}
			or = append(or, prinAnd([]*rbacv3.Principal{
				prinMetadata(metadataPath(JWTAuthnFilter, []string{jwtPayload, "iss"}, valueString(mi))),
				prinMetadata(metadataPath(JWTAuthnFilter, []string{jwtPayload, "sub"}, valueString(ms))),
			}))
		}
		if len(or) == 1 {
			return or[0], nil
		}
		return prinOr(or), nil
	}}
}

func claimCond(path string, claims []string, vs, not []string) *cond {
	return &cond{path: path, values: vs, notValues: not, httpOnly: true, prinList: func(vs []string) (*rbacv3.Principal, error) {
		return prinMetadata(claimMatcher(claims, stringsOr(vs))), nil
	}}
}

// whenCond maps a when condition to its generator; isPerm says whether it
// is a permission (destination side) or a principal (source side).
func (b *builder) whenCond(k config.Key, w *security.Condition, path string) (*cond, bool, *fieldError) {
	key := w.GetKey()
	vs, not := w.GetValues(), w.GetNotValues()
	p := path
	switch {
	case key == "destination.ip":
		return &cond{path: p, values: vs, notValues: not, perm: func(v string) (*rbacv3.Permission, error) {
			c, err := cidr(v)
			if err != nil {
				return nil, err
			}
			return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: c}}, nil
		}}, true, nil
	case key == "destination.port":
		return portCond(p, vs, not), true, nil
	case key == "connection.sni":
		return &cond{path: p, values: vs, notValues: not, perm: func(v string) (*rbacv3.Permission, error) {
			return &rbacv3.Permission{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: stringMatch(v, "")}}, nil
		}}, true, nil
	case strings.HasPrefix(key, "experimental.envoy.filters."):
		// experimental.envoy.filters.a.b[c] is key c of filter
		// envoy.filters.a.b's dynamic metadata; a value [v] matches v in a list.
		filter, rest, ok := strings.Cut(strings.TrimPrefix(key, "experimental."), "[")
		if !ok || !strings.HasSuffix(rest, "]") || len(rest) < 2 {
			return nil, false, &fieldError{path: path + ".key", msg: fmt.Sprintf("%q: expecting experimental.envoy.filters.<FILTER>[<KEY>]", key)}
		}
		mkey := strings.TrimSuffix(rest, "]")
		return &cond{path: p, values: vs, notValues: not, permList: func(vs []string) (*rbacv3.Permission, error) {
			var ms []*matcherv3.ValueMatcher
			for _, v := range vs {
				if strings.HasPrefix(v, "[") && strings.HasSuffix(v, "]") {
					ms = append(ms, &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{
						MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: valueString(stringMatch(strings.Trim(v, "[]"), ""))}}}})
				} else {
					ms = append(ms, valueString(stringMatch(v, "")))
				}
			}
			return &rbacv3.Permission{Rule: &rbacv3.Permission_Metadata{Metadata: metadataPath(filter, []string{mkey}, valueOr(ms))}}, nil
		}}, true, nil
	case key == "source.ip":
		return ipCond(p, vs, not, false), false, nil
	case key == "remote.ip":
		return ipCond(p, vs, not, true), false, nil
	case key == "source.namespace":
		return namespaceCond(p, vs, not), false, nil
	case key == "source.serviceAccount":
		return serviceAccountCond(p, vs, not, k.Namespace), false, nil
	case key == "source.principal":
		return b.principalCond(p, vs, not, k), false, nil
	case key == "request.auth.principal":
		return requestPrincipalCond(p, vs, not), false, nil
	case key == "request.auth.audiences":
		return claimCond(p, []string{"aud"}, vs, not), false, nil
	case key == "request.auth.presenter":
		return claimCond(p, []string{"azp"}, vs, not), false, nil
	case strings.HasPrefix(key, "request.headers"):
		names, err := claimNames(strings.TrimPrefix(key, "request.headers"))
		if err != nil || len(names) != 1 {
			return nil, false, &fieldError{path: path + ".key", msg: fmt.Sprintf("%q: expecting request.headers[<NAME>]", key)}
		}
		return &cond{path: p, values: vs, notValues: not, httpOnly: true, prin: func(v string) (*rbacv3.Principal, error) {
			return &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: headerMatch(names[0], v, false)}}, nil
		}}, false, nil
	case strings.HasPrefix(key, "request.auth.claims"):
		names, err := claimNames(strings.TrimPrefix(key, "request.auth.claims"))
		if err != nil {
			return nil, false, &fieldError{path: path + ".key", msg: fmt.Sprintf("%q: %v", key, err)}
		}
		return claimCond(p, names, vs, not), false, nil
	}
	return nil, false, &fieldError{path: path + ".key", msg: fmt.Sprintf("unknown attribute %q; see https://istio.io/latest/docs/reference/config/security/conditions/", key)}
}
