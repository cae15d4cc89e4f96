package upstream

import (
	"context"
	"net"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

// runDNS resolves a STRICT_DNS or LOGICAL_DNS cluster's endpoints every
// dns_refresh_rate. The cluster is warm after the first round, resolved or
// not; a failed lookup keeps the addresses of the last good one.
func (c *cluster) runDNS(es *endpointSet) {
	defer c.wg.Done()
	last := make([][]hostSpec, len(es.hosts))
	for {
		var hosts []hostSpec
		for i, spec := range es.hosts {
			if got, err := c.resolve(spec); err == nil {
				last[i] = got
			} else {
				c.m.o.Logger.Warn("dns resolution failed", "cluster", c.cfg.name, "host", spec.host, "error", err)
			}
			hosts = append(hosts, last[i]...)
		}
		c.setHosts(&endpointSet{hosts: hosts, overprovisioning: es.overprovisioning})
		c.warm.Store(true)
		select {
		case <-c.stop:
			return
		case <-time.After(c.cfg.dnsRefresh):
		}
	}
}

// resolve turns one configured endpoint into hosts, one per address the
// lookup family selects (only the first for LOGICAL_DNS).
func (c *cluster) resolve(spec hostSpec) ([]hostSpec, error) {
	var ips []net.IP
	if ip := net.ParseIP(spec.host); ip != nil {
		ips = []net.IP{ip}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r := c.m.o.Resolver
		if r == nil {
			r = net.DefaultResolver
		}
		network := "ip"
		switch c.cfg.dnsFamily {
		case clusterv3.Cluster_V4_ONLY:
			network = "ip4"
		case clusterv3.Cluster_V6_ONLY:
			network = "ip6"
		}
		all, err := r.LookupIP(ctx, network, spec.host)
		if err != nil {
			return nil, err
		}
		ips = pickFamily(all, c.cfg.dnsFamily)
	}
	if c.cfg.discovery == clusterv3.Cluster_LOGICAL_DNS && len(ips) > 1 {
		ips = ips[:1]
	}
	out := make([]hostSpec, 0, len(ips))
	for _, ip := range ips {
		s := spec
		s.host = ip.String()
		s.addr = net.JoinHostPort(s.host, strconv.Itoa(int(spec.port)))
		if s.hostname == "" {
			s.hostname = spec.host
		}
		out = append(out, s)
	}
	return out, nil
}

// pickFamily applies dns_lookup_family: AUTO prefers IPv6, V4_PREFERRED
// prefers IPv4, ALL keeps both.
func pickFamily(ips []net.IP, fam clusterv3.Cluster_DnsLookupFamily) []net.IP {
	var v4, v6 []net.IP
	for _, ip := range ips {
		if ip.To4() != nil {
			v4 = append(v4, ip)
		} else {
			v6 = append(v6, ip)
		}
	}
	switch fam {
	case clusterv3.Cluster_V4_ONLY:
		return v4
	case clusterv3.Cluster_V6_ONLY:
		return v6
	case clusterv3.Cluster_V4_PREFERRED:
		if len(v4) > 0 {
			return v4
		}
		return v6
	case clusterv3.Cluster_ALL:
		return append(v4, v6...)
	default:
		if len(v6) > 0 {
			return v6
		}
		return v4
	}
}
