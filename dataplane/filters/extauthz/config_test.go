package extauthz

import (
	"strings"
	"testing"

	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	netextauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/ext_authz/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// Bad configs are refused with the field path and what to do.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ json, want string }{
		{`{}`, "services: one of grpc_service or http_service is required"},
		{`{"grpcService": {"googleGrpc": {"targetUri": "x", "statPrefix": "x"}}}`, "grpc_service.envoy_grpc: is required"},
		{`{"grpcService": {"envoyGrpc": {}}}`, "grpc_service.envoy_grpc.cluster_name: is required"},
		{`{"httpService": {"serverUri": {"uri": "http://a", "timeout": "1s"}}}`, "http_service.server_uri.cluster: is required"},
		{`{"httpService": {"serverUri": {"uri": "http://a", "cluster": "c", "timeout": "1s"}, "pathPrefix": "check"}}`, `http_service.path_prefix: "check" must begin with /`},
		{`{"httpService": {"serverUri": {"uri": "http://a", "cluster": "c", "timeout": "1s"}, "authorizationRequest": {"allowedHeaders": {"patterns": [{"prefix": ""}]}}}}`, "authorization_request.allowed_headers.patterns[0].prefix: must not be empty"},
		{`{"grpcService": {"envoyGrpc": {"clusterName": "c"}}, "clearRouteCache": true}`, "clear_route_cache: is not supported"},
		{`{"grpcService": {"envoyGrpc": {"clusterName": "c"}}, "statusOnError": {"code": 42}}`, "status_on_error.code: 42"},
		{`{"grpcService": {"envoyGrpc": {"clusterName": "c"}}, "withRequestBody": {}}`, "with_request_body.max_request_bytes: must be greater than 0"},
		{`{"grpcService": {"envoyGrpc": {"clusterName": "c"}}, "filterEnabledMetadata": {"filter": "envoy.filters.http.rbac", "path": [{"key": "k"}]}}`, "filter_enabled_metadata.value: is required"},
	} {
		pb := &extauthzv3.ExtAuthz{}
		if err := protojson.Unmarshal([]byte(tc.json), pb); err != nil {
			t.Fatalf("%s: %v", tc.json, err)
		}
		_, err := compileHTTP(pb, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.json, err, tc.want)
		}
	}
	for _, tc := range []struct{ json, want string }{
		{`{"grpcService": {"envoyGrpc": {"clusterName": "c"}}}`, "stat_prefix: is required"},
		{`{"statPrefix": "tcp.", "grpcService": {"envoyGrpc": {}}}`, "grpc_service.envoy_grpc.cluster_name: is required"},
		{`{"statPrefix": "tcp."}`, "grpc_service: is required"},
	} {
		pb := &netextauthzv3.ExtAuthz{}
		if err := protojson.Unmarshal([]byte(tc.json), pb); err != nil {
			t.Fatalf("%s: %v", tc.json, err)
		}
		_, err := compileNetwork(pb, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("network %s: error %v, want %q", tc.json, err, tc.want)
		}
	}
}

// A valid config with every supported field compiles.
func TestConfigIstioShapes(t *testing.T) {
	pb := &extauthzv3.ExtAuthz{}
	js := `{"httpService": {"serverUri": {"uri": "http://ext-authz.foo.svc.cluster.local", "cluster": "outbound|8000||ext-authz.foo.svc.cluster.local", "timeout": "600s"},
	  "pathPrefix": "/check", "authorizationRequest": {"allowedHeaders": {"patterns": [{"exact": "x-ext-authz"}]}, "headersToAdd": [{"key": "x-from", "value": "skiff"}]},
	  "authorizationResponse": {"allowedUpstreamHeaders": {"patterns": [{"exact": "x-ext-authz-check-result"}]}, "allowedClientHeaders": {"patterns": [{"exact": "x-ext-authz-check-result"}]}}},
	  "transportApiVersion": "V3", "failureModeAllow": true, "statusOnError": {"code": 503},
	  "filterEnabledMetadata": {"filter": "envoy.filters.http.rbac", "path": [{"key": "istio_ext_authz_shadow_effective_policy_id"}], "value": {"stringMatch": {"prefix": "istio-ext-authz"}}},
	  "withRequestBody": {"maxRequestBytes": 1000000, "allowPartialMessage": true}, "filterEnabled": {"defaultValue": {"numerator": 50}}}`
	if err := protojson.Unmarshal([]byte(js), pb); err != nil {
		t.Fatal(err)
	}
	c, err := compileHTTP(pb, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.statusOnError != 503 || !c.failOpen || c.enabledPct != 500000 || c.maxBody != 1000000 || !c.partialBody {
		t.Errorf("compiled %+v", c)
	}
	// A cluster that does not exist is an error at check time, not a crash.
	r := c.svc.check(t.Context(), &checkInput{})
	if r.verdict != verdictError || !strings.Contains(r.err.Error(), "is unknown") {
		t.Errorf("check without clusters: %+v", r)
	}
}
