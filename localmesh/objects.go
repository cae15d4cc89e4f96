package localmesh

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"hash/fnv"
	"maps"
	"net/netip"
	"strconv"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// PodTemplateKind holds the bare Pods of the mesh's manifests: the local
// mesh runs them itself and publishes the running ones (with their IPs) as
// Pods, so the Pods users wrote are kept in the store under this kind.
var PodTemplateKind = config.Kind{Group: "", Version: "v1", Kind: "PodTemplate"}

// Store origins the local mesh writes under.
const (
	originPods    = "localmesh/pods"
	originGateway = "localmesh/gateway"
	originApply   = "apply"
)

// The built-in ingress gateway, named as Istio's default install names it.
const (
	gatewayNamespace      = "istio-system"
	gatewayName           = "istio-ingressgateway"
	gatewayServiceAccount = "istio-ingressgateway-service-account"
	gatewayHTTPPort       = 8080
	gatewayHTTPSPort      = 8443
)

var gatewayLabels = map[string]string{"istio": "ingressgateway", "app": "istio-ingressgateway"}

// serviceVIPs allocates cluster IPs from 198.19.0.0/16 as the apiserver
// would for Services written without one: the same Service gets the same
// address each time it is read; two Services never share one.
type serviceVIPs struct {
	mu    sync.Mutex
	byKey map[string]netip.Addr
	taken map[netip.Addr]string
}

func newServiceVIPs() *serviceVIPs {
	return &serviceVIPs{byKey: map[string]netip.Addr{}, taken: map[netip.Addr]string{}}
}

func (v *serviceVIPs) get(ns, name string) netip.Addr {
	key := ns + "/" + name
	v.mu.Lock()
	defer v.mu.Unlock()
	if a, ok := v.byKey[key]; ok {
		return a
	}
	h := fnv.New32a()
	h.Write([]byte(key))
	n := uint16(h.Sum32())
	for {
		// Skip the network and broadcast addresses of the /16.
		if n != 0 && n != 0xffff {
			a := netip.AddrFrom4([4]byte{198, 19, byte(n >> 8), byte(n)})
			if _, used := v.taken[a]; !used {
				v.taken[a], v.byKey[key] = key, a
				return a
			}
		}
		n++
	}
}

// transform is the file source's hook (and apply's): Services get a
// cluster IP; bare Pods become PodTemplates.
func (v *serviceVIPs) transform(o *config.Object) *config.Object {
	switch o.Kind {
	case config.Service:
		svc, ok := o.Spec.(*corev1.Service)
		if !ok || svc.Spec.ClusterIP != "" || svc.Spec.Type == corev1.ServiceTypeExternalName {
			return o
		}
		c := *o
		s := svc.DeepCopy()
		ip := v.get(namespaceOf(o), o.Meta.Name).String()
		s.Spec.ClusterIP, s.Spec.ClusterIPs = ip, []string{ip}
		c.Spec = s
		return &c
	case config.Pod:
		pod, ok := o.Spec.(*corev1.Pod)
		if !ok {
			return o
		}
		c := *o
		c.Kind = PodTemplateKind
		c.Spec = &corev1.PodTemplate{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "PodTemplate"},
			ObjectMeta: pod.ObjectMeta,
			Template:   corev1.PodTemplateSpec{ObjectMeta: pod.ObjectMeta, Spec: pod.Spec},
		}
		return &c
	}
	return o
}

func namespaceOf(o *config.Object) string {
	if o.Meta.Namespace == "" {
		return "default"
	}
	return o.Meta.Namespace
}

// gatewayObjects are the built-in gateway's Service (and its namespace
// unless the manifests declare it), as Istio's default profile installs.
func gatewayObjects(vips *serviceVIPs, withNamespace bool) []*config.Object {
	meta := metav1.ObjectMeta{Name: gatewayName, Namespace: gatewayNamespace, Labels: gatewayLabels}
	ip := vips.get(gatewayNamespace, gatewayName).String()
	svc := &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: meta,
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeLoadBalancer,
			Selector:   gatewayLabels,
			ClusterIP:  ip,
			ClusterIPs: []string{ip},
			Ports: []corev1.ServicePort{
				{Name: "http2", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(gatewayHTTPPort)},
				{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(gatewayHTTPSPort)},
			},
		},
	}
	out := []*config.Object{{Kind: config.Service, Meta: meta, Spec: svc}}
	if withNamespace {
		nsMeta := metav1.ObjectMeta{Name: gatewayNamespace}
		out = append(out, &config.Object{Kind: config.Namespace, Meta: nsMeta,
			Spec: &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: nsMeta}})
	}
	return out
}

