package kubeca

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"

	"github.com/skiff-mesh/skiff/controlplane/ca"
)

func TestTokenCacheBoundedAndExpiring(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	c := &tokenCache{max: 3, m: map[[32]byte]cachedID{}}
	key := func(i byte) [32]byte { return [32]byte{i} }
	for i := byte(1); i <= 3; i++ {
		c.put(key(i), ca.Identity{ServiceAccount: string('a' + i)}, now.Add(time.Duration(i)*time.Minute), now)
	}
	c.put(key(4), ca.Identity{ServiceAccount: "e"}, now.Add(time.Hour), now)
	if len(c.m) != 3 {
		t.Fatalf("cache holds %d entries, want its bound 3", len(c.m))
	}
	if _, ok := c.get(key(1), now); ok {
		t.Errorf("entry closest to expiry survived eviction")
	}
	if id, ok := c.get(key(4), now); !ok || id.ServiceAccount != "e" {
		t.Errorf("new entry: %+v %v", id, ok)
	}
	if _, ok := c.get(key(2), now.Add(2*time.Minute)); ok {
		t.Errorf("entry served at its expiry")
	}
	c.put(key(5), ca.Identity{}, now, now)
	if _, ok := c.get(key(5), now); ok {
		t.Errorf("entry already expired when put was kept")
	}
}

func jwtWith(payload string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(payload)) + ".c2ln"
}

func TestTokenExpiryCapsCache(t *testing.T) {
	exp, ok := tokenExpiry(jwtWith(`{"aud":["istio-ca"],"exp":2000000}`))
	if !ok || !exp.Equal(time.Unix(2_000_000, 0)) {
		t.Errorf("exp = %v %v, want %v", exp, ok, time.Unix(2_000_000, 0))
	}
	if auds, ok := tokenAudiences(jwtWith(`{"aud":"other"}`)); !ok || len(auds) != 1 || auds[0] != "other" {
		t.Errorf("string aud: %v %v", auds, ok)
	}
	if _, ok := tokenExpiry("opaque"); ok {
		t.Errorf("expiry read from a non-JWT")
	}
}

// Verdicts the test API server cannot produce for a service-account
// token: an audience-unaware authenticator and a user that is not one.
func TestIdentityOfReview(t *testing.T) {
	a := NewTokenReviewAuthenticator(nil, TokenReviewOptions{TrustDomain: "td"})
	for _, tc := range []struct {
		name string
		st   authv1.TokenReviewStatus
		want string
	}{
		{"api server audience", authv1.TokenReviewStatus{Authenticated: true, User: authv1.UserInfo{Username: "system:serviceaccount:a:b"}},
			"token is for audience the Kubernetes API server, want istio-ca"},
		{"user", authv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"istio-ca"}, User: authv1.UserInfo{Username: "alice"}},
			`not a service account token: username "alice"`},
		{"node", authv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"istio-ca"}, User: authv1.UserInfo{Username: "system:serviceaccount:a"}},
			"not a service account token"},
		{"refused", authv1.TokenReviewStatus{Error: "token expired"}, "token review: not authenticated: token expired"},
	} {
		if _, err := a.identityOf("opaque", tc.st); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	id, err := a.identityOf("opaque", authv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"istio-ca"}, User: authv1.UserInfo{Username: "system:serviceaccount:shop:reviews"}})
	if err != nil || id != (ca.Identity{TrustDomain: "td", Namespace: "shop", ServiceAccount: "reviews"}) {
		t.Errorf("identity %+v, %v", id, err)
	}
}
