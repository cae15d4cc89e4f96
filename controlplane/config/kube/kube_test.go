package kube_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/config/file"
	"github.com/skiff-mesh/skiff/controlplane/config/kube"
	"github.com/skiff-mesh/skiff/controlplane/config/validation"
	"github.com/skiff-mesh/skiff/controlplane/gatewayapi"
	"github.com/skiff-mesh/skiff/controlplane/model"
	"github.com/skiff-mesh/skiff/internal/testing/kubetest"
)

const wait = 20 * time.Second // bound on any change reaching the store

var vsGVR = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"}

// run starts a source on cfg feeding a new validating store and waits
// until it has synced.
func run(t *testing.T, cfg *rest.Config, opts kube.Options) (*kube.Source, *config.Store) {
	t.Helper()
	src, err := kube.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	store := config.NewStore(validation.Validate, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, store) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("source did not stop within 10s of its context ending")
		}
	})
	select {
	case <-src.Synced():
	case err := <-done:
		t.Fatalf("source stopped before syncing: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("source did not sync within 60s")
	}
	return src, store
}

// eventually polls cond until it holds or wait passes; what describes the
// state for the failure message.
func eventually(t *testing.T, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", wait, what())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func key(k config.Kind, ns, name string) config.Key {
	return config.Key{Kind: k, Namespace: ns, Name: name}
}

func createNS(t *testing.T, cs kubernetes.Interface, name string, labels map[string]string) {
	t.Helper()
	_, err := cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func unstructuredYAML(t *testing.T, y string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(y), &u.Object); err != nil {
		t.Fatal(err)
	}
	return u
}

func vsYAML(name string, w1, w2 int) string {
	return fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: %s, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: %d}
    - {destination: {host: reviews, subset: v2}, weight: %d}
