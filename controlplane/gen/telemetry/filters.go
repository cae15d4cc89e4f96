package telemetry

import (
	"fmt"
	"strings"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	fileaccesslogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
)

// Filter names, as Istio's.
const (
	MetadataExchangeFilter = "istio.metadata_exchange"
	StatsFilter            = "istio.stats"
	RouterFilter           = "envoy.filters.http.router"
	HCMFilter              = "envoy.filters.network.http_connection_manager"
	TCPProxyFilter         = "envoy.filters.network.tcp_proxy"
	FileAccessLog          = "envoy.access_loggers.file"
	celAccessLogFilter     = "envoy.access_loggers.extension_filters.cel"
)

// Type URLs inside the TypedStructs of the metadata exchange filters.
const (
	PeerMetadataType     = "type.googleapis.com/io.istio.http.peer_metadata.Config"
	TCPMetadataExchange  = "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange"
	PeerExchangeProtocol = "istio-peer-exchange"
)

func mustAny(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		panic(err)
	}
	return a
}

func mustStruct(v map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(v)
	if err != nil {
		panic(err)
	}
	return s
}

func typedStruct(typeURL string, v map[string]any) *anypb.Any {
	return mustAny(&xdstypev3.TypedStruct{TypeUrl: typeURL, Value: mustStruct(v)})
}

var istioHeaders = map[string]any{"istio_headers": map[string]any{}}

// The HTTP metadata exchange filters: the server side discovers its
// downstream peer, the client side (and gateways) its upstream peer; each
// propagates its own metadata in Istio's headers.
var (
	inboundMX = &hcmv3.HttpFilter{Name: MetadataExchangeFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{
		TypedConfig: typedStruct(PeerMetadataType, map[string]any{
			"downstream_discovery":   []any{istioHeaders, map[string]any{"workload_discovery": map[string]any{}}},
			"downstream_propagation": []any{istioHeaders},
		}),
	}}
	outboundMX = &hcmv3.HttpFilter{Name: MetadataExchangeFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{
		TypedConfig: typedStruct(PeerMetadataType, map[string]any{
			"upstream_discovery":   []any{istioHeaders, map[string]any{"workload_discovery": map[string]any{}}},
			"upstream_propagation": []any{istioHeaders},
		}),
	}}
	// tcpMX runs the exchange on inbound mTLS connections whose client
	// offered ALPN istio-peer-exchange.
	tcpMX = &listenerv3.Filter{Name: MetadataExchangeFilter, ConfigType: &listenerv3.Filter_TypedConfig{
		TypedConfig: typedStruct(TCPMetadataExchange, map[string]any{"protocol": PeerExchangeProtocol}),
	}}
)

// EnvoyTextLogFormat is Istio's default text access log format.
const EnvoyTextLogFormat = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% " +
	"%PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% " +
	"%RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% " +
	"\"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% " +
	"%DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" " +
	"\"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" " +
	"%UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% " +
	"%DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"

// envoyJSONLogFormat is Istio's default JSON access log map.
func envoyJSONLogFormat() *structpb.Struct {
	return mustStruct(map[string]any{
		"start_time":                        "%START_TIME%",
		"route_name":                        "%ROUTE_NAME%",
		"method":                            "%REQ(:METHOD)%",
		"path":                              "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
		"protocol":                          "%PROTOCOL%",
		"response_code":                     "%RESPONSE_CODE%",
		"response_flags":                    "%RESPONSE_FLAGS%",
		"response_code_details":             "%RESPONSE_CODE_DETAILS%",
		"connection_termination_details":    "%CONNECTION_TERMINATION_DETAILS%",
		"bytes_received":                    "%BYTES_RECEIVED%",
		"bytes_sent":                        "%BYTES_SENT%",
		"duration":                          "%DURATION%",
		"upstream_service_time":             "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
		"x_forwarded_for":                   "%REQ(X-FORWARDED-FOR)%",
		"user_agent":                        "%REQ(USER-AGENT)%",
		"request_id":                        "%REQ(X-REQUEST-ID)%",
		"authority":                         "%REQ(:AUTHORITY)%",
		"upstream_host":                     "%UPSTREAM_HOST%",
		"upstream_cluster":                  "%UPSTREAM_CLUSTER_RAW%",
		"upstream_local_address":            "%UPSTREAM_LOCAL_ADDRESS%",
		"downstream_local_address":          "%DOWNSTREAM_LOCAL_ADDRESS%",
		"downstream_remote_address":         "%DOWNSTREAM_REMOTE_ADDRESS%",
		"requested_server_name":             "%REQUESTED_SERVER_NAME%",
		"upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
	})
}

