package kubetest

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

const ns = "bookinfo"

// TestControlPlane runs one control plane with the controller-manager and
// goes through what Skiff's Kubernetes code relies on, in order.
func TestControlPlane(t *testing.T) {
	start := time.Now()
	env := Start(t, Options{ControllerManager: true})
	t.Logf("warm start (etcd + kube-apiserver + kube-controller-manager + CRDs): %v", time.Since(start).Round(time.Millisecond))
	cs := env.Clientset(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t.Run("Version", func(t *testing.T) {
		v, err := cs.Discovery().ServerVersion()
		if err != nil {
			t.Fatal(err)
		}
		if v.GitVersion != env.Bins.Version {
			t.Errorf("server version %s, want %s", v.GitVersion, env.Bins.Version)
		}
	})

	t.Run("Kubeconfig", func(t *testing.T) {
		cfg, err := clientcmd.BuildConfigFromFlags("", env.Kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		c, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{}); err != nil {
			t.Fatalf("admin through %s: %v", env.Kubeconfig, err)
		}
		bad := env.RESTConfig()
		bad.BearerToken = "not-the-token"
		c, err = kubernetes.NewForConfig(bad)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
			t.Errorf("unknown token: got %v, want 401 Unauthorized", err)
		}
	})

	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("EndpointSlice", func(t *testing.T) {
		env.CreateNode(t, "node-1")
		svc, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "reviews"},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": "reviews"},
				Ports:    []corev1.ServicePort{{Name: "http", Port: 9080, TargetPort: intstr.FromInt32(9080)}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
		if err != nil || !netip.MustParsePrefix(ServiceCIDR).Contains(ip) {
			t.Errorf("cluster IP %q, want one in %s", svc.Spec.ClusterIP, ServiceCIDR)
		}
		// The ServiceAccount admission plugin needs the namespace's default
		// ServiceAccount, which the controller-manager creates.
		var pod *corev1.Pod
		deadline := time.Now().Add(30 * time.Second)
		for {
			pod, err = cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "reviews-v1", Labels: map[string]string{"app": "reviews", "version": "v1"}},
				Spec: corev1.PodSpec{
					NodeName:   "node-1",
					Containers: []corev1.Container{{Name: "reviews", Image: "docker.io/istio/examples-bookinfo-reviews-v1:1.20.3", Ports: []corev1.ContainerPort{{ContainerPort: 9080}}}},
				},
			}, metav1.CreateOptions{})
			if err == nil || time.Now().After(deadline) || !strings.Contains(err.Error(), "serviceaccount") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		if pod.Spec.ServiceAccountName != "default" {
			t.Errorf("pod service account %q, want default", pod.Spec.ServiceAccountName)
		}

		env.SetPodStatus(t, ns, "reviews-v1", true, "198.18.0.10")
		ep := waitEndpoint(t, cs, "reviews", func(ep discoveryv1.Endpoint) bool {
			return ep.Conditions.Ready != nil && *ep.Conditions.Ready
		})
		if got := ep.Addresses; len(got) != 1 || got[0] != "198.18.0.10" {
			t.Errorf("endpoint addresses %v, want [198.18.0.10]", got)
		}
		if ep.NodeName == nil || *ep.NodeName != "node-1" || ep.TargetRef == nil || ep.TargetRef.Name != "reviews-v1" {
			t.Errorf("endpoint node %v, target %+v; want node-1, pod reviews-v1", ep.NodeName, ep.TargetRef)
		}

		env.SetPodStatus(t, ns, "reviews-v1", false, "198.18.0.10")
		waitEndpoint(t, cs, "reviews", func(ep discoveryv1.Endpoint) bool {
			return ep.Conditions.Ready != nil && !*ep.Conditions.Ready
		})
	})

	t.Run("IstioCRD", func(t *testing.T) {
		vs := dynamicObject(t, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
`)
		gvr := schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"}
		dyn := env.Dynamic(t)
		if _, err := dyn.Resource(gvr).Namespace(ns).Create(ctx, vs, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		got, err := dyn.Resource(gvr).Namespace(ns).Get(ctx, "reviews", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		routes, _, _ := unstructured.NestedSlice(got.Object, "spec", "http")
		if len(routes) != 2 {
			t.Errorf("read back %d http routes, want 2: %v", len(routes), got.Object["spec"])
		}
		// The CRD's schema is enforced: hosts must be a list.
		bad := dynamicObject(t, `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad, namespace: bookinfo}
spec: {hosts: reviews}
`)
		if _, err := dyn.Resource(gvr).Namespace(ns).Create(ctx, bad, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
			t.Errorf("VirtualService with spec.hosts a string: got %v, want 422 Invalid", err)
		}
	})

	t.Run("GatewayAPICRD", func(t *testing.T) {
		gvr := schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}
		dyn := env.Dynamic(t)
		route := dynamicObject(t, `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: bookinfo}
spec:
  parentRefs: [{name: bookinfo-gateway}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /reviews}}]
    backendRefs: [{name: reviews, port: 9080}]
`)
		if _, err := dyn.Resource(gvr).Namespace(ns).Create(ctx, route, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// CEL validation of the CRD runs: a PathPrefix must start with "/".
		bad := dynamicObject(t, `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad, namespace: bookinfo}
