package webhook

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/skiff-mesh/skiff/controlplane/inject"
)

// ServiceRef names the Service the API server dials for the webhooks:
// istiod's (istio-system/istiod, port 443 → 15017) by default.
type ServiceRef struct {
	Namespace, Name string
	Port            int32
}

// ConfigOptions describe the webhook configurations EnsureConfigurations
// writes.
type ConfigOptions struct {
	// URL is the webhooks' base URL (https://host:port); /inject and
	// /validate are appended. For a skiffd outside the cluster and for
	// tests. When empty, Service is used.
	URL string
	// Service when URL is empty; each empty field takes istiod's value
	// (istio-system, istiod, 443).
	Service ServiceRef
	// CABundle is the PEM bundle the API server verifies the webhook's
	// certificate with: the CA's TrustBundlePEM. Required.
	CABundle []byte
	// Revision of this control plane (istio.io/rev); "default" when empty.
	Revision string
	// Namespace of the control plane; the Service's namespace, else
	// istio-system. It names the ValidatingWebhookConfiguration
	// (istio-validator-<namespace>).
	Namespace string
	// InjectFailurePolicy of the injection webhooks; Fail (Istio's) when empty.
	InjectFailurePolicy admissionregistrationv1.FailurePolicyType
	// ValidationFailurePolicy of the validation webhooks. Empty keeps what
	// the configuration has, and is Ignore when it is created: Istio fails
	// open until the webhook has been seen to refuse invalid config (see
	// FailClosedWhenReady), then switches to Fail.
	ValidationFailurePolicy admissionregistrationv1.FailurePolicyType
}

func (o ConfigOptions) revision() string { return cmpOr(o.Revision, inject.DefaultRevision) }

func (o ConfigOptions) namespace() string {
	return cmpOr(o.Namespace, cmpOr(o.Service.Namespace, "istio-system"))
}

// InjectorName is the MutatingWebhookConfiguration's name, as Istio's chart
// names it: istio-sidecar-injector[-REV][-NS unless istio-system].
func (o ConfigOptions) InjectorName() string {
	n := "istio-sidecar-injector"
	if r := o.revision(); r != inject.DefaultRevision {
		n += "-" + r
	}
	if ns := o.namespace(); ns != "istio-system" {
		n += "-" + ns
	}
	return n
}

// ValidatorName is the ValidatingWebhookConfiguration's name:
// istio-validator[-REV]-NS.
func (o ConfigOptions) ValidatorName() string {
	n := "istio-validator"
	if r := o.revision(); r != inject.DefaultRevision {
		n += "-" + r
	}
	return n + "-" + o.namespace()
}

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func (o ConfigOptions) check() error {
	if len(o.CABundle) == 0 {
		return errors.New("webhook configurations: ConfigOptions.CABundle is empty; pass the CA's trust bundle (ca.CA.TrustBundlePEM) so the API server can verify the webhook")
	}
	rest, n := o.CABundle, 0
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if _, err := x509.ParseCertificate(b.Bytes); b.Type != "CERTIFICATE" || err != nil {
			return fmt.Errorf("webhook configurations: ConfigOptions.CABundle block %d is not a certificate (%s %v); pass PEM certificates", n+1, b.Type, err)
		}
		n++
	}
	if n == 0 || len(bytes.TrimSpace(rest)) > 0 {
		return errors.New("webhook configurations: ConfigOptions.CABundle is not PEM certificates; pass ca.CA.TrustBundlePEM()")
	}
	if o.URL != "" && !strings.HasPrefix(o.URL, "https://") {
		return fmt.Errorf("webhook configurations: ConfigOptions.URL %q: the API server calls webhooks over https only", o.URL)
	}
	for _, p := range []admissionregistrationv1.FailurePolicyType{o.InjectFailurePolicy, o.ValidationFailurePolicy} {
		if p != "" && p != admissionregistrationv1.Fail && p != admissionregistrationv1.Ignore {
			return fmt.Errorf("webhook configurations: failure policy %q: use Fail or Ignore", p)
		}
	}
	return nil
}

func (o ConfigOptions) clientConfig(path string) admissionregistrationv1.WebhookClientConfig {
	cc := admissionregistrationv1.WebhookClientConfig{CABundle: bytes.Clone(o.CABundle)}
	if o.URL != "" {
		u := strings.TrimSuffix(o.URL, "/") + path
		cc.URL = &u
		return cc
	}
	port := o.Service.Port
	if port == 0 {
		port = 443
	}
	cc.Service = &admissionregistrationv1.ServiceReference{
		Namespace: o.namespace(), Name: cmpOr(o.Service.Name, "istiod"), Path: &path, Port: &port,
	}
	return cc
}

