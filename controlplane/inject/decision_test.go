package inject

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestDecision is istio.io's injection table (namespace label × pod label)
// plus revisions, hostNetwork, already-injected pods and the deprecated
// annotation.
func TestDecision(t *testing.T) {
	type labels = map[string]string
	cases := []struct {
		name          string
		nsLabels      labels
		noNamespace   bool
		podLabels     labels
		podAnnots     labels
		hostNetwork   bool
		opts          Options
		namespaceName string
		want          bool
	}{
		// The istio.io table: namespace istio-injection × pod sidecar.istio.io/inject.
		{name: "ns enabled, pod unset", nsLabels: labels{"istio-injection": "enabled"}, want: true},
		{name: "ns enabled, pod true", nsLabels: labels{"istio-injection": "enabled"}, podLabels: labels{"sidecar.istio.io/inject": "true"}, want: true},
		{name: "ns enabled, pod false", nsLabels: labels{"istio-injection": "enabled"}, podLabels: labels{"sidecar.istio.io/inject": "false"}, want: false},
		{name: "ns disabled, pod unset", nsLabels: labels{"istio-injection": "disabled"}, want: false},
		{name: "ns disabled, pod true", nsLabels: labels{"istio-injection": "disabled"}, podLabels: labels{"sidecar.istio.io/inject": "true"}, want: false},
		{name: "ns disabled, pod false", nsLabels: labels{"istio-injection": "disabled"}, podLabels: labels{"sidecar.istio.io/inject": "false"}, want: false},
		{name: "ns unset, pod unset", want: false},
		{name: "ns unset, pod true", podLabels: labels{"sidecar.istio.io/inject": "true"}, want: true},
		{name: "ns unset, pod false", podLabels: labels{"sidecar.istio.io/inject": "false"}, want: false},
		{name: "ns unset, pod unset, enableNamespacesByDefault", opts: Options{EnableNamespacesByDefault: true}, want: true},
		{name: "ns unset, pod false, enableNamespacesByDefault", opts: Options{EnableNamespacesByDefault: true}, podLabels: labels{"sidecar.istio.io/inject": "false"}, want: false},

		// The label wins over the deprecated annotation; the annotation alone
		// cannot select a pod in an unlabeled namespace but can opt out.
		{name: "label true beats annotation false", podLabels: labels{"sidecar.istio.io/inject": "true"}, podAnnots: labels{"sidecar.istio.io/inject": "false"}, want: true},
		{name: "label false beats annotation true", nsLabels: labels{"istio-injection": "enabled"}, podLabels: labels{"sidecar.istio.io/inject": "false"}, podAnnots: labels{"sidecar.istio.io/inject": "true"}, want: false},
		{name: "annotation false opts out", nsLabels: labels{"istio-injection": "enabled"}, podAnnots: labels{"sidecar.istio.io/inject": "false"}, want: false},
		{name: "annotation true alone, ns unset", podAnnots: labels{"sidecar.istio.io/inject": "true"}, want: false},
		{name: "pod value yes", podLabels: labels{"sidecar.istio.io/inject": "yes"}, want: true},
		{name: "pod value garbage is not true", nsLabels: labels{"istio-injection": "enabled"}, podLabels: labels{"sidecar.istio.io/inject": "maybe"}, want: false},

		// Revisions.
		{name: "ns rev default", nsLabels: labels{"istio.io/rev": "default"}, want: true},
		{name: "ns rev canary, injector default", nsLabels: labels{"istio.io/rev": "canary"}, want: false},
		{name: "ns rev canary, injector canary", nsLabels: labels{"istio.io/rev": "canary"}, opts: Options{Revision: "canary"}, want: true},
		{name: "ns rev canary, pod false", nsLabels: labels{"istio.io/rev": "canary"}, podLabels: labels{"sidecar.istio.io/inject": "false"}, opts: Options{Revision: "canary"}, want: false},
		{name: "istio-injection wins over rev", nsLabels: labels{"istio-injection": "enabled", "istio.io/rev": "canary"}, opts: Options{Revision: "canary"}, want: false},
		{name: "istio-injection enabled with rev, default injector", nsLabels: labels{"istio-injection": "enabled", "istio.io/rev": "canary"}, want: true},
		{name: "pod rev canary in unlabeled ns", podLabels: labels{"istio.io/rev": "canary"}, opts: Options{Revision: "canary"}, want: true},
		{name: "pod rev other in unlabeled ns", podLabels: labels{"istio.io/rev": "other"}, opts: Options{Revision: "canary"}, want: false},

		// Never injected.
		{name: "hostNetwork", nsLabels: labels{"istio-injection": "enabled"}, hostNetwork: true, want: false},
		{name: "hostNetwork with pod true", podLabels: labels{"sidecar.istio.io/inject": "true"}, hostNetwork: true, want: false},
		{name: "already injected", nsLabels: labels{"istio-injection": "enabled"}, podAnnots: labels{"sidecar.istio.io/status": "{}"}, want: false},
		{name: "kube-system", namespaceName: "kube-system", nsLabels: labels{"istio-injection": "enabled"}, want: false},

		// Offline (kube-inject): the namespace is unknown, only the pod decides.
		{name: "offline, pod unset", noNamespace: true, want: true},
		{name: "offline, pod false", noNamespace: true, podLabels: labels{"sidecar.istio.io/inject": "false"}, want: false},
		{name: "offline, annotation false", noNamespace: true, podAnnots: labels{"sidecar.istio.io/inject": "false"}, want: false},
		{name: "offline, hostNetwork", noNamespace: true, hostNetwork: true, want: false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			nsName := c.namespaceName
			if nsName == "" {
				nsName = "apps"
			}
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: nsName, Labels: c.podLabels, Annotations: c.podAnnots},
				Spec:       corev1.PodSpec{HostNetwork: c.hostNetwork, Containers: []corev1.Container{{Name: "app", Image: "app"}}},
			}
			var ns *corev1.Namespace
			if !c.noNamespace {
				ns = &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName, Labels: c.nsLabels}}
			}
			out, d, err := Pod(pod, ns, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			if d.Inject != c.want || d.Reason == "" {
				t.Fatalf("Inject = %v (%q), want %v", d.Inject, d.Reason, c.want)
			}
			hasProxy := len(out.Spec.Containers) == 2 && out.Spec.Containers[0].Name == ProxyContainer
			if hasProxy != c.want {
				t.Fatalf("containers %v, want injected=%v", out.Spec.Containers, c.want)
			}
			if !c.want && out != pod {
				t.Fatal("a pod that is not injected must come back as it was")
			}
		})
	}
}

