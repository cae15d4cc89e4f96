package webhook

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/config/validation"
)

// maxReviewBytes bounds a request body: the API server caps objects at
// about 3 MiB, and a review carries the object (and, on UPDATE, the old one).
const maxReviewBytes = 8 << 20

// validator is the ValidatingAdmissionWebhook for the Istio and Gateway API
// kinds: it reads the object with the config store's decoder and checks it
// with skiffd's validation, so the API server refuses exactly what skiffd's
// file source would.
type validator struct{ log *slog.Logger }

func (v *validator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	review, status, msg := readReview(r)
	if status != 0 {
		// Not a review at all: an HTTP error makes the API server apply
		// the webhook's failurePolicy, as istiod does.
		http.Error(w, "validate: "+msg, status)
		return
	}
	resp := Review(review.Request)
	resp.UID = review.Request.UID
	if !resp.Allowed {
		v.log.Info("admission refused config", "kind", review.Request.Kind.Kind, "namespace", review.Request.Namespace,
			"name", review.Request.Name, "operation", review.Request.Operation, "reason", resp.Result.Message)
	}
	out := admissionv1.AdmissionReview{TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}, Response: resp}
	b, err := json.Marshal(out)
	if err != nil {
		http.Error(w, "validate: encoding the response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// readReview reads an admission.k8s.io/v1 AdmissionReview with a request;
// on failure it returns the HTTP status and why.
func readReview(r *http.Request) (*admissionv1.AdmissionReview, int, string) {
	if r.Method != http.MethodPost {
		return nil, http.StatusMethodNotAllowed, "use POST with an admission.k8s.io/v1 AdmissionReview"
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
		return nil, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q, want application/json", r.Header.Get("Content-Type"))
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxReviewBytes+1))
	if err != nil {
		return nil, http.StatusBadRequest, "reading the request: " + err.Error()
	}
	if len(body) > maxReviewBytes {
		return nil, http.StatusRequestEntityTooLarge, "request body over " + strconv.Itoa(maxReviewBytes) + " bytes"
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		return nil, http.StatusBadRequest, "the body is not an AdmissionReview: " + err.Error()
	}
	if review.Request == nil {
		return nil, http.StatusBadRequest, "AdmissionReview has no request"
	}
	return &review, 0, ""
}

// Review decides one admission request for an Istio or Gateway API object.
// DELETE (and CONNECT) are always allowed. A CREATE or UPDATE is refused
// with the messages skiffd's file source prints for the same object, less
// the file and line ("VirtualService default/reviews: spec.http[0].route:
// weights sum to 90; …"), one per line; validation warnings are returned as
// admission warnings, which kubectl prints. Kinds Skiff does not read are
// allowed with a warning saying so.
func Review(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	allow := &admissionv1.AdmissionResponse{Allowed: true}
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return allow
	}
	if len(req.Object.Raw) == 0 {
		return refuse("request.object is empty; a " + string(req.Operation) + " review must carry the object")
	}
	doc, kind, err := prepare(req)
	if err != nil {
		return refuse(err.Error())
	}
	if !readKind(kind) {
		allow.Warnings = []string{fmt.Sprintf("%s %s: skiffd does not read %s objects; it is stored but has no effect on the mesh",
			kind.Kind, objectName(req), kind.Kind+"."+kind.Group)}
		return allow
	}
	objs, errs := config.Decode(doc, "")
	if len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = e.Error()
		}
		return refuse(strings.Join(msgs, "\n"))
	}
	if len(objs) != 1 {
		return refuse(fmt.Sprintf("request.object decoded to %d objects; want one %s", len(objs), kind.Kind))
	}
	o := objs[0]
	var msgs []string
	if err := validation.Validate(o); err != nil {
		list := []error{err}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			list = j.Unwrap()
		}
		for _, e := range list {
			oe := config.ErrorAt(o, e)
			if oe.Warning {
				oe.Warning = false // kubectl prints "Warning: " itself
				allow.Warnings = append(allow.Warnings, oe.Error())
				continue
			}
			msgs = append(msgs, oe.Error())
		}
	}
	if len(msgs) > 0 {
		r := refuse(strings.Join(msgs, "\n"))
		r.Warnings = allow.Warnings
		return r
	}
	return allow
}

// prepare returns the object as the decoder should read it: namespace and
// name from the request when the object leaves them out, managedFields
// dropped (large, and never part of the config), and its group/kind.
func prepare(req *admissionv1.AdmissionRequest) ([]byte, config.Kind, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(req.Object.Raw, &doc); err != nil || doc == nil {
		return nil, config.Kind{}, fmt.Errorf("request.object is not a JSON object: %v", err)
	}
	var tm metav1.TypeMeta
	_ = json.Unmarshal(req.Object.Raw, &tm)
	kind := config.Kind{Group: req.Kind.Group, Version: req.Kind.Version, Kind: req.Kind.Kind}
	if tm.Kind != "" && tm.APIVersion != "" {
		g, v, ok := strings.Cut(tm.APIVersion, "/")
		if !ok {
			g, v = "", tm.APIVersion
		}
		kind = config.Kind{Group: g, Version: v, Kind: tm.Kind}
	}
	var meta map[string]any
	if m, ok := doc["metadata"]; ok {
		if err := json.Unmarshal(m, &meta); err != nil {
			return nil, kind, fmt.Errorf("%s %s: metadata: %v", kind.Kind, objectName(req), err)
		}
	}
	if meta == nil {
		meta = map[string]any{}
	}
	delete(meta, "managedFields")
	if s, _ := meta["namespace"].(string); s == "" && req.Namespace != "" {
		meta["namespace"] = req.Namespace
	}
	if s, _ := meta["name"].(string); s == "" && req.Name != "" {
		meta["name"] = req.Name
	}
	mb, err := json.Marshal(meta)
	if err != nil {
		return nil, kind, err
	}
	doc["metadata"] = mb
	out, err := json.Marshal(doc)
	return out, kind, err
}

// readKind reports whether the config registry reads kind (at any version:
// the decoder names the versions it accepts when one is not).
func readKind(k config.Kind) bool {
	for _, s := range config.SupportedKinds() {
		if s.Group == k.Group && s.Kind == k.Kind {
			return true
		}
	}
	return false
}

func objectName(req *admissionv1.AdmissionRequest) string {
	if req.Namespace == "" {
		return req.Name
	}
	return req.Namespace + "/" + req.Name
}

func refuse(msg string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{
		Status: metav1.StatusFailure, Message: msg, Reason: metav1.StatusReasonBadRequest, Code: http.StatusBadRequest,
	}}
}
