package echo

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// LoadOptions describes one load run.
type LoadOptions struct {
	URL         string
	Requests    int           // total requests; at least 1
	QPS         float64       // requests per second over all workers; 0 sends as fast as answers come
	Concurrency int           // workers, each with one request in flight; at least 1
	Timeout     time.Duration // per request; 0 means 10 s
	MaxDuration time.Duration // the whole run stops here even if requests remain; 0 means 5 min
	Header      http.Header   // sent on every request (Host is honoured)
	H2C         bool          // HTTP/2 without TLS (prior knowledge) instead of HTTP/1.1
}

// LoadResult counts what a run saw.
type LoadResult struct {
	Sent     int
	Errors   int // requests with no response (refused, reset, timed out)
	Duration time.Duration
	Versions map[string]int // responses by the ServiceVersion the echo server reported ("-" when none)
	Codes    map[int]int    // responses by status code
	FirstErr string         // the first error, to show what went wrong
}

// Load sends o.Requests GET requests to o.URL and counts the answers by
// version and status code. It stops early when ctx ends or MaxDuration passes.
func Load(ctx context.Context, o LoadOptions) (LoadResult, error) {
	if o.Requests < 1 || o.Concurrency < 1 || o.QPS < 0 {
		return LoadResult{}, fmt.Errorf("load: requests (%d) and concurrency (%d) must be at least 1 and qps (%g) not negative", o.Requests, o.Concurrency, o.QPS)
	}
	req, err := http.NewRequest(http.MethodGet, o.URL, nil)
	if err != nil || (req.URL.Scheme != "http" && req.URL.Scheme != "https") {
		return LoadResult{}, fmt.Errorf("load: URL %q: want http://host:port/path", o.URL)
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	if o.MaxDuration == 0 {
		o.MaxDuration = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, o.MaxDuration)
	defer cancel()

	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: o.Concurrency}
	if o.H2C {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: o.Timeout}

	jobs := make(chan struct{})
	go func() {
		defer close(jobs)
		start := time.Now()
		for i := range o.Requests {
			if o.QPS > 0 {
				next := start.Add(time.Duration(float64(i) / o.QPS * float64(time.Second)))
				t := time.NewTimer(time.Until(next))
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return
				}
			}
			select {
			case jobs <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
	}()

	res := LoadResult{Versions: map[string]int{}, Codes: map[int]int{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for range o.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				version, code, err := once(ctx, client, o)
				mu.Lock()
				res.Sent++
				if err != nil {
					res.Errors++
					if res.FirstErr == "" {
						res.FirstErr = err.Error()
					}
				} else {
					res.Versions[version]++
					res.Codes[code]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.Duration = time.Since(start)
	return res, nil
}

func once(ctx context.Context, client *http.Client, o LoadOptions) (string, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.URL, nil)
	if err != nil {
		return "", 0, err
	}
	for k, v := range o.Header {
		req.Header[k] = v
	}
	if h := o.Header.Get("Host"); h != "" {
		req.Host = h
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	version := resp.Header.Get("X-Echo-Version")
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 1<<20))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "ServiceVersion="); ok {
			version = v
			break
		}
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if version == "" {
		version = "-"
	}
	return version, resp.StatusCode, nil
}

// Print writes the run's summary: totals, then answers per version and per
// status code with their share.
func (r LoadResult) Print(w io.Writer) {
	qps := 0.0
	if r.Duration > 0 {
		qps = float64(r.Sent) / r.Duration.Seconds()
	}
	fmt.Fprintf(w, "%d requests in %v (%.1f qps), %d without a response\n", r.Sent, r.Duration.Round(time.Millisecond), qps, r.Errors)
	if r.FirstErr != "" {
		fmt.Fprintf(w, "first error: %s\n", r.FirstErr)
	}
	answered := r.Sent - r.Errors
	versions := make([]string, 0, len(r.Versions))
	for v := range r.Versions {
		versions = append(versions, v)
	}
	sort.Strings(versions)
	fmt.Fprintf(w, "%-10s %8s %8s\n", "VERSION", "COUNT", "PERCENT")
	for _, v := range versions {
		fmt.Fprintf(w, "%-10s %8d %7.1f%%\n", v, r.Versions[v], pct(r.Versions[v], answered))
	}
	codes := make([]int, 0, len(r.Codes))
	for c := range r.Codes {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	fmt.Fprintf(w, "%-10s %8s %8s\n", "CODE", "COUNT", "PERCENT")
	for _, c := range codes {
		fmt.Fprintf(w, "%-10d %8d %7.1f%%\n", c, r.Codes[c], pct(r.Codes[c], answered))
	}
}

func pct(n, of int) float64 {
	if of == 0 {
		return 0
	}
	return 100 * float64(n) / float64(of)
}
