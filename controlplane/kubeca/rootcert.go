package kubeca

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

const (
	// DefaultConfigMapName is Istio's per-namespace root certificate ConfigMap.
	DefaultConfigMapName = "istio-ca-root-cert"
	// RootCertKey is its data key, the file proxies read the roots from.
	RootCertKey = "root-cert.pem"
)

// configMapLabels mark the ConfigMap as Istio's, as istiod labels it.
var configMapLabels = map[string]string{"istio.io/config": "true"}

// ignoredNamespaces get no ConfigMap: Kubernetes' own, where no mesh
// workload runs; kube-system is served (istiod does, for ztunnel).
var ignoredNamespaces = map[string]bool{"kube-public": true, "kube-node-lease": true, "local-path-storage": true}

const (
	// maxAttempts of one namespace before it waits for the next event or resync.
	maxAttempts = 8
	// resync replays every namespace now and then, so one that exhausted
	// its attempts (an API server outage) is tried again.
	resync = 10 * time.Minute
)

// PublisherOptions configure NewRootCertPublisher.
type PublisherOptions struct {
	// ConfigMapName; DefaultConfigMapName when empty.
	ConfigMapName string
	// Bundle returns the PEM trust bundle to publish (ca.CA.TrustBundlePEM); required.
	Bundle func() []byte
	// Changed receives a value when the bundle changes (ca.CA.Subscribe); nil: never.
	Changed <-chan struct{}
	// NamespaceFilter selects namespaces (meshConfig.discoverySelectors, see
	// SelectorFilter); nil selects all.
	NamespaceFilter func(ns *corev1.Namespace) bool
	// Log; slog.Default() when nil.
	Log *slog.Logger
}

// RootCertPublisher keeps the root certificate ConfigMap in every selected
// namespace equal to the CA's trust bundle, as istiod's namespace
// controller does: created in new namespaces, edits and deletions
// reverted, all rewritten when the roots change. Terminating namespaces
// are left alone, and so are ConfigMaps of namespaces no longer selected.
type RootCertPublisher struct {
	client kubernetes.Interface
	opts   PublisherOptions
	log    *slog.Logger

	queue      workqueue.TypedRateLimitingInterface[string]
	namespaces corelisters.NamespaceLister
	configMaps corelisters.ConfigMapLister
}

// NewRootCertPublisher checks opts; Run does the work.
func NewRootCertPublisher(client kubernetes.Interface, opts PublisherOptions) (*RootCertPublisher, error) {
	if client == nil {
		return nil, errors.New("kubeca: NewRootCertPublisher needs a Kubernetes client")
	}
	if opts.Bundle == nil {
		return nil, errors.New("kubeca: PublisherOptions.Bundle is required: pass the CA's TrustBundlePEM")
	}
	if opts.ConfigMapName == "" {
		opts.ConfigMapName = DefaultConfigMapName
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	return &RootCertPublisher{client: client, opts: opts, log: log.With("component", "root-cert-publisher", "configmap", opts.ConfigMapName)}, nil
}

// Run watches namespaces and the ConfigMaps until ctx ends; call it once.
// It returns an error only when its informers cannot start.
func (p *RootCertPublisher) Run(ctx context.Context) error {
	p.queue = workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	defer p.queue.ShutDown()

	nsFactory := informers.NewSharedInformerFactory(p.client, resync)
	cmFactory := informers.NewSharedInformerFactoryWithOptions(p.client, resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", p.opts.ConfigMapName).String()
		}))
	nsInf := nsFactory.Core().V1().Namespaces()
	cmInf := cmFactory.Core().V1().ConfigMaps()
	p.namespaces, p.configMaps = nsInf.Lister(), cmInf.Lister()

	// Handlers only enqueue names: they never block, and reconcile decides.
	enqueueNS := func(obj any) {
		if ns, ok := obj.(*corev1.Namespace); ok {
			p.queue.Add(ns.Name)
		}
	}
	if _, err := nsInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueueNS,
		UpdateFunc: func(_, obj any) { enqueueNS(obj) },
	}); err != nil {
		return fmt.Errorf("root cert publisher: namespace informer: %w", err)
	}
	enqueueCM := func(obj any) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		if cm, ok := obj.(*corev1.ConfigMap); ok {
			p.queue.Add(cm.Namespace)
		}
	}
	if _, err := cmInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueueCM,
		UpdateFunc: func(_, obj any) { enqueueCM(obj) },
		DeleteFunc: enqueueCM,
	}); err != nil {
		return fmt.Errorf("root cert publisher: configmap informer: %w", err)
	}

	nsFactory.Start(ctx.Done())
	cmFactory.Start(ctx.Done())
	defer nsFactory.Shutdown()
	defer cmFactory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), nsInf.Informer().HasSynced, cmInf.Informer().HasSynced) {
		return nil // ctx ended first
	}
	p.log.Info("publishing the CA's root certificates to selected namespaces")

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for p.next(ctx) {
		}
	}()
	for {
		select {
		case <-ctx.Done():
			p.queue.ShutDown()
			wg.Wait()
			return nil
		case <-p.opts.Changed:
			all, err := p.namespaces.List(labels.Everything())
			if err != nil {
				p.log.Error("listing namespaces from the informer cache", "err", err)
				continue
			}
			for _, ns := range all {
				p.queue.Add(ns.Name)
			}
		}
	}
}

