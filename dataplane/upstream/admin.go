package upstream

import (
	"fmt"
	"io"
	"net"
	"strconv"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// hostView is a consistent read of one host for the admin page.
type hostView struct {
	h     *host
	spec  hostSpec
	flags uint32
}

func (c *cluster) hostViews() []hostView {
	var hs []*host
	if c.od != nil {
		hs = c.od.list()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.od == nil {
		hs = c.hosts
	}
	out := make([]hostView, len(hs))
	for i, h := range hs {
		out[i] = hostView{h: h, spec: h.spec, flags: h.flags.Load()}
	}
	return out
}

// healthFlags renders Envoy's /clusters health_flags.
func (v hostView) healthFlags() string {
	s := ""
	if v.flags&flagFailedActiveHC != 0 {
		s += "/failed_active_hc"
	}
	if v.flags&flagFailedOutlier != 0 {
		s += "/failed_outlier_check"
	}
	if !edsUsable(v.spec.edsHealth) {
		s += "/failed_eds_health"
	}
	if v.flags&flagPendingActiveHC != 0 {
		s += "/pending_active_hc"
	}
	if v.spec.edsHealth == corev3.HealthStatus_DRAINING {
		s += "/eds_status_draining"
	}
	if s == "" {
		return "healthy"
	}
	return s
}

type hostStat struct {
	name  string
	gauge bool
	v     uint64
}

func (v hostView) stats() []hostStat {
	h := v.h
	return []hostStat{
		{"cx_active", true, uint64(max(0, h.cxActive.Load()))},
		{"cx_connect_fail", false, h.cxConnectFail.Load()},
		{"cx_total", false, h.cxTotal.Load()},
		{"rq_active", true, uint64(max(0, h.rqActive.Load()))},
		{"rq_error", false, h.rqError.Load()},
		{"rq_success", false, h.rqSuccess.Load()},
		{"rq_timeout", false, h.rqTimeout.Load()},
		{"rq_total", false, h.rqTotal.Load()},
	}
}

// WriteClusters writes Envoy's admin /clusters output, as text or, with
// jsonFormat, as the envoy.admin.v3.Clusters JSON of ?format=json.
func (m *Manager) WriteClusters(w io.Writer, jsonFormat bool) {
	names := m.Names()
	cur := *m.clusters.Load()
	if jsonFormat {
		out := &adminv3.Clusters{}
		for _, n := range names {
			out.ClusterStatuses = append(out.ClusterStatuses, cur[n].adminStatus())
		}
		b, _ := protojson.MarshalOptions{UseProtoNames: true, Indent: "  "}.Marshal(out)
		w.Write(b)
		io.WriteString(w, "\n")
		return
	}
	for _, n := range names {
		c := cur[n]
		cfg := c.cfg
		fmt.Fprintf(w, "%s::observability_name::%s\n", n, n)
		for _, p := range []string{"default_priority", "high_priority"} {
			mc, mp, mr, mrt := cfg.maxConnections, cfg.maxPending, cfg.maxRequests, cfg.maxRetries
			if p == "high_priority" {
				mc, mp, mr, mrt = 1024, 1024, 1024, 3
			}
			fmt.Fprintf(w, "%s::%s::max_connections::%d\n%s::%s::max_pending_requests::%d\n%s::%s::max_requests::%d\n%s::%s::max_retries::%d\n",
				n, p, mc, n, p, mp, n, p, mr, n, p, mrt)
		}
		fmt.Fprintf(w, "%s::added_via_api::true\n", n)
		if cfg.edsServiceName != "" {
			fmt.Fprintf(w, "%s::eds_service_name::%s\n", n, cfg.edsServiceName)
		}
		for _, v := range c.hostViews() {
			pre := n + "::" + v.h.addr + "::"
			for _, s := range v.stats() {
				fmt.Fprintf(w, "%s%s::%d\n", pre, s.name, s.v)
			}
			loc := v.spec.locality
			fmt.Fprintf(w, "%shostname::%s\n%shealth_flags::%s\n%sweight::%d\n%sregion::%s\n%szone::%s\n%ssub_zone::%s\n%scanary::false\n%spriority::%d\n%ssuccess_rate::-1\n%slocal_origin_success_rate::-1\n",
				pre, v.spec.hostname, pre, v.healthFlags(), pre, v.spec.weight, pre, loc.GetRegion(), pre, loc.GetZone(), pre, loc.GetSubZone(), pre, pre, v.spec.priority, pre, pre)
		}
	}
}

func (c *cluster) adminStatus() *adminv3.ClusterStatus {
	cs := &adminv3.ClusterStatus{Name: c.cfg.name, ObservabilityName: c.cfg.name, AddedViaApi: true, EdsServiceName: c.cfg.edsServiceName}
	for _, v := range c.hostViews() {
		ip, port, _ := net.SplitHostPort(v.h.addr)
		p, _ := strconv.Atoi(port)
		hs := &adminv3.HostStatus{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)}}}},
			HealthStatus: &adminv3.HostHealthStatus{
				FailedActiveHealthCheck: v.flags&flagFailedActiveHC != 0,
				FailedOutlierCheck:      v.flags&flagFailedOutlier != 0,
				PendingActiveHc:         v.flags&flagPendingActiveHC != 0,
				EdsHealthStatus:         v.spec.edsHealth,
			},
			Weight: v.spec.weight, Hostname: v.spec.hostname, Priority: v.spec.priority, Locality: v.spec.locality,
			SuccessRate: &typev3.Percent{Value: -1},
		}
		for _, s := range v.stats() {
			t := adminv3.SimpleMetric_COUNTER
			if s.gauge {
				t = adminv3.SimpleMetric_GAUGE
			}
			hs.Stats = append(hs.Stats, &adminv3.SimpleMetric{Name: s.name, Type: t, Value: s.v})
		}
		cs.HostStatuses = append(cs.HostStatuses, hs)
	}
	return cs
}
