package model

import (
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// nodeKind is read when a source provides Nodes, for pod locality; the
// local mesh has none, so it is not among the config store's kinds.
var nodeKind = config.Kind{Group: "", Version: "v1", Kind: "Node"}

// Labels and annotations with meaning to Istio.
const (
	labelTLSMode       = "security.istio.io/tlsMode"
	labelNetwork       = "topology.istio.io/network"
	labelLocality      = "istio-locality" // region.zone.subzone: "/" is not allowed in label values
	labelSubzone       = "topology.istio.io/subzone"
	labelInject        = "sidecar.istio.io/inject"
	labelNSInjection   = "istio-injection"
	annotationStatus   = "sidecar.istio.io/status" // set by the injector on injected pods
	annotationExportTo = "networking.istio.io/exportTo"

	annotationAutoRegistrationGroup = "istio.io/autoRegistrationGroup"

	tlsModeIstio    = "istio"
	tlsModeDisabled = "disabled"
)

// buildKube turns Kubernetes Services into services and their instances:
// from the EndpointSlices naming the service when there are any, else from
// the pods its selector picks; WorkloadEntries the selector picks are
// instances either way, as in Istio.
func (b *builder) buildKube() {
	slicesBySvc := map[string][]*config.Object{}
	for _, o := range b.ordered[config.EndpointSlice] {
		if es, ok := o.Spec.(*discoveryv1.EndpointSlice); ok {
			if name := es.Labels[discoveryv1.LabelServiceName]; name != "" {
				k := namespaceOf(o) + "/" + name
				slicesBySvc[k] = append(slicesBySvc[k], o)
			}
		}
	}
	for _, o := range b.ordered[config.Service] {
		svc, ok := o.Spec.(*corev1.Service)
		if !ok {
			continue
		}
		ns := namespaceOf(o)
		s := &Service{
			Hostname:  o.Meta.Name + "." + ns + ".svc." + b.opts.DomainSuffix,
			Namespace: ns,
			Name:      o.Meta.Name,
			Labels:    o.Meta.Labels,
			Source:    o,
		}
		if e := o.Meta.Annotations[annotationExportTo]; e != "" {
			for _, part := range strings.Split(e, ",") {
				if part = strings.TrimSpace(part); part != "" {
					s.ExportTo = append(s.ExportTo, part)
				}
			}
		}
		for _, p := range svc.Spec.Ports {
			port := &Port{Name: p.Name, Port: int(p.Port), Protocol: kubePortProtocol(int(p.Port), p.Name, string(p.Protocol), deref(p.AppProtocol))}
			if p.TargetPort.StrVal != "" {
				port.TargetPortName = p.TargetPort.StrVal
			} else {
				port.TargetPort = int(p.TargetPort.IntVal)
			}
			s.Ports = append(s.Ports, port)
		}
		if len(svc.Spec.Selector) > 0 {
			s.Selector = svc.Spec.Selector
		}
		switch {
		case svc.Spec.Type == corev1.ServiceTypeExternalName:
			// The proxy resolves the external name itself.
			s.Resolution, s.MeshExternal = DNS, true
			for _, p := range s.Ports {
				s.addInstance(&Instance{Address: svc.Spec.ExternalName, Port: p.Port, ServicePort: p, Labels: o.Meta.Labels,
					Healthy: true, Weight: 1, Namespace: ns, TLSMode: tlsModeDisabled, Network: b.opts.Network, Source: o})
			}
			b.services = append(b.services, s)
			continue
		case svc.Spec.ClusterIP == corev1.ClusterIPNone:
			s.Resolution = Passthrough
		default:
			// An empty clusterIP in a manifest is one not yet allocated,
			// not a headless service.
			s.Resolution = ClientSideLB
			s.Addresses = svc.Spec.ClusterIPs
			if len(s.Addresses) == 0 && svc.Spec.ClusterIP != "" {
				s.Addresses = []string{svc.Spec.ClusterIP}
			}
		}
		notReadyToo := svc.Spec.PublishNotReadyAddresses
		if list := slicesBySvc[ns+"/"+o.Meta.Name]; len(list) > 0 {
			for _, so := range list {
				b.sliceInstances(s, so, notReadyToo)
			}
		} else {
			for _, w := range b.pods.match(ns, s.Selector) {
				b.podInstances(s, w, notReadyToo)
			}
		}
		for _, w := range b.entries.match(ns, s.Selector) {
			b.entryInstances(s, w)
		}
		b.services = append(b.services, s)
	}
}

func (b *builder) sliceInstances(s *Service, so *config.Object, notReadyToo bool) {
	es := so.Spec.(*discoveryv1.EndpointSlice)
	if es.AddressType == discoveryv1.AddressTypeFQDN {
		return
	}
	for _, ep := range es.Ports {
		if ep.Port == nil {
			continue
		}
		sp := s.portNamed(deref(ep.Name))
		if sp == nil {
			continue
		}
		for _, e := range es.Endpoints {
			ready := e.Conditions.Ready == nil || *e.Conditions.Ready
			terminating := e.Conditions.Terminating != nil && *e.Conditions.Terminating
			var pod *Workload
			if ref := e.TargetRef; ref != nil && ref.Kind == "Pod" {
				ns := ref.Namespace
				if ns == "" {
					ns = s.Namespace
				}
				pod = b.podByName[ns+"/"+ref.Name]
			}
			for _, addr := range e.Addresses {
				var in *Instance
				if pod != nil {
					in = instanceOf(pod, addr, int(*ep.Port), sp)
				} else {
					in = &Instance{Address: addr, Port: int(*ep.Port), ServicePort: sp, Weight: 1, Namespace: s.Namespace,
						TLSMode: tlsModeDisabled, Network: b.opts.Network, Locality: b.nodeLocality(deref(e.NodeName))}
				}
				in.Healthy = ready || notReadyToo
				in.Terminating = terminating
				in.Source = so
				s.addInstance(in)
			}
		}
	}
}

func (b *builder) podInstances(s *Service, w *Workload, notReadyToo bool) {
	if len(w.IPs) == 0 {
		return
	}
	pod := w.Source.Spec.(*corev1.Pod)
	for _, sp := range s.Ports {
		port, ok := podTargetPort(pod, sp)
		if !ok {
			continue
		}
		in := instanceOf(w, w.IPs[0], port, sp)
		in.Healthy = w.Healthy || notReadyToo
		in.Terminating = w.Source.Meta.DeletionTimestamp != nil
		s.addInstance(in)
	}
}

// podTargetPort resolves a service port's target on a pod as the
// EndpointSlice controller does: a name must match a container port, and
// a pod without it is no endpoint of that port.
func podTargetPort(pod *corev1.Pod, sp *Port) (int, bool) {
	if sp.TargetPortName != "" {
		for _, c := range pod.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.Name == sp.TargetPortName {
					return int(cp.ContainerPort), true
				}
			}
		}
		return 0, false
	}
	if sp.TargetPort != 0 {
		return sp.TargetPort, true
	}
	return sp.Port, true
}

