package rbac

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/dataplane/listener"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// NetworkTypeURL is the typed_config type of envoy.filters.network.rbac.
const NetworkTypeURL = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"

// NetworkFilterName is the network filter's name in Envoy, and the
// connection metadata namespace its shadow rules write to.
const NetworkFilterName = "envoy.filters.network.rbac"

func init() { listener.RegisterNetworkFilter(NetworkTypeURL, newNetworkFilter) }

// networkFilter decides once per connection, before the rest of the chain
// sees it. Envoy decides on the first byte from the client; deciding at
// accept is the same for client-first protocols and, for server-first
// ones, keeps a refused client from ever reaching the upstream.
type networkFilter struct {
	engine, shadow *engine
	// shadowPolicyKey and shadowResultKey name the connection metadata
	// the shadow engine writes under NetworkFilterName, as Envoy does.
	shadowPolicyKey, shadowResultKey string
	rules, sh                        counters
	delayDeny                        time.Duration
	log                              *slog.Logger
}

func newNetworkFilter(nc listener.NetworkFilterConfig) (listener.NetworkFilter, error) {
	pb := &netrbacv3.RBAC{}
	if nc.TypedConfig != nil {
		if err := nc.TypedConfig.UnmarshalTo(pb); err != nil {
			return nil, fmt.Errorf("typed_config: %w", err)
		}
	}
	f, err := compileNetwork(pb)
	if err != nil {
		return nil, err
	}
	st := nc.Stats
	if st == nil {
		st = stats.New()
	}
	f.log = nc.Logger
	if f.log == nil {
		f.log = slog.Default()
	}
	// Envoy joins stat_prefix and "rbac." with a dot unless the prefix
	// already ends in one (Istio's is "tcp.").
	prefix := strings.TrimSuffix(pb.GetStatPrefix(), ".") + ".rbac"
	sc := st.Scope(prefix, prefix)
	f.rules = newCounters(sc, "", "allowed", "denied", f.engine, false)
	f.sh = newCounters(sc, pb.GetShadowRulesStatPrefix(), "shadow_allowed", "shadow_denied", f.shadow, false)
	return func(next core.ConnHandler) core.ConnHandler {
		return &networkHandler{f: f, next: next}
	}, nil
}

func compileNetwork(pb *netrbacv3.RBAC) (*networkFilter, error) {
	if pb.GetStatPrefix() == "" {
		return nil, errors.New("stat_prefix: is required (Istio uses \"tcp.\")")
	}
	if pb.GetMatcher() != nil {
		return nil, errors.New("matcher: the RBAC matcher tree is not supported by skiff-proxy; use rules")
	}
	if pb.GetShadowMatcher() != nil {
		return nil, errors.New("shadow_matcher: the RBAC matcher tree is not supported by skiff-proxy; use shadow_rules")
	}
	f := &networkFilter{
		shadowPolicyKey: pb.GetShadowRulesStatPrefix() + shadowPolicyIDKey,
		shadowResultKey: pb.GetShadowRulesStatPrefix() + shadowEngineResultKey,
	}
	o := compileOptions{network: true}
	var err error
	if pb.GetRules() != nil {
		if f.engine, err = compileEngine(pb.GetRules(), o); err != nil {
			return nil, fmt.Errorf("rules.%w", err)
		}
	}
	if pb.GetShadowRules() != nil {
		if f.shadow, err = compileEngine(pb.GetShadowRules(), o); err != nil {
			return nil, fmt.Errorf("shadow_rules.%w", err)
		}
	}
	if d := pb.GetDelayDeny(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return nil, errors.New("delay_deny: must be a non-negative duration")
		}
		f.delayDeny = d.AsDuration()
	}
	return f, nil
}

// networkHandler is the filter in front of the chain's other filters.
type networkHandler struct {
	f    *networkFilter
	next core.ConnHandler
}

func (h *networkHandler) ServeConn(c net.Conn, info *core.ConnInfo) {
	f := h.f
	a := attrs{conn: info}
	if f.shadow != nil {
		ok, matched := f.shadow.decide(&a)
		f.sh.record(ok, -1)
		md := map[string]any{f.shadowResultKey: "denied"}
		if ok {
			md[f.shadowResultKey] = "allowed"
		}
		if matched >= 0 {
			md[f.shadowPolicyKey] = f.shadow.policies[matched].name
		}
		info.SetMetadata(NetworkFilterName, md)
	}
	if f.engine != nil {
		ok, matched := f.engine.decide(&a)
		f.rules.record(ok, -1)
		if !ok {
			policy := "none"
			if matched >= 0 {
				policy = f.engine.policies[matched].name
			}
			f.log.Debug("rbac: connection denied", "listener", info.ListenerName, "remote", info.RemoteAddr, "policy", policy)
			if f.delayDeny > 0 {
				time.Sleep(f.delayDeny)
			}
			c.Close()
			return
		}
	}
	h.next.ServeConn(c, info)
}

// Drain passes a listener drain on to the chain behind the filter.
func (h *networkHandler) Drain() {
	if d, ok := h.next.(core.Drainer); ok {
		d.Drain()
	}
}

// Close releases the chain behind the filter when its generation retires.
func (h *networkHandler) Close() error {
	if c, ok := h.next.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
