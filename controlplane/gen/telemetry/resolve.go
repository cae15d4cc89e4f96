package telemetry

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"istio.io/api/envoy/extensions/stats"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	telemetryv1 "istio.io/api/telemetry/v1alpha1"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/gen/index"
)

// class is Istio's listener class: what a listener's telemetry reports as.
type class int

const (
	inbound  class = iota // sidecar inbound: the server side
	outbound              // sidecar outbound: the client side
	gateway               // gateway listeners: the client side, host header kept
)

func (c class) mode() telemetryv1.WorkloadMode {
	if c == inbound {
		return telemetryv1.WorkloadMode_SERVER
	}
	return telemetryv1.WorkloadMode_CLIENT
}

// resolved is the merged effect of one scope of Telemetry objects.
type resolved struct {
	key      string
	classes  [3]classConfig
	warnings []string

	mu    sync.Mutex
	memos [3]map[string]*listenerv3.Filter // decorated HCMs by class, identity and input bytes
}

// memoLimit bounds each class's memo; past it, results are built anew.
const memoLimit = 4096

// memo returns build()'s result for (class, prefix, input), computed
// once while the memo has room.
func (r *resolved) memo(c class, prefix string, in []byte, build func() *listenerv3.Filter) *listenerv3.Filter {
	r.mu.Lock()
	m := r.memos[c]
	var f *listenerv3.Filter
	if prefix == "" {
		f = m[string(in)]
	} else {
		f = m[prefix+string(in)]
	}
	r.mu.Unlock()
	if f != nil {
		return f
	}
	f = build()
	r.mu.Lock()
	if r.memos[c] == nil {
		r.memos[c] = map[string]*listenerv3.Filter{}
	}
	if len(r.memos[c]) < memoLimit {
		r.memos[c][prefix+string(in)] = f
	}
	r.mu.Unlock()
	return f
}

// classConfig is what one listener class gets.
type classConfig struct {
	statsHTTP  *hcmv3.HttpFilter  // nil: no metrics
	statsTCP   *listenerv3.Filter // nil: no metrics
	accessLogs []*accesslogv3.AccessLog
	tracing    *tracingSpec // nil: no tracing
}

func (r *resolved) tracingOn() bool {
	for _, c := range r.classes {
		if c.tracing != nil {
			return true
		}
	}
	return false
}

func (r *resolved) warnf(format string, args ...any) {
	w := fmt.Sprintf(format, args...)
	if !slices.Contains(r.warnings, w) {
		r.warnings = append(r.warnings, w)
	}
}

// level is one applicable Telemetry object, root first.
type level struct {
	obj  *config.Object
	spec *telemetryv1.Telemetry
}

func (s scope) levels() []level {
	var out []level
	for _, o := range []*config.Object{s.root, s.namespace, s.workload} {
		if o != nil {
			out = append(out, level{o, o.Spec.(*telemetryv1.Telemetry)})
		}
	}
	return out
}

func (g *Generator) build(isGateway bool, s scope, ix *index.Index) *resolved {
	r := &resolved{}
	lv := s.levels()
	classes := []class{inbound, outbound}
	if isGateway {
		classes = []class{gateway}
	}
	metrics := g.mergeMetrics(r, lv)
	for _, c := range classes {
		cc := &r.classes[c]
		if cfg := g.statsConfig(r, metrics, c); cfg != nil {
			cc.statsHTTP = &hcmv3.HttpFilter{Name: StatsFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(cfg)}}
			cc.statsTCP = &listenerv3.Filter{Name: StatsFilter, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(cfg)}}
		}
		cc.accessLogs = g.accessLogs(r, lv, c)
		cc.tracing = g.tracing(r, lv, c, ix)
	}
	return r
}

// Metrics.

