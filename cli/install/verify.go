package install

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// verify-install tells two failures apart: an object of the manifest is
// missing (the install is incomplete: run skiff install), or it exists but
// is not running yet (a Deployment without its replicas available, a CRD
// not Established, a webhook configuration istiod has not written yet).
// --objects-only checks existence alone, for clusters (or tests) with no
// nodes to run pods.

// verdict of one object.
type verdict int

const (
	ok verdict = iota
	notRunning
	missing
)

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("skiff verify-install", flag.ContinueOnError)
	var pf profileFlags
	pf.register(fs)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig `FILE` (default $KUBECONFIG, else ~/.kube/config)")
	objectsOnly := fs.Bool("objects-only", false, "check only that every object exists, not that the Deployments are available, "+
		"the CRDs Established and istiod's webhook configurations written")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	m, err := pf.manifest()
	if err != nil {
		return err
	}
	c, err := newClient(*kubeconfig)
	if err != nil {
		return err
	}
	counts := map[verdict]int{}
	report := func(v verdict, what, detail string) {
		counts[v]++
		mark := map[verdict]string{ok: "ok         ", notRunning: "NOT READY  ", missing: "MISSING    "}[v]
		if v == ok && detail == "" {
			return // one line per problem, and per Deployment
		}
		fmt.Fprintf(stdout, "%s%s%s\n", mark, what, detail)
	}
	for _, o := range m.All() {
		v, detail, err := c.check(ctx, o, *objectsOnly)
		if err != nil {
			return err
		}
		report(v, describe(o), detail)
	}
	if !*objectsOnly {
		for _, wh := range []*unstructured.Unstructured{
			webhookRef("MutatingWebhookConfiguration", m.Values.InjectorName()),
			webhookRef("ValidatingWebhookConfiguration", m.Values.ValidatorName()),
		} {
			v, _, err := c.check(ctx, wh, true)
			if err != nil {
				return err
			}
			if v == missing {
				report(notRunning, describe(wh), ": not written yet; istiod writes it once it runs")
			} else {
				report(ok, describe(wh), "")
			}
		}
	}
	total := counts[ok] + counts[notRunning] + counts[missing]
	switch {
	case counts[missing] > 0:
		return fmt.Errorf("%d of %d objects of profile %s (revision %s) are missing: the install is incomplete; run skiff install --profile %s%s",
			counts[missing], total, m.Values.Profile, m.Values.Rev(), m.Values.Profile, revFlag(m.Values.Revision))
	case counts[notRunning] > 0:
		return fmt.Errorf("every object of profile %s exists, but %d are not ready: check the pods (kubectl -n %s get pods) and istiod's log",
			m.Values.Profile, counts[notRunning], m.Values.Namespace)
	}
	what := "installed and running"
	if *objectsOnly {
		what = "installed (objects only; availability not checked)"
	}
	fmt.Fprintf(stdout, "Skiff profile %s (revision %s) is %s: %d objects checked.\n", m.Values.Profile, m.Values.Rev(), what, total)
	return nil
}

func webhookRef(kind, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("admissionregistration.k8s.io/v1")
	u.SetKind(kind)
	u.SetName(name)
	return u
}

// check looks o up; unless objectsOnly, a Deployment must have its
// replicas available and a CRD must be Established.
func (c *client) check(ctx context.Context, o *unstructured.Unstructured, objectsOnly bool) (verdict, string, error) {
	ri, err := c.resource(o)
	if err != nil {
		if strings.Contains(err.Error(), "does not serve") {
			return missing, ": its kind is not served (are the CRDs installed?)", nil
		}
		return missing, "", err
	}
	cur, err := ri.Get(ctx, o.GetName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return missing, "", nil
	}
	if err != nil {
		return missing, "", fmt.Errorf("%s: %w", describe(o), err)
	}
	if objectsOnly {
		return ok, "", nil
	}
	switch o.GetKind() {
	case "Deployment":
		want, found, _ := unstructured.NestedInt64(cur.Object, "spec", "replicas")
		if !found {
			want = 1
		}
		avail, _, _ := unstructured.NestedInt64(cur.Object, "status", "availableReplicas")
		gen, _, _ := unstructured.NestedInt64(cur.Object, "status", "observedGeneration")
		detail := fmt.Sprintf(": %d/%d replicas available", avail, want)
		if gen < cur.GetGeneration() {
			return notRunning, detail + " (the rollout of its latest spec has not been observed yet)", nil
		}
		if avail < want {
			return notRunning, detail, nil
		}
		return ok, detail, nil
	case "CustomResourceDefinition":
		if ready, why := condition(cur, "Established"); !ready {
			return notRunning, ": " + why, nil
		}
	}
	return ok, "", nil
}
