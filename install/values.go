package install

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/skiff-mesh/skiff/controlplane/inject"
	"github.com/skiff-mesh/skiff/controlplane/server"
)

// Profiles are the installation profiles, as istioctl names them.
var Profiles = []string{"ambient", "default", "demo", "minimal"}

// DefaultHub is the registry the images are pulled from.
const DefaultHub = "ghcr.io/skiff-mesh"

// Values are the settings a manifest is rendered from: a profile's
// defaults with the user's --set values over them.
type Values struct {
	Profile string
	// Revision of the control plane (istio.io/rev); "" is the default one.
	Revision string
	// Namespace of the control plane and gateways (istio-system).
	Namespace string
	// Hub and Tag of the images (HUB/skiffd:TAG, HUB/skiff-proxy:TAG).
	Hub, Tag string
	// PilotReplicas of istiod.
	PilotReplicas int
	// PilotLogLevel is skiffd's --log-level.
	PilotLogLevel string
	Ingress       Gateway
	Egress        Gateway
	// MeshConfig is Istio's MeshConfig as YAML would give it; it becomes
	// the istio ConfigMap's mesh key.
	MeshConfig map[string]any
	// Warnings are printed with the manifest (e.g. ambient's missing parts).
	Warnings []string
}

// Gateway is one gateway Deployment and its Service.
type Gateway struct {
	Enabled     bool
	Replicas    int
	ServiceType string // LoadBalancer, NodePort or ClusterIP
}

// ProfileValues returns a profile's values; name "" is "default".
func ProfileValues(name string) (Values, error) {
	if name == "" {
		name = "default"
	}
	v := Values{
		Profile: name, Namespace: "istio-system", Hub: DefaultHub, Tag: inject.Version,
		PilotReplicas: 1, PilotLogLevel: "info",
		Ingress:    Gateway{Replicas: 1, ServiceType: "LoadBalancer"},
		Egress:     Gateway{Replicas: 1, ServiceType: "ClusterIP"},
		MeshConfig: map[string]any{},
	}
	switch name {
	case "minimal":
	case "default":
		v.Ingress.Enabled = true
	case "demo":
		v.Ingress.Enabled, v.Egress.Enabled = true, true
		v.MeshConfig["accessLogFile"] = "/dev/stdout"
		v.MeshConfig["enableTracing"] = true
		v.MeshConfig["defaultConfig"] = map[string]any{"tracing": map[string]any{"sampling": 100.0}}
	case "ambient":
		v.Warnings = append(v.Warnings, "profile ambient: ztunnel and istio-cni are not available in Skiff yet; "+
			"only istiod is installed, and workloads need sidecars (label their namespace istio-injection=enabled)")
	default:
		return Values{}, fmt.Errorf("profile %q: unknown; use one of %s", name, strings.Join(Profiles, ", "))
	}
	return v, nil
}

// Names of the objects a revision owns.
func (v Values) suffix() string {
	if v.Revision == "" {
		return ""
	}
	return "-" + v.Revision
}

// Rev is the istio.io/rev label value.
func (v Values) Rev() string {
	if v.Revision == "" {
		return inject.DefaultRevision
	}
	return v.Revision
}

// IstiodName is the istiod Deployment, Service and ServiceAccount name.
func (v Values) IstiodName() string { return "istiod" + v.suffix() }

// ConfigMapName is the mesh config ConfigMap's name.
func (v Values) ConfigMapName() string { return "istio" + v.suffix() }

// ClusterRoleName is istiod's ClusterRole (and binding) name.
func (v Values) ClusterRoleName() string {
	return "istiod-clusterrole" + v.suffix() + "-" + v.Namespace
}

// InjectorName and ValidatorName are the webhook configurations skiffd
// writes at run time (controlplane/webhook's names).
func (v Values) InjectorName() string {
	n := "istio-sidecar-injector" + v.suffix()
	if v.Namespace != "istio-system" {
		n += "-" + v.Namespace
	}
	return n
}

// ValidatorName: see InjectorName.
func (v Values) ValidatorName() string { return "istio-validator" + v.suffix() + "-" + v.Namespace }

