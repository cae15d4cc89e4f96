package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/skiff-mesh/skiff/controlplane/ca"
	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/config/validation"
	"github.com/skiff-mesh/skiff/controlplane/inject"
	"github.com/skiff-mesh/skiff/internal/testing/kubetest"
)

// fileSourceMessages returns what skiffd's file source prints for doc
// (decoded and validated through the store), without the file:line prefix:
// the messages the webhook must give for the same object.
func fileSourceMessages(t *testing.T, doc string) (errs, warnings []string) {
	t.Helper()
	store := config.NewStore(validation.Validate, slog.New(slog.DiscardHandler))
	objs, derrs := config.Decode([]byte(doc), "case.yaml")
	store.Replace("case.yaml", objs, derrs)
	pos := regexp.MustCompile(`^case\.yaml:\d+: `)
	for _, e := range store.Errors() {
		msg := pos.ReplaceAllString(e.Error(), "")
		if rest, ok := strings.CutPrefix(msg, "warning: "); ok {
			warnings = append(warnings, rest)
		} else {
			errs = append(errs, msg)
		}
	}
	return errs, warnings
}

var (
	gvrVirtualService  = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"}
	gvrDestinationRule = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "destinationrules"}
	gvrGateway         = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "gateways"}
	gvrHTTPRoute       = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}
)

const invalidVS = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 50
    - destination: {host: reviews, subset: v2}
      weight: 40
`

// validationCases are objects the CRD schemas accept and skiffd refuses,
// each with a valid twin.
var validationCases = []struct {
	name           string
	gvr            schema.GroupVersionResource
	invalid, valid string
}{
	{"VirtualService weights sum to 90", gvrVirtualService, invalidVS, strings.Replace(invalidVS, "weight: 40", "weight: 50", 1)},
	{"DestinationRule duplicate subset", gvrDestinationRule, `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v1
    labels: {version: v2}
`, `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: default
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
`},
	{"Gateway without servers", gvrGateway, `apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: default
spec:
  selector: {istio: ingressgateway}
`, `apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: default
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
`},
	{"HTTPRoute hostname twice", gvrHTTPRoute, `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: bookinfo
  namespace: default
spec:
  parentRefs: [{name: gateway}]
  hostnames: [bookinfo.example.com, bookinfo.example.com]
  rules:
  - backendRefs: [{name: productpage, port: 9080}]
`, `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: bookinfo
  namespace: default
spec:
  parentRefs: [{name: gateway}]
  hostnames: [bookinfo.example.com]
  rules:
  - backendRefs: [{name: productpage, port: 9080}]
`},
}

// warnedDR is valid for skiffd but draws a deprecation warning.
const warnedDR = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: ratings
  namespace: default
spec:
  host: ratings
  trafficPolicy:
    outlierDetection:
      consecutiveErrors: 5
`

func unstructuredOf(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(j); err != nil {
		t.Fatal(err)
	}
	return u
}

// TestReviewMessages checks the handler alone: refusals carry the file
// source's messages, DELETE passes, unread kinds pass with a warning.
func TestReviewMessages(t *testing.T) {
	for _, c := range validationCases {
		t.Run(c.name, func(t *testing.T) {
			want, _ := fileSourceMessages(t, c.invalid)
			if len(want) == 0 {
				t.Fatalf("the file source accepts the invalid case; fix the test")
			}
			u := unstructuredOf(t, c.invalid)
			raw, _ := u.MarshalJSON()
			req := &admissionv1.AdmissionRequest{Operation: admissionv1.Create, Namespace: "default", Name: u.GetName(), Object: runtimeRaw(raw)}
			resp := Review(req)
			if resp.Allowed || resp.Result.Message != strings.Join(want, "\n") {
				t.Errorf("invalid: allowed=%v message=%q, want refused with %q", resp.Allowed, msgOf(resp), strings.Join(want, "\n"))
			}
			req.Operation = admissionv1.Delete
			if resp := Review(req); !resp.Allowed {
				t.Errorf("DELETE refused: %q", msgOf(resp))
			}
			u = unstructuredOf(t, c.valid)
			raw, _ = u.MarshalJSON()
			req = &admissionv1.AdmissionRequest{Operation: admissionv1.Update, Namespace: "default", Name: u.GetName(), Object: runtimeRaw(raw)}
			if resp := Review(req); !resp.Allowed {
				t.Errorf("valid: refused with %q", msgOf(resp))
			}
		})
	}
	t.Run("unread kind", func(t *testing.T) {
		raw := []byte(`{"apiVersion":"networking.istio.io/v1alpha3","kind":"EnvoyFilter","metadata":{"name":"f","namespace":"default"},"spec":{}}`)
		resp := Review(&admissionv1.AdmissionRequest{Operation: admissionv1.Create, Namespace: "default", Name: "f", Object: runtimeRaw(raw)})
		if !resp.Allowed || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "skiffd does not read EnvoyFilter") {
			t.Errorf("EnvoyFilter: allowed=%v warnings=%q, want allowed with a warning", resp.Allowed, resp.Warnings)
		}
	})
	t.Run("not JSON", func(t *testing.T) {
		resp := Review(&admissionv1.AdmissionRequest{Operation: admissionv1.Create, Object: runtimeRaw([]byte(`[1,2`))})
		if resp.Allowed || !strings.Contains(resp.Result.Message, "not a JSON object") {
			t.Errorf("got allowed=%v %q", resp.Allowed, msgOf(resp))
		}
	})
}

