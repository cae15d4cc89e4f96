package hcm

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// FaultTypeURL is the typed_config type of envoy.filters.http.fault.
const FaultTypeURL = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"

const bodyFaultAbort = "fault filter abort"

func init() { RegisterFilter(FaultTypeURL, newFaultFilter) }

// faultConfig is a compiled HTTPFault.
type faultConfig struct {
	delay       time.Duration
	headerDelay bool
	delayPct    fraction
	hasDelay    bool

	abortHTTP   int
	abortGRPC   int // -1 when not set
	headerAbort bool
	abortPct    fraction
	hasAbort    bool
	abortBody   string

	upstreamCluster string
	maxActive       int64 // 0 = unlimited
}

// fraction is a FractionalPercent: numerator out of denominator.
type fraction struct{ num, den uint64 }

func newFraction(fp *typev3.FractionalPercent) fraction {
	f := fraction{den: 100}
	if fp == nil {
		return f
	}
	switch fp.GetDenominator() {
	case typev3.FractionalPercent_TEN_THOUSAND:
		f.den = 10000
	case typev3.FractionalPercent_MILLION:
		f.den = 1000000
	}
	f.num = min(uint64(fp.GetNumerator()), f.den)
	return f
}

func (f fraction) sample() bool {
	if f.num >= f.den {
		return true
	}
	return f.num > 0 && rand.Uint64N(f.den) < f.num
}

func parseFault(a *anypb.Any) (*faultConfig, error) {
	pb := &faultv3.HTTPFault{}
	if err := a.UnmarshalTo(pb); err != nil {
		return nil, fmt.Errorf("typed_config: %w", err)
	}
	return compileFault(pb)
}

func compileFault(pb *faultv3.HTTPFault) (*faultConfig, error) {
	fc := &faultConfig{abortGRPC: -1, upstreamCluster: pb.GetUpstreamCluster()}
	if len(pb.GetHeaders()) > 0 {
		return nil, errors.New("headers: fault header matching is not supported; match on the route instead")
	}
	if len(pb.GetDownstreamNodes()) > 0 {
		return nil, errors.New("downstream_nodes: is not supported")
	}
	if pb.GetResponseRateLimit() != nil {
		return nil, errors.New("response_rate_limit: is not supported")
	}
	if d := pb.GetDelay(); d != nil {
		fc.hasDelay = true
		fc.delayPct = newFraction(d.GetPercentage())
		switch {
		case d.GetFixedDelay() != nil:
			fc.delay = d.GetFixedDelay().AsDuration()
			if fc.delay < 0 {
				return nil, errors.New("delay.fixed_delay: must not be negative")
			}
		case d.GetHeaderDelay() != nil:
			fc.headerDelay = true
		default:
			return nil, errors.New("delay: one of fixed_delay or header_delay is required")
		}
	}
	if ab := pb.GetAbort(); ab != nil {
		fc.hasAbort = true
		fc.abortPct = newFraction(ab.GetPercentage())
		fc.abortBody = ab.GetResponseBody()
		switch et := ab.GetErrorType().(type) {
		case *faultv3.FaultAbort_HeaderAbort_:
			fc.headerAbort = true
		case *faultv3.FaultAbort_GrpcStatus:
			fc.abortGRPC = int(et.GrpcStatus)
		case *faultv3.FaultAbort_HttpStatus:
			if s := et.HttpStatus; s < 200 || s > 599 {
				return nil, fmt.Errorf("abort.http_status: %d is not in [200, 600)", s)
			}
			fc.abortHTTP = int(et.HttpStatus)
		default:
			return nil, errors.New("abort: one of http_status, grpc_status or header_abort is required")
		}
	}
	if m := pb.GetMaxActiveFaults(); m != nil {
		fc.maxActive = int64(m.GetValue())
		if fc.maxActive == 0 {
			fc.maxActive = -1 // zero active faults allowed: never inject
		}
	}
	return fc, nil
}

type faultFilter struct {
	name                  string
	cfg                   *faultConfig
	perRoute              PerRouteCache[*faultConfig]
	delays, aborts, ovflw *stats.Counter
	activeG               *stats.Gauge
	active                atomic.Int64
}

