package kubeca

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/skiff-mesh/skiff/controlplane/ca"
)

// Defaults of TokenReviewOptions.
const (
	// DefaultAudience is the audience istio-agent asks for its token
	// (the istio-token projected volume) and istiod reviews it with.
	DefaultAudience  = "istio-ca"
	DefaultCacheTTL  = 30 * time.Second
	DefaultCacheSize = 4096
	DefaultTimeout   = 10 * time.Second
)

// serviceAccountPrefix starts the username the API server gives a
// service-account token: system:serviceaccount:<namespace>:<name>.
const serviceAccountPrefix = "system:serviceaccount:"

// TokenReviewOptions configure NewTokenReviewAuthenticator.
type TokenReviewOptions struct {
	// Audiences the token must be for; [DefaultAudience] when empty.
	Audiences []string
	// TrustDomain of the identities returned; empty means the CA's own.
	TrustDomain string
	// CacheTTL bounds how long an accepted token is remembered (never past
	// the token's own expiry); DefaultCacheTTL when zero, no cache when
	// negative. A revoked token stays accepted for at most this long.
	CacheTTL time.Duration
	// CacheSize bounds the number of remembered tokens; DefaultCacheSize when zero.
	CacheSize int
	// Timeout of one TokenReview call; DefaultTimeout when zero.
	Timeout time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// TokenReviewAuthenticator authenticates CreateCertificate callers by their
// Kubernetes service-account token, as istiod's KubeJWTAuthenticator does.
type TokenReviewAuthenticator struct {
	client kubernetes.Interface
	opts   TokenReviewOptions
	cache  *tokenCache // nil: no cache
}

// NewTokenReviewAuthenticator returns an authenticator that sends the
// caller's bearer token to the API server's TokenReview.
func NewTokenReviewAuthenticator(client kubernetes.Interface, opts TokenReviewOptions) *TokenReviewAuthenticator {
	if len(opts.Audiences) == 0 {
		opts.Audiences = []string{DefaultAudience}
	}
	if opts.CacheTTL == 0 {
		opts.CacheTTL = DefaultCacheTTL
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	a := &TokenReviewAuthenticator{client: client, opts: opts}
	if opts.CacheTTL > 0 {
		a.cache = &tokenCache{max: opts.CacheSize, m: map[[32]byte]cachedID{}}
	}
	return a
}

// Authenticate reviews the call's bearer token. Every refusal wraps
// ca.ErrUnauthenticated.
func (a *TokenReviewAuthenticator) Authenticate(ctx context.Context) (ca.Identity, error) {
	tok, err := ca.BearerToken(ctx)
	if err != nil {
		return ca.Identity{}, err
	}
	key := sha256.Sum256([]byte(tok))
	now := a.opts.Now()
	if id, ok := a.cache.get(key, now); ok {
		return id, nil
	}
	rctx, cancel := context.WithTimeout(ctx, a.opts.Timeout)
	defer cancel()
	res, err := a.client.AuthenticationV1().TokenReviews().Create(rctx, &authv1.TokenReview{
		Spec: authv1.TokenReviewSpec{Token: tok, Audiences: a.opts.Audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		if apierrors.IsForbidden(err) {
			return ca.Identity{}, fmt.Errorf("%w: token review: the API server refused skiffd's TokenReview (%v); grant skiffd's service account create on tokenreviews.authentication.k8s.io (bind ClusterRole system:auth-delegator)", ca.ErrUnauthenticated, err)
		}
		return ca.Identity{}, fmt.Errorf("%w: token review: calling the API server: %v; the token could not be checked, retry", ca.ErrUnauthenticated, err)
	}
	id, err := a.identityOf(tok, res.Status)
	if err != nil {
		return ca.Identity{}, fmt.Errorf("%w: %v", ca.ErrUnauthenticated, err)
	}
	if a.cache != nil {
		until := now.Add(a.opts.CacheTTL)
		if exp, ok := tokenExpiry(tok); ok && exp.Before(until) {
			until = exp
		}
		a.cache.put(key, id, until, now)
	}
	return id, nil
}

// identityOf checks a TokenReview's verdict and reads the service account.
func (a *TokenReviewAuthenticator) identityOf(tok string, st authv1.TokenReviewStatus) (ca.Identity, error) {
	want := strings.Join(a.opts.Audiences, ", ")
	if !st.Authenticated {
		// The API server reports a wrong audience only inside a generic
		// error; the token's own claim says it plainly. Read unverified,
		// it only words a refusal.
		if auds, ok := tokenAudiences(tok); ok && !intersects(auds, a.opts.Audiences) {
			return ca.Identity{}, fmt.Errorf("token is for audience %s, want %s; mount a projected service-account token with audience %s (istio-agent's istio-token volume)", strings.Join(auds, ", "), want, want)
		}
		reason := st.Error
		if reason == "" {
			reason = "no reason given"
		}
		return ca.Identity{}, fmt.Errorf("token review: not authenticated: %s; present a current service-account token for audience %s", reason, want)
	}
	// An empty status.audiences means the API server checked the token
	// against its own audiences only (TokenReview's documented contract).
	if !intersects(st.Audiences, a.opts.Audiences) {
		got := strings.Join(st.Audiences, ", ")
		if got == "" {
			got = "the Kubernetes API server"
		}
		return ca.Identity{}, fmt.Errorf("token is for audience %s, want %s; mount a projected service-account token with audience %s", got, want, want)
	}
	name := st.User.Username
	ns, sa, ok := strings.Cut(strings.TrimPrefix(name, serviceAccountPrefix), ":")
	if !strings.HasPrefix(name, serviceAccountPrefix) || !ok || ns == "" || sa == "" || strings.Contains(sa, ":") {
		return ca.Identity{}, fmt.Errorf("not a service account token: username %q, want system:serviceaccount:<namespace>:<name>; present the pod's service-account token", name)
	}
	return ca.Identity{TrustDomain: a.opts.TrustDomain, Namespace: ns, ServiceAccount: sa}, nil
}

func intersects(a, b []string) bool {
	return slices.ContainsFunc(a, func(s string) bool { return slices.Contains(b, s) })
}

// jwtClaims reads a JWT's payload without verifying it: only for wording
// refusals and for capping the cache at the expiry of a token the API
// server has just accepted.
func jwtClaims(tok string) (aud []string, exp time.Time, ok bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, time.Time{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, time.Time{}, false
	}
	var c struct {
		Aud json.RawMessage `json:"aud"`
		Exp *float64        `json:"exp"`
	}
	if json.Unmarshal(raw, &c) != nil {
		return nil, time.Time{}, false
	}
	// aud is a string or an array of strings (RFC 7519 4.1.3).
	var one string
	if json.Unmarshal(c.Aud, &one) == nil {
		aud = []string{one}
	} else if json.Unmarshal(c.Aud, &aud) != nil {
		aud = nil
	}
	if c.Exp != nil {
		exp = time.Unix(int64(*c.Exp), 0)
	}
	return aud, exp, true
}

func tokenAudiences(tok string) ([]string, bool) {
	aud, _, ok := jwtClaims(tok)
	return aud, ok && len(aud) > 0
}

func tokenExpiry(tok string) (time.Time, bool) {
	_, exp, ok := jwtClaims(tok)
	return exp, ok && !exp.IsZero()
}

// tokenCache remembers accepted tokens by their SHA-256, bounded in size.
type tokenCache struct {
	max int

	mu sync.Mutex
	m  map[[32]byte]cachedID
}

type cachedID struct {
	id    ca.Identity
	until time.Time
}

func (c *tokenCache) get(key [32]byte, now time.Time) (ca.Identity, bool) {
	if c == nil {
		return ca.Identity{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok {
		return ca.Identity{}, false
	}
	if !now.Before(e.until) {
		delete(c.m, key)
		return ca.Identity{}, false
	}
	return e.id, true
}

// put records id until until; when full it drops expired entries, then
// the one closest to expiry.
func (c *tokenCache) put(key [32]byte, id ca.Identity, until, now time.Time) {
	if !now.Before(until) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[key]; !ok && len(c.m) >= c.max {
		for k, e := range c.m {
			if !now.Before(e.until) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= c.max {
			var victim [32]byte
			var first time.Time
			for k, e := range c.m {
				if first.IsZero() || e.until.Before(first) {
					victim, first = k, e.until
				}
			}
			delete(c.m, victim)
		}
	}
	c.m[key] = cachedID{id: id, until: until}
}

var _ ca.Authenticator = (*TokenReviewAuthenticator)(nil)