// textFormat ends a format with a newline, as Istio inserts one.
func textFormat(f string) string {
	if f == "" {
		return EnvoyTextLogFormat
	}
	if !strings.HasSuffix(f, "\n") {
		f += "\n"
	}
	return f
}

func fileLog(path string, format *corev3.SubstitutionFormatString) *accesslogv3.AccessLog {
	if path == "" {
		path = "/dev/stdout"
	}
	fl := &fileaccesslogv3.FileAccessLog{Path: path, AccessLogFormat: &fileaccesslogv3.FileAccessLog_LogFormat{LogFormat: format}}
	return &accesslogv3.AccessLog{Name: FileAccessLog, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(fl)}}
}

func textSource(f string, omitEmpty bool) *corev3.SubstitutionFormatString {
	return &corev3.SubstitutionFormatString{
		Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
			Specifier: &corev3.DataSource_InlineString{InlineString: textFormat(f)},
		}},
		OmitEmptyValues: omitEmpty,
	}
}

func jsonSource(s *structpb.Struct, omitEmpty bool) *corev3.SubstitutionFormatString {
	if len(s.GetFields()) == 0 {
		s = envoyJSONLogFormat()
	}
	return &corev3.SubstitutionFormatString{
		Format:          &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: s},
		OmitEmptyValues: omitEmpty,
	}
}

// meshFileAccessLog is the file access log the mesh config's
// accessLogEncoding and accessLogFormat describe. A JSON format that does
// not parse falls back to Istio's default map, with the error.
func meshFileAccessLog(path string, mc *meshv1alpha1.MeshConfig) (*accesslogv3.AccessLog, error) {
	if mc.GetAccessLogEncoding() != meshv1alpha1.MeshConfig_JSON {
		return fileLog(path, textSource(mc.GetAccessLogFormat(), false)), nil
	}
	var err error
	s := envoyJSONLogFormat()
	if f := mc.GetAccessLogFormat(); f != "" {
		parsed := &structpb.Struct{}
		if perr := protojson.Unmarshal([]byte(f), parsed); perr != nil {
			err = fmt.Errorf("mesh config accessLogFormat is not a JSON object of log keys to format strings (%v); using Istio's default JSON format", perr)
		} else {
			s = parsed
		}
	}
	return fileLog(path, jsonSource(s, false)), err
}

// providerFileAccessLog is an envoyFileAccessLog provider's logger.
func providerFileAccessLog(f *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyFileAccessLogProvider) *accesslogv3.AccessLog {
	omit := f.GetOmitEmptyValues()
	if labels := f.GetLogFormat().GetLabels(); labels != nil {
		return fileLog(f.GetPath(), jsonSource(labels, omit))
	}
	return fileLog(f.GetPath(), textSource(f.GetLogFormat().GetText(), omit))
}

// celFilter logs only what the Telemetry filter expression accepts.
func celFilter(expr string) *accesslogv3.AccessLogFilter {
	return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ExtensionFilter{
		ExtensionFilter: &accesslogv3.ExtensionFilter{
			Name:       celAccessLogFilter,
			ConfigType: &accesslogv3.ExtensionFilter_TypedConfig{TypedConfig: mustAny(&celv3.ExpressionFilter{Expression: expr})},
		},
	}}
}
