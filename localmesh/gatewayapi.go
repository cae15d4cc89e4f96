package localmesh

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/gatewayapi"
)

// Istio deploys a gateway for each Gateway API Gateway of its class (the
// "automated deployment"): a Deployment and a Service named
// GATEWAY-CLASS whose pods carry gateway.networking.k8s.io/gateway-name
// and run the proxy alone. The local mesh does the same: it publishes
// those two objects under its own origin, the reconciler runs the
// Deployment's pod as a gateway proxy (the pod template's
// inject.istio.io/templates: gateway annotation, as Istio marks gateway
// pods), and each listener port gets a loopback URL forwarded to it.

const (
	originGatewayAPI = "localmesh/gateway-api"
	// gatewayTemplateAnnotation marks a pod template whose pods run the
	// gateway proxy rather than containers with a sidecar.
	gatewayTemplateAnnotation = "inject.istio.io/templates"
)

// gatewayAPIDeployment is one Gateway's deployment as the local mesh runs it.
type gatewayAPIDeployment struct {
	gateway, namespace, name string // the Gateway and its Deployment/Service
	ports                    []gwPort
}

type gwPort struct {
	listener     int32 // the Gateway listener's port
	target       int32 // where the gateway pod listens for it
	name, scheme string
}

// isGatewayPod reports whether pods of the template run the gateway proxy.
func isGatewayPod(t *corev1.PodTemplateSpec) bool {
	return t.Annotations[gatewayTemplateAnnotation] == "gateway"
}

// gatewayAPIDeployments lists the Gateways the mesh's Istio class serves,
// with the ports their pods listen on: a listener's own port, or, when
// the supervisor cannot bind it (below 1024 without root), that port plus
// 8000 (80 → 8080 and 443 → 8443, as Istio's ingress gateway maps them).
func gatewayAPIDeployments(snap *config.Snapshot, privileged bool) []gatewayAPIDeployment {
	classes := map[string]bool{gatewayapi.DefaultClassName: true}
	for _, o := range snap.List(config.GatewayClass) {
		spec, ok := o.Spec.(*gatewayv1.GatewayClassSpec)
		if !ok {
			continue
		}
		classes[o.Meta.Name] = string(spec.ControllerName) == gatewayapi.DefaultControllerName
	}
	var out []gatewayAPIDeployment
	for _, o := range snap.List(config.KubeGateway) {
		spec, ok := o.Spec.(*gatewayv1.GatewaySpec)
		if !ok || !classes[string(spec.GatewayClassName)] || len(spec.Addresses) > 0 {
			continue // another controller's, or fronted by a Service the user names
		}
		d := gatewayAPIDeployment{gateway: o.Meta.Name, namespace: namespaceOf(o),
			name: gatewayapi.DeploymentName(o.Meta.Name, string(spec.GatewayClassName))}
		seen := map[int32]bool{}
		for _, l := range spec.Listeners {
			if seen[int32(l.Port)] {
				continue
			}
			seen[int32(l.Port)] = true
			p := gwPort{listener: int32(l.Port), target: int32(l.Port), scheme: "http"}
			if !privileged && p.target < 1024 {
				p.target += 8000
			}
			switch l.Protocol {
			case gatewayv1.HTTPSProtocolType, gatewayv1.TLSProtocolType:
				p.scheme = "https"
			case gatewayv1.TCPProtocolType, gatewayv1.UDPProtocolType:
				p.scheme = "tcp"
			}
			p.name = strings.ToLower(string(l.Protocol)) + "-" + strconv.Itoa(int(l.Port))
			d.ports = append(d.ports, p)
		}
		slices.SortFunc(d.ports, func(a, b gwPort) int { return int(a.listener - b.listener) })
		out = append(out, d)
	}
	return out
}

// objects are the Deployment and Service Istio would create for d.
func (d gatewayAPIDeployment) objects(vips *serviceVIPs) []*config.Object {
	labels := map[string]string{gatewayapi.GatewayNameLabel: d.gateway}
	meta := metav1.ObjectMeta{Name: d.name, Namespace: d.namespace, Labels: labels,
		// Equal content, equal version: republishing changes nothing.
		ResourceVersion: "gw-" + d.signature()}
	ip := vips.get(d.namespace, d.name).String()
	svc := &corev1.Service{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"}, ObjectMeta: meta,
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: labels, ClusterIP: ip, ClusterIPs: []string{ip}}}
	var cports []corev1.ContainerPort
	for _, p := range d.ports {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: p.name, Port: p.listener, Protocol: corev1.ProtocolTCP,
			TargetPort: intstr.FromInt32(p.target)})
		cports = append(cports, corev1.ContainerPort{Name: p.name, ContainerPort: p.target, Protocol: corev1.ProtocolTCP})
	}
	one := int32(1)
	dep := &appsv1.Deployment{TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"}, ObjectMeta: meta,
		Spec: appsv1.DeploymentSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{gatewayTemplateAnnotation: "gateway"}},
				Spec: corev1.PodSpec{ServiceAccountName: d.name, Containers: []corev1.Container{{
					Name: "istio-proxy", Command: []string{"skiff-proxy"}, Ports: cports}}},
			}}}
	return []*config.Object{
		{Kind: config.Service, Meta: meta, Spec: svc},
		{Kind: config.Deployment, Meta: meta, Spec: dep},
	}
}

