package accesslog

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// celFilterType is the extension filter Istio's Telemetry API emits for
// accessLogging[].filter.expression.
const celFilterType = "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"

// filter decides whether an entry is logged.
type filter interface{ match(e *Entry) bool }

type filterFunc func(e *Entry) bool

func (f filterFunc) match(e *Entry) bool { return f(e) }

func compileFilter(f *accesslogv3.AccessLogFilter, where string) (filter, error) {
	switch s := f.GetFilterSpecifier().(type) {
	case *accesslogv3.AccessLogFilter_StatusCodeFilter:
		cmp, err := comparison(s.StatusCodeFilter.GetComparison(), where+".status_code_filter.comparison")
		if err != nil {
			return nil, err
		}
		return filterFunc(func(e *Entry) bool { return cmp(uint64(e.Status)) }), nil
	case *accesslogv3.AccessLogFilter_DurationFilter:
		cmp, err := comparison(s.DurationFilter.GetComparison(), where+".duration_filter.comparison")
		if err != nil {
			return nil, err
		}
		return filterFunc(func(e *Entry) bool { return cmp(uint64(e.Duration.Milliseconds())) }), nil
	case *accesslogv3.AccessLogFilter_NotHealthCheckFilter:
		// skiff-proxy has no health_check filter: no request is one.
		return filterFunc(func(*Entry) bool { return true }), nil
	case *accesslogv3.AccessLogFilter_TraceableFilter:
		return filterFunc(func(e *Entry) bool { return e.TraceID != "" }), nil
	case *accesslogv3.AccessLogFilter_RuntimeFilter:
		pct := s.RuntimeFilter.GetPercentSampled()
		num, den := float64(pct.GetNumerator()), denominator(pct.GetDenominator())
		if pct == nil {
			num = 0
		}
		return filterFunc(func(*Entry) bool { return rand.Float64()*den < num }), nil
	case *accesslogv3.AccessLogFilter_AndFilter, *accesslogv3.AccessLogFilter_OrFilter:
		var subs []*accesslogv3.AccessLogFilter
		and := false
		name := ".or_filter"
		if a, ok := s.(*accesslogv3.AccessLogFilter_AndFilter); ok {
			subs, and, name = a.AndFilter.GetFilters(), true, ".and_filter"
		} else {
			subs = s.(*accesslogv3.AccessLogFilter_OrFilter).OrFilter.GetFilters()
		}
		if len(subs) < 2 {
			return nil, fmt.Errorf("%s%s.filters: needs at least two filters", where, name)
		}
		fs := make([]filter, len(subs))
		for i, sub := range subs {
			var err error
			if fs[i], err = compileFilter(sub, fmt.Sprintf("%s%s.filters[%d]", where, name, i)); err != nil {
				return nil, err
			}
		}
		return filterFunc(func(e *Entry) bool {
			for _, f := range fs {
				if f.match(e) != and {
					return !and
				}
			}
			return and
		}), nil
	case *accesslogv3.AccessLogFilter_HeaderFilter:
		m, err := headerMatcher(s.HeaderFilter.GetHeader(), where+".header_filter.header")
		if err != nil {
			return nil, err
		}
		return filterFunc(func(e *Entry) bool { return e.Req != nil && m(e.Req.Header) }), nil
	case *accesslogv3.AccessLogFilter_ResponseFlagFilter:
		var mask core.ResponseFlags
		for i, n := range s.ResponseFlagFilter.GetFlags() {
			f, ok := parseFlag(n)
			if !ok {
				return nil, fmt.Errorf("%s.response_flag_filter.flags[%d]: unknown response flag %q", where, i, n)
			}
			mask |= f
		}
		if mask == 0 {
			return filterFunc(func(e *Entry) bool { return e.Flags != 0 }), nil
		}
		return filterFunc(func(e *Entry) bool { return e.Flags&mask != 0 }), nil
	case *accesslogv3.AccessLogFilter_GrpcStatusFilter:
		set := map[string]bool{}
		for _, st := range s.GrpcStatusFilter.GetStatuses() {
			set[fmt.Sprint(int32(st))] = true
		}
		exclude := s.GrpcStatusFilter.GetExclude()
		return filterFunc(func(e *Entry) bool {
			v := firstValue(e.RespHeader, "Grpc-Status")
			if v == "" {
				v = firstValue(e.RespHeader, http.TrailerPrefix+"Grpc-Status")
			}
			if v == "" {
				return false
			}
			return set[v] != exclude
		}), nil
	case *accesslogv3.AccessLogFilter_ExtensionFilter:
		tc := s.ExtensionFilter.GetTypedConfig()
		if tc.GetTypeUrl() != celFilterType {
			return nil, fmt.Errorf("%s.extension_filter.typed_config: unsupported filter %q (supported: %s)", where, tc.GetTypeUrl(), celFilterType)
		}
		ef := &celv3.ExpressionFilter{}
		if err := tc.UnmarshalTo(ef); err != nil {
			return nil, fmt.Errorf("%s.extension_filter.typed_config: %w", where, err)
		}
		x, err := ParseExpr(ef.GetExpression())
		if err != nil {
			return nil, fmt.Errorf("%s.extension_filter.typed_config.expression: %w", where, err)
		}
		return filterFunc(x.Match), nil
	case nil:
		return nil, fmt.Errorf("%s: a filter kind is required", where)
	default:
		return nil, fmt.Errorf("%s: %T is not supported (supported: status_code, duration, not_health_check, traceable, runtime, and, or, header, response_flag, grpc_status, and the CEL extension filter)", where, s)
	}
}