// gatewayTemplate is the gateway pod's template: no containers of its
// own, only the proxy.
func gatewayTemplate() corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: gatewayLabels},
		Spec: corev1.PodSpec{ServiceAccountName: gatewayServiceAccount, Containers: []corev1.Container{{
			Name: "istio-proxy", Command: []string{"skiff-proxy"},
			Ports: []corev1.ContainerPort{
				{Name: "http2", ContainerPort: gatewayHTTPPort, Protocol: corev1.ProtocolTCP},
				{Name: "https", ContainerPort: gatewayHTTPSPort, Protocol: corev1.ProtocolTCP},
			},
		}}},
	}
}

// templateHash is a Deployment template's pod-template-hash: a stable
// digest of the template, spelled in the alphabet Kubernetes uses for
// generated names.
func templateHash(t *corev1.PodTemplateSpec) string {
	b, _ := json.Marshal(t) // a PodTemplateSpec always marshals
	h := fnv.New32a()
	h.Write(b)
	return safeEncode(strconv.FormatUint(uint64(h.Sum32()), 10))
}

// nameAlphabet has no vowels and no easily confused characters, as
// Kubernetes' generated names.
const nameAlphabet = "bcdfghjklmnpqrstvwxz2456789"

func safeEncode(s string) string {
	b := []byte(s)
	for i, c := range b {
		b[i] = nameAlphabet[int(c)%len(nameAlphabet)]
	}
	return string(b)
}

func randomSuffix(n int) string {
	b := make([]byte, n)
	var r [8]byte
	for i := range b {
		rand.Read(r[:])
		b[i] = nameAlphabet[binary.LittleEndian.Uint64(r[:])%uint64(len(nameAlphabet))]
	}
	return string(b)
}

func newUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const hex = "0123456789abcdef"
	out := make([]byte, 0, 36)
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, hex[c>>4], hex[c&15])
	}
	return string(out)
}

// podObject is the Pod the store holds for a running pod: what the
// apiserver would show for it.
func podObject(p *pod, ready bool) *config.Object {
	labels := maps.Clone(p.labels)
	if labels == nil {
		labels = map[string]string{}
	}
	if p.mtls {
		labels["security.istio.io/tlsMode"] = "istio"
	} else {
		labels["security.istio.io/tlsMode"] = "disabled"
	}
	meta := metav1.ObjectMeta{
		Name: p.name, Namespace: p.namespace, UID: types.UID(p.uid),
		Labels: labels, Annotations: p.annotations,
		CreationTimestamp: metav1.NewTime(p.created),
	}
	if p.owner != nil {
		yes := true
		meta.OwnerReferences = []metav1.OwnerReference{{
			APIVersion: "apps/v1", Kind: "ReplicaSet", Name: p.owner.name + "-" + p.hash,
			Controller: &yes, UID: types.UID(p.owner.uid),
		}}
	}
	cond := corev1.ConditionFalse
	if ready {
		cond = corev1.ConditionTrue
	}
	spec := *p.spec.DeepCopy()
	spec.NodeName = nodeName
	k := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: meta,
		Spec:       spec,
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, PodIP: p.ip.String(), PodIPs: []corev1.PodIP{{IP: p.ip.String()}},
			HostIP: hostIP, StartTime: &meta.CreationTimestamp,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: cond}, {Type: corev1.ContainersReady, Status: cond}},
		},
	}
	meta.ResourceVersion = strconv.FormatUint(p.version.Add(1), 10)
	k.ObjectMeta = meta
	return &config.Object{Kind: config.Pod, Meta: meta, Spec: k}
}

// The node every local pod runs on, as the downward API reports it.
const (
	nodeName = "local"
	hostIP   = "127.0.0.1"
)

// deploymentReplicas is spec.replicas with Kubernetes' default of one.
func deploymentReplicas(d *appsv1.Deployment) int {
	if d.Spec.Replicas == nil {
		return 1
	}
	return int(*d.Spec.Replicas)
}
