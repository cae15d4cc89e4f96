package dashboard

import (
	"context"
	"encoding/json"
	"slices"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// ConfigObject is one config object as the dashboard shows it: its spec
// as JSON and the validation messages skiffd's store holds for it.
type ConfigObject struct {
	Kind      string          `json:"kind"`
	Group     string          `json:"group,omitempty"`
	Namespace string          `json:"namespace,omitempty"`
	Name      string          `json:"name"`
	Version   string          `json:"resource_version,omitempty"`
	Source    string          `json:"source,omitempty"` // file:line
	Spec      json.RawMessage `json:"spec,omitempty"`
	Messages  []Message       `json:"messages,omitempty"`
}

// Message is a validation finding.
type Message struct {
	Level string `json:"level"` // error or warning
	Path  string `json:"path,omitempty"`
	Text  string `json:"text"`
}

// ConfigView is the config that can apply to services: Istio's and the
// Gateway API's kinds and the Services, with the store's messages;
// Messages holds those about no object of the list (unreadable files).
type ConfigView struct {
	Version  uint64         `json:"version"`
	Objects  []ConfigObject `json:"objects"`
	Messages []Message      `json:"messages,omitempty"`
}

// StoreConfig reads a ConfigView from skiffd's config store.
func StoreConfig(s *config.Store) func(context.Context) (*ConfigView, error) {
	return func(context.Context) (*ConfigView, error) {
		snap := s.Snapshot()
		v := &ConfigView{Version: snap.Version, Objects: []ConfigObject{}}
		idx := map[config.Key]int{}
		for _, o := range snap.All() {
			if !shown(o.Kind) {
				continue
			}
			idx[config.Key{Kind: o.Kind, Namespace: o.Meta.Namespace, Name: o.Meta.Name}] = len(v.Objects)
			v.Objects = append(v.Objects, ConfigObject{Kind: o.Kind.Kind, Group: o.Kind.Group, Namespace: o.Meta.Namespace,
				Name: o.Meta.Name, Version: o.Meta.ResourceVersion, Source: o.Source.String(), Spec: specJSON(o.Spec)})
		}
		for _, e := range s.Errors() {
			m := Message{Level: "error", Path: e.Path, Text: e.Error()}
			if e.Warning {
				m.Level = "warning"
			}
			if i, ok := idx[e.Key]; ok {
				v.Objects[i].Messages = append(v.Objects[i].Messages, m)
			} else if e.Key.Name == "" || shown(e.Key.Kind) {
				v.Messages = append(v.Messages, m)
			}
		}
		return v, nil
	}
}

func shown(k config.Kind) bool {
	return k == config.Service || strings.HasSuffix(k.Group, "istio.io") || k.Group == "gateway.networking.k8s.io"
}

// specJSON encodes a spec: protojson for Istio's protos (their field
// names as in YAML), encoding/json for Kubernetes' types.
func specJSON(spec any) json.RawMessage {
	var b []byte
	var err error
	if m, ok := spec.(proto.Message); ok {
		b, err = protojson.MarshalOptions{UseProtoNames: false}.Marshal(m)
	} else {
		b, err = json.Marshal(spec)
	}
	if err != nil {
		return nil
	}
	return b
}

// specFields is the part of a spec the matching reads.
type specFields struct {
	Hosts    []string `json:"hosts"`
	Gateways []string `json:"gateways"`
	Host     string   `json:"host"`
	Selector *struct {
		MatchLabels map[string]string `json:"matchLabels"`
	} `json:"selector"`
	WorkloadSelector *struct {
		Labels map[string]string `json:"labels"`
	} `json:"workloadSelector"`
	// A Kubernetes Service (its Spec is the whole object) and Gateway API
	// routes.
	Spec *struct {
		Selector map[string]string `json:"selector"`
	} `json:"spec"`
	Rules []struct {
		BackendRefs []struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"backendRefs"`
	} `json:"rules"`
	HTTP []struct {
		Route []struct {
			Destination struct {
				Host string `json:"host"`
			} `json:"destination"`
		} `json:"route"`
	} `json:"http"`
}

// rootNamespace is Istio's default mesh config root namespace: policies
// there apply to the whole mesh.
const rootNamespace = "istio-system"

// AppliesTo returns the objects of v that apply to service name.ns: its
// own Service, VirtualServices and DestinationRules naming its host,
// ServiceEntries, routes sending to it, and the workload-scoped kinds
// (AuthorizationPolicy, PeerAuthentication, RequestAuthentication,
// Telemetry, Sidecar, EnvoyFilter…) of its namespace or the root
// namespace whose selector its pods can match.
func AppliesTo(v *ConfigView, name, ns string) []ConfigObject {
	var selector map[string]string
	for _, o := range v.Objects {
		if o.Kind == "Service" && o.Group == "" && o.Name == name && o.Namespace == ns {
			var f specFields
			_ = json.Unmarshal(o.Spec, &f)
			if f.Spec != nil {
				selector = f.Spec.Selector
			}
		}
	}
	out := []ConfigObject{}
	for _, o := range v.Objects {
		var f specFields
		_ = json.Unmarshal(o.Spec, &f)
		hostHit := func(h string) bool { return hostMatches(h, o.Namespace, name, ns) }
		ok := false
		switch o.Kind {
		case "Service":
			ok = o.Group == "" && o.Name == name && o.Namespace == ns
		case "VirtualService", "ServiceEntry":
			// A VirtualService bound to gateways only ("*" on an ingress)
			// applies to the service only where it routes to it.
			meshBound := len(f.Gateways) == 0 || slices.Contains(f.Gateways, "mesh")
			ok = meshBound && slices.ContainsFunc(f.Hosts, hostHit)
			for _, h := range f.HTTP {
				for _, r := range h.Route {
					ok = ok || hostHit(r.Destination.Host)
				}
			}
		case "DestinationRule":
			ok = hostHit(f.Host)
		case "HTTPRoute", "GRPCRoute", "TCPRoute", "TLSRoute":
			for _, r := range f.Rules {
				for _, b := range r.BackendRefs {
					bns := b.Namespace
					if bns == "" {
						bns = o.Namespace
					}
					ok = ok || (b.Name == name && bns == ns)
				}
			}
		case "Gateway":
			ok = false
		default:
			if o.Namespace != ns && o.Namespace != rootNamespace {
				break
			}
			var labels map[string]string
			if f.Selector != nil {
				labels = f.Selector.MatchLabels
			} else if f.WorkloadSelector != nil {
				labels = f.WorkloadSelector.Labels
			}
			ok = (o.Namespace == ns || len(labels) == 0) && consistent(labels, selector)
		}
		if ok {
			out = append(out, o)
		}
	}
	return out
}

// consistent: a pod selected by svc can carry labels (no key both name
// with different values). No service selector: only unselective policies.
func consistent(labels, svc map[string]string) bool {
	if len(labels) == 0 {
		return true
	}
	if len(svc) == 0 {
		return false
	}
	for k, v := range labels {
		if sv, ok := svc[k]; ok && sv != v {
			return false
		}
	}
	return true
}

// hostMatches reports whether a host written in an object of namespace
// objNS names service name.ns: short names resolve in objNS, as Istio
// resolves them; "*" and "*.suffix" match as wildcards.
func hostMatches(h, objNS, name, ns string) bool {
	if h == "" {
		return false
	}
	full := name + "." + ns + ".svc.cluster.local"
	if h == "*" {
		return true
	}
	if strings.HasPrefix(h, "*.") {
		return strings.HasSuffix(full, h[1:])
	}
	switch strings.Count(h, ".") {
	case 0:
		h = h + "." + objNS + ".svc.cluster.local"
	case 1:
		h += ".svc.cluster.local"
	default:
		if strings.HasSuffix(h, ".svc") {
			h += ".cluster.local"
		}
	}
	return h == full
}
