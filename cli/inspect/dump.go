package inspect

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	// Every resource and filter config the proxy understands, so that a
	// dump's typed_config fields decode.
	_ "github.com/skiff-mesh/skiff/dataplane/xdstypes"
)

// resource is one xDS resource out of a config dump.
type resource struct {
	name string
	// state is ACTIVE, WARMING or DRAINING, as the dump files it.
	state       string
	static      bool
	msg         proto.Message
	lastUpdated time.Time
}

// configDump is a /config_dump with its resources unpacked: static ones
// first, then dynamic ones, each in the dump's order. Endpoints come from
// /clusters instead, which also carries their health.
type configDump struct {
	clusters, listeners, routes, secrets []resource
	// endpoints are there only when the dump was asked with include_eds.
	endpoints []resource
}

// lenient resolves the type of every Any in a dump. A type this binary
// does not link (a filter added to skiffd after this CLI was built) becomes
// an empty message, its fields dropped, rather than failing the whole dump.
var lenient = &lenientResolver{made: map[protoreflect.FullName]protoreflect.MessageType{}}

type lenientResolver struct {
	mu   sync.Mutex
	made map[protoreflect.FullName]protoreflect.MessageType
}

func (r *lenientResolver) FindMessageByName(name protoreflect.FullName) (protoreflect.MessageType, error) {
	if mt, err := protoregistry.GlobalTypes.FindMessageByName(name); err == nil {
		return mt, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if mt, ok := r.made[name]; ok {
		return mt, nil
	}
	pkg, short := "", string(name)
	if i := strings.LastIndexByte(short, '.'); i >= 0 {
		pkg, short = short[:i], short[i+1:]
	}
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name:        proto.String("skiff-inspect-unknown/" + string(name) + ".proto"),
		Package:     proto.String(pkg),
		MessageType: []*descriptorpb.DescriptorProto{{Name: proto.String(short)}},
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("type %s: %w", name, err)
	}
	mt := dynamicpb.NewMessageType(fd.Messages().Get(0))
	r.made[name] = mt
	return mt, nil
}

func (r *lenientResolver) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	name := url
	if i := strings.LastIndexByte(url, '/'); i >= 0 {
		name = url[i+1:]
	}
	return r.FindMessageByName(protoreflect.FullName(name))
}

func (r *lenientResolver) FindExtensionByName(field protoreflect.FullName) (protoreflect.ExtensionType, error) {
	return protoregistry.GlobalTypes.FindExtensionByName(field)
}

func (r *lenientResolver) FindExtensionByNumber(message protoreflect.FullName, field protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	return protoregistry.GlobalTypes.FindExtensionByNumber(message, field)
}

var jsonIn = protojson.UnmarshalOptions{DiscardUnknown: true, Resolver: lenient}

// parseConfigDump decodes Envoy's /config_dump JSON (either field naming).
func parseConfigDump(b []byte, source string) (*configDump, error) {
	var cd adminv3.ConfigDump
	if err := jsonIn.Unmarshal(b, &cd); err != nil {
		return nil, fmt.Errorf("config dump from %s: %w", source, err)
	}
	d := &configDump{}
	for _, a := range cd.GetConfigs() {
		sec, err := anypb.UnmarshalNew(a, proto.UnmarshalOptions{Resolver: lenient, DiscardUnknown: true})
		if err != nil {
			return nil, fmt.Errorf("config dump from %s: section %s: %w", source, a.GetTypeUrl(), err)
		}
		if err := d.add(sec); err != nil {
			return nil, fmt.Errorf("config dump from %s: %w", source, err)
		}
	}
	return d, nil
}

// unpacker collects resources of one kind, keeping the first error.
type unpacker struct {
	kind string
	out  *[]resource
	err  error
}

func (u *unpacker) add(a *anypb.Any, state string, static bool, updated time.Time, name string) {
	if a == nil || u.err != nil {
		return
	}
	m, err := anypb.UnmarshalNew(a, proto.UnmarshalOptions{Resolver: lenient, DiscardUnknown: true})
	if err != nil {
		u.err = fmt.Errorf("%s %q: %w", u.kind, name, err)
		return
	}
	if name == "" {
		if n, ok := m.(interface{ GetName() string }); ok {
			name = n.GetName()
		}
	}
	*u.out = append(*u.out, resource{name: name, state: state, static: static, msg: m, lastUpdated: updated})
}

