package rbac

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	uritemplatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/path/match/uri_template/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/dataplane/route"
)

// metadataMatcher matches a value in the stream's dynamic metadata:
// namespace filter, then a key path. jwt_authn stores verified JWT payloads
// as map[string]any under "envoy.filters.http.jwt_authn", keyed by the
// provider's payload_in_metadata, which is where Istio's
// request.auth.claims rules look.
type metadataMatcher struct {
	filter string
	path   []string
	value  valueMatcher
	invert bool
}

func compileMetadata(m *matcherv3.MetadataMatcher) (*metadataMatcher, error) {
	if m.GetFilter() == "" {
		return nil, errors.New("filter: is required (the dynamic metadata namespace, e.g. envoy.filters.http.jwt_authn)")
	}
	if len(m.GetPath()) == 0 {
		return nil, errors.New("path: at least one key is required")
	}
	mm := &metadataMatcher{filter: m.GetFilter(), invert: m.GetInvert()}
	for i, seg := range m.GetPath() {
		k := seg.GetKey()
		if k == "" {
			return nil, fmt.Errorf("path[%d].key: is required", i)
		}
		mm.path = append(mm.path, k)
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

func compileSourcedMetadata(s *rbacv3.SourcedMetadata) (*metadataMatcher, error) {
	if s.GetMetadataSource() != rbacv3.MetadataSource_DYNAMIC {
		return nil, fmt.Errorf("metadata_source: %s is not supported by skiff-proxy (only DYNAMIC)", s.GetMetadataSource())
	}
	if s.GetMetadataMatcher() == nil {
		return nil, errors.New("metadata_matcher: is required")
	}
	m, err := compileMetadata(s.GetMetadataMatcher())
	if err != nil {
		return nil, fmt.Errorf("metadata_matcher.%w", err)
	}
	return m, nil
}

func (m *metadataMatcher) match(a *attrs) bool {
	var root any
	if a.stream != nil {
		root = a.stream.Metadata(m.filter)
	}
	v, found := core.LookupMetadata(root, m.path)
	return m.value.match(v, found) != m.invert
}

type valueKind uint8

const (
	vkNull valueKind = iota + 1
	vkDouble
	vkString
	vkBool
	vkPresent
	vkList
	vkOr
)

// valueMatcher is a compiled envoy.type.matcher.v3.ValueMatcher.
type valueMatcher struct {
	kind       valueKind
	str        route.StringMatcher
	exact      float64
	isRange    bool
	start, end float64
	b          bool
	oneOf      *valueMatcher
	or         []valueMatcher
}

func compileValue(v *matcherv3.ValueMatcher) (valueMatcher, error) {
	switch p := v.GetMatchPattern().(type) {
	case *matcherv3.ValueMatcher_NullMatch_:
		return valueMatcher{kind: vkNull}, nil
	case *matcherv3.ValueMatcher_DoubleMatch:
		vm := valueMatcher{kind: vkDouble}
		switch d := p.DoubleMatch.GetMatchPattern().(type) {
		case *matcherv3.DoubleMatcher_Exact:
			vm.exact = d.Exact
		case *matcherv3.DoubleMatcher_Range:
			vm.isRange, vm.start, vm.end = true, d.Range.GetStart(), d.Range.GetEnd()
			if vm.start >= vm.end {
				return vm, fmt.Errorf("double_match.range: start %g must be less than end %g", vm.start, vm.end)
			}
		default:
			return vm, errors.New("double_match: one of exact or range is required")
		}
		return vm, nil
	case *matcherv3.ValueMatcher_StringMatch:
		sm, err := route.NewStringMatcher(p.StringMatch)
		if err != nil {
			return valueMatcher{}, fmt.Errorf("string_match.%w", err)
		}
		return valueMatcher{kind: vkString, str: sm}, nil
	case *matcherv3.ValueMatcher_BoolMatch:
		return valueMatcher{kind: vkBool, b: p.BoolMatch}, nil
	case *matcherv3.ValueMatcher_PresentMatch:
		return valueMatcher{kind: vkPresent, b: p.PresentMatch}, nil
	case *matcherv3.ValueMatcher_ListMatch:
		one := p.ListMatch.GetOneOf()
		if one == nil {
			return valueMatcher{}, errors.New("list_match.one_of: is required")
		}
		inner, err := compileValue(one)
		if err != nil {
			return valueMatcher{}, fmt.Errorf("list_match.one_of.%w", err)
		}
		return valueMatcher{kind: vkList, oneOf: &inner}, nil
	case *matcherv3.ValueMatcher_OrMatch:
		vms := p.OrMatch.GetValueMatchers()
		if len(vms) < 2 {
			return valueMatcher{}, errors.New("or_match.value_matchers: at least two are required")
		}
		vm := valueMatcher{kind: vkOr}
		for i, x := range vms {
			c, err := compileValue(x)
			if err != nil {
				return vm, fmt.Errorf("or_match.value_matchers[%d].%w", i, err)
			}
			vm.or = append(vm.or, c)
		}
		return vm, nil
	case nil:
		return valueMatcher{}, errors.New("match_pattern: one of null_match, double_match, string_match, bool_match, present_match, list_match, or_match is required")
	default:
		return valueMatcher{}, fmt.Errorf("match_pattern: %T is not supported by skiff-proxy", p)
	}
}

// match tests a metadata value; found is false when the path is absent,
// which only a present_match of false can match (Envoy: an unset Value).
func (m *valueMatcher) match(v any, found bool) bool {
	switch m.kind {
	case vkPresent:
		return found == m.b
	case vkOr:
		for i := range m.or {
			if m.or[i].match(v, found) {
				return true
			}
		}
		return false
	}
	if !found {
		return false
	}
	switch m.kind {
	case vkNull:
		return v == nil
	case vkString:
		s, ok := v.(string)
		return ok && m.str.Match(s)
	case vkBool:
		b, ok := v.(bool)
		return ok && b == m.b
	case vkDouble:
		f, ok := toFloat(v)
		if !ok {
			return false
		}
		if m.isRange {
			return f >= m.start && f < m.end
		}
		return f == m.exact
	case vkList:
		switch l := v.(type) {
		case []any:
			for _, e := range l {
				if m.oneOf.match(e, true) {
					return true
				}
			}
		case []string:
			for _, e := range l {
				if m.oneOf.match(e, true) {
					return true
				}
			}
		}
	}
	return false
}

func toFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case float32:
		return float64(n), true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case uint64:
		return float64(n), true
	}
	return 0, false
}

