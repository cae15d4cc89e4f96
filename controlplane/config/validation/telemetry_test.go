package validation

import (
	"strings"
	"testing"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

func TestTelemetry(t *testing.T) {
	runCases(t, []vcase{
		{"valid", telDoc(`tracing:
- providers: [{name: zipkin}]
  randomSamplingPercentage: 10
  customTags:
    env: {literal: {value: prod}}
metrics:
- providers: [{name: prometheus}]
  overrides:
  - match: {metric: REQUEST_COUNT}
    tagOverrides:
      request_host: {operation: UPSERT, value: "request.host"}
accessLogging:
- providers: [{name: envoy}]
`), nil},
		{"sampling and providers", telDoc(`tracing:
- providers: [{name: a}, {name: ""}]
  randomSamplingPercentage: 150
  customTags:
    t: {header: {name: ""}}
- {}
metrics:
- overrides:
  - tagOverrides:
      x: {operation: UPSERT}
      z: {operation: REMOVE, value: v}
  - match: {customMetric: REQUEST_COUNT}
    tagOverrides:
      q: {}
accessLogging:
- filter: {expression: ""}
`), []string{
			"spec.tracing: has 2 entries; Istio supports one tracing configuration per Telemetry",
			"spec.tracing[0].providers: has 2 providers; tracing supports one provider",
			"spec.tracing[0].providers[1].name: is empty; name a provider from the mesh config's extensionProviders",
			"spec.tracing[0].randomSamplingPercentage: percentage 150 is out of range; use 0-100",
			"spec.tracing[0].customTags[t].header.name: is empty; name the request header",
			"spec.metrics[0].overrides[0].tagOverrides[x].value: is required with operation UPSERT; give the expression for the tag",
			"spec.metrics[0].overrides[0].tagOverrides[z].value: must be empty with operation REMOVE",
			"spec.metrics[0].overrides[1].match.customMetric: \"REQUEST_COUNT\" is one of Istio's metrics; select it with match.metric: REQUEST_COUNT instead",
			"spec.metrics[0].overrides[1].tagOverrides[q].value: is required with operation UPSERT; give the expression for the tag",
			"spec.accessLogging[0].filter.expression: is empty; give a CEL expression or remove filter",
		}},
	})
}

func TestTelemetryTargetAndSelector(t *testing.T) {
	runCases(t, []vcase{
		{"both", telDoc(`selector: {matchLabels: {app: a}}
targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
`), []string{"spec: sets more than one of selector, targetRef and targetRefs; keep one"}},
	})
}

func TestTelemetryProviderWarnings(t *testing.T) {
	objs, errs := config.Decode([]byte(`apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: t, namespace: default}
spec:
  tracing: [{providers: [{name: otel}]}]
  metrics: [{providers: [{name: prometheus}]}]
  accessLogging: [{providers: [{name: envoy}, {name: als}]}]
`), "t.yaml")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	known := func(n string) bool { return n == "prometheus" || n == "envoy" }
	var got []string
	for _, e := range TelemetryProviderWarnings(objs[0], known) {
		if !e.Warning {
			t.Errorf("%v is not a warning", e)
		}
		got = append(got, e.Error())
	}
	want := []string{
		`warning: spec.tracing[0].providers[0].name: provider "otel" is not among the mesh config's extensionProviders; define it there or name one that is`,
		`warning: spec.accessLogging[0].providers[1].name: provider "als" is not among the mesh config's extensionProviders; define it there or name one that is`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