func (s *Service) portNamed(name string) *Port {
	for _, p := range s.Ports {
		if p.Name == name {
			return p
		}
	}
	return nil
}

func instanceOf(w *Workload, addr string, port int, sp *Port) *Instance {
	return &Instance{
		Address: addr, Port: port, ServicePort: sp,
		Labels: w.Labels, ServiceAccount: w.ServiceAccount, Identity: w.Identity,
		Locality: w.Locality, Healthy: w.Healthy, Weight: 1,
		Namespace: w.Namespace, Workload: w.WorkloadName, TLSMode: w.TLSMode, Network: w.Network,
		Source: w.Source,
	}
}

// podWorkload describes a pod, or returns nil for one that has finished.
func (b *builder) podWorkload(o *config.Object, deployments []*config.Object) *Workload {
	pod, ok := o.Spec.(*corev1.Pod)
	if !ok || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil
	}
	ns := namespaceOf(o)
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = pod.Spec.DeprecatedServiceAccount
	}
	if sa == "" {
		sa = "default"
	}
	w := &Workload{
		Kind: WorkloadKindPod, Name: o.Meta.Name, Namespace: ns,
		WorkloadName:   podWorkloadName(pod, o.Meta.Labels, deployments),
		Labels:         o.Meta.Labels,
		ServiceAccount: sa,
		Identity:       b.identity(ns, sa),
		Network:        b.opts.Network,
		TLSMode:        b.podTLSMode(o),
		Source:         o,
	}
	for _, ip := range pod.Status.PodIPs {
		w.IPs = append(w.IPs, ip.IP)
	}
	if len(w.IPs) == 0 && pod.Status.PodIP != "" {
		w.IPs = []string{pod.Status.PodIP}
	}
	if n := o.Meta.Labels[labelNetwork]; n != "" {
		w.Network = n
	}
	if l := o.Meta.Labels[labelLocality]; l != "" {
		w.Locality = strings.ReplaceAll(l, ".", "/")
	} else {
		w.Locality = b.nodeLocality(pod.Spec.NodeName)
	}
	if o.Meta.DeletionTimestamp == nil {
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				w.Healthy = true
			}
		}
	}
	return w
}

