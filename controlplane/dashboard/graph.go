package dashboard

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Node is a workload or a service of the graph.
type Node struct {
	ID        string  `json:"id"`
	Kind      string  `json:"kind"` // workload, service or unknown (callers from outside the mesh)
	Name      string  `json:"name"`
	Namespace string  `json:"namespace,omitempty"`
	App       string  `json:"app,omitempty"`
	Version   string  `json:"version,omitempty"`
	Rate      float64 `json:"rate"` // requests per second into the node
}

// Edge is the traffic from one node to another over the window.
type Edge struct {
	Source string `json:"source"`
	Target string `json:"target"`
	// Rate is requests per second; ErrorRate the share (0..1) answered
	// with a 5xx; P50 and P99 the latency in milliseconds from the
	// duration histogram, -1 when it has no data.
	Rate      float64 `json:"rate"`
	ErrorRate float64 `json:"error_rate"`
	P50       float64 `json:"p50_ms"`
	P99       float64 `json:"p99_ms"`
	// MTLS: the destination's proxy reported the requests as mutual TLS
	// (connection_security_policy="mutual_tls").
	MTLS     bool   `json:"mtls"`
	Protocol string `json:"protocol,omitempty"`
	// Red: errors above ErrorThreshold.
	Red bool `json:"red"`
}

// ErrorThreshold is the 5xx share above which an edge is drawn red.
const ErrorThreshold = 0.05

// Graph is the service graph at one time.
type Graph struct {
	At     time.Time `json:"at"`
	Window string    `json:"window"`
	Source string    `json:"source"`
	Nodes  []Node    `json:"nodes"`
	Edges  []Edge    `json:"edges"`
}

// Signals are a service's golden signals at one time.
type Signals struct {
	At        time.Time `json:"at"`
	Rate      float64   `json:"rate"`
	ErrorRate float64   `json:"error_rate"`
	P50       float64   `json:"p50_ms"`
	P99       float64   `json:"p99_ms"`
	// NoData: the source had nothing for this time (before the first
	// scrape, or no series); the values are zero.
	NoData bool `json:"no_data,omitempty"`
}

// stat accumulates the samples of one edge (or one service).
type stat struct {
	rate, errs, mtls float64
	protocol         string
	buckets          map[float64]float64 // le → rate
}

func (s *stat) add(labels map[string]string, v float64) {
	s.rate += v
	if strings.HasPrefix(labels["response_code"], "5") {
		s.errs += v
	}
	if labels["connection_security_policy"] == "mutual_tls" {
		s.mtls += v
	}
	if s.protocol == "" {
		s.protocol = labels["request_protocol"]
	}
}

func (s *stat) addBucket(labels map[string]string, v float64) {
	le, err := strconv.ParseFloat(labels["le"], 64)
	if err != nil {
		return
	}
	if s.buckets == nil {
		s.buckets = map[float64]float64{}
	}
	s.buckets[le] += v
}

func (s *stat) errorRate() float64 {
	if s.rate <= 0 {
		return 0
	}
	return s.errs / s.rate
}