// Labels on both configurations, as Istio's chart sets them.
func (o ConfigOptions) labels(app string) map[string]string {
	return map[string]string{"app": app, "istio.io/rev": o.revision(), "app.kubernetes.io/managed-by": "skiffd"}
}

func ptr[T any](v T) *T { return &v }

func expr(key string, op metav1.LabelSelectorOperator, values ...string) metav1.LabelSelectorRequirement {
	return metav1.LabelSelectorRequirement{Key: key, Operator: op, Values: values}
}

// injectorWebhooks are Istio's four injection webhooks (istiod 1.19+): by
// namespace or pod istio.io/rev for this revision and, for the default
// revision, by the namespace's istio-injection=enabled or the pod's
// sidecar.istio.io/inject=true label. A pod labelled
// sidecar.istio.io/inject=false never reaches the webhook.
func (o ConfigOptions) injectorWebhooks() []admissionregistrationv1.MutatingWebhook {
	rev := o.revision()
	notFalse := expr(inject.LabelInject, metav1.LabelSelectorOpNotIn, "false")
	mk := func(name string, ns, obj []metav1.LabelSelectorRequirement) admissionregistrationv1.MutatingWebhook {
		return admissionregistrationv1.MutatingWebhook{
			Name:         name,
			ClientConfig: o.clientConfig("/inject"),
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"},
					Resources: []string{"pods"}, Scope: ptr(admissionregistrationv1.AllScopes)},
			}},
			FailurePolicy:           ptr(cmpOrPolicy(o.InjectFailurePolicy, admissionregistrationv1.Fail)),
			MatchPolicy:             ptr(admissionregistrationv1.Equivalent),
			NamespaceSelector:       &metav1.LabelSelector{MatchExpressions: ns},
			ObjectSelector:          &metav1.LabelSelector{MatchExpressions: obj},
			SideEffects:             ptr(admissionregistrationv1.SideEffectClassNone),
			TimeoutSeconds:          ptr(int32(10)),
			AdmissionReviewVersions: []string{"v1"},
			ReinvocationPolicy:      ptr(admissionregistrationv1.NeverReinvocationPolicy),
		}
	}
	hooks := []admissionregistrationv1.MutatingWebhook{
		mk("rev.namespace.sidecar-injector.istio.io",
			[]metav1.LabelSelectorRequirement{expr(inject.LabelRev, metav1.LabelSelectorOpIn, rev), expr(inject.LabelInjection, metav1.LabelSelectorOpDoesNotExist)},
			[]metav1.LabelSelectorRequirement{notFalse}),
		mk("rev.object.sidecar-injector.istio.io",
			[]metav1.LabelSelectorRequirement{expr(inject.LabelRev, metav1.LabelSelectorOpDoesNotExist), expr(inject.LabelInjection, metav1.LabelSelectorOpDoesNotExist)},
			[]metav1.LabelSelectorRequirement{notFalse, expr(inject.LabelRev, metav1.LabelSelectorOpIn, rev)}),
	}
	if rev == inject.DefaultRevision {
		hooks = append(hooks,
			mk("namespace.sidecar-injector.istio.io",
				[]metav1.LabelSelectorRequirement{expr(inject.LabelInjection, metav1.LabelSelectorOpIn, "enabled")},
				[]metav1.LabelSelectorRequirement{notFalse}),
			mk("object.sidecar-injector.istio.io",
				[]metav1.LabelSelectorRequirement{expr(inject.LabelInjection, metav1.LabelSelectorOpDoesNotExist), expr(inject.LabelRev, metav1.LabelSelectorOpDoesNotExist)},
				[]metav1.LabelSelectorRequirement{expr(inject.LabelInject, metav1.LabelSelectorOpIn, "true"), expr(inject.LabelRev, metav1.LabelSelectorOpDoesNotExist)}),
		)
	}
	return hooks
}

// ValidatedGroups are the API groups whose objects go to /validate.
var ValidatedGroups = []string{"networking.istio.io", "security.istio.io", "telemetry.istio.io", "gateway.networking.k8s.io"}

