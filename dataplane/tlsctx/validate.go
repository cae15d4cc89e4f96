package tlsctx

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync/atomic"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// validator checks a peer's certificate chain; the compiled rules come from
// a static validation context or are resolved per handshake through SDS.
type validator struct {
	static *rules
	// SDS: name of the validation_context secret, merged over def.
	name    string
	def     *tlsv3.CertificateValidationContext
	secrets core.Secrets
	last    atomic.Pointer[sdsRules]
}

type sdsRules struct {
	src *tlsv3.Secret
	r   *rules
	err error
}

// rules is a compiled CertificateValidationContext.
type rules struct {
	roots           *x509.CertPool // nil: no chain verification
	acceptUntrusted bool
	sans            []sanMatcher
	spki, hashes    [][]byte
}

type sanMatcher struct {
	typ tlsv3.SubjectAltNameMatcher_SanType // SAN_TYPE_UNSPECIFIED: any SAN (match_subject_alt_names)
	m   stringMatcher
}

func buildValidator(ctc *tlsv3.CommonTlsContext, secrets core.Secrets) (*validator, error) {
	var sdsName string
	var def *tlsv3.CertificateValidationContext
	switch {
	case ctc.GetValidationContext() != nil:
		r, err := compileRules(ctc.GetValidationContext(), true)
		if err != nil {
			return nil, fmt.Errorf("validation_context.%w", err)
		}
		return &validator{static: r}, nil
	case ctc.GetValidationContextSdsSecretConfig() != nil:
		sdsName = ctc.GetValidationContextSdsSecretConfig().GetName()
	case ctc.GetCombinedValidationContext() != nil:
		cvc := ctc.GetCombinedValidationContext()
		def = cvc.GetDefaultValidationContext()
		// Compile once now so a bad default context is rejected at config time.
		if _, err := compileRules(def, false); err != nil {
			return nil, fmt.Errorf("combined_validation_context.default_validation_context.%w", err)
		}
		sdsName = cvc.GetValidationContextSdsSecretConfig().GetName()
		if sdsName == "" {
			return nil, errors.New("combined_validation_context.validation_context_sds_secret_config.name: empty")
		}
	default:
		return nil, nil
	}
	if sdsName == "" {
		return nil, errors.New("validation_context_sds_secret_config.name: empty")
	}
	if secrets == nil {
		return nil, fmt.Errorf("validation_context_sds_secret_config: secret %q: no secret source configured", sdsName)
	}
	return &validator{name: sdsName, def: def, secrets: secrets}, nil
}

func (v *validator) rules() (*rules, error) {
	if v.static != nil {
		return v.static, nil
	}
	sec := v.secrets.Secret(v.name)
	if sec == nil || sec.GetValidationContext() == nil {
		return nil, fmt.Errorf("tls: SDS secret %q: no validation_context available", v.name)
	}
	if p := v.last.Load(); p != nil && p.src == sec {
		return p.r, p.err
	}
	vc := sec.GetValidationContext()
	if v.def != nil {
		// Envoy merges the SDS context into the default one: the SDS side
		// usually brings trusted_ca, the default side the SAN matchers.
		m := proto.Clone(v.def).(*tlsv3.CertificateValidationContext)
		proto.Merge(m, vc)
		vc = m
	}
	r, err := compileRules(vc, true)
	if err != nil {
		err = fmt.Errorf("tls: SDS secret %q: validation_context.%w", v.name, err)
	}
	v.last.Store(&sdsRules{src: sec, r: r, err: err})
	return r, err
}

func (v *validator) verify(chain []*x509.Certificate) error {
	r, err := v.rules()
	if err != nil {
		return err
	}
	return r.verify(chain)
}

// compileRules compiles a validation context. complete is false for a
// combined context's default half, whose trusted_ca comes later from SDS.
func compileRules(vc *tlsv3.CertificateValidationContext, complete bool) (*rules, error) {
	r := &rules{acceptUntrusted: vc.GetTrustChainVerification() == tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED}
	if vc.GetTrustedCa() != nil {
		pem, err := core.ReadDataSource(vc.GetTrustedCa())
		if err != nil {
			return nil, fmt.Errorf("trusted_ca: %w", err)
		}
		r.roots = x509.NewCertPool()
		if !r.roots.AppendCertsFromPEM(pem) {
			return nil, errors.New("trusted_ca: no PEM certificate found")
		}
	}
	for i, m := range vc.GetMatchTypedSubjectAltNames() {
		if m.GetSanType() == tlsv3.SubjectAltNameMatcher_SAN_TYPE_UNSPECIFIED || m.GetSanType() == tlsv3.SubjectAltNameMatcher_OTHER_NAME {
			return nil, fmt.Errorf("match_typed_subject_alt_names[%d].san_type: %s is not supported (use DNS, URI, EMAIL or IP_ADDRESS)", i, m.GetSanType())
		}
		sm, err := compileStringMatcher(m.GetMatcher())
		if err != nil {
			return nil, fmt.Errorf("match_typed_subject_alt_names[%d].matcher.%w", i, err)
		}
		r.sans = append(r.sans, sanMatcher{typ: m.GetSanType(), m: sm})
	}
	for i, m := range vc.GetMatchSubjectAltNames() {
		sm, err := compileStringMatcher(m)
		if err != nil {
			return nil, fmt.Errorf("match_subject_alt_names[%d].%w", i, err)
		}
		r.sans = append(r.sans, sanMatcher{m: sm})
	}
	if complete && r.roots == nil && len(r.sans) > 0 {
		// As Envoy: matching SANs of a certificate nobody vouched for
		// proves nothing.
		return nil, errors.New("match_typed_subject_alt_names / match_subject_alt_names: need trusted_ca to verify the chain first")
	}
	for i, s := range vc.GetVerifyCertificateSpki() {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("verify_certificate_spki[%d]: %q is not a base64 SHA-256 digest", i, s)
		}
		r.spki = append(r.spki, b)
	}
	for i, s := range vc.GetVerifyCertificateHash() {
		b, err := hex.DecodeString(strings.ReplaceAll(s, ":", ""))
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("verify_certificate_hash[%d]: %q is not a hex SHA-256 digest", i, s)
		}
		r.hashes = append(r.hashes, b)
	}
	return r, nil
}

