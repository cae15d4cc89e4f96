package inject

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// maxReviewBytes bounds a request body; the API server caps objects at
// about 3 MiB, so anything larger is not an AdmissionReview.
const maxReviewBytes = 6 << 20

// NewWebhook serves Istio's injection webhook: POST /inject (also
// /inject/... as Istio's revisioned paths) with an admission.k8s.io/v1
// AdmissionReview for a pod, answered with the review's uid and, when the
// pod is injected, a JSONPatch. As in istiod, a request that is not a
// readable AdmissionReview gets an HTTP error, so the API server applies the
// webhook's failurePolicy; a pod whose annotations cannot be honoured is
// refused (allowed=false) with a message naming the annotation.
func NewWebhook(opts Options) http.Handler {
	mux := http.NewServeMux()
	h := &webhook{opts: opts}
	mux.Handle("/inject", h)
	mux.Handle("/inject/", h)
	return mux
}

type webhook struct{ opts Options }

func (h *webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "inject: use POST with an admission.k8s.io/v1 AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
		http.Error(w, fmt.Sprintf("inject: Content-Type %q, want application/json", r.Header.Get("Content-Type")), http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxReviewBytes+1))
	if err != nil {
		http.Error(w, "inject: reading the request: "+err.Error(), http.StatusBadRequest)
		return
	}
	if len(body) > maxReviewBytes {
		http.Error(w, "inject: request body over "+strconv.Itoa(maxReviewBytes)+" bytes", http.StatusRequestEntityTooLarge)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		http.Error(w, "inject: the body is not an AdmissionReview: "+err.Error(), http.StatusBadRequest)
		return
	}
	if review.Request == nil {
		http.Error(w, "inject: AdmissionReview has no request", http.StatusBadRequest)
		return
	}
	resp := h.review(review.Request)
	resp.UID = review.Request.UID
	out := admissionv1.AdmissionReview{TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}, Response: resp}
	b, err := json.Marshal(out)
	if err != nil {
		http.Error(w, "inject: encoding the response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func (h *webhook) review(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	allow := &admissionv1.AdmissionResponse{Allowed: true}
	if req.Kind.Kind != "Pod" || req.Operation != admissionv1.Create {
		return allow
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return deny(fmt.Sprintf("sidecar injection: request.object is not a Pod: %v", err))
	}
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace
	}
	var ns *corev1.Namespace
	if h.opts.Namespaces != nil {
		n, err := h.opts.Namespaces(pod.Namespace)
		if err != nil {
			return deny(fmt.Sprintf("sidecar injection: looking up namespace %s: %v; retry when the control plane has synced", pod.Namespace, err))
		}
		ns = n
	}
	injected, d, err := Pod(&pod, ns, h.opts)
	if err != nil {
		return deny("sidecar injection of pod " + podName(&pod) + ": " + err.Error())
	}
	if !d.Inject {
		return allow
	}
	before, err1 := toJSONValue(&pod)
	after, err2 := toJSONValue(injected)
	if err1 != nil || err2 != nil {
		return deny(fmt.Sprintf("sidecar injection: encoding pod %s: %v %v", podName(&pod), err1, err2))
	}
	var ops []patchOp
	diff("", before, after, &ops)
	patch, err := json.Marshal(ops)
	if err != nil {
		return deny("sidecar injection: encoding the patch: " + err.Error())
	}
	pt := admissionv1.PatchTypeJSONPatch
	allow.Patch, allow.PatchType = patch, &pt
	return allow
}

func podName(p *corev1.Pod) string {
	return p.Namespace + "/" + cmpOr(p.Name, p.GenerateName+"*")
}

func deny(msg string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{
		Status: metav1.StatusFailure, Message: msg, Reason: metav1.StatusReasonBadRequest, Code: http.StatusBadRequest,
	}}
}

func toJSONValue(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	return out, json.Unmarshal(b, &out)
}

// patchOp is one RFC 6902 operation.
type patchOp struct {
	Op, Path string
	Value    any
}

// MarshalJSON keeps "value" on add and replace even when it is null, and
// leaves it off remove.
func (o patchOp) MarshalJSON() ([]byte, error) {
	if o.Op == "remove" {
		return json.Marshal(map[string]string{"op": o.Op, "path": o.Path})
	}
	return json.Marshal(struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value any    `json:"value"`
	}{o.Op, o.Path, o.Value})
}

// diff appends the operations that turn a into b. Objects are compared key
// by key; a changed array is replaced whole, which keeps the patch correct
// without index bookkeeping (pods have few containers and volumes).
func diff(path string, a, b any, ops *[]patchOp) {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if !aok || !bok {
		if !reflect.DeepEqual(a, b) {
			*ops = append(*ops, patchOp{Op: "replace", Path: path, Value: b})
		}
		return
	}
	keys := make([]string, 0, len(am)+len(bm))
	for k := range am {
		keys = append(keys, k)
	}
	for k := range bm {
		if _, ok := am[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		p := path + "/" + escapePointer(k)
		av, ina := am[k]
		bv, inb := bm[k]
		switch {
		case ina && !inb:
			*ops = append(*ops, patchOp{Op: "remove", Path: p})
		case !ina && inb:
			*ops = append(*ops, patchOp{Op: "add", Path: p, Value: bv})
		default:
			diff(p, av, bv, ops)
		}
	}
}

func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}
