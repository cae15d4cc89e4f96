package telemetry

import (
	"maps"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tracingtypev3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	telemetryv1 "istio.io/api/telemetry/v1alpha1"
)

// blackHoleCluster's chains drop connections: nothing to report.
const blackHoleCluster = "BlackHoleCluster"

// decorator edits one proxy's listeners.
type decorator struct {
	r       *resolved
	gateway bool
	id      identity
	tracing [3]*hcmv3.HttpConnectionManager_Tracing // built on first use, per class
}

func (d *decorator) classOf(l *listenerv3.Listener) class {
	switch {
	case d.gateway:
		return gateway
	case l.GetTrafficDirection() == corev3.TrafficDirection_INBOUND:
		return inbound
	}
	return outbound
}

func (d *decorator) listener(l *listenerv3.Listener) {
	c := d.classOf(l)
	chains := l.GetFilterChains()
	if l.GetDefaultFilterChain() != nil {
		chains = append(chains[:len(chains):len(chains)], l.GetDefaultFilterChain())
	}
	for _, fc := range chains {
		d.chain(fc, c)
	}
}

func (d *decorator) chain(fc *listenerv3.FilterChain, c class) {
	cc := &d.r.classes[c]
	// A new slice: the built one may share its array with another chain.
	out := make([]*listenerv3.Filter, 0, len(fc.Filters)+2)
	for _, f := range fc.Filters {
		switch f.GetName() {
		case HCMFilter:
			f = d.hcm(f, c)
		case TCPProxyFilter:
			tp := &tcpv3.TcpProxy{}
			if !unmarshal(f, tp) || tp.GetCluster() == blackHoleCluster {
				break
			}
			// Inbound chains that terminate mesh mTLS run the exchange
			// before the policy filters; only those have a transport socket.
			if c == inbound && fc.GetTransportSocket() != nil {
				out = append([]*listenerv3.Filter{tcpMX}, out...)
			}
			if cc.statsTCP != nil {
				out = append(out, cc.statsTCP)
			}
			if len(cc.accessLogs) > 0 {
				tp.AccessLog = cc.accessLogs
				f = &listenerv3.Filter{Name: f.Name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(tp)}}
			}
		}
		out = append(out, f)
	}
	fc.Filters = out
}

var unmarshalOpts = proto.UnmarshalOptions{}

func unmarshal(f *listenerv3.Filter, m proto.Message) bool {
	tc := f.GetTypedConfig()
	return tc != nil && anypb.UnmarshalTo(tc, m, unmarshalOpts) == nil
}

// hcm returns an HTTP connection manager with the class's metadata
// exchange and stats filters, tracing and access logs. Many proxies'
// listeners hold equal ones (every sidecar's catch-all and same-port
// inbound chains), so results are kept per scope and input bytes.
func (d *decorator) hcm(f *listenerv3.Filter, c class) *listenerv3.Filter {
	tc := f.GetTypedConfig()
	if tc == nil {
		return f
	}
	var prefix string
	if d.r.classes[c].tracing != nil {
		prefix = d.id.key() + "\x00" // tracing names the proxy
	}
	return d.r.memo(c, prefix, tc.GetValue(), func() *listenerv3.Filter { return d.buildHCM(f, c) })
}

func (d *decorator) buildHCM(f *listenerv3.Filter, c class) *listenerv3.Filter {
	h := &hcmv3.HttpConnectionManager{}
	if !unmarshal(f, h) {
		return f
	}
	cc := &d.r.classes[c]
	mx := outboundMX
	if c == inbound {
		mx = inboundMX
	}
	filters := make([]*hcmv3.HttpFilter, 0, len(h.HttpFilters)+2)
	filters = append(filters, mx)
	for _, hf := range h.HttpFilters {
		if hf.GetName() == RouterFilter && cc.statsHTTP != nil {
			filters = append(filters, cc.statsHTTP)
		}
		filters = append(filters, hf)
	}
	h.HttpFilters = filters
	if len(cc.accessLogs) > 0 {
		h.AccessLog = cc.accessLogs
	}
	if cc.tracing != nil {
		if d.tracing[c] == nil {
			d.tracing[c] = buildTracing(cc.tracing, d.id)
		}
		h.Tracing = d.tracing[c]
	}
	return &listenerv3.Filter{Name: f.Name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(h)}}
}

