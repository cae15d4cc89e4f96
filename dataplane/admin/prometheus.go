package admin

import (
	"io"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/skiff-mesh/skiff/pkg/stats"
)

// PrometheusContentType is the text exposition format version 0.0.4.
const PrometheusContentType = "text/plain; version=0.0.4; charset=utf-8"

// PrometheusHandler serves the store in Prometheus text format, as
// /stats/prometheus does on the admin port; the integrator mounts it on
// :15090 too. It honours ?usedonly and ?filter=<regex>.
func PrometheusHandler(store *stats.Store) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		re, ok := filterParam(w, q.Get("filter"))
		if !ok {
			return
		}
		w.Header().Set("Content-Type", PrometheusContentType)
		WritePrometheus(w, store, q.Has("usedonly"), re)
	})
}

func (s *Server) servePrometheus(w http.ResponseWriter, r *http.Request) {
	PrometheusHandler(s.o.Store).ServeHTTP(w, r)
}

// filterParam compiles ?filter=; on error it answers 400 and returns false.
func filterParam(w http.ResponseWriter, expr string) (*regexp.Regexp, bool) {
	if expr == "" {
		return nil, true
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		textReply(w, http.StatusBadRequest, "Invalid re2 regex: filter="+strconv.Quote(expr)+": "+err.Error()+"\n")
		return nil, false
	}
	return re, true
}

// used is Envoy's "written since start", approximated from the value: the
// store keeps no separate flag, so a gauge set back to 0 reads as unused.
func used(m any) bool {
	switch m := m.(type) {
	case *stats.Counter:
		return m.Value() != 0
	case *stats.Gauge:
		return m.Value() != 0
	case *stats.Histogram:
		return m.Snapshot().Count != 0
	}
	return false
}

// selected applies ?usedonly and ?filter= (matched against the flat name).
func selected(name string, m any, usedOnly bool, re *regexp.Regexp) bool {
	if re != nil && !re.MatchString(name) {
		return false
	}
	return !usedOnly || used(m)
}

type promEntry struct {
	name string // Prometheus name
	m    any
}

// promScratch is one scrape's working memory, pooled so that a scrape of
// many series reuses its buffer and entry slices.
type promScratch struct {
	buf                      []byte
	counters, gauges, histos []promEntry
}

var promPool = sync.Pool{New: func() any { return new(promScratch) }}

// maxPooledBuf keeps one unusually large scrape from pinning its buffer.
const maxPooledBuf = 16 << 20

// leLabels are the bucket bounds as written in le="…", computed once.
var leLabels = func() []string {
	out := make([]string, len(stats.Buckets))
	for i, b := range stats.Buckets {
		out[i] = strconv.FormatFloat(b, 'f', -1, 64)
	}
	return out
}()

