package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"sort"
	"strconv"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/skiff-mesh/skiff/dataplane/admin"
	"github.com/skiff-mesh/skiff/dataplane/agent"
	"github.com/skiff-mesh/skiff/dataplane/xdstypes"
)

// startAdmin serves the admin API on the bootstrap's admin address (and
// /stats/prometheus on PrometheusAddr when set). The returned func stops
// them.
func (p *Proxy) startAdmin(errc chan<- error) (func(), error) {
	p.readyMu.Lock()
	defer p.readyMu.Unlock()
	p.admin = admin.New(admin.Options{
		Store: p.stats, Clusters: p.clusters, Listeners: p.listeners,
		Config: admin.ConfigSourceFunc(p.configState), Control: p,
		LogLevel: p.o.LogLevel, Version: Version, Node: p.node, StartTime: p.started,
		CommandLine: &adminv3.CommandLineOptions{ConfigPath: p.o.ConfigPath,
			DrainTime: durationpb.New(p.o.DrainTime), ServiceNode: p.o.ServiceNode, ServiceCluster: p.o.ServiceCluster},
	})
	select {
	case <-p.ready:
		p.admin.SetInitState(admin.Initialized)
	default:
		if p.xds != nil || p.agent != nil {
			p.admin.SetInitState(admin.Initializing)
		}
	}
	var stops []func()
	stop := func() {
		for _, s := range stops {
			s()
		}
	}
	if ln := p.adminLn; ln != nil {
		// Envoy's admin endpoints, plus Go's profiler for the performance
		// work (the admin address is loopback-only, as in Istio).
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.Handle("/", p.admin.Handler())
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("admin: %w", err)
			}
		}()
		stops = append(stops, func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			srv.Shutdown(ctx)
		})
	}
	if p.o.PrometheusAddr != "" {
		ln, err := net.Listen("tcp", p.o.PrometheusAddr)
		if err != nil {
			stop()
			return func() {}, fmt.Errorf("--prometheus-addr %s: %w", p.o.PrometheusAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/stats/prometheus", admin.PrometheusHandler(p.stats))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("prometheus: %w", err)
			}
		}()
		stops = append(stops, func() { srv.Close() })
	}
	return stop, nil
}

// listenAdmin binds the bootstrap's admin address, so that a port in use
// fails start-up with a clear error before anything serves.
func (p *Proxy) listenAdmin() error {
	sa := p.boot.GetAdmin().GetAddress().GetSocketAddress()
	if sa == nil {
		return nil
	}
	addr := net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("admin.address %s: %w (another proxy running? change admin.address)", addr, err)
	}
	p.adminLn = ln
	return nil
}

// AdminAddr is the admin API's bound address (nil without one).
func (p *Proxy) AdminAddr() net.Addr {
	if p.adminLn == nil {
		return nil
	}
	return p.adminLn.Addr()
}

// DrainListeners implements admin.Controller.
func (p *Proxy) DrainListeners(inboundOnly, graceful bool) {
	p.listeners.DrainListeners(inboundOnly, graceful)
}

// SetHealthCheckFailed implements admin.Controller; /ready already follows
// the admin server's own flag.
func (p *Proxy) SetHealthCheckFailed(bool) {}

// configState assembles /config_dump's input from the applied resources.
func (p *Proxy) configState() *admin.ConfigState {
	st := p.cfg.Snapshot()
	cs := &admin.ConfigState{
		Bootstrap: st.Bootstrap, BootstrapLoaded: p.started,
		ClustersVersion: st.Versions[xdstypes.Cluster], ListenersVersion: st.Versions[xdstypes.Listener],
	}
	warmingClusters := append(p.clusters.Warming(), st.WarmingClusters...)
	add := func(dst *[]admin.Resource, typeURL string, warming func(string) bool) {
		for _, static := range []bool{true, false} {
			set := st.Dynamic[typeURL]
			if static {
				set = st.Static[typeURL]
			}
			names := make([]string, 0, len(set))
			for n := range set {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				r := set[n]
				state := admin.Active
				if !static && warming != nil && warming(n) {
					state = admin.Warming
				}
				*dst = append(*dst, admin.Resource{Name: n, Static: static, State: state,
					Version: r.Version, LastUpdated: r.LastUpdated, Config: r.Message})
			}
		}
	}
	add(&cs.Clusters, xdstypes.Cluster, func(n string) bool { return slices.Contains(warmingClusters, n) })
	add(&cs.Endpoints, xdstypes.ClusterLoadAssignment, nil)
	add(&cs.Listeners, xdstypes.Listener, nil)
	for n, l := range st.Warming {
		cs.Listeners = append(cs.Listeners, admin.Resource{Name: n, State: admin.Warming,
			Version: st.Versions[xdstypes.Listener], Config: l})
	}
	add(&cs.Routes, xdstypes.RouteConfiguration, nil)
	add(&cs.Secrets, xdstypes.Secret, nil)
	p.addAgentSecrets(cs)
	return cs
}

// addAgentSecrets shows the identity agent's secrets as Envoy shows what
// it got from pilot-agent's SDS: dynamic active secrets (the private key
// is redacted by the admin server).
func (p *Proxy) addAgentSecrets(cs *admin.ConfigState) {
	if p.agent == nil {
		return
	}
	for _, n := range []string{agent.WorkloadSecret, agent.RootSecret} {
		v, at, ok := p.agent.SecretVersion(n)
		if !ok {
			cs.Secrets = append(cs.Secrets, admin.Resource{Name: n, State: admin.Warming})
			continue
		}
		cs.Secrets = append(cs.Secrets, admin.Resource{Name: n, State: admin.Active, Version: v, LastUpdated: at, Config: p.agent.Secret(n)})
	}
}