// TestHandlerHTTP: what is not an AdmissionReview gets an HTTP error (so
// the API server applies the failure policy); /ready answers.
func TestHandlerHTTP(t *testing.T) {
	ts := httptest.NewServer(Handler(inject.Options{}, slog.New(slog.DiscardHandler)))
	defer ts.Close()
	for _, c := range []struct {
		method, path, ctype, body string
		want                      int
	}{
		{"GET", "/validate", "", "", http.StatusMethodNotAllowed},
		{"POST", "/validate", "text/plain", "{}", http.StatusUnsupportedMediaType},
		{"POST", "/validate", "application/json", "{", http.StatusBadRequest},
		{"POST", "/validate", "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, http.StatusBadRequest},
		{"POST", "/validate", "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","operation":"DELETE"}}`, http.StatusOK},
		{"GET", "/ready", "", "", http.StatusOK},
	} {
		req, _ := http.NewRequest(c.method, ts.URL+c.path, strings.NewReader(c.body))
		if c.ctype != "" {
			req.Header.Set("Content-Type", c.ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s %s %q: status %d (%s), want %d", c.method, c.path, c.body, resp.StatusCode, body, c.want)
		}
		if c.want == http.StatusOK && c.path == "/validate" {
			var review admissionv1.AdmissionReview
			if err := json.Unmarshal(body, &review); err != nil || review.Response == nil || review.Response.UID != "u1" || !review.Response.Allowed {
				t.Errorf("DELETE review answer %s: want allowed with uid u1", body)
			}
		}
	}
}

func msgOf(r *admissionv1.AdmissionResponse) string {
	if r.Result == nil {
		return ""
	}
	return r.Result.Message
}

// recorder keeps the pods the API server sent to /inject, by namespace/name,
// so a test can compute what inject.Pod makes of exactly that pod.
type recorder struct {
	next http.Handler
	mu   sync.Mutex
	pods map[string][]byte
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/inject") {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		var review admissionv1.AdmissionReview
		if json.Unmarshal(body, &review) == nil && review.Request != nil {
			rec.mu.Lock()
			rec.pods[review.Request.Namespace+"/"+review.Request.Name] = review.Request.Object.Raw
			rec.mu.Unlock()
		}
	}
	rec.next.ServeHTTP(w, r)
}

func (rec *recorder) pod(key string) []byte {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.pods[key]
}

type warnings struct {
	mu   sync.Mutex
	list []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	w.list = append(w.list, text)
	w.mu.Unlock()
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.list
	w.list = nil
	return out
}

// eventually retries fn every 200 ms for up to d: the API server picks
// webhook configurations up through an informer, a moment after they change.
func eventually(t *testing.T, d time.Duration, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v", what, d, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestWebhooksAgainstAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver; run without -short")
	}
	kube := kubetest.Start(t, kubetest.Options{})
	cs := kube.Clientset(t)
	warned := &warnings{}
	rc := kube.RESTConfig()
	rc.WarningHandler = warned
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))

	authority, err := ca.New(ca.Options{Store: ca.DirStore{Dir: t.TempDir()}, RootKey: ca.ECDSAP256, Authenticator: ca.NewBootstrapTokens(nil), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer authority.Close()

	for _, ns := range []string{"istio-system", "injected", "plain"} {
		labels := map[string]string{}
		if ns == "injected" {
			labels[inject.LabelInjection] = "enabled"
		}
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// No controller-manager here: the ServiceAccount admission plugin
		// needs the namespace's default ServiceAccount.
		if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cs.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	injectOpts := inject.Options{}
	srv, err := New(Options{
		Addr: "127.0.0.1:0", CA: authority, DNSNames: []string{"127.0.0.1", "istiod.istio-system.svc"},
		Inject: injectOpts, Logger: log,
		Namespaces: func(name string) (*corev1.Namespace, error) {
			return cs.CoreV1().Namespaces().Get(context.Background(), name, metav1.GetOptions{})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{next: srv.srv.Handler, pods: map[string][]byte{}}
	srv.srv.Handler = rec
	srvCtx, stopSrv := context.WithCancel(ctx)
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Run(srvCtx) }()
	defer func() { stopSrv(); <-srvDone }()

	opts := ConfigOptions{URL: "https://" + srv.Addr().String(), CABundle: authority.TrustBundlePEM()}
	if err := EnsureConfigurations(ctx, cs, opts); err != nil {
		t.Fatal(err)
	}
	vwc, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, "istio-validator-istio-system", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range vwc.Webhooks {
		if *h.FailurePolicy != admissionregistrationv1.Ignore {
			t.Errorf("new validator %s has failurePolicy %s; Istio starts with Ignore", h.Name, *h.FailurePolicy)
		}
	}
	readyCtx, readyCancel := context.WithTimeout(ctx, 30*time.Second)
	err = FailClosedWhenReady(readyCtx, cs, dyn, opts, 200*time.Millisecond)
	readyCancel()
	if err != nil {
		t.Fatalf("validation never refused the probe Gateway: %v", err)
	}
	checkPolicies(t, cs, admissionregistrationv1.Fail)

	t.Run("validation", func(t *testing.T) {
		for _, c := range validationCases {
			t.Run(c.name, func(t *testing.T) {
				want, _ := fileSourceMessages(t, c.invalid)
				res := dyn.Resource(c.gvr).Namespace("default")
				_, err := res.Create(ctx, unstructuredOf(t, c.invalid), metav1.CreateOptions{})
				if err == nil {
					t.Fatalf("invalid %s was accepted", c.gvr.Resource)
				}
				wantErr := fmt.Sprintf("admission webhook %q denied the request: %s", "validation.istio.io", strings.Join(want, "\n"))
				if !strings.Contains(err.Error(), wantErr) {
					t.Errorf("error:\n  %v\nwant it to contain:\n  %s", err, wantErr)
				}
				obj, err := res.Create(ctx, unstructuredOf(t, c.valid), metav1.CreateOptions{})
				if err != nil {
					t.Fatalf("valid %s refused: %v", c.gvr.Resource, err)
				}
				// UPDATE is validated too; DELETE always passes.
				bad := unstructuredOf(t, c.invalid)
				bad.SetResourceVersion(obj.GetResourceVersion())
				if _, err := res.Update(ctx, bad, metav1.UpdateOptions{}); err == nil || !strings.Contains(err.Error(), want[0]) {
					t.Errorf("invalid update: %v, want refusal with %q", err, want[0])
				}
				if err := res.Delete(ctx, obj.GetName(), metav1.DeleteOptions{}); err != nil {
					t.Errorf("delete: %v", err)
				}
			})
		}
		t.Run("warning", func(t *testing.T) {
			_, wantWarn := fileSourceMessages(t, warnedDR)
			if len(wantWarn) == 0 {
				t.Fatal("the file source gives no warning for the case; fix the test")
			}
			warned.take()
			if _, err := dyn.Resource(gvrDestinationRule).Namespace("default").Create(ctx, unstructuredOf(t, warnedDR), metav1.CreateOptions{}); err != nil {
				t.Fatalf("DestinationRule with a warning refused: %v", err)
			}
			if got := warned.take(); !slices.Equal(got, wantWarn) {
				t.Errorf("warnings %q, want %q", got, wantWarn)
			}
		})
		t.Run("revision label", func(t *testing.T) {
			u := unstructuredOf(t, invalidVS)
			u.SetName("reviews-rev")
			u.SetLabels(map[string]string{inject.LabelRev: "default"})
			_, err := dyn.Resource(gvrVirtualService).Namespace("default").Create(ctx, u, metav1.CreateOptions{})
			if err == nil || !strings.Contains(err.Error(), `admission webhook "rev.validation.istio.io" denied the request`) {
				t.Errorf("VirtualService labelled istio.io/rev=default: %v, want refusal by rev.validation.istio.io", err)
			}
		})
	})

	t.Run("injection", func(t *testing.T) {
		newPod := func(ns, name string, labels map[string]string) *corev1.Pod {
			return &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "app", Image: "docker.io/library/nginx:1.27", Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intOrStr(8080)}}},
				}}},
			}
		}
		t.Run("labelled namespace", func(t *testing.T) {
			got, err := cs.CoreV1().Pods("injected").Create(ctx, newPod("injected", "web", map[string]string{"app": "web", "version": "v1"}), metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			raw := rec.pod("injected/web")
			if raw == nil {
				t.Fatal("the API server did not call /inject for a pod in a namespace labelled istio-injection=enabled")
			}
			var seen corev1.Pod
			if err := json.Unmarshal(raw, &seen); err != nil {
				t.Fatal(err)
			}
			ns, _ := cs.CoreV1().Namespaces().Get(ctx, "injected", metav1.GetOptions{})
			want, d, err := inject.Pod(&seen, ns, injectOpts)
			if err != nil || !d.Inject {
				t.Fatalf("inject.Pod on the pod the webhook saw: %v %+v", err, d)
			}
			if names := containerNames(got.Spec.Containers); !slices.Contains(names, inject.ProxyContainer) || !slices.Equal(names, containerNames(want.Spec.Containers)) {
				t.Errorf("containers %v, want %v with istio-proxy", names, containerNames(want.Spec.Containers))
			}
			if names := containerNames(got.Spec.InitContainers); !slices.Equal(names, []string{inject.InitContainer}) {
				t.Errorf("init containers %v, want [istio-init]", names)
			}
			// After a webhook mutates a pod the API server runs its own
			// admission plugins again, and the ServiceAccount plugin mounts
			// the API token into the containers the webhook added, as in any
			// cluster; that mount is the API server's, not the injector's.
			stored := got.DeepCopy()
			for _, list := range [][]corev1.Container{stored.Spec.Containers, stored.Spec.InitContainers} {
				for i := range list {
					if list[i].Name == inject.ProxyContainer || list[i].Name == inject.InitContainer {
						list[i].VolumeMounts = slices.DeleteFunc(list[i].VolumeMounts, func(m corev1.VolumeMount) bool {
							return strings.HasPrefix(m.Name, "kube-api-access-")
						})
					}
				}
			}
			// What inject.Pod produced must be in the stored pod as is; the
			// API server only adds its defaults (imagePullPolicy,
			// terminationMessagePath, probe periods, …).
			for _, part := range []struct {
				name       string
				want, have any
			}{
				{"metadata.labels", want.Labels, stored.Labels},
				{"metadata.annotations", want.Annotations, stored.Annotations},
				{"spec", want.Spec, stored.Spec},
			} {
				if p := notContained(jsonValue(t, part.want), jsonValue(t, part.have), part.name); p != "" {
					t.Errorf("the stored pod differs from inject.Pod's: %s", p)
				}
			}
		})
		t.Run("unlabelled namespace", func(t *testing.T) {
			got, err := cs.CoreV1().Pods("plain").Create(ctx, newPod("plain", "web", map[string]string{"app": "web"}), metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if names := containerNames(got.Spec.Containers); !slices.Equal(names, []string{"app"}) || len(got.Spec.InitContainers) != 0 {
				t.Errorf("pod in an unlabelled namespace: containers %v, init %v; want it unchanged", names, containerNames(got.Spec.InitContainers))
			}
			if _, ok := got.Annotations[inject.AnnotationStatus]; ok {
				t.Errorf("pod in an unlabelled namespace has %s", inject.AnnotationStatus)
			}
		})
		t.Run("opted out", func(t *testing.T) {
			got, err := cs.CoreV1().Pods("injected").Create(ctx, newPod("injected", "batch", map[string]string{"app": "batch", inject.LabelInject: "false"}), metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if names := containerNames(got.Spec.Containers); !slices.Equal(names, []string{"app"}) || len(got.Spec.InitContainers) != 0 {
				t.Errorf("pod labelled %s=false: containers %v; want it unchanged", inject.LabelInject, names)
			}
			if rec.pod("injected/batch") != nil {
				t.Errorf("the API server called /inject for a pod labelled %s=false; the object selector should exclude it", inject.LabelInject)
			}
		})
	})

	t.Run("configurations", func(t *testing.T) {
		mwc, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "istio-sidecar-injector", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, h := range mwc.Webhooks {
			names = append(names, h.Name)
			if *h.FailurePolicy != admissionregistrationv1.Fail {
				t.Errorf("%s: failurePolicy %s, want Fail (Istio's)", h.Name, *h.FailurePolicy)
			}
		}
		wantNames := []string{"rev.namespace.sidecar-injector.istio.io", "rev.object.sidecar-injector.istio.io", "namespace.sidecar-injector.istio.io", "object.sidecar-injector.istio.io"}
		if !slices.Equal(names, wantNames) {
			t.Errorf("injector webhooks %v, want %v", names, wantNames)
		}
		before := resourceVersions(t, cs)
		if err := EnsureConfigurations(ctx, cs, opts); err != nil {
			t.Fatal(err)
		}
		if after := resourceVersions(t, cs); after != before {
			t.Errorf("EnsureConfigurations with nothing changed wrote the configurations (resourceVersions %v → %v)", before, after)
		}
		// An unchanged call keeps the validator's Fail (no explicit policy).
		checkPolicies(t, cs, admissionregistrationv1.Fail)
		if err := EnsureConfigurations(ctx, cs, ConfigOptions{URL: "http://127.0.0.1:1", CABundle: opts.CABundle}); err == nil || !strings.Contains(err.Error(), "https only") {
			t.Errorf("http URL: %v, want an error saying https only", err)
		}
		if ok, why := ValidationRefuses(ctx, dyn, ConfigOptions{Namespace: "no-such-namespace"}); ok || !strings.Contains(why, "does not exist") {
			t.Errorf("probe in a missing namespace: ready=%v %q, want not ready naming the namespace", ok, why)
		}
		if err := EnsureConfigurations(ctx, cs, ConfigOptions{URL: opts.URL}); err == nil || !strings.Contains(err.Error(), "CABundle is empty") {
			t.Errorf("no CA bundle: %v, want an error naming CABundle", err)
		}
	})

	t.Run("root rotation", func(t *testing.T) {
		changed, unsubscribe := authority.Subscribe()
		defer unsubscribe()
		keepCtx, stopKeep := context.WithCancel(ctx)
		keepDone := make(chan struct{})
		settled := &signalHandler{Handler: log.Handler(), match: "failurePolicy is now Fail", ch: make(chan struct{})}
		go func() {
			defer close(keepDone)
			Keep(keepCtx, cs, dyn, opts, authority.TrustBundlePEM, changed, time.Hour, slog.New(settled))
		}()
		defer func() { stopKeep(); <-keepDone }()
		// Let Keep finish its start-up work (ensure, probe, fail closed), so
		// that only the CA's notification can carry the new bundle.
		select {
		case <-settled.ch:
		case <-time.After(30 * time.Second):
			t.Fatal("Keep never switched validation to fail closed")
		}
		oldBundle := authority.TrustBundlePEM()
		// No overlap: the old root leaves the bundle and the serving
		// certificate moves to the new root at once, so the API server
		// reaches the webhook only once the caBundle has followed.
		if err := authority.RotateRoot(0); err != nil {
			t.Fatal(err)
		}
		newBundle := authority.TrustBundlePEM()
		if bytes.Equal(oldBundle, newBundle) {
			t.Fatal("RotateRoot left the trust bundle unchanged")
		}
		eventually(t, 15*time.Second, "caBundle after rotation", func() error {
			for _, b := range configBundles(t, cs) {
				if !bytes.Equal(b, newBundle) {
					return fmt.Errorf("a webhook still has the old caBundle")
				}
			}
			return nil
		})
		want, _ := fileSourceMessages(t, invalidVS)
		eventually(t, 15*time.Second, "validation through the rotated certificate", func() error {
			_, err := dyn.Resource(gvrVirtualService).Namespace("default").Create(ctx, unstructuredOf(t, invalidVS), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if err == nil || !strings.Contains(err.Error(), want[0]) {
				return fmt.Errorf("invalid VirtualService: %v", err)
			}
			return nil
		})
		checkPolicies(t, cs, admissionregistrationv1.Fail)
	})

	t.Run("webhook down", func(t *testing.T) {
		stopSrv()
		if err := <-srvDone; err != nil {
			t.Fatal(err)
		}
		srvDone <- nil // for the deferred stop
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "down", Namespace: "injected"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "nginx"}}}}
		_, err := cs.CoreV1().Pods("injected").Create(ctx, pod, metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), `failed calling webhook "namespace.sidecar-injector.istio.io"`) {
			t.Errorf("pod in an injected namespace with the injector down: %v, want the API server's failed-calling-webhook error (failurePolicy Fail)", err)
		} else {
			t.Logf("as a user sees it: %v", err)
		}
		plain := pod.DeepCopy()
		plain.Namespace = "plain"
		if _, err := cs.CoreV1().Pods("plain").Create(ctx, plain, metav1.CreateOptions{}); err != nil {
			t.Errorf("pod in an unlabelled namespace with the injector down: %v; the webhook does not select it", err)
		}
		// Fail closed (Istio once its webhook was seen working): refused.
		_, err = dyn.Resource(gvrVirtualService).Namespace("default").Create(ctx, unstructuredOf(t, invalidVS), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil || !strings.Contains(err.Error(), `failed calling webhook "validation.istio.io"`) {
			t.Errorf("VirtualService with validation down and failurePolicy Fail: %v, want a failed-calling-webhook error", err)
		}
		// Fail open (Istio's policy until then): accepted.
		o := opts
		o.CABundle = authority.TrustBundlePEM()
		o.ValidationFailurePolicy = admissionregistrationv1.Ignore
		if err := EnsureConfigurations(ctx, cs, o); err != nil {
			t.Fatal(err)
		}
		eventually(t, 15*time.Second, "validation failing open", func() error {
			_, err := dyn.Resource(gvrVirtualService).Namespace("default").Create(ctx, unstructuredOf(t, invalidVS), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		})
	})
}

func runtimeRaw(b []byte) runtime.RawExtension { return runtime.RawExtension{Raw: b} }

func intOrStr(p int) intstr.IntOrString { return intstr.FromInt(p) }

func containerNames(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func jsonValue(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// notContained returns where want is not found in have: every field of
// want must be in have with the same value (have may hold more fields, the
// API server's defaults); lists must have the same length.
func notContained(want, have any, path string) string {
	switch w := want.(type) {
	case map[string]any:
		h, ok := have.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s: %v, want an object", path, have)
		}
		for k, wv := range w {
			hv, ok := h[k]
			if !ok {
				return fmt.Sprintf("%s.%s: missing, want %v", path, k, wv)
			}
			if p := notContained(wv, hv, path+"."+k); p != "" {
				return p
			}
		}
	case []any:
		h, ok := have.([]any)
		if !ok || len(h) != len(w) {
			return fmt.Sprintf("%s: %v, want %v", path, have, want)
		}
		for i := range w {
			if p := notContained(w[i], h[i], fmt.Sprintf("%s[%d]", path, i)); p != "" {
				return p
			}
		}
	default:
		if !reflect.DeepEqual(want, have) {
			return fmt.Sprintf("%s: %v, want %v", path, have, want)
		}
	}
	return ""
}

func resourceVersions(t *testing.T, cs kubernetes.Interface) string {
	t.Helper()
	m, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), "istio-sidecar-injector", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(context.Background(), "istio-validator-istio-system", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return m.ResourceVersion + "/" + v.ResourceVersion
}

func configBundles(t *testing.T, cs kubernetes.Interface) [][]byte {
	t.Helper()
	m, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), "istio-sidecar-injector", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(context.Background(), "istio-validator-istio-system", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, h := range m.Webhooks {
		out = append(out, h.ClientConfig.CABundle)
	}
	for _, h := range v.Webhooks {
		out = append(out, h.ClientConfig.CABundle)
	}
	return out
}

func checkPolicies(t *testing.T, cs kubernetes.Interface, want admissionregistrationv1.FailurePolicyType) {
	t.Helper()
	v, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(context.Background(), "istio-validator-istio-system", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range v.Webhooks {
		names = append(names, h.Name)
		if *h.FailurePolicy != want {
			t.Errorf("validator %s: failurePolicy %s, want %s", h.Name, *h.FailurePolicy, want)
		}
	}
	if !slices.Equal(names, []string{"rev.validation.istio.io", "validation.istio.io"}) {
		t.Errorf("validator webhooks %v, want [rev.validation.istio.io validation.istio.io]", names)
	}
}

// signalHandler closes ch the first time a record's message contains match.
type signalHandler struct {
	slog.Handler
	match string
	ch    chan struct{}
	once  sync.Once
}

func (h *signalHandler) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.match) {
		h.once.Do(func() { close(h.ch) })
	}
	if h.Handler.Enabled(ctx, r.Level) {
		return h.Handler.Handle(ctx, r)
	}
	return nil
}

func (h *signalHandler) Enabled(context.Context, slog.Level) bool { return true }
