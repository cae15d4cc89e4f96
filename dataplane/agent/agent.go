// Package agent is skiff-proxy's identity agent, pilot-agent's job done in
// process: it makes the workload's private key (which never leaves the
// process), asks the mesh CA (Istio's IstioCertificateService on skiffd's
// 15012) to sign a CSR for the workload's SPIFFE identity, checks what comes
// back, and serves the result as the SDS secrets Istio names "default" (the
// certificate chain and key) and "ROOTCA" (the trusted roots) to the
// proxy's own TLS contexts. It renews at a fraction of the certificate's
// life and retries with back-off while the current certificate is valid.
package agent

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	securityapi "istio.io/api/security/v1alpha1"

	"github.com/skiff-mesh/skiff/pkg/stats"
)

// Istio's SDS resource names for the workload certificate and the roots.
const (
	WorkloadSecret = "default"
	RootSecret     = "ROOTCA"
)

// Defaults as pilot-agent's SECRET_TTL, SECRET_GRACE_PERIOD_RATIO and
// TRUST_DOMAIN.
const (
	DefaultTTL         = 24 * time.Hour
	DefaultGraceRatio  = 0.5
	DefaultTrustDomain = "cluster.local"
	// DefaultServerName is the CA's TLS name when --ca-addr is an IP.
	DefaultServerName = "istiod.istio-system.svc"
)

// KeyAlgorithm is the workload key's type.
type KeyAlgorithm string

const (
	ECDSAP256 KeyAlgorithm = "ECDSA" // the default
	RSA2048   KeyAlgorithm = "RSA"
)

// Options configure an Agent.
type Options struct {
	// CAAddr is the CA's HOST:PORT (--ca-addr, CA_ADDR).
	CAAddr string
	// CAServerName is the TLS name the CA's serving certificate must carry;
	// the host of CAAddr, or DefaultServerName when that is an IP.
	CAServerName string
	// CARootCertPath holds PEM roots that verify the CA's serving
	// certificate (--ca-root-cert). Empty: the system roots.
	CARootCertPath string
	// TokenPath holds the bearer credential, re-read for every request.
	TokenPath string
	// Identity: spiffe://TrustDomain/ns/Namespace/sa/ServiceAccount.
	TrustDomain, Namespace, ServiceAccount string
	// TTL is the validity asked for (SECRET_TTL).
	TTL time.Duration
	// GraceRatio: renew once this fraction of the life has passed
	// (SECRET_GRACE_PERIOD_RATIO).
	GraceRatio   float64
	KeyAlgorithm KeyAlgorithm
	// Stats receives istio-agent's metrics; none when nil.
	Stats  *stats.Store
	Logger *slog.Logger
	// OnUpdate is called (on the agent's goroutine; it must not block) after
	// the secrets changed.
	OnUpdate func()
}

