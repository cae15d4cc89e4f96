package dashboard

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Target is one proxy's Prometheus endpoint.
type Target struct {
	Name string // "namespace/pod", for messages
	URL  string // http://IP:15090/stats/prometheus
}

// ProxyStatsURL is the URL of the Istio stats port of a proxy at ip.
func ProxyStatsURL(ip string) string {
	return "http://" + net.JoinHostPort(ip, "15090") + "/stats/prometheus"
}

// Scraper is the Source used without Prometheus: it scrapes every
// proxy's stats every Interval, keeps the last Keep scrapes, and computes
// rates from them as PromQL's rate() would (counter resets included).
type Scraper struct {
	// Targets lists the proxies to scrape; called before every round, so
	// pods that come and go are followed.
	Targets func(ctx context.Context) ([]Target, error)
	// Interval between rounds (default 5 s); Keep scrapes are kept
	// (default 180: 15 minutes at 5 s).
	Interval time.Duration
	Keep     int
	// Client does the scrapes (default: 3 s timeout, no proxy from the
	// environment: the proxies are on local addresses).
	Client *http.Client

	// IdleAfter, when set, pauses scraping once nobody has read the
	// rates for that long (skiffd scrapes only while the page is open);
	// the next read resumes it.
	IdleAfter time.Duration

	once     sync.Once
	mu       sync.Mutex
	snaps    []snapshot
	errs     map[string]string // target → last scrape error
	lastRead time.Time
	kick     chan struct{}
}

// snapshot is one round: per target, series summed over edgeLabels.
type snapshot struct {
	at      time.Time
	targets map[string]map[string]point // target → series key → point
}

type point struct {
	labels map[string]string
	value  float64
	bucket bool
}

func (s *Scraper) defaults() { s.once.Do(s.setDefaults) }

func (s *Scraper) setDefaults() {
	if s.Interval <= 0 {
		s.Interval = 5 * time.Second
	}
	if s.Keep <= 0 {
		s.Keep = 180
	}
	if s.kick == nil {
		s.kick = make(chan struct{}, 1)
	}
	if s.Client == nil {
		s.Client = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{Proxy: nil}}
	}
}

// Run scrapes until ctx ends.
func (s *Scraper) Run(ctx context.Context) {
	s.defaults()
	t := time.NewTicker(s.Interval)
	defer t.Stop()
	for {
		if !s.idle() {
			s.Scrape(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
	}
}

func (s *Scraper) idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.IdleAfter > 0 && time.Since(s.lastRead) > s.IdleAfter
}

// Scrape does one round now.
func (s *Scraper) Scrape(ctx context.Context) {
	s.defaults()
	targets, err := s.Targets(ctx)
	snap := snapshot{at: time.Now(), targets: map[string]map[string]point{}}
	errs := map[string]string{}
	if err != nil {
		errs["targets"] = err.Error()
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, tg := range targets {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			pts, err := s.scrapeOne(ctx, tg)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs[tg.Name] = err.Error()
				return
			}
			snap.targets[tg.Name] = pts
		}()
	}
	wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.snaps = append(s.snaps, snap)
	if len(s.snaps) > s.Keep {
		s.snaps = append(s.snaps[:0:0], s.snaps[len(s.snaps)-s.Keep:]...)
	}
	s.errs = errs
}

// Errors are the last round's failed scrapes, by target.
func (s *Scraper) Errors() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.errs
}

func (s *Scraper) scrapeOne(ctx context.Context, tg Target) (map[string]point, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, tg.URL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := s.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return nil, fmt.Errorf("GET %s: %s: %s", tg.URL, resp.Status, b)
	}
	pts, err := parseExposition(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", tg.URL, err)
	}
	return pts, nil
}

