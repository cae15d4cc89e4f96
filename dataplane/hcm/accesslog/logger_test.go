package accesslog

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// TestLogNeverBlocks: with the output stuck (a pipe nobody reads), Log
// keeps returning; lines beyond the bounded queue are dropped and counted.
func TestLogNeverBlocks(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	tc, _ := anypb.New(&filev3.FileAccessLog{Path: fmt.Sprintf("/proc/self/fd/%d", w.Fd())})
	l, err := New(&accesslogv3.AccessLog{ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: tc}})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "http://x/"+string(make([]byte, 200)), nil)
	e := &Entry{Start: time.Now(), Req: req, Status: 200}
	done := make(chan struct{})
	const n = 3 * queueLen // far beyond the queue plus the pipe's buffer
	go func() {
		for i := 0; i < n; i++ {
			l.Log(e)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("Log blocked behind a stuck output")
	}
	if l.Dropped() == 0 {
		t.Errorf("no line dropped out of %d with a stuck output", n)
	}
	go func() { // unstick the writer so it can finish
		b := make([]byte, 64<<10)
		for {
			if _, err := r.Read(b); err != nil {
				return
			}
		}
	}()
}

func TestExpressions(t *testing.T) {
	req, _ := http.NewRequest("POST", "http://reviews:9080/api/v1?q=1", nil)
	req.Header.Set("X-User", "jason")
	e := &Entry{Req: req, Status: 503, Flags: core.NoHealthyUpstream, UpstreamCluster: "outbound|9080||reviews", RespHeader: http.Header{"Grpc-Status": {"14"}}}
	for _, tc := range []struct {
		expr string
		want bool
	}{
		{"response.code >= 400", true},
		{"response.code == 503 && request.method == 'POST'", true},
		{"response.code < 500 || request.headers['x-user'] == \"jason\"", true},
		{"request.headers['x-missing'] == 'a'", false},                     // missing key: an error, so no log
		{"request.headers['x-missing'] == 'a' || response.code > 1", true}, // true || error is true
		{"!(response.code == 503)", false},
		{"request.url_path == '/api/v1' && request.path == '/api/v1?q=1'", true},
		{"xds.cluster_name == 'outbound|9080||reviews'", true},
		{"response.code_details == 'no_healthy_upstream'", true},
		{"response.grpc_status == 14", true},
		{"response.code == '503'", false}, // int vs string never equal
		{"connection.mtls", false},
		{"true", true},
	} {
		x, err := ParseExpr(tc.expr)
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		if got := x.Match(e); got != tc.want {
			t.Errorf("%s = %v, want %v", tc.expr, got, tc.want)
		}
	}
	for expr, want := range map[string]string{
		"response.code >":             "column 16: unexpected end of expression",
		"(response.code == 1":         "column 20: missing ')'",
		"request.cookies['a'] == 'b'": "column 1: request.cookies[...] is not supported",
		"response.code == 'x":         "column 18: unterminated string",
		"response.code = 1":           "column 15: unexpected character '='",
	} {
		if _, err := ParseExpr(expr); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", expr, err, want)
		}
	}
}
