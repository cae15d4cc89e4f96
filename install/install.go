// Package install holds what `skiff install` puts into a Kubernetes cluster,
// in Istio's install shape: the CRDs (Istio's and the Gateway API's standard
// channel, checked in under crds/ with their origin), the istio-system
// namespace, istiod (skiffd) with its least-privilege RBAC, mesh ConfigMap,
// Deployment and Service, and the ingress and egress gateways (skiff-proxy
// `proxy router`) a profile enables. Generate renders a profile's Values
// into objects in apply order; every object carries the owner label
// uninstall selects by. The Dockerfiles of the images are under docker/.
package install

import (
	"bufio"
	"bytes"
	"embed"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"text/template"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/skiff-mesh/skiff/controlplane/server"
)

// Labels on every object Generate makes. Uninstall finds what install
// created by LabelOwner=OwnerValue (and LabelRev for one revision).
const (
	LabelOwner     = "install.operator.istio.io/owning-resource"
	OwnerValue     = "skiff"
	LabelComponent = "operator.istio.io/component"
	LabelRev       = "istio.io/rev"
)

// Components, as istioctl names them in LabelComponent.
const (
	ComponentBase    = "Base"
	ComponentPilot   = "Pilot"
	ComponentIngress = "IngressGateways"
	ComponentEgress  = "EgressGateways"
)

//go:embed crds/istio.yaml crds/gateway-api-standard.yaml
var crdFiles embed.FS

//go:embed templates/*.yaml
var templateFiles embed.FS

// Manifest is a rendered install.
type Manifest struct {
	Values Values
	// CRDs are applied first and must be Established before Objects.
	CRDs []*unstructured.Unstructured
	// Objects in apply order (namespace, RBAC, config, Services,
	// Deployments); delete in reverse.
	Objects []*unstructured.Unstructured
	// Warnings for the user (printed to stderr, never into the YAML).
	Warnings []string
}

// All returns the CRDs then the other objects.
func (m *Manifest) All() []*unstructured.Unstructured {
	return append(slices.Clone(m.CRDs), m.Objects...)
}

// WriteYAML writes every object as one YAML stream, deterministically:
// objects in apply order, keys sorted.
func (m *Manifest) WriteYAML(w io.Writer) error {
	for _, o := range m.All() {
		b, err := yaml.Marshal(o.Object)
		if err != nil {
			return fmt.Errorf("%s %s: %v", o.GetKind(), o.GetName(), err)
		}
		if _, err := fmt.Fprintf(w, "---\n%s", b); err != nil {
			return err
		}
	}
	return nil
}

// kindOrder is the apply order: what others refer to comes first.
var kindOrder = []string{
	"CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
	"Role", "RoleBinding", "ConfigMap", "Service", "Deployment",
}

// Less orders objects for applying: by kind (kindOrder), namespace, name.
func Less(a, b *unstructured.Unstructured) int {
	ka, kb := slices.Index(kindOrder, a.GetKind()), slices.Index(kindOrder, b.GetKind())
	if ka != kb {
		return ka - kb
	}
	return strings.Compare(a.GetNamespace()+"/"+a.GetName(), b.GetNamespace()+"/"+b.GetName())
}

// Generate renders v.
func Generate(v Values) (*Manifest, error) {
	if v.Namespace == "" || v.Hub == "" || v.Tag == "" {
		return nil, fmt.Errorf("install values: Namespace, Hub and Tag must be set; start from ProfileValues")
	}
	crds, err := CRDs()
	if err != nil {
		return nil, err
	}
	mesh, trustDomain, err := meshConfig(v)
	if err != nil {
		return nil, err
	}
	m := &Manifest{Values: v, Warnings: slices.Clone(v.Warnings)}
	if v.PilotReplicas > 1 {
		m.Warnings = append(m.Warnings, fmt.Sprintf("values.pilot.replicaCount=%d: each istiod replica makes its own self-signed root; "+
			"create the cacerts Secret in %s (Istio's plugged-in CA) so all replicas sign with one", v.PilotReplicas, v.Namespace))
	}
	for _, c := range crds {
		c = c.DeepCopy()
		label(c, ComponentBase, "")
		m.CRDs = append(m.CRDs, c)
	}
	data := map[string]any{"V": v, "Mesh": mesh, "Groups": rbacGroups(crds), "TrustDomain": trustDomain}
	objs, err := render("templates/istiod.yaml", data)
	if err != nil {
		return nil, err
	}
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			label(o, ComponentBase, "")
		} else {
			label(o, ComponentPilot, v.Rev())
		}
	}
	m.Objects = objs
	for _, g := range []struct {
		gw                Gateway
		name, istio, comp string
		statusPort        bool
	}{
		{v.Ingress, "istio-ingressgateway", "ingressgateway", ComponentIngress, true},
		{v.Egress, "istio-egressgateway", "egressgateway", ComponentEgress, false},
	} {
		if !g.gw.Enabled {
			continue
		}
		data["G"] = map[string]any{"Name": g.name, "Istio": g.istio, "Replicas": g.gw.Replicas,
			"ServiceType": g.gw.ServiceType, "StatusPort": g.statusPort}
		objs, err := render("templates/gateway.yaml", data)
		if err != nil {
			return nil, err
		}
		for _, o := range objs {
			label(o, g.comp, v.Rev())
		}
		m.Objects = append(m.Objects, objs...)
	}
	slices.SortStableFunc(m.Objects, Less)
	return m, nil
}

