// Package kube is the config source that watches a Kubernetes API server, as
// `skiffd --kubeconfig` uses it: shared informers for the Kubernetes kinds
// the mesh model reads (Services, EndpointSlices, Pods, Namespaces,
// ServiceAccounts, Nodes, Secrets, ConfigMaps) and dynamic informers for
// every Istio and Gateway API kind the config registry knows, each object
// turned into the same config.Object the file source produces and handed to
// the store through config.Sink. Istio's meshConfig.discoverySelectors limit
// the namespaces read. StatusWriter, in the same package, writes what the
// store found back into the objects' status.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// Node is the kind of Kubernetes Nodes, which the model reads for pod
// locality (topology.kubernetes.io/region and zone, topology.istio.io/subzone
// labels). It is not among the file source's kinds: the local mesh has none.
var Node = config.Kind{Group: "", Version: "v1", Kind: "Node"}

// OriginPrefix starts the store origin of every object this source
// delivers: "kubernetes/Service", "kubernetes/VirtualService.networking.istio.io".
const OriginPrefix = "kubernetes/"

// Options tune a Source; the zero value reads every namespace.
type Options struct {
	// DiscoverySelectors are Istio's meshConfig.discoverySelectors: a
	// namespace is read when its labels match any of them; none means every
	// namespace. Objects of namespaces outside the selection never reach
	// the store, and a namespace whose labels enter or leave the selection
	// adds or removes its objects. Cluster-scoped kinds (Node,
	// GatewayClass) are not filtered.
	DiscoverySelectors []metav1.LabelSelector
	// GatewaySecretsOnly keeps only Secrets a gateway can use as a
	// credential in memory and in the store: type kubernetes.io/tls, or any
	// type holding Istio's credential keys (tls.crt and tls.key, cert and
	// key, cacert, ca.crt). Service account tokens, image pull secrets and
	// Helm releases are not even listed; other Secrets are held as metadata
	// only.
	GatewaySecretsOnly bool
	// Resync re-delivers every cached object this often (0: never; the
	// watch is the source of truth and unchanged objects are skipped anyway).
	Resync time.Duration
	// Log receives what could not be watched; nil discards.
	Log *slog.Logger
}

// Source reads config from a Kubernetes API server.
type Source struct {
	opts      Options
	host      string
	client    kubernetes.Interface
	dyn       dynamic.Interface
	disc      discovery.DiscoveryInterface
	selectors []labels.Selector
	synced    chan struct{}

	mu       sync.Mutex // guards kinds and nsInf once Run has set them
	nsInf    cache.SharedIndexInformer
	kinds    []*kindSync
	resolved map[config.Kind]schema.GroupVersionResource
}

// New returns a source reading the API server cfg points at. It checks the
// options and builds the clients; it does not contact the server (Run does).
func New(cfg *rest.Config, opts Options) (*Source, error) {
	if cfg == nil {
		return nil, errors.New("kubernetes config source: no API server configuration (pass --kubeconfig FILE, or run in a pod)")
	}
	sels := make([]labels.Selector, 0, len(opts.DiscoverySelectors))
	for i := range opts.DiscoverySelectors {
		sel, err := metav1.LabelSelectorAsSelector(&opts.DiscoverySelectors[i])
		if err != nil {
			return nil, fmt.Errorf("meshConfig.discoverySelectors[%d]: %v; fix the label selector (matchLabels, or matchExpressions with operator In, NotIn, Exists or DoesNotExist)", i, err)
		}
		sels = append(sels, sel)
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	cfg = rest.CopyConfig(cfg)
	if cfg.UserAgent == "" {
		cfg.UserAgent = "skiffd"
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for %s: %w", cfg.Host, err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes dynamic client for %s: %w", cfg.Host, err)
	}
	return &Source{opts: opts, host: cfg.Host, client: client, dyn: dyn, disc: client.Discovery(),
		selectors: sels, synced: make(chan struct{})}, nil
}

// Synced is closed once every watched kind has been listed and given to
// the sink, so a server can wait for the whole config before serving.
func (s *Source) Synced() <-chan struct{} { return s.synced }

// Run lists and watches every kind into sink until ctx is done. It fails if
// the API server cannot be reached at start (discovery fails); after that,
// watch errors are retried by the informers, which resume from the last
// resource version seen, so a restarted API server loses nothing. Call it
// once.
func (s *Source) Run(ctx context.Context, sink config.Sink) error {
	resolved, missing, err := resolveKinds(s.disc, dynamicKinds())
	if err != nil {
		return fmt.Errorf("kubernetes API at %s: %w; check --kubeconfig and that the API server is reachable", s.host, err)
	}
	for _, k := range missing {
		s.opts.Log.Warn("kind not served by the API server (its CRD is not installed); not watched", "kind", k.String())
	}

	nsInf := s.namespaceInformer()
	ks := s.typedKinds(nsInf)
	for _, k := range dynamicKinds() {
		if gvr, ok := resolved[k]; ok {
			ks = append(ks, s.dynamicKind(k, gvr))
		}
	}
	s.mu.Lock()
	s.nsInf, s.kinds, s.resolved = nsInf, ks, resolved
	s.mu.Unlock()

	if _, err := nsInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.namespaceChanged(nil, obj) },
		UpdateFunc: func(old, obj any) { s.namespaceChanged(old, obj) },
		DeleteFunc: func(obj any) { s.namespaceChanged(nil, obj) },
	}); err != nil {
		return fmt.Errorf("namespace informer: %w", err)
	}
	for _, k := range ks {
		if err := k.start(); err != nil {
			return fmt.Errorf("%s informer: %w", k.kind, err)
		}
	}

	var wg sync.WaitGroup
	started := map[cache.SharedIndexInformer]bool{}
	for _, inf := range append([]cache.SharedIndexInformer{nsInf}, informersOf(ks)...) {
		if started[inf] {
			continue
		}
		started[inf] = true
		wg.Add(1)
		go func() { defer wg.Done(); inf.RunWithContext(ctx) }()
	}
	var done sync.WaitGroup
	for _, k := range ks {
		done.Add(1)
		wg.Add(1)
		go func() { defer wg.Done(); k.run(ctx, sink, nsInf.HasSynced, done.Done) }()
	}
	go func() {
		done.Wait()
		if ctx.Err() == nil {
			close(s.synced)
		}
	}()
	<-ctx.Done()
	wg.Wait()
	return nil
}

