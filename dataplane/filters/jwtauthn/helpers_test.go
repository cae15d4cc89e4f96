package jwtauthn

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/dataplane/hcm"
	"github.com/skiff-mesh/skiff/dataplane/upstream"
	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

const (
	samples     = "/work/shared/istio-samples/jwt/"
	istioIssuer = "testing@secure.istio.io"
	// metaDumpType registers a test filter, placed after jwt_authn, that
	// copies the stream's jwt_authn metadata into a request header so the
	// backend shows what a later filter (RBAC) would read.
	metaDumpType = "type.googleapis.com/google.protobuf.Struct"
	metaHeader   = "X-Test-Jwt-Metadata"
)

func init() {
	hcm.RegisterFilter(metaDumpType, func(hcm.FilterConfig) (hcm.Filter, error) {
		return func(next hcm.Handler) hcm.Handler {
			return hcm.HandlerFunc(func(s *hcm.Stream) {
				delete(s.Req.Header, metaHeader)
				if m := s.Metadata(MetadataNamespace); m != nil {
					b, _ := json.Marshal(m)
					s.Req.Header.Set(metaHeader, string(b))
				}
				next.ServeStream(s)
			})
		}, nil
	})
}

func readSample(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(samples + name)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// backendSeen is what the backend received.
type backendSeen struct {
	URI    string              `json:"uri"`
	Header map[string][]string `json:"header"`
}

// server is a loopback HTTP server whose handler can be swapped.
type server struct {
	addr string
	h    atomic.Pointer[http.HandlerFunc]
	hits atomic.Int64
	ln   net.Listener
	srv  *http.Server
}

func startServer(t testing.TB, h http.HandlerFunc) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{addr: ln.Addr().String(), ln: ln}
	s.h.Store(&h)
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		(*s.h.Load())(w, r)
	})}
	go s.srv.Serve(ln)
	t.Cleanup(func() { s.srv.Close() })
	return s
}

func echoBackend(w http.ResponseWriter, r *http.Request) {
	json.NewEncoder(w).Encode(backendSeen{URI: r.URL.RequestURI(), Header: r.Header})
}

// env is a connection manager with the jwt_authn filter, reached over a
// loopback listener, routing to a real backend through a real cluster;
// remote JWKS are fetched through the cluster "jwks".
type env struct {
	t      testing.TB
	st     *stats.Store
	um     *upstream.Manager
	addr   string
	client *http.Client
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{t: t, st: stats.New()}
	e.um = upstream.NewManager(upstream.Options{Stats: e.st})
	t.Cleanup(e.um.Close)
	e.cluster("backend", startServer(t, echoBackend).addr)
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	e.client = &http.Client{Transport: tr, Timeout: 20 * time.Second}
	return e
}

func (e *env) cluster(name, addr string) {
	e.t.Helper()
	if err := e.um.AddOrUpdate(&clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(2 * time.Second),
		LoadAssignment:       xdsres.Endpoints(name, addr),
	}); err != nil {
		e.t.Fatal(err)
	}
}

// start serves cfg as the jwt_authn filter over routes (nil: one route
// "/" to backend).
func (e *env) start(cfg *jwtv3.JwtAuthentication, routes ...*routev3.Route) {
	e.t.Helper()
	cm, err := e.build(cfg, routes...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { cm.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { ln.Close() })
	e.addr = ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go cm.ServeConn(c, &core.ConnInfo{LocalAddr: c.LocalAddr(), RemoteAddr: c.RemoteAddr(), TransportProtocol: "raw_buffer"})
		}
	}()
}

func (e *env) build(cfg *jwtv3.JwtAuthentication, routes ...*routev3.Route) (*hcm.ConnectionManager, error) {
	if len(routes) == 0 {
		routes = []*routev3.Route{prefixRoute("/")}
	}
	rc := &routev3.RouteConfiguration{Name: "80", VirtualHosts: []*routev3.VirtualHost{{Name: "all", Domains: []string{"*"}, Routes: routes}}}
	h := &hcmv3.HttpConnectionManager{
		StatPrefix:     "inbound_0.0.0.0_80",
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc},
		HttpFilters: []*hcmv3.HttpFilter{
			{Name: "envoy.filters.http.jwt_authn", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdsres.Any(cfg)}},
			{Name: "test.metadata_dump", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdsres.Any(&structpb.Struct{})}},
			xdsres.Router(),
		},
	}
	return hcm.New(h, hcm.Deps{Clusters: e.um, Routes: hcm.NewRouteRegistry(), Stats: e.st})
}

func prefixRoute(prefix string) *routev3.Route {
	return &routev3.Route{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "backend"}}},
	}
}

// result is one response as a client sees it.
type result struct {
	code int
	body string
	hdr  http.Header
	seen *backendSeen // nil when the backend was not reached
}

