package install

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"

	inst "github.com/skiff-mesh/skiff/install"
)

// FieldManager is the server-side apply field manager of skiff install.
const FieldManager = "skiff"

// client talks to the cluster for the install verbs.
type client struct {
	host   string
	dyn    dynamic.Interface
	mapper meta.ResettableRESTMapper
	// poll is the interval of the waits (CRDs Established, deletions done).
	poll time.Duration
}

// newClient loads kubeconfig (or $KUBECONFIG, ~/.kube/config).
func newClient(kubeconfig string) (*client, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		where := "--kubeconfig " + kubeconfig
		if kubeconfig == "" {
			where = "the default kubeconfig ($KUBECONFIG or ~/.kube/config)"
		}
		return nil, fmt.Errorf("%s: %v; pass --kubeconfig FILE of the cluster to install into", where, err)
	}
	return newClientFor(cfg)
}

func newClientFor(cfg *rest.Config) (*client, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "skiff-install"
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 50, 100
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client for %s: %w", cfg.Host, err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes discovery for %s: %w", cfg.Host, err)
	}
	return &client{host: cfg.Host, dyn: dyn, poll: 250 * time.Millisecond,
		mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))}, nil
}

// resource is the dynamic client of o's kind and namespace.
func (c *client) resource(o *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := o.GroupVersionKind()
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, fmt.Errorf("%s %s: the API server does not serve %s: %v", o.GetKind(), o.GetName(), gvk, err)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return c.dyn.Resource(m.Resource).Namespace(o.GetNamespace()), nil
	}
	return c.dyn.Resource(m.Resource), nil
}

// describe names an object as kubectl prints it.
func describe(o *unstructured.Unstructured) string {
	if ns := o.GetNamespace(); ns != "" {
		return o.GetKind() + " " + ns + "/" + o.GetName()
	}
	return o.GetKind() + " " + o.GetName()
}

// apply server-side applies o and says what changed: created, configured
// or unchanged (the resource version did not move).
func (c *client) apply(ctx context.Context, o *unstructured.Unstructured) (string, error) {
	ri, err := c.resource(o)
	if err != nil {
		return "", err
	}
	before, err := ri.Get(ctx, o.GetName(), metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return "", fmt.Errorf("%s: %w", describe(o), err)
	}
	after, err := ri.Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
	if err != nil {
		return "", fmt.Errorf("applying %s: %w", describe(o), err)
	}
	switch {
	case before == nil:
		return "created", nil
	case before.GetResourceVersion() == after.GetResourceVersion():
		return "unchanged", nil
	default:
		return "configured", nil
	}
}

// install applies m: the CRDs, waits until they are Established, then the
// other objects, then prunes this revision's objects m no longer has.
func (c *client) install(ctx context.Context, m *inst.Manifest, timeout time.Duration, out io.Writer) (string, error) {
	counts := map[string]int{}
	for _, list := range [][]*unstructured.Unstructured{m.CRDs, m.Objects} {
		for _, o := range list {
			what, err := c.apply(ctx, o)
			if err != nil {
				return "", err
			}
			counts[what]++
			if what != "unchanged" {
				fmt.Fprintf(out, "%s %s\n", what, describe(o))
			}
		}
		if len(list) > 0 && list[0].GetKind() == "CustomResourceDefinition" {
			if err := c.waitEstablished(ctx, list, timeout); err != nil {
				return "", err
			}
			c.mapper.Reset() // the new kinds are served now
		}
	}
	pruned, err := c.prune(ctx, m, out)
	if err != nil {
		return "", err
	}
	counts["pruned"] = pruned
	var parts []string
	for _, k := range []string{"created", "configured", "unchanged", "pruned"} {
		parts = append(parts, fmt.Sprintf("%d %s", counts[k], k))
	}
	return strings.Join(parts, ", "), nil
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// waitEstablished waits until every CRD has condition Established=True.
func (c *client) waitEstablished(ctx context.Context, crds []*unstructured.Unstructured, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pending := slices.Clone(crds)
	for {
		var still []*unstructured.Unstructured
		var reason string
		for _, crd := range pending {
			cur, err := c.dyn.Resource(crdGVR).Get(ctx, crd.GetName(), metav1.GetOptions{})
			if err != nil {
				still, reason = append(still, crd), err.Error()
				continue
			}
			if ok, why := condition(cur, "Established"); !ok {
				still, reason = append(still, crd), why
			}
		}
		if len(still) == 0 {
			return nil
		}
		pending = still
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d CRDs not Established after %v (first: %s: %s); check the API server, or raise --timeout",
				len(pending), timeout, pending[0].GetName(), reason)
		case <-time.After(c.poll):
		}
	}
}