// WritePrometheus writes the store in Prometheus text format 0.0.4 as
// Envoy lays it out: counters, then gauges, then histograms, each grouped
// under one TYPE line per name, names sorted. usedOnly and re filter as
// /stats/prometheus?usedonly&filter= do; re matches the flat Envoy name.
func WritePrometheus(w io.Writer, store *stats.Store, usedOnly bool, re *regexp.Regexp) error {
	sc := promPool.Get().(*promScratch)
	defer func() {
		if cap(sc.buf) > maxPooledBuf {
			sc.buf = nil
		}
		clear(sc.counters)
		clear(sc.gauges)
		clear(sc.histos)
		promPool.Put(sc)
	}()
	sc.counters, sc.gauges, sc.histos = sc.counters[:0], sc.gauges[:0], sc.histos[:0]
	store.Each(func(m any) {
		switch m := m.(type) {
		case *stats.Counter:
			if selected(m.Name, m, usedOnly, re) {
				sc.counters = append(sc.counters, promEntry{m.PromName, m})
			}
		case *stats.Gauge:
			if selected(m.Name, m, usedOnly, re) {
				sc.gauges = append(sc.gauges, promEntry{m.PromName, m})
			}
		case *stats.Histogram:
			if selected(m.Name, m, usedOnly, re) {
				sc.histos = append(sc.histos, promEntry{m.PromName, m})
			}
		}
	})
	byName := func(a, b promEntry) int { return strings.Compare(a.name, b.name) }
	// Stable: series of one name stay in flat-name order.
	slices.SortStableFunc(sc.counters, byName)
	slices.SortStableFunc(sc.gauges, byName)
	slices.SortStableFunc(sc.histos, byName)

	// A name already written under another type cannot be repeated with a
	// second TYPE line without breaking the scrape: later types yield.
	taken := func(name string, earlier ...[]promEntry) bool {
		for _, es := range earlier {
			if _, found := slices.BinarySearchFunc(es, name, func(e promEntry, n string) int { return strings.Compare(e.name, n) }); found {
				return true
			}
		}
		return false
	}

	b := sc.buf[:0]
	last := ""
	for _, e := range sc.counters {
		if e.name != last {
			b = appendType(b, e.name, "counter")
			last = e.name
		}
		c := e.m.(*stats.Counter)
		b = appendSeries(b, e.name, "", c.Tags, "")
		b = strconv.AppendUint(b, c.Value(), 10)
		b = append(b, '\n')
	}
	last = ""
	for _, e := range sc.gauges {
		if taken(e.name, sc.counters) {
			continue
		}
		if e.name != last {
			b = appendType(b, e.name, "gauge")
			last = e.name
		}
		g := e.m.(*stats.Gauge)
		b = appendSeries(b, e.name, "", g.Tags, "")
		b = strconv.AppendInt(b, g.Value(), 10)
		b = append(b, '\n')
	}
	last = ""
	for _, e := range sc.histos {
		if taken(e.name, sc.counters, sc.gauges) {
			continue
		}
		if e.name != last {
			b = appendType(b, e.name, "histogram")
			last = e.name
		}
		h := e.m.(*stats.Histogram)
		snap := h.Snapshot()
		for i, le := range leLabels {
			b = appendSeries(b, e.name, "_bucket", h.Tags, le)
			b = strconv.AppendUint(b, snap.Cumulative[i], 10)
			b = append(b, '\n')
		}
		// +Inf is the count itself, so the two always agree even if a
		// Record lands between reading the buckets and the count.
		b = appendSeries(b, e.name, "_bucket", h.Tags, "+Inf")
		b = strconv.AppendUint(b, snap.Count, 10)
		b = append(b, '\n')
		b = appendSeries(b, e.name, "_sum", h.Tags, "")
		b = appendFloat(b, snap.Sum)
		b = append(b, '\n')
		b = appendSeries(b, e.name, "_count", h.Tags, "")
		b = strconv.AppendUint(b, snap.Count, 10)
		b = append(b, '\n')
	}
	sc.buf = b
	_, err := w.Write(b)
	return err
}

func appendType(b []byte, name, typ string) []byte {
	b = append(b, "# TYPE "...)
	b = append(b, name...)
	b = append(b, ' ')
	b = append(b, typ...)
	return append(b, '\n')
}

// appendSeries writes `name+suffix{tags[,le="…"]} ` (Envoy writes the
// braces even when there are no labels).
func appendSeries(b []byte, name, suffix string, tags []stats.Tag, le string) []byte {
	b = append(b, name...)
	b = append(b, suffix...)
	b = append(b, '{')
	for i, t := range tags {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendLabel(b, t.Name, t.Value)
	}
	if le != "" {
		if len(tags) > 0 {
			b = append(b, ',')
		}
		b = appendLabel(b, "le", le)
	}
	return append(b, '}', ' ')
}

func appendLabel(b []byte, name, value string) []byte {
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || i > 0 && c >= '0' && c <= '9') {
			c = '_'
		}
		b = append(b, c)
	}
	b = append(b, '=', '"')
	// Most values need no escaping: copy them whole.
	if strings.IndexAny(value, "\\\"\n") < 0 {
		b = append(b, value...)
		return append(b, '"')
	}
	for i := 0; i < len(value); i++ {
		switch c := value[i]; c {
		case '\\':
			b = append(b, '\\', '\\')
		case '"':
			b = append(b, '\\', '"')
		case '\n':
			b = append(b, '\\', 'n')
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

func appendFloat(b []byte, v float64) []byte {
	switch {
	case math.IsNaN(v):
		return append(b, "NaN"...)
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	}
	return strconv.AppendFloat(b, v, 'f', -1, 64)
}