// Validate fills in defaults and reports the first bad option, naming the
// flag or variable to fix.
func (o *Options) validate() error {
	if o.CAAddr == "" {
		return errors.New("agent: --ca-addr (CA_ADDR) is empty")
	}
	host, _, err := net.SplitHostPort(o.CAAddr)
	if err != nil {
		return fmt.Errorf("agent: --ca-addr %q: want HOST:PORT: %v", o.CAAddr, err)
	}
	if o.CAServerName == "" {
		o.CAServerName = host
		if net.ParseIP(host) != nil || host == "" {
			o.CAServerName = DefaultServerName
		}
	}
	if o.TrustDomain == "" {
		o.TrustDomain = DefaultTrustDomain
	}
	if o.Namespace == "" || o.ServiceAccount == "" {
		return fmt.Errorf("agent: node.metadata NAMESPACE %q and SERVICE_ACCOUNT %q: both are needed for the workload identity; set them in the bootstrap's node.metadata", o.Namespace, o.ServiceAccount)
	}
	if o.TTL == 0 {
		o.TTL = DefaultTTL
	}
	if o.TTL < 0 {
		return fmt.Errorf("agent: SECRET_TTL %s: must be positive", o.TTL)
	}
	if o.GraceRatio == 0 {
		o.GraceRatio = DefaultGraceRatio
	}
	if o.GraceRatio <= 0 || o.GraceRatio >= 1 {
		return fmt.Errorf("agent: SECRET_GRACE_PERIOD_RATIO %g: want a number between 0 and 1 (0.5 renews at half life)", o.GraceRatio)
	}
	switch strings.ToUpper(string(o.KeyAlgorithm)) {
	case "", "ECDSA", "EC", "ECC":
		o.KeyAlgorithm = ECDSAP256
	case "RSA":
		o.KeyAlgorithm = RSA2048
	default:
		return fmt.Errorf("agent: key algorithm %q: want ECDSA or RSA", o.KeyAlgorithm)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// SPIFFEID is the identity the agent asks for.
func (o *Options) SPIFFEID() string {
	return "spiffe://" + o.TrustDomain + "/ns/" + o.Namespace + "/sa/" + o.ServiceAccount
}

// State is what the agent holds, for the admin API and logs.
type State struct {
	SPIFFEID  string
	Serial    string // hex, as istioctl prints it
	NotBefore time.Time
	NotAfter  time.Time
	// Received is when the current certificate arrived; RenewAt when the
	// agent asks for the next.
	Received, RenewAt time.Time
	// RootFingerprints are the SHA-256 of each trusted root, hex.
	RootFingerprints []string
	// LastError is the last failed request, cleared by a success.
	LastError     string
	LastErrorTime time.Time
}

// issued is one accepted certificate and the secrets made from it.
type issued struct {
	leaf     *x509.Certificate
	roots    []*x509.Certificate
	rootsPEM []byte
	received time.Time
	renewAt  time.Time
	workload *tlsv3.Secret
	rootCA   *tlsv3.Secret
	// versions of the secrets: a new one each time their content changes.
	workloadVersion, rootVersion string
}

// Agent obtains and renews the workload certificate. Create with New, then Run.
type Agent struct {
	o   Options
	id  *url.URL
	log *slog.Logger

	cur     atomic.Pointer[issued]
	ready   chan struct{}
	readyMu sync.Once

	errMu   sync.Mutex
	lastErr string
	errTime time.Time

	requests, failures, retries *stats.Counter
	expiry                      *stats.Gauge
}

// New checks the options; nothing is contacted until Run.
func New(o Options) (*Agent, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	id, err := url.Parse(o.SPIFFEID())
	if err != nil {
		return nil, fmt.Errorf("agent: identity %q is not a URI: %v (check TRUST_DOMAIN, NAMESPACE, SERVICE_ACCOUNT)", o.SPIFFEID(), err)
	}
	a := &Agent{o: o, id: id, log: o.Logger.With("component", "identity-agent"), ready: make(chan struct{})}
	st := o.Stats
	if st == nil {
		st = stats.New()
	}
	csr := st.PromScope("istio_agent.csr", "istio_agent_", stats.Tag{Name: "request_type", Value: "csr"})
	a.requests = csr.Counter("num_outgoing_requests")
	a.failures = csr.Counter("num_failed_outgoing_requests")
	a.retries = csr.Counter("num_outgoing_retries")
	a.expiry = st.PromScope("istio_agent."+WorkloadSecret, "istio_agent_", stats.Tag{Name: "resource_name", Value: WorkloadSecret}).Gauge("cert_expiry_seconds")
	return a, nil
}

// Ready is closed once the first certificate is in.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Secret returns "default" or "ROOTCA" once the agent has a certificate,
// nil otherwise. TLS handshakes call it; it never blocks.
func (a *Agent) Secret(name string) *tlsv3.Secret {
	c := a.cur.Load()
	if c == nil {
		return nil
	}
	switch name {
	case WorkloadSecret:
		return c.workload
	case RootSecret:
		return c.rootCA
	}
	return nil
}

// Provides reports whether name is one of the agent's secrets.
func (a *Agent) Provides(name string) bool { return name == WorkloadSecret || name == RootSecret }

// SecretVersion is the version_info of a secret the agent holds, and when
// it last changed; ok is false when it has none yet.
func (a *Agent) SecretVersion(name string) (version string, updated time.Time, ok bool) {
	c := a.cur.Load()
	if c == nil {
		return "", time.Time{}, false
	}
	switch name {
	case WorkloadSecret:
		return c.workloadVersion, c.received, true
	case RootSecret:
		return c.rootVersion, c.received, true
	}
	return "", time.Time{}, false
}

// State returns the current certificate's details.
func (a *Agent) State() State {
	s := State{SPIFFEID: a.o.SPIFFEID()}
	if c := a.cur.Load(); c != nil {
		s.Serial = serialHex(c.leaf.SerialNumber)
		s.NotBefore, s.NotAfter = c.leaf.NotBefore, c.leaf.NotAfter
		s.Received, s.RenewAt = c.received, c.renewAt
		for _, r := range c.roots {
			sum := sha256.Sum256(r.Raw)
			s.RootFingerprints = append(s.RootFingerprints, hex.EncodeToString(sum[:]))
		}
	}
	a.errMu.Lock()
	s.LastError, s.LastErrorTime = a.lastErr, a.errTime
	a.errMu.Unlock()
	return s
}

// Run obtains the first certificate and renews it until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	conn, err := grpc.NewClient("passthrough:///"+a.o.CAAddr,
		grpc.WithTransportCredentials(credentials.NewTLS(a.caTLS())),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		return fmt.Errorf("agent: CA %s: %w", a.o.CAAddr, err)
	}
	defer conn.Close()
	client := securityapi.NewIstioCertificateServiceClient(conn)
	a.log.Info("identity agent starting", "ca", a.o.CAAddr, "ca_server_name", a.o.CAServerName,
		"identity", a.o.SPIFFEID(), "ttl", a.o.TTL, "grace_ratio", a.o.GraceRatio, "key", a.o.KeyAlgorithm)

	backoff := time.Duration(0)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			a.updateExpiry()
			continue
		case <-timer.C:
		}
		if backoff > 0 {
			a.retries.Inc()
		}
		err := a.renew(ctx, client)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			backoff = 0
			timer.Reset(time.Until(a.cur.Load().renewAt))
			continue
		}
		backoff = a.nextBackoff(backoff)
		a.recordError(err)
		cur := a.cur.Load()
		if cur == nil {
			a.log.Error("identity agent has no certificate yet: the CA request failed; TLS listeners and clusters using SDS \"default\"/\"ROOTCA\" wait",
				"ca", a.o.CAAddr, "error", err, "retry_in", backoff.Round(time.Millisecond))
		} else {
			a.log.Warn("certificate renewal failed; the current certificate stays in use",
				"ca", a.o.CAAddr, "error", err, "retry_in", backoff.Round(time.Millisecond),
				"current_expires", cur.leaf.NotAfter.UTC().Format(time.RFC3339), "expires_in", time.Until(cur.leaf.NotAfter).Round(time.Second))
		}
		timer.Reset(backoff)
	}
}

