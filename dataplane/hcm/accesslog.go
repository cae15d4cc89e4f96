package hcm

import (
	"time"

	"github.com/skiff-mesh/skiff/dataplane/hcm/accesslog"
)

// logEntry fills e with what the finished stream s tells its access logs
// (and tracing, which reads the same facts).
func (s *Stream) logEntry(e *accesslog.Entry) {
	*e = accesslog.Entry{
		Start: s.Start, Duration: time.Since(s.Start), Req: s.Req, RespHeader: s.w.Header(),
		Status: s.status, Flags: s.Flags, BytesReceived: s.BytesReceived(), BytesSent: s.bytesSent,
		Conn: s.Conn, UpstreamHost: s.UpstreamHost, UpstreamCluster: s.UpstreamCluster,
		UpstreamTransportFailed: s.upstreamFailure, Attempts: s.attempts,
		ResponseCodeDetails: s.codeDetails, UpstreamServiceTime: s.upstreamDur,
		ResponseStarted: s.respStart,
	}
	if s.Route != nil {
		e.RouteName = s.Route.Name
	}
	if s.span != nil {
		e.TraceID = s.span.TraceID()
	}
}

// SetResponseCodeDetails records why a filter answered locally, for
// %RESPONSE_CODE_DETAILS% (Envoy's spelling, e.g.
// "rbac_access_denied_matched_policy[none]").
func (s *Stream) SetResponseCodeDetails(d string) { s.codeDetails = d }

func firstValue(h map[string][]string, k string) string {
	if v := h[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}
