package validation

import (
	"encoding/json"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	security "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

func init() {
	register(config.PeerAuthentication, (*collector).peerAuthentication)
	register(config.AuthorizationPolicy, (*collector).authorizationPolicy)
	register(config.RequestAuthentication, (*collector).requestAuthentication)
}

func (v *collector) peerAuthentication(pa *security.PeerAuthentication) {
	v.typeSelector("spec.selector", pa.Selector)
	if len(pa.PortLevelMtls) > 0 && (pa.Selector == nil || len(pa.Selector.MatchLabels) == 0) {
		v.add("spec.portLevelMtls", "needs spec.selector with matchLabels; port-level mTLS applies to selected workloads only")
	}
	for _, port := range sortedKeys(pa.PortLevelMtls) {
		p := key("spec.portLevelMtls", strconv.FormatUint(uint64(port), 10))
		v.port(p, port)
		if pa.PortLevelMtls[port] == nil {
			v.add(p, "is empty; give a mode")
		}
	}
}

// policyTarget checks the selector / targetRef / targetRefs trio shared by
// the security and telemetry kinds: at most one may be set.
func (v *collector) policyTarget(sel *typev1beta1.WorkloadSelector, ref *typev1beta1.PolicyTargetReference, refs []*typev1beta1.PolicyTargetReference) {
	v.typeSelector("spec.selector", sel)
	set := 0
	for _, b := range []bool{sel != nil, ref != nil, len(refs) > 0} {
		if b {
			set++
		}
	}
	if set > 1 {
		v.add("spec", "sets more than one of selector, targetRef and targetRefs; keep one")
	}
	if ref != nil {
		v.targetRef("spec.targetRef", ref)
	}
	for i, r := range refs {
		v.targetRef(idx("spec.targetRefs", i), r)
	}
}

// targetKinds are the kinds a policy may attach to, by group.
var targetKinds = map[string]bool{
	"gateway.networking.k8s.io/Gateway":      true,
	"gateway.networking.k8s.io/GatewayClass": true,
	"/Service":                               true,
	"core/Service":                           true,
	"networking.istio.io/ServiceEntry":       true,
}

func (v *collector) targetRef(path string, r *typev1beta1.PolicyTargetReference) {
	if r == nil {
		v.add(path, "is empty; give group, kind and name")
		return
	}
	if !targetKinds[r.Group+"/"+r.Kind] {
		v.add(path, "%s/%s cannot be targeted; use a gateway.networking.k8s.io Gateway or GatewayClass, a Service, or a networking.istio.io ServiceEntry", r.Group, r.Kind)
	}
	if r.Name == "" {
		v.add(field(path, "name"), "is empty; name the target")
	}
	if r.Namespace != "" {
		v.add(field(path, "namespace"), "must be empty; a policy can target objects in its own namespace only")
	}
}

func (v *collector) authorizationPolicy(ap *security.AuthorizationPolicy) {
	v.policyTarget(ap.Selector, ap.TargetRef, ap.TargetRefs)
	provider, hasProvider := ap.ActionDetail.(*security.AuthorizationPolicy_Provider)
	switch ap.Action {
	case security.AuthorizationPolicy_CUSTOM:
		if !hasProvider || provider.Provider == nil || provider.Provider.Name == "" {
			v.add("spec.provider.name", "is required with action CUSTOM; name the extension provider from the mesh config")
		}
		if len(ap.Rules) == 0 {
			v.add("spec.rules", "is empty, so this CUSTOM policy never applies; add rules, or one empty rule {} to apply it to every request")
		}
		v.customRules(ap.Rules)
	case security.AuthorizationPolicy_DENY:
		if len(ap.Rules) == 0 {
			v.add("spec.rules", "is empty, so this DENY policy never applies; add rules, or one empty rule {} to deny every request")
		}
	}
	if hasProvider && ap.Action != security.AuthorizationPolicy_CUSTOM {
		v.add("spec.provider", "is allowed only with action CUSTOM; this policy's action is %s", ap.Action)
	}
	for i, r := range ap.Rules {
		p := idx("spec.rules", i)
		if r == nil {
			v.add(p, "is empty; remove it, or give from, to or when")
			continue
		}
		for j, f := range r.From {
			fp := idx(field(p, "from"), j)
			if f == nil || f.Source == nil {
				v.add(field(fp, "source"), "is required")
				continue
			}
			v.authzSource(field(fp, "source"), f.Source)
		}
		for j, t := range r.To {
			tp := idx(field(p, "to"), j)
			if t == nil || t.Operation == nil {
				v.add(field(tp, "operation"), "is required")
				continue
			}
			v.authzOperation(field(tp, "operation"), t.Operation)
		}
		for j, c := range r.When {
			v.authzCondition(idx(field(p, "when"), j), c)
		}
	}
}

// customRules refuses what an external authorizer cannot be asked about:
// the peer's identity and JWT claims, which Istio does not forward to it.
func (v *collector) customRules(rules []*security.Rule) {
	for i, r := range rules {
		p := idx("spec.rules", i)
		for j, f := range r.GetFrom() {
			s := f.GetSource()
			fp := field(idx(field(p, "from"), j), "source")
			for _, nl := range []namedList{
				{"namespaces", s.GetNamespaces()}, {"notNamespaces", s.GetNotNamespaces()},
				{"serviceAccounts", s.GetServiceAccounts()}, {"notServiceAccounts", s.GetNotServiceAccounts()},
				{"principals", s.GetPrincipals()}, {"notPrincipals", s.GetNotPrincipals()},
				{"requestPrincipals", s.GetRequestPrincipals()}, {"notRequestPrincipals", s.GetNotRequestPrincipals()},
			} {
				if len(nl.l) > 0 {
					v.add(field(fp, nl.name), "is not supported with action CUSTOM; match on ipBlocks, to or when instead")
				}
			}
		}
		for j, c := range r.GetWhen() {
			k := c.GetKey()
			if k == "source.namespace" || k == "source.serviceAccount" || k == "source.principal" || strings.HasPrefix(k, "request.auth.") {
				v.add(field(idx(field(p, "when"), j), "key"), "%q is not supported with action CUSTOM", k)
			}
		}
	}
}

type namedList struct {
	name string
	l    []string
}

// nonEmptyLists reports empty strings, which Istio refuses in every list of
// an AuthorizationPolicy, and returns whether any list had an entry.
func (v *collector) nonEmptyLists(path string, lists []namedList) bool {
	found := false
	for _, nl := range lists {
		for i, s := range nl.l {
			found = true
			if s == "" {
				v.add(idx(field(path, nl.name), i), "is empty; give a value or remove it")
			}
		}
	}
	return found
}

func (v *collector) authzSource(path string, s *security.Source) {
	lists := []namedList{
		{"principals", s.Principals}, {"notPrincipals", s.NotPrincipals},
		{"requestPrincipals", s.RequestPrincipals}, {"notRequestPrincipals", s.NotRequestPrincipals},
		{"namespaces", s.Namespaces}, {"notNamespaces", s.NotNamespaces},
		{"serviceAccounts", s.ServiceAccounts}, {"notServiceAccounts", s.NotServiceAccounts},
		{"ipBlocks", s.IpBlocks}, {"notIpBlocks", s.NotIpBlocks},
		{"remoteIpBlocks", s.RemoteIpBlocks}, {"notRemoteIpBlocks", s.NotRemoteIpBlocks},
		{"trustDomains", s.TrustDomains}, {"notTrustDomains", s.NotTrustDomains},
	}
	if !v.nonEmptyLists(path, lists) {
		v.add(path, "is empty; give at least one field, or remove from")
	}
	for _, nl := range lists[8:12] {
		for i, b := range nl.l {
			if b != "" {
				v.cidr(idx(field(path, nl.name), i), b)
			}
		}
	}
	if (len(s.ServiceAccounts) > 0 || len(s.NotServiceAccounts) > 0) &&
		(len(s.Principals) > 0 || len(s.NotPrincipals) > 0 || len(s.Namespaces) > 0 || len(s.NotNamespaces) > 0) {
		v.add(path, "sets serviceAccounts with principals or namespaces; serviceAccounts already name both, keep one form")
	}
}

func (v *collector) authzOperation(path string, o *security.Operation) {
	lists := []namedList{
		{"hosts", o.Hosts}, {"notHosts", o.NotHosts}, {"ports", o.Ports}, {"notPorts", o.NotPorts},
		{"methods", o.Methods}, {"notMethods", o.NotMethods}, {"paths", o.Paths}, {"notPaths", o.NotPaths},
	}
	if !v.nonEmptyLists(path, lists) {
		v.add(path, "is empty; give at least one field, or remove to")
	}
	for _, nl := range lists[2:4] {
		for i, p := range nl.l {
			if n, err := strconv.Atoi(p); p != "" && (err != nil || n < 1 || n > 65535) {
				v.add(idx(field(path, nl.name), i), "%q is not a port number; use 1-65535", p)
			}
		}
	}
	for _, nl := range lists[6:8] {
		for i, p := range nl.l {
			if p != "" {
				v.authzPath(idx(field(path, nl.name), i), p)
			}
		}
	}
}

// authzPath checks a path: exact, "*", a "*" prefix or suffix, or a
// template of whole "{*}" / "{**}" segments with "{**}" last.
func (v *collector) authzPath(path, p string) {
	if strings.Contains(p, "{") || strings.Contains(p, "}") {
		if !strings.HasPrefix(p, "/") {
			v.add(path, "path template %q must start with /", p)
			return
		}
		segs := strings.Split(p[1:], "/")
		for i, seg := range segs {
			switch {
			case seg == "{*}":
			case seg == "{**}":
				if i != len(segs)-1 {
					v.add(path, "path template %q: {**} must be the last segment", p)
				}
			case strings.ContainsAny(seg, "{}*"):
				v.add(path, "path template %q: segment %q must be {*}, {**} or plain text", p, seg)
			}
		}
		return
	}
	if p == "*" {
		return
	}
	inner := strings.TrimSuffix(strings.TrimPrefix(p, "*"), "*")
	if strings.Contains(inner, "*") || (strings.HasPrefix(p, "*") && strings.HasSuffix(p, "*")) {
		v.add(path, "path %q: \"*\" is allowed only alone, as a prefix or as a suffix; use {*} or {**} templates for segments", p)
	}
}

func (v *collector) authzCondition(path string, c *security.Condition) {
	if c == nil {
		v.add(path, "is empty; give key and values")
		return
	}
	if c.Key == "" {
		v.add(field(path, "key"), "is empty; give a condition key such as source.ip or request.headers[x-token]")
		return
	}
	if len(c.Values) == 0 && len(c.NotValues) == 0 {
		v.add(path, "has neither values nor notValues for key %q; give at least one", c.Key)
	}
	v.nonEmptyLists(path, []namedList{{"values", c.Values}, {"notValues", c.NotValues}})
	check := func(fn func(p, s string)) {
		for i, s := range c.Values {
			fn(idx(field(path, "values"), i), s)
		}
		for i, s := range c.NotValues {
			fn(idx(field(path, "notValues"), i), s)
		}
	}
	k := c.Key
	switch {
	case k == "source.ip" || k == "remote.ip" || k == "destination.ip":
		check(func(p, s string) {
			if s != "" {
				v.cidr(p, s)
			}
		})
	case k == "destination.port":
		check(func(p, s string) {
			if n, err := strconv.Atoi(s); s != "" && (err != nil || n < 1 || n > 65535) {
				v.add(p, "%q is not a port number; use 1-65535", s)
			}
		})
	case k == "source.namespace" || k == "source.principal" || k == "source.serviceAccount" ||
		k == "request.auth.principal" || k == "request.auth.audiences" || k == "request.auth.presenter" ||
		k == "connection.sni" || strings.HasPrefix(k, "experimental.envoy.filters."):
	case strings.HasPrefix(k, "request.headers["):
		if !strings.HasSuffix(k, "]") || len(k) == len("request.headers[]") {
			v.add(field(path, "key"), "%q must be request.headers[NAME]", k)
		}
	case strings.HasPrefix(k, "request.auth.claims["):
		if !strings.HasSuffix(k, "]") || len(k) == len("request.auth.claims[]") {
			v.add(field(path, "key"), "%q must be request.auth.claims[NAME] (or [a][b] for nested claims)", k)
		}
	default:
		v.add(field(path, "key"), "%q is not a supported condition key; use one of request.headers[NAME], source.ip, remote.ip, source.namespace, source.principal, source.serviceAccount, request.auth.principal, request.auth.audiences, request.auth.presenter, request.auth.claims[NAME], destination.ip, destination.port, connection.sni", k)
	}
}

// strictHeader is the header name form Istio requires where it writes
// headers from claims.
var strictHeader = regexp.MustCompile(`^[-A-Za-z0-9]+$`)

func (v *collector) requestAuthentication(ra *security.RequestAuthentication) {
	v.policyTarget(ra.Selector, ra.TargetRef, ra.TargetRefs)
	for i, r := range ra.JwtRules {
		p := idx("spec.jwtRules", i)
		if r == nil {
			v.add(p, "is empty; give at least the issuer")
			continue
		}
		// Istio derives the issuer's keys from jwksUri alone if need be.
		if r.Issuer == "" && r.JwksUri == "" {
			v.add(field(p, "issuer"), "is empty and so is jwksUri; give the iss claim tokens carry")
		}
		for j, a := range r.Audiences {
			if a == "" {
				v.add(idx(field(p, "audiences"), j), "is empty; give an audience or remove it")
			}
		}
		// Istio's CRD refuses both (its webhook alone would take jwks).
		if r.JwksUri != "" && r.Jwks != "" {
			v.add(p, "sets both jwksUri and jwks; keep one")
		}
		if r.JwksUri != "" {
			u, err := url.Parse(r.JwksUri)
			switch {
			case err != nil:
				v.add(field(p, "jwksUri"), "%q is not a URL: %v", r.JwksUri, err)
			case u.Scheme != "http" && u.Scheme != "https":
				v.add(field(p, "jwksUri"), "%q must be an http:// or https:// URL", r.JwksUri)
			case u.Hostname() == "":
				v.add(field(p, "jwksUri"), "%q has no host", r.JwksUri)
			}
		}
		if r.Jwks != "" {
			var set struct {
				Keys []json.RawMessage `json:"keys"`
			}
			if err := json.Unmarshal([]byte(r.Jwks), &set); err != nil {
				v.add(field(p, "jwks"), "is not a JSON Web Key Set: %v", err)
			} else if len(set.Keys) == 0 {
				v.add(field(p, "jwks"), "has no keys; give {\"keys\": [...]}")
			}
		}
		for j, h := range r.FromHeaders {
			hp := idx(field(p, "fromHeaders"), j)
			if h == nil || h.Name == "" {
				v.add(field(hp, "name"), "is empty; name the header that carries the token")
				continue
			}
			if !headerToken.MatchString(h.Name) {
				v.add(field(hp, "name"), "%q is not a valid header name", h.Name)
			}
		}
		for j, q := range r.FromParams {
			if q == "" {
				v.add(idx(field(p, "fromParams"), j), "is empty; name the query parameter or remove it")
			}
		}
		for j, c := range r.FromCookies {
			if c == "" {
				v.add(idx(field(p, "fromCookies"), j), "is empty; name the cookie or remove it")
			}
		}
		for j, ch := range r.OutputClaimToHeaders {
			cp := idx(field(p, "outputClaimToHeaders"), j)
			if ch == nil || ch.Claim == "" || ch.Header == "" {
				v.add(cp, "needs both claim and header")
				continue
			}
			if !strictHeader.MatchString(ch.Header) {
				v.add(field(cp, "header"), "%q is not a header name; use letters, digits and '-'", ch.Header)
			}
		}
		if r.OutputPayloadToHeader != "" {
			v.headerName(field(p, "outputPayloadToHeader"), r.OutputPayloadToHeader)
		}
		v.duration(field(p, "timeout"), r.Timeout, false)
	}
}
