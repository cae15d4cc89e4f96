// Package dashboard owns Skiff's mesh dashboard (Kiali's job, in small): a
// live service graph of workloads and services with request rate, 5xx
// share, p99 latency and the mTLS lock per edge; a page per service with
// its golden signals over time and the config that applies to it, with
// skiffd's validation messages; and each proxy's xDS sync state. The
// numbers come from Istio's standard metrics, read from a Prometheus
// server when one is configured (Prometheus) or scraped from the proxies
// by the dashboard itself (Scraper). skiffd serves it under /dashboard/
// on its monitoring port; `skiff dashboard` serves it locally. Every
// asset is embedded: the page makes no request beyond its own origin.
package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"time"
)

//go:embed web
var webFS embed.FS

// Options are the dashboard's data sources. A nil one makes its part of
// the page say what is missing.
type Options struct {
	// Source gives the metrics (a *Prometheus or a *Scraper).
	Source Source
	// Config reads the config that can apply to services, with
	// validation messages (StoreConfig in skiffd, RemoteConfig elsewhere).
	Config func(context.Context) (*ConfigView, error)
	// Syncz returns skiffd's per-proxy sync state, as /debug/syncz shows
	// it (a []xds.ProxyStatus, or its JSON).
	Syncz func(context.Context) (any, error)
	// Window is the rate window of the graph (default 1m).
	Window time.Duration
}

// Handler serves the dashboard under /dashboard/ (the page, static/…
// and api/…); mount it there, no prefix stripping needed.
func Handler(o Options) http.Handler {
	if o.Window <= 0 {
		o.Window = time.Minute
	}
	static, err := fs.Sub(webFS, "web")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServerFS(static)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "the dashboard is read-only: use GET", http.StatusMethodNotAllowed)
			return
		}
		// Only what the page asks for: the same origin, nothing inline
		// from elsewhere.
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'")
		path := r.URL.Path
		i := strings.Index(path, "/dashboard/")
		if i >= 0 {
			path = path[i+len("/dashboard/"):]
		} else {
			path = strings.TrimPrefix(path, "/")
		}
		switch {
		case path == "" || path == "index.html":
			serveFile(w, r, static, "index.html")
		case strings.HasPrefix(path, "static/"):
			r2 := r.Clone(r.Context())
			r2.URL.Path = "/" + strings.TrimPrefix(path, "static/")
			files.ServeHTTP(w, r2)
		case path == "api/graph":
			o.graph(w, r)
		case path == "api/service":
			o.service(w, r)
		case path == "api/config":
			o.config(w, r)
		case path == "api/syncz":
			o.syncz(w, r)
		case path == "api/source":
			o.source(w, r)
		default:
			http.Error(w, fmt.Sprintf("no dashboard page %q: open /dashboard/", path), http.StatusNotFound)
		}
	})
}

func serveFile(w http.ResponseWriter, r *http.Request, fsys fs.FS, name string) {
	b, err := fs.ReadFile(fsys, name)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(b)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v) // the page went away
}

func unavailable(w http.ResponseWriter, what string) {
	http.Error(w, what, http.StatusServiceUnavailable)
}

// duration reads a query parameter as a Go duration or seconds.
func duration(r *http.Request, name string, def, min, max time.Duration) (time.Duration, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		secs, err2 := strconv.Atoi(s)
		if err2 != nil {
			return 0, fmt.Errorf("query parameter %s=%q: want a duration such as 1m or 30s", name, s)
		}
		d = time.Duration(secs) * time.Second
	}
	return max2(min, min2(d, max)), nil
}

func min2(a, b time.Duration) time.Duration {
	if a < b {
		return a
	}
	return b
}

func max2(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}

func (o Options) graph(w http.ResponseWriter, r *http.Request) {
	if o.Source == nil {
		unavailable(w, "no metrics source: start the dashboard with --prometheus URL, or against a mesh whose proxies it can scrape")
		return
	}
	window, err := duration(r, "window", o.Window, 5*time.Second, time.Hour)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	now := time.Now()
	rs, err := o.Source.RatesRange(r.Context(), now, now, 0, window, nil)
	if err != nil {
		http.Error(w, "reading the metrics: "+err.Error(), http.StatusBadGateway)
		return
	}
	var rates Rates
	if len(rs) > 0 {
		rates = rs[len(rs)-1]
	}
	writeJSON(w, BuildGraph(rates, window, o.Source.Describe()))
}

// ServicePage is what /api/service answers.
type ServicePage struct {
	Name      string         `json:"name"`
	Namespace string         `json:"namespace"`
	Signals   []Signals      `json:"signals"`
	SignalErr string         `json:"signals_error,omitempty"`
	Config    []ConfigObject `json:"config"`
	ConfigErr string         `json:"config_error,omitempty"`
	Messages  []Message      `json:"messages,omitempty"`
}

