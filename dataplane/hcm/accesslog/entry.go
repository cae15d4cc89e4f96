// Package accesslog owns Envoy's access logging as the HTTP connection
// manager and tcp_proxy use it: the substitution format (text and JSON with
// typed values), the access log filters Istio emits (status code, response
// flag, duration, header, and/or, and the CEL expression filter of the
// Telemetry API) and the file writers, which never block a request.
package accesslog

import (
	"net/http"
	"time"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// Entry is what a finished HTTP stream or TCP session tells its loggers.
// The caller fills it on its own stack; loggers only read it while Log runs.
type Entry struct {
	Start    time.Time
	Duration time.Duration
	// Req is nil for TCP sessions.
	Req *http.Request
	// RespHeader holds the response headers; trailers are under
	// http.TrailerPrefix+name, as the router sets them.
	RespHeader http.Header
	// Status is the HTTP response code, 0 for TCP.
	Status        int
	Flags         core.ResponseFlags
	BytesReceived int64
	BytesSent     int64
	Conn          *core.ConnInfo
	// Upstream facts; empty when no upstream was reached.
	UpstreamHost            string
	UpstreamCluster         string
	UpstreamLocalAddress    string
	UpstreamTransportFailed string
	RouteName               string
	Attempts                int
	// ResponseCodeDetails overrides what is derived from Status and Flags.
	ResponseCodeDetails string
	// TerminationDetails says why the proxy closed the connection ("-" none).
	TerminationDetails string
	// TraceID is the active trace's id, "" without tracing.
	TraceID string
	// UpstreamServiceTime is the upstream's time to first byte, 0 if none.
	UpstreamServiceTime time.Duration
	// ResponseStarted is when response headers went out (zero if never).
	ResponseStarted time.Time
}

// CodeDetails is %RESPONSE_CODE_DETAILS% as Envoy spells it.
func (e *Entry) CodeDetails() string {
	if e.ResponseCodeDetails != "" || e.Req == nil {
		return e.ResponseCodeDetails // TCP sessions have none, as in Envoy
	}
	f := e.Flags
	switch {
	case f&core.NoRouteFound != 0:
		return "route_not_found"
	case f&core.NoClusterFound != 0:
		return "cluster_not_found"
	case f&core.NoHealthyUpstream != 0:
		return "no_healthy_upstream"
	case f&core.UpstreamOverflow != 0:
		return "upstream_reset_before_response_started{overflow}"
	case f&core.UpstreamRequestTimeout != 0:
		return "response_timeout"
	case f&core.UpstreamConnectionFailure != 0:
		return "upstream_reset_before_response_started{connection_failure}"
	case f&core.UpstreamRemoteReset != 0:
		return "upstream_reset_before_response_started{remote_refused_stream_reset}"
	case f&core.UpstreamConnectionTermination != 0:
		return "upstream_reset_before_response_started{connection_termination}"
	case f&core.FaultInjected != 0:
		return "fault_filter_abort"
	case f&core.RateLimited != 0:
		return "local_rate_limited"
	case f&core.UnauthorizedExternalService != 0:
		return "ext_authz_denied"
	case f&core.DownstreamConnectionTermination != 0:
		return "downstream_remote_disconnect"
	}
	if e.UpstreamHost != "" {
		return "via_upstream"
	}
	if e.Status != 0 {
		return "direct_response"
	}
	return ""
}
