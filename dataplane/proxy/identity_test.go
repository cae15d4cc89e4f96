package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/dataplane/agent"
	"github.com/skiff-mesh/skiff/dataplane/agent/agenttest"
)

// syncBuffer collects a proxy's log for assertions.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// sdsRef is Istio's generated SDS reference to pilot-agent's sds-grpc.
func sdsRef(name string) string {
	return `{name: ` + name + `, sds_config: {api_config_source: {api_type: GRPC, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: sds-grpc}}]}, resource_api_version: V3}}`
}

const sleepID = "spiffe://cluster.local/ns/default/sa/sleep"

// mtlsBootstrap is a sidecar in miniature: "outbound" (plain HTTP on out)
// routes to cluster "mtls", which speaks mTLS with the agent's secrets to
// "inbound" (on in), which requires a client certificate from ROOTCA and
// forwards to backend with the client's identity in x-forwarded-client-cert.
func mtlsBootstrap(out, in, backend string) string {
	host := func(a string) (string, string) { h, p, _ := net.SplitHostPort(a); return h, p }
	oh, op := host(out)
	ih, ip := host(in)
	bh, bp := host(backend)
	hcm := func(name, cluster, extra string) string {
		return `
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ` + name + extra + `
          route_config:
            name: ` + name + `
            virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: ` + cluster + `}}]}]
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`
	}
	static := func(name, h, p string) string {
		return `
  - name: ` + name + `
    type: STATIC
    connect_timeout: 1s
    load_assignment: {cluster_name: ` + name + `, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: ` + h + `, port_value: ` + p + `}}}}]}]}`
	}
	return `node:
  id: sidecar~127.0.0.1~sleep-1.default~default.svc.cluster.local
  cluster: sleep.default
  metadata: {NAMESPACE: default, SERVICE_ACCOUNT: sleep}
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
static_resources:
  listeners:
  - name: outbound
    address: {socket_address: {address: ` + oh + `, port_value: ` + op + `}}
    filter_chains:
    - filters:` + hcm("outbound", "mtls", "") + `
  - name: inbound
    address: {socket_address: {address: ` + ih + `, port_value: ` + ip + `}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificate_sds_secret_configs: [` + sdsRef("default") + `]
            combined_validation_context:
              default_validation_context: {match_subject_alt_names: [{prefix: "spiffe://cluster.local/"}]}
              validation_context_sds_secret_config: ` + sdsRef("ROOTCA") + `
      filters:` + hcm("inbound", "backend", `
          forward_client_cert_details: SANITIZE_SET
          set_current_client_cert_details: {uri: true}`) + `
  clusters:` + static("mtls", ih, ip) + `
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: outbound_.80_._.backend.default.svc.cluster.local
        common_tls_context:
          tls_certificate_sds_secret_configs: [` + sdsRef("default") + `]
          combined_validation_context:
            default_validation_context: {match_subject_alt_names: [{exact: "` + sleepID + `"}]}
            validation_context_sds_secret_config: ` + sdsRef("ROOTCA") + static("backend", bh, bp) + `
`
}

// identityProxy is a skiff-proxy with the identity agent on.
type identityProxy struct {
	*Proxy
	log      *syncBuffer
	out, in  string
	ca       *agenttest.CA
	tokenDst string
}

// startIdentityProxy starts the CA and a proxy whose agent uses it; it does
// not wait for readiness. token replaces the CA's valid token when set.
func startIdentityProxy(t *testing.T, ttl time.Duration, token string) *identityProxy {
	t.Helper()
	c := agenttest.StartCA(t, "default", "sleep")
	backend, _ := echoBackend(t, "backend", func(w http.ResponseWriter, r *http.Request) bool {
		fmt.Fprint(w, r.Header.Get("x-forwarded-client-cert"))
		return true
	})
	ip := &identityProxy{log: &syncBuffer{}, out: freeAddr(t), in: freeAddr(t), ca: c, tokenDst: c.TokenFile}
	if token != "" {
		if err := os.WriteFile(c.TokenFile, []byte(token), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ip.Proxy = launchProxy(t, mtlsBootstrap(ip.out, ip.in, backend), ip.log,
		IdentityOptions{CAAddr: c.Addr, CARootCert: c.RootFile, TokenFile: c.TokenFile, TTL: ttl})
	return ip
}

// launchProxy runs a proxy from bootstrapYAML with the identity options,
// logging to log (shown when the test fails), without waiting for ready.
func launchProxy(t *testing.T, bootstrapYAML string, log *syncBuffer, id IdentityOptions) *Proxy {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bootstrap.yaml")
	if err := os.WriteFile(path, []byte(bootstrapYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := New(Options{ConfigPath: path, DrainTime: 100 * time.Millisecond,
		Logger:   slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("proxy Run: %v", err)
		}
		if t.Failed() {
			t.Logf("proxy log:\n%s", log.String())
		}
	})
	return p
}

func waitReady(t *testing.T, p *identityProxy, within time.Duration) {
	t.Helper()
	select {
	case <-p.Ready():
	case <-time.After(within):
		t.Fatalf("proxy not ready within %v; agent state %+v", within, p.Agent().State())
	}
}

// serverSerial handshakes with the inbound listener as a mesh client and
// returns the serial of the certificate the proxy presents.
func serverSerial(t *testing.T, p *identityProxy, client tls.Certificate) (string, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", p.in, &tls.Config{
		Certificates: []tls.Certificate{client}, RootCAs: p.ca.RootPool(), ServerName: "ignored",
		InsecureSkipVerify: true, // the SAN is a SPIFFE URI; checked below
		VerifyConnection: func(cs tls.ConnectionState) error {
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: p.ca.RootPool(), Intermediates: inter})
			return err
		},
	})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	leaf := conn.ConnectionState().PeerCertificates[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != sleepID {
		t.Errorf("inbound presents SANs %v, want %s", leaf.URIs, sleepID)
	}
	return hex.EncodeToString(leaf.SerialNumber.Bytes()), nil
}

