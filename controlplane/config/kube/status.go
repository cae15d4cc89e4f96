package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/config/validation"
	"github.com/skiff-mesh/skiff/controlplane/gatewayapi"
)

// StatusOptions choose what a StatusWriter writes; the zero value writes
// nothing.
type StatusOptions struct {
	// ValidationMessages writes Istio's status.validationMessages on Istio
	// kinds: one IST0106 SchemaValidationError per problem validation finds
	// (level ERROR for a rejection, WARNING for a warning), and none once
	// the object is fixed. Istio writes them only when asked to
	// (istiod's PILOT_ENABLE_STATUS / analysis status), so this is opt-in.
	ValidationMessages bool
	// GatewayAPI writes the Gateway API status (conditions, listeners,
	// addresses, route parents) that gatewayapi.Convert computes for the
	// store's current objects, on the GatewayClasses, Gateways and routes
	// this control plane serves.
	GatewayAPI bool
	// Gateway are the options skiffd converts Gateway API objects with.
	Gateway gatewayapi.Options
	// Validate checks objects for ValidationMessages (default
	// validation.Validate, the store's validator in skiffd).
	Validate config.Validator
	// Interval is how often the status is reconciled (default 1s): a
	// rejection changes no snapshot, so the writer looks rather than waits.
	Interval time.Duration
	// Log receives writes that failed; nil discards.
	Log *slog.Logger
}

// StatusWriter writes what skiffd found back into the objects' status
// through the status subresource (Istio's and the Gateway API's CRDs both
// have it). It reads objects from a running Source's informers, writes only
// when the status differs from what the object carries (so it is idempotent
// across restarts), and leaves status fields it does not own alone.
type StatusWriter struct {
	src   *Source
	store *config.Store
	opts  StatusOptions

	// Owned by Run.
	verdicts map[string]verdict // cache key "Kind.group/ns/name" → findings at a resource version
	gwVer    uint64
	gwStatus map[config.Key]*gatewayapi.Status
	logged   sync.Map // failure messages already logged
}

type verdict struct {
	rv   string
	msgs []any
}

