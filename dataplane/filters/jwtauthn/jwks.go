package jwtauthn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

const (
	// defaultCacheDuration is Envoy's default remote JWKS cache lifetime.
	defaultCacheDuration = 10 * time.Minute
	// defaultFailedRefetch is JwksAsyncFetch.failed_refetch_duration's default.
	defaultFailedRefetch = time.Second
	// maxJWKSBytes bounds a JWKS response; real sets are a few KB.
	maxJWKSBytes = 1 << 20
)

// fetchEnv is what compiling a config needs from the filter's world:
// clusters to fetch remote JWKS through, a clock, a logger and counters.
type fetchEnv struct {
	clusters            core.ClusterSet
	logger              *slog.Logger
	now                 func() time.Time
	fetchOK, fetchF     *stats.Counter
	cacheHit, cacheMiss *stats.Counter
}

// keySet is one fetched JWKS and when it stops being fresh.
type keySet struct {
	keys    []*jwk
	expires time.Time
}

// remoteJWKS is a JWKS fetched through a cluster of the proxy and cached.
// The request path reads the current set through an atomic pointer; a
// request finding it stale starts one refresh in the background and keeps
// using the stale keys, so an unreachable JWKS server does not fail tokens
// that verified a moment ago. Only a request finding no keys at all waits
// for a fetch.
type remoteJWKS struct {
	env        fetchEnv
	rawURI     string
	cluster    string
	timeout    time.Duration
	cacheDur   time.Duration
	async      bool
	failedWait time.Duration
	retries    int
	backoff    time.Duration
	maxBackoff time.Duration

	cur atomic.Pointer[keySet]
	// nextTry holds back fetches after a failure (unix nanoseconds):
	// failed_refetch_duration in async mode, and for stale-key refreshes
	// always, so a down JWKS server is not hit by every request.
	nextTry atomic.Int64

	mu       sync.Mutex // guards inflight
	inflight chan struct{}
}

func newRemoteJWKS(pb *jwtv3.RemoteJwks, env fetchEnv) (*remoteJWKS, error) {
	hu := pb.GetHttpUri()
	if hu == nil {
		return nil, errors.New("http_uri: is required")
	}
	u, err := url.Parse(hu.GetUri())
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("http_uri.uri: %q is not an http(s) URL", hu.GetUri())
	}
	if hu.GetCluster() == "" {
		return nil, errors.New("http_uri.cluster: is required (the cluster the JWKS is fetched through)")
	}
	r := &remoteJWKS{
		env: env, rawURI: hu.GetUri(), cluster: hu.GetCluster(),
		timeout: time.Second, cacheDur: defaultCacheDuration, failedWait: defaultFailedRefetch,
	}
	if t := hu.GetTimeout(); t != nil {
		if r.timeout = t.AsDuration(); r.timeout <= 0 {
			return nil, errors.New("http_uri.timeout: must be positive")
		}
	}
	if d := pb.GetCacheDuration(); d != nil {
		if r.cacheDur = d.AsDuration(); r.cacheDur <= 0 {
			return nil, errors.New("cache_duration: must be positive")
		}
	}
	if af := pb.GetAsyncFetch(); af != nil {
		r.async = true
		if d := af.GetFailedRefetchDuration(); d != nil && d.AsDuration() > 0 {
			r.failedWait = d.AsDuration()
		}
	}
	if rp := pb.GetRetryPolicy(); rp != nil {
		r.retries = 1
		if n := rp.GetNumRetries(); n != nil {
			r.retries = int(min(n.GetValue(), 10))
		}
		r.backoff = time.Second
		if b := rp.GetRetryBackOff(); b != nil {
			if d := b.GetBaseInterval(); d != nil && d.AsDuration() > 0 {
				r.backoff = d.AsDuration()
			}
			r.maxBackoff = 10 * r.backoff
			if d := b.GetMaxInterval(); d != nil && d.AsDuration() > 0 {
				r.maxBackoff = d.AsDuration()
			}
		}
		if r.maxBackoff == 0 {
			r.maxBackoff = 10 * r.backoff
		}
	}
	return r, nil
}

// start fetches ahead of the first request when async_fetch is set.
func (r *remoteJWKS) start() {
	if r.async {
		r.refresh()
	}
}

