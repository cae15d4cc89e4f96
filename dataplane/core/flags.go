package core

import "strings"

// ResponseFlags are Envoy's response flags: why a response was generated
// locally or failed. They appear in the access log (%RESPONSE_FLAGS%) and in
// the x-skiff-response-flags response header on locally generated replies.
type ResponseFlags uint32

const (
	FailedLocalHealthCheck           ResponseFlags = 1 << iota // LH
	NoHealthyUpstream                                          // UH
	UpstreamRequestTimeout                                     // UT
	LocalReset                                                 // LR
	UpstreamRemoteReset                                        // UR
	UpstreamConnectionFailure                                  // UF
	UpstreamConnectionTermination                              // UC
	UpstreamOverflow                                           // UO
	NoRouteFound                                               // NR
	DelayInjected                                              // DI
	FaultInjected                                              // FI
	RateLimited                                                // RL
	UnauthorizedExternalService                                // UAEX
	RateLimitServiceError                                      // RLSE
	DownstreamConnectionTermination                            // DC
	UpstreamRetryLimitExceeded                                 // URX
	StreamIdleTimeout                                          // SI
	InvalidEnvoyRequestHeaders                                 // IH
	DownstreamProtocolError                                    // DPE
	UpstreamMaxStreamDurationReached                           // UMSDR
	ResponseFromCacheFilter                                    // RFCF
	NoFilterConfigFound                                        // NFCF
	DurationTimeout                                            // DT
	UpstreamProtocolError                                      // UPE
	NoClusterFound                                             // NC
	OverloadManager                                            // OM
	DNSResolutionFailed                                        // DF
	DropOverLoad                                               // DO
	DownstreamRemoteReset                                      // DR
	UnconditionalDropOverload                                  // UDO
)

var flagNames = [...]string{
	"LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE",
	"DC", "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR", "UDO",
}

// String renders the flags as Envoy does: short names joined by commas, "-"
// when none is set.
func (f ResponseFlags) String() string {
	if f == 0 {
		return "-"
	}
	var b strings.Builder
	for i, n := range flagNames {
		if f&(1<<i) != 0 {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(n)
		}
	}
	return b.String()
}

// ResponseFlagsHeader names the response header that carries the flags of a
// locally generated or failed response, so a 503 always says why.
const ResponseFlagsHeader = "x-skiff-response-flags"
