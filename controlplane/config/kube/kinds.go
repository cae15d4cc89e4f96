package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic/dynamicinformer"
	coreinformers "k8s.io/client-go/informers/core/v1"
	discoveryinformers "k8s.io/client-go/informers/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

var nsIndexers = cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}

// kindSync moves one kind's objects from its informer to the sink. The
// informer's callbacks only mark keys dirty; one goroutine per kind (run)
// reads the marked keys from the informer's cache and makes the sink agree,
// so a burst of events on one object costs one sink call, and a namespace
// entering or leaving the selection is the same work as an event.
type kindSync struct {
	kind       config.Kind
	origin     string
	errOrigin  string // decode errors, kept apart so the origin's last good objects stay
	namespaced bool
	inf        cache.SharedIndexInformer
	src        *Source
	// convert turns a cached object into the store's; nil with no errors
	// leaves the object out (a Secret no gateway can use).
	convert func(obj any) (*config.Object, []error)

	mu    sync.Mutex
	dirty map[string]struct{}
	wake  chan struct{}

	// Owned by run.
	sent      map[string]sentState
	decodeErr map[string][]error
}

// sentState is what the sink was last given for one cache key.
type sentState struct {
	rv  string
	key config.Key
}

func (s *Source) newKind(k config.Kind, inf cache.SharedIndexInformer, convert func(any) (*config.Object, []error)) *kindSync {
	return &kindSync{kind: k, origin: originOf(k), errOrigin: originOf(k) + "/unreadable",
		namespaced: config.Namespaced(k) && k != Node, inf: inf, src: s, convert: convert,
		dirty: map[string]struct{}{}, wake: make(chan struct{}, 1),
		sent: map[string]sentState{}, decodeErr: map[string][]error{}}
}

// start registers the informer callbacks and routes its list and watch
// failures to the log, saying what to do about a refusal.
func (k *kindSync) start() error {
	var last string
	var mu sync.Mutex
	if err := k.inf.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
		if errors.Is(err, io.EOF) || apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
			return // a watch ending or expiring: the informer resumes or relists
		}
		msg := err.Error()
		if apierrors.IsForbidden(err) {
			msg += "; grant skiffd's service account list and watch on this resource in its ClusterRole"
		}
		mu.Lock()
		repeat := msg == last
		last = msg
		mu.Unlock()
		if !repeat {
			k.src.opts.Log.Warn("cannot list or watch Kubernetes objects; retrying with back-off", "kind", k.kind.String(), "error", msg)
		}
	}); err != nil {
		return err
	}
	_, err := k.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    k.mark,
		UpdateFunc: func(_, obj any) { k.mark(obj) },
		DeleteFunc: k.mark,
	})
	return err
}

func (k *kindSync) mark(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		return
	}
	k.mu.Lock()
	k.dirty[key] = struct{}{}
	k.mu.Unlock()
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// markNamespace marks every cached object of namespace ns.
func (k *kindSync) markNamespace(ns string) {
	if !k.namespaced && k.kind != config.Namespace {
		return
	}
	var keys []string
	if k.kind == config.Namespace {
		keys = []string{ns}
	} else {
		objs, err := k.inf.GetIndexer().ByIndex(cache.NamespaceIndex, ns)
		if err != nil {
			return
		}
		for _, o := range objs {
			if key, err := cache.MetaNamespaceKeyFunc(o); err == nil {
				keys = append(keys, key)
			}
		}
	}
	if len(keys) == 0 {
		return
	}
	k.mu.Lock()
	for _, key := range keys {
		k.dirty[key] = struct{}{}
	}
	k.mu.Unlock()
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

func (k *kindSync) takeDirty() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	keys := slices.Collect(maps.Keys(k.dirty))
	clear(k.dirty)
	return keys
}

// run gives the sink the kind's full list once both the namespaces and the
// kind are synced (one Replace, so a large cluster is not thousands of
// snapshots), calls synced, then follows the marked keys until ctx is done.
func (k *kindSync) run(ctx context.Context, sink config.Sink, nsSynced cache.InformerSynced, synced func()) {
	if !cache.WaitForCacheSync(ctx.Done(), nsSynced, k.inf.HasSynced) {
		synced()
		return
	}
	k.takeDirty() // the list below covers them
	var objs []*config.Object
	for _, obj := range k.inf.GetIndexer().List() {
		cacheKey, err := cache.MetaNamespaceKeyFunc(obj)
		if err != nil {
			continue
		}
		if o := k.read(cacheKey, obj); o != nil {
			objs = append(objs, o)
		}
	}
	sink.Replace(k.origin, objs, nil)
	k.flushErrors(sink)
	synced()
	for {
		select {
		case <-ctx.Done():
			return
		case <-k.wake:
		}
		changedErrs := false
		for _, cacheKey := range k.takeDirty() {
			changedErrs = k.sync(sink, cacheKey) || changedErrs
		}
		if changedErrs {
			k.flushErrors(sink)
		}
	}
}