func denominator(d typev3.FractionalPercent_DenominatorType) float64 {
	switch d {
	case typev3.FractionalPercent_TEN_THOUSAND:
		return 10000
	case typev3.FractionalPercent_MILLION:
		return 1000000
	}
	return 100
}

func comparison(c *accesslogv3.ComparisonFilter, where string) (func(uint64) bool, error) {
	v := uint64(c.GetValue().GetDefaultValue())
	switch c.GetOp() {
	case accesslogv3.ComparisonFilter_EQ:
		return func(x uint64) bool { return x == v }, nil
	case accesslogv3.ComparisonFilter_GE:
		return func(x uint64) bool { return x >= v }, nil
	case accesslogv3.ComparisonFilter_LE:
		return func(x uint64) bool { return x <= v }, nil
	case accesslogv3.ComparisonFilter_NE:
		return func(x uint64) bool { return x != v }, nil
	}
	return nil, fmt.Errorf("%s.op: unknown operator %v", where, c.GetOp())
}

// headerMatcher compiles the common forms of route.HeaderMatcher.
func headerMatcher(h *routev3.HeaderMatcher, where string) (func(http.Header) bool, error) {
	if h.GetName() == "" {
		return nil, fmt.Errorf("%s.name: is required", where)
	}
	name := http.CanonicalHeaderKey(h.GetName())
	var m func(string) bool
	switch {
	case h.GetPresentMatch():
		m = func(string) bool { return true }
	case h.GetExactMatch() != "":
		x := h.GetExactMatch()
		m = func(v string) bool { return v == x }
	case h.GetPrefixMatch() != "":
		x := h.GetPrefixMatch()
		m = func(v string) bool { return strings.HasPrefix(v, x) }
	case h.GetSuffixMatch() != "":
		x := h.GetSuffixMatch()
		m = func(v string) bool { return strings.HasSuffix(v, x) }
	case h.GetContainsMatch() != "":
		x := h.GetContainsMatch()
		m = func(v string) bool { return strings.Contains(v, x) }
	case h.GetStringMatch() != nil:
		sm := h.GetStringMatch()
		ci := sm.GetIgnoreCase()
		fold := func(s string) string {
			if ci {
				return strings.ToLower(s)
			}
			return s
		}
		switch {
		case sm.GetExact() != "":
			x := fold(sm.GetExact())
			m = func(v string) bool { return fold(v) == x }
		case sm.GetPrefix() != "":
			x := fold(sm.GetPrefix())
			m = func(v string) bool { return strings.HasPrefix(fold(v), x) }
		case sm.GetSuffix() != "":
			x := fold(sm.GetSuffix())
			m = func(v string) bool { return strings.HasSuffix(fold(v), x) }
		case sm.GetContains() != "":
			x := fold(sm.GetContains())
			m = func(v string) bool { return strings.Contains(fold(v), x) }
		case sm.GetSafeRegex() != nil:
			re, err := regexp.Compile("^(?:" + sm.GetSafeRegex().GetRegex() + ")$")
			if err != nil {
				return nil, fmt.Errorf("%s.string_match.safe_regex.regex: %w", where, err)
			}
			m = re.MatchString
		default:
			return nil, fmt.Errorf("%s.string_match: a match pattern is required", where)
		}
	default:
		return nil, fmt.Errorf("%s: use present_match, exact/prefix/suffix/contains match or string_match", where)
	}
	inv := h.GetInvertMatch()
	return func(hd http.Header) bool {
		vs, ok := hd[name]
		if !ok {
			return inv
		}
		return m(strings.Join(vs, ",")) != inv
	}, nil
}

// parseFlag maps an Envoy short flag name ("UH") to its bit.
func parseFlag(name string) (core.ResponseFlags, bool) {
	for i := 0; i < 32; i++ {
		f := core.ResponseFlags(1) << i
		if s := f.String(); s == name && s != "" {
			return f, true
		}
	}
	return 0, false
}
