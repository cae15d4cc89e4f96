package validation

import (
	"net/netip"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

func init() {
	register(config.Service, (*collector).service)
	register(config.Pod, (*collector).pod)
	register(config.Deployment, (*collector).deployment)
}

func (v *collector) pod(p *corev1.Pod) {
	v.podSpec("spec", &p.Spec)
	// The address becomes an endpoint: a malformed one would surface much
	// later as "no healthy upstream", far from its cause.
	if ip := p.Status.PodIP; ip != "" {
		if _, err := netip.ParseAddr(ip); err != nil {
			v.add("status.podIP", "%q is not an IP address; write an IPv4 or IPv6 address such as 198.18.0.7", ip)
		}
	}
	for i, pi := range p.Status.PodIPs {
		if _, err := netip.ParseAddr(pi.IP); err != nil {
			v.add(field(idx("status.podIPs", i), "ip"), "%q is not an IP address; write an IPv4 or IPv6 address such as 198.18.0.7", pi.IP)
		}
	}
}

// portNameRule is Kubernetes' IANA_SVC_NAME rule for container port names.
const portNameRule = "use at most 15 lowercase letters, digits or '-', with at least one letter and no leading, trailing or double '-'"

func (v *collector) service(s *corev1.Service) {
	// A Service's name becomes a DNS label, which must start with a letter.
	if s.Name != "" && dnsSubdomain(s.Name) == "" && len(validation.IsDNS1035Label(s.Name)) > 0 {
		v.add("metadata.name", "%q is not a valid Service name; use at most 63 lowercase letters, digits or '-', starting with a letter and ending with a letter or digit", s.Name)
	}
	names := map[string]int{}
	type portKey struct {
		port     int32
		protocol corev1.Protocol
	}
	ports := map[portKey]int{}
	for i, sp := range s.Spec.Ports {
		p := idx("spec.ports", i)
		if sp.Name == "" {
			if len(s.Spec.Ports) > 1 {
				v.add(field(p, "name"), "is empty; a Service with several ports must name each, e.g. http-web")
			}
		} else {
			v.portName(field(p, "name"), sp.Name)
			if first, dup := names[sp.Name]; dup {
				v.add(field(p, "name"), "port name %q is already used by spec.ports[%d]; port names must be unique", sp.Name, first)
			} else {
				names[sp.Name] = i
			}
		}
		if sp.Port < 1 || sp.Port > 65535 {
			v.add(field(p, "port"), "port %d is out of range; use 1-65535", sp.Port)
		}
		proto := sp.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		switch proto {
		case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
		default:
			v.add(field(p, "protocol"), "%q is not TCP, UDP or SCTP; put the application protocol in the port name prefix or appProtocol", sp.Protocol)
		}
		k := portKey{sp.Port, proto}
		if first, dup := ports[k]; dup {
			v.add(field(p, "port"), "port %d/%s is already used by spec.ports[%d]; each port and protocol may appear once", sp.Port, proto, first)
		} else {
			ports[k] = i
		}
		if tp := sp.TargetPort; tp.StrVal != "" {
			if len(validation.IsValidPortName(tp.StrVal)) > 0 {
				v.add(field(p, "targetPort"), "%q is not a port number or container port name; %s", tp.StrVal, portNameRule)
			}
		} else if tp.IntVal < 0 || tp.IntVal > 65535 {
			v.add(field(p, "targetPort"), "port %d is out of range; use 1-65535", tp.IntVal)
		}
	}
	v.labels("spec.selector", s.Spec.Selector)
}

func (v *collector) deployment(d *appsv1.Deployment) {
	if d.Spec.Selector == nil || (len(d.Spec.Selector.MatchLabels) == 0 && len(d.Spec.Selector.MatchExpressions) == 0) {
		v.add("spec.selector", "is empty; a Deployment must select its pods, usually matchLabels equal to the template's labels")
	} else {
		for _, k := range sortedKeys(d.Spec.Selector.MatchLabels) {
			want := d.Spec.Selector.MatchLabels[k]
			if got, ok := d.Spec.Template.Labels[k]; !ok || got != want {
				v.add(key("spec.selector.matchLabels", k), "%s=%s does not match spec.template.metadata.labels; the Deployment would select none of its pods", k, want)
			}
		}
	}
	if d.Spec.Replicas != nil && *d.Spec.Replicas < 0 {
		v.add("spec.replicas", "%d is negative", *d.Spec.Replicas)
	}
	v.labels("spec.template.metadata.labels", d.Spec.Template.Labels)
	v.podSpec("spec.template.spec", &d.Spec.Template.Spec)
}

func (v *collector) podSpec(path string, ps *corev1.PodSpec) {
	if len(ps.Containers) == 0 {
		v.add(field(path, "containers"), "is empty; a pod needs at least one container")
	}
	names := map[string]bool{}
	for i, c := range ps.Containers {
		p := idx(field(path, "containers"), i)
		if msg := dnsLabel(c.Name); msg != "" {
			v.add(field(p, "name"), "%q is not a valid container name; %s", c.Name, msg)
		}
		if names[c.Name] {
			v.add(field(p, "name"), "container name %q is used twice", c.Name)
		}
		names[c.Name] = true
		// The local mesh runs containers as processes: the image alone
		// does not say what to run.
		if len(c.Command) == 0 {
			v.warn(field(p, "command"), "is empty; "+LocalMeshOnly+" runs a container's command as a process and will not start this one; Kubernetes runs the image's entrypoint")
		}
		portNames := map[string]bool{}
		for j, cp := range c.Ports {
			pp := idx(field(p, "ports"), j)
			if cp.ContainerPort < 1 || cp.ContainerPort > 65535 {
				v.add(field(pp, "containerPort"), "port %d is out of range; use 1-65535", cp.ContainerPort)
			}
			if cp.Name != "" {
				if len(validation.IsValidPortName(cp.Name)) > 0 {
					v.add(field(pp, "name"), "%q is not a valid port name; %s", cp.Name, portNameRule)
				} else if portNames[cp.Name] {
					v.add(field(pp, "name"), "port name %q is used twice in this container", cp.Name)
				}
				portNames[cp.Name] = true
			}
		}
	}
}

// LocalMeshOnly starts the part of a warning that only concerns the local
// mesh (a container without a command): tools checking manifests for
// Kubernetes leave such warnings out.
const LocalMeshOnly = "the local mesh (skiff up)"