func (d gatewayAPIDeployment) signature() string {
	var b strings.Builder
	for _, p := range d.ports {
		fmt.Fprintf(&b, "%d-%d-", p.listener, p.target)
	}
	return strings.TrimSuffix(b.String(), "-")
}

// GatewayURL is where a Gateway API Gateway's listener is reachable.
type GatewayURL struct {
	Gateway    string `json:"gateway"` // namespace/name
	Port       int32  `json:"port"`    // the listener's port
	URL        string `json:"url"`
	Deployment string `json:"deployment"`
}

// gatewayForwards holds the loopback listeners of the Gateway API
// gateways, each forwarding to whichever of the Gateway's pods is up.
type gatewayForwards struct {
	mu   sync.Mutex
	byID map[string]*gwForward // "ns/deployment/port"
}

type gwForward struct {
	url    GatewayURL
	cancel context.CancelFunc
}

// syncGatewayAPI publishes the deployments of the Gateway API Gateways
// in force and opens or closes their loopback URLs. It runs before each
// reconcile, so the Deployments it publishes are started like any other.
func (m *mesh) syncGatewayAPI(ctx context.Context) {
	deps := gatewayAPIDeployments(m.store.Snapshot(), os.Geteuid() == 0 || m.capture == CaptureNetns)
	var objs []*config.Object
	for _, d := range deps {
		objs = append(objs, d.objects(m.vips)...)
	}
	m.store.Replace(originGatewayAPI, objs, nil)

	m.gwFwd.mu.Lock()
	defer m.gwFwd.mu.Unlock()
	if m.gwFwd.byID == nil {
		m.gwFwd.byID = map[string]*gwForward{}
	}
	want := map[string]bool{}
	for _, d := range deps {
		for _, p := range d.ports {
			id := d.namespace + "/" + d.name + "/" + strconv.Itoa(int(p.listener))
			want[id] = true
			if f := m.gwFwd.byID[id]; f != nil {
				continue
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				m.progress("gateway %s/%s: no loopback port for listener port %d: %v", d.namespace, d.gateway, p.listener, err)
				continue
			}
			fctx, cancel := context.WithCancel(ctx)
			target := p.target
			key := "Deployment/" + d.namespace + "/" + d.name
			u := GatewayURL{Gateway: d.namespace + "/" + d.gateway, Port: p.listener, Deployment: d.namespace + "/" + d.name,
				URL: p.scheme + "://" + ln.Addr().String()}
			m.gwFwd.byID[id] = &gwForward{url: u, cancel: cancel}
			go forwardTo(fctx, ln, func() string { return m.podAddr(key, target) })
			m.progress("gateway %s: listener port %d at %s", u.Gateway, p.listener, u.URL)
		}
	}
	for id, f := range m.gwFwd.byID {
		if !want[id] {
			f.cancel()
			delete(m.gwFwd.byID, id)
		}
	}
}

// gatewayURLs lists the Gateway API gateways' URLs, sorted.
func (m *mesh) gatewayURLs() []GatewayURL {
	m.gwFwd.mu.Lock()
	defer m.gwFwd.mu.Unlock()
	var out []GatewayURL
	for _, f := range m.gwFwd.byID {
		out = append(out, f.url)
	}
	slices.SortFunc(out, func(a, b GatewayURL) int {
		if c := strings.Compare(a.Gateway, b.Gateway); c != 0 {
			return c
		}
		return int(a.Port - b.Port)
	})
	return out
}

// podAddr is the address of a ready pod made from key, at port; "" when
// none is.
func (m *mesh) podAddr(key string, port int32) string {
	var fallback string
	for _, p := range m.sortedPods() {
		if p.key != key {
			continue
		}
		addr := net.JoinHostPort(p.ip.String(), strconv.Itoa(int(port)))
		if p.readyNow.Load() {
			return addr
		}
		fallback = addr
	}
	return fallback
}

// forwardTo relays each connection to where target says at that moment.
func forwardTo(ctx context.Context, ln net.Listener, target func() string) {
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			continue
		}
		t := target()
		if t == "" {
			c.Close() // no gateway pod yet: refused, as a Service without endpoints
			continue
		}
		go relay(ctx, c, t)
	}
}
