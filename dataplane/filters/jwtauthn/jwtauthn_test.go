package jwtauthn

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

const statPrefix = "http.inbound_0.0.0.0_80.jwt_authn."

// Istio's RequestAuthentication task with its sample JWKS served over HTTP
// and fetched through the proxy's "jwks" cluster: no token passes, the
// sample tokens pass with their payload in metadata, bad tokens get 401.
func TestIstioSamplesRemoteJWKS(t *testing.T) {
	e := newEnv(t)
	jwks := readSample(t, "jwks.json")
	srv := startServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/jwks.json" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(jwks))
	})
	e.cluster("jwks", srv.addr)
	e.start(istioConfig(&jwtv3.JwtProvider{
		Issuer:              istioIssuer,
		JwksSourceSpecifier: remoteSource("http://jwks.example.com/jwks.json", "jwks", time.Minute),
	}))

	r := e.get("/headers")
	if r.code != 200 || r.meta(t) != nil {
		t.Fatalf("no token: got %d %q meta %v, want 200 without metadata", r.code, r.body, r.meta(t))
	}

	demo := readSample(t, "demo.jwt")
	r = e.get("/headers", bearer(demo)...)
	if r.code != 200 {
		t.Fatalf("demo.jwt: got %d %q", r.code, r.body)
	}
	m := r.meta(t)
	p, _ := m[istioIssuer].(map[string]any)
	if p["foo"] != "bar" || p["sub"] != istioIssuer || p["exp"] != float64(4685989700) {
		t.Fatalf("demo.jwt metadata = %v, want the payload under %q", m, istioIssuer)
	}
	if _, ok := r.seen.Header["Authorization"]; ok {
		t.Fatalf("forward is false but the backend got Authorization")
	}

	r = e.get("/headers", bearer(readSample(t, "groups-scope.jwt"))...)
	p, _ = r.meta(t)[istioIssuer].(map[string]any)
	if g, _ := p["groups"].([]any); r.code != 200 || len(g) != 2 || g[0] != "group1" {
		t.Fatalf("groups-scope.jwt: got %d, payload %v", r.code, p)
	}

	r = e.get("/headers", bearer("deadbeef")...)
	if r.code != 401 || r.body != "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections" {
		t.Fatalf("malformed token: got %d %q", r.code, r.body)
	}
	if got, want := r.hdr.Get("Www-Authenticate"), `Bearer realm="http://`+e.addr+`/headers", error="invalid_token"`; got != want {
		t.Fatalf("www-authenticate = %q, want %q", got, want)
	}
	// Flip one signature bit: the sample key no longer verifies it.
	parts := strings.Split(demo, ".")
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sig[10] ^= 1
	r = e.get("/headers", bearer(parts[0]+"."+parts[1]+"."+base64.RawURLEncoding.EncodeToString(sig))...)
	if r.code != 401 || r.body != "Jwt verification fails" {
		t.Fatalf("tampered token: got %d %q", r.code, r.body)
	}

	if got := e.st.CounterValue(statPrefix + "jwks_fetch_success"); got != 1 {
		t.Fatalf("jwks_fetch_success = %d, want 1 (cached for later requests)", got)
	}
	if a, d := e.st.CounterValue(statPrefix+"allowed"), e.st.CounterValue(statPrefix+"denied"); a != 3 || d != 2 {
		t.Fatalf("allowed, denied = %d, %d; want 3, 2", a, d)
	}
	if got := srv.hits.Load(); got != 1 {
		t.Fatalf("JWKS server hit %d times, want 1", got)
	}
}