// quantile estimates the q-quantile from cumulative bucket rates as
// PromQL's histogram_quantile does: linear within the bucket holding the
// rank, the highest finite bound when the rank falls in +Inf; -1 without
// data.
func quantile(q float64, buckets map[float64]float64) float64 {
	if len(buckets) == 0 {
		return -1
	}
	les := make([]float64, 0, len(buckets))
	for le := range buckets {
		les = append(les, le)
	}
	slices.Sort(les)
	if !math.IsInf(les[len(les)-1], 1) {
		return -1 // no +Inf bucket: not a whole histogram
	}
	total := buckets[les[len(les)-1]]
	if total <= 0 {
		return -1
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for i, le := range les {
		c := buckets[le]
		if c >= rank {
			if math.IsInf(le, 1) {
				if i == 0 {
					return -1
				}
				return les[i-1]
			}
			if i == 0 && le <= 0 {
				return le
			}
			if c == below {
				return le
			}
			return lower + (le-lower)*(rank-below)/(c-below)
		}
		lower, below = le, c
	}
	return les[len(les)-1]
}

func unknown(v string) bool { return v == "" || v == "unknown" }

// serviceOf names the destination service of a sample: its short name and
// namespace, else the host, else "".
func serviceOf(l map[string]string) (name, ns string) {
	name, ns = l["destination_service_name"], l["destination_service_namespace"]
	if unknown(name) {
		name, ns = l["destination_service"], ""
	}
	if unknown(name) || !serviceName(name) {
		return "", ""
	}
	return name, ns
}

// serviceName: a name that can be a service or host, not the first label
// of an IP address a client put in its Host header.
func serviceName(s string) bool {
	c := s[0]
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func nodeID(kind, ns, name string) string {
	if kind == "unknown" {
		return "unknown"
	}
	return kind + ":" + ns + "/" + name
}

// BuildGraph computes the graph from one Rates: edges source workload →
// service → destination workload. Requests count where the client's
// proxy reported them (reporter="source": it sees faults it injects and
// calls that never reached the server); calls from outside the mesh, and
// those whose client reports nothing, come from the server's reports. An
// edge has the lock when the server saw the calls over mutual TLS.
func BuildGraph(r Rates, window time.Duration, source string) Graph {
	g := Graph{At: r.At, Window: window.String(), Source: source, Nodes: []Node{}, Edges: []Edge{}}
	nodes := map[string]*Node{}
	node := func(kind, ns, name, app, version string) string {
		id := nodeID(kind, ns, name)
		if _, ok := nodes[id]; !ok {
			n := &Node{ID: id, Kind: kind, Name: name, Namespace: ns, App: app, Version: version}
			if kind == "unknown" {
				n.Name = "unknown"
			}
			nodes[id] = n
		}
		return id
	}
	type key struct{ src, dst string }
	edges := map[key]*stat{}
	var order []key
	edge := func(src, dst string) *stat {
		k := key{src, dst}
		if s, ok := edges[k]; ok {
			return s
		}
		s := &stat{}
		edges[k] = s
		order = append(order, k)
		return s
	}
	// ends returns the node ids of a sample: caller, service and server
	// (the server "" when unknown); ok false when the service is unknown.
	// A call to no known service (addressed by IP) goes straight from
	// caller to server: svc is then the server and dst "".
	ends := func(l map[string]string) (src, svc, dst string, ok bool) {
		name, ns := serviceOf(l)
		if name == "" && unknown(l["destination_workload"]) {
			return "", "", "", false
		}
		if unknown(l["source_workload"]) {
			src = node("unknown", "", "", "", "")
		} else {
			src = node("workload", l["source_workload_namespace"], l["source_workload"], l["source_app"], l["source_version"])
		}
		if !unknown(l["destination_workload"]) {
			dst = node("workload", l["destination_workload_namespace"], l["destination_workload"], l["destination_app"], l["destination_version"])
		}
		if name == "" {
			return src, dst, "", true
		}
		return src, node("service", ns, name, "", ""), dst, true
	}
	// Which callers the clients report, by service and by server: the
	// server's reports of those calls would count them twice (under
	// another service name when the client addressed the server by IP).
	bySource := map[key]bool{}
	for _, s := range r.Requests {
		if s.Labels["reporter"] != "source" {
			continue
		}
		if src, svc, dst, ok := ends(s.Labels); ok {
			bySource[key{src, svc}] = true
			if dst != "" {
				bySource[key{src, dst}] = true
			}
		}
	}
	use := func(l map[string]string, src, svc, dst string) bool {
		if l["reporter"] == "source" {
			return true
		}
		return !bySource[key{src, svc}] && (dst == "" || !bySource[key{src, dst}])
	}
	// server is the workload that answered: dst, or svc for a call
	// addressed by IP.
	server := func(svc, dst string) string {
		if dst != "" {
			return dst
		}
		return svc
	}
	// Caller → server pairs the servers saw over mutual TLS.
	secure := map[key]bool{}
	for _, s := range r.Requests {
		if s.Labels["reporter"] == "destination" && s.Labels["connection_security_policy"] == "mutual_tls" && s.Value > 0 {
			if src, svc, dst, ok := ends(s.Labels); ok {
				secure[key{src, server(svc, dst)}] = true
			}
		}
	}
	mtls := map[key]bool{}
	for _, s := range r.Requests {
		src, svc, dst, ok := ends(s.Labels)
		if !ok || !use(s.Labels, src, svc, dst) {
			continue
		}
		sec := secure[key{src, server(svc, dst)}]
		edge(src, svc).add(s.Labels, s.Value)
		mtls[key{src, svc}] = mtls[key{src, svc}] || sec
		if dst != "" {
			edge(svc, dst).add(s.Labels, s.Value)
			mtls[key{svc, dst}] = mtls[key{svc, dst}] || sec
		}
	}
	for _, b := range r.Buckets {
		src, svc, dst, ok := ends(b.Labels)
		if !ok || !use(b.Labels, src, svc, dst) {
			continue
		}
		if s, ok := edges[key{src, svc}]; ok {
			s.addBucket(b.Labels, b.Value)
		}
		if s, ok := edges[key{svc, dst}]; ok && dst != "" {
			s.addBucket(b.Labels, b.Value)
		}
	}
	for _, k := range order {
		s := edges[k]
		e := Edge{Source: k.src, Target: k.dst, Rate: s.rate, ErrorRate: s.errorRate(),
			P50: quantile(0.5, s.buckets), P99: quantile(0.99, s.buckets),
			MTLS: mtls[k] || (s.rate > 0 && s.mtls == s.rate), Protocol: s.protocol}
		e.Red = e.ErrorRate > ErrorThreshold
		g.Edges = append(g.Edges, e)
		nodes[k.dst].Rate += s.rate
	}
	for _, n := range nodes {
		g.Nodes = append(g.Nodes, *n)
	}
	slices.SortFunc(g.Nodes, func(a, b Node) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(g.Edges, func(a, b Edge) int {
		if c := strings.Compare(a.Source, b.Source); c != 0 {
			return c
		}
		return strings.Compare(a.Target, b.Target)
	})
	return g
}

// ServiceSignals computes a service's golden signals at each point:
// what its clients reported (reporter="source"), or its own proxies'
// reports when no client reports it.
func ServiceSignals(points []Rates) []Signals {
	out := make([]Signals, 0, len(points))
	for _, r := range points {
		reporter := "destination"
		for _, s := range r.Requests {
			if s.Labels["reporter"] == "source" {
				reporter = "source"
				break
			}
		}
		var st stat
		for _, s := range r.Requests {
			if s.Labels["reporter"] == reporter {
				st.add(s.Labels, s.Value)
			}
		}
		for _, b := range r.Buckets {
			if b.Labels["reporter"] == reporter {
				st.addBucket(b.Labels, b.Value)
			}
		}
		out = append(out, Signals{At: r.At, Rate: st.rate, ErrorRate: st.errorRate(),
			P50: quantile(0.5, st.buckets), P99: quantile(0.99, st.buckets), NoData: len(r.Requests) == 0})
	}
	return out
}
