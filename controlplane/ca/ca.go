package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// KeyAlgorithm is the key type of a self-signed root.
type KeyAlgorithm string

const (
	// RSA2048 is what istiod uses for its self-signed root, and the default.
	RSA2048 KeyAlgorithm = "RSA2048"
	// ECDSAP256 is smaller and faster to make; for tests and users who ask for ECC.
	ECDSAP256 KeyAlgorithm = "ECDSAP256"
)

// Istio's defaults: DEFAULT_WORKLOAD_CERT_TTL, MAX_WORKLOAD_CERT_TTL and
// CITADEL_SELF_SIGNED_CA_CERT_TTL.
const (
	DefaultWorkloadCertTTL = 24 * time.Hour
	DefaultMaxWorkloadTTL  = 90 * 24 * time.Hour
	DefaultRootTTL         = 10 * 365 * 24 * time.Hour
	DefaultTrustDomain     = "cluster.local"
)

// Options configure New. Exactly one of Store and PluggedCertsDir is set.
type Options struct {
	// TrustDomain of issued SPIFFE IDs; DefaultTrustDomain when empty.
	TrustDomain string
	// Store keeps a self-signed root, made on first start.
	Store Store
	// PluggedCertsDir holds an operator's root and intermediate in Istio's
	// cacerts layout (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem).
	PluggedCertsDir string
	// RootKey is the self-signed root's key type; RSA2048 (Istio's) when empty.
	RootKey KeyAlgorithm
	// RootTTL of a self-signed root; DefaultRootTTL when zero.
	RootTTL time.Duration
	// WorkloadCertTTL when a request gives no validity; DefaultWorkloadCertTTL when zero.
	WorkloadCertTTL time.Duration
	// MaxWorkloadCertTTL caps requested validity; DefaultMaxWorkloadTTL when zero.
	MaxWorkloadCertTTL time.Duration
	// Authenticator identifies CreateCertificate callers; required.
	Authenticator Authenticator
	// Registry receives the citadel_server_* metrics; a private one when nil.
	Registry prometheus.Registerer
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
	// Now is the clock; time.Now when nil. Tests move it.
	Now func() time.Time
}

// signer is the certificate that signs, its key, the chain from it up to
// (not including) the root, and the root.
type signer struct {
	cert  *x509.Certificate
	key   crypto.Signer
	chain []*x509.Certificate // signer.cert first; empty when cert is the root
	root  *x509.Certificate
	// others are further roots an operator's root-cert.pem lists (as Istio's
	// root-cert-combined.pem does for a migration); trusted, never signing.
	others []*x509.Certificate
}

// trustedRoot is a root kept in the trust bundle after a rotation until until.
type trustedRoot struct {
	cert  *x509.Certificate
	until time.Time
	// signer is the old root's signer while this process still holds it; the
	// serving certificate stays on it during the overlap, so clients that
	// only know the old root can still reach 15012 to learn the new one.
	signer *signer
}

// state is swapped whole so signing reads it without locks.
type state struct {
	signer   *signer
	previous []trustedRoot
	gen      uint64 // bumped on every change of signer or trust bundle
}

// CA signs workload and serving certificates. Safe for concurrent use.
type CA struct {
	opts    Options
	log     *slog.Logger
	now     func() time.Time
	metrics *metrics

	mu    sync.Mutex // serialises rotations and subscriber changes
	state atomic.Pointer[state]
	subs  map[chan struct{}]struct{}
	timer *time.Timer // fires when the earliest overlap ends
	// pluggedDigest is digestDir of the cacerts files last loaded, taken
	// before reading them, so a change during the read is seen again.
	pluggedDigest [32]byte
}