// nextBackoff doubles from 100 ms up to 30 s, capped at a quarter of the
// current certificate's remaining life so a short-lived one still gets
// several attempts, with ±20% jitter.
func (a *Agent) nextBackoff(prev time.Duration) time.Duration {
	d := 100 * time.Millisecond
	if prev > 0 {
		d = prev * 2
	}
	limit := 30 * time.Second
	if c := a.cur.Load(); c != nil {
		if left := time.Until(c.leaf.NotAfter) / 4; left < limit {
			limit = max(left, 100*time.Millisecond)
		}
	}
	d = min(d, limit)
	j := time.Duration((mrand.Float64()*0.4 - 0.2) * float64(d))
	return d + j
}

func (a *Agent) recordError(err error) {
	a.errMu.Lock()
	a.lastErr, a.errTime = err.Error(), time.Now()
	a.errMu.Unlock()
}

func (a *Agent) updateExpiry() {
	if c := a.cur.Load(); c != nil {
		a.expiry.Set(int64(time.Until(c.leaf.NotAfter) / time.Second))
	}
}

// caTLS verifies the CA's serving certificate against the configured roots
// plus the mesh roots already learnt (so a rotated CA stays reachable), and
// checks its name.
func (a *Agent) caTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: a.o.CAServerName,
		// Verified in VerifyConnection, against a pool that may grow.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the CA sent no certificate")
			}
			pool, err := a.caRoots()
			if err != nil {
				return err
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err = cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: a.o.CAServerName, Roots: pool, Intermediates: inter})
			if err != nil {
				return fmt.Errorf("verifying the CA's serving certificate for %q against %s: %w", a.o.CAServerName, a.rootsSource(), err)
			}
			return nil
		},
	}
}

