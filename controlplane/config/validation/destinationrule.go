package validation

import (
	"math/big"
	"net/netip"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

func init() { register(config.DestinationRule, (*collector).destinationRule) }

func (v *collector) destinationRule(dr *networking.DestinationRule) {
	v.host("spec.host", dr.Host)
	v.trafficPolicy("spec.trafficPolicy", dr.TrafficPolicy, true)
	names := map[string]int{}
	for i, s := range dr.Subsets {
		p := idx("spec.subsets", i)
		if s == nil {
			v.add(p, "is empty; give the subset a name and labels")
			continue
		}
		switch {
		case s.Name == "":
			v.add(field(p, "name"), "is empty; every subset needs a name")
		default:
			if msg := dnsLabel(s.Name); msg != "" {
				v.add(field(p, "name"), "subset name %q is invalid; %s", s.Name, msg)
			}
			if first, dup := names[s.Name]; dup {
				v.add(field(p, "name"), "subset %q is already defined at spec.subsets[%d]; subset names must be unique", s.Name, first)
			} else {
				names[s.Name] = i
			}
		}
		v.labels(field(p, "labels"), s.Labels)
		v.trafficPolicy(field(p, "trafficPolicy"), s.TrafficPolicy, false)
	}
	v.exportTo("spec.exportTo", dr.ExportTo, false)
	if dr.WorkloadSelector != nil {
		for i, e := range dr.ExportTo {
			if e != "." && e != v.namespace {
				v.add(idx("spec.exportTo", i), "a DestinationRule with workloadSelector applies in its own namespace only; export it to \".\" or remove exportTo")
			}
		}
	}
	v.typeSelector("spec.workloadSelector", dr.WorkloadSelector)
}

func (v *collector) trafficPolicy(path string, tp *networking.TrafficPolicy, portLevel bool) {
	if tp == nil {
		return
	}
	if tp.LoadBalancer == nil && tp.ConnectionPool == nil && tp.OutlierDetection == nil && tp.Tls == nil &&
		len(tp.PortLevelSettings) == 0 && tp.Tunnel == nil && tp.ProxyProtocol == nil && tp.RetryBudget == nil {
		v.add(path, "is empty; set at least one field or remove it")
		return
	}
	v.loadBalancer(field(path, "loadBalancer"), tp.LoadBalancer)
	v.connectionPool(field(path, "connectionPool"), tp.ConnectionPool)
	v.outlierDetection(field(path, "outlierDetection"), tp.OutlierDetection)
	v.clientTLS(field(path, "tls"), tp.Tls)
	if tp.Tunnel != nil && tp.ProxyProtocol != nil {
		v.add(field(path, "proxyProtocol"), "cannot be combined with tunnel; keep one")
	}
	if t := tp.Tunnel; t != nil {
		tpath := field(path, "tunnel")
		if t.Protocol != "" && t.Protocol != "CONNECT" && t.Protocol != "POST" {
			v.add(field(tpath, "protocol"), "%q is not a tunnel protocol; use CONNECT or POST", t.Protocol)
		}
		_, ipErr := netip.ParseAddr(t.TargetHost)
		switch {
		case t.TargetHost == "":
			v.add(field(tpath, "targetHost"), "is empty; give the host the tunnel connects to")
		case ipErr != nil && (hostProblem(t.TargetHost) != "" || strings.Contains(t.TargetHost, "*")):
			v.add(field(tpath, "targetHost"), "%q is neither a DNS name nor an IP address", t.TargetHost)
		}
		v.port(field(tpath, "targetPort"), t.TargetPort)
	}
	if rb := tp.RetryBudget; rb != nil && rb.Percent != nil {
		v.percent(field(path, "retryBudget.percent"), rb.Percent.Value)
	}
	if !portLevel && len(tp.PortLevelSettings) > 0 {
		v.add(field(path, "portLevelSettings"), "is allowed only in the top-level trafficPolicy, not a subset's")
		return
	}
	ports := map[uint32]int{}
	for i, pl := range tp.PortLevelSettings {
		p := idx(field(path, "portLevelSettings"), i)
		if pl == nil {
			continue
		}
		if pl.Port == nil {
			v.add(field(p, "port"), "is required; name the port these settings apply to")
		} else {
			v.port(field(p, "port.number"), pl.Port.Number)
			if first, dup := ports[pl.Port.Number]; dup {
				v.add(field(p, "port.number"), "port %d already has settings at %s; merge them", pl.Port.Number, idx(field(path, "portLevelSettings"), first))
			} else {
				ports[pl.Port.Number] = i
			}
		}
		if pl.LoadBalancer == nil && pl.ConnectionPool == nil && pl.OutlierDetection == nil && pl.Tls == nil {
			v.add(p, "sets nothing for its port; set loadBalancer, connectionPool, outlierDetection or tls")
		}
		v.loadBalancer(field(p, "loadBalancer"), pl.LoadBalancer)
		v.connectionPool(field(p, "connectionPool"), pl.ConnectionPool)
		v.outlierDetection(field(p, "outlierDetection"), pl.OutlierDetection)
		v.clientTLS(field(p, "tls"), pl.Tls)
	}
}

func (v *collector) loadBalancer(path string, lb *networking.LoadBalancerSettings) {
	if lb == nil {
		return
	}
	if ch, ok := lb.LbPolicy.(*networking.LoadBalancerSettings_ConsistentHash); ok {
		v.consistentHash(field(path, "consistentHash"), ch.ConsistentHash)
	}
	if l := lb.LocalityLbSetting; l != nil {
		v.localityLB(field(path, "localityLbSetting"), l)
	}
	v.duration(field(path, "warmupDurationSecs"), lb.WarmupDurationSecs, false)
	if w := lb.Warmup; w != nil {
		wp := field(path, "warmup")
		if lb.WarmupDurationSecs != nil {
			v.add(wp, "cannot be combined with warmupDurationSecs; keep warmup")
		}
		if w.Duration == nil {
			v.add(field(wp, "duration"), "is required; give how long new endpoints ramp up")
		}
		v.duration(field(wp, "duration"), w.Duration, false)
		if w.MinimumPercent != nil {
			v.percent(field(wp, "minimumPercent"), w.MinimumPercent.Value)
		}
		if w.Aggression != nil && w.Aggression.Value < 1 {
			v.add(field(wp, "aggression"), "%v is below 1; use 1 for linear ramp-up or more for a steeper one", w.Aggression.Value)
		}
	}
}

// Envoy's caps on a ring hash's and a Maglev table's size.
const (
	maxRingSize = 1 << 23
	maxMaglev   = 5000011
)

func (v *collector) consistentHash(path string, ch *networking.LoadBalancerSettings_ConsistentHashLB) {
	if ch == nil {
		v.add(path, "is empty; set a hash key such as httpHeaderName or useSourceIp")
		return
	}
	switch k := ch.HashKey.(type) {
	case nil:
		v.warn(path, "has no hash key, so every request hashes alike; set httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName")
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName:
		v.headerName(field(path, "httpHeaderName"), k.HttpHeaderName)
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpCookie:
		if k.HttpCookie == nil || k.HttpCookie.Name == "" {
			v.add(field(path, "httpCookie.name"), "is empty; name the cookie to hash on")
		} else if k.HttpCookie.Ttl != nil {
			v.duration(field(path, "httpCookie.ttl"), k.HttpCookie.Ttl, true)
		}
	case *networking.LoadBalancerSettings_ConsistentHashLB_UseSourceIp:
		if !k.UseSourceIp {
			v.warn(field(path, "useSourceIp"), "is false, which hashes on nothing; set it true or choose another key")
		}
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpQueryParameterName:
		if k.HttpQueryParameterName == "" {
			v.add(field(path, "httpQueryParameterName"), "is empty; name the query parameter to hash on")
		}
	}
	if ch.MinimumRingSize > maxRingSize {
		v.add(field(path, "minimumRingSize"), "%d exceeds Envoy's limit of %d", ch.MinimumRingSize, maxRingSize)
	}
	if ch.MinimumRingSize != 0 && ch.HashAlgorithm == nil {
		v.warn(field(path, "minimumRingSize"), "is deprecated; use ringHash.minimumRingSize")
	}
	switch a := ch.HashAlgorithm.(type) {
	case *networking.LoadBalancerSettings_ConsistentHashLB_RingHash_:
		if ch.MinimumRingSize != 0 {
			v.add(field(path, "minimumRingSize"), "cannot be combined with ringHash; set ringHash.minimumRingSize instead")
		}
		if a.RingHash != nil && a.RingHash.MinimumRingSize > maxRingSize {
			v.add(field(path, "ringHash.minimumRingSize"), "%d exceeds Envoy's limit of %d", a.RingHash.MinimumRingSize, maxRingSize)
		}
	case *networking.LoadBalancerSettings_ConsistentHashLB_Maglev:
		if ch.MinimumRingSize != 0 {
			v.add(field(path, "minimumRingSize"), "applies to ring hash only and cannot be combined with maglev")
		}
		switch size := a.Maglev.GetTableSize(); {
		case size == 0:
			v.add(field(path, "maglev.tableSize"), "is required; give a prime such as 65537")
		case size >= maxMaglev:
			v.add(field(path, "maglev.tableSize"), "%d is too large; Envoy takes primes below %d", size, maxMaglev)
		case !big.NewInt(0).SetUint64(size).ProbablyPrime(20):
			v.add(field(path, "maglev.tableSize"), "%d is not prime; Maglev needs a prime table size such as 65537", size)
		}
	}
}

// locality checks "region[/zone[/subzone]]" where "*" may stand for the
// last segment only.
func localityProblem(l string) string {
	if l == "" {
		return "is empty; give region, region/zone or region/zone/subzone"
	}
	parts := strings.Split(l, "/")
	if len(parts) > 3 {
		return "\"" + l + "\" has more than three segments; use region/zone/subzone"
	}
	for i, p := range parts {
		if p == "" {
			return "\"" + l + "\" has an empty segment"
		}
		if strings.Contains(p, "*") && (p != "*" || i != len(parts)-1) {
			return "\"" + l + "\": \"*\" may only be the whole last segment"
		}
	}
	return ""
}

func (v *collector) localityLB(path string, l *networking.LocalityLoadBalancerSetting) {
	if len(l.Distribute) > 0 && len(l.Failover) > 0 {
		v.add(path, "sets both distribute and failover; keep one")
	}
	for i, d := range l.Distribute {
		p := idx(field(path, "distribute"), i)
		if d == nil {
			continue
		}
		if msg := localityProblem(d.From); msg != "" {
			v.add(field(p, "from"), "%s", msg)
		}
		if len(d.To) == 0 {
			v.add(field(p, "to"), "is empty; give the localities to send traffic to with their weights")
			continue
		}
		sum := uint32(0)
		for _, to := range sortedKeys(d.To) {
			if msg := localityProblem(to); msg != "" {
				v.add(key(field(p, "to"), to), "%s", msg)
			}
			sum += d.To[to]
		}
		if sum != 100 {
			v.add(field(p, "to"), "weights sum to %d; the weights of a distribute entry must add up to 100", sum)
		}
	}
	for i, f := range l.Failover {
		p := idx(field(path, "failover"), i)
		if f == nil {
			continue
		}
		for _, side := range []struct{ name, val string }{{"from", f.From}, {"to", f.To}} {
			switch {
			case side.val == "":
				v.add(field(p, side.name), "is empty; give a region")
			case strings.Contains(side.val, "/") || strings.Contains(side.val, "*"):
				v.add(field(p, side.name), "%q is not a region; failover works between regions only", side.val)
			}
		}
		if f.From != "" && f.From == f.To {
			v.add(p, "fails over region %q to itself; from and to must differ", f.From)
		}
	}
	for i, fp := range l.FailoverPriority {
		if fp == "" {
			v.add(idx(field(path, "failoverPriority"), i), "is empty; give a label key")
		}
	}
}

func (v *collector) connectionPool(path string, cp *networking.ConnectionPoolSettings) {
	if cp == nil {
		return
	}
	if cp.Tcp == nil && cp.Http == nil {
		v.add(path, "is empty; set tcp or http")
		return
	}
	if t := cp.Tcp; t != nil {
		tp := field(path, "tcp")
		v.nonNegative(field(tp, "maxConnections"), t.MaxConnections)
		v.duration(field(tp, "connectTimeout"), t.ConnectTimeout, false)
		v.duration(field(tp, "maxConnectionDuration"), t.MaxConnectionDuration, false)
		v.duration(field(tp, "idleTimeout"), t.IdleTimeout, true)
		if ka := t.TcpKeepalive; ka != nil {
			v.duration(field(tp, "tcpKeepalive.time"), ka.Time, false)
			v.duration(field(tp, "tcpKeepalive.interval"), ka.Interval, false)
		}
	}
	if h := cp.Http; h != nil {
		hp := field(path, "http")
		v.nonNegative(field(hp, "http1MaxPendingRequests"), h.Http1MaxPendingRequests)
		v.nonNegative(field(hp, "http2MaxRequests"), h.Http2MaxRequests)
		v.nonNegative(field(hp, "maxRequestsPerConnection"), h.MaxRequestsPerConnection)
		v.nonNegative(field(hp, "maxRetries"), h.MaxRetries)
		v.nonNegative(field(hp, "maxConcurrentStreams"), h.MaxConcurrentStreams)
		v.duration(field(hp, "idleTimeout"), h.IdleTimeout, false)
		if h.H2UpgradePolicy == networking.ConnectionPoolSettings_HTTPSettings_UPGRADE && h.UseClientProtocol {
			v.add(field(hp, "useClientProtocol"), "cannot be true with h2UpgradePolicy UPGRADE; keep one")
		}
		if ka := h.Http2KeepAlive; ka != nil {
			v.duration(field(hp, "http2KeepAlive.interval"), ka.Interval, false)
			v.duration(field(hp, "http2KeepAlive.timeout"), ka.Timeout, false)
		}
	}
}

func (v *collector) nonNegative(path string, n int32) {
	if n < 0 {
		v.add(path, "%d is negative; use 0 for the default or a positive limit", n)
	}
}

func (v *collector) outlierDetection(path string, od *networking.OutlierDetection) {
	if od == nil {
		return
	}
	if od.ConsecutiveErrors != 0 {
		v.warn(field(path, "consecutiveErrors"), "is deprecated; use consecutive5xxErrors or consecutiveGatewayErrors")
	}
	v.nonNegative(field(path, "consecutiveErrors"), od.ConsecutiveErrors)
	v.duration(field(path, "interval"), od.Interval, false)
	v.duration(field(path, "baseEjectionTime"), od.BaseEjectionTime, false)
	if od.MaxEjectionPercent < 0 || od.MaxEjectionPercent > 100 {
		v.add(field(path, "maxEjectionPercent"), "%d is out of range; use 0-100", od.MaxEjectionPercent)
	}
	if od.MinHealthPercent < 0 || od.MinHealthPercent > 100 {
		v.add(field(path, "minHealthPercent"), "%d is out of range; use 0-100", od.MinHealthPercent)
	}
	if od.ConsecutiveLocalOriginFailures != nil && !od.SplitExternalLocalOriginErrors {
		v.add(field(path, "consecutiveLocalOriginFailures"), "takes effect only with splitExternalLocalOriginErrors: true; set it or remove this field")
	}
	for i, c := range od.OutlierDetectionHttpErrorCodes {
		if c < 100 || c > 599 {
			v.add(idx(field(path, "outlierDetectionHttpErrorCodes"), i), "status %d is out of range; use 100-599", c)
		}
	}
}

func (v *collector) clientTLS(path string, t *networking.ClientTLSSettings) {
	if t == nil {
		return
	}
	files := t.ClientCertificate != "" || t.PrivateKey != "" || t.CaCertificates != ""
	switch t.Mode {
	case networking.ClientTLSSettings_MUTUAL:
		if t.CredentialName != "" {
			if files {
				v.add(path, "sets credentialName and certificate files; use one or the other")
			}
			break
		}
		if t.ClientCertificate == "" {
			v.add(field(path, "clientCertificate"), "is required for MUTUAL TLS unless credentialName is set")
		}
		if t.PrivateKey == "" {
			v.add(field(path, "privateKey"), "is required for MUTUAL TLS unless credentialName is set")
		}
	case networking.ClientTLSSettings_SIMPLE:
		if t.CredentialName != "" && files {
			v.add(path, "sets credentialName and certificate files; use one or the other")
		}
	case networking.ClientTLSSettings_DISABLE, networking.ClientTLSSettings_ISTIO_MUTUAL:
		if files || t.CredentialName != "" {
			v.add(path, "mode %s uses no certificates of yours; remove clientCertificate, privateKey, caCertificates and credentialName", t.Mode)
		}
	}
	for i, san := range t.SubjectAltNames {
		if san == "" {
			v.add(idx(field(path, "subjectAltNames"), i), "is empty; give a name or remove it")
		}
	}
}

// typeSelector checks an istio.io/api type selector (matchLabels) as
// Istio does: no empty keys and no wildcards.
func (v *collector) typeSelector(path string, s *typev1beta1.WorkloadSelector) {
	if s == nil {
		return
	}
	if len(s.MatchLabels) == 0 {
		v.warn(field(path, "matchLabels"), "is empty, so the selector selects every workload in the namespace; give labels or remove the selector")
	}
	v.selectorLabels(field(path, "matchLabels"), s.MatchLabels)
}

func (v *collector) selectorLabels(path string, l map[string]string) {
	for _, k := range sortedKeys(l) {
		if k == "" {
			v.add(path, "has an empty key; selector keys must be label names")
			continue
		}
		if strings.Contains(k, "*") || strings.Contains(l[k], "*") {
			v.add(key(path, k), "wildcards are not supported in selectors; give exact label values")
			continue
		}
	}
	v.labels(path, l)
}
