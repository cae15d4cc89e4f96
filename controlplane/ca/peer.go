package ca

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// ParseSPIFFEID reads spiffe://<trust-domain>/ns/<ns>/sa/<sa>.
func ParseSPIFFEID(s string) (Identity, error) {
	rest, ok := strings.CutPrefix(s, "spiffe://")
	if !ok {
		return Identity{}, fmt.Errorf("%q is not a SPIFFE ID: want spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>", s)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 5 || parts[0] == "" || parts[1] != "ns" || parts[2] == "" || parts[3] != "sa" || parts[4] == "" {
		return Identity{}, fmt.Errorf("%q is not a workload SPIFFE ID: want spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>", s)
	}
	return Identity{TrustDomain: parts[0], Namespace: parts[2], ServiceAccount: parts[4]}, nil
}

// ClientCertAuthenticator identifies a caller by the workload certificate it
// presented on the TLS connection (verified against the trust bundle by
// ServingCert.TLSConfig), so a proxy can renew with the certificate it holds
// after its bootstrap credential is gone, as Istio's agents can.
type ClientCertAuthenticator struct{}

// Authenticate returns the SPIFFE identity of the verified client certificate.
func (ClientCertAuthenticator) Authenticate(ctx context.Context) (Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Identity{}, fmt.Errorf("%w: no peer information on the call", ErrUnauthenticated)
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return Identity{}, fmt.Errorf("%w: no verified client certificate on the connection", ErrUnauthenticated)
	}
	leaf := ti.State.VerifiedChains[0][0]
	if len(leaf.URIs) != 1 {
		return Identity{}, fmt.Errorf("%w: client certificate has %d URI SANs, want exactly one SPIFFE ID", ErrUnauthenticated, len(leaf.URIs))
	}
	id, err := ParseSPIFFEID(leaf.URIs[0].String())
	if err != nil {
		return Identity{}, fmt.Errorf("%w: client certificate: %v", ErrUnauthenticated, err)
	}
	return id, nil
}

// FirstOf tries each authenticator in turn and returns the first identity;
// when all fail the error lists every reason.
func FirstOf(auths ...Authenticator) Authenticator {
	return AuthenticatorFunc(func(ctx context.Context) (Identity, error) {
		var errs []error
		for _, a := range auths {
			id, err := a.Authenticate(ctx)
			if err == nil {
				return id, nil
			}
			errs = append(errs, err)
		}
		return Identity{}, errors.Join(errs...)
	})
}

var _ Authenticator = ClientCertAuthenticator{}