// New loads or makes the root of trust and returns a CA ready to sign.
func New(opts Options) (*CA, error) {
	if opts.TrustDomain == "" {
		opts.TrustDomain = DefaultTrustDomain
	}
	if opts.RootKey == "" {
		opts.RootKey = RSA2048
	}
	if opts.RootKey != RSA2048 && opts.RootKey != ECDSAP256 {
		return nil, fmt.Errorf("ca: Options.RootKey %q: want %q or %q", opts.RootKey, RSA2048, ECDSAP256)
	}
	if opts.RootTTL == 0 {
		opts.RootTTL = DefaultRootTTL
	}
	if opts.WorkloadCertTTL == 0 {
		opts.WorkloadCertTTL = DefaultWorkloadCertTTL
	}
	if opts.MaxWorkloadCertTTL == 0 {
		opts.MaxWorkloadCertTTL = DefaultMaxWorkloadTTL
	}
	if opts.WorkloadCertTTL > opts.MaxWorkloadCertTTL {
		return nil, fmt.Errorf("ca: Options.WorkloadCertTTL %s exceeds MaxWorkloadCertTTL %s", opts.WorkloadCertTTL, opts.MaxWorkloadCertTTL)
	}
	if opts.Authenticator == nil {
		return nil, errors.New("ca: Options.Authenticator is required")
	}
	if (opts.Store == nil) == (opts.PluggedCertsDir == "") {
		return nil, errors.New("ca: set exactly one of Options.Store (self-signed root) and Options.PluggedCertsDir (cacerts)")
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &CA{opts: opts, log: opts.Logger, now: opts.Now, subs: map[chan struct{}]struct{}{}}

	var (
		st  *state
		err error
	)
	if opts.PluggedCertsDir != "" {
		c.pluggedDigest = digestDir(opts.PluggedCertsDir)
		s, err := loadPlugged(opts.PluggedCertsDir, c.now())
		if err != nil {
			return nil, err
		}
		st = &state{signer: s}
		c.log.Info("CA using plugged-in certificates", "dir", opts.PluggedCertsDir, "root", s.root.Subject.String(), "rootExpiry", s.root.NotAfter)
	} else {
		st, err = c.loadOrMakeSelfSigned()
		if err != nil {
			return nil, err
		}
	}
	// Registered only once the root is good, so a caller may retry New
	// with the same registry after fixing the files.
	if c.metrics, err = newMetrics(opts.Registry); err != nil {
		return nil, err
	}
	c.install(st)
	return c, nil
}

// TrustDomain returns the trust domain of issued identities.
func (c *CA) TrustDomain() string { return c.opts.TrustDomain }

// TrustBundle returns the roots workloads should trust: the current root
// first, then roots still in their rotation overlap.
func (c *CA) TrustBundle() []*x509.Certificate { return c.bundleOf(c.state.Load()) }

// TrustBundlePEM is TrustBundle as concatenated PEM, the ROOTCA secret's content.
func (c *CA) TrustBundlePEM() []byte { return encodeCerts(c.TrustBundle()) }

// Subscribe returns a channel that receives a value after the trust bundle
// or the signing certificate changes (rotation, end of an overlap).
// Notifications coalesce and never block the CA; call cancel when done.
func (c *CA) Subscribe() (changed <-chan struct{}, cancel func()) {
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	c.subs[ch] = struct{}{}
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		delete(c.subs, ch)
		c.mu.Unlock()
	}
}

// RotateRoot makes a new self-signed root and signs with it from now on;
// the old root stays in the trust bundle for overlap, so workloads holding
// certificates from it keep being trusted until they have renewed.
func (c *CA) RotateRoot(overlap time.Duration) error {
	if c.opts.PluggedCertsDir != "" {
		return fmt.Errorf("ca: the root is plugged in from %s: replace the files there and call ReloadPlugged", c.opts.PluggedCertsDir)
	}
	s, err := c.makeRoot()
	if err != nil {
		return err
	}
	return c.rotate(s, overlap, true)
}

// ReloadPlugged rereads the cacerts directory. If the root changed, the old
// one stays trusted for overlap; if only the intermediate changed, signing
// moves to it at once.
func (c *CA) ReloadPlugged(overlap time.Duration) error {
	if c.opts.PluggedCertsDir == "" {
		return errors.New("ca: no plugged-in certificates configured (Options.PluggedCertsDir); use RotateRoot")
	}
	d := digestDir(c.opts.PluggedCertsDir)
	s, err := loadPlugged(c.opts.PluggedCertsDir, c.now())
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.pluggedDigest = d
	c.mu.Unlock()
	return c.rotate(s, overlap, false)
}

func (c *CA) rotate(s *signer, overlap time.Duration, persist bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.state.Load()
	now := c.now()
	var prev []trustedRoot
	if !old.signer.root.Equal(s.root) && overlap > 0 {
		prev = append(prev, trustedRoot{cert: old.signer.root, until: now.Add(overlap), signer: old.signer})
	}
	for _, p := range old.previous {
		if now.Before(p.until) && !p.cert.Equal(s.root) {
			prev = append(prev, p)
		}
	}
	st := &state{signer: s, previous: prev, gen: old.gen + 1}
	if persist {
		if err := c.save(st); err != nil {
			return err
		}
	}
	c.log.Info("CA root rotated", "root", s.root.Subject.String(), "serial", s.root.SerialNumber.Text(16), "overlap", overlap)
	c.installLocked(st)
	return nil
}