// label sets the install labels on o; rev "" leaves istio.io/rev off (the
// namespace: that label there would select it for injection; and the CRDs,
// which every revision shares).
func label(o *unstructured.Unstructured, component, rev string) {
	l := o.GetLabels()
	if l == nil {
		l = map[string]string{}
	}
	l[LabelOwner] = OwnerValue
	l[LabelComponent] = component
	if rev != "" {
		l[LabelRev] = rev
	}
	o.SetLabels(l)
}

var funcs = template.FuncMap{
	"join": strings.Join,
	"indent": func(n int, s string) string {
		pad := strings.Repeat(" ", n)
		return pad + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+pad)
	},
}

func render(name string, data any) ([]*unstructured.Unstructured, error) {
	src, err := templateFiles.ReadFile(name)
	if err != nil {
		return nil, err
	}
	t, err := template.New(name).Funcs(funcs).Option("missingkey=error").Parse(string(src))
	if err != nil {
		return nil, fmt.Errorf("install template %s: %v", name, err)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		return nil, fmt.Errorf("install template %s: %v", name, err)
	}
	objs, err := decodeAll(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("install template %s: %v", name, err)
	}
	return objs, nil
}

// decodeAll reads a YAML stream into objects, skipping empty documents.
func decodeAll(b []byte) ([]*unstructured.Unstructured, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var out []*unstructured.Unstructured
	for i := 1; ; i++ {
		doc, err := r.Read()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %v", i, err)
		}
		var obj map[string]any
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			return nil, fmt.Errorf("document %d: %v", i, err)
		}
		if len(obj) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: obj}
		if u.GetKind() == "" || u.GetAPIVersion() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("document %d: apiVersion, kind and metadata.name are required", i)
		}
		out = append(out, u)
	}
}

var crdsOnce = sync.OnceValues(func() ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	for _, f := range []string{"crds/istio.yaml", "crds/gateway-api-standard.yaml"} {
		b, err := crdFiles.ReadFile(f)
		if err != nil {
			return nil, err
		}
		objs, err := decodeAll(b)
		if err != nil {
			return nil, fmt.Errorf("install/%s: %v", f, err)
		}
		for _, o := range objs {
			if o.GetKind() != "CustomResourceDefinition" {
				return nil, fmt.Errorf("install/%s: %s %s is not a CustomResourceDefinition", f, o.GetKind(), o.GetName())
			}
		}
		out = append(out, objs...)
	}
	slices.SortFunc(out, Less)
	return out, nil
})

// CRDs returns the embedded CustomResourceDefinitions, sorted by name,
// without install labels. Callers must not modify them.
func CRDs() ([]*unstructured.Unstructured, error) { return crdsOnce() }

// rbacGroup is one API group's kinds for istiod's ClusterRole.
type rbacGroup struct {
	Group     string
	Resources []string // plurals
	Status    []string // plural/status of the kinds with a status subresource
}

// rbacGroups lists every CRD's resources by group: istiod reads every
// Istio and Gateway API kind and writes their status.
func rbacGroups(crds []*unstructured.Unstructured) []rbacGroup {
	byGroup := map[string]*rbacGroup{}
	for _, c := range crds {
		group, _, _ := unstructured.NestedString(c.Object, "spec", "group")
		plural, _, _ := unstructured.NestedString(c.Object, "spec", "names", "plural")
		g := byGroup[group]
		if g == nil {
			g = &rbacGroup{Group: group}
			byGroup[group] = g
		}
		g.Resources = append(g.Resources, plural)
		versions, _, _ := unstructured.NestedSlice(c.Object, "spec", "versions")
		for _, ver := range versions {
			vm, _ := ver.(map[string]any)
			if _, ok, _ := unstructured.NestedMap(vm, "subresources", "status"); ok {
				g.Status = append(g.Status, plural+"/status")
				break
			}
		}
	}
	var out []rbacGroup
	for _, g := range byGroup {
		slices.Sort(g.Resources)
		slices.Sort(g.Status)
		out = append(out, *g)
	}
	slices.SortFunc(out, func(a, b rbacGroup) int { return strings.Compare(a.Group, b.Group) })
	return out
}

// meshConfig is Istio's installed mesh config (discovery address, root
// namespace, trust domain) under v.MeshConfig, as the ConfigMap's YAML,
// checked the way skiffd reads it; and its trust domain.
func meshConfig(v Values) (string, string, error) {
	base := map[string]any{
		"defaultConfig":         map[string]any{"discoveryAddress": v.DiscoveryAddress()},
		"enablePrometheusMerge": true,
		"rootNamespace":         v.Namespace,
		"trustDomain":           "cluster.local",
	}
	merged := merge(base, v.MeshConfig)
	b, err := yaml.Marshal(merged)
	if err != nil {
		return "", "", err
	}
	mc, err := server.ParseMeshConfig(b)
	if err != nil {
		return "", "", fmt.Errorf("meshConfig: %v", err)
	}
	return string(b), mc.GetTrustDomain(), nil
}

// merge returns over laid on base, maps merged key by key.
func merge(base, over map[string]any) map[string]any {
	out := deepCopy(base)
	for k, x := range over {
		if om, ok := x.(map[string]any); ok {
			if bm, ok := out[k].(map[string]any); ok {
				out[k] = merge(bm, om)
				continue
			}
			x = deepCopy(om)
		}
		out[k] = x
	}
	return out
}
