package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	securityapi "istio.io/api/security/v1alpha1"
)

// Register serves istio.v1.auth.IstioCertificateService on s.
func (c *CA) Register(s grpc.ServiceRegistrar) {
	securityapi.RegisterIstioCertificateServiceServer(s, &service{ca: c})
}

type service struct {
	securityapi.UnimplementedIstioCertificateServiceServer
	ca *CA
}

// CreateCertificate authenticates the caller, checks its CSR and returns
// [leaf, intermediates..., trust bundle] as istiod does; during a root
// overlap the last element holds every trusted root.
func (s *service) CreateCertificate(ctx context.Context, req *securityapi.IstioCertificateRequest) (*securityapi.IstioCertificateResponse, error) {
	c := s.ca
	c.metrics.csrs.Inc()
	id, err := c.opts.Authenticator.Authenticate(ctx)
	if err != nil {
		c.metrics.authnFailures.Inc()
		c.log.Warn("CA refused a CSR: authentication failed", "err", err)
		return nil, status.Errorf(codes.Unauthenticated, "authenticating the caller: %v", err)
	}
	if id.TrustDomain == "" {
		id.TrustDomain = c.opts.TrustDomain
	}
	if id.Namespace == "" || id.ServiceAccount == "" {
		c.metrics.authnFailures.Inc()
		return nil, status.Errorf(codes.PermissionDenied, "the caller's credential names no workload (namespace %q, service account %q)", id.Namespace, id.ServiceAccount)
	}
	if id.TrustDomain != c.opts.TrustDomain {
		c.metrics.authnFailures.Inc()
		return nil, status.Errorf(codes.PermissionDenied, "caller identity %s is not in this CA's trust domain %q", id.SPIFFEID(), c.opts.TrustDomain)
	}
	// istio-agent's node agents (ztunnel) ask for others' certificates through
	// this field; Skiff trusts no caller to do that.
	if imp := req.GetMetadata().GetFields()["ImpersonatedIdentity"].GetStringValue(); imp != "" {
		c.metrics.idErrs.Inc()
		return nil, status.Errorf(codes.PermissionDenied, "metadata ImpersonatedIdentity %q: caller %s may not request certificates for another identity", imp, id.SPIFFEID())
	}
	ttl := time.Duration(req.GetValidityDuration()) * time.Second
	chain, err := c.SignCSR([]byte(req.GetCsr()), id, ttl)
	if err != nil {
		var ce *csrError
		if errors.As(err, &ce) {
			switch ce.kind {
			case csrMalformed:
				c.metrics.parseErrs.Inc()
				c.log.Warn("CA refused a malformed CSR", "caller", id.SPIFFEID(), "err", err)
				return nil, status.Errorf(codes.InvalidArgument, "%v", err)
			case csrIdentity:
				c.metrics.idErrs.Inc()
				c.log.Warn("CA refused a CSR for another identity", "caller", id.SPIFFEID(), "err", err)
				return nil, status.Errorf(codes.PermissionDenied, "%v", err)
			}
		}
		c.metrics.signErrs.WithLabelValues("sign").Inc()
		c.log.Error("CA failed to sign", "caller", id.SPIFFEID(), "err", err)
		return nil, status.Errorf(codes.Internal, "signing the certificate: %v", err)
	}
	c.metrics.issued.Inc()
	return &securityapi.IstioCertificateResponse{CertChain: chain}, nil
}

type csrErrorKind int

const (
	csrMalformed csrErrorKind = iota + 1
	csrIdentity
)

// csrError is a CSR refused for what it contains, not for a CA fault.
type csrError struct {
	kind csrErrorKind
	msg  string
}

func (e *csrError) Error() string { return e.msg }

func malformed(format string, a ...any) error {
	return &csrError{kind: csrMalformed, msg: fmt.Sprintf(format, a...)}
}

