package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/kubernetes"

	"github.com/skiff-mesh/skiff/controlplane/ca"
	"github.com/skiff-mesh/skiff/controlplane/kubeca"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// DefaultCADir is where skiffd keeps its self-signed root unless told
// otherwise: under its working directory, as istiod keeps istio-ca-secret
// in its own namespace.
const DefaultCADir = "var/lib/skiffd/ca"

// ServingDNSNames are the names on the 15012 serving certificate: istiod's
// service names, which proxies use as the TLS server name (pilot-agent's
// default when the CA address is an IP), and skiffd's own.
var ServingDNSNames = []string{"istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local", "skiffd.istio-system.svc"}

// pluggedRotationOverlap is how long a replaced cacerts root stays
// trusted: one default workload lifetime, by which every workload has
// renewed (at half life) from the new one.
const pluggedRotationOverlap = ca.DefaultWorkloadCertTTL

// secure is the 15012 endpoint: the CA and what it needs.
type secure struct {
	ln      net.Listener
	ca      *ca.CA
	serving *ca.ServingCert
	tokens  *ca.TokensFile // nil without --bootstrap-tokens
	reg     *prometheus.Registry
	auth    ca.Authenticator // the CA's: bootstrap tokens, TokenReview, client certificates
}

// newSecure makes the CA (plugged-in cacerts when present, else the
// self-signed root in CADir), its authenticators and the bound listener.
func newSecure(o *Options, listen func(flag, addr string) (net.Listener, error)) (*secure, error) {
	if o.WorkloadCertTTL < 0 {
		return nil, fmt.Errorf("--workload-cert-ttl %s: must be positive (Istio's default is 24h)", o.WorkloadCertTTL)
	}
	if o.MaxWorkloadCertTTL < 0 {
		return nil, fmt.Errorf("--max-workload-cert-ttl %s: must be positive (Istio's default is 2160h, 90 days)", o.MaxWorkloadCertTTL)
	}
	wl, mx := cmp0(o.WorkloadCertTTL, ca.DefaultWorkloadCertTTL), cmp0(o.MaxWorkloadCertTTL, ca.DefaultMaxWorkloadTTL)
	if wl > mx {
		return nil, fmt.Errorf("--workload-cert-ttl %s exceeds --max-workload-cert-ttl %s: lower the first or raise the second", wl, mx)
	}
	// In Kubernetes mode without --ca-dir the root lives in the
	// istio-ca-secret Secret of the root namespace, as istiod keeps it, so
	// replicas share it and a rescheduled pod keeps it.
	secretStore := o.CADir == "" && o.Kubeconfig != ""
	if o.CADir == "" && !secretStore {
		o.CADir = DefaultCADir
	}
	if o.RootCertOut != "" && filepath.Clean(o.RootCertOut) == filepath.Join(filepath.Clean(o.CADir), "root-cert.pem") {
		return nil, fmt.Errorf("--root-cert-out %s is the CA's own root-cert.pem in --ca-dir %s: write the trust bundle elsewhere", o.RootCertOut, o.CADir)
	}
	s := &secure{reg: prometheus.NewRegistry()}
	var auths []ca.Authenticator
	if o.BootstrapTokensFile != "" {
		t, err := ca.NewTokensFile(o.BootstrapTokensFile, ca.TokensFileOptions{Logger: o.Logger})
		if err != nil {
			return nil, fmt.Errorf("--bootstrap-tokens: %w", err)
		}
		s.tokens = t
		auths = append(auths, t)
	}
	if o.Kubeconfig != "" {
		// Kubernetes mode: a pod's projected service-account token
		// (audience istio-ca), checked with a TokenReview, as istiod does.
		cfg, err := o.restConfig()
		if err != nil {
			return nil, err
		}
		client, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig: %w", err)
		}
		auths = append(auths, kubeca.NewTokenReviewAuthenticator(client, kubeca.TokenReviewOptions{TrustDomain: o.TrustDomain}))
	}
	// A proxy renews with the certificate it holds once its bootstrap
	// credential is gone, as Istio's agents do.
	auths = append(auths, ca.ClientCertAuthenticator{})
	var store ca.Store = ca.DirStore{Dir: o.CADir}
	if secretStore {
		cfg, err := o.restConfig()
		if err != nil {
			return nil, err
		}
		client, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig: %w", err)
		}
		store = &kubeca.SecretStore{Client: client, Namespace: o.RootNamespace}
	}
	co := ca.Options{
		TrustDomain: o.TrustDomain, RootKey: o.RootKey,
		WorkloadCertTTL: wl, MaxWorkloadCertTTL: mx,
		Authenticator: ca.FirstOf(auths...), Registry: s.reg, Logger: o.Logger,
	}
	s.auth = co.Authenticator
	plugged, err := hasPluggedCerts(o.CACertsDir)
	if err != nil {
		return nil, err
	}
	if plugged {
		co.PluggedCertsDir = o.CACertsDir
	} else {
		if o.CACertsDir != "" {
			// As istiod without a cacerts Secret; a directory that is not
			// there at all is more likely a typo, so it is said louder.
			log := o.Logger.Info
			if _, err := os.Stat(o.CACertsDir); err != nil {
				log = o.Logger.Warn
			}
			log("no plugged-in CA certificates in --cacerts-dir; using the self-signed root", "cacerts_dir", o.CACertsDir, "root_in", store.Where("ca-cert.pem"))
		}
		co.Store = store
	}
	if s.ca, err = ca.New(co); err != nil {
		if plugged {
			return nil, fmt.Errorf("--cacerts-dir: %w", err)
		}
		if secretStore {
			return nil, fmt.Errorf("the CA's self-signed root: %w; give skiffd's service account get/create/update on that Secret, or --ca-dir DIR, or --cacerts-dir with Istio's cacerts", err)
		}
		return nil, fmt.Errorf("--ca-dir %s: %w; give a directory skiffd can write (the root and its key live there), or --cacerts-dir with Istio's cacerts", o.CADir, err)
	}
	if s.ln, err = listen("secure-addr", o.SecureAddr); err != nil {
		s.ca.Close()
		return nil, fmt.Errorf("--secure-addr %s: %w; stop what holds it, pass another address, or --secure-addr \"\" to serve no CA", o.SecureAddr, err)
	}
	names := append([]string(nil), ServingDNSNames...)
	if ip := s.ln.Addr().(*net.TCPAddr).IP; !ip.IsUnspecified() {
		names = append(names, ip.String())
	}
	if s.serving, err = s.ca.ServingCertificate(names, 0); err != nil {
		s.close()
		return nil, err
	}
	if o.RootCertOut != "" {
		if err := writeFileAtomic(o.RootCertOut, s.ca.TrustBundlePEM(), 0o644); err != nil {
			s.close()
			return nil, fmt.Errorf("--root-cert-out: %w", err)
		}
	}
	return s, nil
}