// Each kind of invalid token answers with Envoy's text.
func TestInvalidTokens(t *testing.T) {
	e := newEnv(t)
	key := newSigner(t, "RS256", "k1")
	other := newSigner(t, "RS256", "k1") // same kid, different key
	e.start(istioConfig(&jwtv3.JwtProvider{
		Issuer: "https://issuer.example", Audiences: []string{"https://api.example/"},
		JwksSourceSpecifier: inlineJWKS(jwksOf(key)),
	}))
	iss := "https://issuer.example"
	now := time.Now()
	hs := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + ".e30.c2ln"
	cases := []struct {
		name string
		tok  string
		code int
		body string
	}{
		{"good, audience compared without scheme and slash", key.token(t, claims(iss, "aud", "api.example")), 200, ""},
		{"audience list", key.token(t, claims(iss, "aud", []string{"x", "http://api.example"})), 200, ""},
		{"expired", key.token(t, claims(iss, "aud", "api.example", "exp", now.Add(-2*time.Minute).Unix())), 401, "Jwt is expired"},
		{"expired within the default 60s skew", key.token(t, claims(iss, "aud", "api.example", "exp", now.Add(-20*time.Second).Unix())), 200, ""},
		{"not yet valid", key.token(t, claims(iss, "aud", "api.example", "nbf", now.Add(5*time.Minute).Unix())), 401, "Jwt not yet valid"},
		{"wrong issuer", key.token(t, claims("https://evil.example", "aud", "api.example")), 401, "Jwt issuer is not configured"},
		{"wrong audience", key.token(t, claims(iss, "aud", "other")), 403, "Audiences in Jwt are not allowed"},
		{"no audience", key.token(t, claims(iss)), 403, "Audiences in Jwt are not allowed"},
		{"other key", other.token(t, claims(iss, "aud", "api.example")), 401, "Jwt verification fails"},
		{"unknown kid", newSigner(t, "RS256", "k2").token(t, claims(iss, "aud", "api.example")), 401, "Jwks doesn't have key to match kid or alg from Jwt"},
		{"HS256", hs, 401, "Jwt header [alg] is not supported"},
		{"payload not base64url", "eyJhbGciOiJSUzI1NiJ9.!!!.c2ln", 401, "Jwt payload is an invalid Base64url encoded"},
		{"header not JSON", "e30x.e30.c2ln", 401, "Jwt header is an invalid JSON"},
		{"exp not an integer", key.token(t, claims(iss, "aud", "api.example", "exp", "soon")), 401, "Jwt payload [exp] field is not an integer"},
		{"aud not strings", key.token(t, claims(iss, "aud", []any{1})), 401, "Jwt payload [aud] field is not a string or string list"},
	}
	for _, c := range cases {
		r := e.get("/", bearer(c.tok)...)
		if r.code != c.code || (c.body != "" && r.body != c.body) {
			t.Errorf("%s: got %d %q, want %d %q", c.name, r.code, r.body, c.code, c.body)
		}
		if c.code == 401 && !strings.HasSuffix(r.hdr.Get("Www-Authenticate"), `error="invalid_token"`) {
			t.Errorf("%s: www-authenticate = %q", c.name, r.hdr.Get("Www-Authenticate"))
		}
	}
}

// RS*, PS* and ES* tokens verify against keys from the JWKS; a key of the
// wrong type or curve does not.
func TestAlgorithms(t *testing.T) {
	e := newEnv(t)
	var signers []*signer
	for i, alg := range []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"} {
		signers = append(signers, newSigner(t, alg, "k"+string(rune('a'+i))))
	}
	e.start(istioConfig(&jwtv3.JwtProvider{Issuer: "iss", JwksSourceSpecifier: inlineJWKS(jwksOf(signers...))}))
	for _, s := range signers {
		r := e.get("/", bearer(s.token(t, claims("iss")))...)
		if r.code != 200 {
			t.Errorf("%s: got %d %q", s.alg, r.code, r.body)
			continue
		}
		if p, _ := r.meta(t)["iss"].(map[string]any); p["sub"] != "user-1" {
			t.Errorf("%s: metadata %v", s.alg, r.meta(t))
		}
	}
	// An ES256 token naming the ES384 key's kid finds no fitting key.
	es := newSigner(t, "ES256", signers[7].kid)
	if r := e.get("/", bearer(es.token(t, claims("iss")))...); r.code != 401 || r.body != "Jwks doesn't have key to match kid or alg from Jwt" {
		t.Errorf("ES256 against an ES384 key: got %d %q", r.code, r.body)
	}
}

// A provider requirement without allow_missing refuses requests without a
// token; the challenge has no error attribute then.
func TestMissingTokenRequired(t *testing.T) {
	e := newEnv(t)
	key := newSigner(t, "ES256", "k")
	e.start(requireConfig(map[string]*jwtv3.JwtProvider{"p": {Issuer: "iss", JwksSourceSpecifier: inlineJWKS(jwksOf(key))}}, "p"))
	r := e.get("/x?y=1")
	if r.code != 401 || r.body != "Jwt is missing" || r.hdr.Get("Www-Authenticate") != `Bearer realm="http://`+e.addr+`/x"` {
		t.Fatalf("no token: got %d %q %q", r.code, r.body, r.hdr.Get("Www-Authenticate"))
	}
	if r := e.get("/x", bearer(key.token(t, claims("iss")))...); r.code != 200 {
		t.Fatalf("good token: got %d %q", r.code, r.body)
	}
	// Two tokens: both must be valid.
	req, _ := http.NewRequest("GET", "http://"+e.addr+"/x", nil)
	req.Header.Add("Authorization", "Bearer "+key.token(t, claims("iss")))
	req.Header.Add("Authorization", "Bearer junk")
	if r := e.do(req); r.code != 401 {
		t.Fatalf("a good and a bad token: got %d %q, want 401", r.code, r.body)
	}
}