func (a *Agent) rootsSource() string {
	if a.o.CARootCertPath == "" {
		return "the system roots (set --ca-root-cert to the mesh root)"
	}
	return "--ca-root-cert " + a.o.CARootCertPath
}

func (a *Agent) caRoots() (*x509.CertPool, error) {
	var pool *x509.CertPool
	if a.o.CARootCertPath == "" {
		p, err := x509.SystemCertPool()
		if err != nil {
			return nil, fmt.Errorf("loading system roots: %w (set --ca-root-cert)", err)
		}
		pool = p
	} else {
		b, err := os.ReadFile(a.o.CARootCertPath)
		if err != nil {
			return nil, fmt.Errorf("--ca-root-cert: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--ca-root-cert %s: no PEM certificate in the file", a.o.CARootCertPath)
		}
	}
	if c := a.cur.Load(); c != nil {
		for _, r := range c.roots {
			pool.AddCert(r)
		}
	}
	return pool, nil
}

// Token is the bearer credential the agent shows the CA, read afresh ("" when
// it has none). The proxy shows the same one to skiffd's secure xDS port.
func (a *Agent) Token() (string, error) { return a.token() }

// token reads the bearer credential afresh, so a replaced file takes effect.
func (a *Agent) token() (string, error) {
	if a.o.TokenPath == "" {
		return "", nil
	}
	b, err := os.ReadFile(a.o.TokenPath)
	if err != nil {
		return "", fmt.Errorf("--ca-token-file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("--ca-token-file %s: the file is empty", a.o.TokenPath)
	}
	return t, nil
}

// renew makes a new key and CSR, asks the CA, checks the answer and
// installs it.
func (a *Agent) renew(ctx context.Context, client securityapi.IstioCertificateServiceClient) error {
	tok, err := a.token()
	if err != nil {
		return err
	}
	key, err := a.newKey()
	if err != nil {
		return err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{a.id}}, key)
	if err != nil {
		return fmt.Errorf("making the CSR: %w", err)
	}
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if tok != "" {
		rctx = metadata.AppendToOutgoingContext(rctx, "authorization", "Bearer "+tok)
	}
	a.requests.Inc()
	resp, err := client.CreateCertificate(rctx, &securityapi.IstioCertificateRequest{
		Csr: string(csrPEM), ValidityDuration: int64(a.o.TTL / time.Second),
	})
	if err != nil {
		a.failures.Inc()
		return fmt.Errorf("CreateCertificate: %w", err)
	}
	next, err := a.accept(resp.GetCertChain(), key)
	if err != nil {
		a.failures.Inc()
		return fmt.Errorf("CreateCertificate response: %w", err)
	}
	prev := a.cur.Load()
	if prev != nil && string(prev.rootsPEM) == string(next.rootsPEM) {
		next.rootCA, next.rootVersion = prev.rootCA, prev.rootVersion
	} else if prev != nil {
		a.log.Info("trusted roots changed", "roots", len(next.roots), "fingerprints", fingerprints(next.roots))
	}
	a.cur.Store(next)
	a.updateExpiry()
	a.errMu.Lock()
	a.lastErr = ""
	a.errMu.Unlock()
	a.log.Info("workload certificate issued", "identity", a.o.SPIFFEID(),
		"serial", serialHex(next.leaf.SerialNumber),
		"not_after", next.leaf.NotAfter.UTC().Format(time.RFC3339), "renew_at", next.renewAt.UTC().Format(time.RFC3339Nano))
	a.readyMu.Do(func() { close(a.ready) })
	if a.o.OnUpdate != nil {
		a.o.OnUpdate()
	}
	return nil
}

