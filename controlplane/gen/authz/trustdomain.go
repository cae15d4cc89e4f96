package authz

import "strings"

// trustBundle is the mesh's trust domain followed by its aliases. A
// principal naming cluster.local (Istio's stand-in for "this mesh") or any
// of them is expanded to one principal per trust domain, as istiod does
// for trust domain migration.
type trustBundle []string

func newTrustBundle(td string, aliases []string) trustBundle {
	if td == "" {
		td = "cluster.local"
	}
	return append(trustBundle{td}, aliases...)
}

// expand returns principals with their trust domains replaced, and the
// principals whose trust domain is neither cluster.local nor in the bundle
// (kept as written; they can only match a foreign identity).
func (t trustBundle) expand(principals []string) (out, foreign []string) {
	for _, p := range principals {
		parts := strings.Split(p, "/")
		// Not <td>/ns/<ns>/sa/<sa>, or a "*" trust domain: the trust
		// domain is not checked, nothing to expand.
		if len(parts) != 5 || parts[0] == "*" {
			out = append(out, p)
			continue
		}
		td := parts[0]
		if td != "cluster.local" && !t.matches(td) {
			out = append(out, p)
			foreign = append(foreign, p)
			continue
		}
		var mine []string
		for _, d := range t {
			np := d + "/" + strings.Join(parts[1:], "/")
			// "*-td" written in the policy stays itself for the trust
			// domains it already covers.
			if wildcardSuffix(td, d) {
				np = p
			}
			if !contains(mine, np) {
				mine = append(mine, np)
			}
		}
		out = append(out, mine...)
	}
	return out, foreign
}

func (t trustBundle) matches(td string) bool {
	for _, d := range t {
		if d == td || wildcardSuffix(td, d) {
			return true
		}
	}
	return false
}

// wildcardSuffix reports whether pattern is "*suffix" and s ends in suffix.
func wildcardSuffix(pattern, s string) bool {
	return strings.HasPrefix(pattern, "*") && strings.HasSuffix(s, pattern[1:])
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
