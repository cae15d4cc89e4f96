package server

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	"sigs.k8s.io/yaml"
)

// DefaultMeshConfig is Istio's mesh configuration when none is given: the
// fields istiod fills in before reading the mesh ConfigMap over them.
func DefaultMeshConfig() *meshv1alpha1.MeshConfig {
	return &meshv1alpha1.MeshConfig{
		TrustDomain:           "cluster.local",
		RootNamespace:         "istio-system",
		IngressClass:          "istio",
		IngressService:        "istio-ingressgateway",
		IngressControllerMode: meshv1alpha1.MeshConfig_STRICT,
		EnableAutoMtls:        wrapperspb.Bool(true),
		ConnectTimeout:        durationpb.New(10e9),
		DnsRefreshRate:        durationpb.New(60e9),
		OutboundTrafficPolicy: &meshv1alpha1.MeshConfig_OutboundTrafficPolicy{Mode: meshv1alpha1.MeshConfig_OutboundTrafficPolicy_ALLOW_ANY},
	}
}

// LoadMeshConfig reads Istio's MeshConfig YAML (the `mesh` key of the istio
// ConfigMap) from path over DefaultMeshConfig, as istiod does. Unknown
// fields are refused, naming the file and the field path.
func LoadMeshConfig(path string) (*meshv1alpha1.MeshConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--meshconfig: %w; give a readable file of Istio's MeshConfig YAML", err)
	}
	mc, err := ParseMeshConfig(b)
	if err != nil {
		return nil, fmt.Errorf("--meshconfig %s: %w", path, err)
	}
	return mc, nil
}

// ParseMeshConfig reads MeshConfig YAML or JSON over DefaultMeshConfig.
func ParseMeshConfig(b []byte) (*meshv1alpha1.MeshConfig, error) {
	js, err := yaml.YAMLToJSON(b)
	if err != nil {
		return nil, fmt.Errorf("not YAML: %w", err)
	}
	mc := DefaultMeshConfig()
	if s := strings.TrimSpace(string(js)); s == "null" || s == "" {
		return mc, nil
	}
	var generic any
	if err := json.Unmarshal(js, &generic); err != nil {
		return nil, fmt.Errorf("not YAML: %w", err)
	}
	if _, ok := generic.(map[string]any); !ok {
		return nil, fmt.Errorf("want a MeshConfig mapping (trustDomain, rootNamespace, extensionProviders, …), got %s", jsonKind(generic))
	}
	// protojson names no path in its errors; find unknown fields first so
	// the message says where.
	if p := unknownField(generic, mc.ProtoReflect().Descriptor(), ""); p != "" {
		return nil, fmt.Errorf("%s: unknown field of Istio's MeshConfig (istio.mesh.v1alpha1, https://istio.io/latest/docs/reference/config/istio.mesh.v1alpha1/); check its spelling", p)
	}
	top := generic.(map[string]any)
	user := &meshv1alpha1.MeshConfig{}
	if err := protojson.Unmarshal(js, user); err != nil {
		return nil, fmt.Errorf("%s%v; see https://istio.io/latest/docs/reference/config/istio.mesh.v1alpha1/", badTopField(top), err)
	}
	// The file's fields replace the defaults' (a field given as false or
	// empty included); the others keep their defaults.
	mc.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		_, byJSON := top[fd.JSONName()]
		_, byName := top[string(fd.Name())]
		if !byJSON && !byName {
			user.ProtoReflect().Set(fd, v)
		}
		return true
	})
	mc = user
	if mc.TrustDomain == "" {
		mc.TrustDomain = "cluster.local"
	}
	if mc.RootNamespace == "" {
		mc.RootNamespace = "istio-system"
	}
	return mc, nil
}

// badTopField names the first top-level field that does not decode alone
// ("connectTimeout: "), since protojson's errors give a JSON offset only.
func badTopField(top map[string]any) string {
	for _, k := range sortedKeys(top) {
		b, err := json.Marshal(map[string]any{k: top[k]})
		if err != nil {
			continue
		}
		if protojson.Unmarshal(b, &meshv1alpha1.MeshConfig{}) != nil {
			return k + ": "
		}
	}
	return ""
}

// unknownField returns the path of the first key in v that md has no field
// for (by JSON or proto name), or "". Well-known types (Struct, Any,
// Duration, wrappers) hold free-form or scalar values and are not entered.
func unknownField(v any, md protoreflect.MessageDescriptor, path string) string {
	if strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
		return ""
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return "" // a type mismatch is protojson's to report
	}
	fields := md.Fields()
	for _, k := range sortedKeys(obj) {
		fd := fields.ByJSONName(k)
		if fd == nil {
			fd = fields.ByName(protoreflect.Name(k))
		}
		p := k
		if path != "" {
			p = path + "." + k
		}
		if fd == nil {
			return p
		}
		if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
			continue
		}
		switch {
		case fd.IsMap():
			if fd.MapValue().Kind() != protoreflect.MessageKind {
				continue
			}
			if m, ok := obj[k].(map[string]any); ok {
				for _, mk := range sortedKeys(m) {
					if q := unknownField(m[mk], fd.MapValue().Message(), p+"["+strconv.Quote(mk)+"]"); q != "" {
						return q
					}
				}
			}
		case fd.IsList():
			if l, ok := obj[k].([]any); ok {
				for i, e := range l {
					if q := unknownField(e, fd.Message(), p+"["+strconv.Itoa(i)+"]"); q != "" {
						return q
					}
				}
			}
		default:
			if q := unknownField(obj[k], fd.Message(), p); q != "" {
				return q
			}
		}
	}
	return ""
}

// sortedKeys makes the first unknown field reported the same every run.
func sortedKeys(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }

func jsonKind(v any) string {
	switch v.(type) {
	case []any:
		return "a list"
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	}
	return "null"
}
