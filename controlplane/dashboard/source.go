package dashboard

import (
	"context"
	"maps"
	"slices"
	"strings"
	"time"
)

// The Istio metric names the dashboard reads (Istio's standard metrics).
const (
	requestsTotal   = "istio_requests_total"
	requestDuration = "istio_request_duration_milliseconds"
)

// edgeLabels are the labels the dashboard keeps of istio_requests_total
// and the duration histogram: enough to tell the two ends of a call, its
// outcome and its security apart. Everything else (principals, byte
// sizes, …) is summed away.
var edgeLabels = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_app", "source_version",
	"destination_workload", "destination_workload_namespace", "destination_app", "destination_version",
	"destination_service", "destination_service_name", "destination_service_namespace",
	"request_protocol", "response_code", "response_flags", "connection_security_policy",
}

// Sample is one per-second rate of a series summed over edgeLabels.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// Rates is what the graph and the golden signals are computed from: the
// per-second rates of istio_requests_total and of the duration
// histogram's buckets (with their "le" label) over a window ending At.
type Rates struct {
	At       time.Time
	Requests []Sample
	Buckets  []Sample
}

// Source gives rates over time: the proxies scraped by the dashboard
// itself (Scraper) or a Prometheus server (Prometheus).
type Source interface {
	// RatesRange returns one Rates per step from start to end (both
	// included; start == end asks for one), each over window, for the
	// series whose labels equal match's. A point with no data has empty
	// lists.
	RatesRange(ctx context.Context, start, end time.Time, step, window time.Duration, match map[string]string) ([]Rates, error)
	// Describe names the source for the page ("Prometheus at …").
	Describe() string
}

// matches reports whether labels carry every pair of match.
func matches(labels, match map[string]string) bool {
	for k, v := range match {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// keyOf is a map key for a label set restricted to names.
func keyOf(labels map[string]string, names []string) string {
	var b strings.Builder
	for _, n := range names {
		b.WriteString(labels[n])
		b.WriteByte(0)
	}
	return b.String()
}

// project keeps names of labels (missing ones as "").
func project(labels map[string]string, names []string) map[string]string {
	out := make(map[string]string, len(names))
	for _, n := range names {
		if v, ok := labels[n]; ok {
			out[n] = v
		}
	}
	return out
}

// sumBy adds samples whose labels restricted to names are equal.
func sumBy(in []Sample, names []string) []Sample {
	idx := map[string]int{}
	var out []Sample
	for _, s := range in {
		k := keyOf(s.Labels, names)
		if i, ok := idx[k]; ok {
			out[i].Value += s.Value
			continue
		}
		idx[k] = len(out)
		out = append(out, Sample{Labels: project(s.Labels, names), Value: s.Value})
	}
	return out
}

// steps lists the evaluation times from start to end.
func steps(start, end time.Time, step time.Duration) []time.Time {
	if step <= 0 || !end.After(start) {
		return []time.Time{end}
	}
	var out []time.Time
	for t := start; !t.After(end) && len(out) < maxPoints; t = t.Add(step) {
		out = append(out, t)
	}
	return out
}

// maxPoints bounds a range answer, whatever the query asks.
const maxPoints = 720

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }
