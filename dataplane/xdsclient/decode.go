package xdsclient

import (
	"fmt"
	"strings"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	// Register every message the data plane understands, for UnmarshalNew.
	_ "github.com/skiff-mesh/skiff/dataplane/xdstypes"
)

const resourceWrapperURL = "type.googleapis.com/envoy.service.discovery.v3.Resource"

// decodeSotw turns a state-of-the-world response into an Update. Any
// resource that does not decode or validate fails the whole response, which
// is then NACKed, as Envoy does.
func decodeSotw(typeURL string, resp *discoveryv3.DiscoveryResponse) (*Update, error) {
	u := &Update{Full: true, Version: resp.GetVersionInfo(), Resources: make([]Resource, 0, len(resp.GetResources()))}
	seen := make(map[string]struct{}, len(resp.GetResources()))
	for i, a := range resp.GetResources() {
		name, version := "", resp.GetVersionInfo()
		if a.GetTypeUrl() == resourceWrapperURL {
			var w discoveryv3.Resource
			if err := a.UnmarshalTo(&w); err != nil {
				return nil, fmt.Errorf("%s: %w", where(typeURL, i, ""), err)
			}
			name = w.GetName()
			if w.GetVersion() != "" {
				version = w.GetVersion()
			}
			if w.GetResource() == nil {
				return nil, fmt.Errorf("%s: wrapped Resource has no resource", where(typeURL, i, name))
			}
			a = w.GetResource()
		}
		msg, err := unpack(typeURL, a)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where(typeURL, i, name), err)
		}
		if name == "" {
			name = resourceName(msg)
		}
		if name == "" {
			return nil, fmt.Errorf("%s: resource has no name", where(typeURL, i, ""))
		}
		if err := validate(msg); err != nil {
			return nil, fmt.Errorf("%s: %w", where(typeURL, i, name), err)
		}
		if _, dup := seen[name]; dup {
			return nil, fmt.Errorf("%s: duplicate resource name in one response", where(typeURL, i, name))
		}
		seen[name] = struct{}{}
		u.Resources = append(u.Resources, Resource{Name: name, Version: version, Message: msg})
	}
	return u, nil
}

// decodeDelta turns a delta response into an Update.
func decodeDelta(typeURL string, resp *discoveryv3.DeltaDiscoveryResponse) (*Update, error) {
	u := &Update{
		Version:   resp.GetSystemVersionInfo(),
		Resources: make([]Resource, 0, len(resp.GetResources())),
		Removed:   resp.GetRemovedResources(),
	}
	seen := make(map[string]struct{}, len(resp.GetResources()))
	for i, r := range resp.GetResources() {
		name := r.GetName()
		if r.GetResource() == nil {
			return nil, fmt.Errorf("%s: resource has no body", where(typeURL, i, name))
		}
		msg, err := unpack(typeURL, r.GetResource())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where(typeURL, i, name), err)
		}
		if name == "" {
			name = resourceName(msg)
		}
		if name == "" {
			return nil, fmt.Errorf("%s: resource has no name", where(typeURL, i, ""))
		}
		if err := validate(msg); err != nil {
			return nil, fmt.Errorf("%s: %w", where(typeURL, i, name), err)
		}
		if _, dup := seen[name]; dup {
			return nil, fmt.Errorf("%s: duplicate resource name in one response", where(typeURL, i, name))
		}
		seen[name] = struct{}{}
		u.Resources = append(u.Resources, Resource{Name: name, Version: r.GetVersion(), Message: msg})
	}
	return u, nil
}

// unpack turns a into its registered message type.
func unpack(typeURL string, a *anypb.Any) (proto.Message, error) {
	if a.GetTypeUrl() != typeURL {
		return nil, fmt.Errorf("type is %q, want %q", a.GetTypeUrl(), typeURL)
	}
	msg, err := a.UnmarshalNew()
	if err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	return msg, nil
}

// validate runs the proto's own rules (protoc-gen-validate), as Envoy does
// on ingest, so a resource the handler sees is at least well-formed.
func validate(msg proto.Message) error {
	if v, ok := msg.(interface{ ValidateAll() error }); ok {
		return v.ValidateAll()
	}
	return nil
}

// resourceName is the name by which xDS addresses msg: name for most
// types, cluster_name for ClusterLoadAssignment.
func resourceName(msg proto.Message) string {
	if m, ok := msg.(interface{ GetName() string }); ok {
		return m.GetName()
	}
	if m, ok := msg.(interface{ GetClusterName() string }); ok {
		return m.GetClusterName()
	}
	return ""
}

// where names a resource in an error: `Cluster "outbound|80||a"`, or by
// index when its name is not known yet.
func where(typeURL string, i int, name string) string {
	short := typeURL[strings.LastIndexByte(typeURL, '.')+1:]
	if name != "" {
		return fmt.Sprintf("%s %q", short, name)
	}
	return fmt.Sprintf("%s resources[%d]", short, i)
}
