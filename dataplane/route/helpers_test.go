package route

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"

	// Registers the type Istio puts in retry_host_predicate.typed_config.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
)

// parseRC reads a RouteConfiguration written as Envoy YAML, the way the
// configuration appears in Envoy's and Istio's documentation.
func parseRC(t testing.TB, y string) *routev3.RouteConfiguration {
	t.Helper()
	var v any
	if err := yaml.Unmarshal([]byte(y), &v); err != nil {
		t.Fatalf("yaml: %v", err)
	}
	j, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("json: %v", err)
	}
	rc := &routev3.RouteConfiguration{}
	if err := protojson.Unmarshal(j, rc); err != nil {
		t.Fatalf("protojson: %v\n%s", err, j)
	}
	return rc
}

func mustCompile(t testing.TB, y string) *Table {
	t.Helper()
	tb, err := Compile(parseRC(t, y))
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return tb
}

func newReq(method, url string) *http.Request {
	return httptest.NewRequest(method, url, nil)
}