// from_params, from_headers with and without a prefix, forward,
// forward_payload_header and claim_to_headers, and the default
// access_token parameter.
func TestTokenLocationsAndOutputs(t *testing.T) {
	e := newEnv(t)
	key := newSigner(t, "RS256", "k")
	e.start(istioConfig(&jwtv3.JwtProvider{
		Issuer:               "iss",
		JwksSourceSpecifier:  inlineJWKS(jwksOf(key)),
		FromParams:           []string{"token"},
		FromHeaders:          []*jwtv3.JwtHeader{{Name: "x-jwt"}, {Name: "x-auth", ValuePrefix: "Token "}},
		ForwardPayloadHeader: "x-jwt-payload",
		ClaimToHeaders: []*jwtv3.JwtClaimToHeader{
			{HeaderName: "x-jwt-sub", ClaimName: "sub"},
			{HeaderName: "x-jwt-level", ClaimName: "org.level"},
		},
	}))
	tok := key.token(t, claims("iss", "org", map[string]any{"level": 3}))

	r := e.get("/p?a=1&token="+tok+"&b=2", "X-Jwt-Payload", "forged", "X-Jwt-Sub", "forged")
	if r.code != 200 {
		t.Fatalf("from_params: got %d %q", r.code, r.body)
	}
	if strings.Contains(r.seen.URI, "token=") || !strings.Contains(r.seen.URI, "a=1") || !strings.Contains(r.seen.URI, "b=2") {
		t.Fatalf("forward=false: backend URI %q still has the token or lost other parameters", r.seen.URI)
	}
	if got := r.seen.Header["X-Jwt-Sub"]; len(got) != 1 || got[0] != "user-1" {
		t.Fatalf("claim_to_headers sub = %v, want [user-1] (forged value stripped)", got)
	}
	if got := r.seen.Header["X-Jwt-Level"]; len(got) != 1 || got[0] != "3" {
		t.Fatalf("claim_to_headers org.level = %v", got)
	}
	pl := r.seen.Header["X-Jwt-Payload"]
	if len(pl) != 1 {
		t.Fatalf("x-jwt-payload = %v", pl)
	}
	b, _ := base64.RawURLEncoding.DecodeString(pl[0])
	var payload map[string]any
	if err := json.Unmarshal(b, &payload); err != nil || payload["sub"] != "user-1" {
		t.Fatalf("x-jwt-payload decodes to %q (%v)", b, err)
	}

	r = e.get("/p", "x-jwt", tok)
	if r.code != 200 || r.seen.Header["X-Jwt"] != nil {
		t.Fatalf("from_headers x-jwt: got %d, backend header %v", r.code, r.seen.Header["X-Jwt"])
	}
	if r = e.get("/p", "x-auth", "Token "+tok); r.code != 200 || r.meta(t)["iss"] == nil {
		t.Fatalf("from_headers with prefix: got %d %q", r.code, r.body)
	}
	// Authorization is not a location of this provider: ignored.
	if r = e.get("/p", "Authorization", "Bearer junk"); r.code != 200 || r.meta(t) != nil {
		t.Fatalf("token outside the configured locations: got %d %q", r.code, r.body)
	}
	if r = e.get("/p", "x-jwt", "junk"); r.code != 401 {
		t.Fatalf("bad token in x-jwt: got %d %q", r.code, r.body)
	}
	// With no token, a forged payload header does not reach the backend.
	if r = e.get("/p", "X-Jwt-Payload", "forged"); r.code != 200 || r.seen.Header["X-Jwt-Payload"] != nil {
		t.Fatalf("forged x-jwt-payload reached the backend: %v", r.seen.Header["X-Jwt-Payload"])
	}

	// Defaults: Authorization Bearer and ?access_token=; forward keeps it.
	e2 := newEnv(t)
	e2.start(istioConfig(&jwtv3.JwtProvider{Issuer: "iss", Forward: true, JwksSourceSpecifier: inlineJWKS(jwksOf(key))}))
	if r = e2.get("/q?access_token=" + tok); r.code != 200 || !strings.Contains(r.seen.URI, "access_token=") {
		t.Fatalf("access_token with forward: got %d, URI %q", r.code, r.seen.URI)
	}
	if r = e2.get("/q", bearer(tok)...); r.code != 200 || r.seen.Header["Authorization"] == nil {
		t.Fatalf("forward=true must keep Authorization: got %d", r.code)
	}
}