// condition reports whether status.conditions has typ True, and why not.
func condition(o *unstructured.Unstructured, typ string) (bool, string) {
	conds, _, _ := unstructured.NestedSlice(o.Object, "status", "conditions")
	for _, x := range conds {
		cm, _ := x.(map[string]any)
		if cm["type"] == typ {
			if cm["status"] == "True" {
				return true, ""
			}
			return false, fmt.Sprintf("%s=%v: %v", typ, cm["status"], cm["message"])
		}
	}
	return false, "no " + typ + " condition yet"
}

type ownedKind struct {
	kind string
	gvr  schema.GroupVersionResource
}

// owned are the kinds install creates, and skiffd's webhook configurations,
// in delete order (the reverse of inst.Less's).
var owned = []ownedKind{
	{"Deployment", schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}},
	{"Service", schema.GroupVersionResource{Version: "v1", Resource: "services"}},
	{"ConfigMap", schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}},
	{"RoleBinding", schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"}},
	{"Role", schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"}},
	{"ClusterRoleBinding", schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"}},
	{"ClusterRole", schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"}},
	{"ServiceAccount", schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}},
	{"MutatingWebhookConfiguration", schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "mutatingwebhookconfigurations"}},
	{"ValidatingWebhookConfiguration", schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "validatingwebhookconfigurations"}},
	{"CustomResourceDefinition", crdGVR},
	{"Namespace", schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}},
}

// listOwned lists the objects of the owned kinds matching selector.
func (c *client) listOwned(ctx context.Context, selector string, kinds func(kind string) bool) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	for _, k := range owned {
		if !kinds(k.kind) {
			continue
		}
		l, err := c.dyn.Resource(k.gvr).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return nil, fmt.Errorf("listing %ss labelled %s: %w", k.kind, selector, err)
		}
		for i := range l.Items {
			o := &l.Items[i]
			o.SetKind(k.kind) // list items may leave it out
			out = append(out, o)
		}
	}
	return out, nil
}

// prune deletes this revision's installed objects that m no longer has
// (a gateway the new profile leaves out).
func (c *client) prune(ctx context.Context, m *inst.Manifest, out io.Writer) (int, error) {
	want := map[string]bool{}
	for _, o := range m.All() {
		want[describe(o)] = true
	}
	sel := inst.LabelOwner + "=" + inst.OwnerValue + "," + inst.LabelRev + "=" + m.Values.Rev()
	have, err := c.listOwned(ctx, sel, func(kind string) bool {
		return kind != "MutatingWebhookConfiguration" && kind != "ValidatingWebhookConfiguration"
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, o := range have {
		if want[describe(o)] {
			continue
		}
		if err := c.delete(ctx, o); err != nil {
			return n, err
		}
		fmt.Fprintf(out, "pruned %s\n", describe(o))
		n++
	}
	return n, nil
}

// delete removes o (background propagation: the garbage collector removes
// a Deployment's ReplicaSets and Pods); gone already is fine.
func (c *client) delete(ctx context.Context, o *unstructured.Unstructured) error {
	ri, err := c.resource(o)
	if err != nil {
		return err
	}
	bg := metav1.DeletePropagationBackground
	err = ri.Delete(ctx, o.GetName(), metav1.DeleteOptions{PropagationPolicy: &bg})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting %s: %w", describe(o), err)
	}
	return nil
}