func TestIdentityAgentMTLS(t *testing.T) {
	p := startIdentityProxy(t, time.Hour, "")
	waitReady(t, p, 10*time.Second)
	code, body, _ := get(t, "http://"+p.out+"/hello")
	if code != 200 {
		t.Fatalf("GET through the mTLS hop: %d %q", code, body)
	}
	// The backend sees the client's identity as the inbound side verified it.
	if !strings.Contains(body, "URI="+sleepID) {
		t.Fatalf("x-forwarded-client-cert %q: want URI=%s", body, sleepID)
	}
	st := p.Agent().State()
	if st.SPIFFEID != sleepID || st.Serial == "" || len(st.RootFingerprints) != 1 {
		t.Fatalf("agent state %+v", st)
	}
	if left := time.Until(st.NotAfter); left < 59*time.Minute || left > 61*time.Minute {
		t.Errorf("certificate valid for %v more, want SECRET_TTL 1h", left)
	}
	serial, err := serverSerial(t, p, p.ca.ClientCert(t, "default", "other", time.Hour))
	if err != nil || serial != st.Serial {
		t.Fatalf("inbound handshake: serial %q err %v, want the agent's %q", serial, err, st.Serial)
	}
	// Without a client certificate the inbound listener refuses.
	conn, err := tls.Dial("tcp", p.in, &tls.Config{InsecureSkipVerify: true})
	if err == nil {
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil {
		t.Error("inbound accepted a client without a certificate")
	}
	page := adminStats(t, p.Proxy)
	if v := statValue(page, "istio_agent.csr.num_outgoing_requests"); v < 1 {
		t.Errorf("istio_agent.csr.num_outgoing_requests = %d, want >= 1", v)
	}
	_, prom, _ := get(t, "http://"+p.AdminAddr().String()+"/stats/prometheus")
	for _, want := range []string{`istio_agent_num_outgoing_requests{request_type="csr"} `, `istio_agent_cert_expiry_seconds{resource_name="default"} `} {
		if !strings.Contains(prom, want) {
			t.Errorf("/stats/prometheus lacks %s", want)
		}
	}
	// /config_dump shows the agent's secrets without the private key.
	_, dump, _ := get(t, "http://"+p.AdminAddr().String()+"/config_dump")
	redacted := base64.StdEncoding.EncodeToString([]byte("[redacted]"))
	if !strings.Contains(dump, `"dynamic_active_secrets"`) || !strings.Contains(dump, `"name": "ROOTCA"`) || !strings.Contains(dump, `"inline_bytes": "`+redacted+`"`) {
		t.Errorf("config_dump secrets section missing or its key not redacted:\n%s", dump)
	}
	if strings.Contains(dump, base64.StdEncoding.EncodeToString([]byte("-----BEGIN PRIVATE KEY"))[:20]) {
		t.Error("config_dump contains the private key")
	}
}

// Rotation: with a 2 s SECRET_TTL the agent renews about every second;
// keep-alive and fresh connections see no failure while new handshakes
// get new certificates.
func TestIdentityAgentRotationUnderLoad(t *testing.T) {
	p := startIdentityProxy(t, 2*time.Second, "")
	waitReady(t, p, 10*time.Second)
	client := p.ca.ClientCert(t, "default", "other", time.Hour)
	keep := &http.Client{Timeout: 3 * time.Second}
	fresh := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	defer keep.CloseIdleConnections()
	serials := map[string]bool{}
	var failures []string
	requests := 0
	deadline := time.Now().Add(4 * time.Second)
	lastProbe := time.Time{}
	for i := 0; i < 5000 && time.Now().Before(deadline); i++ {
		c := keep
		if i%2 == 1 {
			c = fresh
		}
		resp, err := c.Get("http://" + p.out + "/r")
		requests++
		if err != nil {
			failures = append(failures, err.Error())
		} else {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(b), "URI="+sleepID) {
				failures = append(failures, fmt.Sprintf("%d %q", resp.StatusCode, b))
			}
		}
		if time.Since(lastProbe) > 150*time.Millisecond {
			lastProbe = time.Now()
			s, err := serverSerial(t, p, client)
			if err != nil {
				failures = append(failures, "inbound handshake: "+err.Error())
			} else {
				serials[s] = true
			}
		}
	}
	if len(failures) > 0 {
		t.Fatalf("%d of %d requests failed during rotation; first: %s", len(failures), requests, failures[0])
	}
	if len(serials) < 3 {
		t.Fatalf("new handshakes saw %d certificates in 4s with a 2s TTL, want >= 3 (two rotations)", len(serials))
	}
	t.Logf("%d requests, %d certificates seen", requests, len(serials))
}

