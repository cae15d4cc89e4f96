package validation

import (
	telemetry "istio.io/api/telemetry/v1alpha1"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

func init() { register(config.Telemetry, (*collector).telemetry) }

func (v *collector) telemetry(t *telemetry.Telemetry) {
	v.policyTarget(t.Selector, t.TargetRef, t.TargetRefs)
	if len(t.Tracing) > 1 {
		v.add("spec.tracing", "has %d entries; Istio supports one tracing configuration per Telemetry", len(t.Tracing))
	}
	for i, tr := range t.Tracing {
		p := idx("spec.tracing", i)
		if tr == nil {
			continue
		}
		if len(tr.Providers) > 1 {
			v.add(field(p, "providers"), "has %d providers; tracing supports one provider", len(tr.Providers))
		}
		v.providers(field(p, "providers"), tr.Providers)
		if tr.RandomSamplingPercentage != nil {
			v.percent(field(p, "randomSamplingPercentage"), tr.RandomSamplingPercentage.Value)
		}
		for _, name := range sortedKeys(tr.CustomTags) {
			tp := key(field(p, "customTags"), name)
			switch tag := tr.CustomTags[name].GetType().(type) {
			case nil:
				v.add(tp, "is empty; set literal, environment or header")
			case *telemetry.Tracing_CustomTag_Literal:
				if tag.Literal == nil || tag.Literal.Value == "" {
					v.add(field(tp, "literal.value"), "is empty; give the tag's value")
				}
			case *telemetry.Tracing_CustomTag_Environment:
				if tag.Environment == nil || tag.Environment.Name == "" {
					v.add(field(tp, "environment.name"), "is empty; name the environment variable")
				}
			case *telemetry.Tracing_CustomTag_Header:
				if tag.Header == nil || tag.Header.Name == "" {
					v.add(field(tp, "header.name"), "is empty; name the request header")
				}
			case *telemetry.Tracing_CustomTag_Formatter:
				if tag.Formatter == nil || tag.Formatter.Value == "" {
					v.add(field(tp, "formatter.value"), "is empty; give the format string")
				}
			}
		}
	}
	for i, m := range t.Metrics {
		p := idx("spec.metrics", i)
		if m == nil {
			continue
		}
		v.providers(field(p, "providers"), m.Providers)
		v.duration(field(p, "reportingInterval"), m.ReportingInterval, false)
		for j, o := range m.Overrides {
			op := idx(field(p, "overrides"), j)
			if o == nil {
				continue
			}
			if cm, ok := o.GetMatch().GetMetricMatch().(*telemetry.MetricSelector_CustomMetric); ok {
				if cm.CustomMetric == "" {
					v.add(field(op, "match.customMetric"), "is empty; name the metric")
				} else if _, istio := telemetry.MetricSelector_IstioMetric_value[cm.CustomMetric]; istio {
					v.add(field(op, "match.customMetric"), "%q is one of Istio's metrics; select it with match.metric: %s instead", cm.CustomMetric, cm.CustomMetric)
				}
			}
			for _, tag := range sortedKeys(o.TagOverrides) {
				tp := key(field(op, "tagOverrides"), tag)
				to := o.TagOverrides[tag]
				if tag == "" {
					v.add(tp, "tag name is empty")
				}
				if to == nil {
					v.add(tp, "is empty; give operation (UPSERT or REMOVE) and, for UPSERT, value")
					continue
				}
				switch to.Operation {
				case telemetry.MetricsOverrides_TagOverride_UPSERT:
					if to.Value == "" {
						v.add(field(tp, "value"), "is required with operation UPSERT; give the expression for the tag")
					}
				case telemetry.MetricsOverrides_TagOverride_REMOVE:
					if to.Value != "" {
						v.add(field(tp, "value"), "must be empty with operation REMOVE")
					}
				}
			}
		}
	}
	for i, a := range t.AccessLogging {
		p := idx("spec.accessLogging", i)
		if a == nil {
			continue
		}
		v.providers(field(p, "providers"), a.Providers)
		if a.Filter != nil && a.Filter.Expression == "" {
			v.add(field(p, "filter.expression"), "is empty; give a CEL expression or remove filter")
		}
	}
}

func (v *collector) providers(path string, ps []*telemetry.ProviderRef) {
	for i, p := range ps {
		if p == nil || p.Name == "" {
			v.add(field(idx(path, i), "name"), "is empty; name a provider from the mesh config's extensionProviders")
		}
	}
}

// TelemetryProviderWarnings checks the provider names a Telemetry object
// uses against the mesh config's extensionProviders (known reports
// whether one exists, built-ins included), as istioctl analyze does: an
// unknown name is a warning, since the object stays valid and applies
// once the mesh config gains the provider.
func TelemetryProviderWarnings(o *config.Object, known func(name string) bool) []*FieldError {
	t, ok := o.Spec.(*telemetry.Telemetry)
	if !ok {
		return nil
	}
	v := &collector{}
	check := func(path string, ps []*telemetry.ProviderRef) {
		for i, p := range ps {
			if p.GetName() != "" && !known(p.GetName()) {
				v.warn(field(idx(path, i), "name"), "provider %q is not among the mesh config's extensionProviders; define it there or name one that is", p.GetName())
			}
		}
	}
	for i, m := range t.Metrics {
		check(field(idx("spec.metrics", i), "providers"), m.GetProviders())
	}
	for i, tr := range t.Tracing {
		check(field(idx("spec.tracing", i), "providers"), tr.GetProviders())
	}
	for i, a := range t.AccessLogging {
		check(field(idx("spec.accessLogging", i), "providers"), a.GetProviders())
	}
	out := make([]*FieldError, 0, len(v.list))
	for _, e := range v.list {
		out = append(out, e.(*FieldError))
	}
	return out
}