func (c *CA) install(st *state) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.installLocked(st)
}

// installLocked publishes st, updates the expiry gauges, notifies
// subscribers and arms a timer for the end of the earliest overlap.
func (c *CA) installLocked(st *state) {
	c.state.Store(st)
	c.metrics.rootExpiry.Set(float64(st.signer.root.NotAfter.Unix()))
	chainExpiry := st.signer.cert.NotAfter
	for _, ic := range st.signer.chain {
		if ic.NotAfter.Before(chainExpiry) {
			chainExpiry = ic.NotAfter
		}
	}
	c.metrics.chainExpiry.Set(float64(chainExpiry.Unix()))
	c.notifyLocked()
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	var next time.Time
	for _, p := range st.previous {
		if next.IsZero() || p.until.Before(next) {
			next = p.until
		}
	}
	if !next.IsZero() {
		c.timer = time.AfterFunc(max(next.Sub(c.now()), 0), c.overlapEnded)
	}
}

// overlapEnded drops roots whose overlap is over and tells subscribers.
func (c *CA) overlapEnded() {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.state.Load()
	now := c.now()
	var prev []trustedRoot
	for _, p := range old.previous {
		if now.Before(p.until) {
			prev = append(prev, p)
		}
	}
	st := &state{signer: old.signer, previous: prev, gen: old.gen + 1}
	if c.opts.Store != nil {
		if err := c.save(st); err != nil {
			c.log.Error("CA could not record the end of a root overlap; the old root is already untrusted in memory", "err", err)
		}
	}
	c.installLocked(st)
}

func (c *CA) notifyLocked() {
	for ch := range c.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Close stops the overlap timer.
func (c *CA) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
}

func (c *CA) loadOrMakeSelfSigned() (*state, error) {
	st := c.opts.Store
	files, err := st.Load()
	if errors.Is(err, fs.ErrNotExist) {
		s, err := c.makeRoot()
		if err != nil {
			return nil, err
		}
		out := &state{signer: s}
		if err := c.save(out); errors.Is(err, ErrStoreConflict) {
			// Another replica made the mesh's root first: use theirs.
			c.log.Info("CA root made by another replica meanwhile; loading it", "where", st.Where(fileCACert))
			return c.loadSelfSigned()
		} else if err != nil {
			return nil, err
		}
		c.log.Info("CA made a new self-signed root", "where", st.Where(fileCACert), "key", c.opts.RootKey, "expiry", s.root.NotAfter)
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	return c.parseSelfSigned(files)
}

// loadSelfSigned loads a root that must be in the store.
func (c *CA) loadSelfSigned() (*state, error) {
	files, err := c.opts.Store.Load()
	if err != nil {
		return nil, err
	}
	return c.parseSelfSigned(files)
}

func (c *CA) parseSelfSigned(files map[string][]byte) (*state, error) {
	st := c.opts.Store
	certs, err := parseCerts(files[fileCACert], st.Where(fileCACert))
	if err != nil {
		return nil, err
	}
	key, err := parseKey(files[fileCAKey], st.Where(fileCAKey))
	if err != nil {
		return nil, err
	}
	root := certs[0]
	if !keyMatches(root, key) {
		return nil, fmt.Errorf("%s does not hold the key of %s: restore the matching pair, or remove both to have a new root made", st.Where(fileCAKey), st.Where(fileCACert))
	}
	if err := checkCACert(root, st.Where(fileCACert), c.now()); err != nil {
		return nil, err
	}
	if err := root.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("%s is not a self-signed root (%v): a root with an intermediate goes in a cacerts directory (Options.PluggedCertsDir)", st.Where(fileCACert), err)
	}
	if b, ok := files[fileRootCert]; ok {
		rc, err := parseCerts(b, st.Where(fileRootCert))
		if err != nil {
			return nil, err
		}
		if !rc[0].Equal(root) {
			return nil, fmt.Errorf("%s is not the root in %s: a self-signed CA keeps the same certificate in both; for an operator's root and intermediate use a cacerts directory (Options.PluggedCertsDir)", st.Where(fileRootCert), st.Where(fileCACert))
		}
	}
	var prev []trustedRoot
	if b, ok := files[filePreviousRoots]; ok {
		if prev, err = parsePreviousRoots(b, st.Where(filePreviousRoots)); err != nil {
			return nil, err
		}
	}
	c.log.Info("CA loaded its self-signed root", "where", st.Where(fileCACert), "expiry", root.NotAfter)
	return &state{signer: &signer{cert: root, key: key, root: root}, previous: prev}, nil
}

