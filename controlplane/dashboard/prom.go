package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Prometheus is the Source backed by a Prometheus server's HTTP API
// (/api/v1/query and /api/v1/query_range), queried with PromQL on Istio's
// metric names, as Kiali does.
type Prometheus struct {
	URL    string // e.g. http://127.0.0.1:9090
	Client *http.Client
}

func (p *Prometheus) client() *http.Client {
	if p.Client != nil {
		return p.Client
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
}

// Describe implements Source.
func (p *Prometheus) Describe() string { return "Prometheus at " + p.URL }

// Queries are the PromQL expressions the dashboard sends for a window and
// a label match: the request rates and the duration buckets' rates,
// summed over the labels the graph tells calls apart by.
func Queries(window time.Duration, match map[string]string) (requests, buckets string) {
	sel := selector(match)
	by := strings.Join(edgeLabels, ", ")
	w := promDuration(window)
	requests = fmt.Sprintf("sum by (%s) (rate(%s%s[%s]))", by, requestsTotal, sel, w)
	buckets = fmt.Sprintf("sum by (le, %s) (rate(%s_bucket%s[%s]))", by, requestDuration, sel, w)
	return requests, buckets
}

// promDuration writes a duration as a PromQL duration (whole seconds).
func promDuration(d time.Duration) string {
	s := int64(math.Ceil(d.Seconds()))
	if s < 1 {
		s = 1
	}
	return strconv.FormatInt(s, 10) + "s"
}

// selector renders match as a PromQL label selector ("" for none).
func selector(match map[string]string) string {
	if len(match) == 0 {
		return ""
	}
	var parts []string
	for _, k := range sortedKeys(match) {
		parts = append(parts, k+"="+strconv.Quote(match[k]))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// RatesRange implements Source.
func (p *Prometheus) RatesRange(ctx context.Context, start, end time.Time, step, window time.Duration, match map[string]string) ([]Rates, error) {
	reqQ, bucketQ := Queries(window, match)
	ts := steps(start, end, step)
	out := make([]Rates, len(ts))
	for i, t := range ts {
		out[i] = Rates{At: t, Requests: []Sample{}, Buckets: []Sample{}}
	}
	for _, q := range []struct {
		expr string
		into func(*Rates) *[]Sample
	}{
		{reqQ, func(r *Rates) *[]Sample { return &r.Requests }},
		{bucketQ, func(r *Rates) *[]Sample { return &r.Buckets }},
	} {
		res, err := p.query(ctx, q.expr, ts, step)
		if err != nil {
			return nil, err
		}
		for _, s := range res {
			for _, v := range s.points {
				i := 0
				if len(ts) > 1 {
					i = int(math.Round(v.at.Sub(ts[0]).Seconds() / step.Seconds()))
				}
				if i < 0 || i >= len(out) || math.IsNaN(v.value) {
					continue
				}
				dst := q.into(&out[i])
				*dst = append(*dst, Sample{Labels: s.labels, Value: v.value})
			}
		}
	}
	return out, nil
}

type promSeries struct {
	labels map[string]string
	points []promPoint
}

type promPoint struct {
	at    time.Time
	value float64
}

// Query runs one instant PromQL query and returns its vector, for the
// tests and the CLI.
func (p *Prometheus) Query(ctx context.Context, expr string, at time.Time) ([]Sample, error) {
	res, err := p.query(ctx, expr, []time.Time{at}, 0)
	if err != nil {
		return nil, err
	}
	var out []Sample
	for _, s := range res {
		for _, v := range s.points {
			out = append(out, Sample{Labels: s.labels, Value: v.value})
		}
	}
	return out, nil
}

func (p *Prometheus) query(ctx context.Context, expr string, ts []time.Time, step time.Duration) ([]promSeries, error) {
	v := url.Values{"query": {expr}}
	path := "/api/v1/query"
	if len(ts) == 1 {
		v.Set("time", promTime(ts[0]))
	} else {
		path = "/api/v1/query_range"
		v.Set("start", promTime(ts[0]))
		v.Set("end", promTime(ts[len(ts)-1]))
		v.Set("step", strconv.FormatFloat(step.Seconds(), 'f', -1, 64))
	}
	u := strings.TrimRight(p.URL, "/") + path
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(v.Encode()))
	if err != nil {
		return nil, fmt.Errorf("prometheus URL %q: %w", p.URL, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := p.client().Do(req)
	if err != nil {
		return nil, fmt.Errorf("querying Prometheus at %s: %w (is it running? check --prometheus)", p.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("querying Prometheus at %s: %w", p.URL, err)
	}
	var r struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
		Data      struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  []any             `json:"value"`
				Values [][]any           `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("Prometheus at %s answered %s with something other than its API's JSON (%.100q): is --prometheus the server's base URL?", p.URL, resp.Status, body)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("Prometheus at %s refused %s: %s: %s", p.URL, expr, r.ErrorType, r.Error)
	}
	var out []promSeries
	for _, s := range r.Data.Result {
		ps := promSeries{labels: s.Metric}
		vals := s.Values
		if s.Value != nil {
			vals = [][]any{s.Value}
		}
		for _, pair := range vals {
			if pt, ok := parsePair(pair); ok {
				ps.points = append(ps.points, pt)
			}
		}
		out = append(out, ps)
	}
	return out, nil
}

func parsePair(pair []any) (promPoint, bool) {
	if len(pair) != 2 {
		return promPoint{}, false
	}
	sec, ok1 := pair[0].(float64)
	str, ok2 := pair[1].(string)
	if !ok1 || !ok2 {
		return promPoint{}, false
	}
	f, err := strconv.ParseFloat(str, 64)
	if err != nil {
		return promPoint{}, false
	}
	whole, frac := math.Modf(sec)
	return promPoint{at: time.Unix(int64(whole), int64(frac*1e9)), value: f}, true
}

func promTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixNano())/1e9, 'f', 3, 64)
}
