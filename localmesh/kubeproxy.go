package localmesh

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// kube-proxy's job for pods without a sidecar (netns capture): their
// connections to a Service's cluster IP are DNATed to one of its ready
// endpoints, chosen at random, as kube-proxy's iptables mode does. Pods
// with a sidecar need none of it: their sidecar routes cluster IPs.

// serviceChain is the nat chain a sidecar-less pod's OUTPUT jumps to.
const serviceChain = "SKIFF-SERVICES"

// serviceRules are the iptables-restore lines of serviceChain for snap:
// for every Service port with a cluster IP, one DNAT rule per ready
// endpoint, the first n-1 taken with kube-proxy's probabilities (1/n,
// 1/(n-1), …) so that each endpoint gets an even share.
func serviceRules(snap *config.Snapshot) string {
	pods := snap.List(config.Pod)
	var b strings.Builder
	fmt.Fprintf(&b, "*nat\n:%s - [0:0]\n", serviceChain)
	for _, o := range snap.List(config.Service) {
		svc, ok := o.Spec.(*corev1.Service)
		if !ok || len(svc.Spec.Selector) == 0 {
			continue
		}
		vip, err := netip.ParseAddr(svc.Spec.ClusterIP)
		if err != nil {
			continue
		}
		ns := namespaceOf(o)
		for _, sp := range svc.Spec.Ports {
			if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
				continue
			}
			var eps []string
			for _, po := range pods {
				pod, ok := po.Spec.(*corev1.Pod)
				if !ok || namespaceOf(po) != ns || !podReady(pod) || !selects(svc.Spec.Selector, po.Meta.Labels) {
					continue
				}
				port := targetPort(sp, pod)
				if port == 0 || pod.Status.PodIP == "" {
					continue
				}
				eps = append(eps, netip.AddrPortFrom(netip.MustParseAddr(pod.Status.PodIP), uint16(port)).String())
			}
			sort.Strings(eps)
			for i, ep := range eps {
				fmt.Fprintf(&b, "-A %s -d %s/32 -p tcp --dport %d", serviceChain, vip, sp.Port)
				if left := len(eps) - i; left > 1 {
					fmt.Fprintf(&b, " -m statistic --mode random --probability %.5f", 1/float64(left))
				}
				fmt.Fprintf(&b, " -j DNAT --to-destination %s\n", ep)
			}
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func podReady(p *corev1.Pod) bool {
	return slices.ContainsFunc(p.Status.Conditions, func(c corev1.PodCondition) bool {
		return c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
	})
}

// targetPort resolves a Service port's targetPort against the pod: a
// number, a container port name, or (unset) the service port itself.
func targetPort(sp corev1.ServicePort, pod *corev1.Pod) int {
	tp := sp.TargetPort
	if tp.StrVal != "" {
		for _, c := range pod.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.Name == tp.StrVal {
					return int(cp.ContainerPort)
				}
			}
		}
		return 0
	}
	if tp.IntVal != 0 {
		return int(tp.IntVal)
	}
	return int(sp.Port)
}

// refreshServiceRules rewrites serviceChain in every sidecar-less pod's
// namespace whose rules changed; the first time it also hooks the chain
// into OUTPUT.
func (m *mesh) refreshServiceRules() {
	if m.capture != CaptureNetns {
		return
	}
	rules := ""
	for _, p := range m.sortedPods() {
		if p.sidecar || p.gateway {
			continue
		}
		if rules == "" {
			rules = serviceRules(m.store.Snapshot())
		}
		if p.serviceRules == rules {
			continue
		}
		if err := applyServiceRules(p, rules, p.serviceRules == ""); err != nil {
			m.progress("pod %s/%s: routing Service addresses (kube-proxy's job): %v", p.namespace, p.name, err)
			continue
		}
		p.serviceRules = rules
	}
}

func applyServiceRules(p *pod, rules string, first bool) error {
	ctx := context.Background()
	restore := p.net.Command(ctx, -1, "iptables-restore", "--noflush")
	restore.Stdin = strings.NewReader(rules)
	if out, err := restore.CombinedOutput(); err != nil {
		return fmt.Errorf("iptables-restore: %v: %s", err, out)
	}
	if first {
		if out, err := p.net.Command(ctx, -1, "iptables", "-t", "nat", "-A", "OUTPUT", "-j", serviceChain).CombinedOutput(); err != nil {
			return fmt.Errorf("iptables -t nat -A OUTPUT -j %s: %v: %s", serviceChain, err, out)
		}
	}
	return nil
}