// read converts a cached object the selection admits and records what is
// sent; nil when it is left out or could not be decoded.
func (k *kindSync) read(cacheKey string, obj any) *config.Object {
	m, err := metaOf(obj)
	if err != nil {
		return nil
	}
	ns := m.GetNamespace()
	if k.kind == config.Namespace {
		ns = m.GetName()
	}
	if (k.namespaced || k.kind == config.Namespace) && !k.src.selected(ns) {
		delete(k.decodeErr, cacheKey)
		return nil
	}
	o, errs := k.convert(obj)
	if len(errs) > 0 {
		k.decodeErr[cacheKey] = errs
		return nil
	}
	delete(k.decodeErr, cacheKey)
	if o == nil {
		return nil
	}
	k.sent[cacheKey] = sentState{rv: m.GetResourceVersion(), key: o.Key()}
	return o
}

// sync makes the sink agree with the cache for one key. It reports whether
// the kind's decode errors changed.
func (k *kindSync) sync(sink config.Sink, cacheKey string) (errsChanged bool) {
	_, hadErr := k.decodeErr[cacheKey]
	obj, exists, err := k.inf.GetIndexer().GetByKey(cacheKey)
	if err != nil {
		return false
	}
	prev, wasSent := k.sent[cacheKey]
	if exists {
		if m, err := metaOf(obj); err == nil && wasSent && !hadErr && m.GetResourceVersion() == prev.rv && k.admits(m) {
			return false // a resync, or a namespace event that changes nothing here
		}
	}
	var o *config.Object
	if exists {
		o = k.read(cacheKey, obj)
	} else {
		delete(k.decodeErr, cacheKey)
	}
	_, hasErr := k.decodeErr[cacheKey]
	switch {
	case o != nil:
		sink.Upsert(k.origin, o)
	case hasErr:
		// Not readable: the last good version stays in force.
	case wasSent:
		delete(k.sent, cacheKey)
		sink.Delete(k.origin, prev.key)
	}
	return hadErr || hasErr
}

func (k *kindSync) admits(m metav1.Object) bool {
	ns := m.GetNamespace()
	if k.kind == config.Namespace {
		ns = m.GetName()
	}
	return !(k.namespaced || k.kind == config.Namespace) || k.src.selected(ns)
}

// flushErrors gives the sink every current decode error of the kind, under
// an origin of their own that holds no objects.
func (k *kindSync) flushErrors(sink config.Sink) {
	var errs []error
	for _, key := range slices.Sorted(maps.Keys(k.decodeErr)) {
		errs = append(errs, k.decodeErr[key]...)
	}
	sink.Replace(k.errOrigin, nil, errs)
}

func metaOf(obj any) (metav1.Object, error) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	return meta.Accessor(obj)
}

// namespaceInformer watches every namespace: the selection needs the
// labels of those outside it too.
func (s *Source) namespaceInformer() cache.SharedIndexInformer {
	inf := coreinformers.NewNamespaceInformer(s.client, s.opts.Resync, cache.Indexers{})
	_ = inf.SetTransform(trim(config.Namespace))
	return inf
}

// typedKinds are the Kubernetes kinds read through typed informers.
func (s *Source) typedKinds(nsInf cache.SharedIndexInformer) []*kindSync {
	all := metav1.NamespaceAll
	r := s.opts.Resync
	secretInf := coreinformers.NewFilteredSecretInformer(s.client, all, r, nsIndexers, func(o *metav1.ListOptions) {
		if s.opts.GatewaySecretsOnly {
			o.FieldSelector = unusedSecretTypes
		}
	})
	list := []struct {
		kind config.Kind
		inf  cache.SharedIndexInformer
	}{
		{config.Namespace, nsInf},
		{config.Service, coreinformers.NewServiceInformer(s.client, all, r, nsIndexers)},
		{config.EndpointSlice, discoveryinformers.NewEndpointSliceInformer(s.client, all, r, nsIndexers)},
		{config.Pod, coreinformers.NewPodInformer(s.client, all, r, nsIndexers)},
		{config.ServiceAccount, coreinformers.NewServiceAccountInformer(s.client, all, r, nsIndexers)},
		{Node, coreinformers.NewNodeInformer(s.client, r, cache.Indexers{})},
		{config.Secret, secretInf},
		{config.ConfigMap, coreinformers.NewConfigMapInformer(s.client, all, r, nsIndexers)},
	}
	var out []*kindSync
	for _, e := range list {
		kind := e.kind
		if e.inf != nsInf {
			tr := trim(kind)
			if kind == config.Secret && s.opts.GatewaySecretsOnly {
				tr = func(obj any) (any, error) {
					obj, _ = trim(kind)(obj)
					if sec, ok := obj.(*corev1.Secret); ok && !isCredential(sec) {
						sec.Data, sec.StringData = nil, nil
					}
					return obj, nil
				}
			}
			_ = e.inf.SetTransform(tr)
		}
		convert := func(obj any) (*config.Object, []error) {
			m, err := metaOf(obj)
			if err != nil {
				return nil, nil
			}
			if sec, ok := obj.(*corev1.Secret); ok && s.opts.GatewaySecretsOnly && !isCredential(sec) {
				return nil, nil
			}
			acc, ok := m.(metav1.ObjectMetaAccessor)
			if !ok {
				return nil, nil
			}
			return &config.Object{Kind: kind, Meta: *acc.GetObjectMeta().(*metav1.ObjectMeta), Spec: obj}, nil
		}
		out = append(out, s.newKind(kind, e.inf, convert))
	}
	return out
}