// meta is the jwt_authn metadata the filter after jwt_authn saw.
func (r result) meta(t testing.TB) map[string]any {
	t.Helper()
	if r.seen == nil {
		t.Fatalf("request did not reach the backend: %d %q", r.code, r.body)
	}
	v := r.seen.Header[metaHeader]
	if len(v) == 0 {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(v[0]), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func (e *env) get(pathQuery string, hdr ...string) result {
	e.t.Helper()
	req, err := http.NewRequest("GET", "http://"+e.addr+pathQuery, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	return e.do(req)
}

func (e *env) do(req *http.Request) result {
	e.t.Helper()
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := result{code: resp.StatusCode, body: string(b), hdr: resp.Header}
	if resp.StatusCode == 200 && strings.HasPrefix(r.body, "{") {
		r.seen = &backendSeen{}
		if err := json.Unmarshal(b, r.seen); err != nil {
			e.t.Fatalf("backend body %q: %v", b, err)
		}
	}
	return r
}

func bearer(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

// istioConfig is what Istio generates for one RequestAuthentication jwtRule:
// provider origins-0 with the payload in metadata under the issuer, and a
// rule on "/" requiring {origins-0 OR allow_missing}.
func istioConfig(p *jwtv3.JwtProvider) *jwtv3.JwtAuthentication {
	if p.PayloadInMetadata == "" {
		p.PayloadInMetadata = p.Issuer
	}
	return &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"origins-0": p},
		Rules: []*jwtv3.RequirementRule{{
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			RequirementType: &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{
				RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: &jwtv3.JwtRequirementOrList{
					Requirements: []*jwtv3.JwtRequirement{providerReq("origins-0"), allowMissing()},
				}},
			}},
		}},
		BypassCorsPreflight: true,
	}
}

func providerReq(name string) *jwtv3.JwtRequirement {
	return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: name}}
}

func allowMissing() *jwtv3.JwtRequirement {
	return &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}}
}

// requireConfig requires a valid token of provider name on "/".
func requireConfig(providers map[string]*jwtv3.JwtProvider, name string) *jwtv3.JwtAuthentication {
	return &jwtv3.JwtAuthentication{
		Providers: providers,
		Rules: []*jwtv3.RequirementRule{{
			Match:           &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			RequirementType: &jwtv3.RequirementRule_Requires{Requires: providerReq(name)},
		}},
	}
}

func inlineJWKS(s string) *jwtv3.JwtProvider_LocalJwks {
	return &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: s}}}
}

func remoteSource(uri, cluster string, cache time.Duration) *jwtv3.JwtProvider_RemoteJwks {
	return &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{
		HttpUri: &corev3.HttpUri{
			Uri: uri, HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: cluster}, Timeout: durationpb.New(2 * time.Second),
		},
		CacheDuration: durationpb.New(cache),
	}}
}

// signer makes test keys, their JWKS and tokens.
type signer struct {
	alg string
	kid string
	rsa *rsa.PrivateKey
	ec  *ecdsa.PrivateKey
}

func newSigner(t testing.TB, alg, kid string) *signer {
	t.Helper()
	s := &signer{alg: alg, kid: kid}
	var err error
	switch alg[:2] {
	case "RS", "PS":
		s.rsa, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES":
		s.ec, err = ecdsa.GenerateKey(curveFor(alg), rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func enc(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// jwk is the signer's public key as a JWK (with alg when withAlg).
func (s *signer) jwk() map[string]any {
	k := map[string]any{"kid": s.kid, "alg": s.alg}
	if s.rsa != nil {
		k["kty"] = "RSA"
		k["n"] = enc(s.rsa.N.Bytes())
		k["e"] = enc(big.NewInt(int64(s.rsa.E)).Bytes())
	} else {
		size := (s.ec.Curve.Params().BitSize + 7) / 8
		k["kty"] = "EC"
		k["crv"] = s.ec.Curve.Params().Name
		k["x"] = enc(s.ec.X.FillBytes(make([]byte, size)))
		k["y"] = enc(s.ec.Y.FillBytes(make([]byte, size)))
	}
	return k
}

func jwksOf(signers ...*signer) string {
	var keys []map[string]any
	for _, s := range signers {
		keys = append(keys, s.jwk())
	}
	b, _ := json.Marshal(map[string]any{"keys": keys})
	return string(b)
}

func (s *signer) token(t testing.TB, claims map[string]any) string {
	t.Helper()
	hb, _ := json.Marshal(map[string]any{"alg": s.alg, "kid": s.kid, "typ": "JWT"})
	pb, _ := json.Marshal(claims)
	in := enc(hb) + "." + enc(pb)
	h := hashFor(s.alg)
	hh := h.New()
	hh.Write([]byte(in))
	d := hh.Sum(nil)
	var sig []byte
	var err error
	switch s.alg[:2] {
	case "RS":
		sig, err = rsa.SignPKCS1v15(rand.Reader, s.rsa, h, d)
	case "PS":
		sig, err = rsa.SignPSS(rand.Reader, s.rsa, h, d, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	case "ES":
		var r, ss *big.Int
		r, ss, err = ecdsa.Sign(rand.Reader, s.ec, d)
		size := (s.ec.Curve.Params().BitSize + 7) / 8
		sig = append(r.FillBytes(make([]byte, size)), ss.FillBytes(make([]byte, size))...)
	}
	if err != nil {
		t.Fatal(err)
	}
	return in + "." + enc(sig)
}

func claims(iss string, extra ...any) map[string]any {
	c := map[string]any{"iss": iss, "sub": "user-1", "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()}
	for i := 0; i+1 < len(extra); i += 2 {
		c[extra[i].(string)] = extra[i+1]
	}
	return c
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func retryPolicy(n uint32, base time.Duration) *corev3.RetryPolicy {
	return &corev3.RetryPolicy{
		NumRetries:   wrapperspb.UInt32(n),
		RetryBackOff: &corev3.BackoffStrategy{BaseInterval: durationpb.New(base), MaxInterval: durationpb.New(4 * base)},
	}
}
