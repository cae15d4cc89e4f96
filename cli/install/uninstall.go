package install

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/skiff-mesh/skiff/controlplane/inject"
	inst "github.com/skiff-mesh/skiff/install"
)

// webhookManagedBy is the label skiffd puts on the webhook configurations
// it writes (controlplane/webhook).
const webhookManagedBy = "app.kubernetes.io/managed-by=skiffd"

// shared are the kinds every revision shares: only --purge removes them.
var shared = []string{"CustomResourceDefinition", "Namespace"}

func runUninstall(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("skiff uninstall", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig `FILE` (default $KUBECONFIG, else ~/.kube/config)")
	revision := fs.String("revision", "", "the control plane revision to remove; empty is the default revision")
	purge := fs.Bool("purge", false, "remove every revision and what they share: the Istio and Gateway API CRDs (and so every object of those kinds) and the control plane namespace")
	yes := fs.Bool("y", false, "do not ask for confirmation")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the deleted objects to be gone")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if *purge && *revision != "" {
		return usageError{errors.New("--purge removes every revision; leave out --revision, or drop --purge to remove one revision")}
	}
	rev := *revision
	if rev == "" {
		rev = inject.DefaultRevision
	}
	c, err := newClient(*kubeconfig)
	if err != nil {
		return err
	}
	sel := inst.LabelOwner + "=" + inst.OwnerValue
	hooks := webhookManagedBy
	if !*purge {
		sel += "," + inst.LabelRev + "=" + rev
		hooks += "," + inst.LabelRev + "=" + rev
	}
	objs, err := c.listOwned(ctx, sel, func(kind string) bool {
		return kind != "MutatingWebhookConfiguration" && kind != "ValidatingWebhookConfiguration" &&
			(*purge || !slices.Contains(shared, kind))
	})
	if err != nil {
		return err
	}
	webhooks, err := c.listOwned(ctx, hooks, func(kind string) bool {
		return kind == "MutatingWebhookConfiguration" || kind == "ValidatingWebhookConfiguration"
	})
	if err != nil {
		return err
	}
	objs = append(objs, webhooks...)
	if *purge {
		// CRDs install made before they carried the label, or that another
		// installer labelled: every CRD Skiff ships goes.
		crds, err := inst.CRDs()
		if err != nil {
			return err
		}
		for _, crd := range crds {
			if slices.ContainsFunc(objs, func(o *unstructured.Unstructured) bool { return describe(o) == describe(crd) }) {
				continue
			}
			_, err := c.dyn.Resource(crdGVR).Get(ctx, crd.GetName(), metav1.GetOptions{})
			switch {
			case err == nil:
				objs = append(objs, crd)
			case !apierrors.IsNotFound(err):
				return fmt.Errorf("CustomResourceDefinition %s: %w", crd.GetName(), err)
			}
		}
	}
	slices.SortStableFunc(objs, func(a, b *unstructured.Unstructured) int { return deleteOrder(a) - deleteOrder(b) })
	if len(objs) == 0 {
		fmt.Fprintf(stdout, "Nothing to remove: no object labelled %s.\n", sel)
		return nil
	}
	what := "revision " + rev
	if *purge {
		what = "every revision, the CRDs and the control plane namespace"
	}
	if !*yes && !confirm(stdout, fmt.Sprintf("This will remove %d objects of Skiff (%s) from the cluster at %s. Proceed? (y/N) ", len(objs), what, c.host)) {
		return errors.New("cancelled")
	}
	for _, o := range objs {
		if err := c.delete(ctx, o); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed %s\n", describe(o))
	}
	if err := c.waitGone(ctx, objs, *timeout); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Uninstalled %s: %d objects removed.\n", what, len(objs))
	return nil
}

// deleteOrder is the index of o's kind in owned.
func deleteOrder(o *unstructured.Unstructured) int {
	return slices.IndexFunc(owned, func(k ownedKind) bool { return k.kind == o.GetKind() })
}

// waitGone waits until every object is deleted (a namespace until its
// contents are; a CRD until its objects are).
func (c *client) waitGone(ctx context.Context, objs []*unstructured.Unstructured, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		var left []string
		for _, o := range objs {
			ri, err := c.resource(o)
			if err != nil {
				return err
			}
			_, err = ri.Get(ctx, o.GetName(), metav1.GetOptions{})
			if err == nil || !apierrors.IsNotFound(err) {
				left = append(left, describe(o))
			}
		}
		if len(left) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %v, %d objects are still being deleted (first: %s); a namespace waits for its contents "+
				"and the namespace controller: look for finalizers on it, or raise --timeout", timeout, len(left), left[0])
		case <-time.After(c.poll):
		}
	}
}
