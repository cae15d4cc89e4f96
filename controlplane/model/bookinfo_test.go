package model

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// bookinfo loads Istio's Bookinfo manifests unchanged and adds, as the
// local mesh would, one ready pod per Deployment with an address in
// 198.18.0.0/16, made from the registry's own workload templates.
func bookinfo(t testing.TB, opts Options) (*Registry, []*config.Object) {
	t.Helper()
	objs := append(loadFile(t, "bookinfo/platform/kube/bookinfo.yaml"),
		loadFile(t, "bookinfo/platform/kube/bookinfo-versions.yaml")...)
	for i, tpl := range Build(objs, opts).WorkloadTemplates() {
		objs = append(objs, podFrom(tpl, fmt.Sprintf("%s-0", tpl.Name), fmt.Sprintf("198.18.0.%d", 10+i)))
	}
	return Build(objs, opts), objs
}

// podFrom is the Pod the local mesh starts from a Deployment template.
func podFrom(tpl *WorkloadTemplate, name, ip string) *config.Object {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: tpl.Namespace, Labels: tpl.Pod.Labels},
		Spec:       tpl.Pod.Spec,
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, PodIP: ip,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		},
	}
	return &config.Object{Kind: config.Pod, Meta: pod.ObjectMeta, Spec: pod}
}

func TestBookinfoServices(t *testing.T) {
	r, _ := bookinfo(t, Options{SidecarByDefault: true})
	var got []string
	for _, s := range r.Services() {
		var ports string
		for _, p := range s.Ports {
			ports += fmt.Sprintf(" %s/%d/%s", p.Name, p.Port, p.Protocol)
		}
		got = append(got, fmt.Sprintf("%s ns=%s %s%s selector=%s", s.Hostname, s.Namespace, s.Resolution, ports, labelString(s.Selector)))
	}
	diffLines(t, "services", got, []string{
		"details-v1.default.svc.cluster.local ns=default ClientSideLB http/9080/HTTP selector=app=details,version=v1",
		"details.default.svc.cluster.local ns=default ClientSideLB http/9080/HTTP selector=app=details",
		"productpage-v1.default.svc.cluster.local ns=default ClientSideLB http/9080/HTTP selector=app=productpage,version=v1",
		"productpage.default.svc.cluster.local ns=default ClientSideLB http/9080/HTTP selector=app=productpage",
		"ratings-v1.default.svc.cluster.local ns=default ClientSideLB http/9080/HTTP selector=app=ratings,version=v1",
		"ratings.default.svc.cluster.local ns=default ClientSideLB http/9080/HTTP selector=app=ratings",
		"reviews-v1.default.svc.cluster.local ns=default ClientSideLB http/9080/HTTP selector=app=reviews,version=v1",
		"reviews-v2.default.svc.cluster.local ns=default ClientSideLB http/9080/HTTP selector=app=reviews,version=v2",
		"reviews-v3.default.svc.cluster.local ns=default ClientSideLB http/9080/HTTP selector=app=reviews,version=v3",
		"reviews.default.svc.cluster.local ns=default ClientSideLB http/9080/HTTP selector=app=reviews",
	})
	if w := r.Warnings(); len(w) != 0 {
		t.Errorf("warnings: %q", w)
	}
}

func TestBookinfoInstances(t *testing.T) {
	r, _ := bookinfo(t, Options{SidecarByDefault: true})
	reviews := r.Service("reviews.default.svc.cluster.local", "default")
	if reviews == nil {
		t.Fatal("no reviews service")
	}
	// Templates are sorted details-v1, productpage-v1, ratings-v1,
	// reviews-v1..v3, so the reviews pods got .13, .14, .15.
	diffLines(t, "reviews:9080", instanceLines(r.Instances(reviews, 9080)), []string{
		"198.18.0.13:9080 healthy=true term=false sa=bookinfo-reviews tls=istio wl=reviews-v1 loc= net= w=1 labels=app=reviews,version=v1",
		"198.18.0.14:9080 healthy=true term=false sa=bookinfo-reviews tls=istio wl=reviews-v2 loc= net= w=1 labels=app=reviews,version=v2",
		"198.18.0.15:9080 healthy=true term=false sa=bookinfo-reviews tls=istio wl=reviews-v3 loc= net= w=1 labels=app=reviews,version=v3",
	})
	in := r.Instances(reviews, 9080)[0]
	if in.Identity != "spiffe://cluster.local/ns/default/sa/bookinfo-reviews" {
		t.Errorf("identity %q", in.Identity)
	}
	if in.ServicePort != reviews.Ports[0] || in.Namespace != "default" {
		t.Errorf("service port %+v namespace %q", in.ServicePort, in.Namespace)
	}
	diffLines(t, "reviews-v2:9080", instanceLines(r.Instances(r.Service("reviews-v2.default.svc.cluster.local", "default"), 9080)), []string{
		"198.18.0.14:9080 healthy=true term=false sa=bookinfo-reviews tls=istio wl=reviews-v2 loc= net= w=1 labels=app=reviews,version=v2",
	})
	for host, sa := range map[string]string{"details": "bookinfo-details", "ratings": "bookinfo-ratings", "productpage": "bookinfo-productpage"} {
		list := r.Instances(r.Service(host+".default.svc.cluster.local", "bookinfo"), 9080)
		if len(list) != 1 || list[0].ServiceAccount != sa || list[0].Labels["version"] != "v1" {
			t.Errorf("%s: %q", host, instanceLines(list))
		}
	}
	if got := r.Instances(reviews, 9081); got != nil {
		t.Errorf("port 9081 is no port of reviews, got %q", instanceLines(got))
	}
}