// DiscoveryAddress is istiod's xDS and CA address inside the cluster.
func (v Values) DiscoveryAddress() string {
	return v.IstiodName() + "." + v.Namespace + ".svc:15012"
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// settable lists the --set paths besides meshConfig.*, for the error
// message.
var settable = []string{
	"profile", "revision", "hub", "tag", "values.global.hub", "values.global.tag",
	"values.global.istioNamespace", "values.pilot.replicaCount", "values.pilot.logLevel",
	"components.ingressGateways[0].enabled", "components.ingressGateways[0].k8s.replicaCount",
	"components.egressGateways[0].enabled", "components.egressGateways[0].k8s.replicaCount",
	"values.gateways.istio-ingressgateway.type", "values.gateways.istio-egressgateway.type",
	"meshConfig.FIELD[.FIELD…]",
}

// Set applies one istioctl-style --set PATH=VALUE. "profile" cannot be
// set here: choose the profile first (ProfileValues).
func (v *Values) Set(expr string) error {
	path, val, ok := strings.Cut(expr, "=")
	path = strings.TrimSpace(path)
	if !ok || path == "" {
		return fmt.Errorf("--set %q: want PATH=VALUE, e.g. --set meshConfig.accessLogFile=/dev/stdout", expr)
	}
	bad := func(want string) error { return fmt.Errorf("--set %s=%s: want %s", path, val, want) }
	atoi := func(dst *int) error {
		n, err := strconv.Atoi(val)
		if err != nil || n < 0 {
			return bad("a non-negative integer")
		}
		*dst = n
		return nil
	}
	boolean := func(dst *bool) error {
		b, err := strconv.ParseBool(val)
		if err != nil {
			return bad("true or false")
		}
		*dst = b
		return nil
	}
	svcType := func(dst *string) error {
		if !slices.Contains([]string{"LoadBalancer", "NodePort", "ClusterIP"}, val) {
			return bad("LoadBalancer, NodePort or ClusterIP")
		}
		*dst = val
		return nil
	}
	switch path {
	case "profile":
		return fmt.Errorf("--set profile=%s: give the profile with --profile %s", val, val)
	case "revision":
		if val != "" && (!dnsLabel.MatchString(val) || len(val) > 40 || val == inject.DefaultRevision) {
			return bad(`a DNS label of at most 40 characters other than "default" (lowercase letters, digits, '-')`)
		}
		v.Revision = val
	case "hub", "values.global.hub":
		if val == "" {
			return bad("an image registry such as ghcr.io/skiff-mesh")
		}
		v.Hub = strings.TrimSuffix(val, "/")
	case "tag", "values.global.tag":
		if val == "" || strings.ContainsAny(val, "/: ") {
			return bad("an image tag such as 0.1.0")
		}
		v.Tag = val
	case "values.global.istioNamespace":
		if !dnsLabel.MatchString(val) || len(val) > 63 {
			return bad("a namespace name (a DNS label)")
		}
		v.Namespace = val
	case "values.pilot.replicaCount":
		return atoi(&v.PilotReplicas)
	case "values.pilot.logLevel":
		if !slices.Contains([]string{"debug", "info", "warn", "error"}, val) {
			return bad("debug, info, warn or error")
		}
		v.PilotLogLevel = val
	case "components.ingressGateways[0].enabled":
		return boolean(&v.Ingress.Enabled)
	case "components.egressGateways[0].enabled":
		return boolean(&v.Egress.Enabled)
	case "components.ingressGateways[0].k8s.replicaCount":
		return atoi(&v.Ingress.Replicas)
	case "components.egressGateways[0].k8s.replicaCount":
		return atoi(&v.Egress.Replicas)
	case "values.gateways.istio-ingressgateway.type":
		return svcType(&v.Ingress.ServiceType)
	case "values.gateways.istio-egressgateway.type":
		return svcType(&v.Egress.ServiceType)
	default:
		field, ok := strings.CutPrefix(path, "meshConfig.")
		if !ok || field == "" {
			return fmt.Errorf("--set %s: unknown path; settable are %s", path, strings.Join(settable, ", "))
		}
		return v.setMesh(path, field, val)
	}
	return nil
}

// setMesh sets a MeshConfig field; the value is read as YAML (true, 100,
// "text"), and the whole mesh config is checked as skiffd will read it.
func (v *Values) setMesh(path, field, val string) error {
	var parsed any
	if err := yaml.Unmarshal([]byte(val), &parsed); err != nil {
		parsed = val
	}
	next := deepCopy(v.MeshConfig)
	m := next
	keys := strings.Split(field, ".")
	for i, k := range keys {
		if k == "" {
			return fmt.Errorf("--set %s: empty field name in the path", path)
		}
		if i == len(keys)-1 {
			m[k] = parsed
			break
		}
		sub, ok := m[k].(map[string]any)
		if !ok {
			sub = map[string]any{}
			m[k] = sub
		}
		m = sub
	}
	b, err := yaml.Marshal(next)
	if err != nil {
		return fmt.Errorf("--set %s: %v", path, err)
	}
	if _, err := server.ParseMeshConfig(b); err != nil {
		return fmt.Errorf("--set %s=%s: meshConfig.%v", path, val, err)
	}
	v.MeshConfig = next
	return nil
}

func deepCopy(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, x := range m {
		if sub, ok := x.(map[string]any); ok {
			x = deepCopy(sub)
		}
		out[k] = x
	}
	return out
}
