package rbac

import (
	"crypto/tls"
	"sync"
	"sync/atomic"
)

// peerID is what authenticated principals match: the peer certificate's
// URI SANs (spiffe://<trust-domain>/ns/<ns>/sa/<sa> in a mesh), DNS SANs
// and subject (RFC 2253).
type peerID struct {
	uris    []string
	dns     []string
	subject string
}

// peerCache keeps each peer certificate's identity so requests on a
// connection do not re-render it. Certificates are per handshake, so the
// key is stable for a connection's life; the cache is dropped wholesale
// when it reaches peerCacheMax.
var (
	peerCache     sync.Map // *x509.Certificate → *peerID
	peerCacheSize atomic.Int64
)

const peerCacheMax = 8192

// peerOf returns the identity of the connection's peer certificate, nil
// when the peer sent none.
func peerOf(cs *tls.ConnectionState) *peerID {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	cert := cs.PeerCertificates[0]
	if v, ok := peerCache.Load(cert); ok {
		return v.(*peerID)
	}
	p := &peerID{dns: cert.DNSNames, subject: cert.Subject.String()}
	for _, u := range cert.URIs {
		p.uris = append(p.uris, u.String())
	}
	if peerCacheSize.Add(1) > peerCacheMax {
		peerCache.Clear()
		peerCacheSize.Store(1)
	}
	peerCache.Store(cert, p)
	return p
}