// buildTracing is the HCM tracing of a spec for one proxy: the collector
// (spans name the proxy as "<canonical service>.<namespace>"), sampling,
// Istio's tags and the Telemetry's custom tags.
func buildTracing(s *tracingSpec, id identity) *hcmv3.HttpConnectionManager_Tracing {
	t := &hcmv3.HttpConnectionManager_Tracing{
		ClientSampling:  &typev3.Percent{Value: 100},
		OverallSampling: &typev3.Percent{Value: 100},
		RandomSampling:  &typev3.Percent{Value: s.sampling},
	}
	if s.maxPathTagLength != 0 {
		t.MaxPathTagLength = wrapperspb.UInt32(s.maxPathTagLength)
	}
	switch prov := s.provider.GetProvider().(type) {
	case *meshv1alpha1.MeshConfig_ExtensionProvider_Zipkin:
		path := prov.Zipkin.GetPath()
		if path == "" {
			path = "/api/v2/spans"
		}
		t.Provider = &tracev3.Tracing_Http{Name: "envoy.tracers.zipkin", ConfigType: &tracev3.Tracing_Http_TypedConfig{
			TypedConfig: mustAny(&tracev3.ZipkinConfig{
				CollectorCluster:         s.cluster,
				CollectorEndpoint:        path,
				CollectorHostname:        s.hostname,
				CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_JSON,
				TraceId_128Bit:           !prov.Zipkin.GetEnable_64BitTraceId(),
				SharedSpanContext:        wrapperspb.Bool(false),
			}),
		}}
	case *meshv1alpha1.MeshConfig_ExtensionProvider_Opentelemetry:
		oc := &tracev3.OpenTelemetryConfig{ServiceName: id.service + "." + id.namespace}
		if h := prov.Opentelemetry.GetHttp(); h != nil {
			timeout := h.GetTimeout()
			if timeout == nil {
				timeout = durationpb.New(5e9)
			}
			oc.HttpService = &corev3.HttpService{HttpUri: &corev3.HttpUri{
				Uri:              s.hostname + "/" + strings.TrimPrefix(h.GetPath(), "/"),
				HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: s.cluster},
				Timeout:          timeout,
			}}
			for _, hd := range h.GetHeaders() {
				oc.HttpService.RequestHeadersToAdd = append(oc.HttpService.RequestHeadersToAdd, &corev3.HeaderValueOption{
					Header:       &corev3.HeaderValue{Key: hd.GetName(), Value: hd.GetValue()},
					AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
				})
			}
		} else {
			oc.GrpcService = &corev3.GrpcService{
				TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: s.cluster, Authority: s.hostname}},
				Timeout:         prov.Opentelemetry.GetGrpc().GetTimeout(),
			}
		}
		t.Provider = &tracev3.Tracing_Http{Name: "envoy.tracers.opentelemetry", ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(oc)}}
	}
	var tags []*tracingtypev3.CustomTag
	if s.istioTags {
		for _, kv := range [][2]string{
			{"istio.canonical_revision", id.revision}, {"istio.canonical_service", id.service},
			{"istio.cluster_id", id.clusterID}, {"istio.mesh_id", id.meshID}, {"istio.namespace", id.namespace},
		} {
			tags = append(tags, literalTag(kv[0], kv[1]))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(s.customTags)) {
		if tag := customTag(name, s.customTags[name]); tag != nil {
			tags = append(tags, tag)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(s.legacyTags)) {
		if tag := legacyTag(name, s.legacyTags[name]); tag != nil {
			tags = append(tags, tag)
		}
	}
	slices.SortStableFunc(tags, func(a, b *tracingtypev3.CustomTag) int { return strings.Compare(a.Tag, b.Tag) })
	t.CustomTags = tags
	return t
}

func literalTag(name, value string) *tracingtypev3.CustomTag {
	return &tracingtypev3.CustomTag{Tag: name, Type: &tracingtypev3.CustomTag_Literal_{Literal: &tracingtypev3.CustomTag_Literal{Value: value}}}
}

func customTag(name string, t *telemetryv1.Tracing_CustomTag) *tracingtypev3.CustomTag {
	switch v := t.GetType().(type) {
	case *telemetryv1.Tracing_CustomTag_Literal:
		return literalTag(name, v.Literal.GetValue())
	case *telemetryv1.Tracing_CustomTag_Environment:
		return &tracingtypev3.CustomTag{Tag: name, Type: &tracingtypev3.CustomTag_Environment_{Environment: &tracingtypev3.CustomTag_Environment{
			Name: v.Environment.GetName(), DefaultValue: v.Environment.GetDefaultValue(),
		}}}
	case *telemetryv1.Tracing_CustomTag_Header:
		return &tracingtypev3.CustomTag{Tag: name, Type: &tracingtypev3.CustomTag_RequestHeader{RequestHeader: &tracingtypev3.CustomTag_Header{
			Name: v.Header.GetName(), DefaultValue: v.Header.GetDefaultValue(),
		}}}
	case *telemetryv1.Tracing_CustomTag_Formatter:
		return &tracingtypev3.CustomTag{Tag: name, Type: &tracingtypev3.CustomTag_Value{Value: v.Formatter.GetValue()}}
	}
	return nil
}

func legacyTag(name string, t *meshv1alpha1.Tracing_CustomTag) *tracingtypev3.CustomTag {
	switch v := t.GetType().(type) {
	case *meshv1alpha1.Tracing_CustomTag_Literal:
		return literalTag(name, v.Literal.GetValue())
	case *meshv1alpha1.Tracing_CustomTag_Environment:
		return &tracingtypev3.CustomTag{Tag: name, Type: &tracingtypev3.CustomTag_Environment_{Environment: &tracingtypev3.CustomTag_Environment{
			Name: v.Environment.GetName(), DefaultValue: v.Environment.GetDefaultValue(),
		}}}
	case *meshv1alpha1.Tracing_CustomTag_Header:
		return &tracingtypev3.CustomTag{Tag: name, Type: &tracingtypev3.CustomTag_RequestHeader{RequestHeader: &tracingtypev3.CustomTag_Header{
			Name: v.Header.GetName(), DefaultValue: v.Header.GetDefaultValue(),
		}}}
	}
	return nil
}