// The remote JWKS is refreshed after cache_duration (a rotated key starts
// verifying), and while the JWKS server is down the cached keys keep
// verifying tokens.
func TestJWKSRefreshAndOutage(t *testing.T) {
	e := newEnv(t)
	a, b := newSigner(t, "RS256", "a"), newSigner(t, "RS256", "b")
	jwksA, jwksB := jwksOf(a), jwksOf(b)
	srv := startServer(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(jwksA)) })
	e.cluster("jwks", srv.addr)
	e.start(istioConfig(&jwtv3.JwtProvider{Issuer: "iss", JwksSourceSpecifier: remoteSource("http://idp.example/keys", "jwks", 300*time.Millisecond)}))

	tokA := a.token(t, claims("iss"))
	for i := 0; i < 2; i++ { // the second is served from the token cache
		if r := e.get("/", bearer(tokA)...); r.code != 200 {
			t.Fatalf("key a: got %d %q", r.code, r.body)
		}
	}
	tokB := b.token(t, claims("iss"))
	if r := e.get("/", bearer(tokB)...); r.code != 401 {
		t.Fatalf("key b before rotation: got %d %q", r.code, r.body)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(jwksB)) })
	srv.h.Store(&ok)
	time.Sleep(400 * time.Millisecond) // let the cached JWKS pass its cache_duration
	// The cached keys lack b's kid and are stale: the request waits for
	// the refresh instead of failing.
	if r := e.get("/", bearer(tokB)...); r.code != 200 {
		t.Fatalf("key b after rotation and cache_duration: got %d %q", r.code, r.body)
	}
	if n := e.st.CounterValue(statPrefix + "jwks_fetch_success"); n < 2 {
		t.Fatalf("jwks_fetch_success = %d, want at least 2", n)
	}
	// Key a left the JWKS: its token, verified and cached before, fails.
	if r := e.get("/", bearer(tokA)...); r.code != 401 || r.body != "Jwks doesn't have key to match kid or alg from Jwt" {
		t.Fatalf("key a after it left the JWKS: got %d %q", r.code, r.body)
	}

	down := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", 503) })
	srv.h.Store(&down)
	hits := srv.hits.Load()
	time.Sleep(400 * time.Millisecond) // the cached keys go stale again
	waitFor(t, "a failed refresh", func() bool {
		if r := e.get("/", bearer(tokB)...); r.code != 200 {
			t.Fatalf("JWKS server down: cached key b stopped working: %d %q", r.code, r.body)
		}
		return e.st.CounterValue(statPrefix+"jwks_fetch_failed") > 0
	})
	for i := 0; i < 20; i++ {
		if r := e.get("/", bearer(tokB)...); r.code != 200 {
			t.Fatalf("request %d with the JWKS server down: %d %q", i, r.code, r.body)
		}
	}
	// Failed refreshes are spaced out, not made by every request.
	if n := srv.hits.Load() - hits; n > 5 {
		t.Fatalf("JWKS server hit %d times in the outage, want a few", n)
	}
}

// With no cached keys, a fetch that fails (here: nothing listens) answers
// 401 "Jwks remote fetch is failed", counting every attempt of the retry
// policy.
func TestJWKSFirstFetchFails(t *testing.T) {
	e := newEnv(t)
	dead := startServer(t, nil)
	dead.srv.Close()
	e.cluster("jwks", dead.addr)
	p := &jwtv3.JwtProvider{Issuer: "iss", JwksSourceSpecifier: remoteSource("http://idp.example/keys", "jwks", time.Minute)}
	p.GetRemoteJwks().RetryPolicy = retryPolicy(2, 5*time.Millisecond)
	e.start(istioConfig(p))
	key := newSigner(t, "RS256", "k")
	r := e.get("/", bearer(key.token(t, claims("iss")))...)
	if r.code != 401 || r.body != "Jwks remote fetch is failed" {
		t.Fatalf("got %d %q", r.code, r.body)
	}
	if n := e.st.CounterValue(statPrefix + "jwks_fetch_failed"); n != 3 {
		t.Fatalf("jwks_fetch_failed = %d, want 3 (one try and two retries)", n)
	}
	// Requests without a token do not need keys.
	if r := e.get("/"); r.code != 200 {
		t.Fatalf("no token: got %d", r.code)
	}
}

