// Package compile turns xDS resources into the running data plane. It is
// the xDS client's handler: it decodes and validates each response as a
// whole (a bad resource NACKs the response and nothing of it applies), keeps
// Envoy's warming order (clusters and their endpoints are in place before a
// listener that routes to them, and a listener waits for its RDS route
// configuration), and drives the cluster manager, the route registry and
// the listener manager, each of which swaps its compiled state atomically so
// the request path never locks.
package compile

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/skiff-mesh/skiff/dataplane/hcm"
	"github.com/skiff-mesh/skiff/dataplane/listener"
	"github.com/skiff-mesh/skiff/dataplane/route"
	"github.com/skiff-mesh/skiff/dataplane/upstream"
	"github.com/skiff-mesh/skiff/dataplane/xdsclient"
)

// Subscriber is the part of the xDS client the manager drives: the names of
// the EDS and RDS resources it needs follow from the clusters and listeners,
// and listeners are asked for only once the first clusters are warm.
type Subscriber interface {
	Subscribe(typeURL string, names []string)
	SubscribeWildcard(typeURL string)
}

// Options wires the manager to the runtime parts it drives.
type Options struct {
	Clusters  *upstream.Manager
	Listeners *listener.Manager
	Routes    *hcm.RouteRegistry
	Logger    *slog.Logger
	// WaitForADS says the bootstrap asks for dynamic clusters and
	// listeners, so readiness waits for the first of each.
	WaitForADS bool
	// ListenerWarmTimeout bounds how long a listener waits for its route
	// configuration (Envoy's initial_fetch_timeout, 15 s by default).
	ListenerWarmTimeout time.Duration
	// LocalSecrets, when set, serves its SDS names and every reference to
	// the sds-grpc cluster in process; they are never asked for over ADS.
	LocalSecrets SecretProvider
}

// Resource is one applied xDS resource with the version it came with.
type Resource struct {
	Message     proto.Message
	Version     string
	LastUpdated time.Time
}

// Manager holds the applied xDS state. All updates come from the xDS
// client's single goroutine or from timers; mu serialises them with the
// admin page's reads. The request path never takes mu.
type Manager struct {
	o       Options
	secrets *SecretStore
	sub     Subscriber

	mu          sync.Mutex
	bootstrap   *bootstrapv3.Bootstrap
	static      map[string]map[string]*Resource // type → name → resource (bootstrap)
	dynamic     map[string]map[string]*Resource // type → name → resource (xDS)
	versions    map[string]string               // type → last accepted version
	warming     map[string]*listenerv3.Listener // listeners waiting for RDS
	warmSince   map[string]time.Time
	received    map[string]bool // types with at least one accepted response
	usesADS     bool
	readyCh     chan struct{}
	readyClosed bool
	recheck     bool
	// Initialization order: when the first clusters arrived, and whether
	// listeners have been asked for.
	clustersSince time.Time
	ldsRequested  bool

	// Clusters held back until their SDS secrets arrive.
	warmingClusters  map[string]*clusterv3.Cluster
	clusterWarmSince map[string]time.Time
}

// New makes a manager. Call SetSubscriber before the xDS client runs.
func New(o Options) *Manager {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ListenerWarmTimeout == 0 {
		o.ListenerWarmTimeout = 15 * time.Second
	}
	return &Manager{
		o: o, secrets: newSecretStore(o.LocalSecrets),
		warmingClusters: map[string]*clusterv3.Cluster{}, clusterWarmSince: map[string]time.Time{},
		static:    map[string]map[string]*Resource{},
		dynamic:   map[string]map[string]*Resource{},
		versions:  map[string]string{},
		warming:   map[string]*listenerv3.Listener{},
		warmSince: map[string]time.Time{},
		received:  map[string]bool{},
		readyCh:   make(chan struct{}),
		usesADS:   o.WaitForADS,
	}
}

// Secrets is the SDS and static secret store the TLS contexts read.
func (m *Manager) Secrets() *SecretStore { return m.secrets }