// next reconciles one namespace; false once the queue is shut down.
func (p *RootCertPublisher) next(ctx context.Context) bool {
	ns, quit := p.queue.Get()
	if quit {
		return false
	}
	defer p.queue.Done(ns)
	err := p.reconcile(ctx, ns)
	switch {
	case err == nil:
		p.queue.Forget(ns)
	case p.queue.NumRequeues(ns) < maxAttempts-1:
		p.queue.AddRateLimited(ns)
	default:
		p.queue.Forget(ns)
		p.log.Error("root certificate ConfigMap not written; retried, will try again on the next change or resync", "namespace", ns, "attempts", maxAttempts, "err", err)
	}
	return true
}

// selected reports whether ns should hold the ConfigMap.
func (p *RootCertPublisher) selected(ns *corev1.Namespace) bool {
	if ns.Status.Phase == corev1.NamespaceTerminating || ns.DeletionTimestamp != nil || ignoredNamespaces[ns.Name] {
		return false
	}
	return p.opts.NamespaceFilter == nil || p.opts.NamespaceFilter(ns)
}

// reconcile writes the bundle into namespace name's ConfigMap when it is
// missing or differs; other data keys a user added are kept, as istiod does.
func (p *RootCertPublisher) reconcile(ctx context.Context, name string) error {
	ns, err := p.namespaces.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !p.selected(ns) {
		return nil
	}
	bundle := string(p.opts.Bundle())
	if bundle == "" {
		// No roots yet: nothing worth publishing; Changed brings us back.
		return nil
	}
	cms := p.client.CoreV1().ConfigMaps(name)
	cm, err := p.configMaps.ConfigMaps(name).Get(p.opts.ConfigMapName)
	switch {
	case apierrors.IsNotFound(err):
		_, err := cms.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: p.opts.ConfigMapName, Namespace: name, Labels: configMapLabels},
			Data:       map[string]string{RootCertKey: bundle},
		}, metav1.CreateOptions{})
		if gone(err) {
			return nil
		}
		if err != nil {
			// AlreadyExists: the informer is behind; the retry sees it.
			return fmt.Errorf("creating ConfigMap %s/%s: %w", name, p.opts.ConfigMapName, err)
		}
		p.log.Info("root certificate ConfigMap created", "namespace", name)
		return nil
	case err != nil:
		return err
	case cm.Data[RootCertKey] == bundle:
		return nil
	}
	up := cm.DeepCopy()
	if up.Data == nil {
		up.Data = map[string]string{}
	}
	up.Data[RootCertKey] = bundle
	if _, err := cms.Update(ctx, up, metav1.UpdateOptions{}); err != nil {
		if gone(err) {
			return nil
		}
		// Conflict: someone wrote in between; the retry reads again.
		return fmt.Errorf("updating ConfigMap %s/%s data %s: %w", name, p.opts.ConfigMapName, RootCertKey, err)
	}
	p.log.Info("root certificate ConfigMap updated", "namespace", name)
	return nil
}

// gone reports a write refused because the namespace or object went away
// or the namespace is terminating: nothing left to do there.
func gone(err error) bool {
	return err != nil && (apierrors.IsNotFound(err) || apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause))
}

// SelectorFilter turns meshConfig.discoverySelectors into a
// NamespaceFilter: a namespace is selected when any selector matches its
// labels, and every namespace when there are none.
func SelectorFilter(selectors []metav1.LabelSelector) (func(*corev1.Namespace) bool, error) {
	if len(selectors) == 0 {
		return nil, nil
	}
	sels := make([]labels.Selector, 0, len(selectors))
	for i := range selectors {
		s, err := metav1.LabelSelectorAsSelector(&selectors[i])
		if err != nil {
			return nil, fmt.Errorf("meshConfig.discoverySelectors[%d]: %v; fix the label selector (matchLabels, or matchExpressions with operator In, NotIn, Exists or DoesNotExist)", i, err)
		}
		sels = append(sels, s)
	}
	return func(ns *corev1.Namespace) bool {
		set := labels.Set(ns.Labels)
		for _, s := range sels {
			if s.Matches(set) {
				return true
			}
		}
		return false
	}, nil
}