func fingerprints(cs []*x509.Certificate) []string {
	var out []string
	for _, c := range cs {
		s := sha256.Sum256(c.Raw)
		out = append(out, hex.EncodeToString(s[:8]))
	}
	return out
}

func (a *Agent) newKey() (crypto.Signer, error) {
	if a.o.KeyAlgorithm == RSA2048 {
		return rsa.GenerateKey(rand.Reader, 2048)
	}
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// accept checks a CreateCertificate chain: [leaf, intermediates…, roots];
// the leaf is for our key and exactly our identity, and verifies through
// the intermediates to one of the roots.
func (a *Agent) accept(chain []string, key crypto.Signer) (*issued, error) {
	if len(chain) < 2 {
		return nil, fmt.Errorf("cert_chain has %d elements; want the leaf, any intermediates and the root bundle", len(chain))
	}
	parsed := make([][]*x509.Certificate, len(chain))
	for i, s := range chain {
		cs, err := parsePEMCerts([]byte(s))
		if err != nil {
			return nil, fmt.Errorf("cert_chain[%d]: %w", i, err)
		}
		parsed[i] = cs
	}
	leaf := parsed[0][0]
	roots := parsed[len(parsed)-1]
	var inters []*x509.Certificate
	inters = append(inters, parsed[0][1:]...)
	for _, cs := range parsed[1 : len(parsed)-1] {
		inters = append(inters, cs...)
	}
	if !publicKeyEqual(leaf.PublicKey, key.Public()) {
		return nil, errors.New("cert_chain[0]: the certificate is not for the key this agent generated")
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != a.id.String() || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) > 0 {
		return nil, fmt.Errorf("cert_chain[0]: SANs URI %v DNS %v IP %v: want exactly %s", leaf.URIs, leaf.DNSNames, leaf.IPAddresses, a.id)
	}
	rootPool, interPool := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	for _, c := range inters {
		interPool.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: rootPool, Intermediates: interPool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("cert_chain[0] does not verify to a root of the returned bundle: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding the private key: %w", err)
	}
	var chainPEM []byte
	for _, c := range append([]*x509.Certificate{leaf}, inters...) {
		chainPEM = append(chainPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	var rootsPEM []byte
	for _, r := range roots {
		rootsPEM = append(rootsPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})...)
	}
	now := time.Now()
	life := leaf.NotAfter.Sub(now)
	// Istio measures the life from when the certificate arrived, not from
	// NotBefore (which the CA backdates for clock skew). A little jitter
	// spreads renewals of proxies started together.
	grace := time.Duration(float64(life) * a.o.GraceRatio)
	jitter := time.Duration(mrand.Float64() * 0.05 * float64(life))
	version := now.UTC().Format(time.RFC3339Nano)
	return &issued{
		leaf: leaf, roots: roots, rootsPEM: rootsPEM, received: now,
		renewAt: now.Add(grace - jitter),
		workload: &tlsv3.Secret{Name: WorkloadSecret, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inlineBytes(chainPEM),
			PrivateKey:       inlineBytes(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})),
		}}},
		rootCA: &tlsv3.Secret{Name: RootSecret, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inlineBytes(rootsPEM),
		}}},
		workloadVersion: version, rootVersion: version,
	}, nil
}

func inlineBytes(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

func parsePEMCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return out, nil
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	type eq interface{ Equal(crypto.PublicKey) bool }
	k, ok := a.(eq)
	return ok && k.Equal(b)
}

// serialHex is how istioctl prints serials.
func serialHex(n *big.Int) string { return hex.EncodeToString(n.Bytes()) }