func (c *CA) save(st *state) error {
	key, err := encodeKey(st.signer.key)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		fileCACert:   encodeCert(st.signer.cert),
		fileCAKey:    key,
		fileRootCert: encodeCert(st.signer.root),
	}
	if len(st.previous) > 0 {
		files[filePreviousRoots] = encodePreviousRoots(st.previous)
	}
	if err := c.opts.Store.Save(files); err != nil {
		return fmt.Errorf("ca: keeping the root in %s: %w", c.opts.Store.Where(fileCACert), err)
	}
	return nil
}

// makeRoot makes a self-signed root shaped like istiod's: O=<trust domain>,
// no CN, CA with cert and CRL signing.
func (c *CA) makeRoot() (*signer, error) {
	var (
		key crypto.Signer
		err error
	)
	switch c.opts.RootKey {
	case ECDSAP256:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		return nil, fmt.Errorf("ca: generating root key: %w", err)
	}
	now := c.now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{Organization: []string{c.opts.TrustDomain}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(c.opts.RootTTL),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("ca: making root certificate: %w", err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: making root certificate: %w", err)
	}
	return &signer{cert: root, key: key, root: root}, nil
}

// loadPlugged reads Istio's cacerts layout and checks that it is coherent:
// the key is ca-cert's, ca-cert can sign, and it chains to root-cert.pem
// through cert-chain.pem.
func loadPlugged(dir string, now time.Time) (*signer, error) {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("plugged-in CA: %w; the cacerts layout needs ca-cert.pem, ca-key.pem, root-cert.pem and cert-chain.pem", err)
		}
		return b, nil
	}
	where := func(name string) string { return filepath.Join(dir, name) }
	var files [4][]byte
	for i, name := range []string{fileCACert, fileCAKey, fileRootCert, fileCertChain} {
		b, err := read(name)
		if err != nil {
			return nil, err
		}
		files[i] = b
	}
	caCerts, err := parseCerts(files[0], where(fileCACert))
	if err != nil {
		return nil, err
	}
	caCert := caCerts[0]
	key, err := parseKey(files[1], where(fileCAKey))
	if err != nil {
		return nil, err
	}
	if !keyMatches(caCert, key) {
		return nil, fmt.Errorf("%s does not hold the key of %s: put the matching pair in %s", where(fileCAKey), where(fileCACert), dir)
	}
	if err := checkCACert(caCert, where(fileCACert), now); err != nil {
		return nil, err
	}
	roots, err := parseCerts(files[2], where(fileRootCert))
	if err != nil {
		return nil, err
	}
	chainCerts, err := parseCerts(files[3], where(fileCertChain))
	if err != nil {
		return nil, err
	}
	// cert-chain.pem runs from ca-cert up, possibly ending with the root;
	// keep only the intermediates, with ca-cert first.
	chain := []*x509.Certificate{caCert}
	for _, ic := range chainCerts {
		if ic.Equal(caCert) || bytes.Equal(ic.RawIssuer, ic.RawSubject) {
			continue
		}
		chain = append(chain, ic)
	}
	rootPool, interPool := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	for _, ic := range chain[1:] {
		interPool.AddCert(ic)
	}
	verified, err := caCert.Verify(x509.VerifyOptions{
		Roots: rootPool, Intermediates: interPool, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, fmt.Errorf("%s does not chain to %s through %s: %w", where(fileCACert), where(fileRootCert), where(fileCertChain), err)
	}
	vc := verified[0]
	root := vc[len(vc)-1]
	if caCert.Equal(root) {
		chain = nil // the plugged-in CA signs as the root itself
	}
	var others []*x509.Certificate
	for _, r := range roots {
		if !r.Equal(root) {
			others = append(others, r)
		}
	}
	return &signer{cert: caCert, key: key, chain: chain, root: root, others: others}, nil
}

func checkCACert(c *x509.Certificate, where string, now time.Time) error {
	if !c.IsCA || !c.BasicConstraintsValid {
		return fmt.Errorf("%s is not a CA certificate (basicConstraints CA:TRUE missing)", where)
	}
	if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("%s lacks the keyCertSign key usage, so it cannot sign certificates", where)
	}
	if now.After(c.NotAfter) {
		return fmt.Errorf("%s expired at %s: replace it, or for a self-signed root remove it and its key to have a new root made", where, c.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// clockSkew backdates certificates so peers with slow clocks accept them.
const clockSkew = time.Minute

func randomSerial() *big.Int {
	// 128 random bits, positive, as RFC 5280 and CA/B practice want.
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[0] &= 0x7f
	return new(big.Int).SetBytes(b)
}