// SetParts gives the manager the cluster and listener managers it drives;
// they are built after the manager because they read its secret store.
func (m *Manager) SetParts(clusters *upstream.Manager, listeners *listener.Manager) {
	m.o.Clusters, m.o.Listeners = clusters, listeners
}

// SetSubscriber connects the manager to the xDS client.
func (m *Manager) SetSubscriber(s Subscriber) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sub = s
}

// Ready is closed once the first clusters, endpoints, listeners and routes
// are in place (at once for a bootstrap with only static resources).
func (m *Manager) Ready() <-chan struct{} { return m.readyCh }

// ApplyStatic installs the bootstrap's static secrets, clusters and
// listeners. Errors name the resource; nothing is half-applied per kind.
func (m *Manager) ApplyStatic(b *bootstrapv3.Bootstrap) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.bootstrap = b
	sr := b.GetStaticResources()
	now := time.Now()
	secrets := map[string]*Resource{}
	for i, s := range sr.GetSecrets() {
		if s.GetName() == "" {
			return fmt.Errorf("static_resources.secrets[%d]: name is required", i)
		}
		secrets[s.GetName()] = &Resource{Message: s, LastUpdated: now}
	}
	m.static[secretType] = secrets
	m.publishSecrets()

	clusters := map[string]*Resource{}
	for i, c := range sr.GetClusters() {
		if _, dup := clusters[c.GetName()]; dup {
			return fmt.Errorf("static_resources.clusters[%d]: cluster %q is defined twice", i, c.GetName())
		}
		if err := m.o.Clusters.Validate(c); err != nil {
			return fmt.Errorf("static_resources.clusters[%d]: %w", i, err)
		}
		clusters[c.GetName()] = &Resource{Message: c, LastUpdated: now}
	}
	for _, n := range sortedKeys(clusters) {
		if err := m.addOrWarmCluster(clusters[n].Message.(*clusterv3.Cluster)); err != nil {
			return err
		}
	}
	m.static[clusterType] = clusters

	listeners := map[string]*Resource{}
	for i, l := range sr.GetListeners() {
		if _, dup := listeners[l.GetName()]; dup {
			return fmt.Errorf("static_resources.listeners[%d]: listener %q is defined twice", i, l.GetName())
		}
		if err := m.o.Listeners.Validate(l); err != nil {
			return fmt.Errorf("static_resources.listeners[%d]: %w", i, err)
		}
		listeners[l.GetName()] = &Resource{Message: l, LastUpdated: now}
	}
	m.static[listenerType] = listeners
	for _, n := range sortedKeys(listeners) {
		r := listeners[n]
		l := r.Message.(*listenerv3.Listener)
		if err := m.activateOrWarm(l); err != nil {
			return err
		}
	}
	m.subscribeRoutes()
	m.subscribeSecrets()
	m.checkReady()
	return nil
}

// OnUpdate implements xdsclient.Handler.
func (m *Manager) OnUpdate(typeURL string, u *xdsclient.Update) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	next, changed, removed, err := m.merge(typeURL, u)
	if err != nil {
		return err
	}
	switch typeURL {
	case clusterType:
		err = m.applyClusters(next, changed, removed)
	case endpointType:
		err = m.applyEndpoints(next, changed)
	case listenerType:
		err = m.applyListeners(next, changed, removed)
	case routeType:
		err = m.applyRoutes(next, changed, removed)
	case secretType:
		m.dynamic[typeURL] = next
		m.publishSecrets()
		m.promoteSecretWaiters()
	default:
		return fmt.Errorf("resource type %s is not supported by skiff-proxy", typeURL)
	}
	if err != nil {
		return err
	}
	m.dynamic[typeURL] = next
	if typeURL == clusterType {
		m.subscribeSecrets()
	}
	m.versions[typeURL] = u.Version
	m.received[typeURL] = true
	m.checkReady()
	return nil
}

