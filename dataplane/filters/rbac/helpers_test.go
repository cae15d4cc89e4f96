package rbac

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/dataplane/hcm"
	"github.com/skiff-mesh/skiff/dataplane/l4"
	"github.com/skiff-mesh/skiff/dataplane/listener"
	"github.com/skiff-mesh/skiff/dataplane/upstream"
	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// metaFilterType registers a test-only HTTP filter, placed before RBAC,
// that stands in for jwt_authn: the JSON object in the x-test-claims
// request header becomes the verified payload under
// envoy.filters.http.jwt_authn / "payload", where Istio's rules look.
// After RBAC, a second instance reports what RBAC left in the stream's
// metadata to the backend, in x-seen-rbac-md (its keys and values, sorted)
// and x-seen-log-hint.
const metaFilterType = "type.googleapis.com/google.protobuf.Struct"

func init() {
	hcm.RegisterFilter(metaFilterType, func(fc hcm.FilterConfig) (hcm.Filter, error) {
		cfg := &structpb.Struct{}
		if err := fc.TypedConfig.UnmarshalTo(cfg); err != nil {
			return nil, err
		}
		report := cfg.GetFields()["report"].GetBoolValue()
		return func(next hcm.Handler) hcm.Handler {
			return hcm.HandlerFunc(func(s *hcm.Stream) {
				if report {
					if md, ok := s.Metadata(HTTPFilterName).(map[string]any); ok {
						var kv []string
						for k, v := range md {
							kv = append(kv, fmt.Sprintf("%s=%v", k, v))
						}
						sort.Strings(kv)
						s.Req.Header.Set("x-seen-rbac-md", strings.Join(kv, ";"))
					}
					if md, ok := s.Metadata(commonNamespace).(map[string]any); ok {
						s.Req.Header.Set("x-seen-log-hint", fmt.Sprint(md[accessLogHintKey]))
					}
				} else if c := s.Req.Header.Get("x-test-claims"); c != "" {
					var payload map[string]any
					if err := json.Unmarshal([]byte(c), &payload); err == nil {
						s.SetMetadata("envoy.filters.http.jwt_authn", map[string]any{"payload": payload})
					}
				}
				next.ServeStream(s)
			})
		}, nil
	})
}

func claimsFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: "test.claims", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdsres.Any(&structpb.Struct{})}}
}

func reportFilter() *hcmv3.HttpFilter {
	cfg, _ := structpb.NewStruct(map[string]any{"report": true})
	return &hcmv3.HttpFilter{Name: "test.report", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdsres.Any(cfg)}}
}

func rbacFilter(cfg *httprbacv3.RBAC) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: HTTPFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdsres.Any(cfg)}}
}

func netRBACFilter(cfg *netrbacv3.RBAC) *listenerv3.Filter {
	return &listenerv3.Filter{Name: "envoy.filters.network.rbac", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: xdsres.Any(cfg)}}
}

// chainFactory builds filter chains the way the proxy's compile.ChainFactory
// does, plus the non-terminal network filters registered with
// listener.RegisterNetworkFilter, wrapped around the terminal one in order.
type chainFactory struct {
	clusters core.ClusterSet
	st       *stats.Store
}

func (f *chainFactory) NetworkFilters(_ *listenerv3.Listener, fc *listenerv3.FilterChain) (core.ConnHandler, error) {
	fs := fc.GetFilters()
	last := fs[len(fs)-1]
	var h core.ConnHandler
	switch m, err := last.GetTypedConfig().UnmarshalNew(); c := m.(type) {
	case *hcmv3.HttpConnectionManager:
		h, err = hcm.New(c, hcm.Deps{Clusters: f.clusters, Routes: hcm.NewRouteRegistry(), Stats: f.st})
		if err != nil {
			return nil, fmt.Errorf("filters[%d]: %w", len(fs)-1, err)
		}
	case *tcpv3.TcpProxy:
		h, err = l4.NewTCPProxy(c, f.clusters, f.st)
		if err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("terminal filter %T (%v)", m, err)
	}
	for i := len(fs) - 2; i >= 0; i-- {
		fac := listener.LookupNetworkFilter(fs[i].GetTypedConfig().GetTypeUrl())
		if fac == nil {
			return nil, fmt.Errorf("filters[%d]: unknown network filter %s", i, fs[i].GetTypedConfig().GetTypeUrl())
		}
		nf, err := fac(listener.NetworkFilterConfig{Name: fs[i].GetName(), TypedConfig: fs[i].GetTypedConfig(), Stats: f.st})
		if err != nil {
			return nil, fmt.Errorf("filters[%d] %q: %w", i, fs[i].GetName(), err)
		}
		h = nf(h)
	}
	return h, nil
}