func informersOf(ks []*kindSync) []cache.SharedIndexInformer {
	out := make([]cache.SharedIndexInformer, len(ks))
	for i, k := range ks {
		out[i] = k.inf
	}
	return out
}

// selected reports whether objects of namespace ns are read.
func (s *Source) selected(ns string) bool {
	if len(s.selectors) == 0 {
		return true
	}
	s.mu.Lock()
	nsInf := s.nsInf
	s.mu.Unlock()
	if nsInf == nil {
		return false
	}
	obj, ok, err := nsInf.GetIndexer().GetByKey(ns)
	if err != nil || !ok {
		return false
	}
	return s.matches(obj)
}

// matches reports whether a Namespace object's labels match a selector.
func (s *Source) matches(obj any) bool {
	if len(s.selectors) == 0 {
		return true
	}
	m, err := metaOf(obj)
	if err != nil {
		return false
	}
	set := labels.Set(m.GetLabels())
	for _, sel := range s.selectors {
		if sel.Matches(set) {
			return true
		}
	}
	return false
}

// namespaceChanged re-examines a namespace's objects in every kind when it
// appears, goes, or its labels move it in or out of the selection. It only
// marks keys: callbacks never block.
func (s *Source) namespaceChanged(old, obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	m, err := metaOf(obj)
	if err != nil {
		return
	}
	if old != nil && s.matches(old) == s.matches(obj) {
		return
	}
	s.mu.Lock()
	ks := s.kinds
	s.mu.Unlock()
	for _, k := range ks {
		k.markNamespace(m.GetName())
	}
}

// dynamicKinds are the registry's Istio and Gateway API kinds, read through
// the dynamic client.
func dynamicKinds() []config.Kind {
	var out []config.Kind
	for _, k := range config.SupportedKinds() {
		if strings.HasSuffix(k.Group, "istio.io") || k.Group == "gateway.networking.k8s.io" {
			out = append(out, k)
		}
	}
	return out
}

// originOf names the store origin of a kind's objects.
func originOf(k config.Kind) string {
	if k.Group == "" {
		return OriginPrefix + k.Kind
	}
	return OriginPrefix + k.Kind + "." + k.Group
}

// resolveKinds finds the resource (plural name and served version) of each
// kind: the group's preferred version when the decoder reads the kind at
// it (so the API server's deprecation warnings for old versions do not
// apply), else the registry's version, else any served version the decoder
// reads.
func resolveKinds(disc discovery.DiscoveryInterface, kinds []config.Kind) (map[config.Kind]schema.GroupVersionResource, []config.Kind, error) {
	groups, err := disc.ServerGroups()
	if err != nil {
		return nil, nil, fmt.Errorf("discovery: %w", err)
	}
	served := map[string]metav1.APIGroup{}
	for _, g := range groups.Groups {
		served[g.Name] = g
	}
	lists := map[string]*metav1.APIResourceList{}
	resources := func(gv string) *metav1.APIResourceList {
		if l, ok := lists[gv]; ok {
			return l
		}
		l, err := disc.ServerResourcesForGroupVersion(gv)
		if err != nil {
			l = nil
		}
		lists[gv] = l
		return l
	}
	out := map[config.Kind]schema.GroupVersionResource{}
	var missing []config.Kind
	for _, k := range kinds {
		g, ok := served[k.Group]
		if !ok {
			missing = append(missing, k)
			continue
		}
		versions := []string{g.PreferredVersion.Version, k.Version}
		for _, v := range g.Versions {
			versions = append(versions, v.Version)
		}
		found := false
		for _, v := range versions {
			if !decodable(k, v) {
				continue
			}
			l := resources(k.Group + "/" + v)
			if l == nil {
				continue
			}
			for _, r := range l.APIResources {
				if r.Kind == k.Kind && !strings.Contains(r.Name, "/") {
					out[k] = schema.GroupVersionResource{Group: k.Group, Version: v, Resource: r.Name}
					found = true
					break
				}
			}
			if found {
				break
			}
		}
		if !found {
			missing = append(missing, k)
		}
	}
	return out, missing, nil
}

// Interface guard.
var _ config.Source = (*Source)(nil)

// decodable reports whether the config decoder reads kind k at version v.
func decodable(k config.Kind, v string) bool {
	doc := fmt.Sprintf("{apiVersion: %s/%s, kind: %s, metadata: {name: probe}}", k.Group, v, k.Kind)
	objs, errs := config.Decode([]byte(doc), "")
	return len(errs) == 0 && len(objs) == 1
}