// SignCSR checks a PEM CSR and signs it for id, valid for ttl (the default
// when zero or negative, capped at the maximum). It returns the response
// chain as PEM strings: leaf, intermediates, then the trust bundle.
func (c *CA) SignCSR(csrPEM []byte, id Identity, ttl time.Duration) ([]string, error) {
	if id.TrustDomain == "" {
		id.TrustDomain = c.opts.TrustDomain
	}
	csr, err := parseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	want := id.SPIFFEID()
	if len(csr.DNSNames) > 0 || len(csr.IPAddresses) > 0 || len(csr.EmailAddresses) > 0 {
		return nil, &csrError{kind: csrIdentity, msg: fmt.Sprintf("csr: asks for DNS, IP or email SANs (%v %v %v); workload certificates carry only the caller's SPIFFE ID %s", csr.DNSNames, csr.IPAddresses, csr.EmailAddresses, want)}
	}
	for _, u := range csr.URIs {
		if u.String() != want {
			return nil, &csrError{kind: csrIdentity, msg: fmt.Sprintf("csr: asks for identity %s but the caller is authenticated as %s", u, want)}
		}
	}
	if ttl <= 0 {
		ttl = c.opts.WorkloadCertTTL
	}
	ttl = min(ttl, c.opts.MaxWorkloadCertTTL)
	uri, err := url.Parse(want)
	if err != nil {
		return nil, &csrError{kind: csrIdentity, msg: fmt.Sprintf("caller identity %q is not a valid URI: %v", want, err)}
	}
	st := c.state.Load()
	now := c.now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(ttl),
		URIs:                  []*url.URL{uri},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	leaf, err := issue(st.signer, tmpl, csr.PublicKey)
	if err != nil {
		return nil, err
	}
	return responseChain(st, leaf, c.bundleOf(st)), nil
}

// issue signs tmpl with s, never past the signer's expiry:
// a certificate outliving its issuer would fail verification anyway.
func issue(s *signer, tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, error) {
	if tmpl.NotAfter.After(s.cert.NotAfter) {
		tmpl.NotAfter = s.cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.cert, pub, s.key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// bundleOf lists the current root, other roots the operator supplied, then
// roots still in a rotation overlap, without repeats.
func (c *CA) bundleOf(st *state) []*x509.Certificate {
	now := c.now()
	out := append([]*x509.Certificate{st.signer.root}, st.signer.others...)
	for _, p := range st.previous {
		if now.Before(p.until) && !slices.ContainsFunc(out, p.cert.Equal) {
			out = append(out, p.cert)
		}
	}
	return out
}

func responseChain(st *state, leaf *x509.Certificate, bundle []*x509.Certificate) []string {
	out := []string{string(encodeCert(leaf))}
	for _, ic := range st.signer.chain {
		out = append(out, string(encodeCert(ic)))
	}
	return append(out, string(encodeCerts(bundle)))
}

// parseCSR decodes a PEM CSR, checks its self-signature (proof that the
// caller holds the key) and that its key is one workloads may use.
func parseCSR(b []byte) (*x509.CertificateRequest, error) {
	if len(b) == 0 {
		return nil, malformed("csr: empty; send a PEM CERTIFICATE REQUEST in IstioCertificateRequest.csr")
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, malformed("csr: not PEM; send a PEM CERTIFICATE REQUEST in IstioCertificateRequest.csr")
	}
	if blk.Type != "CERTIFICATE REQUEST" && blk.Type != "NEW CERTIFICATE REQUEST" {
		return nil, malformed("csr: PEM block is %q, want CERTIFICATE REQUEST", blk.Type)
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, malformed("csr: cannot parse the DER of the CERTIFICATE REQUEST: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, malformed("csr: its signature does not verify with its own public key (%v); sign the CSR with the key it carries", err)
	}
	switch k := csr.PublicKey.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, malformed("csr: RSA key of %d bits; use at least 2048", k.N.BitLen())
		}
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, malformed("csr: ECDSA curve %s; use P-256 or P-384", k.Curve.Params().Name)
		}
	default:
		return nil, malformed("csr: key type %T; use RSA (2048 bits or more) or ECDSA P-256/P-384", csr.PublicKey)
	}
	return csr, nil
}
