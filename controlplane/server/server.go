// Package server assembles skiffd: config sources feed the validated
// config store; each new config version becomes a service registry and a
// generation index (Gateway API objects converted to Istio's model first);
// the ADS server pushes what changed to the proxies it concerns; the
// monitoring address serves Istio's debug endpoints and pilot metrics.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/skiff-mesh/skiff/controlplane/ca"
	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/config/file"
	"github.com/skiff-mesh/skiff/controlplane/config/validation"
	"github.com/skiff-mesh/skiff/controlplane/dashboard"
	"github.com/skiff-mesh/skiff/controlplane/debug"
	"github.com/skiff-mesh/skiff/controlplane/gatewayapi"
	"github.com/skiff-mesh/skiff/controlplane/gen"
	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/model"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// Options are skiffd's settings.
type Options struct {
	ConfigDir string // YAML manifests to serve (watched)
	// Kubernetes mode (kube.go): the kubeconfig ("in-cluster" in a pod),
	// the webhooks' address and the URL the API server calls them at
	// (default: the istiod Service), and whether validation messages are
	// written into objects' status.
	Kubeconfig       string
	WebhookAddr      string
	WebhookURL       string
	ValidationStatus bool
	// Revision is this control plane's istio.io/rev ("" = default): its
	// injector answers only for pods and namespaces of that revision and
	// its webhook configurations carry the revision's names.
	Revision string
	// ProxyImage is the sidecar image the injector writes; the injector's
	// default (ghcr.io/skiff-mesh/skiff-proxy:VERSION) when empty.
	ProxyImage string
	// LeaderElection tunes the Lease that picks the one replica writing
	// status, publishing istio-ca-root-cert and patching the webhook
	// configurations; zero values are client-go's usual 15 s / 10 s / 2 s.
	LeaderElection LeaderElection
	XDSAddr        string // plaintext ADS, Istio's :15010
	MonitoringAddr string // debug and metrics, Istio's :15014
	// ListenFDs names sockets a parent bound and passed down
	// ("xds-addr=3,secure-addr=4,monitoring-addr=5"); those flags' own
	// addresses are then not bound again.
	ListenFDs    string
	DomainSuffix string // "cluster.local"
	// RootNamespace and TrustDomain: "" takes the mesh config's (Istio's
	// defaults istio-system and cluster.local); a value that contradicts
	// the mesh config is an error.
	RootNamespace string
	TrustDomain   string
	// MeshConfigFile is Istio's MeshConfig YAML (--meshconfig); MeshConfig,
	// when set, is used instead. Either way the server's MeshConfig() is the
	// result over Istio's defaults.
	MeshConfigFile string
	MeshConfig     *meshv1alpha1.MeshConfig

	// SecureAddr serves the CA and ADS over TLS, Istio's :15012; "" serves
	// neither (the plaintext XDSAddr still serves ADS).
	SecureAddr string
	// CADir keeps the self-signed root. When empty: the Secret
	// istio-ca-secret of the root namespace in Kubernetes mode, else
	// DefaultCADir.
	CADir string
	// CACertsDir is Istio's plugged-in cacerts layout (ca-cert.pem,
	// ca-key.pem, root-cert.pem, cert-chain.pem); when its files exist it
	// wins over CADir, and replacing them rotates the CA.
	CACertsDir string
	// WorkloadCertTTL and MaxWorkloadCertTTL: Istio's 24h and 90 days when zero.
	WorkloadCertTTL    time.Duration
	MaxWorkloadCertTTL time.Duration
	// BootstrapTokensFile lists the hashes of the local mesh's per-pod
	// tokens (ca.TokensFile), watched.
	BootstrapTokensFile string
	// RootCertOut, when set, receives the trust bundle PEM, rewritten when
	// the roots change.
	RootCertOut string
	// RootKey of a self-signed root made now (RSA 2048, istiod's, when empty).
	RootKey ca.KeyAlgorithm
	// LocalMesh: every workload runs with a sidecar unless it opts out
	// (Kubernetes mode reads the injector's marks instead).
	LocalMesh bool
	// Transform rewrites or drops (nil) each object read from ConfigDir
	// before it is stored; see file.Options.Transform.
	Transform func(*config.Object) *config.Object
	Logger    *slog.Logger
}

