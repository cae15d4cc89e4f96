package hcm

import (
	"errors"
	"net/http"
	"sync"
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// probeFilter is a filter as another package would write one: its
// typed_config (a StringValue) names a request header to require; per-route
// config (also a StringValue) "deny" answers 429 locally with flag RL; it
// passes metadata to a later filter and records outcomes in a done hook.
type probeFilter struct {
	header   string
	perRoute PerRouteCache[string]
	parsed   int
	mu       sync.Mutex
	outcomes []int
}

func (f *probeFilter) OnStreamDone(s *Stream) {
	f.mu.Lock()
	f.outcomes = append(f.outcomes, s.Status())
	f.mu.Unlock()
}

const stringValueType = "type.googleapis.com/google.protobuf.StringValue"

func TestFilterExtensionPoint(t *testing.T) {
	probe := &probeFilter{}
	RegisterFilter(stringValueType, func(fc FilterConfig) (Filter, error) {
		var cfg wrapperspb.StringValue
		if err := fc.TypedConfig.UnmarshalTo(&cfg); err != nil {
			return nil, err
		}
		if cfg.GetValue() == "" {
			return nil, errors.New("value: a header name is required")
		}
		probe.header = cfg.GetValue()
		return func(next Handler) Handler {
			return HandlerFunc(func(s *Stream) {
				s.AddDoneHook(probe)
				mode, ok, err := probe.perRoute.Get(s, fc.Name, func(a *anypb.Any) (string, error) {
					probe.parsed++
					var v wrapperspb.StringValue
					err := a.UnmarshalTo(&v)
					return v.GetValue(), err
				})
				if err != nil {
					s.SendLocalReply(500, "bad per-route config", 0)
					return
				}
				if ok && mode == "deny" {
					s.Header().Set("X-Envoy-Ratelimited", "true")
					s.SendLocalReply(http.StatusTooManyRequests, "local_rate_limited", core.RateLimited)
					return
				}
				s.SetMetadata("probe", s.Req.Header.Get(probe.header))
				next.ServeStream(s)
			})
		}, nil
	})
	// A second filter reads the metadata the first one set.
	RegisterFilter("type.googleapis.com/google.protobuf.BoolValue", func(fc FilterConfig) (Filter, error) {
		return func(next Handler) Handler {
			return HandlerFunc(func(s *Stream) {
				if v, _ := s.Metadata("probe").(string); v != "" {
					s.Req.Header.Set("X-Custom", "from-metadata:"+v)
				}
				next.ServeStream(s)
			})
		}, nil
	})
	e := newEnv(t)
	e.upstream("backend", echo("backend"))
	deny := prefixRoute("/deny", "backend")
	deny.TypedPerFilterConfig = map[string]*anypb.Any{"acme.probe": mustAny(t, wrapperspb.String("deny"))}
	probeCfg := &hcmv3.HttpFilter{Name: "acme.probe", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, wrapperspb.String("X-Tenant"))}}
	reader := &hcmv3.HttpFilter{Name: "acme.reader", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, wrapperspb.Bool(true))}}
	e.start(hcmConfig(t, simpleRoutes(deny, prefixRoute("/", "backend")), probeCfg, reader))

	resp, _ := e.get("/ok", "X-Tenant", "blue")
	if resp.StatusCode != 200 || resp.Header.Get("Seen-X-Custom") != "from-metadata:blue" {
		t.Errorf("pass-through: %d, upstream saw x-custom %q", resp.StatusCode, resp.Header.Get("Seen-X-Custom"))
	}
	for i := 0; i < 3; i++ {
		resp, body := e.get("/deny")
		if resp.StatusCode != 429 || body != "local_rate_limited" || resp.Header.Get("X-Skiff-Response-Flags") != "RL" || resp.Header.Get("X-Envoy-Ratelimited") != "true" {
			t.Errorf("per-route deny: %d %q %v", resp.StatusCode, body, resp.Header)
		}
	}
	if probe.parsed != 1 {
		t.Errorf("per-route config parsed %d times, want once", probe.parsed)
	}
	probe.mu.Lock()
	got := append([]int(nil), probe.outcomes...)
	probe.mu.Unlock()
	if len(got) != 4 || got[0] != 200 || got[3] != 429 {
		t.Errorf("done hook saw %v", got)
	}

	bad := &hcmv3.HttpFilter{Name: "acme.probe", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, wrapperspb.String(""))}}
	_, err := New(hcmConfig(t, simpleRoutes(prefixRoute("/", "backend")), bad), Deps{Clusters: e.clusters})
	if err == nil || err.Error() != `http_connection_manager "inbound_0.0.0.0_80": http_filters[0] "acme.probe": value: a header name is required` {
		t.Errorf("factory error: %v", err)
	}
}