// TestPodWorkload derives ISTIO_META_WORKLOAD_NAME and _OWNER from the
// pod's controller, as the webhook sees pods.
func TestPodWorkload(t *testing.T) {
	yes := true
	for _, c := range []struct {
		kind, owner, hash, want string
	}{
		{"ReplicaSet", "reviews-v1-7d4f9c8b5", "7d4f9c8b5", "kubernetes://apis/apps/v1/namespaces/bookinfo/deployments/reviews-v1"},
		{"ReplicaSet", "bare-rs", "", "kubernetes://apis/apps/v1/namespaces/bookinfo/replicasets/bare-rs"},
		{"Job", "report-29012345", "", "kubernetes://apis/batch/v1/namespaces/bookinfo/cronjobs/report"},
		{"Job", "migrate", "", "kubernetes://apis/batch/v1/namespaces/bookinfo/jobs/migrate"},
		{"", "", "", "kubernetes://api/v1/namespaces/bookinfo/pods/p-1"},
	} {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p-1", Namespace: "bookinfo", Labels: map[string]string{"pod-template-hash": c.hash}}}
		if c.kind != "" {
			api := "apps/v1"
			if c.kind == "Job" {
				api = "batch/v1"
			}
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: api, Kind: c.kind, Name: c.owner, Controller: &yes}}
		}
		if got := podWorkload(p).owner(); got != c.want {
			t.Errorf("%s %s: owner %s, want %s", c.kind, c.owner, got, c.want)
		}
	}
}