// unusedSecretTypes are Secret types no gateway credential has; listing
// them would cost memory for nothing (Helm keeps whole releases in
// Secrets).
const unusedSecretTypes = "type!=kubernetes.io/service-account-token,type!=kubernetes.io/dockercfg," +
	"type!=kubernetes.io/dockerconfigjson,type!=bootstrap.kubernetes.io/token,type!=helm.sh/release.v1"

// isCredential reports whether a Secret can serve as a gateway's
// credentialName or certificateRef: Istio reads tls.crt/tls.key,
// cert/key, and the CA as ca.crt or cacert.
func isCredential(s *corev1.Secret) bool {
	if s.Type == corev1.SecretTypeTLS {
		return true
	}
	has := func(k string) bool { _, ok := s.Data[k]; return ok }
	return (has("tls.crt") && has("tls.key")) || (has("cert") && has("key")) || has("cacert") || has("ca.crt")
}

// trim returns the informer transform of kind k: the apiVersion and kind
// the API server leaves out of typed list items are set (the file source's
// objects have them; the zero Kind leaves them), and the managed fields and the last-applied
// annotation, which nothing reads and which can double an object's size,
// are dropped before the object is cached.
func trim(k config.Kind) cache.TransformFunc {
	return func(obj any) (any, error) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			return tomb, nil
		}
		m, err := meta.Accessor(obj)
		if err != nil {
			return obj, nil
		}
		m.SetManagedFields(nil)
		if a := m.GetAnnotations(); a != nil {
			if _, ok := a[corev1.LastAppliedConfigAnnotation]; ok {
				a = maps.Clone(a)
				delete(a, corev1.LastAppliedConfigAnnotation)
				m.SetAnnotations(a)
			}
		}
		if t, err := meta.TypeAccessor(obj); err == nil && k.Kind != "" {
			t.SetAPIVersion(k.APIVersion())
			t.SetKind(k.Kind)
		}
		return obj, nil
	}
}

// dynamicKind reads an Istio or Gateway API kind through the dynamic
// client, decoding each object with the file source's decoder.
func (s *Source) dynamicKind(k config.Kind, gvr schema.GroupVersionResource) *kindSync {
	inf := dynamicinformer.NewFilteredDynamicInformer(s.dyn, gvr, metav1.NamespaceAll, s.opts.Resync, nsIndexers, nil).Informer()
	_ = inf.SetTransform(trim(config.Kind{})) // apiVersion is the served one: keep it
	return s.newKind(k, inf, func(obj any) (*config.Object, []error) {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return nil, nil
		}
		return decodeUnstructured(u)
	})
}

// decodeUnstructured turns an object read from the API server into the
// store's object exactly as the file source would from the same document,
// so validation and field paths are the same; the position is the object
// itself (no file), and the resource version is the API server's.
func decodeUnstructured(u *unstructured.Unstructured) (*config.Object, []error) {
	data, err := json.Marshal(u.Object)
	if err != nil {
		return nil, []error{&config.ObjectError{Key: config.Key{Namespace: u.GetNamespace(), Name: u.GetName()},
			Message: fmt.Sprintf("cannot encode the object read from the API server: %v", err)}}
	}
	objs, errs := config.Decode(data, "")
	if len(errs) > 0 || len(objs) != 1 {
		return nil, errs
	}
	o := objs[0]
	o.Source = config.Position{}
	o.Meta.ResourceVersion = u.GetResourceVersion()
	return o, nil
}