func (o *Options) defaults() {
	if o.XDSAddr == "" {
		o.XDSAddr = ":15010"
	}
	if o.MonitoringAddr == "" {
		o.MonitoringAddr = ":15014"
	}
	if o.DomainSuffix == "" {
		o.DomainSuffix = "cluster.local"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// resolveMesh loads the mesh config and settles the trust domain and root
// namespace: the flags' when given, else the mesh config's.
func (o *Options) resolveMesh() error {
	mc := o.MeshConfig
	if mc == nil && o.MeshConfigFile != "" {
		var err error
		if mc, err = LoadMeshConfig(o.MeshConfigFile); err != nil {
			return err
		}
	}
	if mc == nil {
		mc = DefaultMeshConfig()
	}
	where := "--meshconfig " + o.MeshConfigFile
	if o.MeshConfigFile == "" {
		where = "the mesh config"
	}
	explicit := o.MeshConfig != nil || o.MeshConfigFile != ""
	for _, f := range []struct {
		flag, field string
		opt, mesh   *string
	}{
		{"--trust-domain", "trustDomain", &o.TrustDomain, &mc.TrustDomain},
		{"--root-namespace", "rootNamespace", &o.RootNamespace, &mc.RootNamespace},
	} {
		switch {
		case *f.opt == "":
			*f.opt = *f.mesh
		case explicit && *f.mesh != *f.opt:
			return fmt.Errorf("%s %q contradicts %s, whose %s is %q: drop the flag or change the file so they agree", f.flag, *f.opt, where, f.field, *f.mesh)
		default:
			*f.mesh = *f.opt
		}
	}
	o.MeshConfig = mc
	return nil
}

// Server is a running skiffd.
type Server struct {
	o     Options
	log   *slog.Logger
	store *config.Store
	gen   *gen.Generator
	xds   *xds.Server

	xdsLn, monLn net.Listener
	sec          *secure // nil without SecureAddr
	// inherited are the sockets --listen-fds passed down, until taken.
	inherited map[string]net.Listener

	mu       sync.Mutex
	lastIx   *index.Index
	lastSnap *config.Snapshot // the snapshot lastIx was built from
	version  uint64
	ready    bool
	rebuilds chan config.Change
	// webhookAddr is the bound webhook address in Kubernetes mode.
	webhookAddr net.Addr
	leader      leader
}

// New binds skiffd's addresses (so a port in use fails at once, naming the
// flag to change) and builds its parts; Run serves.
func New(o Options) (*Server, error) {
	o.defaults()
	if o.ConfigDir == "" && o.Kubeconfig == "" {
		return nil, errors.New("no configuration: run skiffd --config-dir DIR (a directory of Kubernetes-style YAML), or --kubeconfig FILE to read it from a Kubernetes API server")
	}
	if err := o.resolveMesh(); err != nil {
		return nil, err
	}
	s := &Server{o: o, log: o.Logger, gen: gen.New(gen.Options{
		// Mesh mTLS needs workload certificates, which skiffd issues only
		// with its CA on; enableAutoMtls in the mesh config turns it off.
		DisableAutoMTLS: o.SecureAddr == "" || (o.MeshConfig.GetEnableAutoMtls() != nil && !o.MeshConfig.GetEnableAutoMtls().GetValue()),
		InboundPolicy:   inboundPolicy(o.MeshConfig, o.Logger),
		Telemetry:       listenerTelemetry(o.MeshConfig, o.Logger),
		Logger:          o.Logger,
	}), rebuilds: make(chan config.Change, 1)}
	s.store = config.NewStore(validation.Validate, o.Logger)
	s.store.SetReferenceChecker(func(objs []*config.Object) []config.ObjectError {
		var out []config.ObjectError
		for _, e := range validation.CheckReferences(objs) {
			out = append(out, config.ErrorAt(e.Object, e.Err))
		}
		return out
	})
	s.xds = xds.New(xds.Options{Generator: s.gen, Authorize: authorizeProxy, Logger: o.Logger})
	var err error
	if s.inherited, err = parseListenFDs(o.ListenFDs); err != nil {
		return nil, err
	}
	defer s.closeInherited()
	if s.inherited["secure-addr"] != nil && o.SecureAddr == "" {
		return nil, fmt.Errorf("--listen-fds passes a socket for --secure-addr, which is empty (no CA): drop one or the other")
	}
	if s.xdsLn, err = s.listen("xds-addr", o.XDSAddr); err != nil {
		return nil, fmt.Errorf("--xds-addr %s: %w", o.XDSAddr, err)
	}
	if s.monLn, err = s.listen("monitoring-addr", o.MonitoringAddr); err != nil {
		s.xdsLn.Close()
		return nil, fmt.Errorf("--monitoring-addr %s: %w", o.MonitoringAddr, err)
	}
	if o.SecureAddr != "" {
		if s.sec, err = newSecure(&s.o, s.listen); err != nil {
			s.xdsLn.Close()
			s.monLn.Close()
			return nil, err
		}
	}
	return s, nil
}

// SecureAddr is the bound CA and TLS xDS address; nil when not served.
func (s *Server) SecureAddr() net.Addr {
	if s.sec == nil {
		return nil
	}
	return s.sec.ln.Addr()
}

// CA is the certificate authority behind SecureAddr; nil when not served.
func (s *Server) CA() *ca.CA {
	if s.sec == nil {
		return nil
	}
	return s.sec.ca
}

// MeshConfig is the mesh configuration in force (Istio's defaults under
// --meshconfig). Callers must not modify it.
func (s *Server) MeshConfig() *meshv1alpha1.MeshConfig { return s.o.MeshConfig }

// TrustDomain is the settled trust domain.
func (s *Server) TrustDomain() string { return s.o.TrustDomain }

// XDSAddr and MonitoringAddr are the bound addresses (port 0 resolved).
func (s *Server) XDSAddr() net.Addr        { return s.xdsLn.Addr() }
func (s *Server) MonitoringAddr() net.Addr { return s.monLn.Addr() }

// Store is the config store (for tests and the CLI's status).
func (s *Server) Store() *config.Store { return s.store }

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if s.sec != nil {
		defer s.sec.close()
	}
	errc := make(chan error, 8)
	var synced []<-chan struct{}
	if s.o.ConfigDir != "" {
		src := file.New(s.o.ConfigDir, file.Options{Log: s.log, Transform: s.o.Transform})
		go func() {
			if err := src.Run(ctx, s.store); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("config directory %s: %w", s.o.ConfigDir, err)
			}
		}()
		synced = append(synced, src.Synced())
	}
	ksrc, kcfg, err := s.kubeSource()
	if err != nil {
		return err
	}
	if ksrc != nil {
		go func() {
			if err := ksrc.Run(ctx, s.store); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("kubernetes source: %w", err)
			}
		}()
		synced = append(synced, ksrc.Synced())
	}
	s.store.Subscribe(func(c config.Change) {
		// Subscribers must not block the store: hand the change to the
		// rebuild loop, merging with one already waiting.
		for {
			select {
			case s.rebuilds <- c:
				return
			default:
			}
			select {
			case old := <-s.rebuilds:
				c.Keys = append(old.Keys, c.Keys...)
			default:
			}
		}
	})
	for _, ch := range synced {
		select {
		case <-ch:
		case err := <-errc:
			return err
		case <-ctx.Done():
			return nil
		}
	}
	s.rebuild(config.Change{Version: s.store.Snapshot().Version})
	go s.rebuildLoop(ctx)
	go s.xds.Run(ctx)

	g := grpc.NewServer(append(xds.GRPCServerOptions(),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}))...)
	s.xds.Register(g)
	go func() {
		if err := g.Serve(s.xdsLn); err != nil {
			errc <- fmt.Errorf("xDS server: %w", err)
		}
	}()
	gatherers := prometheus.Gatherers{s.xds.Registry(), prometheus.DefaultGatherer}
	var sg *grpc.Server
	if s.sec != nil {
		sg = s.sec.run(ctx, &s.o, s.xds, errc)
		gatherers = append(gatherers, s.sec.reg)
	}
	if ksrc != nil {
		if err := s.runKube(ctx, ksrc, kcfg, errc); err != nil {
			return err
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/", debug.Handler(debug.Options{
		XDS: s.xds, Configz: s.configz, Ready: s.readyErr,
		Metrics: gatherers,
	}))
	mux.Handle("/dashboard/", dashboard.ForSkiffd(ctx, dashboard.StoreConfig(s.store), func() any { return s.xds.Status() }))
	// Go's profiler, for the scale work (istiod serves it on 15014 too).
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mon := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := mon.Serve(s.monLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("monitoring server: %w", err)
		}
	}()
	secureAddr := "off"
	if s.sec != nil {
		secureAddr = s.sec.ln.Addr().String()
	}
	s.log.Info("skiffd serving", "xds", s.xdsLn.Addr().String(), "secure", secureAddr, "monitoring", s.monLn.Addr().String(),
		"config_dir", s.o.ConfigDir, "objects", len(s.store.Snapshot().All()), "trust_domain", s.o.TrustDomain)
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	g.Stop()
	if sg != nil {
		sg.Stop()
	}
	shutdown, cancelShutdown := context.WithTimeout(context.Background(), time.Second)
	defer cancelShutdown()
	mon.Shutdown(shutdown)
	return err
}

