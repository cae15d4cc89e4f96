package validation

import "testing"

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
			"spec.accessLogging[0].filter.expression: is empty; give a CEL expression or remove filter",
		}},
	})
}
