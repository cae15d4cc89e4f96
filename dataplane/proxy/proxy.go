// Package proxy assembles skiff-proxy from its parts: the Envoy bootstrap,
// the statistics store, the cluster, route and listener managers, the xDS
// client that feeds them through the compile manager, and the admin API. It
// owns the process's life: start, readiness, and graceful drain on
// shutdown.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/skiff-mesh/skiff/dataplane/admin"
	"github.com/skiff-mesh/skiff/dataplane/agent"
	"github.com/skiff-mesh/skiff/dataplane/bootstrap"
	"github.com/skiff-mesh/skiff/dataplane/compile"

	// The filters skiff-proxy links: importing a filter's package registers it.
	_ "github.com/skiff-mesh/skiff/dataplane/filters/extauthz"
	_ "github.com/skiff-mesh/skiff/dataplane/filters/istiostats"
	_ "github.com/skiff-mesh/skiff/dataplane/filters/jwtauthn"
	_ "github.com/skiff-mesh/skiff/dataplane/filters/rbac"
	"github.com/skiff-mesh/skiff/dataplane/hcm"
	"github.com/skiff-mesh/skiff/dataplane/listener"
	"github.com/skiff-mesh/skiff/dataplane/tlsctx"
	"github.com/skiff-mesh/skiff/dataplane/upstream"
	"github.com/skiff-mesh/skiff/dataplane/xdsclient"
	"github.com/skiff-mesh/skiff/dataplane/xdstypes"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// Version is skiff-proxy's version, reported by /server_info.
var Version = "0.1.0-dev"

// Options are skiff-proxy's command-line settings.
type Options struct {
	ConfigPath     string        // -c: Envoy v3 bootstrap, YAML or JSON
	ServiceNode    string        // --service-node overrides node.id
	ServiceCluster string        // --service-cluster overrides node.cluster
	DrainTime      time.Duration // --drain-time-s: how long connections get to finish on shutdown
	// PrometheusAddr, when set, serves /stats/prometheus there too (Istio's
	// 15090), in addition to the admin address.
	PrometheusAddr string
	LogLevel       *slog.LevelVar
	Logger         *slog.Logger
	CommandLine    []string
	// Identity, when its CAAddr is set, runs the identity agent: the SDS
	// secrets "default" and "ROOTCA" (and any reference to the sds-grpc
	// cluster) are served in process, and the proxy is ready only once the
	// first workload certificate is in.
	Identity IdentityOptions
}

// IdentityOptions are the identity agent's settings (pilot-agent's flags
// and environment). Namespace and service account come from the
// bootstrap's node.metadata NAMESPACE and SERVICE_ACCOUNT.
type IdentityOptions struct {
	CAAddr       string        // --ca-addr, CA_ADDR
	CAServerName string        // --ca-server-name
	CARootCert   string        // --ca-root-cert
	TokenFile    string        // --ca-token-file
	TrustDomain  string        // TRUST_DOMAIN
	TTL          time.Duration // SECRET_TTL
	GraceRatio   float64       // SECRET_GRACE_PERIOD_RATIO
	KeyAlgorithm string        // ECDSA (default) or RSA
}

// Proxy is one running skiff-proxy.
type Proxy struct {
	o         Options
	log       *slog.Logger
	boot      *bootstrapv3.Bootstrap
	node      *corev3.Node
	stats     *stats.Store
	clusters  *upstream.Manager
	routes    *hcm.RouteRegistry
	listeners *listener.Manager
	cfg       *compile.Manager
	xds       *xdsclient.Client
	agent     *agent.Agent
	ready     chan struct{}
	readyMu   sync.Mutex // orders admin creation and the Initialized state with close(ready)
	closed    chan struct{}
	started   time.Time
	quit      chan struct{}
	admin     *admin.Server
	adminLn   net.Listener
}

