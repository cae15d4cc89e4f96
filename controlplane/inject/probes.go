package inject

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// prober is one app probe as the proxy's status server (15020) runs it for
// the kubelet: an entry of ISTIO_KUBE_APP_PROBERS, Istio's JSON shape.
type prober struct {
	HTTPGet        *corev1.HTTPGetAction   `json:"httpGet,omitempty"`
	TCPSocket      *corev1.TCPSocketAction `json:"tcpSocket,omitempty"`
	GRPC           *corev1.GRPCAction      `json:"grpc,omitempty"`
	TimeoutSeconds int32                   `json:"timeoutSeconds,omitempty"`
}

// rewriteProbes points c's HTTP, TCP and gRPC probes at the proxy's status
// port, /app-health/CONTAINER/livez|readyz|startupz, and records the
// originals in probers: with mTLS on, the kubelet (which has no mesh
// certificate) could not reach the app's port itself. Exec probes stay.
func rewriteProbes(c *corev1.Container, probers map[string]prober) {
	for _, p := range []struct {
		probe *corev1.Probe
		kind  string
	}{{c.LivenessProbe, "livez"}, {c.ReadinessProbe, "readyz"}, {c.StartupProbe, "startupz"}} {
		pr := p.probe
		if pr == nil || (pr.HTTPGet == nil && pr.TCPSocket == nil && pr.GRPC == nil) {
			continue
		}
		path := fmt.Sprintf("/app-health/%s/%s", c.Name, p.kind)
		orig := prober{TimeoutSeconds: pr.TimeoutSeconds}
		switch {
		case pr.HTTPGet != nil:
			h := *pr.HTTPGet
			h.Port = resolvePort(c, h.Port)
			if h.Scheme == "" {
				h.Scheme = corev1.URISchemeHTTP
			}
			orig.HTTPGet = &h
			rw := *pr.HTTPGet
			rw.Path, rw.Port = path, intstr.FromInt32(StatusPort)
			if rw.Scheme == corev1.URISchemeHTTPS {
				rw.Scheme = corev1.URISchemeHTTP
			}
			pr.HTTPGet = &rw
		case pr.TCPSocket != nil:
			t := *pr.TCPSocket
			t.Port = resolvePort(c, t.Port)
			orig.TCPSocket = &t
			pr.TCPSocket = nil
			pr.HTTPGet = &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(StatusPort)}
		default:
			g := *pr.GRPC
			orig.GRPC = &g
			pr.GRPC = nil
			pr.HTTPGet = &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(StatusPort)}
		}
		probers[path] = orig
	}
}

// resolvePort turns a named port into the container's number, since the
// proxy cannot see the container's port names.
func resolvePort(c *corev1.Container, p intstr.IntOrString) intstr.IntOrString {
	if p.Type != intstr.String {
		return p
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return intstr.FromInt32(cp.ContainerPort)
		}
	}
	return p
}
