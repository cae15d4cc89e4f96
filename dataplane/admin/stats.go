package admin

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"

	"github.com/skiff-mesh/skiff/pkg/stats"
)

// percentiles are Envoy's supported quantiles, in percent.
var percentiles = []float64{0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100}

// percentile estimates the p-th percentile from the cumulative buckets: the
// upper bound of the bucket holding the ceil(p%·count)-th sample (the first
// sample for p=0). Samples past the last bound report that bound. NaN when
// there are no samples.
func percentile(s stats.HistogramSnapshot, p float64) float64 {
	if s.Count == 0 {
		return math.NaN()
	}
	target := max(uint64(math.Ceil(p*float64(s.Count)/100)), 1)
	for i, c := range s.Cumulative[:len(stats.Buckets)] {
		if c >= target {
			return stats.Buckets[i]
		}
	}
	return stats.Buckets[len(stats.Buckets)-1]
}

func formatNum(v float64) string {
	if math.IsNaN(v) {
		return "nan"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// serveStats is GET /stats: "name: value" lines for counters and gauges in
// name order, then histograms as quantile summaries; or ?format=json, or
// ?format=prometheus (the same as /stats/prometheus).
func (s *Server) serveStats(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	format := q.Get("format")
	if format == "prometheus" {
		s.servePrometheus(w, r)
		return
	}
	if format != "" && format != "text" && format != "json" {
		textReply(w, http.StatusBadRequest, "stats: format="+strconv.Quote(format)+": want one of text, json, prometheus\n")
		return
	}
	re, ok := filterParam(w, q.Get("filter"))
	if !ok {
		return
	}
	var wantC, wantG, wantH bool
	switch t := q.Get("type"); t {
	case "", "All":
		wantC, wantG, wantH = true, true, true
	case "Counters":
		wantC = true
	case "Gauges":
		wantG = true
	case "Histograms":
		wantH = true
	case "TextReadouts":
	default:
		textReply(w, http.StatusBadRequest, "stats: type="+strconv.Quote(t)+": want one of All, Counters, Gauges, Histograms, TextReadouts\n")
		return
	}
	usedOnly := q.Has("usedonly")

	type value struct {
		name string
		v    any // uint64 or int64
	}
	var values []value
	var histos []*stats.Histogram
	s.o.Store.Each(func(m any) {
		switch m := m.(type) {
		case *stats.Counter:
			if wantC && selected(m.Name, m, usedOnly, re) {
				values = append(values, value{m.Name, m.Value()})
			}
		case *stats.Gauge:
			if wantG && selected(m.Name, m, usedOnly, re) {
				values = append(values, value{m.Name, m.Value()})
			}
		case *stats.Histogram:
			if wantH && selected(m.Name, m, usedOnly, re) {
				histos = append(histos, m)
			}
		}
	})

	if format == "json" {
		type jsonStat struct {
			Name  string `json:"name"`
			Value any    `json:"value"`
		}
		type jsonQuantile struct {
			// Envoy keeps per-flush interval histograms; this store has
			// only cumulative ones, so interval is always null.
			Interval   *float64 `json:"interval"`
			Cumulative *float64 `json:"cumulative"`
		}
		type jsonHisto struct {
			Name   string         `json:"name"`
			Values []jsonQuantile `json:"values"`
		}
		type jsonHistos struct {
			SupportedQuantiles []float64   `json:"supported_quantiles"`
			ComputedQuantiles  []jsonHisto `json:"computed_quantiles"`
		}
		out := make([]any, 0, len(values)+1)
		for _, v := range values {
			out = append(out, jsonStat{v.name, v.v})
		}
		if len(histos) > 0 {
			hs := jsonHistos{ComputedQuantiles: make([]jsonHisto, 0, len(histos))}
			hs.SupportedQuantiles = percentiles
			for _, h := range histos {
				snap := h.Snapshot()
				jh := jsonHisto{Name: h.Name}
				for _, p := range percentiles {
					var c *float64
					if v := percentile(snap, p); !math.IsNaN(v) {
						c = &v
					}
					jh.Values = append(jh.Values, jsonQuantile{Cumulative: c})
				}
				hs.ComputedQuantiles = append(hs.ComputedQuantiles, jh)
			}
			out = append(out, map[string]any{"histograms": hs})
		}
		body, err := json.Marshal(map[string]any{"stats": out})
		if err != nil {
			textReply(w, http.StatusInternalServerError, err.Error()+"\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
		return
	}

	b := make([]byte, 0, 64*(len(values)+len(histos)))
	for _, v := range values {
		b = append(b, v.name...)
		b = append(b, ": "...)
		switch n := v.v.(type) {
		case uint64:
			b = strconv.AppendUint(b, n, 10)
		case int64:
			b = strconv.AppendInt(b, n, 10)
		}
		b = append(b, '\n')
	}
	for _, h := range histos {
		snap := h.Snapshot()
		b = append(b, h.Name...)
		if snap.Count == 0 {
			b = append(b, ": No recorded values\n"...)
			continue
		}
		b = append(b, ':')
		for _, p := range percentiles {
			// P<p>(interval,cumulative); interval is not kept, hence nan.
			b = append(b, " P"...)
			b = append(b, formatNum(p)...)
			b = append(b, "(nan,"...)
			b = append(b, formatNum(percentile(snap, p))...)
			b = append(b, ')')
		}
		b = append(b, '\n')
	}
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	w.Write(b)
}