// promNames are the Prometheus names (without "istio_") skiff-proxy
// records, by Istio metric; the gRPC message counts are not recorded.
var promNames = map[telemetryv1.MetricSelector_IstioMetric]string{
	telemetryv1.MetricSelector_REQUEST_COUNT:          "requests_total",
	telemetryv1.MetricSelector_REQUEST_DURATION:       "request_duration_milliseconds",
	telemetryv1.MetricSelector_REQUEST_SIZE:           "request_bytes",
	telemetryv1.MetricSelector_RESPONSE_SIZE:          "response_bytes",
	telemetryv1.MetricSelector_TCP_OPENED_CONNECTIONS: "tcp_connections_opened_total",
	telemetryv1.MetricSelector_TCP_CLOSED_CONNECTIONS: "tcp_connections_closed_total",
	telemetryv1.MetricSelector_TCP_SENT_BYTES:         "tcp_sent_bytes_total",
	telemetryv1.MetricSelector_TCP_RECEIVED_BYTES:     "tcp_received_bytes_total",
}

var allMetrics = slices.Sorted(maps.Values(promNames))

// metricOverride is the merged override of one metric in one mode.
type metricOverride struct {
	disabled *wrapperspb.BoolValue
	tags     map[string]*telemetryv1.MetricsOverrides_TagOverride
}

// mergedMetrics maps provider → mode → metric → override; a provider
// absent has metrics off.
type mergedMetrics map[string]map[telemetryv1.WorkloadMode]map[string]*metricOverride

// mergeMetrics merges the levels' metrics as Istio does: providers given
// at a level replace the parent's (absent ones inherit), overrides apply
// in order, disabling ALL_METRICS drops the provider until a lower level
// overrides again.
func (g *Generator) mergeMetrics(r *resolved, lv []level) mergedMetrics {
	defaults := g.mesh.GetDefaultProviders().GetMetrics()
	out := mergedMetrics{}
	var ms []*telemetryv1.Metrics
	for _, l := range lv {
		ms = append(ms, l.spec.GetMetrics()...)
	}
	if len(ms) == 0 {
		for _, p := range defaults {
			out[p] = map[telemetryv1.WorkloadMode]map[string]*metricOverride{}
		}
		return out
	}
	inScope := defaults
	for _, m := range ms {
		if names := providerNames(m.GetProviders()); len(names) > 0 {
			inScope = names
		}
	}
	parent := defaults
	disabledAll := map[string]bool{}
	for _, m := range ms {
		names := providerNames(m.GetProviders())
		if len(names) == 0 {
			names = parent
		}
		parent = names
		for _, p := range names {
			if !slices.Contains(inScope, p) {
				continue // a lower level chose other providers
			}
			if out[p] == nil {
				out[p] = map[telemetryv1.WorkloadMode]map[string]*metricOverride{}
			}
			for _, o := range m.GetOverrides() {
				if isAllMetrics(o.GetMatch()) && o.GetDisabled().GetValue() {
					disabledAll[p] = true
					continue
				}
				delete(disabledAll, p)
				for _, mode := range modes(o.GetMatch().GetMode()) {
					if out[p][mode] == nil {
						out[p][mode] = map[string]*metricOverride{}
					}
					for _, name := range g.metricNames(r, o.GetMatch()) {
						mo := out[p][mode][name]
						if mo == nil {
							mo = &metricOverride{}
							out[p][mode][name] = mo
						}
						if o.GetDisabled() != nil {
							mo.disabled = o.GetDisabled()
						}
						for k, v := range o.GetTagOverrides() {
							if mo.tags == nil {
								mo.tags = map[string]*telemetryv1.MetricsOverrides_TagOverride{}
							}
							mo.tags[k] = v
						}
					}
				}
			}
		}
	}
	for p := range disabledAll {
		delete(out, p)
	}
	return out
}

func isAllMetrics(m *telemetryv1.MetricSelector) bool {
	sel, ok := m.GetMetricMatch().(*telemetryv1.MetricSelector_Metric)
	return ok && sel.Metric == telemetryv1.MetricSelector_ALL_METRICS
}

// metricNames are the Prometheus names an override's match selects; no
// match (or ALL_METRICS) is every metric.
func (g *Generator) metricNames(r *resolved, m *telemetryv1.MetricSelector) []string {
	switch sel := m.GetMetricMatch().(type) {
	case *telemetryv1.MetricSelector_Metric:
		if sel.Metric == telemetryv1.MetricSelector_ALL_METRICS {
			return allMetrics
		}
		if n, ok := promNames[sel.Metric]; ok {
			return []string{n}
		}
		r.warnf("metric %s is not recorded by skiff-proxy; its override is ignored", sel.Metric)
		return nil
	case *telemetryv1.MetricSelector_CustomMetric:
		r.warnf("custom metric %q has no definition in skiff-proxy; its override is ignored", sel.CustomMetric)
		return nil
	}
	return allMetrics
}

func modes(m telemetryv1.WorkloadMode) []telemetryv1.WorkloadMode {
	if m == telemetryv1.WorkloadMode_CLIENT || m == telemetryv1.WorkloadMode_SERVER {
		return []telemetryv1.WorkloadMode{m}
	}
	return []telemetryv1.WorkloadMode{telemetryv1.WorkloadMode_CLIENT, telemetryv1.WorkloadMode_SERVER}
}

func providerNames(ps []*telemetryv1.ProviderRef) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.GetName())
	}
	return out
}

// statsConfig is the istio.stats configuration of a class, nil when no
// Prometheus provider is in force.
func (g *Generator) statsConfig(r *resolved, m mergedMetrics, c class) *stats.PluginConfig {
	for _, name := range slices.Sorted(maps.Keys(m)) {
		p := g.provider(name)
		if p == nil {
			r.warnf("metrics provider %q is not among the mesh config's extensionProviders; add it there or name another", name)
			continue
		}
		if p.GetPrometheus() == nil {
			if p.GetStackdriver() == nil {
				r.warnf("provider %q is not a metrics provider (prometheus); metrics through it are off", name)
			}
			continue
		}
		cfg := &stats.PluginConfig{DisableHostHeaderFallback: c == inbound || c == gateway}
		overrides := m[name][c.mode()]
		for _, metric := range slices.Sorted(maps.Keys(overrides)) {
			o := overrides[metric]
			mc := &stats.MetricConfig{Name: metric, Drop: o.disabled.GetValue()}
			for _, tag := range slices.Sorted(maps.Keys(o.tags)) {
				t := o.tags[tag]
				if t.GetOperation() == telemetryv1.MetricsOverrides_TagOverride_REMOVE {
					mc.TagsToRemove = append(mc.TagsToRemove, tag)
					continue
				}
				if mc.Dimensions == nil {
					mc.Dimensions = map[string]string{}
				}
				mc.Dimensions[tag] = t.GetValue()
			}
			cfg.Metrics = append(cfg.Metrics, mc)
		}
		return cfg
	}
	return nil
}

// Access logs.

// accessLogs are a class's access loggers: from the Telemetry API and
// default providers when either is configured, else the mesh config's
// accessLogFile.
func (g *Generator) accessLogs(r *resolved, lv []level, c class) []*accesslogv3.AccessLog {
	defaults := g.mesh.GetDefaultProviders().GetAccessLogging()
	var logs [][]*telemetryv1.AccessLogging // per level that has any
	for _, l := range lv {
		if al := l.spec.GetAccessLogging(); len(al) > 0 {
			logs = append(logs, al)
		}
	}
	if len(logs) == 0 && len(defaults) == 0 {
		if f := g.mesh.GetAccessLogFile(); f != "" {
			al, err := meshFileAccessLog(f, g.mesh)
			if err != nil {
				r.warnf("%v", err)
			}
			return []*accesslogv3.AccessLog{al}
		}
		return nil
	}
	providers := mergeLogs(logs, defaults, c.mode())
	var out []*accesslogv3.AccessLog
	for _, name := range slices.Sorted(maps.Keys(providers)) {
		p := g.provider(name)
		if p == nil {
			r.warnf("access log provider %q is not among the mesh config's extensionProviders; add it there or name another", name)
			continue
		}
		var al *accesslogv3.AccessLog
		switch prov := p.GetProvider().(type) {
		case *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyFileAccessLog:
			f := prov.EnvoyFileAccessLog
			if p.GetName() == "envoy" && f.GetLogFormat() == nil && !f.GetOmitEmptyValues() {
				// The built-in provider formats as the mesh config says.
				var err error
				if al, err = meshFileAccessLog(f.GetPath(), g.mesh); err != nil {
					r.warnf("%v", err)
				}
			} else {
				al = providerFileAccessLog(f)
			}
		case *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyHttpAls, *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyTcpAls,
			*meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyOtelAls:
			r.warnf("access log provider %q: skiff-proxy writes file access logs only (envoyFileAccessLog)", name)
			continue
		default:
			continue // no access logs from this kind of provider, as in Istio
		}
		if f := providers[name]; f != nil && f.GetExpression() != "" {
			al.Filter = celFilter(f.GetExpression())
		}
		out = append(out, al)
	}
	return out
}

