package model

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// buildServiceEntries turns each ServiceEntry host into a service. Its
// instances are the WorkloadEntries and pods its workloadSelector picks in
// its namespace, else the inline endpoints, else, for DNS resolution, the
// host itself unless it is a wildcard.
func (b *builder) buildServiceEntries() {
	for _, o := range b.ordered[config.ServiceEntry] {
		se, ok := o.Spec.(*networking.ServiceEntry)
		if !ok {
			continue
		}
		ns := namespaceOf(o)
		var ports []*Port
		for _, p := range se.Ports {
			ports = append(ports, &Port{Name: p.Name, Port: int(p.Number), TargetPort: int(p.TargetPort), Protocol: ParseProtocol(p.Protocol)})
		}
		var selector map[string]string
		if se.WorkloadSelector != nil && len(se.WorkloadSelector.Labels) > 0 {
			selector = se.WorkloadSelector.Labels
		}
		for _, host := range se.Hosts {
			s := &Service{
				Hostname: host, Namespace: ns, Name: o.Meta.Name,
				Addresses:       se.Addresses,
				Ports:           ports,
				Resolution:      entryResolution(se.Resolution),
				MeshExternal:    se.Location == networking.ServiceEntry_MESH_EXTERNAL,
				ExportTo:        se.ExportTo,
				Labels:          o.Meta.Labels,
				Selector:        selector,
				SubjectAltNames: se.SubjectAltNames,
				Source:          o,
			}
			switch {
			case s.Resolution == DynamicDNS:
				// Endpoints are ignored: the proxy resolves each request's host.
			case se.WorkloadSelector != nil:
				// Istio takes a selector over inline endpoints; an empty one
				// selects nothing.
				for _, w := range b.entries.match(ns, selector) {
					b.entryInstances(s, w)
				}
				for _, w := range b.pods.match(ns, selector) {
					b.selectedPodInstances(s, w)
				}
			case len(se.Endpoints) > 0:
				for i, ep := range se.Endpoints {
					// Istio names an inline endpoint's workload <entry>-<index>.
					w := b.endpointWorkload(ns, o.Meta.Name+"-"+strconv.Itoa(i), ep, nil, o)
					for _, sp := range ports {
						in := instanceOf(w, ep.Address, entryPort(ep.Ports, sp), sp)
						if strings.HasPrefix(ep.Address, unixPrefix) {
							in.Port = 0
						}
						in.Weight = max(ep.Weight, 1)
						s.addInstance(in)
					}
				}
			case (s.Resolution == DNS || s.Resolution == DNSRoundRobin) && !strings.HasPrefix(host, "*"):
				// A wildcard cannot be resolved: such a host has no endpoints.
				for _, sp := range ports {
					s.addInstance(&Instance{Address: host, Port: entryPort(nil, sp), ServicePort: sp, Healthy: true, Weight: 1,
						Namespace: ns, Workload: o.Meta.Name, TLSMode: tlsModeDisabled, Network: b.opts.Network, Source: o})
				}
			}
			b.services = append(b.services, s)
		}
	}
}

func entryResolution(r networking.ServiceEntry_Resolution) Resolution {
	switch r {
	case networking.ServiceEntry_STATIC:
		return ClientSideLB
	case networking.ServiceEntry_DNS:
		return DNS
	case networking.ServiceEntry_DNS_ROUND_ROBIN:
		return DNSRoundRobin
	case networking.ServiceEntry_DYNAMIC_DNS:
		return DynamicDNS
	}
	return Passthrough
}

// entryPort is the port a WorkloadEntry (or ServiceEntry endpoint) serves
// a service port on: its ports map by the service port's name (or by the
// target port's name), else the target port, else the service port.
func entryPort(ports map[string]uint32, sp *Port) int {
	if p := ports[sp.Name]; p != 0 {
		return int(p)
	}
	if sp.TargetPortName != "" {
		if p := ports[sp.TargetPortName]; p != 0 {
			return int(p)
		}
	}
	if sp.TargetPort != 0 {
		return sp.TargetPort
	}
	return sp.Port
}

// unixPrefix starts the address of an endpoint on a Unix domain socket;
// such an endpoint has no port.
const unixPrefix = "unix://"

// entryInstances adds a selected WorkloadEntry's instances to a service.
// An entry addressed by host name or socket can only back a ServiceEntry
// with DNS resolution, as in Istio: nothing else can resolve it.
func (b *builder) entryInstances(s *Service, w *Workload) {
	if len(w.IPs) == 0 {
		return
	}
	addr := w.IPs[0]
	if _, err := netip.ParseAddr(addr); err != nil && s.Resolution != DNS && s.Resolution != DNSRoundRobin {
		return
	}
	we := w.Source.Spec.(*networking.WorkloadEntry)
	for _, sp := range s.Ports {
		in := instanceOf(w, addr, entryPort(we.Ports, sp), sp)
		if strings.HasPrefix(addr, unixPrefix) {
			in.Port = 0
		}
		in.Weight = max(we.Weight, 1)
		s.addInstance(in)
	}
}

