package accesslog

import (
	"testing"
	"time"
)

// istioTextFormat is Istio's default proxy access log format; it must
// compile unchanged.
const istioTextFormat = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%
`

func TestFormatParsing(t *testing.T) {
	if _, err := parseFormat(istioTextFormat); err != nil {
		t.Fatalf("Istio's format: %v", err)
	}
	for _, tc := range []struct{ in, err string }{
		{"%REQ()%", `command "REQ()": a header name is required`},
		{"%START_TIME(%Q)%", `command "START_TIME(%Q)": time format: %Q is not supported`},
		{"%REQ(X%", `command "%REQ(X%": missing ')'`},
		{"%NOPE%", `unknown command "NOPE"`},
		{"abc %DURATION", `unterminated command "%DURATION"`},
		{"%REQ(X):zz%", `command "REQ(X):zz": bad length "zz"`},
	} {
		if _, err := parseFormat(tc.in); err == nil || err.Error() != tc.err {
			t.Errorf("%q: %v, want %s", tc.in, err, tc.err)
		}
	}
	p, err := parseFormat("100%% %REQ(USER-AGENT):3%")
	if err != nil || len(p) != 4 || p[1].lit != "%" || p[3].maxLen != 3 || p[3].hdr != "User-Agent" {
		t.Errorf("parts %+v %v", p, err)
	}
	p, err = parseFormat("%START_TIME(%Y-%m-%dT%H:%M:%E3S%z %s %6f %F %T)%")
	if err != nil || len(p) != 1 {
		t.Fatalf("START_TIME with format: %+v %v", p, err)
	}
	ts := time.Date(2026, 3, 4, 5, 6, 7, 891234567, time.UTC)
	if got := string(appendTime(nil, ts, p[0].time)); got != "2026-03-04T05:06:07.891+0000 1772600767 891234 2026-03-04 05:06:07" {
		t.Errorf("START_TIME rendered %q", got)
	}
}
