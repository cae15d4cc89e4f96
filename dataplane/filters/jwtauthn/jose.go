package jwtauthn

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"math"
	"math/big"
	"strings"

	_ "crypto/sha256" // registers SHA-256 for crypto.Hash
	_ "crypto/sha512" // registers SHA-384 and SHA-512
)

// status is a verification outcome; its text is what Envoy (its
// source/common/jwt status table) answers in the body of a failed request,
// so clients and tests that look for those words keep working.
type status int

const (
	statusOK status = iota
	statusMissing
	statusNotYetValid
	statusExpired
	statusBadFormat
	statusHeaderBadBase64
	statusHeaderBadJSON
	statusHeaderBadAlg
	statusHeaderAlgNotSupported
	statusHeaderBadKid
	statusPayloadBadBase64
	statusPayloadBadJSON
	statusIssNotString
	statusSubNotString
	statusIatNotInteger
	statusIatOutOfRange
	statusNbfNotInteger
	statusNbfOutOfRange
	statusExpNotInteger
	statusExpOutOfRange
	statusAudNotString
	statusSignatureBadBase64
	statusUnknownIssuer
	statusAudienceNotAllowed
	statusVerificationFail
	statusJwksParse
	statusJwksNoKeys
	statusJwksBadKeys
	statusJwksNoValidKeys
	statusJwksKidAlgMismatch
	statusJwksFetchFail
)

var statusText = [...]string{
	statusOK:                    "OK",
	statusMissing:               "Jwt is missing",
	statusNotYetValid:           "Jwt not yet valid",
	statusExpired:               "Jwt is expired",
	statusBadFormat:             "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
	statusHeaderBadBase64:       "Jwt header is an invalid Base64url encoded",
	statusHeaderBadJSON:         "Jwt header is an invalid JSON",
	statusHeaderBadAlg:          "Jwt header [alg] field is required and must be a string",
	statusHeaderAlgNotSupported: "Jwt header [alg] is not supported",
	statusHeaderBadKid:          "Jwt header [kid] field is not a string",
	statusPayloadBadBase64:      "Jwt payload is an invalid Base64url encoded",
	statusPayloadBadJSON:        "Jwt payload is an invalid JSON",
	statusIssNotString:          "Jwt payload [iss] field is not a string",
	statusSubNotString:          "Jwt payload [sub] field is not a string",
	statusIatNotInteger:         "Jwt payload [iat] field is not an integer",
	statusIatOutOfRange:         "Jwt payload [iat] field is not a positive 64 bit integer",
	statusNbfNotInteger:         "Jwt payload [nbf] field is not an integer",
	statusNbfOutOfRange:         "Jwt payload [nbf] field is not a positive 64 bit integer",
	statusExpNotInteger:         "Jwt payload [exp] field is not an integer",
	statusExpOutOfRange:         "Jwt payload [exp] field is not a positive 64 bit integer",
	statusAudNotString:          "Jwt payload [aud] field is not a string or string list",
	statusSignatureBadBase64:    "Jwt signature is an invalid Base64url encoded",
	statusUnknownIssuer:         "Jwt issuer is not configured",
	statusAudienceNotAllowed:    "Audiences in Jwt are not allowed",
	statusVerificationFail:      "Jwt verification fails",
	statusJwksParse:             "Jwks is an invalid JSON",
	statusJwksNoKeys:            "Jwks does not have [keys] field",
	statusJwksBadKeys:           "[keys] in Jwks is not an array",
	statusJwksNoValidKeys:       "Jwks doesn't have any valid public key",
	statusJwksKidAlgMismatch:    "Jwks doesn't have key to match kid or alg from Jwt",
	statusJwksFetchFail:         "Jwks remote fetch is failed",
}

func (s status) String() string { return statusText[s] }

// jwt is a parsed, not yet verified token.
type jwt struct {
	alg, kid   string
	iss, sub   string
	aud        []string
	exp, nbf   int64 // 0 when absent
	payload    map[string]any
	header     map[string]any
	payloadB64 string // the payload segment as sent, for forward_payload_header
	signed     string // header.payload, the signature input
	sig        []byte
}

// b64 decodes base64url with or without padding, as JWS producers differ.
func b64(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

// supportedAlg reports whether alg is one this filter verifies. HS* and
// EdDSA are Envoy algorithms Istio's JWKS (public keys of an issuer) do
// not need; tokens using them fail with "Jwt header [alg] is not
// supported".
func supportedAlg(alg string) bool {
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512":
		return true
	}
	return false
}

