package route

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/skiff-mesh/skiff/dataplane/core"
)

// RetryOn is the set of retry_on conditions (HTTP and gRPC).
type RetryOn uint32

const (
	Retry5xx RetryOn = 1 << iota
	RetryGatewayError
	RetryReset
	RetryConnectFailure
	RetryRetriable4xx
	RetryRefusedStream
	RetryRetriableStatusCodes
	RetryRetriableHeaders
	RetryEnvoyRateLimited
	RetryResetBeforeRequest
	RetryGRPCCancelled
	RetryGRPCDeadlineExceeded
	RetryGRPCInternal
	RetryGRPCResourceExhausted
	RetryGRPCUnavailable
)

var retryOnNames = map[string]RetryOn{
	"5xx":                    Retry5xx,
	"gateway-error":          RetryGatewayError,
	"reset":                  RetryReset,
	"reset-before-request":   RetryResetBeforeRequest,
	"connect-failure":        RetryConnectFailure,
	"retriable-4xx":          RetryRetriable4xx,
	"refused-stream":         RetryRefusedStream,
	"retriable-status-codes": RetryRetriableStatusCodes,
	"retriable-headers":      RetryRetriableHeaders,
	"envoy-ratelimited":      RetryEnvoyRateLimited,
	"cancelled":              RetryGRPCCancelled,
	"deadline-exceeded":      RetryGRPCDeadlineExceeded,
	"internal":               RetryGRPCInternal,
	"resource-exhausted":     RetryGRPCResourceExhausted,
	"unavailable":            RetryGRPCUnavailable,
}

// ParseRetryOn parses a comma-separated retry_on list (as in the route
// config, x-envoy-retry-on or x-envoy-retry-grpc-on). Unknown names are
// returned so configuration can reject them; headers ignore them, as Envoy
// does.
func ParseRetryOn(s string) (RetryOn, []string) {
	var on RetryOn
	var unknown []string
	for s != "" {
		var name string
		name, s, _ = strings.Cut(s, ",")
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if bit, ok := retryOnNames[name]; ok {
			on |= bit
		} else {
			unknown = append(unknown, name)
		}
	}
	return on, unknown
}

// RetryPolicy is a compiled route (or virtual host) retry_policy.
type RetryPolicy struct {
	On                               RetryOn
	NumRetries                       uint32 // default 1 when the policy is present without num_retries
	PerTryTimeout, PerTryIdleTimeout time.Duration
	RetriableStatusCodes             []int
	// PreviousHosts is the envoy.retry_host_predicates.previous_hosts
	// predicate: a retry avoids hosts already tried.
	PreviousHosts            bool
	HostSelectionMaxAttempts int
	BackoffBase, BackoffMax  time.Duration // defaults 25ms and 10×base
	retriableHeaders         []headerMatcher
}

const defaultBackoffBase = 25 * time.Millisecond