// updatedAt is a dump's last_updated, zero when absent.
func updatedAt(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

func (d *configDump) add(sec proto.Message) error {
	switch s := sec.(type) {
	case *adminv3.ClustersConfigDump:
		u := &unpacker{kind: "cluster", out: &d.clusters}
		for _, c := range s.GetStaticClusters() {
			u.add(c.GetCluster(), "ACTIVE", true, updatedAt(c.GetLastUpdated()), "")
		}
		for _, c := range s.GetDynamicActiveClusters() {
			u.add(c.GetCluster(), "ACTIVE", false, updatedAt(c.GetLastUpdated()), "")
		}
		for _, c := range s.GetDynamicWarmingClusters() {
			u.add(c.GetCluster(), "WARMING", false, updatedAt(c.GetLastUpdated()), "")
		}
		return u.err
	case *adminv3.ListenersConfigDump:
		u := &unpacker{kind: "listener", out: &d.listeners}
		for _, l := range s.GetStaticListeners() {
			u.add(l.GetListener(), "ACTIVE", true, updatedAt(l.GetLastUpdated()), "")
		}
		for _, l := range s.GetDynamicListeners() {
			if st := l.GetActiveState(); st != nil {
				u.add(st.GetListener(), "ACTIVE", false, updatedAt(st.GetLastUpdated()), l.GetName())
			}
			if st := l.GetWarmingState(); st != nil {
				u.add(st.GetListener(), "WARMING", false, updatedAt(st.GetLastUpdated()), l.GetName())
			}
			if st := l.GetDrainingState(); st != nil {
				u.add(st.GetListener(), "DRAINING", false, updatedAt(st.GetLastUpdated()), l.GetName())
			}
		}
		return u.err
	case *adminv3.RoutesConfigDump:
		u := &unpacker{kind: "route_config", out: &d.routes}
		for _, r := range s.GetStaticRouteConfigs() {
			u.add(r.GetRouteConfig(), "ACTIVE", true, updatedAt(r.GetLastUpdated()), "")
		}
		for _, r := range s.GetDynamicRouteConfigs() {
			u.add(r.GetRouteConfig(), "ACTIVE", false, updatedAt(r.GetLastUpdated()), "")
		}
		return u.err
	case *adminv3.EndpointsConfigDump:
		u := &unpacker{kind: "cluster_load_assignment", out: &d.endpoints}
		for _, e := range s.GetStaticEndpointConfigs() {
			u.add(e.GetEndpointConfig(), "ACTIVE", true, updatedAt(e.GetLastUpdated()), "")
		}
		for _, e := range s.GetDynamicEndpointConfigs() {
			u.add(e.GetEndpointConfig(), "ACTIVE", false, updatedAt(e.GetLastUpdated()), "")
		}
		return u.err
	case *adminv3.SecretsConfigDump:
		u := &unpacker{kind: "secret", out: &d.secrets}
		for _, x := range s.GetStaticSecrets() {
			u.add(x.GetSecret(), "ACTIVE", true, updatedAt(x.GetLastUpdated()), x.GetName())
			u.addEmpty(x.GetSecret(), x.GetName(), "ACTIVE")
		}
		for _, x := range s.GetDynamicActiveSecrets() {
			u.add(x.GetSecret(), "ACTIVE", false, updatedAt(x.GetLastUpdated()), x.GetName())
			u.addEmpty(x.GetSecret(), x.GetName(), "ACTIVE")
		}
		for _, x := range s.GetDynamicWarmingSecrets() {
			u.add(x.GetSecret(), "WARMING", false, updatedAt(x.GetLastUpdated()), x.GetName())
			u.addEmpty(x.GetSecret(), x.GetName(), "WARMING")
		}
		return u.err
	}
	return nil
}

// addEmpty lists a secret the proxy waits for but holds no content of yet
// (a warming SDS secret), so the table still shows it.
func (u *unpacker) addEmpty(a *anypb.Any, name, state string) {
	if a == nil {
		*u.out = append(*u.out, resource{name: name, state: state})
	}
}

// writeMessages prints msgs as istioctl does: a JSON array indented by four
// spaces, or that array as YAML.
func writeMessages(w io.Writer, msgs []proto.Message, format string) error {
	items := make([]json.RawMessage, 0, len(msgs))
	for _, m := range msgs {
		b, err := protojson.MarshalOptions{Resolver: lenient}.Marshal(m)
		if err != nil {
			return err
		}
		items = append(items, b)
	}
	return writeValue(w, items, format)
}

// writeValue prints v as indented JSON or as YAML.
func writeValue(w io.Writer, v any, format string) error {
	b, err := json.MarshalIndent(v, "", "    ")
	if err != nil {
		return err
	}
	if format == "yaml" {
		if b, err = yaml.JSONToYAML(b); err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
