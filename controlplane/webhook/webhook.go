// Package webhook serves skiffd's admission webhooks on Istio's port 15017
// — sidecar injection (/inject) and config validation (/validate) over TLS
// with the CA's serving certificate — and keeps the API server's
// MutatingWebhookConfiguration and ValidatingWebhookConfiguration pointing
// at them with the current CA bundle, as istiod does.
package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/skiff-mesh/skiff/controlplane/ca"
	"github.com/skiff-mesh/skiff/controlplane/inject"
)

// DefaultAddr is Istio's webhook port.
const DefaultAddr = ":15017"

// DefaultDNSNames are the names istiod's webhook certificate carries: the
// istiod Service in istio-system, as the API server dials it.
var DefaultDNSNames = []string{"istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local", "istiod.istio-system", "istiod"}

// Options configure New.
type Options struct {
	// Addr to listen on; DefaultAddr when empty.
	Addr string
	// CA issues the renewing serving certificate for DNSNames. Either CA or
	// TLSConfig is required; TLSConfig wins when both are set.
	CA *ca.CA
	// TLSConfig, when set, is used as is (it must carry a certificate).
	TLSConfig *tls.Config
	// DNSNames of the serving certificate; DefaultDNSNames when empty. IP
	// literals become IP SANs (a webhook called at https://127.0.0.1:PORT
	// needs "127.0.0.1").
	DNSNames []string
	// CertTTL of the serving certificate; the CA's workload default when zero.
	CertTTL time.Duration
	// Inject are the injector's settings (revision, image, …).
	Inject inject.Options
	// Namespaces looks a namespace up for the injection decision; it
	// overrides Inject.Namespaces when set.
	Namespaces func(name string) (*corev1.Namespace, error)
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
}

// Server is the webhook HTTPS server: /inject, /inject/..., /validate and
// /ready.
type Server struct {
	ln  net.Listener
	srv *http.Server
	tls *tls.Config
}

// New binds the listener and prepares the handlers; Run serves.
func New(o Options) (*Server, error) {
	if o.Addr == "" {
		o.Addr = DefaultAddr
	}
	if len(o.DNSNames) == 0 {
		o.DNSNames = DefaultDNSNames
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Namespaces != nil {
		o.Inject.Namespaces = o.Namespaces
	}
	tlsCfg := o.TLSConfig
	switch {
	case tlsCfg != nil:
		tlsCfg = tlsCfg.Clone()
	case o.CA != nil:
		sc, err := o.CA.ServingCertificate(o.DNSNames, o.CertTTL)
		if err != nil {
			return nil, fmt.Errorf("webhook: serving certificate for %v: %w", o.DNSNames, err)
		}
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: sc.GetCertificate}
	default:
		return nil, errors.New("webhook: Options.CA or Options.TLSConfig is required: the API server calls webhooks over HTTPS only")
	}
	if len(tlsCfg.NextProtos) == 0 {
		tlsCfg.NextProtos = []string{"h2", "http/1.1"}
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("--webhook-addr %s: %w", o.Addr, err)
	}
	s := &Server{ln: ln, tls: tlsCfg}
	s.srv = &http.Server{
		Handler:           Handler(o.Inject, o.Logger),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(o.Logger.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Handler returns the webhook routes without TLS: /inject (and Istio's
// /inject/... paths), /validate and /ready.
func Handler(injectOpts inject.Options, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	mux := http.NewServeMux()
	inj := inject.NewWebhook(injectOpts)
	mux.Handle("/inject", inj)
	mux.Handle("/inject/", inj)
	mux.Handle("/validate", &validator{log: log})
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ready\n"))
	})
	return mux
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Run serves until ctx ends, then drains requests in flight for up to five
// seconds.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(tls.NewListener(s.ln, s.tls)) }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("webhook server on %s: %w", s.ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		_ = s.srv.Close()
	}
	return nil
}

// Close stops the server at once, closing the listener even when Run was
// never called.
func (s *Server) Close() error {
	err := s.srv.Close()
	if cerr := s.ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
		err = cerr
	}
	return err
}