func compileRetry(p *routev3.RetryPolicy) (*RetryPolicy, error) {
	rp := &RetryPolicy{NumRetries: 1, BackoffBase: defaultBackoffBase, HostSelectionMaxAttempts: 1}
	on, unknown := ParseRetryOn(p.GetRetryOn())
	if len(unknown) > 0 {
		return nil, fmt.Errorf("retry_on: unknown condition %q", unknown[0])
	}
	rp.On = on
	if p.GetNumRetries() != nil {
		rp.NumRetries = p.GetNumRetries().GetValue()
	}
	var err error
	if p.GetPerTryTimeout() != nil {
		if rp.PerTryTimeout, err = duration(p.GetPerTryTimeout(), "per_try_timeout"); err != nil {
			return nil, err
		}
	}
	if p.GetPerTryIdleTimeout() != nil {
		if rp.PerTryIdleTimeout, err = duration(p.GetPerTryIdleTimeout(), "per_try_idle_timeout"); err != nil {
			return nil, err
		}
	}
	for _, c := range p.GetRetriableStatusCodes() {
		if c < 100 || c > 599 {
			return nil, fmt.Errorf("retriable_status_codes: %d is not an HTTP status", c)
		}
		rp.RetriableStatusCodes = append(rp.RetriableStatusCodes, int(c))
	}
	for i, pr := range p.GetRetryHostPredicate() {
		switch pr.GetName() {
		case "envoy.retry_host_predicates.previous_hosts":
			rp.PreviousHosts = true
		default:
			return nil, fmt.Errorf("retry_host_predicate[%d].name: %q is not supported (only envoy.retry_host_predicates.previous_hosts)", i, pr.GetName())
		}
	}
	if n := p.GetHostSelectionRetryMaxAttempts(); n > 0 {
		rp.HostSelectionMaxAttempts = int(n)
	}
	if b := p.GetRetryBackOff(); b != nil {
		if rp.BackoffBase, err = duration(b.GetBaseInterval(), "retry_back_off.base_interval"); err != nil {
			return nil, err
		}
		if rp.BackoffBase <= 0 {
			return nil, fmt.Errorf("retry_back_off.base_interval: must be greater than 0")
		}
		if b.GetMaxInterval() != nil {
			if rp.BackoffMax, err = duration(b.GetMaxInterval(), "retry_back_off.max_interval"); err != nil {
				return nil, err
			}
			if rp.BackoffMax < rp.BackoffBase {
				return nil, fmt.Errorf("retry_back_off.max_interval: %s is less than base_interval %s", rp.BackoffMax, rp.BackoffBase)
			}
		}
	}
	if rp.BackoffMax == 0 {
		rp.BackoffMax = 10 * rp.BackoffBase
	}
	for i, h := range p.GetRetriableHeaders() {
		hm, err := compileHeaderMatcher(h)
		if err != nil {
			return nil, fmt.Errorf("retriable_headers[%d].%w", i, err)
		}
		rp.retriableHeaders = append(rp.retriableHeaders, hm)
	}
	if len(p.GetRetriableRequestHeaders()) > 0 {
		return nil, fmt.Errorf("retriable_request_headers: is not supported")
	}
	return rp, nil
}

// WithRequestHeaders returns the policy in effect for one request: the
// route's policy (or none) merged with x-envoy-retry-on,
// x-envoy-retry-grpc-on (added to the route's conditions),
// x-envoy-max-retries (replaces num_retries),
// x-envoy-retriable-status-codes and
// x-envoy-upstream-rq-per-try-timeout-ms. It returns p itself, without
// copying, when none of those headers is present. The caller decides
// whether the downstream is trusted to send them.
func WithRequestHeaders(p *RetryPolicy, h http.Header) *RetryPolicy {
	on := h["X-Envoy-Retry-On"]
	grpcOn := h["X-Envoy-Retry-Grpc-On"]
	maxR := h["X-Envoy-Max-Retries"]
	codes := h["X-Envoy-Retriable-Status-Codes"]
	perTry := h["X-Envoy-Upstream-Rq-Per-Try-Timeout-Ms"]
	if len(on) == 0 && len(grpcOn) == 0 && len(maxR) == 0 && len(codes) == 0 && len(perTry) == 0 {
		return p
	}
	var np RetryPolicy
	if p != nil {
		np = *p
	} else {
		np = RetryPolicy{NumRetries: 1, BackoffBase: defaultBackoffBase, BackoffMax: 10 * defaultBackoffBase, HostSelectionMaxAttempts: 1}
	}
	for _, v := range on {
		bits, _ := ParseRetryOn(v)
		np.On |= bits
	}
	for _, v := range grpcOn {
		bits, _ := ParseRetryOn(v)
		np.On |= bits & (RetryGRPCCancelled | RetryGRPCDeadlineExceeded | RetryGRPCInternal | RetryGRPCResourceExhausted | RetryGRPCUnavailable)
	}
	if len(maxR) > 0 {
		if n, err := strconv.ParseUint(strings.TrimSpace(maxR[0]), 10, 32); err == nil {
			np.NumRetries = uint32(n)
		}
	}
	if len(codes) > 0 {
		np.RetriableStatusCodes = append([]int(nil), np.RetriableStatusCodes...)
		for _, v := range codes {
			for _, c := range strings.Split(v, ",") {
				if n, err := strconv.Atoi(strings.TrimSpace(c)); err == nil && n >= 100 && n <= 599 {
					np.RetriableStatusCodes = append(np.RetriableStatusCodes, n)
				}
			}
		}
	}
	if len(perTry) > 0 {
		if ms, err := strconv.ParseUint(strings.TrimSpace(perTry[0]), 10, 32); err == nil {
			np.PerTryTimeout = time.Duration(ms) * time.Millisecond
		}
	}
	if np.On == 0 {
		return p
	}
	return &np
}