// selectedPodInstances adds a pod a ServiceEntry selects: its container
// ports stand in for a WorkloadEntry's ports map, as in Istio.
func (b *builder) selectedPodInstances(s *Service, w *Workload) {
	if len(w.IPs) == 0 {
		return
	}
	pod := w.Source.Spec.(*corev1.Pod)
	ports := map[string]uint32{}
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name != "" {
				ports[cp.Name] = uint32(cp.ContainerPort)
			}
		}
	}
	for _, sp := range s.Ports {
		s.addInstance(instanceOf(w, w.IPs[0], entryPort(ports, sp), sp))
	}
}

// entryWorkload describes a WorkloadEntry object. Its metadata labels
// join its spec labels and win over them, as in Istio.
func (b *builder) entryWorkload(o *config.Object) *Workload {
	we, ok := o.Spec.(*networking.WorkloadEntry)
	if !ok {
		return nil
	}
	name := o.Meta.Name
	if g := o.Meta.Annotations[annotationAutoRegistrationGroup]; g != "" {
		name = g // an auto-registered entry runs as its WorkloadGroup
	}
	var merged map[string]string
	if len(o.Meta.Labels) > 0 {
		merged = maps.Clone(we.Labels)
		if merged == nil {
			merged = map[string]string{}
		}
		maps.Copy(merged, o.Meta.Labels)
	}
	w := b.endpointWorkload(namespaceOf(o), name, we, merged, o)
	w.Name = o.Meta.Name
	return w
}

// endpointWorkload describes a WorkloadEntry spec, standing alone or
// inline in a ServiceEntry; labels, when given, replace the spec's.
func (b *builder) endpointWorkload(ns, workloadName string, we *networking.WorkloadEntry, labels map[string]string, src *config.Object) *Workload {
	if labels == nil {
		labels = we.Labels
	}
	w := &Workload{
		Kind: WorkloadKindEntry, Namespace: ns, WorkloadName: workloadName,
		Labels:         labels,
		ServiceAccount: we.ServiceAccount,
		Identity:       b.identity(ns, we.ServiceAccount),
		Locality:       we.Locality,
		Network:        we.Network,
		Healthy:        true,
		TLSMode:        entryTLSMode(we),
		Source:         src,
	}
	if w.Locality == "" && labels[labelLocality] != "" {
		w.Locality = strings.ReplaceAll(labels[labelLocality], ".", "/")
	}
	if we.Address != "" {
		w.IPs = []string{we.Address}
	}
	if w.Network == "" {
		w.Network = b.opts.Network
	}
	return w
}

// entryTLSMode follows Istio: the tlsMode label decides; an entry with a
// service account is taken to run a sidecar.
func entryTLSMode(we *networking.WorkloadEntry) string {
	if m := we.Labels[labelTLSMode]; m != "" {
		return m
	}
	if we.ServiceAccount != "" {
		return tlsModeIstio
	}
	return tlsModeDisabled
}

// workloads lists pods and WorkloadEntries by namespace, kind and name.
func (b *builder) workloads() []*Workload {
	var out []*Workload
	for _, list := range b.pods.byNS {
		out = append(out, list...)
	}
	for _, list := range b.entries.byNS {
		out = append(out, list...)
	}
	slices.SortFunc(out, func(x, y *Workload) int {
		if c := strings.Compare(x.Namespace, y.Namespace); c != 0 {
			return c
		}
		if c := strings.Compare(x.Kind, y.Kind); c != 0 {
			return c
		}
		return strings.Compare(x.Name, y.Name)
	})
	return out
}

// templates describes Deployments and WorkloadGroups.
func (b *builder) templates() []*WorkloadTemplate {
	var out []*WorkloadTemplate
	for _, o := range b.ordered[config.Deployment] {
		d, ok := o.Spec.(*appsv1.Deployment)
		if !ok {
			continue
		}
		t := &WorkloadTemplate{
			Kind: TemplateKindDeployment, Name: o.Meta.Name, Namespace: namespaceOf(o),
			Replicas:       1,
			Labels:         d.Spec.Template.Labels,
			Annotations:    d.Spec.Template.Annotations,
			ServiceAccount: d.Spec.Template.Spec.ServiceAccountName,
			Pod:            &d.Spec.Template,
			Source:         o,
		}
		if d.Spec.Replicas != nil {
			t.Replicas = int(*d.Spec.Replicas)
		}
		if t.ServiceAccount == "" {
			t.ServiceAccount = "default"
		}
		out = append(out, t)
	}
	for _, o := range b.ordered[config.WorkloadGroup] {
		g, ok := o.Spec.(*networking.WorkloadGroup)
		if !ok {
			continue
		}
		t := &WorkloadTemplate{
			Kind: TemplateKindWorkloadGroup, Name: o.Meta.Name, Namespace: namespaceOf(o),
			Entry:  g.Template,
			Source: o,
		}
		if g.Metadata != nil {
			t.Labels, t.Annotations = g.Metadata.Labels, g.Metadata.Annotations
		}
		if g.Template != nil {
			t.ServiceAccount = g.Template.ServiceAccount
		}
		out = append(out, t)
	}
	slices.SortFunc(out, func(x, y *WorkloadTemplate) int {
		if c := strings.Compare(x.Namespace, y.Namespace); c != 0 {
			return c
		}
		if c := strings.Compare(x.Kind, y.Kind); c != 0 {
			return c
		}
		return cmp.Compare(x.Name, y.Name)
	})
	return out
}
