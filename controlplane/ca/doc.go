// Package ca is skiffd's certificate authority, Istio's Citadel. It owns
//
//   - the mesh's root of trust: a self-signed root made on first start and
//     kept in a Store (a directory here, a Secret later), or an operator's
//     root and intermediate in Istio's cacerts layout, reloaded when replaced;
//   - issuance over Istio's istio.v1.auth.IstioCertificateService to callers
//     an Authenticator vouches for, each certificate carrying exactly the
//     caller's spiffe://<trust-domain>/ns/<ns>/sa/<sa>;
//   - the renewing serving certificate of the 15012 endpoint;
//   - root rotation with an overlap in which old and new roots are trusted.
//
// The package builds no server: skiffd makes the gRPC server with
// ServingCert.TLSConfig and calls Register on it.
package ca
