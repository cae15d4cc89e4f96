// Package inject owns Istio's sidecar injection for Skiff: deciding whether
// a pod gets a sidecar (namespace and pod labels, revisions, hostNetwork,
// already-injected pods) and rewriting its spec the way Istio's injection
// template does, with skiff-proxy in Envoy's and pilot-agent's place. Pod
// and Object are pure functions (skiff kube-inject uses them offline);
// NewWebhook serves the same over admission.k8s.io/v1 for skiffd.
//
// The sidecar is the container "istio-proxy" running the image's entrypoint,
// skiff-proxy, with pilot-agent's arguments and environment; "istio-init"
// runs `skiff-proxy iptables` with istio-iptables' flags. With
// Options.NativeSidecar (Kubernetes ≥ 1.29 serves native sidecars) istio-proxy
// is an init container with restartPolicy Always: it starts, and its startup
// probe passes, before any app container, and it does not keep a Job's pod
// alive. Otherwise it is the first regular container with a postStart hook
// (`skiff-proxy wait`) that holds the next containers until the proxy is
// ready, Istio's holdApplicationUntilProxyStarts; a Job's pod then only
// completes when the app asks the proxy to quit (/quitquitquit on 15020),
// which is why native sidecars are preferred where the server has them.
package inject

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Istio's names, as users write them.
const (
	AnnotationStatus         = "sidecar.istio.io/status"
	AnnotationInject         = "sidecar.istio.io/inject" // deprecated as an annotation; the label wins
	LabelInject              = "sidecar.istio.io/inject"
	LabelInjection           = "istio-injection"
	LabelRev                 = "istio.io/rev"
	LabelTLSMode             = "security.istio.io/tlsMode"
	LabelCanonicalName       = "service.istio.io/canonical-name"
	LabelCanonicalRevision   = "service.istio.io/canonical-revision"
	AnnotationDefaultCont    = "kubectl.kubernetes.io/default-container"
	AnnotationRewriteProbes  = "sidecar.istio.io/rewriteAppHTTPProbers"
	AnnotationProxyImage     = "sidecar.istio.io/proxyImage"
	AnnotationProxyCPU       = "sidecar.istio.io/proxyCPU"
	AnnotationProxyMemory    = "sidecar.istio.io/proxyMemory"
	AnnotationProxyCPULimit  = "sidecar.istio.io/proxyCPULimit"
	AnnotationProxyMemLimit  = "sidecar.istio.io/proxyMemoryLimit"
	AnnotationIncludeOutIPs  = "traffic.sidecar.istio.io/includeOutboundIPRanges"
	AnnotationExcludeOutIPs  = "traffic.sidecar.istio.io/excludeOutboundIPRanges"
	AnnotationIncludeInPorts = "traffic.sidecar.istio.io/includeInboundPorts"
	AnnotationExcludeInPorts = "traffic.sidecar.istio.io/excludeInboundPorts"
	AnnotationIncludeOutPort = "traffic.sidecar.istio.io/includeOutboundPorts"
	AnnotationExcludeOutPort = "traffic.sidecar.istio.io/excludeOutboundPorts"

	ProxyContainer  = "istio-proxy"
	InitContainer   = "istio-init"
	DefaultRevision = "default"
	StatusPort      = 15020
	HealthPort      = 15021
	PromPort        = 15090
	ProxyUID        = 1337
)

// Version is the skiff-proxy image tag used when Options.Image is empty;
// release builds set it at link time, as they do dataplane/proxy.Version.
var Version = "0.1.0-dev"

// DefaultImage is the sidecar image when Options.Image is empty.
func DefaultImage() string { return "ghcr.io/skiff-mesh/skiff-proxy:" + Version }

