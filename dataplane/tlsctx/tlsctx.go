// Package tlsctx turns Envoy's DownstreamTlsContext and UpstreamTlsContext
// into crypto/tls configurations. Certificates come inline, from files, or
// by SDS name through core.Secrets, and are looked up at handshake time so a
// rotated secret applies to the next handshake.
//
// Peer verification follows Envoy, not Go's host-name rules: the chain must
// lead to validation_context.trusted_ca, then the SAN matchers (and the
// optional SPKI / certificate-hash pins) must accept the leaf. SPIFFE
// certificates carry only a URI SAN, so Go's own host-name check is turned
// off and this package verifies in VerifyConnection instead.
package tlsctx

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// ServerConfig builds the server side of a listener filter chain's TLS.
func ServerConfig(c *tlsv3.DownstreamTlsContext, secrets core.Secrets) (*tls.Config, error) {
	if c == nil {
		return nil, errors.New("downstream_tls_context: missing")
	}
	ctc := c.GetCommonTlsContext()
	certs, err := buildCertSources(ctc, secrets)
	if err != nil {
		return nil, fmt.Errorf("downstream_tls_context.common_tls_context.%w", err)
	}
	if len(certs) == 0 {
		return nil, errors.New("downstream_tls_context.common_tls_context: tls_certificates or tls_certificate_sds_secret_configs: a server needs a certificate")
	}
	val, err := buildValidator(ctc, secrets)
	if err != nil {
		return nil, fmt.Errorf("downstream_tls_context.common_tls_context.%w", err)
	}
	cfg := &tls.Config{NextProtos: ctc.GetAlpnProtocols()}
	if err := applyParams(cfg, ctc.GetTlsParams(), false); err != nil {
		return nil, fmt.Errorf("downstream_tls_context.common_tls_context.tls_params.%w", err)
	}
	requireSNI := c.GetRequireSni().GetValue()
	cfg.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		cert, err := pickCertificate(certs, hello)
		if err == nil && requireSNI {
			err = checkSNI(cert, hello.ServerName)
		}
		return cert, err
	}
	require := c.GetRequireClientCertificate().GetValue()
	if require && val == nil {
		return nil, errors.New("downstream_tls_context.require_client_certificate: needs a validation_context (or its SDS config) to verify client certificates against")
	}
	switch {
	case require:
		cfg.ClientAuth = tls.RequireAnyClientCert
	case val != nil:
		// Envoy asks for a client certificate and verifies it when one is sent.
		cfg.ClientAuth = tls.RequestClientCert
	}
	if val != nil {
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				if require {
					return errors.New("tls: client certificate required")
				}
				return nil
			}
			return val.verify(cs.PeerCertificates)
		}
	}
	if len(cfg.NextProtos) > 0 {
		// Envoy completes a handshake whose ALPN offer shares nothing with
		// alpn_protocols, selecting no protocol; Go's server would refuse
		// it. Istio relies on Envoy's way: its clients offer "istio" and
		// "istio-peer-exchange" to servers that list h2 and http/1.1.
		noALPN := cfg.Clone()
		noALPN.NextProtos = nil
		ours := cfg.NextProtos
		cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if len(hello.SupportedProtos) == 0 {
				return nil, nil
			}
			for _, p := range hello.SupportedProtos {
				if slices.Contains(ours, p) {
					return nil, nil
				}
			}
			return noALPN, nil
		}
	}
	return cfg, nil
}