// Rules pick requirements by route match; PerRouteConfig disables the
// filter or names a requirement_map entry.
func TestRulesAndPerRoute(t *testing.T) {
	e := newEnv(t)
	key := newSigner(t, "ES256", "k")
	providers := map[string]*jwtv3.JwtProvider{"p": {Issuer: "iss", JwksSourceSpecifier: inlineJWKS(jwksOf(key))}}
	cfg := &jwtv3.JwtAuthentication{
		Providers:      providers,
		RequirementMap: map[string]*jwtv3.JwtRequirement{"need-p": providerReq("p")},
		Rules: []*jwtv3.RequirementRule{
			{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/public"}}},
			{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/named"}}, RequirementType: &jwtv3.RequirementRule_RequirementName{RequirementName: "need-p"}},
			{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}, RequirementType: &jwtv3.RequirementRule_Requires{Requires: providerReq("p")}},
		},
	}
	perRoute := func(prefix string, pr *jwtv3.PerRouteConfig) *routev3.Route {
		rt := prefixRoute(prefix)
		rt.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.jwt_authn": xdsres.Any(pr)}
		return rt
	}
	e.start(cfg,
		perRoute("/off", &jwtv3.PerRouteConfig{RequirementSpecifier: &jwtv3.PerRouteConfig_Disabled{Disabled: true}}),
		perRoute("/by-name", &jwtv3.PerRouteConfig{RequirementSpecifier: &jwtv3.PerRouteConfig_RequirementName{RequirementName: "need-p"}}),
		perRoute("/typo", &jwtv3.PerRouteConfig{RequirementSpecifier: &jwtv3.PerRouteConfig_RequirementName{RequirementName: "nope"}}),
		prefixRoute("/"),
	)
	tok := key.token(t, claims("iss"))
	for _, c := range []struct {
		path string
		tok  bool
		code int
	}{
		{"/public/a", false, 200}, {"/named", false, 401}, {"/named", true, 200}, {"/private", false, 401},
		{"/private", true, 200}, {"/off/x", false, 200}, {"/by-name", false, 401}, {"/by-name", true, 200},
	} {
		var h []string
		if c.tok {
			h = bearer(tok)
		}
		if r := e.get(c.path, h...); r.code != c.code {
			t.Errorf("%s (token %v): got %d %q, want %d", c.path, c.tok, r.code, r.body, c.code)
		}
	}
	if r := e.get("/typo"); r.code != 403 || r.body != "Failed JWT authentication: Wrong requirement_name: nope. It should be one of [need-p]" {
		t.Errorf("unknown requirement_name: got %d %q", r.code, r.body)
	}
}

// Istio's config for two jwtRules: any one provider's valid token, or
// every present token valid ({P1, P2, all{any{P1, allow_missing},
// any{P2, allow_missing}}}); allow_missing_or_failed lets bad tokens pass.
func TestRequirementTrees(t *testing.T) {
	k1, k2 := newSigner(t, "RS256", "1"), newSigner(t, "ES256", "2")
	providers := map[string]*jwtv3.JwtProvider{
		"origins-0": {Issuer: "iss1", PayloadInMetadata: "iss1", JwksSourceSpecifier: inlineJWKS(jwksOf(k1))},
		"origins-1": {Issuer: "iss2", PayloadInMetadata: "iss2", JwksSourceSpecifier: inlineJWKS(jwksOf(k2)), FromHeaders: []*jwtv3.JwtHeader{{Name: "x-jwt2"}}},
	}
	anyOf := func(r ...*jwtv3.JwtRequirement) *jwtv3.JwtRequirement {
		return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: &jwtv3.JwtRequirementOrList{Requirements: r}}}
	}
	allOf := func(r ...*jwtv3.JwtRequirement) *jwtv3.JwtRequirement {
		return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAll{RequiresAll: &jwtv3.JwtRequirementAndList{Requirements: r}}}
	}
	rule := func(req *jwtv3.JwtRequirement) []*jwtv3.RequirementRule {
		return []*jwtv3.RequirementRule{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}, RequirementType: &jwtv3.RequirementRule_Requires{Requires: req}}}
	}
	e := newEnv(t)
	e.start(&jwtv3.JwtAuthentication{Providers: providers, Rules: rule(anyOf(providerReq("origins-0"), providerReq("origins-1"),
		allOf(anyOf(providerReq("origins-0"), allowMissing()), anyOf(providerReq("origins-1"), allowMissing())))),
	})
	t1, t2 := k1.token(t, claims("iss1")), k2.token(t, claims("iss2"))
	// The first satisfied requirement ends the any-list, as in Envoy.
	r := e.get("/", append(bearer(t1), "x-jwt2", t2)...)
	if m := r.meta(t); r.code != 200 || m["iss1"] == nil {
		t.Fatalf("both tokens: got %d, metadata %v", r.code, m)
	}
	if r := e.get("/", "x-jwt2", t2); r.code != 200 {
		t.Fatalf("second provider only: got %d %q", r.code, r.body)
	}
	if r := e.get("/"); r.code != 200 {
		t.Fatalf("no token: got %d %q", r.code, r.body)
	}
	if r := e.get("/", "x-jwt2", "junk"); r.code != 401 || r.body != "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections" {
		t.Fatalf("bad token of the second provider: got %d %q, want 401", r.code, r.body)
	}
	// A valid token of the first provider alone satisfies the list.
	if r := e.get("/", append(bearer(t1), "x-jwt2", "junk")...); r.code != 200 {
		t.Fatalf("good first token and bad second: got %d %q, want 200 as Envoy", r.code, r.body)
	}
	// Issuer 2's token in issuer 1's location is an unknown issuer there.
	if r := e.get("/", bearer(k2.token(t, claims("iss2")))...); r.code != 401 || r.body != "Jwt issuer is not configured" {
		t.Fatalf("token in another provider's location: got %d %q", r.code, r.body)
	}

	e2 := newEnv(t)
	e2.start(&jwtv3.JwtAuthentication{Providers: providers, Rules: rule(&jwtv3.JwtRequirement{
		RequiresType: &jwtv3.JwtRequirement_AllowMissingOrFailed{AllowMissingOrFailed: &emptypb.Empty{}}})})
	if r := e2.get("/", bearer("junk")...); r.code != 200 || r.meta(t) != nil {
		t.Fatalf("allow_missing_or_failed with a bad token: got %d %q", r.code, r.body)
	}
	if r := e2.get("/", "x-jwt2", t2); r.code != 200 || r.meta(t)["iss2"] == nil {
		t.Fatalf("allow_missing_or_failed with a good token: got %d, metadata %v", r.code, r.meta(t))
	}
}

