package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/config/kube"
	"github.com/skiff-mesh/skiff/controlplane/gatewayapi"
	"github.com/skiff-mesh/skiff/controlplane/inject"
	"github.com/skiff-mesh/skiff/controlplane/kubeca"
	"github.com/skiff-mesh/skiff/controlplane/webhook"
)

// Kubernetes mode: with --kubeconfig (or in a pod, --kubeconfig=in-cluster)
// skiffd reads the mesh from the API server, writes validation status
// back, and serves the injection and validation webhooks on
// --webhook-addr, keeping Istio's webhook configurations pointed at them.

// restConfig loads the kubeconfig ("in-cluster" for the pod's own
// service account).
func (o *Options) restConfig() (*rest.Config, error) {
	if o.Kubeconfig == "in-cluster" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig in-cluster: %w", err)
		}
		withClientDefaults(cfg, o.Logger)
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig %s: %w", o.Kubeconfig, err)
	}
	withClientDefaults(cfg, o.Logger)
	return cfg, nil
}

// kubeSource builds the Kubernetes source; nil when not in Kubernetes mode.
func (s *Server) kubeSource() (*kube.Source, *rest.Config, error) {
	if s.o.Kubeconfig == "" {
		return nil, nil, nil
	}
	cfg, err := s.o.restConfig()
	if err != nil {
		return nil, nil, err
	}
	src, err := kube.New(cfg, kube.Options{
		DiscoverySelectors: discoverySelectors(s.o.MeshConfig.GetDiscoverySelectors()),
		GatewaySecretsOnly: true,
		Log:                s.log,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes source: %w", err)
	}
	return src, cfg, nil
}

// runKube starts the webhooks (every replica serves them) and competes for
// the leader Lease; the leader alone writes status, publishes the roots
// into istio-ca-root-cert and keeps the webhook configurations current.
func (s *Server) runKube(ctx context.Context, src *kube.Source, cfg *rest.Config, errc chan<- error) error {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	var leads []func(context.Context)
	leads = append(leads, func(ctx context.Context) {
		err := kube.NewStatusWriter(src, s.store, kube.StatusOptions{
			ValidationMessages: s.o.ValidationStatus, GatewayAPI: true,
			Gateway: gatewayapi.Options{DomainSuffix: s.o.DomainSuffix}, Log: s.log,
		}).Run(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Error("status writer stopped", "error", err)
		}
	})
	defer func() {
		go s.runLeaderElection(ctx, client, func(ctx context.Context) {
			var wg sync.WaitGroup
			for _, lead := range leads {
				wg.Add(1)
				go func() { defer wg.Done(); lead(ctx) }()
			}
			wg.Wait()
		})
	}()
	if s.sec == nil {
		return nil
	}
	// The mesh's roots in every selected namespace's istio-ca-root-cert
	// ConfigMap, which injected pods mount to verify skiffd.
	filter, err := kubeca.SelectorFilter(discoverySelectors(s.o.MeshConfig.GetDiscoverySelectors()))
	if err != nil {
		return fmt.Errorf("meshConfig.discoverySelectors: %w", err)
	}
	leads = append(leads, func(ctx context.Context) {
		rootsChanged, unsub := s.sec.ca.Subscribe()
		defer unsub()
		pub, err := kubeca.NewRootCertPublisher(client, kubeca.PublisherOptions{
			Bundle: s.sec.ca.TrustBundlePEM, Changed: rootsChanged, NamespaceFilter: filter, Log: s.log})
		if err == nil {
			err = pub.Run(ctx)
		}
		if err != nil && ctx.Err() == nil {
			errc <- fmt.Errorf("root cert publisher: %w", err)
		}
	})
	if s.o.WebhookAddr == "" {
		return nil
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ns := s.o.RootNamespace
	istiod := "istiod"
	if s.o.Revision != "" && s.o.Revision != inject.DefaultRevision {
		istiod += "-" + s.o.Revision
	}
	dnsNames := []string{istiod + "." + ns + ".svc", istiod + "." + ns + ".svc." + s.o.DomainSuffix, "skiffd." + ns + ".svc"}
	if s.o.WebhookURL != "" {
		u, err := url.Parse(s.o.WebhookURL)
		if err != nil || u.Scheme != "https" || u.Hostname() == "" {
			return fmt.Errorf("--webhook-url %q: want https://HOST[:PORT], the address the API server calls the webhooks at", s.o.WebhookURL)
		}
		dnsNames = append(dnsNames, u.Hostname())
	}
	injOpts, err := s.injectOptions(client, istiod)
	if err != nil {
		return err
	}
	wh, err := webhook.New(webhook.Options{
		Addr: s.o.WebhookAddr, CA: s.sec.ca, DNSNames: dnsNames, Logger: s.log, Inject: injOpts,
		Namespaces: func(name string) (*corev1.Namespace, error) {
			o := s.store.Snapshot().Get(config.Key{Kind: config.Namespace, Name: name})
			if o == nil {
				return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, name)
			}
			n, _ := o.Spec.(*corev1.Namespace)
			return n, nil
		},
	})
	if err != nil {
		return fmt.Errorf("--webhook-addr %s: %w", s.o.WebhookAddr, err)
	}
	s.webhookAddr = wh.Addr()
	go func() {
		if err := wh.Run(ctx); err != nil && ctx.Err() == nil {
			errc <- fmt.Errorf("webhook server: %w", err)
		}
	}()
	leads = append(leads, func(ctx context.Context) {
		changed, cancel := s.sec.ca.Subscribe()
		defer cancel()
		webhook.Keep(ctx, client, dyn, webhook.ConfigOptions{
			URL: s.o.WebhookURL, Service: webhook.ServiceRef{Namespace: ns, Name: istiod}, Namespace: ns, Revision: s.o.Revision,
		}, s.sec.ca.TrustBundlePEM, changed, time.Minute, s.log)
	})
	return nil
}

// injectOptions are the injector's settings from skiffd's own: revision,
// image, trust domain, the CA address of this revision's istiod Service,
// the mesh config's defaultConfig, and native sidecars when the API server
// has them (Kubernetes 1.29 and later).
func (s *Server) injectOptions(client kubernetes.Interface, istiod string) (inject.Options, error) {
	o := inject.Options{
		Image: s.o.ProxyImage, Revision: s.o.Revision, TrustDomain: s.o.TrustDomain,
		CAAddr: istiod + "." + s.o.RootNamespace + ".svc:15012",
	}
	if dc := s.o.MeshConfig.GetDefaultConfig(); dc != nil {
		pc := proto.Clone(dc).(*meshv1alpha1.ProxyConfig)
		if a := pc.GetDiscoveryAddress(); a == "" || a == "istiod.istio-system.svc:15012" {
			pc.DiscoveryAddress = o.CAAddr
		}
		b, err := protojson.Marshal(pc)
		if err != nil {
			return o, fmt.Errorf("meshConfig.defaultConfig: %w", err)
		}
		o.ProxyConfig = string(b)
	}
	if v, err := client.Discovery().ServerVersion(); err == nil {
		major, _ := strconv.Atoi(strings.TrimRight(v.Major, "+"))
		minor, _ := strconv.Atoi(strings.TrimRight(v.Minor, "+"))
		o.NativeSidecar = major > 1 || (major == 1 && minor >= 29)
	} else {
		s.log.Warn("could not read the API server's version; injecting the sidecar as a regular container", "error", err)
	}
	return o, nil
}

func discoverySelectors(in []*meshv1alpha1.LabelSelector) []metav1.LabelSelector {
	out := make([]metav1.LabelSelector, 0, len(in))
	for _, sel := range in {
		ls := metav1.LabelSelector{MatchLabels: sel.GetMatchLabels()}
		for _, e := range sel.GetMatchExpressions() {
			ls.MatchExpressions = append(ls.MatchExpressions, metav1.LabelSelectorRequirement{
				Key: e.GetKey(), Operator: metav1.LabelSelectorOperator(e.GetOperator()), Values: e.GetValues(),
			})
		}
		out = append(out, ls)
	}
	return out
}

// withClientDefaults raises client-go's request rate limits to istiod's
// (its initial lists of ~30 kinds would otherwise wait on the 5 qps
// default) and sends client-go's klog output to skiffd's log.
func withClientDefaults(cfg *rest.Config, log *slog.Logger) {
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 100, 200
	}
	if log != nil {
		// klog's logger is process-wide and not safe to set concurrently:
		// the first server's log takes it.
		klogOnce.Do(func() { klog.SetSlogLogger(log.With("component", "client-go")) })
	}
}

var klogOnce sync.Once