// A wrong token: the agent logs the CA's refusal and retries, the proxy is
// not ready; fixing the token file lets it recover without a restart.
func TestIdentityAgentBadTokenRecovers(t *testing.T) {
	p := startIdentityProxy(t, time.Hour, "not-a-registered-token")
	eventually(t, "the agent to log the CA's refusal", func() (bool, string) {
		l := p.log.String()
		return strings.Contains(l, "unknown bootstrap token") && strings.Contains(l, "retry_in"), l
	})
	select {
	case <-p.Ready():
		t.Fatal("proxy ready without a certificate")
	default:
	}
	code, body, _ := get(t, "http://"+p.AdminAddr().String()+"/ready")
	if code != 503 {
		t.Fatalf("/ready without a certificate: %d %q, want 503", code, body)
	}
	if st := p.Agent().State(); st.Serial != "" || !strings.Contains(st.LastError, "Unauthenticated") {
		t.Fatalf("agent state %+v, want no certificate and the CA's error", st)
	}
	eventually(t, "failed requests and retries counted", func() (bool, string) {
		page := adminStats(t, p.Proxy)
		f, r := statValue(page, "istio_agent.csr.num_failed_outgoing_requests"), statValue(page, "istio_agent.csr.num_outgoing_retries")
		return f >= 2 && r >= 1, fmt.Sprintf("failed %d retries %d", f, r)
	})
	if err := os.WriteFile(p.tokenDst, []byte(p.ca.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	waitReady(t, p, 10*time.Second)
	if code, _, _ := get(t, "http://"+p.AdminAddr().String()+"/ready"); code != 200 {
		t.Fatalf("/ready after recovery: %d", code)
	}
	if code, body, _ := get(t, "http://"+p.out+"/after"); code != 200 {
		t.Fatalf("GET after recovery: %d %q", code, body)
	}
}

// Root rotation with overlap: the next certificate comes from the new root
// and ROOTCA trusts both, so traffic keeps flowing.
func TestIdentityAgentRootRotation(t *testing.T) {
	p := startIdentityProxy(t, 2*time.Second, "")
	waitReady(t, p, 10*time.Second)
	if code, _, _ := get(t, "http://"+p.out+"/before"); code != 200 {
		t.Fatalf("GET before rotation: %d", code)
	}
	if err := p.ca.RotateRoot(time.Hour); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ROOTCA to hold both roots", func() (bool, string) {
		st := p.Agent().State()
		return len(st.RootFingerprints) == 2, fmt.Sprint(st.RootFingerprints)
	})
	roots := p.Agent().Secret(agent.RootSecret).GetValidationContext().GetTrustedCa().GetInlineBytes()
	if n := strings.Count(string(roots), "BEGIN CERTIFICATE"); n != 2 {
		t.Fatalf("ROOTCA has %d roots, want 2 during the overlap", n)
	}
	// Wait for a leaf from the new root, then traffic still works.
	newRoot := p.ca.TrustBundle()[0]
	eventually(t, "a certificate from the new root", func() (bool, string) {
		leaf := p.Agent().Secret(agent.WorkloadSecret).GetTlsCertificate().GetCertificateChain().GetInlineBytes()
		c, err := tls.X509KeyPair(leaf, p.Agent().Secret(agent.WorkloadSecret).GetTlsCertificate().GetPrivateKey().GetInlineBytes())
		if err != nil {
			return false, err.Error()
		}
		l, _ := x509.ParseCertificate(c.Certificate[0])
		return l.CheckSignatureFrom(newRoot) == nil, l.Issuer.String()
	})
	for i := 0; i < 20; i++ {
		if code, body, _ := get(t, "http://"+p.out+"/after"); code != 200 {
			t.Fatalf("GET %d after root rotation: %d %q", i, code, body)
		}
	}
}