func cmp0(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// hasPluggedCerts is whether dir holds Istio's cacerts (its ca-cert.pem or
// ca-key.pem); a missing directory or files mean "none", as istiod falls
// back to its self-signed root when the cacerts Secret is absent.
func hasPluggedCerts(dir string) (bool, error) {
	if dir == "" {
		return false, nil
	}
	for _, n := range []string{"ca-cert.pem", "ca-key.pem"} {
		_, err := os.Stat(filepath.Join(dir, n))
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("--cacerts-dir: %w; make it readable by skiffd, or drop the flag to use a self-signed root", err)
		}
	}
	return false, nil
}

func (s *secure) close() {
	s.ln.Close()
	s.ca.Close()
}

// run serves the CA and ADS over TLS and follows the tokens file, the
// cacerts directory and the trust bundle until ctx ends.
func (s *secure) run(ctx context.Context, o *Options, ads *xds.Server, errc chan<- error) *grpc.Server {
	g := grpc.NewServer(append(xds.GRPCServerOptions(),
		grpc.Creds(credentials.NewTLS(s.serving.TLSConfig())),
		grpc.StreamInterceptor(s.authenticateADS),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}))...)
	ads.Register(g)
	s.ca.Register(g)
	go func() {
		if err := g.Serve(s.ln); err != nil {
			errc <- fmt.Errorf("secure server (CA and xDS over TLS): %w", err)
		}
	}()
	if s.tokens != nil {
		go s.tokens.Run(ctx)
	}
	go s.ca.WatchPlugged(ctx, 2*time.Second, pluggedRotationOverlap)
	if o.RootCertOut != "" {
		changed, cancel := s.ca.Subscribe()
		go func() {
			defer cancel()
			for {
				select {
				case <-ctx.Done():
					return
				case <-changed:
					if err := writeFileAtomic(o.RootCertOut, s.ca.TrustBundlePEM(), 0o644); err != nil {
						o.Logger.Error("could not rewrite the trust bundle; pods started now get the old roots", "file", o.RootCertOut, "err", err)
					}
				}
			}
		}()
	}
	return g
}

// writeFileAtomic replaces path through a temporary file and a rename, so
// a reader never sees half a bundle.
func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// authenticateADS makes xDS over 15012 authenticated, as istiod's is: the
// caller shows the credential the CA accepts (its service-account token,
// the local mesh's bootstrap token, or a workload certificate), and the
// identity rides in the stream's context for authorizeProxy. Other
// methods (the CA's own) authenticate themselves.
func (s *secure) authenticateADS(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !strings.HasPrefix(info.FullMethod, "/envoy.service.discovery.v3.AggregatedDiscoveryService/") {
		return handler(srv, ss)
	}
	id, err := s.auth.Authenticate(ss.Context())
	if err != nil {
		return status.Errorf(codes.Unauthenticated, "xDS on the secure port needs the workload's credential (authorization: Bearer <service-account token>, or its mesh certificate): %v", err)
	}
	return handler(srv, &identityStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), identityKey{}, id)})
}

type identityKey struct{}

type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identityStream) Context() context.Context { return s.ctx }

// authorizeProxy lets an authenticated caller be only a proxy of its own
// namespace (istiod's check): a token for namespace A cannot fetch the
// config, and the gateway secrets, of a proxy in namespace B. Streams on
// the plaintext port carry no identity and are not checked here.
func authorizeProxy(ctx context.Context, p *xds.Proxy) error {
	id, ok := ctx.Value(identityKey{}).(ca.Identity)
	if !ok {
		return nil
	}
	if p.Namespace != id.Namespace {
		return status.Errorf(codes.PermissionDenied, "proxy %s claims namespace %q but its credential is for %s: a proxy may only ask for the config of its own namespace", p.ID, p.Namespace, id.SPIFFEID())
	}
	return nil
}