// Istio sets bypass_cors_preflight: a preflight passes a requiring rule.
func TestCORSPreflightBypass(t *testing.T) {
	e := newEnv(t)
	cfg := requireConfig(map[string]*jwtv3.JwtProvider{"p": {Issuer: "iss", JwksSourceSpecifier: inlineJWKS(jwksOf(newSigner(t, "ES256", "k")))}}, "p")
	cfg.BypassCorsPreflight = true
	e.start(cfg)
	req, _ := http.NewRequest("OPTIONS", "http://"+e.addr+"/", nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	if r := e.do(req); r.code != 200 {
		t.Fatalf("preflight: got %d %q", r.code, r.body)
	}
	if n := e.st.CounterValue(statPrefix + "cors_preflight_bypassed"); n != 1 {
		t.Fatalf("cors_preflight_bypassed = %d", n)
	}
	if r := e.get("/"); r.code != 401 {
		t.Fatalf("GET without token: got %d", r.code)
	}
}

// Config the filter cannot honour is refused with the field named.
func TestConfigErrors(t *testing.T) {
	e := newEnv(t)
	jwks := inlineJWKS(jwksOf(newSigner(t, "ES256", "k")))
	cases := []struct {
		cfg  *jwtv3.JwtAuthentication
		want string
	}{
		{&jwtv3.JwtAuthentication{FilterStateRules: &jwtv3.FilterStateRule{Name: "x"}}, "filter_state_rules: is not supported"},
		{requireConfig(map[string]*jwtv3.JwtProvider{"p": {Issuer: "iss", JwksSourceSpecifier: jwks}}, "q"), `rules[0].requires: provider_name: "q" is not in providers`},
		{requireConfig(map[string]*jwtv3.JwtProvider{"p": {Issuer: "iss"}}, "p"), `providers["p"]: one of local_jwks or remote_jwks is required`},
		{requireConfig(map[string]*jwtv3.JwtProvider{"p": {Issuer: "iss", JwksSourceSpecifier: remoteSource("ftp://x/", "jwks", time.Minute)}}, "p"), `providers["p"]: remote_jwks.http_uri.uri: "ftp://x/" is not an http(s) URL`},
		{requireConfig(map[string]*jwtv3.JwtProvider{"p": {Issuer: "iss", JwksSourceSpecifier: remoteSource("http://x/", "", time.Minute)}}, "p"), `remote_jwks.http_uri.cluster: is required`},
		{&jwtv3.JwtAuthentication{Rules: []*jwtv3.RequirementRule{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}, RequirementType: &jwtv3.RequirementRule_RequirementName{RequirementName: "r"}}}}, `rules[0].requirement_name: "r" is not in requirement_map`},
	}
	for _, c := range cases {
		_, err := e.build(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("got %v, want an error containing %q", err, c.want)
		}
		if err != nil && !strings.Contains(err.Error(), `http_filters[0] "envoy.filters.http.jwt_authn"`) {
			t.Errorf("error %q does not name the filter", err)
		}
	}
	// An unusable inline JWKS is accepted, as Envoy does; its tokens fail.
	e.start(istioConfig(&jwtv3.JwtProvider{Issuer: "iss", JwksSourceSpecifier: inlineJWKS(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`)}))
	if r := e.get("/", bearer(newSigner(t, "RS256", "k").token(t, claims("iss")))...); r.code != 401 || r.body != "Jwks doesn't have any valid public key" {
		t.Fatalf("token against an unusable JWKS: got %d %q", r.code, r.body)
	}
}

// async_fetch fetches the JWKS when the filter is built, before any
// request; header_in_metadata puts the JOSE header in metadata.
func TestAsyncFetchAndMetadataOutputs(t *testing.T) {
	e := newEnv(t)
	key := newSigner(t, "PS256", "k")
	jwks := jwksOf(key)
	srv := startServer(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(jwks)) })
	e.cluster("jwks", srv.addr)
	src := remoteSource("http://idp.example/keys", "jwks", time.Minute)
	src.RemoteJwks.AsyncFetch = &jwtv3.JwksAsyncFetch{}
	e.start(istioConfig(&jwtv3.JwtProvider{Issuer: "iss", JwksSourceSpecifier: src,
		HeaderInMetadata: "hdr"}))
	waitFor(t, "the JWKS fetched ahead of requests", func() bool { return e.st.CounterValue(statPrefix+"jwks_fetch_success") == 1 })
	if srv.hits.Load() != 1 {
		t.Fatalf("JWKS server hits = %d before any request", srv.hits.Load())
	}
	r := e.get("/", bearer(key.token(t, claims("iss")))...)
	m := r.meta(t)
	if h, _ := m["hdr"].(map[string]any); r.code != 200 || h["alg"] != "PS256" || h["kid"] != "k" || m["iss"] == nil {
		t.Fatalf("got %d, metadata %v", r.code, m)
	}
}

// BenchmarkVerify measures one request's verification work for Istio's
// config (extract, parse, checks, signature, metadata) without the
// network: "cached" sends the same token again (the common case, served by
// the token cache), "uncached" verifies the signature every time.
func BenchmarkVerify(b *testing.B) {
	for _, alg := range []string{"RS256", "PS256", "ES256"} {
		for _, cached := range []bool{true, false} {
			name := alg + "/uncached"
			if cached {
				name = alg + "/cached"
			}
			b.Run(name, func(b *testing.B) {
				key := newSigner(b, alg, "k")
				cfg, err := compile(istioConfig(&jwtv3.JwtProvider{Issuer: "iss", JwksSourceSpecifier: inlineJWKS(jwksOf(key))}), benchEnv())
				if err != nil {
					b.Fatal(err)
				}
				if !cached {
					cfg.tokens.max = 0
				}
				v := cfg.ruleVerifiers[0]
				tok := "Bearer " + key.token(b, claims("iss"))
				req, _ := http.NewRequest("GET", "http://x/", nil)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					req.Header["Authorization"] = []string{tok}
					rc := reqCtx{r: req, now: time.Now()}
					if st := v.verify(&rc); st != statusOK {
						b.Fatal(st)
					}
				}
			})
		}
	}
}

// subjects, require_expiration and clock_skew_seconds narrow what a
// provider accepts.
func TestProviderConstraints(t *testing.T) {
	e := newEnv(t)
	key := newSigner(t, "ES256", "k")
	e.start(istioConfig(&jwtv3.JwtProvider{
		Issuer: "iss", JwksSourceSpecifier: inlineJWKS(jwksOf(key)),
		Subjects:          &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "spiffe://"}},
		RequireExpiration: true, ClockSkewSeconds: 1,
	}))
	now := time.Now()
	for _, c := range []struct {
		name string
		c    map[string]any
		code int
		body string
	}{
		{"subject matches", claims("iss", "sub", "spiffe://td/ns/a/sa/b"), 200, ""},
		{"subject does not match", claims("iss"), 401, "Jwt verification fails"},
		{"no exp", func() map[string]any { c := claims("iss", "sub", "spiffe://x"); delete(c, "exp"); return c }(), 401, "Jwt is expired"},
		{"expired beyond a 1s skew", claims("iss", "sub", "spiffe://x", "exp", now.Add(-20*time.Second).Unix()), 401, "Jwt is expired"},
	} {
		if r := e.get("/", bearer(key.token(t, c.c))...); r.code != c.code || (c.body != "" && r.body != c.body) {
			t.Errorf("%s: got %d %q, want %d %q", c.name, r.code, r.body, c.code, c.body)
		}
	}
}

// Modern Istio writes every provider's payload under "payload" and asks
// for "scope" and "permission" to be split on spaces in metadata; the
// token itself (and the forwarded payload) keep the string.
func TestNormalizePayloadInMetadata(t *testing.T) {
	e := newEnv(t)
	key := newSigner(t, "RS256", "k")
	e.start(istioConfig(&jwtv3.JwtProvider{
		Issuer: "iss", JwksSourceSpecifier: inlineJWKS(jwksOf(key)), PayloadInMetadata: "payload",
		NormalizePayloadInMetadata: &jwtv3.JwtProvider_NormalizePayload{SpaceDelimitedClaims: []string{"permission", "scope"}},
		ClaimToHeaders:             []*jwtv3.JwtClaimToHeader{{HeaderName: "x-scope", ClaimName: "scope"}},
	}))
	tok := key.token(t, claims("iss", "scope", "read  write", "permission", []any{"a"}))
	for i := 0; i < 2; i++ { // the second request is served from the token cache
		if i == 1 && e.st.CounterValue(statPrefix+"jwt_cache_miss") != 1 {
			t.Fatalf("jwt_cache_miss = %d after the first request", e.st.CounterValue(statPrefix+"jwt_cache_miss"))
		}
		r := e.get("/", bearer(tok)...)
		p, _ := r.meta(t)["payload"].(map[string]any)
		if sc, _ := p["scope"].([]any); r.code != 200 || len(sc) != 2 || sc[0] != "read" || sc[1] != "write" {
			t.Fatalf("request %d: got %d, payload %v; want scope [read write]", i, r.code, p)
		}
		if pm, _ := p["permission"].([]any); len(pm) != 1 || pm[0] != "a" {
			t.Fatalf("request %d: permission = %v, want the list unchanged", i, p["permission"])
		}
		if got := r.seen.Header["X-Scope"]; len(got) != 1 || got[0] != "read  write" {
			t.Fatalf("request %d: x-scope = %v, want the claim as sent", i, got)
		}
	}
	if n := e.st.CounterValue(statPrefix + "jwt_cache_hit"); n == 0 {
		t.Fatalf("jwt_cache_hit = 0 after the same token twice")
	}
}

func benchEnv() fetchEnv {
	st := stats.New()
	return fetchEnv{cacheHit: st.Scope("b", "b").Counter("hit"), cacheMiss: st.Scope("b", "b").Counter("miss")}
}

// Concurrent requests while the remote JWKS keeps expiring: every request
// with a good token passes, refreshes are single-flight, and the race
// detector sees the lock-free read path.
func TestConcurrentRefresh(t *testing.T) {
	e := newEnv(t)
	key := newSigner(t, "ES256", "k")
	jwks := jwksOf(key)
	srv := startServer(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(jwks)) })
	e.cluster("jwks", srv.addr)
	e.start(istioConfig(&jwtv3.JwtProvider{Issuer: "iss", JwksSourceSpecifier: remoteSource("http://idp.example/keys", "jwks", 20*time.Millisecond)}))
	var toks []string
	for i := 0; i < 4; i++ {
		toks = append(toks, key.token(t, claims("iss", "n", i)))
	}
	const workers, perWorker = 8, 40
	errs := make(chan string, workers*perWorker)
	done := make(chan struct{})
	for w := 0; w < workers; w++ {
		go func(w int) {
			defer func() { done <- struct{}{} }()
			for i := 0; i < perWorker; i++ {
				req, _ := http.NewRequest("GET", "http://"+e.addr+"/", nil)
				req.Header.Set("Authorization", "Bearer "+toks[(w+i)%len(toks)])
				resp, err := e.client.Do(req)
				if err != nil {
					errs <- err.Error()
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- resp.Status
				}
			}
		}(w)
	}
	for w := 0; w < workers; w++ {
		<-done
	}
	close(errs)
	for err := range errs {
		t.Errorf("request failed: %s", err)
	}
	// A refresh the last requests started may still be on its way: the
	// server has counted it, the filter not yet. Compare once it lands.
	var ok uint64
	var hits int64
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		ok, hits = e.st.CounterValue(statPrefix+"jwks_fetch_success"), srv.hits.Load()
		if hits == int64(ok) || time.Now().After(deadline) {
			break
		}
	}
	if ok < 2 || hits != int64(ok) {
		t.Fatalf("jwks_fetch_success = %d, server hits = %d; want equal and at least 2 (refreshed during the run)", ok, hits)
	}
}

// A gRPC request with a bad token gets grpc-status 16 UNAUTHENTICATED with
// the reason in grpc-message, as Envoy's local reply maps 401.
func TestGRPCUnauthenticated(t *testing.T) {
	e := newEnv(t)
	e.start(istioConfig(&jwtv3.JwtProvider{Issuer: "iss", JwksSourceSpecifier: inlineJWKS(jwksOf(newSigner(t, "ES256", "k")))}))
	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("POST", "http://"+e.addr+"/pkg.Svc/Method", strings.NewReader("\x00\x00\x00\x00\x00"))
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Authorization", "Bearer junk")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	st := resp.Header.Get("Grpc-Status")
	if st == "" {
		st = resp.Trailer.Get("Grpc-Status")
	}
	if resp.StatusCode != 200 || st != "16" {
		t.Fatalf("got HTTP %d grpc-status %q, want 200 and 16", resp.StatusCode, st)
	}
}

// An https jwksUri is fetched through a cluster whose transport socket
// speaks TLS, as Istio points remote_jwks at a TLS ServiceEntry cluster.
func TestJWKSOverTLSCluster(t *testing.T) {
	e := newEnv(t)
	key := newSigner(t, "RS256", "k")
	jwks := jwksOf(key)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(jwks)) }))
	t.Cleanup(srv.Close)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	c := &clusterv3.Cluster{
		Name:                 "outbound|443||idp.example",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(2 * time.Second),
		LoadAssignment:       xdsres.Endpoints("outbound|443||idp.example", srv.Listener.Addr().String()),
	}
	if err := e.um.AddOrUpdate(xdsres.UpstreamTLS(c, "example.com", caPEM)); err != nil {
		t.Fatal(err)
	}
	e.start(istioConfig(&jwtv3.JwtProvider{Issuer: "iss", JwksSourceSpecifier: remoteSource("https://idp.example/.well-known/jwks.json", "outbound|443||idp.example", time.Minute)}))
	if r := e.get("/", bearer(key.token(t, claims("iss")))...); r.code != 200 {
		t.Fatalf("got %d %q", r.code, r.body)
	}
}
