package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"time"
)

// headerTrustedUntil marks, on a previous root, the end of its overlap.
const headerTrustedUntil = "Trusted-Until"

func encodeCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func encodeCerts(cs []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range cs {
		b.Write(encodeCert(c))
	}
	return b.Bytes()
}

// parseCerts reads every CERTIFICATE block of a PEM file; where names the file.
func parseCerts(b []byte, where string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for i := 1; ; i++ {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: PEM block %d is %q, want CERTIFICATE", where, i, blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", where, i, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no PEM CERTIFICATE block found", where)
	}
	return out, nil
}

// parseKey reads a PKCS#1, SEC 1 or PKCS#8 private key.
func parseKey(b []byte, where string) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: no PEM block found; want a PEM private key", where)
	}
	var (
		k   any
		err error
	)
	switch blk.Type {
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("%s: PEM block is %q; want RSA PRIVATE KEY, EC PRIVATE KEY or PRIVATE KEY", where, blk.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: key type %T cannot sign", where, k)
	}
	return s, nil
}

func encodeKey(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encoding CA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// keyMatches reports whether the certificate carries the key's public half.
func keyMatches(c *x509.Certificate, k crypto.Signer) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	switch pub := c.PublicKey.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
		return pub.(equaler).Equal(k.Public())
	}
	return false
}

// encodePreviousRoots writes roots still trusted after a rotation, each with
// the end of its overlap in a PEM header.
func encodePreviousRoots(prev []trustedRoot) []byte {
	var b bytes.Buffer
	for _, p := range prev {
		_ = pem.Encode(&b, &pem.Block{
			Type:    "CERTIFICATE",
			Headers: map[string]string{headerTrustedUntil: p.until.UTC().Format(time.RFC3339Nano)},
			Bytes:   p.cert.Raw,
		})
	}
	return b.Bytes()
}

func parsePreviousRoots(b []byte, where string) ([]trustedRoot, error) {
	var out []trustedRoot
	for i := 1; ; i++ {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out, nil
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", where, i, err)
		}
		until, err := time.Parse(time.RFC3339Nano, blk.Headers[headerTrustedUntil])
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: header %s: %w", where, i, headerTrustedUntil, err)
		}
		out = append(out, trustedRoot{cert: c, until: until})
	}
}
