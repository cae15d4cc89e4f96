package inspect

import (
	"context"
	"net/http"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// ProxyConfig is what one proxy holds, read from its admin API, for other
// commands that reason about it (skiff why): its active listeners, route
// configurations, clusters and cluster load assignments (/config_dump?include_eds),
// and its hosts with their health (/clusters?format=json).
type ProxyConfig struct {
	Pod       PodRef
	Admin     string // the admin address it was read from
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	Hosts     *adminv3.Clusters
}

// ReadProxyConfig reads pod's proxy through env.Resolver. Errors say which
// pod or server failed and what to check.
func ReadProxyConfig(ctx context.Context, env Env, pod PodRef) (*ProxyConfig, error) {
	if env.Client == nil {
		env.Client = &http.Client{Timeout: 10 * time.Second}
	}
	addr, err := adminAddr(env, pod)
	if err != nil {
		return nil, err
	}
	g := proxyAdmin(env, pod, addr)
	b, err := g.get(ctx, "/config_dump?include_eds")
	if err != nil {
		return nil, err
	}
	d, err := parseConfigDump(b, g.what)
	if err != nil {
		return nil, err
	}
	pc := &ProxyConfig{Pod: pod, Admin: addr, Listeners: activeListeners(d)}
	for _, r := range d.routes {
		if rc, ok := r.msg.(*routev3.RouteConfiguration); ok {
			pc.Routes = append(pc.Routes, rc)
		}
	}
	for _, r := range d.clusters {
		if c, ok := r.msg.(*clusterv3.Cluster); ok && r.state == "ACTIVE" {
			pc.Clusters = append(pc.Clusters, c)
		}
	}
	for _, r := range d.endpoints {
		if e, ok := r.msg.(*endpointv3.ClusterLoadAssignment); ok {
			pc.Endpoints = append(pc.Endpoints, e)
		}
	}
	if b, err = g.get(ctx, "/clusters?format=json"); err != nil {
		return nil, err
	}
	pc.Hosts = &adminv3.Clusters{}
	if err := jsonIn.Unmarshal(b, pc.Hosts); err != nil {
		return nil, &statusError{msg: "/clusters?format=json from " + g.what + ": " + err.Error()}
	}
	return pc, nil
}

// ReadConfigz reads skiffd's /debug/configz: every config object with its
// source position.
func ReadConfigz(ctx context.Context, env Env) ([]byte, error) {
	if env.Client == nil {
		env.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if env.MonitoringAddr == "" {
		env.MonitoringAddr = DefaultMonitoringAddr
	}
	return skiffd(env).get(ctx, "/debug/configz")
}

// HostHealth is a host's health as proxy-config endpoints prints it
// (HEALTHY, UNHEALTHY, DRAINING, ...): a host EDS said nothing about is
// HEALTHY.
func HostHealth(h *adminv3.HostStatus) string { return hostHealth(h) }