// merge computes the type's next resource set from an update, with the
// names that are new or changed and those removed. It checks each message
// has the type's Go type and a unique, non-empty name.
func (m *Manager) merge(typeURL string, u *xdsclient.Update) (next map[string]*Resource, changed []string, removed []string, err error) {
	cur := m.dynamic[typeURL]
	next = make(map[string]*Resource, len(cur)+len(u.Resources))
	// EDS and RDS state of the world only carries the subscribed names, and a
	// response may carry only some of them: keep the others.
	keepUnlisted := !u.Full || typeURL == endpointType || typeURL == routeType
	if keepUnlisted {
		for n, r := range cur {
			next[n] = r
		}
	}
	now := time.Now()
	seen := map[string]bool{}
	var errs []error
	for i, r := range u.Resources {
		name := r.Name
		if name == "" {
			name = resourceName(r.Message)
		}
		if name == "" {
			errs = append(errs, fmt.Errorf("%s resource [%d]: name is empty", kind(typeURL), i))
			continue
		}
		if seen[name] {
			errs = append(errs, fmt.Errorf("%s %q: appears twice in one response", kind(typeURL), name))
			continue
		}
		seen[name] = true
		if st := m.static[typeURL][name]; st != nil && typeURL != endpointType {
			errs = append(errs, fmt.Errorf("%s %q: a static resource of the same name exists in the bootstrap", kind(typeURL), name))
			continue
		}
		version := r.Version
		if version == "" {
			version = u.Version
		}
		old := cur[name]
		if old != nil && proto.Equal(old.Message, r.Message) {
			next[name] = &Resource{Message: old.Message, Version: version, LastUpdated: old.LastUpdated}
			continue
		}
		next[name] = &Resource{Message: r.Message, Version: version, LastUpdated: now}
		changed = append(changed, name)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, nil, err
	}
	for _, n := range u.Removed {
		if _, ok := next[n]; ok {
			delete(next, n)
			removed = append(removed, n)
		}
	}
	if !keepUnlisted {
		for n := range cur {
			if !seen[n] {
				delete(next, n)
				removed = append(removed, n)
			}
		}
	}
	sort.Strings(changed)
	sort.Strings(removed)
	return next, changed, removed, nil
}

