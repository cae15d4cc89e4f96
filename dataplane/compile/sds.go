package compile

import (
	"slices"
	"sort"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// SDSCluster is the cluster Istio's generated SDS references point at
// (pilot-agent's local SDS server). skiff-proxy answers them in process and
// needs no such cluster in the bootstrap.
const SDSCluster = "sds-grpc"

// SecretProvider serves SDS secrets in process: skiff-proxy's identity
// agent with Istio's "default" and "ROOTCA".
type SecretProvider interface {
	// Provides reports whether name is the provider's, present or not yet.
	Provides(name string) bool
	// Secret returns the current secret, nil until there is one.
	Secret(name string) *tlsv3.Secret
}

const (
	downstreamTLSType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
	upstreamTLSType   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
)

// sdsRefs lists the SDS secret configs of a CommonTlsContext.
func sdsRefs(ctc *tlsv3.CommonTlsContext) []*tlsv3.SdsSecretConfig {
	refs := slices.Clone(ctc.GetTlsCertificateSdsSecretConfigs())
	if v := ctc.GetValidationContextSdsSecretConfig(); v != nil {
		refs = append(refs, v)
	}
	if v := ctc.GetCombinedValidationContext().GetValidationContextSdsSecretConfig(); v != nil {
		refs = append(refs, v)
	}
	return refs
}

// transportSDSRefs lists the SDS references of a TLS transport socket;
// other sockets and undecodable configs (Validate reports those) have none.
func transportSDSRefs(ts *corev3.TransportSocket) []*tlsv3.SdsSecretConfig {
	tc := ts.GetTypedConfig()
	switch tc.GetTypeUrl() {
	case downstreamTLSType:
		var d tlsv3.DownstreamTlsContext
		if tc.UnmarshalTo(&d) == nil {
			return sdsRefs(d.GetCommonTlsContext())
		}
	case upstreamTLSType:
		var u tlsv3.UpstreamTlsContext
		if tc.UnmarshalTo(&u) == nil {
			return sdsRefs(u.GetCommonTlsContext())
		}
	}
	return nil
}

// ListenerSDSRefs lists the SDS secrets a listener's filter chains use.
func ListenerSDSRefs(l *listenerv3.Listener) []*tlsv3.SdsSecretConfig {
	var refs []*tlsv3.SdsSecretConfig
	for _, fc := range l.GetFilterChains() {
		refs = append(refs, transportSDSRefs(fc.GetTransportSocket())...)
	}
	if dfc := l.GetDefaultFilterChain(); dfc != nil {
		refs = append(refs, transportSDSRefs(dfc.GetTransportSocket())...)
	}
	return refs
}

// ClusterSDSRefs lists the SDS secrets a cluster's transport sockets use.
func ClusterSDSRefs(c *clusterv3.Cluster) []*tlsv3.SdsSecretConfig {
	refs := transportSDSRefs(c.GetTransportSocket())
	for _, m := range c.GetTransportSocketMatches() {
		refs = append(refs, transportSDSRefs(m.GetTransportSocket())...)
	}
	return refs
}

// sdsSource is where a referenced secret comes from.
type sdsSource int

const (
	sdsStatic sdsSource = iota // a bootstrap secret of that name
	sdsLocal                   // the in-process provider
	sdsADS                     // subscribed over ADS
	sdsNone                    // nothing can deliver it (sds-grpc without the agent)
)

func isSDSGRPC(ref *tlsv3.SdsSecretConfig) bool {
	for _, g := range ref.GetSdsConfig().GetApiConfigSource().GetGrpcServices() {
		if g.GetEnvoyGrpc().GetClusterName() == SDSCluster {
			return true
		}
	}
	return false
}

// sourceOf decides where ref is resolved: a static secret of the name
// wins as in Envoy; then the local provider for its names or for anything
// pointed at sds-grpc; everything else over ADS. Called with mu held.
func (m *Manager) sourceOf(ref *tlsv3.SdsSecretConfig) sdsSource {
	name := ref.GetName()
	if _, ok := m.static[secretType][name]; ok || ref.GetSdsConfig() == nil {
		return sdsStatic
	}
	if p := m.o.LocalSecrets; p != nil && (p.Provides(name) || isSDSGRPC(ref)) {
		return sdsLocal
	}
	if isSDSGRPC(ref) {
		return sdsNone
	}
	return sdsADS
}

// missingSecrets lists the referenced secrets that can arrive but are not
// there yet: a listener or cluster waits for them, as Envoy's do for SDS.
func (m *Manager) missingSecrets(refs []*tlsv3.SdsSecretConfig) []string {
	var missing []string
	for _, ref := range refs {
		switch m.sourceOf(ref) {
		case sdsLocal, sdsADS:
			if m.secrets.Secret(ref.GetName()) == nil && !slices.Contains(missing, ref.GetName()) {
				missing = append(missing, ref.GetName())
			}
		}
	}
	return missing
}

// subscribeSecrets asks ADS for the secrets referenced by every listener
// and cluster that are neither static nor served in process.
func (m *Manager) subscribeSecrets() {
	if m.sub == nil {
		return
	}
	var names []string
	add := func(refs []*tlsv3.SdsSecretConfig) {
		for _, ref := range refs {
			if m.sourceOf(ref) == sdsADS && !slices.Contains(names, ref.GetName()) {
				names = append(names, ref.GetName())
			}
		}
	}
	for _, set := range []map[string]*Resource{m.static[listenerType], m.dynamic[listenerType]} {
		for _, r := range set {
			add(ListenerSDSRefs(r.Message.(*listenerv3.Listener)))
		}
	}
	for _, set := range []map[string]*Resource{m.static[clusterType], m.dynamic[clusterType]} {
		for _, r := range set {
			add(ClusterSDSRefs(r.Message.(*clusterv3.Cluster)))
		}
	}
	sort.Strings(names)
	m.sub.Subscribe(secretType, names)
}

// addOrWarmCluster installs a cluster, or holds a new one back until its
// SDS secrets are in (or the warm timeout passes). A cluster already
// serving is updated in place: its connections pick up the secret at their
// next handshake.
func (m *Manager) addOrWarmCluster(c *clusterv3.Cluster) error {
	name := c.GetName()
	if missing := m.missingSecrets(ClusterSDSRefs(c)); len(missing) > 0 && !slices.Contains(m.o.Clusters.Names(), name) {
		if _, already := m.warmingClusters[name]; !already {
			m.clusterWarmSince[name] = time.Now()
			time.AfterFunc(m.o.ListenerWarmTimeout, func() { m.clusterWarmTimeout(name) })
		}
		m.warmingClusters[name] = c
		m.o.Logger.Debug("cluster warming", "cluster", name, "waiting_for_secrets", missing)
		return nil
	}
	delete(m.warmingClusters, name)
	delete(m.clusterWarmSince, name)
	return m.o.Clusters.AddOrUpdate(c)
}

func (m *Manager) removeCluster(name string) {
	delete(m.warmingClusters, name)
	delete(m.clusterWarmSince, name)
	m.o.Clusters.Remove(name)
}

func (m *Manager) clusterWarmTimeout(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.warmingClusters[name]
	if !ok || time.Since(m.clusterWarmSince[name]) < m.o.ListenerWarmTimeout {
		return
	}
	m.o.Logger.Warn("cluster starts without its SDS secrets after the warm timeout; TLS handshakes fail until they arrive",
		"cluster", name, "missing_secrets", m.missingSecrets(ClusterSDSRefs(c)), "timeout", m.o.ListenerWarmTimeout)
	delete(m.warmingClusters, name)
	delete(m.clusterWarmSince, name)
	if err := m.o.Clusters.AddOrUpdate(c); err != nil {
		m.o.Logger.Error("cluster failed to start", "cluster", name, "error", err)
	}
	m.subscribeEndpoints()
	m.checkReady()
}

// promoteSecretWaiters starts the clusters and listeners whose secrets
// have arrived.
func (m *Manager) promoteSecretWaiters() {
	promoted := false
	for _, n := range sortedKeys(m.warmingClusters) {
		c := m.warmingClusters[n]
		if len(m.missingSecrets(ClusterSDSRefs(c))) == 0 {
			promoted = true
			if err := m.addOrWarmCluster(c); err != nil {
				m.o.Logger.Error("cluster failed to start after warming", "cluster", n, "error", err)
			}
		}
	}
	if promoted {
		m.subscribeEndpoints()
	}
	m.promoteWarming()
}

// SecretsUpdated tells the manager the local provider's secrets changed,
// so what waited for them starts. TLS contexts need no notice: they look
// secrets up at each handshake.
func (m *Manager) SecretsUpdated() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.promoteSecretWaiters()
	m.checkReady()
}

// WarmingClusters lists the clusters held back for their secrets.
func (m *Manager) WarmingClusters() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return sortedKeys(m.warmingClusters)
}