// Options are the injector's settings: Istio's injection values and the
// parts of MeshConfig the template reads. The zero value is Istio's default
// install.
type Options struct {
	// Image of istio-proxy and istio-init; default DefaultImage(). The image's
	// entrypoint is skiff-proxy. A pod's sidecar.istio.io/proxyImage wins.
	Image string `json:"image,omitempty"`
	// Revision this injector answers for (istio.io/rev); default "default".
	Revision string `json:"revision,omitempty"`
	// NativeSidecar makes istio-proxy an init container with restartPolicy
	// Always; set it when the API server is Kubernetes 1.29 or later.
	NativeSidecar bool `json:"nativeSidecar,omitempty"`
	// CNI: traffic capture is set up by the CNI plugin, so no istio-init.
	CNI bool `json:"cni,omitempty"`
	// EnableNamespacesByDefault injects pods in namespaces with no
	// injection label (Istio's sidecarInjectorWebhook.enableNamespacesByDefault).
	EnableNamespacesByDefault bool `json:"enableNamespacesByDefault,omitempty"`
	// CAAddr is the CA the agent asks for certificates; default
	// istiod.istio-system.svc:15012.
	CAAddr      string `json:"caAddress,omitempty"`
	ClusterID   string `json:"clusterID,omitempty"`   // default Kubernetes
	MeshID      string `json:"meshID,omitempty"`      // default the trust domain
	TrustDomain string `json:"trustDomain,omitempty"` // default cluster.local
	// ProxyConfig is MeshConfig.defaultConfig as JSON, passed to the proxy
	// in PROXY_CONFIG; default {"discoveryAddress":"<CAAddr>"}.
	ProxyConfig string `json:"proxyConfig,omitempty"`
	// Namespaces looks namespaces up for the webhook; when nil the webhook
	// trusts the API server's namespace selector and only the pod decides.
	Namespaces func(name string) (*corev1.Namespace, error) `json:"-"`
}

func (o Options) revision() string { return cmpOr(o.Revision, DefaultRevision) }
func (o Options) image() string    { return cmpOr(o.Image, DefaultImage()) }
func (o Options) caAddr() string   { return cmpOr(o.CAAddr, "istiod.istio-system.svc:15012") }
func (o Options) trustDomain() string {
	return cmpOr(o.TrustDomain, "cluster.local")
}

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// workload is what owns the pod: ISTIO_META_WORKLOAD_NAME and _OWNER.
type workload struct {
	name, namespace string
	group, resource string // "apps/v1", "deployments"; group "v1" for core
}

func (w workload) owner() string {
	api := "apis/" + w.group
	if w.group == "v1" {
		api = "api/v1"
	}
	return fmt.Sprintf("kubernetes://%s/namespaces/%s/%s/%s", api, w.namespace, w.resource, w.name)
}

// Pod injects the sidecar into a copy of pod when Istio would, given the
// namespace it is created in (nil when unknown: only the pod decides). The
// pod is returned unchanged, with the reason, when it is not injected. An
// error means a malformed annotation, named with its field path.
func Pod(pod *corev1.Pod, ns *corev1.Namespace, opts Options) (*corev1.Pod, Decision, error) {
	out := pod.DeepCopy()
	if out.Namespace == "" && ns != nil {
		out.Namespace = ns.Name
	}
	d := decide(&out.ObjectMeta, &out.Spec, ns, opts)
	if !d.Inject {
		return pod, d, nil
	}
	if err := injectSpec(&out.ObjectMeta, &out.Spec, podWorkload(out), opts); err != nil {
		return pod, Decision{Reason: "not injected: " + err.Error()}, err
	}
	return out, d, nil
}

// podWorkload finds the workload from the pod's controller, as Istio's
// GetDeployMetaFromPod: a ReplicaSet with the pod-template-hash label is a
// Deployment's, a Job named NAME-<digits> is a CronJob's.
func podWorkload(p *corev1.Pod) workload {
	ns := cmpOr(p.Namespace, "default")
	name := p.Name
	if name == "" {
		name = strings.TrimSuffix(p.GenerateName, "-")
	}
	w := workload{name: name, namespace: ns, group: "v1", resource: "pods"}
	for _, ref := range p.OwnerReferences {
		if ref.Controller == nil || !*ref.Controller {
			continue
		}
		switch ref.Kind {
		case "ReplicaSet":
			w = workload{name: ref.Name, namespace: ns, group: "apps/v1", resource: "replicasets"}
			if h := p.Labels["pod-template-hash"]; h != "" && strings.HasSuffix(ref.Name, "-"+h) {
				w.name, w.resource = strings.TrimSuffix(ref.Name, "-"+h), "deployments"
			}
		case "Job":
			w = workload{name: ref.Name, namespace: ns, group: "batch/v1", resource: "jobs"}
			if i := strings.LastIndexByte(ref.Name, '-'); i > 0 && isDigits(ref.Name[i+1:]) {
				w.name, w.resource = ref.Name[:i], "cronjobs"
			}
		default:
			w = workload{name: ref.Name, namespace: ns, group: groupOf(ref.APIVersion), resource: strings.ToLower(ref.Kind) + "s"}
		}
	}
	return w
}

