package ca

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/metadata"
)

// Identity is an authenticated caller: whose SPIFFE ID its certificate gets.
type Identity struct {
	TrustDomain    string // empty means the CA's own
	Namespace      string
	ServiceAccount string
}

// SPIFFEID returns spiffe://<trust-domain>/ns/<ns>/sa/<sa>.
func (i Identity) SPIFFEID() string {
	return "spiffe://" + i.TrustDomain + "/ns/" + i.Namespace + "/sa/" + i.ServiceAccount
}

// Authenticator tells who is calling CreateCertificate, from the gRPC
// context (metadata, peer). The Kubernetes one does a TokenReview.
type Authenticator interface {
	Authenticate(ctx context.Context) (Identity, error)
}

// AuthenticatorFunc adapts a function to Authenticator.
type AuthenticatorFunc func(ctx context.Context) (Identity, error)

// Authenticate calls f.
func (f AuthenticatorFunc) Authenticate(ctx context.Context) (Identity, error) { return f(ctx) }

// BootstrapTokens authenticates local-mesh proxies: the supervisor mints a
// random token per pod, bound to its namespace and service account, and the
// proxy presents it as `authorization: Bearer <token>`, as istio-agent sends
// its service-account JWT.
type BootstrapTokens struct {
	now func() time.Time

	mu     sync.RWMutex
	tokens map[[32]byte]tokenEntry
}

type tokenEntry struct {
	token   []byte
	id      Identity
	expires time.Time // zero: never
}

// NewBootstrapTokens returns an empty table; now is the clock (time.Now when nil).
func NewBootstrapTokens(now func() time.Time) *BootstrapTokens {
	if now == nil {
		now = time.Now
	}
	return &BootstrapTokens{now: now, tokens: map[[32]byte]tokenEntry{}}
}

// Mint makes a random token for id, valid for ttl (forever when zero), and
// records it. Give it to the pod's proxy only.
func (b *BootstrapTokens) Mint(id Identity, ttl time.Duration) (string, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("minting bootstrap token: %w", err)
	}
	tok := base64.RawURLEncoding.EncodeToString(raw)
	var exp time.Time
	if ttl > 0 {
		exp = b.now().Add(ttl)
	}
	b.Add(tok, id, exp)
	return tok, nil
}

// Add records a token for id; a zero expires never expires.
func (b *BootstrapTokens) Add(token string, id Identity, expires time.Time) {
	b.mu.Lock()
	b.tokens[sha256.Sum256([]byte(token))] = tokenEntry{token: []byte(token), id: id, expires: expires}
	b.mu.Unlock()
}

// Remove forgets a token, as when its pod is deleted.
func (b *BootstrapTokens) Remove(token string) {
	b.mu.Lock()
	delete(b.tokens, sha256.Sum256([]byte(token)))
	b.mu.Unlock()
}

// ErrUnauthenticated wraps every authentication failure.
var ErrUnauthenticated = errors.New("unauthenticated")

// Authenticate looks up the bearer token of the call. The table is keyed by
// the token's SHA-256, so lookup time says nothing about the token, and the
// token itself is then compared in constant time.
func (b *BootstrapTokens) Authenticate(ctx context.Context) (Identity, error) {
	tok, err := BearerToken(ctx)
	if err != nil {
		return Identity{}, err
	}
	b.mu.RLock()
	e, ok := b.tokens[sha256.Sum256([]byte(tok))]
	b.mu.RUnlock()
	if !ok || subtle.ConstantTimeCompare(e.token, []byte(tok)) != 1 {
		return Identity{}, fmt.Errorf("%w: unknown bootstrap token: the proxy's token is not (or no longer) registered with skiffd; restart the pod to get a new one", ErrUnauthenticated)
	}
	if !e.expires.IsZero() && !b.now().Before(e.expires) {
		return Identity{}, fmt.Errorf("%w: bootstrap token for %s/%s expired at %s; restart the pod to get a new one", ErrUnauthenticated, e.id.Namespace, e.id.ServiceAccount, e.expires.UTC().Format(time.RFC3339))
	}
	return e.id, nil
}

// BearerToken returns the token of the call's `authorization: Bearer` metadata.
func BearerToken(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return "", fmt.Errorf("%w: no authorization metadata; send `authorization: Bearer <token>`", ErrUnauthenticated)
	}
	scheme, tok, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", fmt.Errorf("%w: authorization metadata is not `Bearer <token>`", ErrUnauthenticated)
	}
	return strings.TrimSpace(tok), nil
}

var (
	_ Authenticator = (*BootstrapTokens)(nil)
	_ Authenticator = AuthenticatorFunc(nil)
)
