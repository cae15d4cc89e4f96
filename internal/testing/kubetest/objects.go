package kubetest

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// There is no kubelet or scheduler: a test plays their part. The
// EndpointSlice controller publishes a Pod only when its spec.nodeName names
// an existing Node (unless the Service publishes not-ready addresses) and its
// status has an IP; the endpoint is ready when the Pod's Ready condition is.

// CreateNode creates a Ready Node named name (once; an existing one is kept),
// for Pods to name in spec.nodeName.
func (e *Env) CreateNode(tb testing.TB, name string) *corev1.Node {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nodes := e.Clientset(tb).CoreV1().Nodes()
	node, err := nodes.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		node, err = nodes.Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		tb.Fatalf("kubetest: node %s: %v", name, err)
	}
	node.Status.Conditions = []corev1.NodeCondition{{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
		LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(),
	}}
	node, err = nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{})
	if err != nil {
		tb.Fatalf("kubetest: node %s status: %v", name, err)
	}
	return node
}

// SetPodStatus does a kubelet's status update for the Pod namespace/name:
// phase Running, the given IPs (the first is status.podIP; keep them in
// PodCIDR) and the Ready and ContainersReady conditions set to ready.
func (e *Env) SetPodStatus(tb testing.TB, namespace, name string, ready bool, ips ...string) *corev1.Pod {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pods := e.Clientset(tb).CoreV1().Pods(namespace)
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	var out *corev1.Pod
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		pod.Status.Phase = corev1.PodRunning
		pod.Status.PodIP = ""
		pod.Status.PodIPs = nil
		if len(ips) > 0 {
			pod.Status.PodIP = ips[0]
		}
		for _, ip := range ips {
			pod.Status.PodIPs = append(pod.Status.PodIPs, corev1.PodIP{IP: ip})
		}
		pod.Status.StartTime = &now
		pod.Status.Conditions = []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: status, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: status, LastTransitionTime: now},
		}
		pod.Status.ContainerStatuses = nil
		for _, c := range pod.Spec.Containers {
			pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, corev1.ContainerStatus{
				Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: ready,
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
			})
		}
		out, err = pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		tb.Fatalf("kubetest: status of pod %s/%s: %v", namespace, name, err)
	}
	return out
}