// mergeLogs returns the access log providers in force for a mode, each
// with its filter, as Istio merges them.
func mergeLogs(logs [][]*telemetryv1.AccessLogging, defaults []string, mode telemetryv1.WorkloadMode) map[string]*telemetryv1.AccessLogging_Filter {
	out := map[string]*telemetryv1.AccessLogging_Filter{}
	if len(logs) == 0 {
		for _, p := range defaults {
			out[p] = nil
		}
		return out
	}
	inScope := defaults
	filters := map[string]*telemetryv1.AccessLogging_Filter{}
	for _, level := range logs {
		var names []string
		for _, a := range level {
			sub := providerNames(a.GetProviders())
			names = append(names, sub...)
			for _, p := range sub {
				filters[p] = a.GetFilter()
			}
		}
		if len(names) > 0 {
			inScope = names
		}
	}
	parent := defaults
	for _, level := range logs {
		for _, a := range level {
			names := providerNames(a.GetProviders())
			if len(names) == 0 {
				names = parent
			}
			parent = names
			for _, p := range names {
				if !slices.Contains(inScope, p) || !matchMode(a.GetMatch(), mode) {
					continue
				}
				if a.GetDisabled().GetValue() {
					delete(out, p)
					continue
				}
				out[p] = filters[p]
			}
		}
	}
	return out
}

func matchMode(s *telemetryv1.AccessLogging_LogSelector, mode telemetryv1.WorkloadMode) bool {
	return s == nil || s.GetMode() == telemetryv1.WorkloadMode_CLIENT_AND_SERVER || s.GetMode() == mode
}

// Tracing.

// tracingSpec is a class's tracing before the proxy's identity is known.
type tracingSpec struct {
	// collector: provider kind ("zipkin", "opentelemetry"), its cluster
	// and host; none for Istio's legacy enableTracing (sampling only).
	provider          *meshv1alpha1.MeshConfig_ExtensionProvider
	cluster, hostname string
	sampling          float64
	istioTags         bool
	customTags        map[string]*telemetryv1.Tracing_CustomTag
	legacyTags        map[string]*meshv1alpha1.Tracing_CustomTag
	maxPathTagLength  uint32
}