// podWorkloadName names the Deployment a pod belongs to: from its
// ReplicaSet owner (minus the pod-template-hash suffix), else, for the
// local mesh's pods that have no owner, the Deployment whose selector
// matches them; a bare pod is its own workload.
func podWorkloadName(pod *corev1.Pod, podLabels map[string]string, deployments []*config.Object) string {
	for _, ref := range pod.OwnerReferences {
		if ref.Controller == nil || !*ref.Controller {
			continue
		}
		if ref.Kind == "ReplicaSet" {
			if h := podLabels["pod-template-hash"]; h != "" {
				return strings.TrimSuffix(ref.Name, "-"+h)
			}
		}
		return ref.Name
	}
	for _, d := range deployments {
		dep, ok := d.Spec.(*appsv1.Deployment)
		if !ok || dep.Spec.Selector == nil {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(dep.Spec.Selector)
		if err == nil && !sel.Empty() && sel.Matches(labels.Set(podLabels)) {
			return d.Meta.Name
		}
	}
	return pod.Name
}

// podTLSMode follows Istio: the injector's tlsMode label decides; a pod
// the injector annotated has a sidecar; otherwise, when the mesh injects
// by default, a pod has one unless it or its namespace opts out.
func (b *builder) podTLSMode(o *config.Object) string {
	if m := o.Meta.Labels[labelTLSMode]; m != "" {
		return m
	}
	if _, ok := o.Meta.Annotations[annotationStatus]; ok {
		return tlsModeIstio
	}
	if !b.opts.SidecarByDefault {
		return tlsModeDisabled
	}
	if o.Meta.Labels[labelInject] == "false" || o.Meta.Annotations[labelInject] == "false" {
		return tlsModeDisabled
	}
	if nso := b.namespaces[namespaceOf(o)]; nso != nil && nso.Meta.Labels[labelNSInjection] == "disabled" {
		return tlsModeDisabled
	}
	return tlsModeIstio
}

// nodeLocality reads region/zone/subzone from a node's topology labels,
// or "" when the node is unknown or unlabelled.
func (b *builder) nodeLocality(name string) string {
	n := b.nodes[name]
	if name == "" || n == nil {
		return ""
	}
	l := n.Meta.Labels
	region, zone, subzone := l[corev1.LabelTopologyRegion], l[corev1.LabelTopologyZone], l[labelSubzone]
	if region == "" && zone == "" && subzone == "" {
		return ""
	}
	return region + "/" + zone + "/" + subzone
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