func parseJWT(tok string) (*jwt, status) {
	first := strings.IndexByte(tok, '.')
	last := strings.LastIndexByte(tok, '.')
	if first < 0 || first == last || strings.Count(tok, ".") != 2 {
		return nil, statusBadFormat
	}
	hb, err := b64(tok[:first])
	if err != nil {
		return nil, statusHeaderBadBase64
	}
	var hdr map[string]any
	if err := json.Unmarshal(hb, &hdr); err != nil || hdr == nil {
		return nil, statusHeaderBadJSON
	}
	j := &jwt{header: hdr, payloadB64: tok[first+1 : last], signed: tok[:last]}
	alg, ok := hdr["alg"].(string)
	if !ok {
		return nil, statusHeaderBadAlg
	}
	if !supportedAlg(alg) {
		return nil, statusHeaderAlgNotSupported
	}
	j.alg = alg
	if k, present := hdr["kid"]; present {
		if j.kid, ok = k.(string); !ok {
			return nil, statusHeaderBadKid
		}
	}
	pb, err := b64(j.payloadB64)
	if err != nil {
		return nil, statusPayloadBadBase64
	}
	if err := json.Unmarshal(pb, &j.payload); err != nil || j.payload == nil {
		return nil, statusPayloadBadJSON
	}
	if st := j.claims(); st != statusOK {
		return nil, st
	}
	if j.sig, err = b64(tok[last+1:]); err != nil {
		return nil, statusSignatureBadBase64
	}
	return j, statusOK
}

// claims reads the registered claims; a claim of the wrong type makes the
// token invalid, as in Envoy.
func (j *jwt) claims() status {
	str := func(k string, dst *string) bool {
		v, ok := j.payload[k]
		if !ok {
			return true
		}
		*dst, ok = v.(string)
		return ok
	}
	num := func(k string, dst *int64, notInt, outOfRange status) status {
		v, ok := j.payload[k]
		if !ok {
			return statusOK
		}
		f, ok := v.(float64)
		if !ok || f != math.Trunc(f) {
			return notInt
		}
		if f < 0 || f >= math.MaxInt64 {
			return outOfRange
		}
		*dst = int64(f)
		return statusOK
	}
	if !str("iss", &j.iss) {
		return statusIssNotString
	}
	if !str("sub", &j.sub) {
		return statusSubNotString
	}
	var iat int64
	if st := num("iat", &iat, statusIatNotInteger, statusIatOutOfRange); st != statusOK {
		return st
	}
	if st := num("nbf", &j.nbf, statusNbfNotInteger, statusNbfOutOfRange); st != statusOK {
		return st
	}
	if st := num("exp", &j.exp, statusExpNotInteger, statusExpOutOfRange); st != statusOK {
		return st
	}
	switch a := j.payload["aud"].(type) {
	case nil:
	case string:
		j.aud = []string{a}
	case []any:
		for _, v := range a {
			s, ok := v.(string)
			if !ok {
				return statusAudNotString
			}
			j.aud = append(j.aud, s)
		}
	default:
		return statusAudNotString
	}
	return statusOK
}

// jwk is one usable public key of a JWKS.
type jwk struct {
	kid, alg string
	rsa      *rsa.PublicKey
	ec       *ecdsa.PublicKey
}

// parseJWKS reads a JWK Set. Keys of a type this filter cannot use (oct,
// OKP) or that fail to parse are skipped, as Envoy skips them; a set left
// without any key is an error.
func parseJWKS(data []byte) ([]*jwk, status) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, statusJwksParse
	}
	ks, ok := raw["keys"]
	if !ok {
		return nil, statusJwksNoKeys
	}
	var keys []map[string]any
	if err := json.Unmarshal(ks, &keys); err != nil {
		return nil, statusJwksBadKeys
	}
	var out []*jwk
	for _, k := range keys {
		if key := parseJWK(k); key != nil {
			out = append(out, key)
		}
	}
	if len(out) == 0 {
		return nil, statusJwksNoValidKeys
	}
	return out, statusOK
}

