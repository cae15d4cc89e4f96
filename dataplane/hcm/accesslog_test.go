package hcm

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// Istio's default access log formats (EnvoyTextLogFormat and the JSON
// map of meshConfig.accessLogEncoding JSON).
const istioText = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%
`

var istioJSON = map[string]any{
	"start_time": "%START_TIME%", "route_name": "%ROUTE_NAME%", "method": "%REQ(:METHOD)%",
	"path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", "protocol": "%PROTOCOL%", "response_code": "%RESPONSE_CODE%",
	"response_flags": "%RESPONSE_FLAGS%", "response_code_details": "%RESPONSE_CODE_DETAILS%",
	"connection_termination_details":    "%CONNECTION_TERMINATION_DETAILS%",
	"upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
	"bytes_received":                    "%BYTES_RECEIVED%", "bytes_sent": "%BYTES_SENT%", "duration": "%DURATION%",
	"upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%", "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%",
	"user_agent": "%REQ(USER-AGENT)%", "request_id": "%REQ(X-REQUEST-ID)%", "authority": "%REQ(:AUTHORITY)%",
	"upstream_host": "%UPSTREAM_HOST%", "upstream_cluster": "%UPSTREAM_CLUSTER_RAW%",
	"upstream_local_address": "%UPSTREAM_LOCAL_ADDRESS%", "downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%",
	"downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%", "requested_server_name": "%REQUESTED_SERVER_NAME%",
	// Not Istio's: a nested object and literals keep their JSON types.
	"extra": map[string]any{"code": "%RESPONSE_CODE%", "tag": "lit-%RESPONSE_CODE%"}, "version": 2.0, "istio": true,
}

func fileLog(t *testing.T, path string, lf *corev3.SubstitutionFormatString, f *accesslogv3.AccessLogFilter) *accesslogv3.AccessLog {
	fl := &filev3.FileAccessLog{Path: path}
	if lf != nil {
		fl.AccessLogFormat = &filev3.FileAccessLog_LogFormat{LogFormat: lf}
	}
	return &accesslogv3.AccessLog{Name: "envoy.access_loggers.file", Filter: f,
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(t, fl)}}
}

func celFilter(t *testing.T, expr string) *accesslogv3.AccessLogFilter {
	return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ExtensionFilter{ExtensionFilter: &accesslogv3.ExtensionFilter{
		Name:       "envoy.access_loggers.extension_filters.cel",
		ConfigType: &accesslogv3.ExtensionFilter_TypedConfig{TypedConfig: mustAny(t, &celv3.ExpressionFilter{Expression: expr})},
	}}}
}

func lines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func TestIstioAccessLogFormatsAndFilters(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t)
	e.upstream("backend", echo("backend"))
	p := func(n string) string { return filepath.Join(dir, n) }
	js, err := structpb.NewStruct(istioJSON)
	if err != nil {
		t.Fatal(err)
	}
	cfg := hcmConfig(t, simpleRoutes(prefixRoute("/ok", "backend")))
	cfg.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0].Name = "ok-route"
	cfg.AccessLog = []*accesslogv3.AccessLog{
		fileLog(t, p("text"), &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormatSource{
			TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: istioText}}}}, nil),
		fileLog(t, p("json"), &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: js}}, nil),
		// The Telemetry API's filter.expression.
		fileLog(t, p("errors"), nil, celFilter(t, "response.code >= 400")),
		fileLog(t, p("debug"), nil, celFilter(t, "request.headers['x-debug'] == 'on' && response.code == 200 || xds.cluster_name == 'nope'")),
		fileLog(t, p("not-ok"), nil, celFilter(t, "!(response.code == 200)")),
		// Envoy's own filters.
		fileLog(t, p("nr"), nil, &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ResponseFlagFilter{
			ResponseFlagFilter: &accesslogv3.ResponseFlagFilter{Flags: []string{"NR"}}}}),
		fileLog(t, p("5xx"), nil, &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{
			StatusCodeFilter: &accesslogv3.StatusCodeFilter{Comparison: &accesslogv3.ComparisonFilter{Op: accesslogv3.ComparisonFilter_GE,
				Value: &corev3.RuntimeUInt32{DefaultValue: 500, RuntimeKey: "k"}}}}}),
	}
	e.start(cfg)
	e.get("/ok?q=1", "User-Agent", "tester/1", "X-Request-Id", "rid-1", "X-Debug", "on")
	e.get("/missing", "User-Agent", "tester/1", "X-Request-Id", "rid-2")
	e.get("/ok", "X-Request-Id", "rid-3")
	e.cm.Close() // flushes the logs

	backend := e.clusters["backend"].hosts[0].addr
	text := lines(t, p("text"))
	if len(text) != 3 {
		t.Fatalf("text log: %q", text)
	}
	// [time] "GET /ok?q=1 HTTP/1.1" 200 - via_upstream - "-" 0 0 1 1 "-" "tester/1" "rid-1" "HOST" "UPSTREAM" backend - LOCAL REMOTE - ok-route
	f := strings.Fields(text[0])
	if len(f) != 24 {
		t.Fatalf("Istio text line has %d fields, want 24: %q", len(f), text[0])
	}
	want := map[int]string{3: "HTTP/1.1\"", 4: "200", 5: "-", 6: "via_upstream", 7: "-", 8: `"-"`, 14: `"tester/1"`, 15: `"rid-1"`,
		16: `"` + e.addr + `"`, 17: `"` + backend + `"`, 18: "backend", 20: e.addr, 22: "-", 23: "ok-route"}
	for i, w := range want {
		if f[i] != w {
			t.Errorf("text field %d = %q, want %q in %q", i, f[i], w, text[0])
		}
	}
	if !strings.HasPrefix(f[21], "127.0.0.1:") {
		t.Errorf("DOWNSTREAM_REMOTE_ADDRESS %q", f[21])
	}
	if !strings.Contains(text[1], `"GET /missing HTTP/1.1" 404 NR route_not_found - "-" `) {
		t.Errorf("no-route line %q", text[1])
	}

	js2 := lines(t, p("json"))
	if len(js2) != 3 {
		t.Fatalf("json log: %q", js2)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(js2[0]), &m); err != nil {
		t.Fatalf("%q: %v", js2[0], err)
	}
	for k, v := range map[string]any{
		"response_code": 200.0, "bytes_received": 0.0, "response_flags": "-", "response_code_details": "via_upstream",
		"upstream_cluster": "backend", "upstream_host": backend, "route_name": "ok-route", "method": "GET", "path": "/ok?q=1",
		"request_id": "rid-1", "requested_server_name": nil, "connection_termination_details": nil, "version": 2.0, "istio": true,
		"downstream_local_address": e.addr, "protocol": "HTTP/1.1",
	} {
		if m[k] != v {
			t.Errorf("json %s = %#v, want %#v", k, m[k], v)
		}
	}
	if d, ok := m["duration"].(float64); !ok || d < 0 {
		t.Errorf("json duration %#v, want a number", m["duration"])
	}
	if x, _ := m["extra"].(map[string]any); x["code"] != 200.0 || x["tag"] != "lit-200" {
		t.Errorf("json nested object %#v", m["extra"])
	}

	for name, wantIDs := range map[string][]string{
		"errors": {"rid-2"}, "debug": {"rid-1"}, "not-ok": {"rid-2"}, "nr": {"rid-2"}, "5xx": nil,
	} {
		got := lines(t, p(name))
		if len(got) != len(wantIDs) {
			t.Errorf("filtered log %s: %d lines %q, want requests %v", name, len(got), got, wantIDs)
			continue
		}
		for i, id := range wantIDs {
			if !strings.Contains(got[i], `"`+id+`"`) {
				t.Errorf("filtered log %s line %d = %q, want request %s", name, i, got[i], id)
			}
		}
	}
}

func TestAccessLogFilterErrors(t *testing.T) {
	e := newEnv(t)
	e.upstream("backend", echo("backend"))
	for _, tc := range []struct {
		f    *accesslogv3.AccessLogFilter
		want string
	}{
		{celFilter(t, "response.cod >= 400"), `access_log[0] "envoy.access_loggers.file": filter.extension_filter.typed_config.expression: column 1: unknown attribute "response.cod"`},
		{celFilter(t, "response.code >= "), `filter.extension_filter.typed_config.expression: column 18: unexpected end of expression`},
		{&accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ResponseFlagFilter{
			ResponseFlagFilter: &accesslogv3.ResponseFlagFilter{Flags: []string{"UH", "XX"}}}}, `filter.response_flag_filter.flags[1]: unknown response flag "XX"`},
	} {
		cfg := hcmConfig(t, simpleRoutes(prefixRoute("/", "backend")))
		cfg.AccessLog = []*accesslogv3.AccessLog{fileLog(t, filepath.Join(t.TempDir(), "x"), nil, tc.f)}
		if _, err := New(cfg, Deps{Clusters: e.clusters}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error containing %q", err, tc.want)
		}
	}
}