// env is a listener manager with real listeners on loopback, in front of
// an HTTP backend ("backend") and a TCP echo server ("echo").
type env struct {
	t  *testing.T
	st *stats.Store
	lm *listener.Manager
	n  int
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st := stats.New()
	um := upstream.NewManager(upstream.Options{Stats: st})
	t.Cleanup(um.Close)
	backend := httpBackend(t)
	echo := echoServer(t)
	for name, addr := range map[string]string{"backend": backend, "echo": echo} {
		if err := um.AddOrUpdate(&clusterv3.Cluster{Name: name,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
			ConnectTimeout:       durationpb.New(2 * time.Second),
			LoadAssignment:       xdsres.Endpoints(name, addr)}); err != nil {
			t.Fatal(err)
		}
	}
	lm := listener.NewManager(listener.Options{Stats: st, Factory: &chainFactory{clusters: um, st: st}, DrainTime: 50 * time.Millisecond})
	t.Cleanup(lm.Close)
	return &env{t: t, st: st, lm: lm}
}

// httpBackend answers 200 with "ok <path>" and reports what the proxy
// added in x-seen-* headers.
func httpBackend(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range r.Header {
			if strings.HasPrefix(k, "X-Seen-") {
				w.Header()[k] = v
			}
		}
		io.WriteString(w, "ok "+r.URL.Path)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// listen adds a listener on addr with the given chains and returns its
// address.
func (e *env) listen(addr string, chains []*listenerv3.FilterChain, filters ...*listenerv3.ListenerFilter) string {
	e.t.Helper()
	e.n++
	name := fmt.Sprintf("l%d", e.n)
	if err := e.lm.AddOrUpdate(&listenerv3.Listener{Name: name, Address: xdsres.Addr(addr),
		ListenerFilters: filters, FilterChains: chains}); err != nil {
		e.t.Fatal(err)
	}
	return e.lm.Addr(name).String()
}

// hcmConfig is an HCM with stat prefix "in", inline routes (everything
// to backend when none given), and the HTTP filters before the router.
func hcmConfig(filters []*hcmv3.HttpFilter, routes ...*routev3.Route) *hcmv3.HttpConnectionManager {
	if len(routes) == 0 {
		routes = []*routev3.Route{xdsres.PrefixRoute("/", "backend")}
	}
	h := xdsres.HCMFilters("in", "", filters...)
	h.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: xdsres.RouteConfig("local", routes...)}
	return h
}

// httpListener starts a plaintext HTTP listener with RBAC cfg and returns
// its base URL.
func (e *env) httpListener(cfg *httprbacv3.RBAC, routes ...*routev3.Route) string {
	e.t.Helper()
	return "http://" + e.listenAt("127.0.0.1:0", cfg, routes...)
}

// listenAt starts a plaintext HTTP listener with RBAC cfg on addr and
// returns its address.
func (e *env) listenAt(addr string, cfg *httprbacv3.RBAC, routes ...*routev3.Route) string {
	e.t.Helper()
	fc := xdsres.FilterChain("http", nil, nil, hcmConfig([]*hcmv3.HttpFilter{claimsFilter(), rbacFilter(cfg), reportFilter()}, routes...))
	return e.listen(addr, []*listenerv3.FilterChain{fc})
}

type reply struct {
	code  int
	body  string
	hdr   http.Header
	proto string
}