// NewStatusWriter returns a writer for the objects src reads, with the
// Gateway API status computed from store (src's sink).
func NewStatusWriter(src *Source, store *config.Store, opts StatusOptions) *StatusWriter {
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.Validate == nil {
		opts.Validate = validation.Validate
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &StatusWriter{src: src, store: store, opts: opts, verdicts: map[string]verdict{}}
}

// Run writes status until ctx is done, starting once src has synced.
func (w *StatusWriter) Run(ctx context.Context) error {
	if !w.opts.ValidationMessages && !w.opts.GatewayAPI {
		return nil
	}
	select {
	case <-ctx.Done():
		return nil
	case <-w.src.Synced():
	}
	t := time.NewTicker(w.opts.Interval)
	defer t.Stop()
	for {
		w.reconcile(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (w *StatusWriter) reconcile(ctx context.Context) {
	w.src.mu.Lock()
	kinds := w.src.kinds
	w.src.mu.Unlock()
	if w.opts.GatewayAPI {
		if snap := w.store.Snapshot(); w.gwStatus == nil || snap.Version != w.gwVer {
			w.gwStatus = gatewayapi.Convert(snap.All(), w.opts.Gateway).Status
			w.gwVer = snap.Version
		}
	}
	seen := map[string]bool{}
	for _, k := range kinds {
		istio := strings.HasSuffix(k.kind.Group, "istio.io")
		gw := k.kind.Group == "gateway.networking.k8s.io"
		if !(istio && w.opts.ValidationMessages) && !(gw && w.opts.GatewayAPI) {
			continue
		}
		for _, obj := range k.inf.GetIndexer().List() {
			u, ok := obj.(*unstructured.Unstructured)
			if !ok || !k.admits(u) {
				continue
			}
			var status map[string]any
			var changed bool
			if istio {
				seen[k.origin+"/"+u.GetNamespace()+"/"+u.GetName()] = true
				status, changed = w.istioStatus(k, u)
			} else {
				status, changed = w.gatewayAPIStatus(k.kind, u)
			}
			if changed {
				w.write(ctx, k, u, status)
			}
		}
	}
	for id := range w.verdicts {
		if !seen[id] {
			delete(w.verdicts, id)
		}
	}
}

// istioStatus returns u's status with validationMessages set to what
// validation finds now, and whether that differs from what u carries.
func (w *StatusWriter) istioStatus(k *kindSync, u *unstructured.Unstructured) (map[string]any, bool) {
	id := k.origin + "/" + u.GetNamespace() + "/" + u.GetName()
	v, ok := w.verdicts[id]
	if !ok || v.rv != u.GetResourceVersion() {
		v = verdict{rv: u.GetResourceVersion(), msgs: w.findings(u)}
		w.verdicts[id] = v
	}
	status, _, _ := unstructured.NestedMap(u.Object, "status")
	cur, _, _ := unstructured.NestedSlice(u.Object, "status", "validationMessages")
	if equality.Semantic.DeepEqual(cur, v.msgs) || (len(cur) == 0 && len(v.msgs) == 0) {
		return nil, false
	}
	if status == nil {
		status = map[string]any{}
	}
	if len(v.msgs) == 0 {
		delete(status, "validationMessages")
	} else {
		status["validationMessages"] = v.msgs
	}
	return status, true
}

// findings decodes and validates u as the store does and returns Istio's
// validation messages for the problems.
func (w *StatusWriter) findings(u *unstructured.Unstructured) []any {
	o, errs := decodeUnstructured(u)
	var list []config.ObjectError
	for _, e := range errs {
		var oe *config.ObjectError
		if errors.As(e, &oe) {
			list = append(list, *oe)
		} else {
			list = append(list, config.ObjectError{Message: e.Error()})
		}
	}
	if o != nil {
		if err := w.opts.Validate(o); err != nil {
			all := []error{err}
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				all = j.Unwrap()
			}
			for _, e := range all {
				list = append(list, config.ErrorAt(o, e))
			}
		}
	}
	var out []any
	for _, e := range list {
		level := "ERROR"
		if e.Warning {
			level = "WARNING"
		}
		desc := e.Message
		if e.Path != "" {
			desc = e.Path + ": " + desc
		}
		out = append(out, map[string]any{
			"type":             map[string]any{"code": "IST0106", "name": "SchemaValidationError"},
			"level":            level,
			"documentationUrl": "https://istio.io/latest/docs/reference/config/analysis/ist0106/",
			"description":      "Schema validation error: " + desc,
		})
	}
	return out
}

// gatewayAPIStatus returns u's status as gatewayapi.Convert computes it
// (transition times kept where a condition did not change, and route
// parents of other controllers kept), and whether it differs.
func (w *StatusWriter) gatewayAPIStatus(kind config.Kind, u *unstructured.Unstructured) (map[string]any, bool) {
	want := w.gwStatus[config.Key{Kind: kind, Namespace: u.GetNamespace(), Name: u.GetName()}]
	if want == nil {
		return nil, false // not this control plane's
	}
	raw, _, _ := unstructured.NestedMap(u.Object, "status")
	now := metav1.Now()
	var cur, next any
	switch kind {
	case config.GatewayClass:
		var c gatewayv1.GatewayClassStatus
		fromMap(raw, &c)
		n := c
		n.Conditions = mergeConditions(c.Conditions, want.Conditions, now)
		cur, next = c, n
	case config.KubeGateway:
		var c gatewayv1.GatewayStatus
		fromMap(raw, &c)
		n := c
		n.Conditions = mergeConditions(c.Conditions, want.Conditions, now)
		n.Addresses = want.Addresses
		n.Listeners = nil
		for _, l := range want.Listeners {
			for _, old := range c.Listeners {
				if old.Name == l.Name {
					l.Conditions = mergeConditions(old.Conditions, l.Conditions, now)
				}
			}
			l.Conditions = mergeConditions(nil, l.Conditions, now)
			n.Listeners = append(n.Listeners, l)
		}
		cur, next = c, n
	case config.HTTPRoute, config.GRPCRoute, config.TCPRoute:
		var c gatewayv1.RouteStatus
		fromMap(raw, &c)
		n := gatewayv1.RouteStatus{}
		ours := gatewayv1.GatewayController(w.controller())
		for _, p := range c.Parents {
			if p.ControllerName != ours {
				n.Parents = append(n.Parents, p)
			}
		}
		for _, p := range want.Parents {
			for _, old := range c.Parents {
				if reflect.DeepEqual(old.ParentRef, p.ParentRef) && old.ControllerName == p.ControllerName {
					p.Conditions = mergeConditions(old.Conditions, p.Conditions, now)
				}
			}
			p.Conditions = mergeConditions(nil, p.Conditions, now)
			n.Parents = append(n.Parents, p)
		}
		cur, next = c, n
	default:
		return nil, false
	}
	if equality.Semantic.DeepEqual(cur, next) {
		return nil, false
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&next)
	if err != nil {
		return nil, false
	}
	out := map[string]any{}
	for k, v := range raw {
		out[k] = v
	}
	for k, v := range m {
		out[k] = v
	}
	return out, true
}

func (w *StatusWriter) controller() string {
	if w.opts.Gateway.ControllerName != "" {
		return w.opts.Gateway.ControllerName
	}
	return gatewayapi.DefaultControllerName
}

func fromMap(m map[string]any, v any) {
	if m != nil {
		_ = runtime.DefaultUnstructuredConverter.FromUnstructured(m, v)
	}
}

// mergeConditions returns want with each condition's LastTransitionTime
// taken from the same condition in cur when its status did not change,
// else now (the CRDs require the field).
func mergeConditions(cur, want []metav1.Condition, now metav1.Time) []metav1.Condition {
	out := make([]metav1.Condition, len(want))
	for i, c := range want {
		if c.LastTransitionTime.IsZero() {
			c.LastTransitionTime = now
			for _, old := range cur {
				if old.Type == c.Type && old.Status == c.Status {
					c.LastTransitionTime = old.LastTransitionTime
				}
			}
		}
		out[i] = c
	}
	return out
}

// write updates u's status through the status subresource. A conflict (u
// changed meanwhile) is left to the next round, which sees the new object.
func (w *StatusWriter) write(ctx context.Context, k *kindSync, u *unstructured.Unstructured, status map[string]any) {
	w.src.mu.Lock()
	gvr, ok := w.src.resolved[k.kind]
	w.src.mu.Unlock()
	if !ok {
		return
	}
	next := u.DeepCopy()
	next.Object["status"] = status
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := w.src.dyn.Resource(gvr).Namespace(u.GetNamespace()).UpdateStatus(wctx, next, metav1.UpdateOptions{FieldManager: "skiffd"})
	if err == nil || apierrors.IsConflict(err) || apierrors.IsNotFound(err) || ctx.Err() != nil {
		return
	}
	msg := fmt.Sprintf("%s %s/%s: writing status: %v", k.kind.Kind, u.GetNamespace(), u.GetName(), err)
	if _, seen := w.logged.LoadOrStore(msg, true); !seen {
		w.opts.Log.Warn("status write failed; retrying each round", "error", msg)
	}
}