func (o Options) service(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p := ServicePage{Name: q.Get("name"), Namespace: q.Get("namespace"), Signals: []Signals{}, Config: []ConfigObject{}}
	if p.Name == "" || p.Namespace == "" {
		http.Error(w, "service needs ?namespace=NS&name=NAME (a service of the graph)", http.StatusBadRequest)
		return
	}
	span, err := duration(r, "span", 15*time.Minute, time.Minute, 24*time.Hour)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	window, err := duration(r, "window", o.Window, 5*time.Second, time.Hour)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	step := max2(span/60, 5*time.Second)
	if o.Source == nil {
		p.SignalErr = "no metrics source"
	} else {
		end := time.Now()
		rs, err := o.Source.RatesRange(r.Context(), end.Add(-span), end, step, window,
			map[string]string{"destination_service_name": p.Name, "destination_service_namespace": p.Namespace})
		if err != nil {
			p.SignalErr = err.Error()
		} else {
			p.Signals = ServiceSignals(rs)
		}
	}
	if o.Config == nil {
		p.ConfigErr = "no config source"
	} else if v, err := o.Config(r.Context()); err != nil {
		p.ConfigErr = err.Error()
	} else {
		p.Config = AppliesTo(v, p.Name, p.Namespace)
		p.Messages = v.Messages
	}
	writeJSON(w, p)
}

func (o Options) config(w http.ResponseWriter, r *http.Request) {
	if o.Config == nil {
		unavailable(w, "no config source: the dashboard reads config from skiffd (--skiffd ADDR or a running local mesh)")
		return
	}
	v, err := o.Config(r.Context())
	if err != nil {
		http.Error(w, "reading the config: "+err.Error(), http.StatusBadGateway)
		return
	}
	writeJSON(w, v)
}

func (o Options) syncz(w http.ResponseWriter, r *http.Request) {
	if o.Syncz == nil {
		unavailable(w, "no sync state: the dashboard reads it from skiffd (--skiffd ADDR or a running local mesh)")
		return
	}
	v, err := o.Syncz(r.Context())
	if err != nil {
		http.Error(w, "reading skiffd's sync state: "+err.Error(), http.StatusBadGateway)
		return
	}
	writeJSON(w, v)
}

func (o Options) source(w http.ResponseWriter, _ *http.Request) {
	out := struct {
		Source string            `json:"source"`
		Errors map[string]string `json:"scrape_errors,omitempty"`
	}{Source: "none"}
	if o.Source != nil {
		out.Source = o.Source.Describe()
	}
	if s, ok := o.Source.(*Scraper); ok {
		out.Errors = s.Errors()
	}
	writeJSON(w, out)
}

// Remote reads the config and the sync state from a skiffd's monitoring
// address (host:port): its /dashboard/api/config and /debug/syncz.
func Remote(addr string) (config func(context.Context) (*ConfigView, error), syncz func(context.Context) (any, error)) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
	get := func(ctx context.Context, path string, out any) error {
		u := "http://" + addr + path
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			return fmt.Errorf("skiffd at %s: %w (is it running? skiff status)", addr, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		if err != nil {
			return fmt.Errorf("GET %s: %w", u, err)
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s: %s", u, resp.Status, strings.TrimSpace(string(b)))
		}
		return json.Unmarshal(b, out)
	}
	config = func(ctx context.Context) (*ConfigView, error) {
		var v ConfigView
		if err := get(ctx, "/dashboard/api/config", &v); err != nil {
			return nil, err
		}
		return &v, nil
	}
	syncz = func(ctx context.Context) (any, error) {
		var v json.RawMessage
		if err := get(ctx, "/debug/syncz", &v); err != nil {
			return nil, err
		}
		return v, nil
	}
	return config, syncz
}

// SynczTargets lists the proxies to scrape from skiffd's sync state: the
// first IP of every connected proxy, on Istio's stats port 15090.
func SynczTargets(syncz func(context.Context) (any, error)) func(context.Context) ([]Target, error) {
	return func(ctx context.Context) ([]Target, error) {
		v, err := syncz(ctx)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		var proxies []struct {
			ProxyID string   `json:"proxy_id"`
			IPs     []string `json:"ips"`
		}
		if err := json.Unmarshal(b, &proxies); err != nil {
			return nil, errors.New("skiffd's /debug/syncz is not a list of proxies: " + err.Error())
		}
		seen := map[string]bool{}
		var out []Target
		for _, p := range proxies {
			if len(p.IPs) == 0 || seen[p.IPs[0]] {
				continue
			}
			seen[p.IPs[0]] = true
			out = append(out, Target{Name: p.ProxyID, URL: ProxyStatsURL(p.IPs[0])})
		}
		return out, nil
	}
}

// ForSkiffd is the dashboard skiffd mounts at /dashboard/ on its
// monitoring port: config from its store, sync state from its ADS server,
// metrics scraped from the connected proxies (only while the page is in
// use) until ctx ends.
func ForSkiffd(ctx context.Context, store func(context.Context) (*ConfigView, error), status func() any) http.Handler {
	syncz := func(context.Context) (any, error) { return status(), nil }
	s := &Scraper{Targets: SynczTargets(syncz), IdleAfter: 2 * time.Minute}
	go s.Run(ctx)
	return Handler(Options{Source: s, Config: store, Syncz: syncz})
}