// ShouldRetryStatus reports whether an upstream response with status code
// and headers hdr (grpc-status is read from them, including trailers-only
// responses) is retriable under the policy.
func (p *RetryPolicy) ShouldRetryStatus(code int, hdr http.Header) bool {
	if p == nil {
		return false
	}
	on := p.On
	switch {
	case on&Retry5xx != 0 && code >= 500 && code <= 599:
		return true
	case on&RetryGatewayError != 0 && (code == 502 || code == 503 || code == 504):
		return true
	case on&RetryRetriable4xx != 0 && code == 409:
		return true
	case on&RetryEnvoyRateLimited != 0 && hdr.Get("X-Envoy-Ratelimited") != "":
		return true
	}
	if on&RetryRetriableStatusCodes != 0 {
		for _, c := range p.RetriableStatusCodes {
			if c == code {
				return true
			}
		}
	}
	if on&RetryRetriableHeaders != 0 {
		for i := range p.retriableHeaders {
			if p.retriableHeaders[i].matchHeader(hdr) {
				return true
			}
		}
	}
	if on&(RetryGRPCCancelled|RetryGRPCDeadlineExceeded|RetryGRPCInternal|RetryGRPCResourceExhausted|RetryGRPCUnavailable) != 0 {
		if vs := hdr["Grpc-Status"]; len(vs) > 0 {
			switch vs[0] {
			case "1":
				return on&RetryGRPCCancelled != 0
			case "4":
				return on&RetryGRPCDeadlineExceeded != 0
			case "13":
				return on&RetryGRPCInternal != 0
			case "8":
				return on&RetryGRPCResourceExhausted != 0
			case "14":
				return on&RetryGRPCUnavailable != 0
			}
		}
	}
	return false
}

// ShouldRetryError reports whether an attempt that failed without a
// response is retriable. An overflowing pool is never retried; 5xx,
// gateway-error and reset cover every failure to get a response (connect
// failure, reset, per-try timeout), as in Envoy.
func (p *RetryPolicy) ShouldRetryError(kind core.UpstreamErrorKind) bool {
	if p == nil {
		return false
	}
	on := p.On
	switch kind {
	case core.Overflow:
		return false
	case core.ConnectFailure:
		return on&(RetryConnectFailure|Retry5xx|RetryGatewayError|RetryReset|RetryResetBeforeRequest) != 0
	case core.RefusedStream:
		return on&(RetryRefusedStream|Retry5xx|RetryGatewayError|RetryReset) != 0
	case core.Reset, core.Timeout:
		return on&(Retry5xx|RetryGatewayError|RetryReset) != 0
	}
	return false
}

// Backoff is Envoy's fully jittered exponential back-off before retry
// number attempt (1 for the first retry): min(rnd mod (2^attempt - 1) ×
// base, max), so later retries cluster at max as in Envoy.
func (p *RetryPolicy) Backoff(attempt int, rnd uint64) time.Duration {
	base, maxB := p.BackoffBase, p.BackoffMax
	if base <= 0 {
		base = defaultBackoffBase
	}
	if maxB <= 0 {
		maxB = 10 * base
	}
	attempt = min(max(attempt, 1), 30)
	mult := (uint64(1) << attempt) - 1
	ceil := mult * uint64(base)
	if ceil/mult != uint64(base) || ceil > 1<<62 {
		return maxB
	}
	return min(time.Duration(rnd%ceil), maxB)
}