func parseJWK(k map[string]any) *jwk {
	s := func(name string) string { v, _ := k[name].(string); return v }
	key := &jwk{kid: s("kid"), alg: s("alg")}
	switch s("kty") {
	case "RSA":
		if key.alg != "" && !strings.HasPrefix(key.alg, "RS") && !strings.HasPrefix(key.alg, "PS") {
			return nil
		}
		n, err1 := b64(s("n"))
		e, err2 := b64(s("e"))
		if err1 != nil || err2 != nil || len(n) == 0 || len(e) == 0 || len(e) > 4 {
			return nil
		}
		ev := new(big.Int).SetBytes(e).Int64()
		if ev < 3 {
			return nil
		}
		key.rsa = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(ev)}
	case "EC":
		if key.alg != "" && !strings.HasPrefix(key.alg, "ES") {
			return nil
		}
		var curve elliptic.Curve
		switch s("crv") {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		case "P-521":
			curve = elliptic.P521()
		default:
			return nil
		}
		x, err1 := b64(s("x"))
		y, err2 := b64(s("y"))
		if err1 != nil || err2 != nil {
			return nil
		}
		size := (curve.Params().BitSize + 7) / 8
		if len(x) > size || len(y) > size {
			return nil
		}
		// An uncompressed point goes through x509, which checks that it
		// is on the curve before we trust it.
		pt := make([]byte, 1+2*size)
		pt[0] = 4
		copy(pt[1+size-len(x):1+size], x)
		copy(pt[1+2*size-len(y):], y)
		pub, err := ecdsaFromPoint(curve, pt)
		if err != nil {
			return nil
		}
		key.ec = pub
	default:
		return nil
	}
	return key
}

// ecdsaFromPoint parses an uncompressed point through x509, which rejects
// points not on the curve.
func ecdsaFromPoint(curve elliptic.Curve, pt []byte) (*ecdsa.PublicKey, error) {
	var oid string
	switch curve {
	case elliptic.P256():
		oid = "\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07"
	case elliptic.P384():
		oid = "\x06\x05\x2b\x81\x04\x00\x22"
	default:
		oid = "\x06\x05\x2b\x81\x04\x00\x23"
	}
	// SubjectPublicKeyInfo: SEQ { SEQ { id-ecPublicKey, curve }, BIT STRING point }
	algID := append([]byte("\x06\x07\x2a\x86\x48\xce\x3d\x02\x01"), oid...)
	algSeq := derTLV(0x30, algID)
	bits := derTLV(0x03, append([]byte{0}, pt...))
	spki := derTLV(0x30, append(algSeq, bits...))
	pub, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		return nil, err
	}
	return pub.(*ecdsa.PublicKey), nil
}

func derTLV(tag byte, body []byte) []byte {
	n := len(body)
	var out []byte
	switch {
	case n < 0x80:
		out = []byte{tag, byte(n)}
	case n < 0x100:
		out = []byte{tag, 0x81, byte(n)}
	default:
		out = []byte{tag, 0x82, byte(n >> 8), byte(n)}
	}
	return append(out, body...)
}

func hashFor(alg string) crypto.Hash {
	switch alg[2:] {
	case "384":
		return crypto.SHA384
	case "512":
		return crypto.SHA512
	}
	return crypto.SHA256
}

// verifySignature checks j against keys the way jwt_verify_lib does: a key
// is a candidate when its kid (if both have one) and alg (if the key has
// one) agree with the token and its type fits the algorithm.
func verifySignature(j *jwt, keys []*jwk) (status, *jwk) {
	matched := false
	h := hashFor(j.alg)
	hh := h.New()
	hh.Write([]byte(j.signed))
	digest := hh.Sum(nil)
	for _, k := range keys {
		if j.kid != "" && k.kid != "" && k.kid != j.kid {
			continue
		}
		if k.alg != "" && k.alg != j.alg {
			continue
		}
		switch j.alg[:2] {
		case "RS":
			if k.rsa == nil {
				continue
			}
			matched = true
			if rsa.VerifyPKCS1v15(k.rsa, h, digest, j.sig) == nil {
				return statusOK, k
			}
		case "PS":
			if k.rsa == nil {
				continue
			}
			matched = true
			if rsa.VerifyPSS(k.rsa, h, digest, j.sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}) == nil {
				return statusOK, k
			}
		case "ES":
			if k.ec == nil || k.ec.Curve != curveFor(j.alg) {
				continue
			}
			matched = true
			size := (k.ec.Curve.Params().BitSize + 7) / 8
			if len(j.sig) != 2*size {
				continue
			}
			r := new(big.Int).SetBytes(j.sig[:size])
			s := new(big.Int).SetBytes(j.sig[size:])
			if ecdsa.Verify(k.ec, digest, r, s) {
				return statusOK, k
			}
		}
	}
	if matched {
		return statusVerificationFail, nil
	}
	return statusJwksKidAlgMismatch, nil
}

func curveFor(alg string) elliptic.Curve {
	switch alg {
	case "ES384":
		return elliptic.P384()
	case "ES512":
		return elliptic.P521()
	}
	return elliptic.P256()
}