func (r *rules) verify(chain []*x509.Certificate) error {
	leaf := chain[0]
	if r.roots != nil && !r.acceptUntrusted {
		inter := x509.NewCertPool()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		// Envoy does not insist on an extended key usage for peers.
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: r.roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return fmt.Errorf("tls: peer certificate not trusted: %w", err)
		}
	}
	if len(r.sans) > 0 && !r.matchSAN(leaf) {
		return fmt.Errorf("tls: peer certificate SANs %v match none of the configured subject alt names", sanList(leaf))
	}
	if len(r.spki) > 0 || len(r.hashes) > 0 {
		// Either pin list passing is enough, as in Envoy.
		spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
		hash := sha256.Sum256(leaf.Raw)
		ok := false
		for _, p := range r.spki {
			ok = ok || bytes.Equal(p, spki[:])
		}
		for _, p := range r.hashes {
			ok = ok || bytes.Equal(p, hash[:])
		}
		if !ok {
			return errors.New("tls: peer certificate matches neither verify_certificate_spki nor verify_certificate_hash")
		}
	}
	return nil
}

func (r *rules) matchSAN(c *x509.Certificate) bool {
	for _, m := range r.sans {
		t := m.typ
		anySAN := t == tlsv3.SubjectAltNameMatcher_SAN_TYPE_UNSPECIFIED
		if anySAN || t == tlsv3.SubjectAltNameMatcher_DNS {
			for _, d := range c.DNSNames {
				if m.m.match(d) || (m.m.exact != "" && dnsWildcardMatch(d, m.m.exact)) {
					return true
				}
			}
		}
		if anySAN || t == tlsv3.SubjectAltNameMatcher_URI {
			for _, u := range c.URIs {
				if m.m.match(u.String()) {
					return true
				}
			}
		}
		if anySAN || t == tlsv3.SubjectAltNameMatcher_EMAIL {
			for _, e := range c.EmailAddresses {
				if m.m.match(e) {
					return true
				}
			}
		}
		if anySAN || t == tlsv3.SubjectAltNameMatcher_IP_ADDRESS {
			for _, ip := range c.IPAddresses {
				if m.m.match(ip.String()) {
					return true
				}
			}
		}
	}
	return false
}

// dnsWildcardMatch lets a certificate's "*.example.com" satisfy an exact
// matcher for "a.example.com" (one label), as Envoy does for DNS SANs.
func dnsWildcardMatch(san, want string) bool {
	if !strings.HasPrefix(san, "*.") {
		return false
	}
	i := strings.IndexByte(want, '.')
	// DNS names compare without case.
	return i > 0 && strings.EqualFold(san[1:], want[i:])
}

func sanList(c *x509.Certificate) []string {
	var out []string
	out = append(out, c.DNSNames...)
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	out = append(out, c.EmailAddresses...)
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	return out
}

// stringMatcher is a compiled envoy.type.matcher.v3.StringMatcher.
type stringMatcher struct {
	exact, prefix, suffix, contains string
	re                              *regexp.Regexp
	ignoreCase                      bool
	kind                            byte // 'e', 'p', 's', 'c', 'r'
}

func compileStringMatcher(m *matcherv3.StringMatcher) (stringMatcher, error) {
	sm := stringMatcher{ignoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		sm.kind, sm.exact = 'e', p.Exact
	case *matcherv3.StringMatcher_Prefix:
		sm.kind, sm.prefix = 'p', p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		sm.kind, sm.suffix = 's', p.Suffix
	case *matcherv3.StringMatcher_Contains:
		sm.kind, sm.contains = 'c', p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := regexp.Compile("^(?:" + p.SafeRegex.GetRegex() + ")$")
		if err != nil {
			return sm, fmt.Errorf("safe_regex.regex: %w", err)
		}
		sm.kind, sm.re = 'r', re
	default:
		return sm, errors.New("match_pattern: one of exact, prefix, suffix, contains or safe_regex is required")
	}
	return sm, nil
}

func (m stringMatcher) match(s string) bool {
	switch m.kind {
	case 'e':
		if m.ignoreCase {
			return strings.EqualFold(s, m.exact)
		}
		return s == m.exact
	case 'p':
		if m.ignoreCase {
			return len(s) >= len(m.prefix) && strings.EqualFold(s[:len(m.prefix)], m.prefix)
		}
		return strings.HasPrefix(s, m.prefix)
	case 's':
		if m.ignoreCase {
			return len(s) >= len(m.suffix) && strings.EqualFold(s[len(s)-len(m.suffix):], m.suffix)
		}
		return strings.HasSuffix(s, m.suffix)
	case 'c':
		if m.ignoreCase {
			return strings.Contains(strings.ToLower(s), strings.ToLower(m.contains))
		}
		return strings.Contains(s, m.contains)
	case 'r':
		return m.re.MatchString(s)
	}
	return false
}
