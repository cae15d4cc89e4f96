package validation

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/golang/protobuf/jsonpb" //nolint:staticcheck // the only decoder with Istio's duration syntax ("5m")
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	telemetry "istio.io/api/telemetry/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1alpha2 "sigs.k8s.io/gateway-api/apis/v1alpha2"
	"sigs.k8s.io/yaml"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// This file is a test-only decoder: the store owns the real one. It turns
// YAML into config.Objects the way the store is specified to (Istio kinds by
// strict jsonpb, refusing unknown fields; Kubernetes and Gateway API kinds by
// strict sigs.k8s.io/yaml).

type kindInfo struct {
	kind config.Kind
	// newSpec returns what Spec holds for the kind.
	newSpec func() any
}

func protoSpec[T proto.Message](mk func() T) func() any { return func() any { return mk() } }

var kinds = map[string]kindInfo{
	"networking.istio.io/VirtualService":       {config.VirtualService, protoSpec(func() *networking.VirtualService { return &networking.VirtualService{} })},
	"networking.istio.io/DestinationRule":      {config.DestinationRule, protoSpec(func() *networking.DestinationRule { return &networking.DestinationRule{} })},
	"networking.istio.io/Gateway":              {config.Gateway, protoSpec(func() *networking.Gateway { return &networking.Gateway{} })},
	"networking.istio.io/ServiceEntry":         {config.ServiceEntry, protoSpec(func() *networking.ServiceEntry { return &networking.ServiceEntry{} })},
	"networking.istio.io/Sidecar":              {config.Sidecar, protoSpec(func() *networking.Sidecar { return &networking.Sidecar{} })},
	"networking.istio.io/WorkloadEntry":        {config.WorkloadEntry, protoSpec(func() *networking.WorkloadEntry { return &networking.WorkloadEntry{} })},
	"networking.istio.io/WorkloadGroup":        {config.WorkloadGroup, protoSpec(func() *networking.WorkloadGroup { return &networking.WorkloadGroup{} })},
	"security.istio.io/PeerAuthentication":     {config.PeerAuthentication, protoSpec(func() *security.PeerAuthentication { return &security.PeerAuthentication{} })},
	"security.istio.io/AuthorizationPolicy":    {config.AuthorizationPolicy, protoSpec(func() *security.AuthorizationPolicy { return &security.AuthorizationPolicy{} })},
	"security.istio.io/RequestAuthentication":  {config.RequestAuthentication, protoSpec(func() *security.RequestAuthentication { return &security.RequestAuthentication{} })},
	"telemetry.istio.io/Telemetry":             {config.Telemetry, protoSpec(func() *telemetry.Telemetry { return &telemetry.Telemetry{} })},
	"gateway.networking.k8s.io/Gateway":        {config.KubeGateway, func() any { return &gatewayv1.GatewaySpec{} }},
	"gateway.networking.k8s.io/GatewayClass":   {config.GatewayClass, func() any { return &gatewayv1.GatewayClassSpec{} }},
	"gateway.networking.k8s.io/HTTPRoute":      {config.HTTPRoute, func() any { return &gatewayv1.HTTPRouteSpec{} }},
	"gateway.networking.k8s.io/GRPCRoute":      {config.GRPCRoute, func() any { return &gatewayv1.GRPCRouteSpec{} }},
	"gateway.networking.k8s.io/TCPRoute":       {config.TCPRoute, func() any { return &gatewayv1alpha2.TCPRouteSpec{} }},
	"gateway.networking.k8s.io/ReferenceGrant": {config.ReferenceGrant, func() any { return &gatewayv1.ReferenceGrantSpec{} }},
	"/Service":                       {config.Service, func() any { return &corev1.Service{} }},
	"/ServiceAccount":                {config.ServiceAccount, func() any { return &corev1.ServiceAccount{} }},
	"/Pod":                           {config.Pod, func() any { return &corev1.Pod{} }},
	"/Namespace":                     {config.Namespace, func() any { return &corev1.Namespace{} }},
	"/ConfigMap":                     {config.ConfigMap, func() any { return &corev1.ConfigMap{} }},
	"/Secret":                        {config.Secret, func() any { return &corev1.Secret{} }},
	"apps/Deployment":                {config.Deployment, func() any { return &appsv1.Deployment{} }},
	"discovery.k8s.io/EndpointSlice": {config.EndpointSlice, func() any { return &discoveryv1.EndpointSlice{} }},
}

// decodeFile decodes every document of a YAML file.
func decodeFile(t *testing.T, path string) []*config.Object {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeYAML(path, data)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func decodeYAML(file string, data []byte) ([]*config.Object, error) {
	var out []*config.Object
	lines := strings.SplitAfter(string(data), "\n")
	start := 0
	flush := func(end int) error {
		doc := strings.Join(lines[start:end], "")
		first := start + 1
		start = end + 1
		if strings.TrimSpace(stripComments(doc)) == "" {
			return nil
		}
		o, err := decodeDoc([]byte(doc))
		if err != nil {
			return fmt.Errorf("%s:%d: %w", file, first, err)
		}
		o.Source = config.Position{File: file, Line: first}
		out = append(out, o)
		return nil
	}
	for i, l := range lines {
		if strings.TrimRight(l, "\r\n") == "---" {
			if err := flush(i); err != nil {
				return nil, err
			}
		}
	}
	if err := flush(len(lines)); err != nil {
		return nil, err
	}
	return out, nil
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func decodeDoc(doc []byte) (*config.Object, error) {
	var head struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Metadata   metav1.ObjectMeta `json:"metadata"`
		Spec       json.RawMessage   `json:"spec"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return nil, err
	}
	group, _, _ := strings.Cut(head.APIVersion, "/")
	if !strings.Contains(head.APIVersion, "/") {
		group = ""
	}
	info, ok := kinds[group+"/"+head.Kind]
	if !ok {
		return nil, fmt.Errorf("unknown kind %s %s", head.APIVersion, head.Kind)
	}
	o := &config.Object{Kind: info.kind, Meta: head.Metadata, Spec: info.newSpec()}
	switch spec := o.Spec.(type) {
	case proto.Message:
		js := head.Spec
		if len(js) == 0 {
			js = []byte("{}")
		}
		// jsonpb, as Istio uses, reads durations as Go durations ("5m",
		// "30ms") where protojson only takes seconds; strict, unlike the
		// shims' own UnmarshalJSON, so unknown fields are refused.
		if err := (&jsonpb.Unmarshaler{}).Unmarshal(bytes.NewReader(js), protoadapt.MessageV1Of(spec)); err != nil {
			return nil, fmt.Errorf("spec: %w", err)
		}
	default:
		target := o.Spec
		if group == "" || group == "apps" || group == "discovery.k8s.io" {
			// Kubernetes kinds keep the whole object.
			if err := yaml.UnmarshalStrict(doc, target); err != nil {
				return nil, err
			}
			break
		}
		js := head.Spec
		if len(js) == 0 {
			js = []byte("{}")
		}
		if err := yaml.UnmarshalStrict(bytes.TrimSpace(js), target); err != nil {
			return nil, fmt.Errorf("spec: %w", err)
		}
	}
	return o, nil
}