// ClientConfig builds the client side of a cluster's TLS transport socket.
// SNI from the context's sni field; ALPN from alpn_protocols.
func ClientConfig(c *tlsv3.UpstreamTlsContext, secrets core.Secrets) (*tls.Config, error) {
	if c == nil {
		return nil, errors.New("upstream_tls_context: missing")
	}
	ctc := c.GetCommonTlsContext()
	certs, err := buildCertSources(ctc, secrets)
	if err != nil {
		return nil, fmt.Errorf("upstream_tls_context.common_tls_context.%w", err)
	}
	val, err := buildValidator(ctc, secrets)
	if err != nil {
		return nil, fmt.Errorf("upstream_tls_context.common_tls_context.%w", err)
	}
	cfg := &tls.Config{
		ServerName: c.GetSni(),
		NextProtos: ctc.GetAlpnProtocols(),
		// Go's verification insists on a host name match; Envoy matches the
		// configured SANs instead (VerifyConnection below), and without a
		// validation context it does not verify the server at all.
		InsecureSkipVerify: true,
	}
	if err := applyParams(cfg, ctc.GetTlsParams(), true); err != nil {
		return nil, fmt.Errorf("upstream_tls_context.common_tls_context.tls_params.%w", err)
	}
	if len(certs) > 0 {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return certs[0].get()
		}
	}
	if val != nil {
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("tls: server sent no certificate")
			}
			return val.verify(cs.PeerCertificates)
		}
	}
	return cfg, nil
}

// certSource yields the certificate to present, resolved per handshake.
type certSource interface {
	get() (*tls.Certificate, error)
}

type staticCert struct{ c *tls.Certificate }

func (s staticCert) get() (*tls.Certificate, error) { return s.c, nil }

// sdsCert resolves a certificate by SDS name and keeps the parse of the last
// secret seen, so only a rotated secret is parsed again.
type sdsCert struct {
	name    string
	secrets core.Secrets
	last    atomic.Pointer[parsedCert]
}

type parsedCert struct {
	src  *tlsv3.Secret
	cert *tls.Certificate
	err  error
}

func (s *sdsCert) get() (*tls.Certificate, error) {
	sec := s.secrets.Secret(s.name)
	if sec == nil || sec.GetTlsCertificate() == nil {
		return nil, fmt.Errorf("tls: SDS secret %q: no tls_certificate available", s.name)
	}
	if p := s.last.Load(); p != nil && p.src == sec {
		return p.cert, p.err
	}
	cert, err := loadCertificate(sec.GetTlsCertificate())
	if err != nil {
		err = fmt.Errorf("tls: SDS secret %q: %w", s.name, err)
	}
	s.last.Store(&parsedCert{src: sec, cert: cert, err: err})
	return cert, err
}

func buildCertSources(ctc *tlsv3.CommonTlsContext, secrets core.Secrets) ([]certSource, error) {
	var out []certSource
	for i, tc := range ctc.GetTlsCertificates() {
		c, err := loadCertificate(tc)
		if err != nil {
			return nil, fmt.Errorf("tls_certificates[%d]: %w", i, err)
		}
		out = append(out, staticCert{c})
	}
	for i, sc := range ctc.GetTlsCertificateSdsSecretConfigs() {
		if sc.GetName() == "" {
			return nil, fmt.Errorf("tls_certificate_sds_secret_configs[%d].name: empty", i)
		}
		if secrets == nil {
			return nil, fmt.Errorf("tls_certificate_sds_secret_configs[%d]: secret %q: no secret source configured", i, sc.GetName())
		}
		out = append(out, &sdsCert{name: sc.GetName(), secrets: secrets})
	}
	return out, nil
}

func pickCertificate(certs []certSource, hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if len(certs) == 1 {
		return certs[0].get()
	}
	// Several certificates: as Envoy, prefer one whose names cover the SNI
	// and whose key the client supports, then any the client supports,
	// then the first.
	var first, usable *tls.Certificate
	var firstErr error
	for _, s := range certs {
		c, err := s.get()
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if first == nil {
			first = c
		}
		if hello.SupportsCertificate(c) != nil {
			continue
		}
		if hello.ServerName != "" && leafOf(c) != nil && leafOf(c).VerifyHostname(hello.ServerName) == nil {
			return c, nil
		}
		if usable == nil {
			usable = c
		}
	}
	if usable != nil {
		return usable, nil
	}
	if first != nil {
		return first, nil
	}
	return nil, firstErr
}

// leafOf returns the parsed leaf (tls.X509KeyPair fills it in).
func leafOf(c *tls.Certificate) *x509.Certificate {
	if c.Leaf != nil {
		return c.Leaf
	}
	l, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return nil
	}
	return l
}

