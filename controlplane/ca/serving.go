package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"sync"
	"time"
)

// ServingCert is the 15012 endpoint's certificate (istiod's is for
// istiod.istio-system.svc), issued by the CA and renewed on the handshake
// after half its life has passed or after the signer or trust bundle changed.
type ServingCert struct {
	ca       *CA
	dnsNames []string
	ips      []net.IP
	ttl      time.Duration

	mu   sync.Mutex
	cur  *tls.Certificate
	gen  uint64
	renw time.Time // renew at or after this time
}

// ServingCertificate returns a renewing certificate for dnsNames (IP
// literals become IP SANs), each valid for ttl (the workload default when
// zero). The key never leaves memory.
func (c *CA) ServingCertificate(dnsNames []string, ttl time.Duration) (*ServingCert, error) {
	if len(dnsNames) == 0 {
		return nil, fmt.Errorf("ca: ServingCertificate needs at least one DNS name (istiod uses istiod.istio-system.svc)")
	}
	if ttl <= 0 {
		ttl = c.opts.WorkloadCertTTL
	}
	s := &ServingCert{ca: c, ttl: ttl}
	for _, n := range dnsNames {
		if ip := net.ParseIP(n); ip != nil {
			s.ips = append(s.ips, ip)
		} else {
			s.dnsNames = append(s.dnsNames, n)
		}
	}
	if _, err := s.current(); err != nil {
		return nil, err
	}
	return s, nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (s *ServingCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.current()
}

// TLSConfig returns a server TLS configuration using this certificate. A
// client certificate is optional and, when given, verified against the
// trust bundle current at the handshake (see ClientCertAuthenticator).
func (s *ServingCert) TLSConfig() *tls.Config {
	base := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.GetCertificate,
		NextProtos:     []string{"h2"},
		ClientAuth:     tls.VerifyClientCertIfGiven,
	}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cfg := base.Clone()
		cfg.GetConfigForClient = nil
		cfg.ClientCAs = x509.NewCertPool()
		for _, r := range s.ca.TrustBundle() {
			cfg.ClientCAs.AddCert(r)
		}
		return cfg, nil
	}
	return base
}

func (s *ServingCert) current() (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.ca.state.Load()
	now := s.ca.now()
	if s.cur != nil && s.gen == st.gen && now.Before(s.renw) {
		return s.cur, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: serving key: %w", err)
	}
	sg := servingSigner(st, now)
	leaf, err := issue(sg, &x509.Certificate{
		SerialNumber:          randomSerial(),
		DNSNames:              s.dnsNames,
		IPAddresses:           s.ips,
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(s.ttl),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}, key.Public())
	if err != nil {
		if s.cur != nil {
			s.ca.log.Error("CA could not renew the serving certificate; keeping the current one", "err", err)
			return s.cur, nil
		}
		return nil, fmt.Errorf("ca: issuing serving certificate for %v: %w", s.dnsNames, err)
	}
	chain := [][]byte{leaf.Raw}
	for _, ic := range sg.chain {
		chain = append(chain, ic.Raw)
	}
	s.cur = &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}
	s.gen = st.gen
	s.renw = leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	return s.cur, nil
}

// servingSigner is the oldest signer still in its overlap, else the current
// one: every client, whether it learnt the old root or the new bundle, trusts it.
func servingSigner(st *state, now time.Time) *signer {
	for i := len(st.previous) - 1; i >= 0; i-- { // previous runs newest to oldest
		if p := st.previous[i]; p.signer != nil && now.Before(p.until) {
			return p.signer
		}
	}
	return st.signer
}
