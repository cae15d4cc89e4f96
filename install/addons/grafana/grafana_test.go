package grafana

import (
	"encoding/json"
	"io/fs"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// contractMetrics are Istio's standard metrics as skiff-proxy reports
// them (docs: the telemetry contract; histograms with their series).
var contractMetrics = func() []string {
	out := []string{"istio_requests_total", "istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total",
		"istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total"}
	for _, h := range []string{"istio_request_duration_milliseconds", "istio_request_bytes", "istio_response_bytes"} {
		out = append(out, h+"_bucket", h+"_sum", h+"_count")
	}
	return out
}()

// contractLabels are Istio's standard labels (and "le" of histograms).
var contractLabels = []string{"reporter", "source_workload", "source_workload_namespace", "source_principal", "source_app",
	"source_version", "source_canonical_service", "source_canonical_revision", "source_cluster", "destination_workload",
	"destination_workload_namespace", "destination_principal", "destination_app", "destination_version", "destination_service",
	"destination_service_name", "destination_service_namespace", "destination_canonical_service", "destination_canonical_revision",
	"destination_cluster", "request_protocol", "response_code", "grpc_response_status", "response_flags", "connection_security_policy", "le"}

type model struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID      int    `json:"id"`
		Type    string `json:"type"`
		Title   string `json:"title"`
		GridPos struct {
			H, W, X, Y int
		} `json:"gridPos"`
		Targets []struct {
			Expr  string `json:"expr"`
			RefID string `json:"refId"`
		} `json:"targets"`
	} `json:"panels"`
}

var (
	metricRef = regexp.MustCompile(`\b(istio_[a-z_]+)\b`)
	// Label names in selectors ({name=~"…"}) and groupings (by (a, b)).
	selectorLabel = regexp.MustCompile(`[{,]\s*([a-z_]+)\s*(?:=~|!~|!=|=)`)
	grouping      = regexp.MustCompile(`by \(([^)]*)\)`)
)

// Exprs are every PromQL expression of a dashboard: panel targets and
// template variable queries.
func exprs(t *testing.T, m model) []string {
	var out []string
	for _, p := range m.Panels {
		for _, tg := range p.Targets {
			out = append(out, tg.Expr)
		}
	}
	for _, v := range m.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(map[string]any)
		if s, ok := q["query"].(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func load(t *testing.T) map[string]model {
	t.Helper()
	names, err := fs.Glob(Dashboards, "*.json")
	if err != nil || len(names) < 3 {
		t.Fatalf("want the mesh, service and workload dashboards, have %v (%v)", names, err)
	}
	out := map[string]model{}
	for _, n := range names {
		b, _ := fs.ReadFile(Dashboards, n)
		var m model
		dec := json.NewDecoder(strings.NewReader(string(b)))
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("%s: not a JSON model: %v", n, err)
		}
		out[n] = m
	}
	return out
}

// Each file is a dashboard Grafana imports: a uid, a title, a schema
// version, panels with unique ids, a grid position and PromQL targets
// whose refIds are unique within the panel.
func TestDashboardsAreGrafanaModels(t *testing.T) {
	uids := map[string]string{}
	for n, m := range load(t) {
		if m.UID == "" || m.Title == "" || m.SchemaVersion < 30 || len(m.Panels) == 0 {
			t.Errorf("%s: uid %q, title %q, schemaVersion %d, %d panels: Grafana needs all of them", n, m.UID, m.Title, m.SchemaVersion, len(m.Panels))
		}
		if other, dup := uids[m.UID]; dup {
			t.Errorf("%s and %s share uid %q", n, other, m.UID)
		}
		uids[m.UID] = n
		ids := map[int]bool{}
		for _, p := range m.Panels {
			if ids[p.ID] {
				t.Errorf("%s: panel id %d twice", n, p.ID)
			}
			ids[p.ID] = true
			if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("%s: panel %q has grid position %+v outside Grafana's 24 columns", n, p.Title, p.GridPos)
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				if tg.Expr == "" || tg.RefID == "" || refs[tg.RefID] {
					t.Errorf("%s: panel %q: a target without an expression or with a repeated refId %q", n, p.Title, tg.RefID)
				}
				refs[tg.RefID] = true
			}
		}
	}
}

// Every metric and label the queries name is one skiff-proxy reports.
func TestQueriesUseContractNames(t *testing.T) {
	for n, m := range load(t) {
		for _, e := range exprs(t, m) {
			if strings.Count(e, "(") != strings.Count(e, ")") || strings.Count(e, "{") != strings.Count(e, "}") {
				t.Errorf("%s: unbalanced brackets in %s", n, e)
			}
			found := metricRef.FindAllStringSubmatch(e, -1)
			if len(found) == 0 {
				t.Errorf("%s: %s names no Istio metric", n, e)
			}
			for _, f := range found {
				if !slices.Contains(contractMetrics, f[1]) {
					t.Errorf("%s: %s uses %s, which is not one of Istio's standard metrics %v", n, e, f[1], contractMetrics)
				}
			}
			var labels []string
			for _, f := range selectorLabel.FindAllStringSubmatch(e, -1) {
				labels = append(labels, f[1])
			}
			for _, f := range grouping.FindAllStringSubmatch(e, -1) {
				for _, l := range strings.Split(f[1], ",") {
					labels = append(labels, strings.TrimSpace(l))
				}
			}
			for _, l := range labels {
				if !slices.Contains(contractLabels, l) {
					t.Errorf("%s: %s uses label %q, not one of Istio's standard labels", n, e, l)
				}
			}
		}
	}
}