// validatorWebhooks are Istio's: rev.validation.istio.io for objects
// labelled with this revision and, for the default revision,
// validation.istio.io for objects with no istio.io/rev label. policy is
// each webhook's failure policy.
func (o ConfigOptions) validatorWebhooks(policy func(name string) admissionregistrationv1.FailurePolicyType) []admissionregistrationv1.ValidatingWebhook {
	mk := func(name string, obj metav1.LabelSelectorRequirement) admissionregistrationv1.ValidatingWebhook {
		return admissionregistrationv1.ValidatingWebhook{
			Name:         name,
			ClientConfig: o.clientConfig("/validate"),
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
				Rule: admissionregistrationv1.Rule{APIGroups: append([]string(nil), ValidatedGroups...), APIVersions: []string{"*"},
					Resources: []string{"*"}, Scope: ptr(admissionregistrationv1.AllScopes)},
			}},
			FailurePolicy:           ptr(policy(name)),
			MatchPolicy:             ptr(admissionregistrationv1.Equivalent),
			NamespaceSelector:       &metav1.LabelSelector{},
			ObjectSelector:          &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{obj}},
			SideEffects:             ptr(admissionregistrationv1.SideEffectClassNone),
			TimeoutSeconds:          ptr(int32(10)),
			AdmissionReviewVersions: []string{"v1"},
		}
	}
	hooks := []admissionregistrationv1.ValidatingWebhook{mk("rev.validation.istio.io", expr(inject.LabelRev, metav1.LabelSelectorOpIn, o.revision()))}
	if o.revision() == inject.DefaultRevision {
		hooks = append(hooks, mk("validation.istio.io", expr(inject.LabelRev, metav1.LabelSelectorOpDoesNotExist)))
	}
	return hooks
}

func cmpOrPolicy(p, def admissionregistrationv1.FailurePolicyType) admissionregistrationv1.FailurePolicyType {
	if p == "" {
		return def
	}
	return p
}

// EnsureConfigurations creates or updates the MutatingWebhookConfiguration
// (istio-sidecar-injector) and the ValidatingWebhookConfiguration
// (istio-validator-istio-system) so that they point at skiffd's webhooks
// with o.CABundle. It writes only when something differs, so calling it
// again is cheap and changes nothing; call it at start and whenever the
// CA's trust bundle changes (Keep does both).
func EnsureConfigurations(ctx context.Context, client kubernetes.Interface, o ConfigOptions) error {
	if err := o.check(); err != nil {
		return err
	}
	if err := ensureInjector(ctx, client, o); err != nil {
		return fmt.Errorf("MutatingWebhookConfiguration %s: %w", o.InjectorName(), err)
	}
	if err := ensureValidator(ctx, client, o); err != nil {
		return fmt.Errorf("ValidatingWebhookConfiguration %s: %w", o.ValidatorName(), err)
	}
	return nil
}

func ensureInjector(ctx context.Context, client kubernetes.Interface, o ConfigOptions) error {
	api := client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		want := o.injectorWebhooks()
		cur, err := api.Get(ctx, o.InjectorName(), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = api.Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
				ObjectMeta: metav1.ObjectMeta{Name: o.InjectorName(), Labels: o.labels("sidecar-injector")},
				Webhooks:   want,
			}, metav1.CreateOptions{FieldManager: "skiffd"})
			return err
		}
		if err != nil {
			return err
		}
		labels, changed := mergeLabels(cur.Labels, o.labels("sidecar-injector"))
		if !changed && equality.Semantic.DeepEqual(cur.Webhooks, want) {
			return nil
		}
		next := cur.DeepCopy()
		next.Labels, next.Webhooks = labels, want
		_, err = api.Update(ctx, next, metav1.UpdateOptions{FieldManager: "skiffd"})
		return err
	})
}

func ensureValidator(ctx context.Context, client kubernetes.Interface, o ConfigOptions) error {
	api := client.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := api.Get(ctx, o.ValidatorName(), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			want := o.validatorWebhooks(func(string) admissionregistrationv1.FailurePolicyType {
				return cmpOrPolicy(o.ValidationFailurePolicy, admissionregistrationv1.Ignore)
			})
			_, err = api.Create(ctx, &admissionregistrationv1.ValidatingWebhookConfiguration{
				ObjectMeta: metav1.ObjectMeta{Name: o.ValidatorName(), Labels: o.labels("istiod")},
				Webhooks:   want,
			}, metav1.CreateOptions{FieldManager: "skiffd"})
			return err
		}
		if err != nil {
			return err
		}
		existing := map[string]admissionregistrationv1.FailurePolicyType{}
		for _, h := range cur.Webhooks {
			if h.FailurePolicy != nil {
				existing[h.Name] = *h.FailurePolicy
			}
		}
		want := o.validatorWebhooks(func(name string) admissionregistrationv1.FailurePolicyType {
			if o.ValidationFailurePolicy != "" {
				return o.ValidationFailurePolicy
			}
			return cmpOrPolicy(existing[name], admissionregistrationv1.Ignore)
		})
		labels, changed := mergeLabels(cur.Labels, o.labels("istiod"))
		if !changed && equality.Semantic.DeepEqual(cur.Webhooks, want) {
			return nil
		}
		next := cur.DeepCopy()
		next.Labels, next.Webhooks = labels, want
		_, err = api.Update(ctx, next, metav1.UpdateOptions{FieldManager: "skiffd"})
		return err
	})
}