func TestBookinfoWorkloads(t *testing.T) {
	r, _ := bookinfo(t, Options{TrustDomain: "example.org"})
	var got []string
	for _, w := range r.WorkloadsFor("default", map[string]string{"app": "reviews"}) {
		got = append(got, fmt.Sprintf("%s %s/%s wl=%s ips=%v %s healthy=%t tls=%s", w.Kind, w.Namespace, w.Name, w.WorkloadName, w.IPs, w.Identity, w.Healthy, w.TLSMode))
	}
	// Without SidecarByDefault and no injector marks, pods have no sidecar.
	diffLines(t, "reviews workloads", got, []string{
		"Pod default/reviews-v1-0 wl=reviews-v1 ips=[198.18.0.13] spiffe://example.org/ns/default/sa/bookinfo-reviews healthy=true tls=disabled",
		"Pod default/reviews-v2-0 wl=reviews-v2 ips=[198.18.0.14] spiffe://example.org/ns/default/sa/bookinfo-reviews healthy=true tls=disabled",
		"Pod default/reviews-v3-0 wl=reviews-v3 ips=[198.18.0.15] spiffe://example.org/ns/default/sa/bookinfo-reviews healthy=true tls=disabled",
	})
	if n := len(r.WorkloadsFor("default", nil)); n != 6 {
		t.Errorf("default namespace has %d workloads, want 6", n)
	}
	if got := r.WorkloadsFor("default", map[string]string{"app": "reviews", "version": "v4"}); len(got) != 0 {
		t.Errorf("version v4 matched %d workloads", len(got))
	}
	if got := r.WorkloadsFor("other", map[string]string{"app": "reviews"}); len(got) != 0 {
		t.Errorf("namespace other matched %d workloads", len(got))
	}
	if w := r.WorkloadByIP("198.18.0.11"); w == nil || w.Name != "productpage-v1-0" {
		t.Errorf("WorkloadByIP(198.18.0.11) = %+v", w)
	}

	got = nil
	for _, tpl := range r.WorkloadTemplates() {
		c := tpl.Pod.Spec.Containers[0]
		got = append(got, fmt.Sprintf("%s %s/%s replicas=%d sa=%s labels=%s image=%s port=%d",
			tpl.Kind, tpl.Namespace, tpl.Name, tpl.Replicas, tpl.ServiceAccount, labelString(tpl.Labels), c.Image, c.Ports[0].ContainerPort))
	}
	diffLines(t, "templates", got, []string{
		"Deployment default/details-v1 replicas=1 sa=bookinfo-details labels=app=details,version=v1 image=registry.istio.io/release/examples-bookinfo-details-v1:1.20.3 port=9080",
		"Deployment default/productpage-v1 replicas=1 sa=bookinfo-productpage labels=app=productpage,version=v1 image=registry.istio.io/release/examples-bookinfo-productpage-v1:1.20.3 port=9080",
		"Deployment default/ratings-v1 replicas=1 sa=bookinfo-ratings labels=app=ratings,version=v1 image=registry.istio.io/release/examples-bookinfo-ratings-v1:1.20.3 port=9080",
		"Deployment default/reviews-v1 replicas=1 sa=bookinfo-reviews labels=app=reviews,version=v1 image=registry.istio.io/release/examples-bookinfo-reviews-v1:1.20.3 port=9080",
		"Deployment default/reviews-v2 replicas=1 sa=bookinfo-reviews labels=app=reviews,version=v2 image=registry.istio.io/release/examples-bookinfo-reviews-v2:1.20.3 port=9080",
		"Deployment default/reviews-v3 replicas=1 sa=bookinfo-reviews labels=app=reviews,version=v3 image=registry.istio.io/release/examples-bookinfo-reviews-v3:1.20.3 port=9080",
	})
}

// TestConcurrentReads reads one registry from many goroutines; under
// -race it fails if any accessor writes shared state.
func TestConcurrentReads(t *testing.T) {
	r, _ := bookinfo(t, Options{})
	done := make(chan int)
	for range 8 {
		go func() {
			n := 0
			for range 50 {
				for _, s := range r.Services() {
					n += len(r.Instances(r.Service(s.Hostname, "default"), 9080)) + len(s.Identities())
				}
				n += len(r.WorkloadsFor("default", map[string]string{"app": "reviews"}))
			}
			done <- n
		}()
	}
	for range 8 {
		// 50 rounds × (12 instances of 10 services + 10 identities + 3 workloads).
		if n := <-done; n != 50*(12+10+3) {
			t.Errorf("a reader counted %d, want %d", n, 50*(12+10+3))
		}
	}
}

func TestInstancesByIP(t *testing.T) {
	r, _ := bookinfo(t, Options{})
	var got []string
	for _, in := range r.InstancesByIP("198.18.0.13") {
		got = append(got, fmt.Sprintf("%s:%d %s port=%s", in.Address, in.Port, in.Service.Hostname, in.ServicePort.Name))
	}
	diffLines(t, "reviews-v1 pod", got, []string{
		"198.18.0.13:9080 reviews-v1.default.svc.cluster.local port=http",
		"198.18.0.13:9080 reviews.default.svc.cluster.local port=http",
	})
	if got := r.InstancesByIP("198.18.9.9"); got != nil {
		t.Errorf("unknown address has instances %q", instanceLines(got))
	}
}