// tracing resolves a class's tracing as Istio does: Telemetry levels in
// order over the default tracing provider, a mode-specific entry only
// for its mode; without either, the mesh config's enableTracing.
func (g *Generator) tracing(r *resolved, lv []level, c class, ix *index.Index) *tracingSpec {
	defaults := g.mesh.GetDefaultProviders().GetTracing()
	var entries []*telemetryv1.Tracing
	for _, l := range lv {
		entries = append(entries, l.spec.GetTracing()...)
	}
	pc := g.mesh.GetDefaultConfig().GetTracing()
	if len(entries) == 0 && len(defaults) == 0 {
		if !g.mesh.GetEnableTracing() {
			return nil
		}
		return &tracingSpec{sampling: meshSampling(g.mesh), istioTags: enableIstioTags(pc), legacyTags: pc.GetCustomTags(),
			maxPathTagLength: pc.GetMaxPathTagLength()}
	}
	spec := &tracingSpec{istioTags: true}
	var providerName string
	if len(defaults) > 0 {
		providerName = defaults[0]
	}
	disabled := false
	var sampling *float64
	for _, t := range entries {
		if m := t.GetMatch(); m != nil && m.GetMode() != telemetryv1.WorkloadMode_CLIENT_AND_SERVER && m.GetMode() != c.mode() {
			continue
		}
		if names := providerNames(t.GetProviders()); len(names) > 0 {
			providerName = names[0]
		}
		if t.GetDisableSpanReporting() != nil {
			disabled = t.GetDisableSpanReporting().GetValue()
		}
		if t.GetCustomTags() != nil {
			spec.customTags = t.GetCustomTags()
		}
		if t.GetRandomSamplingPercentage() != nil {
			v := t.GetRandomSamplingPercentage().GetValue()
			sampling = &v
		}
		if t.GetEnableIstioTags() != nil {
			spec.istioTags = t.GetEnableIstioTags().GetValue()
		}
	}
	if disabled || providerName == "" {
		return nil
	}
	p := g.provider(providerName)
	if p == nil {
		r.warnf("tracing provider %q is not among the mesh config's extensionProviders: no tracing; add it there or name another", providerName)
		return nil
	}
	var service string
	var port uint32
	switch prov := p.GetProvider().(type) {
	case *meshv1alpha1.MeshConfig_ExtensionProvider_Zipkin:
		service, port, spec.maxPathTagLength = prov.Zipkin.GetService(), prov.Zipkin.GetPort(), prov.Zipkin.GetMaxTagLength()
	case *meshv1alpha1.MeshConfig_ExtensionProvider_Opentelemetry:
		service, port, spec.maxPathTagLength = prov.Opentelemetry.GetService(), prov.Opentelemetry.GetPort(), prov.Opentelemetry.GetMaxTagLength()
	default:
		r.warnf("tracing provider %q: skiff-proxy exports spans to zipkin and opentelemetry providers only: no tracing", providerName)
		return nil
	}
	host, cluster, err := lookupCluster(ix, service, port)
	if err != nil {
		r.warnf("tracing provider %q: %v: no tracing until it exists", providerName, err)
		return nil
	}
	spec.provider, spec.cluster, spec.hostname = p, cluster, host
	if sampling != nil {
		spec.sampling = *sampling
	} else {
		spec.sampling = meshSampling(g.mesh)
	}
	if len(spec.customTags) == 0 {
		spec.legacyTags = pc.GetCustomTags()
	}
	if spec.maxPathTagLength == 0 {
		spec.maxPathTagLength = pc.GetMaxPathTagLength()
	}
	return spec
}

// meshSampling is defaultConfig.tracing.sampling, Istio's 1% when unset
// (and, as Istio has it, 1% for a value over 100).
func meshSampling(mc *meshv1alpha1.MeshConfig) float64 {
	s := mc.GetDefaultConfig().GetTracing().GetSampling()
	if s == 0 || s > 100 {
		return 1
	}
	return s
}

func enableIstioTags(t *meshv1alpha1.Tracing) bool {
	if v := t.GetEnableIstioTags(); v != nil {
		return v.GetValue()
	}
	return true
}

// lookupCluster finds a provider's service as Istio does ("ns/host", or
// a host that exactly one namespace has) and names its outbound cluster.
func lookupCluster(ix *index.Index, service string, port uint32) (host, cluster string, err error) {
	if service == "" {
		return "", "", fmt.Errorf("service is empty; set the provider's service to the collector's host name")
	}
	ns, h, qualified := strings.Cut(service, "/")
	if !qualified {
		h, ns = service, ""
	}
	var found []string
	for _, s := range ix.Registry().Services() {
		if s.Hostname != h || (qualified && s.Namespace != ns) {
			continue
		}
		if !slices.Contains(found, s.Namespace) {
			found = append(found, s.Namespace)
		}
	}
	switch {
	case len(found) == 1:
		return h, index.OutboundCluster(int(port), "", h), nil
	case len(found) > 1:
		return "", "", fmt.Errorf("service %s is in several namespaces (%s); write it as NAMESPACE/%s", h, strings.Join(found, ", "), h)
	}
	return "", "", fmt.Errorf("service %s is not in the service registry", service)
}