// checkSNI implements require_sni: the client must name a host the
// certificate is for.
func checkSNI(cert *tls.Certificate, sni string) error {
	if sni == "" {
		return errors.New("tls: require_sni: the client sent no SNI")
	}
	if leaf := leafOf(cert); leaf == nil || leaf.VerifyHostname(sni) != nil {
		return fmt.Errorf("tls: require_sni: %q does not match the certificate", sni)
	}
	return nil
}

func loadCertificate(tc *tlsv3.TlsCertificate) (*tls.Certificate, error) {
	chain, err := core.ReadDataSource(tc.GetCertificateChain())
	if err != nil {
		return nil, fmt.Errorf("certificate_chain: %w", err)
	}
	key, err := core.ReadDataSource(tc.GetPrivateKey())
	if err != nil {
		return nil, fmt.Errorf("private_key: %w", err)
	}
	c, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return nil, fmt.Errorf("certificate_chain/private_key: %w", err)
	}
	return &c, nil
}

var tlsVersions = map[tlsv3.TlsParameters_TlsProtocol]uint16{
	tlsv3.TlsParameters_TLSv1_0: tls.VersionTLS10,
	tlsv3.TlsParameters_TLSv1_1: tls.VersionTLS11,
	tlsv3.TlsParameters_TLSv1_2: tls.VersionTLS12,
	tlsv3.TlsParameters_TLSv1_3: tls.VersionTLS13,
}

// applyParams sets protocol versions and TLS 1.2 cipher suites. TLS_AUTO
// means Envoy's defaults: at least TLS 1.2; at most TLS 1.3 for servers and
// TLS 1.2 for clients.
func applyParams(cfg *tls.Config, p *tlsv3.TlsParameters, client bool) error {
	cfg.MinVersion = tls.VersionTLS12
	cfg.MaxVersion = tls.VersionTLS13
	if client {
		cfg.MaxVersion = tls.VersionTLS12
	}
	if v, ok := tlsVersions[p.GetTlsMinimumProtocolVersion()]; ok {
		cfg.MinVersion = v
	}
	if v, ok := tlsVersions[p.GetTlsMaximumProtocolVersion()]; ok {
		cfg.MaxVersion = v
	}
	if cfg.MinVersion > cfg.MaxVersion {
		return fmt.Errorf("tls_minimum_protocol_version: %s is above tls_maximum_protocol_version %s",
			p.GetTlsMinimumProtocolVersion(), p.GetTlsMaximumProtocolVersion())
	}
	for _, spec := range p.GetCipherSuites() {
		// BoringSSL's equal-preference groups "[A|B]" are flattened.
		for _, name := range strings.Split(strings.Trim(spec, "[]"), "|") {
			id, ok := cipherSuites[name]
			if !ok {
				return fmt.Errorf("cipher_suites: %q is not supported", name)
			}
			cfg.CipherSuites = append(cfg.CipherSuites, id)
		}
	}
	return nil
}

// cipherSuites maps OpenSSL names (what Envoy and Istio use) to Go's TLS 1.2
// suites. TLS 1.3 suites are not configurable in Go or BoringSSL.
var cipherSuites = map[string]uint16{
	"ECDHE-ECDSA-AES128-GCM-SHA256": tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-RSA-AES128-GCM-SHA256":   tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-ECDSA-AES256-GCM-SHA384": tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-RSA-AES256-GCM-SHA384":   tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-ECDSA-CHACHA20-POLY1305": tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-RSA-CHACHA20-POLY1305":   tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-ECDSA-AES128-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
	"ECDHE-RSA-AES128-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	"ECDHE-ECDSA-AES256-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	"ECDHE-RSA-AES256-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	"AES128-GCM-SHA256":             tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
	"AES256-GCM-SHA384":             tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
	"AES128-SHA":                    tls.TLS_RSA_WITH_AES_128_CBC_SHA,
	"AES256-SHA":                    tls.TLS_RSA_WITH_AES_256_CBC_SHA,
}
