// Package upstream is skiff-proxy's cluster manager: it owns upstream
// clusters (static, DNS, EDS and original-destination discovery), their
// host sets and load balancers (round robin, least request, random, ring
// hash, maglev; priorities, localities, panic mode), the per-host HTTP/1.1
// and HTTP/2 connection pools, circuit breakers, outlier detection and
// active health checks, with Envoy's semantics. The request path reads
// immutable snapshots through atomic pointers and never waits on config.
package upstream

import (
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// Options configure a Manager.
type Options struct {
	Stats    *stats.Store  // nil: a private store
	Secrets  core.Secrets  // SDS secrets for upstream TLS
	Logger   *slog.Logger  // nil: slog.Default()
	Resolver *net.Resolver // nil: net.DefaultResolver
	Node     *corev3.Node  // this proxy's node, for Cluster.filters
}

// Manager holds the proxy's clusters. Cluster is lock-free; the other
// methods are for the xDS client and the admin API.
type Manager struct {
	o        Options
	clusters atomic.Pointer[map[string]*cluster]

	mu     sync.Mutex // serializes writers
	clas   map[string]*endpointSet
	closed bool
	bg     sync.WaitGroup // replaced clusters closing in the background
}

// NewManager returns an empty manager.
func NewManager(o Options) *Manager {
	if o.Stats == nil {
		o.Stats = stats.New()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	m := &Manager{o: o, clas: map[string]*endpointSet{}}
	m.clusters.Store(&map[string]*cluster{})
	return m
}

// Validate checks a cluster fully without applying it.
func (m *Manager) Validate(c *clusterv3.Cluster) error {
	cfg, err := compile(c)
	if err != nil {
		return err
	}
	_, err = newCluster(m, c, cfg)
	return err
}

// AddOrUpdate applies a cluster. An unchanged cluster keeps its pools,
// health and outlier state; a changed one is rebuilt and swapped in, the
// old one closing its idle connections while requests in flight finish.
func (m *Manager) AddOrUpdate(c *clusterv3.Cluster) error {
	cfg, err := compile(c)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("cluster %q: manager is closed", cfg.name)
	}
	cur := *m.clusters.Load()
	old := cur[cfg.name]
	if old != nil && proto.Equal(old.src, c) {
		return nil
	}
	nc, err := newCluster(m, proto.Clone(c).(*clusterv3.Cluster), cfg)
	if err != nil {
		return err
	}
	var initial *endpointSet
	switch cfg.discovery {
	case clusterv3.Cluster_EDS:
		initial = m.clas[cfg.edsServiceName]
	case clusterv3.Cluster_STATIC, clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
		// Validated by compile.
		initial, _ = parseCLA(c.GetLoadAssignment(), cfg.discovery != clusterv3.Cluster_STATIC)
	}
	nc.start(initial)
	next := maps.Clone(cur)
	next[cfg.name] = nc
	m.clusters.Store(&next)
	if old != nil {
		m.bg.Add(1)
		go func() {
			defer m.bg.Done()
			old.close()
		}()
	}
	return nil
}

// Remove drops a cluster and its statistics.
func (m *Manager) Remove(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := *m.clusters.Load()
	old := cur[name]
	if old == nil {
		return
	}
	next := maps.Clone(cur)
	delete(next, name)
	m.clusters.Store(&next)
	if old.cfg.discovery == clusterv3.Cluster_EDS {
		still := false
		for _, c := range next {
			still = still || c.cfg.edsServiceName == old.cfg.edsServiceName
		}
		if !still {
			delete(m.clas, old.cfg.edsServiceName)
		}
	}
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		old.close()
	}()
	m.o.Stats.Remove("cluster." + name + ".")
}

// SetEndpoints applies an EDS ClusterLoadAssignment to every EDS cluster
// whose service name (or, without one, cluster name) is cla.ClusterName.
// Hosts whose address stays keep their health, outlier state and pool.
func (m *Manager) SetEndpoints(cla *endpointv3.ClusterLoadAssignment) error {
	es, err := parseCLA(cla, false)
	if err != nil {
		return fmt.Errorf("cluster_load_assignment %q: %w", cla.GetClusterName(), err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.clas[cla.GetClusterName()] = es
	for _, c := range *m.clusters.Load() {
		if c.cfg.discovery == clusterv3.Cluster_EDS && c.cfg.edsServiceName == cla.GetClusterName() {
			c.setHosts(es)
			c.warm.Store(true)
		}
	}
	return nil
}

// EDSNames lists the ClusterLoadAssignment names the EDS clusters need.
func (m *Manager) EDSNames() []string {
	set := map[string]bool{}
	for _, c := range *m.clusters.Load() {
		if c.cfg.discovery == clusterv3.Cluster_EDS {
			set[c.cfg.edsServiceName] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// Warming lists clusters still waiting for endpoints or a first DNS round.
func (m *Manager) Warming() []string {
	var out []string
	for n, c := range *m.clusters.Load() {
		if !c.warm.Load() {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// Cluster returns the named cluster, or nil.
func (m *Manager) Cluster(name string) core.Cluster {
	if c := (*m.clusters.Load())[name]; c != nil {
		return c
	}
	return nil
}

// Names lists the clusters, sorted.
func (m *Manager) Names() []string {
	return slices.Sorted(maps.Keys(*m.clusters.Load()))
}

// Close stops every cluster and closes idle connections.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	cur := *m.clusters.Load()
	m.clusters.Store(&map[string]*cluster{})
	m.mu.Unlock()
	for _, c := range cur {
		c.close()
	}
	m.bg.Wait()
}

var _ core.ClusterSet = (*Manager)(nil)