// New loads the bootstrap and builds the proxy with its static resources in
// place. Nothing listens yet except the static listeners, which bind here so
// that a port conflict fails start-up with a clear error.
func New(o Options) (*Proxy, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.LogLevel == nil {
		o.LogLevel = new(slog.LevelVar)
	}
	if o.DrainTime == 0 {
		o.DrainTime = 5 * time.Second
	}
	b, err := bootstrap.Load(o.ConfigPath)
	if err != nil {
		return nil, err
	}
	p := &Proxy{o: o, log: o.Logger, boot: b, stats: stats.New(), started: time.Now(), quit: make(chan struct{}),
		ready: make(chan struct{}), closed: make(chan struct{})}
	p.node = bootstrap.Node(b, bootstrap.NodeOverrides{ID: o.ServiceNode, Cluster: o.ServiceCluster, Version: Version})
	p.routes = hcm.NewRouteRegistry()
	var local compile.SecretProvider
	if o.Identity.CAAddr != "" {
		md := p.node.GetMetadata().GetFields()
		a, err := agent.New(agent.Options{
			CAAddr: o.Identity.CAAddr, CAServerName: o.Identity.CAServerName, CARootCertPath: o.Identity.CARootCert,
			TokenPath: o.Identity.TokenFile, TrustDomain: o.Identity.TrustDomain,
			Namespace: md["NAMESPACE"].GetStringValue(), ServiceAccount: md["SERVICE_ACCOUNT"].GetStringValue(),
			TTL: o.Identity.TTL, GraceRatio: o.Identity.GraceRatio, KeyAlgorithm: agent.KeyAlgorithm(o.Identity.KeyAlgorithm),
			Stats: p.stats, Logger: p.log,
			OnUpdate: func() { p.cfg.SecretsUpdated() },
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", o.ConfigPath, err)
		}
		p.agent, local = a, a
	}
	p.cfg = compile.New(compile.Options{Routes: p.routes, Logger: p.log, LocalSecrets: local,
		WaitForADS: b.GetDynamicResources().GetAdsConfig() != nil})
	p.clusters = upstream.NewManager(upstream.Options{Stats: p.stats, Secrets: p.cfg.Secrets(), Logger: p.log, Node: p.node})
	p.listeners = listener.NewManager(listener.Options{
		Stats: p.stats, Secrets: p.cfg.Secrets(), Logger: p.log, DrainTime: o.DrainTime,
		Factory: &compile.ChainFactory{Clusters: p.clusters, Routes: p.routes, Stats: p.stats, Logger: p.log, Node: p.node},
	})
	p.cfg.SetParts(p.clusters, p.listeners)
	if err := p.cfg.ApplyStatic(b); err != nil {
		p.close()
		return nil, fmt.Errorf("%s: %w", o.ConfigPath, err)
	}
	if err := p.listenAdmin(); err != nil {
		p.close()
		return nil, fmt.Errorf("%s: %w", o.ConfigPath, err)
	}
	if err := p.setupXDS(); err != nil {
		p.close()
		return nil, fmt.Errorf("%s: %w", o.ConfigPath, err)
	}
	go p.waitReady()
	return p, nil
}

// waitReady closes ready once the first configuration is warm and, with
// the identity agent on, the first workload certificate is in.
func (p *Proxy) waitReady() {
	select {
	case <-p.cfg.Ready():
	case <-p.closed:
		return
	}
	if p.agent != nil {
		select {
		case <-p.agent.Ready():
		case <-p.closed:
			return
		}
	}
	// Under readyMu so /ready on the admin API never lags Ready(): a
	// caller that saw Ready() close gets 200 from /ready at once.
	p.readyMu.Lock()
	if p.admin != nil {
		p.admin.SetInitState(admin.Initialized)
	}
	close(p.ready)
	p.readyMu.Unlock()
}

// setupXDS creates the ADS client when the bootstrap has dynamic_resources.
func (p *Proxy) setupXDS() error {
	if p.boot.GetDynamicResources().GetAdsConfig() == nil {
		return nil
	}
	addr, cl, err := bootstrap.ADSTarget(p.boot)
	if err != nil {
		return err
	}
	creds := insecure.NewCredentials()
	if ts := cl.GetTransportSocket(); ts != nil {
		utc, err := upstreamTLS(ts)
		if err != nil {
			return fmt.Errorf("cluster %q transport_socket: %w", cl.GetName(), err)
		}
		tc, err := tlsctx.ClientConfig(utc, p.cfg.Secrets())
		if err != nil {
			return fmt.Errorf("cluster %q transport_socket: %w", cl.GetName(), err)
		}
		creds = credentials.NewTLS(tc)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if p.agent != nil && cl.GetTransportSocket() != nil {
		// skiffd's secure port wants the workload's credential on xDS as
		// on the CA (istiod's XDS_AUTH): the agent's token, read per call.
		opts = append(opts, grpc.WithPerRPCCredentials(agentToken{p.agent}))
	}
	dial := func(ctx context.Context) (*grpc.ClientConn, error) {
		return grpc.NewClient("passthrough:///"+addr, append(opts,
			grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
			grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", a)
			}))...)
	}
	p.xds = xdsclient.New(xdsclient.Config{Dial: dial, Node: p.node, Delta: bootstrap.UsesDelta(p.boot), Handler: p.cfg, Logger: p.log, Stats: p.stats})
	p.cfg.SetSubscriber(p.xds)
	// Listeners follow once the first clusters are warm (compile.Manager).
	p.xds.SubscribeWildcard(xdstypes.Cluster)
	return nil
}

