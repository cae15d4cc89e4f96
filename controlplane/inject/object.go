package inject

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// Object injects the pod template of a workload, offline, as istioctl
// kube-inject does: Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet,
// ReplicationController, Job, CronJob and PodTemplate. Only the pod decides
// (the namespace is not known). Other kinds, and workloads Istio would not
// inject, come back as they are with the reason.
func Object(obj runtime.Object, opts Options) (runtime.Object, Decision, error) {
	var (
		meta     *metav1.ObjectMeta // the workload's
		tmpl     *corev1.PodTemplateSpec
		w        workload
		copyObj  runtime.Object
		resource string
		group    = "apps/v1"
		at       = "spec.template." // where the template is, for errors
	)
	switch o := obj.(type) {
	case *corev1.Pod:
		return podOffline(o, opts)
	case *appsv1.Deployment:
		c := o.DeepCopy()
		copyObj, meta, tmpl, resource = c, &c.ObjectMeta, &c.Spec.Template, "deployments"
	case *appsv1.StatefulSet:
		c := o.DeepCopy()
		copyObj, meta, tmpl, resource = c, &c.ObjectMeta, &c.Spec.Template, "statefulsets"
	case *appsv1.DaemonSet:
		c := o.DeepCopy()
		copyObj, meta, tmpl, resource = c, &c.ObjectMeta, &c.Spec.Template, "daemonsets"
	case *appsv1.ReplicaSet:
		c := o.DeepCopy()
		copyObj, meta, tmpl, resource = c, &c.ObjectMeta, &c.Spec.Template, "replicasets"
	case *corev1.ReplicationController:
		c := o.DeepCopy()
		if c.Spec.Template == nil {
			return obj, Decision{Reason: "ReplicationController has no spec.template"}, nil
		}
		copyObj, meta, tmpl, resource, group = c, &c.ObjectMeta, c.Spec.Template, "replicationcontrollers", "v1"
	case *batchv1.Job:
		c := o.DeepCopy()
		copyObj, meta, tmpl, resource, group = c, &c.ObjectMeta, &c.Spec.Template, "jobs", "batch/v1"
	case *batchv1.CronJob:
		c := o.DeepCopy()
		copyObj, meta, tmpl, resource, group = c, &c.ObjectMeta, &c.Spec.JobTemplate.Spec.Template, "cronjobs", "batch/v1"
		at = "spec.jobTemplate.spec.template."
	case *corev1.PodTemplate:
		c := o.DeepCopy()
		copyObj, meta, tmpl, resource, group = c, &c.ObjectMeta, &c.Template, "podtemplates", "v1"
		at = "template."
	default:
		return obj, Decision{Reason: "kind " + obj.GetObjectKind().GroupVersionKind().Kind + " has no pod template"}, nil
	}
	w = workload{name: meta.Name, namespace: cmpOr(meta.Namespace, "default"), group: group, resource: resource}
	if tmpl.Namespace == "" {
		tmpl.Namespace = meta.Namespace
		defer func() { tmpl.Namespace = "" }()
	}
	d := decide(&tmpl.ObjectMeta, &tmpl.Spec, nil, opts)
	if !d.Inject {
		return obj, d, nil
	}
	if err := injectSpec(&tmpl.ObjectMeta, &tmpl.Spec, w, opts); err != nil {
		err = fmt.Errorf("%s%w", at, err)
		return obj, Decision{Reason: "not injected: " + err.Error()}, err
	}
	return copyObj, d, nil
}

func podOffline(p *corev1.Pod, opts Options) (runtime.Object, Decision, error) {
	out, d, err := Pod(p, nil, opts)
	return out, d, err
}
