package extauthz

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"

	netextauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/ext_authz/v3"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/dataplane/listener"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// NetworkTypeURL is the typed_config type of envoy.filters.network.ext_authz.
const NetworkTypeURL = "type.googleapis.com/envoy.extensions.filters.network.ext_authz.v3.ExtAuthz"

func init() { listener.RegisterNetworkFilter(NetworkTypeURL, newNetworkFilter) }

// networkFilter checks each connection once, before the rest of the chain
// sees it. Envoy checks on the connection's first bytes; checking at
// accept is the same for client-first protocols and keeps a refused client
// from ever reaching the upstream.
type networkFilter struct {
	svc      *grpcService
	failOpen bool
	// enabledMeta (filter_enabled_metadata): only connections whose
	// metadata matches are checked (Istio's CUSTOM gate on the network
	// RBAC filter's shadow result); the others pass unchecked.
	enabledMeta *metadataMatcher
	log         *slog.Logger

	total, ok, denied, errored, failOpenN, disabled, cxClosed *stats.Counter
	active                                                    *stats.Gauge
}

func newNetworkFilter(nc listener.NetworkFilterConfig) (listener.NetworkFilter, error) {
	pb := &netextauthzv3.ExtAuthz{}
	if nc.TypedConfig != nil {
		if err := nc.TypedConfig.UnmarshalTo(pb); err != nil {
			return nil, fmt.Errorf("typed_config: %w", err)
		}
	}
	f, err := compileNetwork(pb, nc.Clusters)
	if err != nil {
		return nil, err
	}
	f.log = nc.Logger
	if f.log == nil {
		f.log = slog.Default()
	}
	st := nc.Stats
	if st == nil {
		st = stats.New()
	}
	// Envoy: "ext_authz.<stat_prefix>."; Istio's prefix "tcp." already
	// ends in the dot.
	prefix := "ext_authz." + strings.TrimSuffix(pb.GetStatPrefix(), ".")
	sc := st.Scope(prefix, "ext_authz", stats.Tag{Name: "stat_prefix", Value: strings.TrimSuffix(pb.GetStatPrefix(), ".")})
	f.total, f.ok, f.denied, f.errored = sc.Counter("total"), sc.Counter("ok"), sc.Counter("denied"), sc.Counter("error")
	f.failOpenN, f.disabled, f.cxClosed = sc.Counter("failure_mode_allowed"), sc.Counter("disabled"), sc.Counter("cx_closed")
	f.active = sc.Gauge("active")
	return func(next core.ConnHandler) core.ConnHandler {
		return &networkHandler{f: f, next: next}
	}, nil
}

func compileNetwork(pb *netextauthzv3.ExtAuthz, clusters core.ClusterSet) (*networkFilter, error) {
	if pb.GetStatPrefix() == "" {
		return nil, errors.New("stat_prefix: is required (Istio uses \"tcp.\")")
	}
	if v := pb.GetTransportApiVersion(); v != 0 && v.String() != "V3" {
		return nil, fmt.Errorf("transport_api_version: %s is not supported; use V3", v)
	}
	if pb.GetShadowMode() {
		return nil, errors.New("shadow_mode: is not supported by skiff-proxy; remove it")
	}
	if pb.GetGrpcService() == nil {
		return nil, errors.New("grpc_service: is required")
	}
	g, err := compileGRPC(pb.GetGrpcService(), clusters)
	if err != nil {
		return nil, fmt.Errorf("grpc_service.%w", err)
	}
	g.includePeerCert = pb.GetIncludePeerCertificate()
	g.includeTLSSession = pb.GetIncludeTlsSession()
	f := &networkFilter{svc: g, failOpen: pb.GetFailureModeAllow()}
	if m := pb.GetFilterEnabledMetadata(); m != nil {
		mm, err := compileMetadata(m)
		if err != nil {
			return nil, fmt.Errorf("filter_enabled_metadata.%w", err)
		}
		f.enabledMeta = mm
	}
	return f, nil
}

type networkHandler struct {
	f    *networkFilter
	next core.ConnHandler
}

func (h *networkHandler) ServeConn(c net.Conn, info *core.ConnInfo) {
	f := h.f
	if m := f.enabledMeta; m != nil && !m.match(info.Metadata(m.filter)) {
		f.disabled.Inc()
		h.next.ServeConn(c, info)
		return
	}
	f.active.Inc()
	r := f.svc.check(context.Background(), &checkInput{conn: info})
	f.active.Dec()
	f.total.Inc()
	switch r.verdict {
	case verdictOK:
		f.ok.Inc()
	case verdictDenied:
		f.denied.Inc()
		f.cxClosed.Inc()
		f.log.Debug("ext_authz: connection denied", "listener", info.ListenerName, "remote", info.RemoteAddr)
		c.Close()
		return
	default:
		f.errored.Inc()
		if !f.failOpen {
			f.cxClosed.Inc()
			f.log.Debug("ext_authz: authorizer failed; closing the connection", "listener", info.ListenerName, "remote", info.RemoteAddr, "error", r.err)
			c.Close()
			return
		}
		f.failOpenN.Inc()
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