func newFaultFilter(fc FilterConfig) (Filter, error) {
	cfg := &faultConfig{abortGRPC: -1}
	if fc.TypedConfig != nil {
		var err error
		if cfg, err = parseFault(fc.TypedConfig); err != nil {
			return nil, err
		}
	}
	sc := fc.Stats.Scope("http."+fc.StatPrefix+".fault", "http.fault", stats.Tag{Name: "envoy_http_conn_manager_prefix", Value: fc.StatPrefix})
	f := &faultFilter{
		name: fc.Name, cfg: cfg,
		delays: sc.Counter("delays_injected"), aborts: sc.Counter("aborts_injected"),
		ovflw: sc.Counter("faults_overflow"), activeG: sc.Gauge("active_faults"),
	}
	return func(next Handler) Handler {
		return HandlerFunc(func(s *Stream) { f.serve(s, next) })
	}, nil
}

func (f *faultFilter) serve(s *Stream, next Handler) {
	cfg := f.cfg
	if pr, ok, err := f.perRoute.Get(s, f.name, parseFault); ok && err == nil {
		cfg = pr
	}
	if !cfg.hasDelay && !cfg.hasAbort {
		next.ServeStream(s)
		return
	}
	if cfg.upstreamCluster != "" && (s.Route == nil || s.Route.Action == nil || s.Route.Action.ClusterName(s.Req, s.Cluster) != cfg.upstreamCluster) {
		next.ServeStream(s)
		return
	}
	h := s.Req.Header
	delay, doDelay := cfg.delayFor(h)
	abortHTTP, abortGRPC, doAbort := cfg.abortFor(h)
	if !doDelay && !doAbort {
		next.ServeStream(s)
		return
	}
	if cfg.maxActive != 0 && (cfg.maxActive < 0 || f.active.Load() >= cfg.maxActive) {
		f.ovflw.Inc()
		next.ServeStream(s)
		return
	}
	f.active.Add(1)
	f.activeG.Inc()
	defer func() {
		f.active.Add(-1)
		f.activeG.Dec()
	}()
	if doDelay && delay > 0 {
		f.delays.Inc()
		s.Flags |= core.DelayInjected
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-s.Req.Context().Done():
			t.Stop()
			s.Flags |= core.DownstreamConnectionTermination
			panic(http.ErrAbortHandler)
		}
	}
	if doAbort {
		f.aborts.Inc()
		body := cfg.abortBody
		if body == "" {
			body = bodyFaultAbort
		}
		if abortGRPC >= 0 {
			s.localReply(http.StatusServiceUnavailable, abortGRPC, body, core.FaultInjected)
		} else {
			s.localReply(abortHTTP, -1, body, core.FaultInjected)
		}
		return
	}
	next.ServeStream(s)
}

// delayFor decides the delay of one request: the fixed delay, or the
// x-envoy-fault-delay-request header's milliseconds when header_delay is
// configured; x-envoy-fault-delay-request-percentage may lower the fraction.
func (fc *faultConfig) delayFor(h http.Header) (time.Duration, bool) {
	if !fc.hasDelay {
		return 0, false
	}
	d := fc.delay
	if fc.headerDelay {
		v := h[hdrFaultDelay]
		if len(v) == 0 {
			return 0, false
		}
		ms, err := strconv.ParseUint(strings.TrimSpace(v[0]), 10, 32)
		if err != nil {
			return 0, false
		}
		d = time.Duration(ms) * time.Millisecond
	}
	return d, headerFraction(fc.delayPct, h[hdrFaultDelayPct], fc.headerDelay).sample()
}

// abortFor decides the abort of one request: an HTTP status, or a gRPC
// status (>= 0), from config or from the x-envoy-fault-abort-* headers.
func (fc *faultConfig) abortFor(h http.Header) (int, int, bool) {
	if !fc.hasAbort {
		return 0, -1, false
	}
	code, grpc := fc.abortHTTP, fc.abortGRPC
	if fc.headerAbort {
		if v := h[hdrFaultAbort]; len(v) > 0 {
			n, err := strconv.Atoi(strings.TrimSpace(v[0]))
			if err != nil || n < 200 || n > 599 {
				return 0, -1, false
			}
			code, grpc = n, -1
		} else if v := h[hdrFaultAbortGRPC]; len(v) > 0 {
			n, err := strconv.Atoi(strings.TrimSpace(v[0]))
			if err != nil || n < 0 {
				return 0, -1, false
			}
			grpc = n
		} else {
			return 0, -1, false
		}
	}
	return code, grpc, headerFraction(fc.abortPct, h[hdrFaultAbortPct], fc.headerAbort).sample()
}

// headerFraction applies a percentage header (a numerator over the
// configured denominator, never above the configured numerator).
func headerFraction(f fraction, v []string, allowed bool) fraction {
	if !allowed || len(v) == 0 {
		return f
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v[0]), 10, 32)
	if err != nil {
		return f
	}
	f.num = min(n, f.num)
	return f
}
