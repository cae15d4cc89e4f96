package validation

import (
	"net/netip"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

func init() { register(config.Gateway, (*collector).gateway) }

func (v *collector) gateway(g *networking.Gateway) {
	if len(g.Servers) == 0 {
		v.add("spec.servers", "is empty; a Gateway needs at least one server")
	}
	v.labels("spec.selector", g.Selector)
	portNames := map[string]int{}
	for i, s := range g.Servers {
		p := idx("spec.servers", i)
		if s == nil {
			v.add(p, "is empty; give port and hosts")
			continue
		}
		v.server(p, s)
		if s.Port != nil && s.Port.Name != "" {
			if first, dup := portNames[s.Port.Name]; dup {
				v.add(field(p, "port.name"), "port name %q is already used by spec.servers[%d]; server port names must be unique", s.Port.Name, first)
			} else {
				portNames[s.Port.Name] = i
			}
		}
	}
}

func (v *collector) server(path string, s *networking.Server) {
	if len(s.Hosts) == 0 {
		v.add(field(path, "hosts"), "is empty; give at least one host, e.g. \"*\" or \"ns/host.example.com\"")
	}
	for i, h := range s.Hosts {
		v.namespacedHost(idx(field(path, "hosts"), i), h, false)
	}
	proto := ""
	if s.Port == nil {
		v.add(field(path, "port"), "is required")
	} else {
		pp := field(path, "port")
		proto = strings.ToUpper(s.Port.Protocol)
		if !strings.HasPrefix(s.Bind, "unix://") || s.Port.Number != 0 {
			v.port(field(pp, "number"), s.Port.Number)
		}
		v.protocol(field(pp, "protocol"), s.Port.Protocol)
		if s.Port.Name == "" {
			v.add(field(pp, "name"), "is empty; every server port needs a name")
		}
		if s.Port.TargetPort != 0 {
			v.add(field(pp, "targetPort"), "has no effect on a Gateway; remove it")
		}
	}
	if s.Bind != "" && !strings.HasPrefix(s.Bind, "unix://") {
		if _, err := netip.ParseAddr(s.Bind); err != nil {
			v.add(field(path, "bind"), "%q is not an IP address or unix:// path", s.Bind)
		}
	}
	v.serverTLS(field(path, "tls"), s.Tls, proto)
}

// namespacedHost checks "host", "ns/host", "./host" or "*/host" (Gateway
// servers, where the namespace is optional) or requires the namespace
// (Sidecar egress).
func (v *collector) namespacedHost(path, h string, needNamespace bool) {
	ns, host, hasNS := strings.Cut(h, "/")
	if !hasNS {
		if needNamespace {
			v.add(path, "%q must be namespace/host, e.g. \"./*\", \"istio-system/*\" or \"*/reviews.default.svc.cluster.local\"", h)
			return
		}
		host, ns = ns, ""
	}
	if hasNS {
		switch ns {
		case "*", ".", "~":
		default:
			if msg := dnsLabel(ns); msg != "" {
				v.add(path, "%q: namespace %q is invalid; %s", h, ns, msg)
				return
			}
		}
	}
	v.host(path, host)
}

func (v *collector) serverTLS(path string, t *networking.ServerTLSSettings, proto string) {
	tlsProto := proto == "HTTPS" || proto == "TLS"
	if t == nil {
		if tlsProto {
			v.add(path, "is required for a %s server; set mode and credentialName (or serverCertificate and privateKey)", proto)
		}
		return
	}
	if t.HttpsRedirect && proto != "" && proto != "HTTP" {
		v.warn(field(path, "httpsRedirect"), "applies only to HTTP servers; this server is %s", proto)
	}
	if !tlsProto {
		// A plain-text server may carry tls only to redirect to HTTPS.
		if proto != "" && (t.Mode != networking.ServerTLSSettings_PASSTHROUGH || !t.HttpsRedirect) && hasTLSSettings(t) {
			v.add(path, "a %s server cannot terminate TLS; use protocol HTTPS or TLS, or keep only httpsRedirect", proto)
		}
		return
	}
	v.tlsOptions(path, t)
	if t.Mode == networking.ServerTLSSettings_AUTO_PASSTHROUGH && proto != "TLS" {
		v.add(field(path, "mode"), "AUTO_PASSTHROUGH needs protocol TLS; this server is %s", proto)
	}
}

// hasTLSSettings reports whether t asks for more than an HTTPS redirect.
func hasTLSSettings(t *networking.ServerTLSSettings) bool {
	return t.Mode != networking.ServerTLSSettings_PASSTHROUGH || t.ServerCertificate != "" || t.PrivateKey != "" ||
		t.CaCertificates != "" || t.CredentialName != "" || len(t.CredentialNames) > 0 || len(t.TlsCertificates) > 0
}

// tlsOptions checks the certificates a terminating mode needs.
func (v *collector) tlsOptions(path string, t *networking.ServerTLSSettings) {
	creds := t.CredentialName != "" || len(t.CredentialNames) > 0
	files := t.ServerCertificate != "" || t.PrivateKey != "" || len(t.TlsCertificates) > 0
	sources := 0
	for _, set := range []bool{t.ServerCertificate != "" && t.PrivateKey != "", t.CredentialName != "", len(t.CredentialNames) > 0, len(t.TlsCertificates) > 0} {
		if set {
			sources++
		}
	}
	if sources > 1 {
		v.add(path, "sets more than one of credentialName, credentialNames, serverCertificate/privateKey and tlsCertificates; keep one")
	}
	if t.CaCrl != "" && t.CredentialName != "" {
		v.add(field(path, "caCrl"), "cannot be combined with credentialName; put the CRL in the credential")
	}
	switch t.Mode {
	case networking.ServerTLSSettings_PASSTHROUGH, networking.ServerTLSSettings_AUTO_PASSTHROUGH:
		if files || creds || t.CaCertificates != "" || t.CaCrl != "" {
			v.warn(path, "%s does not terminate TLS, so its certificates are ignored; remove them", t.Mode)
		}
	case networking.ServerTLSSettings_SIMPLE, networking.ServerTLSSettings_MUTUAL, networking.ServerTLSSettings_OPTIONAL_MUTUAL:
		if t.Mode == networking.ServerTLSSettings_SIMPLE && t.CaCrl != "" {
			v.add(field(path, "caCrl"), "applies to client certificates, which SIMPLE TLS does not ask for; use MUTUAL or remove it")
		}
		if !creds && len(t.TlsCertificates) == 0 {
			if t.ServerCertificate == "" {
				v.add(field(path, "serverCertificate"), "is required for %s TLS unless credentialName is set", t.Mode)
			}
			if t.PrivateKey == "" {
				v.add(field(path, "privateKey"), "is required for %s TLS unless credentialName is set", t.Mode)
			}
		}
		for i, c := range t.TlsCertificates {
			cp := idx(field(path, "tlsCertificates"), i)
			if c.GetServerCertificate() == "" {
				v.add(field(cp, "serverCertificate"), "is required")
			}
			if c.GetPrivateKey() == "" {
				v.add(field(cp, "privateKey"), "is required")
			}
		}
		if t.Mode != networking.ServerTLSSettings_SIMPLE && !creds && t.CaCertificates == "" && t.CaCertCredentialName == "" {
			v.add(field(path, "caCertificates"), "is required for %s TLS unless credentialName is set; give the CA that signs client certificates", t.Mode)
		}
	case networking.ServerTLSSettings_ISTIO_MUTUAL:
		if files || creds || t.CaCertificates != "" {
			v.add(path, "ISTIO_MUTUAL uses the mesh's certificates; remove serverCertificate, privateKey, caCertificates and credentialName")
		}
	}
	if t.MinProtocolVersion != 0 && t.MaxProtocolVersion != 0 && t.MinProtocolVersion > t.MaxProtocolVersion {
		v.add(field(path, "minProtocolVersion"), "%s is above maxProtocolVersion %s", t.MinProtocolVersion, t.MaxProtocolVersion)
	}
	for i, c := range t.CipherSuites {
		if c == "" {
			v.add(idx(field(path, "cipherSuites"), i), "is empty; name a cipher suite or remove it")
		}
	}
}