func (r *remoteJWKS) keys() ([]*jwk, status) {
	ks := r.cur.Load()
	if ks != nil {
		if now := r.env.now(); now.After(ks.expires) && now.UnixNano() >= r.nextTry.Load() {
			r.refresh()
		}
		return ks.keys, statusOK
	}
	if r.async && r.env.now().UnixNano() < r.nextTry.Load() {
		return nil, statusJwksFetchFail
	}
	done := r.refresh()
	t := time.NewTimer(r.timeout*time.Duration(r.retries+1) + r.maxBackoff*time.Duration(r.retries))
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
	if ks := r.cur.Load(); ks != nil {
		return ks.keys, statusOK
	}
	return nil, statusJwksFetchFail
}

// renewStale is for a token whose kid the keys it was checked against
// (used) lack: when those keys are past cache_duration (the issuer may have
// rotated), it waits for the refresh and returns the newer keys; ok is
// false when it has nothing newer to offer.
func (r *remoteJWKS) renewStale(used []*jwk) (keys []*jwk, ok bool) {
	newer := func() ([]*jwk, bool) {
		ks := r.cur.Load()
		if ks == nil || len(ks.keys) == 0 || len(used) == 0 || ks.keys[0] == used[0] {
			return nil, false
		}
		return ks.keys, true
	}
	if k, ok := newer(); ok {
		return k, true
	}
	ks := r.cur.Load()
	if ks == nil || !r.env.now().After(ks.expires) || r.env.now().UnixNano() < r.nextTry.Load() {
		return nil, false
	}
	t := time.NewTimer(r.timeout)
	defer t.Stop()
	select {
	case <-r.refresh():
	case <-t.C:
	}
	return newer()
}

// refresh starts a fetch unless one is running; the channel closes when
// the running fetch ends.
func (r *remoteJWKS) refresh() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.inflight != nil {
		return r.inflight
	}
	ch := make(chan struct{})
	r.inflight = ch
	go func() {
		defer func() {
			r.mu.Lock()
			r.inflight = nil
			r.mu.Unlock()
			close(ch)
		}()
		r.fetchWithRetries()
	}()
	return ch
}

func (r *remoteJWKS) fetchWithRetries() {
	var err error
	for attempt := 0; attempt <= r.retries; attempt++ {
		if attempt > 0 {
			d := min(r.backoff<<(attempt-1), r.maxBackoff)
			time.Sleep(d/2 + rand.N(d/2+1))
		}
		var keys []*jwk
		if keys, err = r.fetch(); err == nil {
			r.env.fetchOK.Inc()
			r.cur.Store(&keySet{keys: keys, expires: r.env.now().Add(r.cacheDur)})
			return
		}
		r.env.fetchF.Inc()
	}
	r.nextTry.Store(r.env.now().Add(r.failedWait).UnixNano())
	r.env.logger.Warn("jwt_authn: fetching remote JWKS failed; cached keys (if any) stay in use",
		"uri", r.rawURI, "cluster", r.cluster, "error", err)
}

// fetch GETs the JWKS through the cluster, as Envoy's async client does.
func (r *remoteJWKS) fetch() ([]*jwk, error) {
	cl := r.env.clusters.Cluster(r.cluster)
	if cl == nil {
		return nil, fmt.Errorf("cluster %q is unknown", r.cluster)
	}
	h := cl.ChooseHost(&core.LBContext{})
	if h == nil {
		return nil, fmt.Errorf("cluster %q has no healthy host", r.cluster)
	}
	if !cl.AcquireRequest() {
		return nil, fmt.Errorf("cluster %q: max_requests circuit breaker is open", r.cluster)
	}
	defer cl.ReleaseRequest()
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.rawURI, nil)
	if err != nil {
		return nil, err
	}
	cs := cl.Stats()
	cs.RqTotal.Inc()
	resp, err := h.RoundTrip(req)
	if err != nil {
		h.Observe(0, err)
		return nil, err
	}
	defer resp.Body.Close()
	cs.CountStatus(resp.StatusCode)
	h.Observe(resp.StatusCode, nil)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %d", r.rawURI, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes))
	if err != nil {
		return nil, err
	}
	keys, st := parseJWKS(body)
	if st != statusOK {
		return nil, fmt.Errorf("%s: %s", r.rawURI, st)
	}
	return keys, nil
}
