package rbac

import (
	"strings"
	"testing"

	xdsmatcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	uritemplatev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/path/match/uri_template/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	exprpb "google.golang.org/genproto/googleapis/api/expr/v1alpha1"

	"github.com/skiff-mesh/skiff/dataplane/hcm"
	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

const istioPolicy = "ns[foo]-policy[bar]-rule[0]"

func onePolicy(perm *rbacv3.Permission, id *rbacv3.Principal) *rbacv3.RBAC {
	if perm == nil {
		perm = anyPerm()
	}
	if id == nil {
		id = anyID()
	}
	return &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{istioPolicy: pol([]*rbacv3.Permission{anyPerm(), perm}, []*rbacv3.Principal{id})}}
}

// A config the proxy cannot apply is refused with the field that is wrong,
// so the NACK tells the operator where to look.
func TestConfigErrors(t *testing.T) {
	pfx := `rules.policies["` + istioPolicy + `"].`
	httpCases := []struct {
		name string
		cfg  *httprbacv3.RBAC
		want string
	}{
		{"header without a name", &httprbacv3.RBAC{Rules: onePolicy(permHeader(&routev3.HeaderMatcher{}), nil)},
			pfx + "permissions[1].header.name: is required"},
		{"unknown pseudo-header", &httprbacv3.RBAC{Rules: onePolicy(permHeader(&routev3.HeaderMatcher{Name: ":status"}), nil)},
			pfx + `permissions[1].header.name: pseudo-header ":status"`},
		{"empty prefix_match", &httprbacv3.RBAC{Rules: onePolicy(permHeader(&routev3.HeaderMatcher{Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_PrefixMatch{}}), nil)},
			pfx + "permissions[1].header.prefix_match: must not be empty"},
		{"bad regex deep in and_rules", &httprbacv3.RBAC{Rules: onePolicy(permAnd(anyPerm(), permNot(permPath(regex("(")))), nil)},
			pfx + "permissions[1].and_rules.rules[1].not_rule.url_path.path.safe_regex: "},
		{"empty and_rules", &httprbacv3.RBAC{Rules: onePolicy(permAnd(), nil)},
			pfx + "permissions[1].and_rules.rules: at least one rule is required"},
		{"empty or_ids", &httprbacv3.RBAC{Rules: onePolicy(nil, idOr())},
			pfx + "principals[0].or_ids.ids: at least one identifier is required"},
		{"bad CIDR", &httprbacv3.RBAC{Rules: onePolicy(nil, &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("10.0.0.300", 8)}})},
			pfx + `principals[0].remote_ip: address_prefix: "10.0.0.300" is not an IP address`},
		{"prefix_len too long", &httprbacv3.RBAC{Rules: onePolicy(nil, idOr(&rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr("10.0.0.0", 33)}}))},
			pfx + "principals[0].or_ids.ids[0].direct_remote_ip: prefix_len: 33 is longer than the 32 bits"},
		{"port range backwards", &httprbacv3.RBAC{Rules: onePolicy(&rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPortRange{DestinationPortRange: &typev3.Int32Range{Start: 90, End: 80}}}, nil)},
			pfx + "permissions[1].destination_port_range: start 90 must be less than end 80"},
		{"CEL condition", &httprbacv3.RBAC{Rules: &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{istioPolicy: {
			Permissions: []*rbacv3.Permission{anyPerm()}, Principals: []*rbacv3.Principal{anyID()}, Condition: &exprpb.Expr{}}}}},
			pfx + "condition: CEL conditions are not supported"},
		{"policy without principals", &httprbacv3.RBAC{Rules: &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{istioPolicy: {Permissions: []*rbacv3.Permission{anyPerm()}}}}},
			pfx + "principals: at least one is required"},
		{"route metadata", &httprbacv3.RBAC{Rules: onePolicy(&rbacv3.Permission{Rule: &rbacv3.Permission_SourcedMetadata{SourcedMetadata: &rbacv3.SourcedMetadata{
			MetadataMatcher: claimMatcher(exact("x"), "sub"), MetadataSource: rbacv3.MetadataSource_ROUTE}}}, nil)},
			pfx + "permissions[1].sourced_metadata.metadata_source: ROUTE is not supported"},
		{"metadata without value", &httprbacv3.RBAC{Rules: onePolicy(&rbacv3.Permission{Rule: &rbacv3.Permission_Metadata{Metadata: &matcherv3.MetadataMatcher{
			Filter: "envoy.filters.http.jwt_authn", Path: []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: "payload"}}}}}}, nil)},
			pfx + "permissions[1].metadata.value: is required"},
		{"unknown filter state", &httprbacv3.RBAC{Rules: onePolicy(nil, &rbacv3.Principal{Identifier: &rbacv3.Principal_FilterState{FilterState: &matcherv3.FilterStateMatcher{
			Key: "io.example.thing", Matcher: &matcherv3.FilterStateMatcher_StringMatch{StringMatch: exact("x")}}}})},
			pfx + `principals[0].filter_state.key: filter state "io.example.thing" is not provided`},
		{"custom principal", &httprbacv3.RBAC{Rules: onePolicy(nil, &rbacv3.Principal{Identifier: &rbacv3.Principal_Custom{Custom: &corev3.TypedExtensionConfig{Name: "mtls"}}})},
			pfx + `principals[0].custom: principal extension "mtls" is not supported`},
		{"matcher tree", &httprbacv3.RBAC{Matcher: &xdsmatcherv3.Matcher{}}, "matcher: the RBAC matcher tree is not supported"},
		{"shadow rules are checked too", &httprbacv3.RBAC{ShadowRules: onePolicy(&rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 70000}}, nil)},
			`shadow_rules.policies["` + istioPolicy + `"].permissions[1].destination_port: 70000 is not a port`},
		{"uri_template of another type", &httprbacv3.RBAC{Rules: onePolicy(&rbacv3.Permission{Rule: &rbacv3.Permission_UriTemplate{UriTemplate: &corev3.TypedExtensionConfig{
			Name: "t", TypedConfig: xdsres.Any(&matcherv3.StringMatcher{})}}}, nil)},
			pfx + `permissions[1].uri_template.typed_config: "type.googleapis.com/envoy.type.matcher.v3.StringMatcher" is not type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig`},
		{"uri_template without a leading slash", &httprbacv3.RBAC{Rules: onePolicy(&rbacv3.Permission{Rule: &rbacv3.Permission_UriTemplate{UriTemplate: &corev3.TypedExtensionConfig{
			Name: "t", TypedConfig: xdsres.Any(&uritemplatev3.UriTemplateMatchConfig{PathTemplate: "api/{*}"})}}}, nil)},
			pfx + `permissions[1].uri_template.typed_config.path_template: "api/{*}" must start with /`},
	}
	for _, tc := range httpCases {
		t.Run("http/"+tc.name, func(t *testing.T) {
			h := hcmConfig([]*hcmv3.HttpFilter{rbacFilter(tc.cfg)})
			_, err := hcm.New(h, hcm.Deps{Routes: hcm.NewRouteRegistry(), Stats: stats.New()})
			want := `http_filters[0] "envoy.filters.http.rbac": ` + tc.want
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error %v\nwant it to contain %q", err, want)
			}
		})
	}
	netCases := []struct {
		name string
		cfg  *netrbacv3.RBAC
		want string
	}{
		{"url_path has no meaning on TCP", &netrbacv3.RBAC{StatPrefix: "tcp.", Rules: onePolicy(permPath(prefix("/")), nil)},
			pfx + "permissions[1].url_path: the URL path exists only in the HTTP filter"},
		{"headers have no meaning on TCP", &netrbacv3.RBAC{StatPrefix: "tcp.", Rules: onePolicy(nil, &rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: &routev3.HeaderMatcher{Name: "x"}}})},
			pfx + "principals[0].header: request headers exist only in the HTTP filter"},
		{"stat_prefix is required", &netrbacv3.RBAC{Rules: onePolicy(nil, nil)}, "stat_prefix: is required"},
	}
	e := newEnv(t)
	for _, tc := range netCases {
		t.Run("tcp/"+tc.name, func(t *testing.T) {
			err := e.lm.AddOrUpdate(&listenerv3.Listener{Name: "bad", Address: xdsres.Addr("127.0.0.1:0"),
				FilterChains: []*listenerv3.FilterChain{tcpChain("tcp", tc.cfg)}})
			want := `filters[0] "envoy.filters.network.rbac": ` + tc.want
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error %v\nwant it to contain %q", err, want)
			}
		})
	}
}