// parseExposition reads Prometheus text exposition and keeps Istio's
// request counter and duration buckets, summed over edgeLabels; the key
// of each point is its metric and labels.
func parseExposition(r io.Reader) (map[string]point, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	out := map[string]point{}
	add := func(bucket bool, labels map[string]string, v float64) {
		names := edgeLabels
		if bucket {
			names = append(names[:len(names):len(names)], "le")
		}
		k := strconv.FormatBool(bucket) + "\x01" + keyOf(labels, names)
		pt, ok := out[k]
		if !ok {
			pt = point{labels: project(labels, names), bucket: bucket}
		}
		pt.value += v
		out[k] = pt
	}
	labelsOf := func(m *dto.Metric) map[string]string {
		l := make(map[string]string, len(m.GetLabel()))
		for _, lp := range m.GetLabel() {
			l[lp.GetName()] = lp.GetValue()
		}
		return l
	}
	if f := fams[requestsTotal]; f != nil {
		for _, m := range f.GetMetric() {
			v := m.GetCounter().GetValue()
			if m.Counter == nil {
				v = m.GetUntyped().GetValue()
			}
			add(false, labelsOf(m), v)
		}
	}
	if f := fams[requestDuration]; f != nil {
		for _, m := range f.GetMetric() {
			h := m.GetHistogram()
			if h == nil {
				continue
			}
			l := labelsOf(m)
			inf := false
			for _, b := range h.GetBucket() {
				bl := cloneWith(l, "le", formatLE(b.GetUpperBound()))
				inf = inf || math.IsInf(b.GetUpperBound(), 1)
				add(true, bl, float64(b.GetCumulativeCount()))
			}
			if !inf {
				add(true, cloneWith(l, "le", "+Inf"), float64(h.GetSampleCount()))
			}
		}
	}
	// Without TYPE lines the buckets arrive as an untyped family.
	if f := fams[requestDuration+"_bucket"]; f != nil {
		for _, m := range f.GetMetric() {
			add(true, labelsOf(m), m.GetUntyped().GetValue()+m.GetCounter().GetValue())
		}
	}
	return out, nil
}

func cloneWith(l map[string]string, k, v string) map[string]string {
	out := make(map[string]string, len(l)+1)
	for a, b := range l {
		out[a] = b
	}
	out[k] = v
	return out
}

func formatLE(f float64) string {
	if math.IsInf(f, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// Describe implements Source.
func (s *Scraper) Describe() string {
	s.defaults()
	return fmt.Sprintf("the proxies, scraped by the dashboard every %s", s.Interval)
}

// RatesRange implements Source from the kept scrapes: at each time, the
// increase from the last scrape at or before t-window (or the oldest one
// kept) to the last scrape at or before t, over the time between them.
func (s *Scraper) RatesRange(_ context.Context, start, end time.Time, step, window time.Duration, match map[string]string) ([]Rates, error) {
	s.defaults()
	s.mu.Lock()
	wasIdle := s.IdleAfter > 0 && time.Since(s.lastRead) > s.IdleAfter
	s.lastRead = time.Now()
	snaps := s.snaps
	s.mu.Unlock()
	if wasIdle {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	var out []Rates
	for _, t := range steps(start, end, step) {
		r := Rates{At: t, Requests: []Sample{}, Buckets: []Sample{}}
		b := lastAtOrBefore(snaps, t.Add(s.Interval/2))
		a := lastAtOrBefore(snaps, t.Add(-window))
		if a < 0 && b > 0 {
			a = 0
		}
		if a >= 0 && b > a {
			r.Requests, r.Buckets = increase(snaps[a], snaps[b], match)
		}
		out = append(out, r)
	}
	return out, nil
}

func lastAtOrBefore(snaps []snapshot, t time.Time) int {
	i := -1
	for j := range snaps {
		if snaps[j].at.After(t) {
			break
		}
		i = j
	}
	return i
}

// increase is the per-second increase of every series from a to b. A
// series (or proxy) b has and a has not started from zero since; a value
// that went down was reset, and counts from zero.
func increase(a, b snapshot, match map[string]string) (req, buckets []Sample) {
	secs := b.at.Sub(a.at).Seconds()
	req, buckets = []Sample{}, []Sample{}
	for tg, pts := range b.targets {
		old := a.targets[tg]
		for k, p := range pts {
			if !matches(p.labels, match) {
				continue
			}
			d := p.value
			if o, ok := old[k]; ok && o.value <= p.value {
				d = p.value - o.value
			}
			s := Sample{Labels: p.labels, Value: d / secs}
			if p.bucket {
				buckets = append(buckets, s)
			} else {
				req = append(req, s)
			}
		}
	}
	names := append(edgeLabels[:len(edgeLabels):len(edgeLabels)], "le")
	return sumBy(req, edgeLabels), sumBy(buckets, names)
}