func (s *Server) rebuildLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-s.rebuilds:
			s.rebuild(c)
		}
	}
}

// rebuild derives the registry and index of the store's current snapshot,
// installs them and pushes what changed.
func (s *Server) rebuild(c config.Change) {
	start := time.Now()
	snap := s.store.Snapshot()
	s.mu.Lock()
	built := s.lastSnap != nil && s.lastSnap.Version == snap.Version
	s.mu.Unlock()
	if built {
		// Built and served already: the first load's changes, queued
		// while Run built that version, would push it again to every
		// proxy connected by then.
		return
	}
	objs := snap.All()
	conv := gatewayapi.Convert(objs, gatewayapi.Options{DomainSuffix: s.o.DomainSuffix})
	all := append(append([]*config.Object(nil), objs...), conv.Objects...)
	reg := model.Build(all, model.Options{DomainSuffix: s.o.DomainSuffix, TrustDomain: s.o.TrustDomain, SidecarByDefault: s.o.LocalMesh})
	ix := index.Build(all, reg, index.Options{RootNamespace: s.o.RootNamespace, DomainSuffix: s.o.DomainSuffix})
	s.gen.Set(ix)

	s.mu.Lock()
	prev, prevSnap := s.lastIx, s.lastSnap
	s.lastIx, s.lastSnap, s.version, s.ready = ix, snap, snap.Version, true
	s.mu.Unlock()
	if prev == nil {
		return // the first version: proxies get it when they connect
	}
	req := classify(c, prevSnap, snap, prev, ix)
	req.Start = start
	s.xds.Push(req)
	s.log.Debug("config version pushed", "version", snap.Version, "full", req.Full, "reason", req.Reason,
		"changed", len(c.Keys), "build", time.Since(start))
}

func (s *Server) readyErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ready {
		return errors.New("configuration not loaded yet")
	}
	return nil
}

// configz dumps the store: every object with its source position, and the
// rejected ones with their errors.
func (s *Server) configz(w io.Writer) error {
	type obj struct {
		Kind, Namespace, Name, ResourceVersion, Source string
	}
	out := struct {
		Version uint64
		Objects []obj
		Errors  []string
	}{Version: s.store.Snapshot().Version}
	for _, o := range s.store.Snapshot().All() {
		out.Objects = append(out.Objects, obj{o.Kind.String(), o.Meta.Namespace, o.Meta.Name, o.Meta.ResourceVersion, o.Source.String()})
	}
	for _, e := range s.store.Errors() {
		out.Errors = append(out.Errors, e.Error())
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	return enc.Encode(out)
}