func groupOf(apiVersion string) string { return cmpOr(apiVersion, "v1") }

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// injectSpec rewrites meta and spec in place. It validates every annotation
// it reads before changing anything.
func injectSpec(meta *metav1.ObjectMeta, spec *corev1.PodSpec, w workload, opts Options) error {
	capture, err := captureArgs(meta.Annotations)
	if err != nil {
		return err
	}
	res, err := proxyResources(meta.Annotations)
	if err != nil {
		return err
	}
	image := opts.image()
	if img := meta.Annotations[AnnotationProxyImage]; img != "" {
		image = img
	}
	appNames := make([]string, 0, len(spec.Containers))
	var ports []corev1.ContainerPort
	for _, c := range spec.Containers {
		appNames = append(appNames, c.Name)
		ports = append(ports, c.Ports...)
	}
	probers := map[string]prober{}
	if meta.Annotations[AnnotationRewriteProbes] != "false" {
		for i := range spec.Containers {
			rewriteProbes(&spec.Containers[i], probers)
		}
	}

	proxy := proxyContainer(image, res, opts, w, appNames, ports, probers)
	var initc []corev1.Container
	if !opts.CNI {
		initc = append(initc, initContainer(image, res, capture))
	}
	status := statusAnnotation{Revision: opts.revision()}
	if !opts.CNI {
		status.InitContainers = []string{InitContainer}
	}
	if opts.NativeSidecar {
		always := corev1.ContainerRestartPolicyAlways
		proxy.RestartPolicy = &always
		initc = append(initc, proxy)
		spec.InitContainers = append(initc, spec.InitContainers...)
		status.InitContainers = append(status.InitContainers, ProxyContainer)
	} else {
		proxy.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{
			Exec: &corev1.ExecAction{Command: []string{"skiff-proxy", "wait"}},
		}}
		spec.InitContainers = append(initc, spec.InitContainers...)
		spec.Containers = append([]corev1.Container{proxy}, spec.Containers...)
		status.Containers = []string{ProxyContainer}
	}
	vols := volumes()
	for _, v := range vols {
		status.Volumes = append(status.Volumes, v.Name)
	}
	spec.Volumes = append(spec.Volumes, vols...)
	if spec.SecurityContext == nil {
		spec.SecurityContext = &corev1.PodSecurityContext{}
	}
	if spec.SecurityContext.FSGroup == nil {
		// The projected token must be readable by the proxy's UID.
		g := int64(ProxyUID)
		spec.SecurityContext.FSGroup = &g
	}

	if meta.Labels == nil {
		meta.Labels = map[string]string{}
	}
	setIfAbsent(meta.Labels, LabelTLSMode, "istio")
	setIfAbsent(meta.Labels, LabelCanonicalName, firstOf(meta.Labels, w.name, "app.kubernetes.io/name", "app"))
	setIfAbsent(meta.Labels, LabelCanonicalRevision, firstOf(meta.Labels, "latest", "app.kubernetes.io/version", "version"))
	if meta.Annotations == nil {
		meta.Annotations = map[string]string{}
	}
	if len(appNames) > 0 {
		setIfAbsent(meta.Annotations, AnnotationDefaultCont, appNames[0])
	}
	st, _ := json.Marshal(status)
	meta.Annotations[AnnotationStatus] = string(st)
	return nil
}

// statusAnnotation is sidecar.istio.io/status: what was added, so tools can
// find (and remove) it; its presence marks the pod injected.
type statusAnnotation struct {
	InitContainers   []string `json:"initContainers"`
	Containers       []string `json:"containers"`
	Volumes          []string `json:"volumes"`
	ImagePullSecrets []string `json:"imagePullSecrets"`
	Revision         string   `json:"revision"`
}

func setIfAbsent(m map[string]string, k, v string) {
	if _, ok := m[k]; !ok {
		m[k] = v
	}
}

func firstOf(m map[string]string, def string, keys ...string) string {
	for _, k := range keys {
		if v := m[k]; v != "" {
			return v
		}
	}
	return def
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path}}}
}

func resourceEnv(name, res string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: res, Divisor: resource.MustParse("1")}}}
}

