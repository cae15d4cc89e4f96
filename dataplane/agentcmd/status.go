package agentcmd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"
)

// statusHandlers are pilot-agent's status port (15020) and the health
// port (15021, Envoy's listener in Istio, served here directly).
type statusHandlers struct {
	ready   func() error // nil: ready
	quit    func()
	drain   func()
	probes  *appProber
	stats   http.Handler // the proxy's own Prometheus rendering
	appProm *promScrape  // nil unless ISTIO_PROMETHEUS_ANNOTATIONS asks
	log     *slog.Logger
}

// promScrape is ISTIO_PROMETHEUS_ANNOTATIONS: the app's metrics endpoint,
// from its prometheus.io/* annotations, merged into /stats/prometheus.
type promScrape struct {
	Scrape string `json:"scrape"`
	Path   string `json:"path"`
	Port   string `json:"port"`
}

func parsePromScrape(s string, statusPort int) (*promScrape, error) {
	if s == "" {
		return nil, nil
	}
	var p promScrape
	if err := json.Unmarshal([]byte(s), &p); err != nil {
		return nil, fmt.Errorf("environment ISTIO_PROMETHEUS_ANNOTATIONS: %v; want {\"scrape\":\"true\",\"path\":\"/metrics\",\"port\":\"8080\"}", err)
	}
	if p.Scrape == "false" {
		return nil, nil
	}
	if p.Path == "" {
		p.Path = "/metrics"
	}
	if p.Port == "" {
		p.Port = "80"
	}
	if n, err := strconv.Atoi(p.Port); err != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("environment ISTIO_PROMETHEUS_ANNOTATIONS: port %q is not a port number", p.Port)
	} else if n == statusPort {
		return nil, fmt.Errorf("environment ISTIO_PROMETHEUS_ANNOTATIONS: port %s is the status port itself, which would scrape in a loop; fix the pod's prometheus.io/port annotation", p.Port)
	}
	return &p, nil
}

func (s *statusHandlers) statusMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz/ready", s.handleReady)
	mux.Handle("/app-health/", s.probes)
	mux.HandleFunc("/quitquitquit", s.localPost(s.quit, "exiting"))
	mux.HandleFunc("/drain", s.localPost(s.drain, "draining"))
	mux.HandleFunc("/stats/prometheus", s.handleStats)
	mux.HandleFunc("/metrics", s.handleStats)
	return mux
}

func (s *statusHandlers) healthMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz/ready", s.handleReady)
	return mux
}

func (s *statusHandlers) handleReady(w http.ResponseWriter, _ *http.Request) {
	if err := s.ready(); err != nil {
		http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// localPost guards pilot-agent's state-changing endpoints: POST, from the
// pod itself.
func (s *statusHandlers) localPost(f func(), what string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !fromLocalhost(r) {
			http.Error(w, "Only requests from localhost are allowed", http.StatusForbidden)
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "Method Not Allowed: use POST", http.StatusMethodNotAllowed)
			return
		}
		s.log.Info("status server: "+what, "path", r.URL.Path)
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "OK")
		f()
	}
}

func fromLocalhost(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// handleStats is the merged scrape: the proxy's metrics, then the app's
// (last, as an OpenMetrics "# EOF" must end the exposition). An app that
// fails to answer costs its metrics, never the proxy's.
func (s *statusHandlers) handleStats(w http.ResponseWriter, r *http.Request) {
	var app io.ReadCloser
	contentType := "text/plain; version=0.0.4; charset=utf-8"
	if s.appProm != nil {
		ctx := r.Context()
		if t := r.Header.Get("X-Prometheus-Scrape-Timeout-Seconds"); t != "" {
			if secs, err := strconv.ParseFloat(t, 64); err == nil && secs > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, time.Duration(secs*float64(time.Second)))
				defer cancel()
			}
		}
		url := "http://" + net.JoinHostPort("localhost", s.appProm.Port) + s.appProm.Path
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err == nil {
			for _, h := range []string{"Accept", "User-Agent", "X-Prometheus-Scrape-Timeout-Seconds"} {
				if v := r.Header.Get(h); v != "" {
					req.Header.Set(h, v)
				}
			}
			var resp *http.Response
			if resp, err = http.DefaultClient.Do(req); err == nil {
				if resp.StatusCode == http.StatusOK {
					app = resp.Body
					if ct := resp.Header.Get("Content-Type"); ct != "" {
						contentType = ct
					}
				} else {
					resp.Body.Close()
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
		}
		if err != nil {
			s.log.Warn("could not scrape the application's metrics", "url", url, "err", err)
		}
	}
	if app != nil {
		defer app.Close()
	}
	w.Header().Set("Content-Type", contentType)
	// The proxy's exposition is rendered into a buffer so its own headers
	// do not win over the app's content type.
	rec := &bufferWriter{header: http.Header{}}
	s.stats.ServeHTTP(rec, r)
	w.Write(rec.buf)
	if app != nil {
		io.Copy(w, app)
	}
}

type bufferWriter struct {
	header http.Header
	buf    []byte
}

func (b *bufferWriter) Header() http.Header         { return b.header }
func (b *bufferWriter) WriteHeader(int)             {}
func (b *bufferWriter) Write(p []byte) (int, error) { b.buf = append(b.buf, p...); return len(p), nil }