func upstreamTLS(ts *corev3.TransportSocket) (*tlsv3.UpstreamTlsContext, error) {
	var utc tlsv3.UpstreamTlsContext
	if err := ts.GetTypedConfig().UnmarshalTo(&utc); err != nil {
		return nil, fmt.Errorf("typed_config: want %s: %w", "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", err)
	}
	return &utc, nil
}

// Run serves until ctx ends or /quitquitquit, then drains: listeners stop
// accepting, connections get DrainTime to finish, and the process returns.
func (p *Proxy) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 3)
	adminStop, err := p.startAdmin(errc)
	if err != nil {
		p.close()
		return err
	}
	defer adminStop()
	if p.agent != nil {
		go func() {
			if err := p.agent.Run(ctx); err != nil {
				errc <- fmt.Errorf("identity agent: %w", err)
			}
		}()
	}
	if p.xds != nil {
		go func() {
			if err := p.xds.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("xDS client: %w", err)
			}
		}()
	}
	go func() {
		select {
		case <-p.ready:
			p.log.Info("skiff-proxy ready", "listeners", p.listeners.Names(), "clusters", len(p.clusters.Names()))
		case <-ctx.Done():
		}
	}()
	select {
	case <-ctx.Done():
	case <-p.quit:
	case err := <-errc:
		p.close()
		return err
	}
	p.log.Info("draining listeners", "drain_time", p.o.DrainTime)
	p.listeners.DrainAll()
	drainDone := time.NewTimer(p.o.DrainTime)
	defer drainDone.Stop()
	<-drainDone.C
	p.close()
	return nil
}

func (p *Proxy) close() {
	select {
	case <-p.closed:
	default:
		close(p.closed)
	}
	if p.adminLn != nil {
		p.adminLn.Close()
	}
	if p.listeners != nil {
		p.listeners.Close()
	}
	if p.clusters != nil {
		p.clusters.Close()
	}
}

// Quit asks Run to drain and return (admin /quitquitquit).
func (p *Proxy) Quit() {
	select {
	case <-p.quit:
	default:
		close(p.quit)
	}
}

// Stats is the proxy's statistics store.
func (p *Proxy) Stats() *stats.Store { return p.stats }

// ListenerAddr is the bound address of a listener (port 0 resolved).
func (p *Proxy) ListenerAddr(name string) net.Addr { return p.listeners.Addr(name) }

// Ready is closed once the initial configuration is in (and, with the
// identity agent on, the first workload certificate).
func (p *Proxy) Ready() <-chan struct{} { return p.ready }

// Agent is the identity agent, nil when it is off.
func (p *Proxy) Agent() *agent.Agent { return p.agent }

// agentToken shows the identity agent's bearer token on each xDS call.
type agentToken struct{ a *agent.Agent }

func (t agentToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	tok, err := t.a.Token()
	if err != nil || tok == "" {
		return nil, err
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

func (agentToken) RequireTransportSecurity() bool { return true }
