package hcm

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"net/http"
	"net/url"
	"strings"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

const hdrXFCC = "X-Forwarded-Client-Cert"

// xfccConfig is forward_client_cert_details with
// set_current_client_cert_details.
type xfccConfig struct {
	mode                           hcmv3.HttpConnectionManager_ForwardClientCertDetails
	subject, cert, chain, dns, uri bool
}

func newXFCC(cfg *hcmv3.HttpConnectionManager) xfccConfig {
	d := cfg.GetSetCurrentClientCertDetails()
	return xfccConfig{
		mode:    cfg.GetForwardClientCertDetails(),
		subject: d.GetSubject().GetValue(), cert: d.GetCert(), chain: d.GetChain(), dns: d.GetDns(), uri: d.GetUri(),
	}
}

// apply sets x-forwarded-client-cert as Envoy does: removed by SANITIZE and
// for connections without a client certificate (except
// ALWAYS_FORWARD_ONLY), kept by FORWARD_ONLY, and extended (APPEND_FORWARD)
// or replaced (SANITIZE_SET) with this connection's client certificate.
func (x *xfccConfig) apply(h http.Header, ci *core.ConnInfo) {
	mtls := ci.TLS != nil && len(ci.TLS.PeerCertificates) > 0
	switch {
	case x.mode == hcmv3.HttpConnectionManager_ALWAYS_FORWARD_ONLY:
		return
	case x.mode == hcmv3.HttpConnectionManager_SANITIZE || !mtls:
		delete(h, hdrXFCC)
		return
	case x.mode == hcmv3.HttpConnectionManager_FORWARD_ONLY:
		return
	}
	v := x.current(ci)
	if prior := h[hdrXFCC]; x.mode == hcmv3.HttpConnectionManager_APPEND_FORWARD && len(prior) > 0 {
		v = strings.Join(prior, ",") + "," + v
	}
	h[hdrXFCC] = []string{v}
}

// current renders the client certificate element: Hash, then Cert, Chain,
// Subject, URI and DNS as configured.
func (x *xfccConfig) current(ci *core.ConnInfo) string {
	certs := ci.TLS.PeerCertificates
	leaf := certs[0]
	sum := sha256.Sum256(leaf.Raw)
	var b strings.Builder
	b.WriteString("Hash=")
	b.WriteString(hex.EncodeToString(sum[:]))
	if x.cert {
		b.WriteString(";Cert=\"")
		b.WriteString(url.QueryEscape(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}))))
		b.WriteByte('"')
	}
	if x.chain {
		var chain []byte
		for _, c := range certs {
			chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		b.WriteString(";Chain=\"")
		b.WriteString(url.QueryEscape(string(chain)))
		b.WriteByte('"')
	}
	if x.subject {
		b.WriteString(";Subject=\"")
		b.WriteString(strings.ReplaceAll(leaf.Subject.String(), `"`, `\"`))
		b.WriteByte('"')
	}
	if x.uri {
		b.WriteString(";URI=")
		if len(leaf.URIs) > 0 {
			b.WriteString(leaf.URIs[0].String())
		}
	}
	if x.dns {
		for _, d := range leaf.DNSNames {
			b.WriteString(";DNS=")
			b.WriteString(d)
		}
	}
	return b.String()
}
