package l4

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiff-mesh/skiff/pkg/stats"
)

// Istio's default text format, which it also puts on tcp_proxy.
const istioText = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%
`

func withLog(t *testing.T, cfg interface{ GetStatPrefix() string }, path string) []*accesslogv3.AccessLog {
	tc, err := anypb.New(&filev3.FileAccessLog{Path: path, AccessLogFormat: &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
		Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: istioText}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	return []*accesslogv3.AccessLog{{Name: "envoy.access_loggers.file", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: tc}}}
}

func waitLines(t *testing.T, path string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if s := strings.TrimSpace(string(b)); s != "" && len(strings.Split(s, "\n")) >= n {
			return strings.Split(s, "\n")
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: want %d lines within 10s, have %q", path, n, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTCPAccessLog(t *testing.T) {
	dir := t.TempDir()
	st := stats.New()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	echo := echoServer(t, "")
	cs := clusterMap{"echo": newCluster(st, "echo", echo), "down": newCluster(st, "down", closed)}

	okPath, downPath := filepath.Join(dir, "ok.log"), filepath.Join(dir, "down.log")
	okCfg := cluster("echo")
	okCfg.AccessLog = withLog(t, okCfg, okPath)
	ok, err := NewTCPProxy(okCfg, cs, st)
	if err != nil {
		t.Fatal(err)
	}
	downCfg := cluster("down")
	downCfg.AccessLog = withLog(t, downCfg, downPath)
	down, err := NewTCPProxy(downCfg, cs, st)
	if err != nil {
		t.Fatal(err)
	}

	okAddr := serveProxy(t, ok)
	c := dial(t, okAddr)
	c.Write([]byte("hello"))
	c.CloseWrite()
	if b, _ := io.ReadAll(c); string(b) != "hello" {
		t.Fatalf("echo %q", b)
	}
	c.Close()
	line := waitLines(t, okPath, 1)[0]
	f := strings.Fields(line)
	// [t] "- - -" 0 - - - "-" 5 5 D - "-" "-" "-" "-" "UPSTREAM" echo UPSTREAM_LOCAL DOWNSTREAM_LOCAL DOWNSTREAM_REMOTE - -
	if len(f) != 24 {
		t.Fatalf("TCP line has %d fields, want 24: %q", len(f), line)
	}
	for i, w := range map[int]string{1: `"-`, 3: `-"`, 4: "0", 5: "-", 8: `"-"`, 9: "5", 10: "5", 17: `"` + echo + `"`, 18: "echo", 20: okAddr, 23: "-"} {
		if f[i] != w {
			t.Errorf("field %d = %q, want %q in %q", i, f[i], w, line)
		}
	}
	if !strings.HasPrefix(f[19], "127.0.0.1:") || f[19] == echo {
		t.Errorf("UPSTREAM_LOCAL_ADDRESS %q, want the proxy's side of the upstream connection", f[19])
	}

	c = dial(t, serveProxy(t, down))
	io.ReadAll(c) // the proxy closes: nothing to connect to
	c.Close()
	line = waitLines(t, downPath, 1)[0]
	if !strings.Contains(line, `"- - -" 0 UF - - "upstream_connect_error:_dial_tcp_`+closed) || !strings.Contains(line, `_connection_refused" 0 0 `) ||
		!strings.Contains(line, `"`+closed+`" down - `) {
		t.Errorf("failed session line %q: want flag UF, cluster down and the connect error as UPSTREAM_TRANSPORT_FAILURE_REASON", line)
	}
}