`, name, w1, w2)
}

func weights(o *config.Object) []int32 {
	if o == nil {
		return nil
	}
	var out []int32
	for _, r := range o.Spec.(*networking.VirtualService).GetHttp()[0].GetRoute() {
		out = append(out, r.GetWeight())
	}
	return out
}

func TestSource(t *testing.T) {
	env := kubetest.Start(t, kubetest.Options{ControllerManager: true})
	cs := env.Clientset(t)
	dyn := env.Dynamic(t)
	ctx := context.Background()
	createNS(t, cs, "bookinfo", nil)

	t.Run("ServiceAndEndpointsAsFromFiles", func(t *testing.T) {
		_, store := run(t, env.RESTConfig(), kube.Options{})
		node := env.CreateNode(t, "node-1")
		node.Labels = map[string]string{corev1.LabelTopologyRegion: "eu-west", corev1.LabelTopologyZone: "eu-west-1a", "topology.istio.io/subzone": "rack7"}
		if _, err := cs.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := cs.CoreV1().Services("bookinfo").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "reviews", Labels: map[string]string{"app": "reviews"}},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "reviews"},
				Ports: []corev1.ServicePort{{Name: "http", Port: 9080, TargetPort: intstr.FromInt32(9080)}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		createPod(t, cs, "bookinfo", "reviews-v1", map[string]string{"app": "reviews", "version": "v1"})
		env.SetPodStatus(t, "bookinfo", "reviews-v1", true, "198.18.0.10")

		// The EndpointSlice the controller-manager publishes reaches the
		// store, and the model reads the endpoint, ready, with the node's
		// locality.
		var inst []*model.Instance
		eventually(t, func() bool {
			reg := model.Build(store.Snapshot().All(), model.Options{})
			inst = reg.Instances(reg.Service("reviews.bookinfo.svc.cluster.local", "bookinfo"), 9080)
			return len(inst) == 1 && inst[0].Healthy && inst[0].Locality != ""
		}, func() string { return fmt.Sprintf("instances of reviews: %+v; store errors %v", inst, store.Errors()) })
		if inst[0].Address != "198.18.0.10" || inst[0].Locality != "eu-west/eu-west-1a/rack7" || inst[0].ServiceAccount != "default" {
			t.Errorf("instance %s locality %q account %q; want 198.18.0.10, eu-west/eu-west-1a/rack7, default",
				inst[0].Address, inst[0].Locality, inst[0].ServiceAccount)
		}

		// The same objects, as `kubectl get -o yaml` prints them, read by
		// the file source: the store holds equal objects.
		svc, _ := cs.CoreV1().Services("bookinfo").Get(ctx, "reviews", metav1.GetOptions{})
		pod, _ := cs.CoreV1().Pods("bookinfo").Get(ctx, "reviews-v1", metav1.GetOptions{})
		slices, err := cs.DiscoveryV1().EndpointSlices("bookinfo").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=reviews"})
		if err != nil || len(slices.Items) != 1 {
			t.Fatalf("endpoint slices of reviews: %v, %v", slices, err)
		}
		slice := &slices.Items[0]
		dir := t.TempDir()
		var keys []config.Key
		for i, o := range []struct {
			kind config.Kind
			obj  runtime.Object
			meta *metav1.ObjectMeta
		}{{config.Service, svc, &svc.ObjectMeta}, {config.Pod, pod, &pod.ObjectMeta}, {config.EndpointSlice, slice, &slice.ObjectMeta}} {
			// The store must have caught up with what was read.
			k := key(o.kind, "bookinfo", o.meta.Name)
			eventually(t, func() bool {
				got := store.Snapshot().Get(k)
				return got != nil && got.Meta.ResourceVersion == o.meta.ResourceVersion
			}, func() string { return k.String() + " at resource version " + o.meta.ResourceVersion })
			o.meta.ManagedFields = nil
			u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o.obj)
			if err != nil {
				t.Fatal(err)
			}
			u["apiVersion"], u["kind"] = o.kind.APIVersion(), o.kind.Kind
			y, err := yaml.Marshal(u)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%d.yaml", i)), y, 0o644); err != nil {
				t.Fatal(err)
			}
			keys = append(keys, k)
		}
		fileStore := config.NewStore(validation.Validate, nil)
		fsrc := file.New(dir, file.Options{})
		fctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go fsrc.Run(fctx, fileStore)
		<-fsrc.Synced()
		for _, k := range keys {
			want, got := fileStore.Snapshot().Get(k), store.Snapshot().Get(k)
			if want == nil || got == nil {
				t.Errorf("%s: file store %v, kubernetes store %v; want both", k, want != nil, got != nil)
				continue
			}
			if w, g := comparable(want), comparable(got); !reflect.DeepEqual(w, g) {
				t.Errorf("%s differs from the file source's:\nfile: %+v\nkube: %+v", k, w, g)
			}
		}
	})

	t.Run("VirtualServiceLifecycle", func(t *testing.T) {
		_, store := run(t, env.RESTConfig(), kube.Options{})
		vs := dyn.Resource(vsGVR).Namespace("bookinfo")
		k := key(config.VirtualService, "bookinfo", "lifecycle")
		if _, err := vs.Create(ctx, unstructuredYAML(t, vsYAML("lifecycle", 50, 50)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() bool { return reflect.DeepEqual(weights(store.Snapshot().Get(k)), []int32{50, 50}) },
			func() string { return "created VirtualService in the store" })
		cur, err := vs.Get(ctx, "lifecycle", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		next := unstructuredYAML(t, vsYAML("lifecycle", 80, 20))
		next.SetResourceVersion(cur.GetResourceVersion())
		if _, err := vs.Update(ctx, next, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() bool { return reflect.DeepEqual(weights(store.Snapshot().Get(k)), []int32{80, 20}) },
			func() string { return fmt.Sprintf("updated weights; store has %v", weights(store.Snapshot().Get(k))) })
		if err := vs.Delete(ctx, "lifecycle", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() bool { return store.Snapshot().Get(k) == nil }, func() string { return "deleted VirtualService still in the store" })
	})

	t.Run("InvalidVirtualService", func(t *testing.T) {
		src, store := run(t, env.RESTConfig(), kube.Options{})
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		w := kube.NewStatusWriter(src, store, kube.StatusOptions{ValidationMessages: true, Interval: 100 * time.Millisecond})
		go w.Run(sctx)

		vs := dyn.Resource(vsGVR).Namespace("bookinfo")
		k := key(config.VirtualService, "bookinfo", "weights")
		if _, err := vs.Create(ctx, unstructuredYAML(t, vsYAML("weights", 60, 40)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() bool { return store.Snapshot().Get(k) != nil }, func() string { return "valid VirtualService in the store" })

		// Accepted by the CRD's schema, rejected by validation: reported
		// with its field, kept out; the last good version stays.
		cur, err := vs.Get(ctx, "weights", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		bad := unstructuredYAML(t, vsYAML("weights", 60, 30))
		bad.SetResourceVersion(cur.GetResourceVersion())
		if _, err := vs.Update(ctx, bad, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("the API server refused a VirtualService whose weights sum to 90: %v", err)
		}
		var found config.ObjectError
		eventually(t, func() bool {
			for _, e := range store.Errors() {
				if e.Key == k && !e.Warning {
					found = e
					return true
				}
			}
			return false
		}, func() string { return fmt.Sprintf("no error for %s; errors: %v", k, store.Errors()) })
		if found.Path != "spec.http[0].route" || !strings.Contains(found.Message, "sum to 90") {
			t.Errorf("error %q: want path spec.http[0].route and the sum", found.Error())
		}
		if got := weights(store.Snapshot().Get(k)); !reflect.DeepEqual(got, []int32{60, 40}) {
			t.Errorf("in force: weights %v, want the last good [60 40]", got)
		}
		// The status carries Istio's validation message.
		var msgs []any
		eventually(t, func() bool {
			u, err := vs.Get(ctx, "weights", metav1.GetOptions{})
			if err != nil {
				return false
			}
			msgs, _, _ = unstructured.NestedSlice(u.Object, "status", "validationMessages")
			return len(msgs) > 0
		}, func() string { return "no status.validationMessages written" })
		m, _ := msgs[0].(map[string]any)
		code, _, _ := unstructured.NestedString(m, "type", "code")
		name, _, _ := unstructured.NestedString(m, "type", "name")
		if code != "IST0106" || name != "SchemaValidationError" || m["level"] != "ERROR" {
			t.Errorf("validation message %v: want type IST0106 SchemaValidationError, level ERROR", m)
		}
		t.Logf("status.validationMessages as stored by the API server: %v", msgs)

		// Fixed: in force, and the message goes away.
		cur, _ = vs.Get(ctx, "weights", metav1.GetOptions{})
		good := unstructuredYAML(t, vsYAML("weights", 70, 30))
		good.SetResourceVersion(cur.GetResourceVersion())
		if _, err := vs.Update(ctx, good, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() bool { return reflect.DeepEqual(weights(store.Snapshot().Get(k)), []int32{70, 30}) },
			func() string { return "fixed VirtualService in force" })
		eventually(t, func() bool {
			u, err := vs.Get(ctx, "weights", metav1.GetOptions{})
			if err != nil {
				return false
			}
			msgs, _, _ = unstructured.NestedSlice(u.Object, "status", "validationMessages")
			return len(msgs) == 0
		}, func() string { return fmt.Sprintf("validationMessages still %v", msgs) })

		// Invalid from the start: never in the store.
		if _, err := vs.Create(ctx, unstructuredYAML(t, vsYAML("never", 10, 10)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		nk := key(config.VirtualService, "bookinfo", "never")
		eventually(t, func() bool {
			for _, e := range store.Errors() {
				if e.Key == nk {
					return true
				}
			}
			return false
		}, func() string { return "no error reported for " + nk.String() })
		if store.Snapshot().Get(nk) != nil {
			t.Errorf("%s is in force; want it kept out", nk)
		}
	})

	t.Run("DiscoverySelectors", func(t *testing.T) {
		createNS(t, cs, "mesh-in", map[string]string{"istio-discovery": "enabled"})
		createNS(t, cs, "mesh-out", nil)
		for _, ns := range []string{"mesh-in", "mesh-out"} {
			if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "settings"}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		_, store := run(t, env.RESTConfig(), kube.Options{DiscoverySelectors: []metav1.LabelSelector{
			{MatchLabels: map[string]string{"istio-discovery": "enabled"}}}})
		in, out := key(config.ConfigMap, "mesh-in", "settings"), key(config.ConfigMap, "mesh-out", "settings")
		has := func(k config.Key) bool { return store.Snapshot().Get(k) != nil }
		if !has(in) || has(out) {
			t.Fatalf("after sync: %s present %v, %s present %v; want only the selected namespace's", in, has(in), out, has(out))
		}
		if has(key(config.Namespace, "", "mesh-out")) || !has(key(config.Namespace, "", "mesh-in")) {
			t.Errorf("Namespace objects: want mesh-in only")
		}
		setLabels := func(ns string, l map[string]string) {
			t.Helper()
			n, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			n.Labels = l
			if _, err := cs.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		setLabels("mesh-out", map[string]string{"istio-discovery": "enabled"})
		eventually(t, func() bool { return has(out) }, func() string { return out.String() + " did not arrive when its namespace was selected" })
		setLabels("mesh-in", nil)
		eventually(t, func() bool { return !has(in) }, func() string { return in.String() + " stayed when its namespace left the selection" })
		// Changes in a namespace outside the selection stay out.
		if _, err := cs.CoreV1().ConfigMaps("mesh-in").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "later"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := cs.CoreV1().ConfigMaps("mesh-out").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "later"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() bool { return has(key(config.ConfigMap, "mesh-out", "later")) }, func() string { return "mesh-out/later did not arrive" })
		if has(key(config.ConfigMap, "mesh-in", "later")) {
			t.Error("mesh-in/later arrived though mesh-in is no longer selected")
		}
		if _, err := kube.New(env.RESTConfig(), kube.Options{DiscoverySelectors: []metav1.LabelSelector{{
			MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Near"}}}}}); err == nil ||
			!strings.Contains(err.Error(), "discoverySelectors[0]") {
			t.Errorf("bad selector: error %v, want one naming meshConfig.discoverySelectors[0]", err)
		}
	})

	t.Run("GatewaySecrets", func(t *testing.T) {
		_, store := run(t, env.RESTConfig(), kube.Options{GatewaySecretsOnly: true})
		secrets := cs.CoreV1().Secrets("bookinfo")
		for _, s := range []*corev1.Secret{
			{ObjectMeta: metav1.ObjectMeta{Name: "gw-cert"}, Type: corev1.SecretTypeTLS,
				Data: map[string][]byte{"tls.crt": []byte("cert"), "tls.key": []byte("key")}},
			{ObjectMeta: metav1.ObjectMeta{Name: "generic-cert"}, Type: corev1.SecretTypeOpaque,
				Data: map[string][]byte{"cert": []byte("cert"), "key": []byte("key")}},
			{ObjectMeta: metav1.ObjectMeta{Name: "db-password"}, Type: corev1.SecretTypeOpaque,
				Data: map[string][]byte{"password": []byte("hunter2")}},
		} {
			if _, err := secrets.Create(ctx, s, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		tlsKey := key(config.Secret, "bookinfo", "gw-cert")
		eventually(t, func() bool { return store.Snapshot().Get(tlsKey) != nil }, func() string { return "TLS secret did not arrive" })
		got := store.Snapshot().Get(tlsKey).Spec.(*corev1.Secret)
		if string(got.Data["tls.crt"]) != "cert" || got.Type != corev1.SecretTypeTLS {
			t.Errorf("TLS secret in the store: type %s, tls.crt %q", got.Type, got.Data["tls.crt"])
		}
		eventually(t, func() bool { return store.Snapshot().Get(key(config.Secret, "bookinfo", "generic-cert")) != nil },
			func() string { return "generic credential secret did not arrive" })
		if store.Snapshot().Get(key(config.Secret, "bookinfo", "db-password")) != nil {
			t.Error("a Secret no gateway can use is in the store")
		}
	})

	t.Run("GatewayAPIStatus", func(t *testing.T) {
		src, store := run(t, env.RESTConfig(), kube.Options{})
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go kube.NewStatusWriter(src, store, kube.StatusOptions{GatewayAPI: true, Interval: 100 * time.Millisecond}).Run(sctx)

		svcName := gatewayapi.DeploymentName("web", "istio")
		svc, err := cs.CoreV1().Services("bookinfo").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: svcName},
			Spec: corev1.ServiceSpec{Selector: map[string]string{gatewayapi.GatewayNameLabel: "web"},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		gwGVR := schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "gateways"}
		gws := dyn.Resource(gwGVR).Namespace("bookinfo")
		if _, err := gws.Create(ctx, unstructuredYAML(t, `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: bookinfo}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 80, protocol: HTTP}
`), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		var st map[string]any
		cond := func(typ string) string {
			conds, _, _ := unstructured.NestedSlice(st, "conditions")
			for _, c := range conds {
				if m, _ := c.(map[string]any); m["type"] == typ {
					return fmt.Sprint(m["status"])
				}
			}
			return ""
		}
		eventually(t, func() bool {
			u, err := gws.Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				return false
			}
			st, _, _ = unstructured.NestedMap(u.Object, "status")
			addrs, _, _ := unstructured.NestedSlice(st, "addresses")
			return cond("Accepted") == "True" && cond("Programmed") == "True" && len(addrs) > 0
		}, func() string { return fmt.Sprintf("Gateway status %v", st) })
		addrs, _, _ := unstructured.NestedSlice(st, "addresses")
		if a, _ := addrs[0].(map[string]any); a["value"] != svc.Spec.ClusterIP {
			t.Errorf("Gateway addresses %v, want the cluster IP %s of %s", addrs, svc.Spec.ClusterIP, svcName)
		}
		listeners, _, _ := unstructured.NestedSlice(st, "listeners")
		if len(listeners) != 1 {
			t.Errorf("listener status %v, want one entry", listeners)
		}
		// Written once: the status stays put while nothing changes.
		u, _ := gws.Get(ctx, "web", metav1.GetOptions{})
		rv := u.GetResourceVersion()
		time.Sleep(500 * time.Millisecond)
		if u, _ = gws.Get(ctx, "web", metav1.GetOptions{}); u.GetResourceVersion() != rv {
			t.Errorf("Gateway rewritten without a change (resource version %s → %s)", rv, u.GetResourceVersion())
		}
	})

	t.Run("APIServerRestart", func(t *testing.T) {
		var lists, watches atomic.Int64
		var listMu sync.Mutex
		listRVs := map[string]int{}
		cfg := env.RESTConfig()
		cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
			return roundTripFunc(func(r *http.Request) (*http.Response, error) {
				if r.Method == http.MethodGet && !strings.Contains(r.URL.Path, "/apis/apiextensions") {
					if r.URL.Query().Get("watch") == "true" {
						watches.Add(1)
					} else if r.URL.Query().Has("resourceVersion") || r.URL.Query().Has("limit") {
						lists.Add(1)
						listMu.Lock()
						rv := r.URL.Query().Get("resourceVersion")
						if rv != "" && rv != "0" {
							rv = "last seen"
						}
						listRVs["resourceVersion="+rv+" "+r.URL.Query().Get("resourceVersionMatch")]++
						listMu.Unlock()
					}
				}
				return rt.RoundTrip(r)
			})
		})
		_, store := run(t, cfg, kube.Options{})
		vs := dyn.Resource(vsGVR).Namespace("bookinfo")
		var before []config.Key
		for i := range 5 {
			name := fmt.Sprintf("before-%d", i)
			if _, err := vs.Create(ctx, unstructuredYAML(t, vsYAML(name, 50, 50)), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			before = append(before, key(config.VirtualService, "bookinfo", name))
		}
		eventually(t, func() bool {
			for _, k := range before {
				if store.Snapshot().Get(k) == nil {
					return false
				}
			}
			return true
		}, func() string { return "VirtualServices created before the restart" })
		all := len(store.Snapshot().All())
		listsBefore := lists.Load()
		listMu.Lock()
		clear(listRVs)
		listMu.Unlock()
		// Whatever the informers do across the restart, the store sees
		// only the changes made.
		var changedMu sync.Mutex
		changed := map[config.Key]bool{}
		store.Subscribe(func(c config.Change) {
			changedMu.Lock()
			defer changedMu.Unlock()
			for _, k := range c.Keys {
				changed[k] = true
			}
		})

		env.Restart(t)

		for i := range 5 {
			name := fmt.Sprintf("after-%d", i)
			if _, err := vs.Create(ctx, unstructuredYAML(t, vsYAML(name, 50, 50)), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		cur, err := vs.Get(ctx, "before-0", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		upd := unstructuredYAML(t, vsYAML("before-0", 90, 10))
		upd.SetResourceVersion(cur.GetResourceVersion())
		if _, err := vs.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() bool {
			for i := range 5 {
				if store.Snapshot().Get(key(config.VirtualService, "bookinfo", fmt.Sprintf("after-%d", i))) == nil {
					return false
				}
			}
			return reflect.DeepEqual(weights(store.Snapshot().Get(before[0])), []int32{90, 10})
		}, func() string { return "changes made after the restart did not arrive" })
		for _, k := range before {
			if store.Snapshot().Get(k) == nil {
				t.Errorf("%s lost across the restart", k)
			}
		}
		if got := len(store.Snapshot().All()); got < all+5 {
			t.Errorf("store holds %d objects after the restart, want at least %d (+5 created)", got, all+5)
		}
		changedMu.Lock()
		for k := range changed {
			if k.Kind == config.EndpointSlice && k.Namespace == "default" && k.Name == "kubernetes" {
				continue // the API server's own endpoints: it leaves them when stopping
			}
			if k.Kind != config.VirtualService || !(strings.HasPrefix(k.Name, "after-") || k.Name == "before-0") {
				t.Errorf("store change for %s across the restart; want only the objects changed", k)
			}
		}
		changedMu.Unlock()
		relists := lists.Load() - listsBefore
		listMu.Lock()
		t.Logf("requests across the restart: %d lists %v, %d watches in all", relists, listRVs, watches.Load())
		listMu.Unlock()
		// At most one relist per informer, at the last resource version seen
		// (served from the API server's watch cache, not a full read of etcd).
		for q := range listRVs {
			if !strings.HasPrefix(q, "resourceVersion=last seen") {
				t.Errorf("a list across the restart asked for %s; want lists from the last resource version seen", q)
			}
		}
		if informers := int64(8 + 17); relists > informers {
			t.Errorf("%d LIST requests after the restart; want at most one per informer (%d)", relists, informers)
		}
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// createPod creates a Pod on node-1, retrying while the namespace's default
// ServiceAccount (which the admission plugin requires) does not exist yet.
func createPod(tb testing.TB, cs kubernetes.Interface, ns, name string, labels map[string]string) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := cs.CoreV1().Pods(ns).Create(context.Background(), &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1",
				Ports: []corev1.ContainerPort{{ContainerPort: 9080}}}}},
		}, metav1.CreateOptions{})
		if err == nil {
			return
		}
		if time.Now().After(deadline) || !strings.Contains(err.Error(), "serviceaccount") {
			tb.Fatalf("pod %s/%s: %v", ns, name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// comparable is an object's content without what differs by source: the
// resource version (a content hash from files, the API server's here) and
// the position.
func comparable(o *config.Object) any {
	obj := o.Spec.(runtime.Object).DeepCopyObject()
	m := obj.(metav1.ObjectMetaAccessor).GetObjectMeta()
	m.SetResourceVersion("")
	meta := o.Meta.DeepCopy()
	meta.ResourceVersion = ""
	return struct {
		Kind config.Kind
		Meta *metav1.ObjectMeta
		Spec runtime.Object
	}{o.Kind, meta, obj}
}