func (m *Manager) applyClusters(next map[string]*Resource, changed, removed []string) error {
	var errs []error
	for _, n := range changed {
		if err := m.o.Clusters.Validate(next[n].Message.(*clusterv3.Cluster)); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, n := range changed {
		if err := m.addOrWarmCluster(next[n].Message.(*clusterv3.Cluster)); err != nil {
			// Validate passed, so this is a fault of this process, not of the
			// resource; report it rather than hide it.
			errs = append(errs, err)
		}
	}
	for _, n := range removed {
		m.removeCluster(n)
	}
	m.subscribeEndpoints()
	return errors.Join(errs...)
}

func (m *Manager) subscribeEndpoints() {
	if m.sub != nil {
		m.sub.Subscribe(endpointType, m.o.Clusters.EDSNames())
	}
}

func (m *Manager) applyEndpoints(next map[string]*Resource, changed []string) error {
	// Endpoint sets are independent of each other: a bad one is reported
	// (NACK) while the others still apply, as a passing fault of one
	// service must not freeze the endpoints of all.
	var errs []error
	for _, n := range changed {
		cla := next[n].Message.(*endpointv3.ClusterLoadAssignment)
		if err := m.o.Clusters.SetEndpoints(cla); err != nil {
			errs = append(errs, err)
			if old := m.dynamic[endpointType][n]; old != nil {
				next[n] = old
			} else {
				delete(next, n)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		m.dynamic[endpointType] = next
		m.promoteWarming()
		return err
	}
	m.promoteWarming()
	return nil
}

func (m *Manager) applyListeners(next map[string]*Resource, changed, removed []string) error {
	var errs []error
	for _, n := range changed {
		if err := m.o.Listeners.Validate(next[n].Message.(*listenerv3.Listener)); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, n := range removed {
		delete(m.warming, n)
		delete(m.warmSince, n)
		m.o.Listeners.Remove(n)
	}
	for _, n := range changed {
		if err := m.activateOrWarm(next[n].Message.(*listenerv3.Listener)); err != nil {
			errs = append(errs, err)
		}
	}
	m.dynamic[listenerType] = next
	m.subscribeRoutes()
	m.subscribeSecrets()
	return errors.Join(errs...)
}

func (m *Manager) applyRoutes(next map[string]*Resource, changed, removed []string) error {
	tables := make(map[string]*route.Table, len(changed))
	var errs []error
	for _, n := range changed {
		t, err := route.Compile(next[n].Message.(*routev3.RouteConfiguration))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		tables[n] = t
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for n, t := range tables {
		m.o.Routes.Set(n, t)
	}
	for _, n := range removed {
		m.o.Routes.Remove(n)
	}
	m.dynamic[routeType] = next
	m.promoteWarming()
	return nil
}

// activateOrWarm starts (or updates) a listener whose route configurations
// and SDS secrets are all present, and parks the others until RDS and SDS
// deliver them or the warm timeout passes (then it starts anyway; requests
// meet 404 NR or failed handshakes until they arrive, as with Envoy's
// initial_fetch_timeout).
func (m *Manager) activateOrWarm(l *listenerv3.Listener) error {
	if missing, secrets := m.missingRoutes(l), m.missingSecrets(ListenerSDSRefs(l)); len(missing)+len(secrets) > 0 {
		if _, already := m.warming[l.GetName()]; !already {
			m.warmSince[l.GetName()] = time.Now()
			name := l.GetName()
			time.AfterFunc(m.o.ListenerWarmTimeout, func() { m.warmTimeout(name) })
		}
		m.warming[l.GetName()] = l
		m.o.Logger.Debug("listener warming", "listener", l.GetName(), "waiting_for_routes", missing, "waiting_for_secrets", secrets)
		return nil
	}
	delete(m.warming, l.GetName())
	delete(m.warmSince, l.GetName())
	return m.o.Listeners.AddOrUpdate(l)
}

func (m *Manager) warmTimeout(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.warming[name]
	if !ok || time.Since(m.warmSince[name]) < m.o.ListenerWarmTimeout {
		return
	}
	m.o.Logger.Warn("listener starts without its route configuration or SDS secrets after the warm timeout",
		"listener", name, "missing_routes", m.missingRoutes(l), "missing_secrets", m.missingSecrets(ListenerSDSRefs(l)), "timeout", m.o.ListenerWarmTimeout)
	delete(m.warming, name)
	delete(m.warmSince, name)
	if err := m.o.Listeners.AddOrUpdate(l); err != nil {
		m.o.Logger.Error("listener failed to start", "listener", name, "error", err)
	}
	m.checkReady()
}

// promoteWarming starts the warming listeners whose routes have arrived.
func (m *Manager) promoteWarming() {
	names := make([]string, 0, len(m.warming))
	for n := range m.warming {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		l := m.warming[n]
		if len(m.missingRoutes(l))+len(m.missingSecrets(ListenerSDSRefs(l))) == 0 {
			if err := m.activateOrWarm(l); err != nil {
				m.o.Logger.Error("listener failed to start after warming", "listener", n, "error", err)
			}
		}
	}
}

func (m *Manager) missingRoutes(l *listenerv3.Listener) []string {
	var missing []string
	for _, n := range RouteNames(l) {
		if m.o.Routes.Get(n) == nil {
			missing = append(missing, n)
		}
	}
	return missing
}

// RouteNames lists the RDS route configuration names a listener's HTTP
// connection managers use.
func RouteNames(l *listenerv3.Listener) []string {
	var names []string
	visit := func(fc *listenerv3.FilterChain) {
		for _, f := range fc.GetFilters() {
			tc := f.GetTypedConfig()
			if tc == nil || tc.GetTypeUrl() != hcmType {
				continue
			}
			var cfg hcmv3.HttpConnectionManager
			if err := tc.UnmarshalTo(&cfg); err != nil {
				continue // Validate reports it
			}
			if n := hcm.RDSName(&cfg); n != "" && !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	for _, fc := range l.GetFilterChains() {
		visit(fc)
	}
	if dfc := l.GetDefaultFilterChain(); dfc != nil {
		visit(dfc)
	}
	return names
}

func (m *Manager) subscribeRoutes() {
	if m.sub == nil {
		return
	}
	var names []string
	for _, set := range []map[string]*Resource{m.static[listenerType], m.dynamic[listenerType]} {
		for _, r := range set {
			for _, n := range RouteNames(r.Message.(*listenerv3.Listener)) {
				if !slices.Contains(names, n) {
					names = append(names, n)
				}
			}
		}
	}
	sort.Strings(names)
	m.sub.Subscribe(routeType, names)
}

// checkReady closes Ready once the initial configuration is in: with ADS,
// the first CDS and LDS responses accepted, no cluster warming and no
// listener waiting for routes.
//
// Envoy's initialization order is kept: listeners are requested only once
// the first clusters and their endpoints are in (or ListenerWarmTimeout
// after the first clusters arrived), so no listener starts routing to a
// cluster that has no hosts yet.
func (m *Manager) checkReady() {
	if m.readyClosed {
		return
	}
	if m.usesADS && !m.received[clusterType] {
		return
	}
	clustersWarm := len(m.o.Clusters.Warming()) == 0 && len(m.warmingClusters) == 0
	if m.usesADS && !m.ldsRequested {
		if m.clustersSince.IsZero() {
			m.clustersSince = time.Now()
		}
		if clustersWarm || time.Since(m.clustersSince) >= m.o.ListenerWarmTimeout {
			m.ldsRequested = true
			if m.sub != nil {
				m.sub.SubscribeWildcard(listenerType)
			}
		}
	}
	if m.usesADS && !m.received[listenerType] {
		if !m.ldsRequested {
			m.recheckSoon()
		}
		return
	}
	if len(m.warming) > 0 {
		return // promoteWarming or warmTimeout calls again
	}
	if !clustersWarm {
		m.recheckSoon()
		return
	}
	m.readyClosed = true
	close(m.readyCh)
}

// recheckSoon looks at readiness again shortly: clusters warm on their own
// (DNS answers, first EDS), and polling keeps the cluster manager uncoupled
// from this one.
func (m *Manager) recheckSoon() {
	if m.recheck {
		return
	}
	m.recheck = true
	time.AfterFunc(50*time.Millisecond, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.recheck = false
		m.checkReady()
	})
}

func (m *Manager) publishSecrets() {
	all := map[string]*tlsv3.Secret{}
	for _, set := range []map[string]*Resource{m.static[secretType], m.dynamic[secretType]} {
		for n, r := range set {
			all[n] = r.Message.(*tlsv3.Secret)
		}
	}
	m.secrets.replace(all)
}

// State is a copy of the applied resources for the admin config dump.
type State struct {
	Bootstrap *bootstrapv3.Bootstrap
	Static    map[string]map[string]*Resource
	Dynamic   map[string]map[string]*Resource
	Warming   map[string]*listenerv3.Listener
	Versions  map[string]string
	// WarmingClusters wait for their SDS secrets.
	WarmingClusters []string
}

// Snapshot returns the applied state. Resource messages are shared, not
// copied: callers must not modify them.
func (m *Manager) Snapshot() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	cp := func(src map[string]map[string]*Resource) map[string]map[string]*Resource {
		out := make(map[string]map[string]*Resource, len(src))
		for t, set := range src {
			s := make(map[string]*Resource, len(set))
			for n, r := range set {
				s[n] = r
			}
			out[t] = s
		}
		return out
	}
	st := State{Bootstrap: m.bootstrap, Static: cp(m.static), Dynamic: cp(m.dynamic),
		Warming: map[string]*listenerv3.Listener{}, Versions: map[string]string{}}
	for n, l := range m.warming {
		st.Warming[n] = l
	}
	for t, v := range m.versions {
		st.Versions[t] = v
	}
	st.WarmingClusters = sortedKeys(m.warmingClusters)
	return st
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
