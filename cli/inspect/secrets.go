package inspect

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
)

// secretCert is the certificate a secret carries, and what kind of secret.
func secretCert(s *tlsv3.Secret) (kind string, cert *x509.Certificate) {
	var ds *corev3.DataSource
	switch {
	case s.GetTlsCertificate() != nil:
		kind, ds = "Cert Chain", s.GetTlsCertificate().GetCertificateChain()
	case s.GetValidationContext() != nil:
		kind, ds = "CA", s.GetValidationContext().GetTrustedCa()
	default:
		return "Unknown", nil
	}
	data := ds.GetInlineBytes()
	if data == nil {
		data = []byte(ds.GetInlineString())
	}
	// The first certificate is the leaf of a chain; of a CA bundle, the first root.
	for len(data) > 0 {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			return kind, c
		}
	}
	return kind, nil
}

func printSecrets(d *configDump, o configOpts, now func() time.Time, w io.Writer) error {
	rs := slices.Clone(d.secrets)
	slices.SortStableFunc(rs, func(a, b resource) int { return strings.Compare(a.name, b.name) })
	if o.output != "short" {
		var msgs []proto.Message
		for _, r := range rs {
			if r.msg != nil {
				msgs = append(msgs, r.msg)
			}
		}
		return writeMessages(w, msgs, o.output)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 5, ' ', 0)
	fmt.Fprintln(tw, "RESOURCE NAME\tTYPE\tSTATUS\tVALID CERT\tSERIAL NUMBER\tNOT AFTER\tNOT BEFORE")
	for _, r := range rs {
		kind, serial, notAfter, notBefore, valid := "", "", "", "", false
		if s, ok := r.msg.(*tlsv3.Secret); ok {
			var c *x509.Certificate
			kind, c = secretCert(s)
			if c != nil {
				serial = hex.EncodeToString(c.SerialNumber.Bytes())
				notAfter = c.NotAfter.UTC().Format(time.RFC3339)
				notBefore = c.NotBefore.UTC().Format(time.RFC3339)
				t := now()
				valid = !t.Before(c.NotBefore) && !t.After(c.NotAfter)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%t\t%s\t%s\t%s\n", r.name, kind, r.state, valid, serial, notAfter, notBefore)
	}
	return tw.Flush()
}