// uriTemplateMatcher is Envoy's uri_template path matcher, which Istio
// emits for AuthorizationPolicy paths with {*} and {**}: "*" or "{name}"
// matches one path segment, "**" or "{name=**}" any number of them.
type uriTemplateMatcher struct{ re *regexp.Regexp }

const uriTemplateTypeURL = "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig"

func compileURITemplate(tc *corev3.TypedExtensionConfig) (uriTemplateMatcher, error) {
	cfg := &uritemplatev3.UriTemplateMatchConfig{}
	if tu := tc.GetTypedConfig().GetTypeUrl(); tu != uriTemplateTypeURL {
		return uriTemplateMatcher{}, fmt.Errorf("typed_config: %q is not %s", tu, uriTemplateTypeURL)
	}
	if err := tc.GetTypedConfig().UnmarshalTo(cfg); err != nil {
		return uriTemplateMatcher{}, fmt.Errorf("typed_config: %v", err)
	}
	t := cfg.GetPathTemplate()
	if !strings.HasPrefix(t, "/") {
		return uriTemplateMatcher{}, fmt.Errorf("typed_config.path_template: %q must start with /", t)
	}
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(t); {
		switch {
		case strings.HasPrefix(t[i:], "{"):
			end := strings.IndexByte(t[i:], '}')
			if end < 0 {
				return uriTemplateMatcher{}, fmt.Errorf("typed_config.path_template: %q has an unclosed {", t)
			}
			// {name} is one segment, {name=op} matches op, {*} and {**}
			// are the bare operators.
			v := t[i+1 : i+end]
			if _, op, ok := strings.Cut(v, "="); ok {
				v = op
			} else if v != "*" && v != "**" {
				v = "*"
			}
			if v == "**" {
				b.WriteString(".*")
			} else {
				b.WriteString(strings.ReplaceAll(regexp.QuoteMeta(v), `\*`, "[^/]+"))
			}
			i += end + 1
		case strings.HasPrefix(t[i:], "**"):
			b.WriteString(".*")
			i += 2
		case t[i] == '*':
			b.WriteString("[^/]+")
			i++
		default:
			b.WriteString(regexp.QuoteMeta(t[i : i+1]))
			i++
		}
	}
	b.WriteString("$")
	re, err := regexp.Compile(b.String())
	if err != nil {
		return uriTemplateMatcher{}, fmt.Errorf("typed_config.path_template: %q: %v", t, err)
	}
	return uriTemplateMatcher{re}, nil
}

func (m uriTemplateMatcher) match(a *attrs) bool {
	return a.req != nil && m.re.MatchString(urlPath(a.req))
}