spec:
  rules:
  - matches: [{path: {type: PathPrefix, value: reviews}}]
`)
		if _, err := dyn.Resource(gvr).Namespace(ns).Create(ctx, bad, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
			t.Errorf("HTTPRoute with path prefix not starting with /: got %v, want 422 Invalid", err)
		}
		// The experimental channel is installed.
		tcp := schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1alpha2", Resource: "tcproutes"}
		if _, err := dyn.Resource(tcp).Namespace(ns).List(ctx, metav1.ListOptions{}); err != nil {
			t.Errorf("listing TCPRoutes (experimental channel): %v", err)
		}
	})

	t.Run("WatchResumesAfterRestart", func(t *testing.T) {
		factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
		seen := make(chan string, 16)
		inf := factory.Core().V1().ConfigMaps().Informer()
		inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: func(obj any) {
			if cm, ok := obj.(*corev1.ConfigMap); ok && strings.HasPrefix(cm.Name, "cm-") {
				select {
				case seen <- cm.Name:
				default:
				}
			}
		}})
		stop := make(chan struct{})
		defer close(stop)
		factory.Start(stop)
		if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
			t.Fatal("informer did not sync")
		}
		createCM := func(name string) {
			t.Helper()
			if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		expect := func(name string) {
			t.Helper()
			select {
			case got := <-seen:
				if got != name {
					t.Fatalf("informer saw %s, want %s", got, name)
				}
			case <-time.After(60 * time.Second):
				t.Fatalf("informer did not see ConfigMap %s within 60s", name)
			}
		}
		createCM("cm-before")
		expect("cm-before")

		env.Restart(t)
		createCM("cm-after")
		expect("cm-after")
	})

	for _, c := range []string{"etcd", "kube-apiserver", "kube-controller-manager"} {
		rss, err := env.RSS(c)
		if err != nil {
			t.Error(err)
			continue
		}
		t.Logf("RSS %s: %d MiB", c, rss>>20)
	}
}

// waitEndpoint waits (up to 30 s) for an EndpointSlice of the Service with an
// endpoint that satisfies ok.
func waitEndpoint(t *testing.T, cs kubernetes.Interface, service string, ok func(discoveryv1.Endpoint) bool) discoveryv1.Endpoint {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last []discoveryv1.EndpointSlice
	for time.Now().Before(deadline) {
		list, err := cs.DiscoveryV1().EndpointSlices(ns).List(context.Background(), metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
		if err == nil {
			last = list.Items
			for _, s := range list.Items {
				for _, ep := range s.Endpoints {
					if ok(ep) {
						if len(s.Ports) != 1 || s.Ports[0].Port == nil || *s.Ports[0].Port != 9080 {
							t.Errorf("slice %s ports %v, want one port 9080", s.Name, s.Ports)
						}
						return ep
					}
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no matching endpoint for service %s/%s within 30s; slices: %+v", ns, service, last)
	return discoveryv1.Endpoint{}
}

func dynamicObject(t *testing.T, y string) *unstructured.Unstructured {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(j); err != nil {
		t.Fatal(err)
	}
	return u
}

func TestBinariesVersion(t *testing.T) {
	b := Binaries(t)
	for _, bin := range []string{b.APIServer, b.ControllerManager} {
		out, err := exec.Command(bin, "--version").CombinedOutput()
		if err != nil {
			t.Fatalf("%s --version: %v: %s", bin, err, out)
		}
		if want := "Kubernetes " + b.Version; strings.TrimSpace(string(out)) != want {
			t.Errorf("%s --version = %q, want %q", bin, strings.TrimSpace(string(out)), want)
		}
	}
}

func TestKubeVersion(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "go.mod")
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct{ gomod, want string }{
		{"// k8s.io/kubernetes never here\nmodule x\nrequire k8s.io/kubernetes v1.35.4\nreplace k8s.io/api => k8s.io/api v0.35.4\n", "v1.35.4"},
		{"module x\nrequire (\n\tfoo v1.0.0\n\tk8s.io/kubernetes v1.36.0 // indirect\n)\n", "v1.36.0"},
	} {
		got, err := kubeVersion(write(tc.gomod))
		if err != nil || got != tc.want {
			t.Errorf("kubeVersion(%q) = %q, %v; want %q", tc.gomod, got, err, tc.want)
		}
	}
	if _, err := kubeVersion(write("module x\n")); err == nil || !strings.Contains(err.Error(), "require k8s.io/kubernetes") {
		t.Errorf("go.mod without k8s.io/kubernetes: error %v, want one saying what line is expected", err)
	}
}

func TestCRDFilesOnlyCRDs(t *testing.T) {
	files, err := CRDFiles("standard")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, f := range files {
		crds, err := readCRDs(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range crds {
			kinds[c.GetName()]++
		}
	}
	for _, want := range []string{"virtualservices.networking.istio.io", "peerauthentications.security.istio.io", "httproutes.gateway.networking.k8s.io", "gateways.gateway.networking.k8s.io"} {
		if kinds[want] != 1 {
			t.Errorf("CRD %s found %d times, want once", want, kinds[want])
		}
	}
	if _, err := CRDFiles("beta"); err == nil || !strings.Contains(err.Error(), "GatewayAPIChannel") {
		t.Errorf("unknown channel: error %v, want one naming Options.GatewayAPIChannel", err)
	}
}