func newGet(u string) (*http.Request, error) { return http.NewRequest(http.MethodGet, u, nil) }

// do sends one request on a fresh connection; headers come in pairs.
func do(t *testing.T, client *http.Client, method, u string, hdr ...string) reply {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "host") {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Add(hdr[i], hdr[i+1])
	}
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, string(b), resp.Header, resp.Proto}
}

// Builders for the RBAC protos, in the shapes Istio emits.

func allowPolicies(action rbacv3.RBAC_Action, policies map[string]*rbacv3.Policy) *httprbacv3.RBAC {
	return &httprbacv3.RBAC{Rules: &rbacv3.RBAC{Action: action, Policies: policies}}
}

func pol(perms []*rbacv3.Permission, princs []*rbacv3.Principal) *rbacv3.Policy {
	return &rbacv3.Policy{Permissions: perms, Principals: princs}
}

func anyPerm() *rbacv3.Permission { return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}} }
func anyID() *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
}

func permHeader(h *routev3.HeaderMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: h}}
}

func permPath(sm *matcherv3.StringMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: sm}}}}
}

func permNot(p *rbacv3.Permission) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: p}}
}

func permAnd(ps ...*rbacv3.Permission) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: ps}}}
}

func permOr(ps ...*rbacv3.Permission) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: ps}}}
}

func idAnd(ps ...*rbacv3.Principal) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ps}}}
}

func idOr(ps ...*rbacv3.Principal) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ps}}}
}

func idNot(p *rbacv3.Principal) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: p}}
}

func idAuth(sm *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: sm}}}
}

func cidr(addr string, bits uint32) *corev3.CidrRange {
	return &corev3.CidrRange{AddressPrefix: addr, PrefixLen: wrapperspb.UInt32(bits)}
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}
func prefix(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s}}
}
func suffix(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: s}}
}
func regex(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: s}}}
}

// claimMatcher is Istio's request.auth.claims[...] rule: the claim, or any
// element of it when it is a list, matches sm.
func claimMatcher(sm *matcherv3.StringMatcher, claim ...string) *matcherv3.MetadataMatcher {
	path := []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: "payload"}}}
	for _, c := range claim {
		path = append(path, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: c}})
	}
	v := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: sm}}
	return &matcherv3.MetadataMatcher{Filter: "envoy.filters.http.jwt_authn", Path: path,
		Value: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{
			ValueMatchers: []*matcherv3.ValueMatcher{
				{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: v}}}},
				v}}}}}
}

// testCA issues certificates for workloads with SPIFFE URI SANs.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

func newCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{"cluster.local"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a PEM certificate and key for spiffeID (and dnsNames).
func (ca *testCA) issue(t testing.TB, spiffeID string, dnsNames ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames: dnsNames}
	if spiffeID != "" {
		u, err := url.Parse(spiffeID)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

// mtlsSocket is a server transport socket that requires a client
// certificate from ca, as Istio's inbound ISTIO_MUTUAL chains do.
func mtlsSocket(ca *testCA, certPEM, keyPEM []byte) *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: xdsres.Any(&tlsv3.DownstreamTlsContext{
			RequireClientCertificate: wrapperspb.Bool(true),
			CommonTlsContext: &tlsv3.CommonTlsContext{
				TlsCertificates:       []*tlsv3.TlsCertificate{{CertificateChain: xdsres.Inline(certPEM), PrivateKey: xdsres.Inline(keyPEM)}},
				AlpnProtocols:         []string{"h2", "http/1.1"},
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: xdsres.Inline(ca.certPEM)}},
			}})}}
}

// mtlsClient presents the given client certificate and trusts ca; sni is
// the server name it asks for. It speaks HTTP/2, as sidecars do.
func mtlsClient(t *testing.T, ca *testCA, certPEM, keyPEM []byte, sni string) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	cfg := &tls.Config{RootCAs: pool, ServerName: sni}
	if certPEM != nil {
		kp, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{kp}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true, ForceAttemptHTTP2: true}}
}
