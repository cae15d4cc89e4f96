package extauthz

import (
	"errors"
	"fmt"
	"strings"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/dataplane/route"
)

// headerMatcher is a compiled ListStringMatcher over lower-case header
// names. A nil *headerMatcher matches nothing.
type headerMatcher struct {
	ms []route.StringMatcher
}

func compileHeaders(l *matcherv3.ListStringMatcher, extra ...string) (*headerMatcher, error) {
	if l == nil && len(extra) == 0 {
		return nil, nil
	}
	hm := &headerMatcher{}
	for i, p := range l.GetPatterns() {
		sm, err := route.NewStringMatcher(p)
		if err != nil {
			return nil, fmt.Errorf("patterns[%d].%w", i, err)
		}
		hm.ms = append(hm.ms, sm)
	}
	for _, e := range extra {
		sm, _ := route.NewStringMatcher(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: e}})
		hm.ms = append(hm.ms, sm)
	}
	return hm, nil
}

// match reports whether the lower-case header name matches.
func (h *headerMatcher) match(name string) bool {
	if h == nil {
		return false
	}
	for i := range h.ms {
		if h.ms[i].Match(name) {
			return true
		}
	}
	return false
}

// metadataMatcher is a compiled envoy.type.matcher.v3.MetadataMatcher
// over dynamic metadata as skiff-proxy's filters store it (Go maps or
// protobuf Structs under a namespace).
type metadataMatcher struct {
	filter string
	path   []string
	value  *valueMatcher
	invert bool
}

func compileMetadata(m *matcherv3.MetadataMatcher) (*metadataMatcher, error) {
	if m.GetFilter() == "" {
		return nil, errors.New("filter: is required (the dynamic metadata namespace, e.g. envoy.filters.http.rbac)")
	}
	if len(m.GetPath()) == 0 {
		return nil, errors.New("path: at least one key is required")
	}
	mm := &metadataMatcher{filter: m.GetFilter(), invert: m.GetInvert()}
	for i, seg := range m.GetPath() {
		if seg.GetKey() == "" {
			return nil, fmt.Errorf("path[%d].key: is required", i)
		}
		mm.path = append(mm.path, seg.GetKey())
	}
	if m.GetValue() == nil {
		return nil, errors.New("value: is required")
	}
	v, err := compileValue(m.GetValue())
	if err != nil {
		return nil, fmt.Errorf("value.%w", err)
	}
	mm.value = v
	return mm, nil
}

// match tests the metadata namespace's value (nil when unset).
func (m *metadataMatcher) match(ns any) bool {
	v, found := core.LookupMetadata(ns, m.path)
	return m.value.match(v, found) != m.invert
}

// valueMatcher is the subset of envoy.type.matcher.v3.ValueMatcher a
// filter gate uses: string, bool, present, double and null matches, and
// or_match of those.
type valueMatcher struct {
	kind  string
	str   route.StringMatcher
	b     bool
	exact float64
	or    []*valueMatcher
}

func compileValue(v *matcherv3.ValueMatcher) (*valueMatcher, error) {
	switch p := v.GetMatchPattern().(type) {
	case *matcherv3.ValueMatcher_StringMatch:
		sm, err := route.NewStringMatcher(p.StringMatch)
		if err != nil {
			return nil, fmt.Errorf("string_match.%w", err)
		}
		return &valueMatcher{kind: "string", str: sm}, nil
	case *matcherv3.ValueMatcher_BoolMatch:
		return &valueMatcher{kind: "bool", b: p.BoolMatch}, nil
	case *matcherv3.ValueMatcher_PresentMatch:
		return &valueMatcher{kind: "present", b: p.PresentMatch}, nil
	case *matcherv3.ValueMatcher_NullMatch_:
		return &valueMatcher{kind: "null"}, nil
	case *matcherv3.ValueMatcher_DoubleMatch:
		e, ok := p.DoubleMatch.GetMatchPattern().(*matcherv3.DoubleMatcher_Exact)
		if !ok {
			return nil, errors.New("double_match: only exact is supported by skiff-proxy here")
		}
		return &valueMatcher{kind: "double", exact: e.Exact}, nil
	case *matcherv3.ValueMatcher_OrMatch:
		vm := &valueMatcher{kind: "or"}
		for i, x := range p.OrMatch.GetValueMatchers() {
			c, err := compileValue(x)
			if err != nil {
				return nil, fmt.Errorf("or_match.value_matchers[%d].%w", i, err)
			}
			vm.or = append(vm.or, c)
		}
		return vm, nil
	case nil:
		return nil, errors.New("match_pattern: one of string_match, bool_match, present_match, null_match, double_match, or_match is required")
	default:
		return nil, fmt.Errorf("match_pattern: %s is not supported by skiff-proxy in filter_enabled_metadata", strings.TrimPrefix(fmt.Sprintf("%T", p), "*v3.ValueMatcher_"))
	}
}

func (m *valueMatcher) match(v any, found bool) bool {
	switch m.kind {
	case "present":
		return found == m.b
	case "or":
		for _, o := range m.or {
			if o.match(v, found) {
				return true
			}
		}
		return false
	}
	if !found {
		return false
	}
	switch m.kind {
	case "string":
		s, ok := v.(string)
		return ok && m.str.Match(s)
	case "bool":
		b, ok := v.(bool)
		return ok && b == m.b
	case "null":
		return v == nil
	case "double":
		f, ok := v.(float64)
		return ok && f == m.exact
	}
	return false
}