func proxyContainer(image string, res corev1.ResourceRequirements, opts Options, w workload, apps []string, ports []corev1.ContainerPort, probers map[string]prober) corev1.Container {
	proxyConfig := opts.ProxyConfig
	if proxyConfig == "" {
		b, _ := json.Marshal(map[string]string{"discoveryAddress": opts.caAddr()})
		proxyConfig = string(b)
	}
	env := []corev1.EnvVar{
		{Name: "PILOT_CERT_PROVIDER", Value: "istiod"},
		{Name: "CA_ADDR", Value: opts.caAddr()},
		fieldEnv("POD_NAME", "metadata.name"),
		fieldEnv("POD_NAMESPACE", "metadata.namespace"),
		fieldEnv("INSTANCE_IP", "status.podIP"),
		fieldEnv("SERVICE_ACCOUNT", "spec.serviceAccountName"),
		fieldEnv("HOST_IP", "status.hostIP"),
		resourceEnv("ISTIO_CPU_LIMIT", "limits.cpu"),
		{Name: "PROXY_CONFIG", Value: proxyConfig},
	}
	if len(ports) > 0 {
		b, _ := json.Marshal(ports)
		env = append(env, corev1.EnvVar{Name: "ISTIO_META_POD_PORTS", Value: string(b)})
	}
	env = append(env,
		corev1.EnvVar{Name: "ISTIO_META_APP_CONTAINERS", Value: strings.Join(apps, ",")},
		resourceEnv("GOMEMLIMIT", "limits.memory"),
		resourceEnv("GOMAXPROCS", "limits.cpu"),
		corev1.EnvVar{Name: "ISTIO_META_CLUSTER_ID", Value: cmpOr(opts.ClusterID, "Kubernetes")},
		fieldEnv("ISTIO_META_NODE_NAME", "spec.nodeName"),
		corev1.EnvVar{Name: "ISTIO_META_INTERCEPTION_MODE", Value: "REDIRECT"},
		corev1.EnvVar{Name: "ISTIO_META_WORKLOAD_NAME", Value: w.name},
		corev1.EnvVar{Name: "ISTIO_META_OWNER", Value: w.owner()},
		corev1.EnvVar{Name: "ISTIO_META_MESH_ID", Value: cmpOr(opts.MeshID, opts.trustDomain())},
		corev1.EnvVar{Name: "TRUST_DOMAIN", Value: opts.trustDomain()},
	)
	if len(probers) > 0 {
		b, _ := json.Marshal(probers) // map keys sort: stable output
		env = append(env, corev1.EnvVar{Name: "ISTIO_KUBE_APP_PROBERS", Value: string(b)})
	}
	ready := func(period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz/ready", Port: intstr.FromInt32(HealthPort)}},
			PeriodSeconds:    period,
			TimeoutSeconds:   3,
			FailureThreshold: failures,
		}
	}
	uid := int64(ProxyUID)
	return corev1.Container{
		Name:  ProxyContainer,
		Image: image,
		Args: []string{"proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local",
			"--proxyLogLevel=warning", "--proxyComponentLogLevel=misc:error", "--log_output_level=default:info"},
		Ports:          []corev1.ContainerPort{{Name: "http-envoy-prom", ContainerPort: PromPort, Protocol: corev1.ProtocolTCP}},
		Env:            env,
		Resources:      res,
		ReadinessProbe: ready(15, 4),
		StartupProbe:   ready(1, 600),
		VolumeMounts: []corev1.VolumeMount{
			{Name: "istiod-ca-cert", MountPath: "/var/run/secrets/istio"},
			{Name: "istio-data", MountPath: "/var/lib/istio/data"},
			{Name: "istio-envoy", MountPath: "/etc/istio/proxy"},
			{Name: "istio-token", MountPath: "/var/run/secrets/tokens"},
			{Name: "istio-podinfo", MountPath: "/etc/istio/pod"},
		},
		ImagePullPolicy: corev1.PullIfNotPresent,
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			Privileged:               ptr(false),
			ReadOnlyRootFilesystem:   ptr(true),
			RunAsUser:                &uid,
			RunAsGroup:               &uid,
			RunAsNonRoot:             ptr(true),
		},
		TerminationMessagePath:   "/dev/termination-log",
		TerminationMessagePolicy: corev1.TerminationMessageReadFile,
	}
}

func ptr[T any](v T) *T { return &v }

func initContainer(image string, res corev1.ResourceRequirements, capture []string) corev1.Container {
	root := int64(0)
	return corev1.Container{
		Name:            InitContainer,
		Image:           image,
		Args:            append([]string{"iptables"}, capture...),
		Resources:       res,
		ImagePullPolicy: corev1.PullIfNotPresent,
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr(false),
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
				Drop: []corev1.Capability{"ALL"},
			},
			Privileged:             ptr(false),
			ReadOnlyRootFilesystem: ptr(false),
			RunAsUser:              &root,
			RunAsGroup:             &root,
			RunAsNonRoot:           ptr(false),
		},
		TerminationMessagePath:   "/dev/termination-log",
		TerminationMessagePolicy: corev1.TerminationMessageReadFile,
	}
}