// mergeLabels returns have with want's labels set, and whether that changed it.
func mergeLabels(have, want map[string]string) (map[string]string, bool) {
	out := maps.Clone(have)
	if out == nil {
		out = map[string]string{}
	}
	changed := false
	for k, v := range want {
		if out[k] != v {
			out[k], changed = v, true
		}
	}
	return out, changed
}

var istioGateways = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "gateways"}

// ValidationRefuses makes Istio's readiness probe of the validation
// webhook: a dry-run create of a Gateway with no servers in the control
// plane's namespace, labelled with this revision. It reports true when the
// API server refused it through a webhook (validation works end to end),
// and the reason when not.
func ValidationRefuses(ctx context.Context, dyn dynamic.Interface, o ConfigOptions) (bool, string) {
	ns := o.namespace()
	gw := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
		"metadata": map[string]any{"name": "skiff-invalid-gateway-probe", "namespace": ns,
			"labels": map[string]any{inject.LabelRev: o.revision()}},
		"spec": map[string]any{},
	}}
	_, err := dyn.Resource(istioGateways).Namespace(ns).Create(ctx, gw, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	var status apierrors.APIStatus
	switch {
	case err == nil:
		return false, "a dry-run Gateway with no servers was accepted: the API server does not call the validation webhook yet"
	case strings.Contains(err.Error(), "denied the request"):
		return true, ""
	case apierrors.IsNotFound(err) && errors.As(err, &status) && status.Status().Details != nil && status.Status().Details.Kind == "namespaces":
		return false, "namespace " + ns + " does not exist; create it (the control plane's namespace) or set ConfigOptions.Namespace"
	case apierrors.IsNotFound(err):
		// No Gateway CRD: nothing to validate, as istiod concludes.
		return true, ""
	}
	return false, "the dry-run Gateway was refused for another reason: " + err.Error()
}

// FailClosedWhenReady waits (probing every interval, until ctx ends) for
// ValidationRefuses, then sets the validation webhooks' failure policy to
// Fail, as istiod does once its webhook is seen to work.
func FailClosedWhenReady(ctx context.Context, client kubernetes.Interface, dyn dynamic.Interface, o ConfigOptions, interval time.Duration) error {
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ok, _ := ValidationRefuses(ctx, dyn, o)
		if ok {
			o.ValidationFailurePolicy = admissionregistrationv1.Fail
			return EnsureConfigurations(ctx, client, o)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Keep maintains the webhook configurations until ctx ends: it ensures
// them with bundle() now, switches validation to fail closed once the
// webhook works, and ensures them again whenever changed fires (wire it to
// ca.CA.Subscribe, so a root rotation reaches the caBundle) and every
// resync (repairing edits by others). Failures are logged and retried at
// the next event or resync.
func Keep(ctx context.Context, client kubernetes.Interface, dyn dynamic.Interface, o ConfigOptions, bundle func() []byte, changed <-chan struct{}, resync time.Duration, log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	if resync <= 0 {
		resync = time.Minute
	}
	failClosed := false
	ensure := func() {
		o.CABundle = bundle()
		if failClosed {
			o.ValidationFailurePolicy = admissionregistrationv1.Fail
		}
		if err := EnsureConfigurations(ctx, client, o); err != nil && ctx.Err() == nil {
			log.Error("cannot update the webhook configurations; retrying at the next resync", "err", err)
		}
	}
	ensure()
	probe := time.NewTicker(time.Second)
	defer probe.Stop()
	t := time.NewTicker(resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
			ensure()
		case <-t.C:
			ensure()
		case <-probe.C:
			if ok, why := ValidationRefuses(ctx, dyn, o); ok {
				failClosed = true
				ensure()
				log.Info("validation webhook refuses invalid config; its failurePolicy is now Fail", "config", o.ValidatorName())
				probe.Stop()
			} else {
				log.Debug("validation webhook not ready to fail closed", "reason", why)
			}
		}
	}
}
