package sds

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	corev1 "k8s.io/api/core/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// The keys Istio reads a credential from: a kubernetes.io/tls Secret's,
// or a generic (Opaque) Secret's.
const (
	tlsCert, tlsKey, tlsCA         = "tls.crt", "tls.key", "ca.crt"
	genericCert, genericKey, genCA = "cert", "key", "cacert"
)

// Generator serves the Secret resources of user credentials. It is safe
// for concurrent use.
type Generator struct {
	log *slog.Logger
}

// New returns a Generator logging refusals and bad Secrets to log (nil:
// discarded).
func New(log *slog.Logger) *Generator {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Generator{log: log}
}

// Generate returns the Secrets the proxy asked for by name, as Istio's
// SecretGen serves them: "kubernetes://NAME" is the certificate chain and
// key of Secret NAME; "kubernetes://NAME-cacert" the CA of Secret
// NAME-cacert when it exists, else of Secret NAME. Only gateways get
// credentials, and only from Secrets of their own namespace; a name that
// is refused, missing or does not hold a valid credential is left out
// (the proxy keeps waiting for it) and logged. Wildcard requests get
// nothing: SDS names are always explicit.
func (g *Generator) Generate(p *xds.Proxy, ix *index.Index, names []string) []xds.Resource {
	var out []xds.Resource
	for _, name := range names {
		s, err := g.secret(p, ix, name)
		if err != nil {
			g.log.Warn("secret not served", "proxy", p.ID, "secret", name, "reason", err.Error())
			continue
		}
		if s != nil {
			out = append(out, xds.MustResource(name, mustAny(s)))
		}
	}
	return out
}

func (g *Generator) secret(p *xds.Proxy, ix *index.Index, name string) (*tlsv3.Secret, error) {
	rest, ok := strings.CutPrefix(name, KubernetesPrefix)
	if !ok {
		if name == Default || name == RootCA {
			// The workload identity is the agent's; a proxy asking skiffd
			// for it is misconfigured, but not in a way worth a log per push.
			return nil, nil
		}
		return nil, fmt.Errorf("skiffd serves only %s secrets (a Gateway or DestinationRule credentialName)", KubernetesPrefix+"NAME")
	}
	ns, secretName := p.Namespace, rest
	if n, s, ok := strings.Cut(rest, "/"); ok { // Istio's "kubernetes://NAMESPACE/NAME"
		ns, secretName = n, s
	}
	if p.Type != xds.RouterProxy {
		return nil, fmt.Errorf("only gateways may read Kubernetes Secrets; proxy %s is a %s", p.ID, p.Type)
	}
	if ns != p.Namespace {
		return nil, fmt.Errorf("Secret %s/%s is in another namespace than gateway %s (namespace %s): put the Secret in the gateway's namespace", ns, secretName, p.ID, p.Namespace)
	}
	if base, isCA := strings.CutSuffix(secretName, CASuffix); isCA {
		obj := lookup(ix, ns, secretName)
		if obj == nil {
			obj = lookup(ix, ns, base)
		}
		if obj == nil {
			return nil, fmt.Errorf("no Secret %s/%s or %s/%s holds the CA: create one with key %q (or %q)", ns, secretName, ns, base, tlsCA, genCA)
		}
		ca, err := caOf(obj)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", obj.Describe(), err)
		}
		return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline(ca),
		}}}, nil
	}
	obj := lookup(ix, ns, secretName)
	if obj == nil {
		return nil, fmt.Errorf("no Secret %s/%s: create it (type kubernetes.io/tls with %q and %q)", ns, secretName, tlsCert, tlsKey)
	}
	cert, key, err := certOf(obj)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", obj.Describe(), err)
	}
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: inline(cert),
		PrivateKey:       inline(key),
	}}}, nil
}

// lookup finds Secret ns/name in the index, through a map built once per
// index.
func lookup(ix *index.Index, ns, name string) *config.Object {
	m := ix.Cached("sds|secrets", func() any {
		m := map[string]*config.Object{}
		for _, o := range ix.Objects(config.Secret) {
			m[o.Meta.Namespace+"/"+o.Meta.Name] = o
		}
		return m
	}).(map[string]*config.Object)
	return m[ns+"/"+name]
}

func data(o *config.Object) map[string][]byte {
	s, ok := o.Spec.(*corev1.Secret)
	if !ok {
		return nil
	}
	d := map[string][]byte{}
	for k, v := range s.StringData {
		d[k] = []byte(v)
	}
	for k, v := range s.Data {
		d[k] = v
	}
	return d
}

// certOf reads a certificate chain and key as Istio accepts them (generic
// "cert"/"key" first, then "tls.crt"/"tls.key") and checks that they
// parse and belong together.
func certOf(o *config.Object) (cert, key []byte, err error) {
	d := data(o)
	switch {
	case len(d[genericCert]) > 0 && len(d[genericKey]) > 0:
		cert, key = d[genericCert], d[genericKey]
	case len(d[tlsCert]) > 0 && len(d[tlsKey]) > 0:
		cert, key = d[tlsCert], d[tlsKey]
	default:
		return nil, nil, fmt.Errorf("data: no certificate and key: want %q and %q (type kubernetes.io/tls) or %q and %q", tlsCert, tlsKey, genericCert, genericKey)
	}
	if _, err := tls.X509KeyPair(cert, key); err != nil {
		return nil, nil, fmt.Errorf("data: certificate and key do not form a valid pair: %v", err)
	}
	return cert, key, nil
}

// caOf reads the CA bundle ("cacert", then "ca.crt") and checks that it
// holds at least one certificate and nothing that does not parse.
func caOf(o *config.Object) ([]byte, error) {
	d := data(o)
	ca := d[genCA]
	if len(ca) == 0 {
		ca = d[tlsCA]
	}
	if len(ca) == 0 {
		return nil, fmt.Errorf("data: no CA certificate: want %q or %q", tlsCA, genCA)
	}
	n := 0
	for rest := ca; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return nil, fmt.Errorf("data: CA certificate %d does not parse: %v", n+1, err)
		}
		n++
	}
	if n == 0 {
		return nil, errors.New("data: the CA bundle holds no PEM certificate")
	}
	return ca, nil
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: slices.Clone(b)}}
}

func mustAny(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		panic(err) // a generated message always marshals
	}
	return a
}