func volumes() []corev1.Volume {
	expiry := int64(43200)
	return []corev1.Volume{
		{Name: "istio-envoy", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
		{Name: "istio-data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "istio-podinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.labels"}},
			{Path: "annotations", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.annotations"}},
		}}}},
		{Name: "istio-token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "istio-ca", ExpirationSeconds: &expiry, Path: "istio-token"}},
		}}}},
		{Name: "istiod-ca-cert", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "istio-ca-root-cert"},
		}}},
	}
}

// proxyResources is Istio's default sidecar resources with the
// sidecar.istio.io/proxyCPU|Memory[Limit] annotations over them.
func proxyResources(ann map[string]string) (corev1.ResourceRequirements, error) {
	r := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("1Gi")},
	}
	for _, a := range []struct {
		key  string
		list corev1.ResourceList
		name corev1.ResourceName
	}{
		{AnnotationProxyCPU, r.Requests, corev1.ResourceCPU},
		{AnnotationProxyMemory, r.Requests, corev1.ResourceMemory},
		{AnnotationProxyCPULimit, r.Limits, corev1.ResourceCPU},
		{AnnotationProxyMemLimit, r.Limits, corev1.ResourceMemory},
	} {
		v, ok := ann[a.key]
		if !ok {
			continue
		}
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return r, fmt.Errorf("metadata.annotations[%q]: %q is not a Kubernetes quantity; use e.g. \"100m\" or \"128Mi\"", a.key, v)
		}
		a.list[a.name] = q
	}
	return r, nil
}

// captureArgs are istio-iptables' flags as Istio's template writes them,
// with the traffic.sidecar.istio.io annotations validated and applied.
func captureArgs(ann map[string]string) ([]string, error) {
	get := func(key, def string) string {
		if v, ok := ann[key]; ok {
			return strings.TrimSpace(v)
		}
		return def
	}
	includeIPs, excludeIPs := get(AnnotationIncludeOutIPs, "*"), get(AnnotationExcludeOutIPs, "")
	includeIn, excludeIn := get(AnnotationIncludeInPorts, "*"), get(AnnotationExcludeInPorts, "")
	for _, c := range []struct{ key, val string }{{AnnotationIncludeOutIPs, includeIPs}, {AnnotationExcludeOutIPs, excludeIPs}} {
		if err := validCIDRs(c.val, c.key == AnnotationIncludeOutIPs); err != nil {
			return nil, fmt.Errorf("metadata.annotations[%q]: %v; use comma-separated CIDRs such as 10.0.0.0/8,172.16.0.0/12", c.key, err)
		}
	}
	for _, c := range []struct{ key, val string }{
		{AnnotationIncludeInPorts, includeIn}, {AnnotationExcludeInPorts, excludeIn},
		{AnnotationIncludeOutPort, get(AnnotationIncludeOutPort, "")}, {AnnotationExcludeOutPort, get(AnnotationExcludeOutPort, "")},
	} {
		if err := validPorts(c.val, c.key == AnnotationIncludeInPorts); err != nil {
			return nil, fmt.Errorf("metadata.annotations[%q]: %v; use comma-separated ports 1-65535", c.key, err)
		}
	}
	exclude := "15090,15021," + strconv.Itoa(StatusPort)
	if excludeIn != "" {
		exclude += "," + excludeIn
	}
	args := []string{"-p", "15001", "-z", "15006", "-u", strconv.Itoa(ProxyUID), "-m", "REDIRECT",
		"-i", includeIPs, "-x", excludeIPs, "-b", includeIn, "-d", exclude}
	if v := get(AnnotationIncludeOutPort, ""); v != "" {
		args = append(args, "-q", v)
	}
	if v := get(AnnotationExcludeOutPort, ""); v != "" {
		args = append(args, "-o", v)
	}
	return append(args, "--log_output_level=default:info"), nil
}

func validCIDRs(v string, starOK bool) error {
	if v == "" || (starOK && v == "*") {
		return nil
	}
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if _, err := netip.ParsePrefix(s); err != nil {
			return fmt.Errorf("%q is not a CIDR", s)
		}
	}
	return nil
}

func validPorts(v string, starOK bool) error {
	if v == "" || (starOK && v == "*") {
		return nil
	}
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if n, err := strconv.Atoi(s); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q is not a port", s)
		}
	}
	return nil
}
