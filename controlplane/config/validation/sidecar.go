package validation

import (
	"net"
	"net/netip"
	"strconv"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

func init() { register(config.Sidecar, (*collector).sidecar) }

func (v *collector) sidecar(sc *networking.Sidecar) {
	if len(sc.Egress) == 0 && len(sc.Ingress) == 0 && sc.OutboundTrafficPolicy == nil && sc.InboundConnectionPool == nil {
		v.add("spec", "is empty; set egress, ingress, outboundTrafficPolicy or inboundConnectionPool")
	}
	if ws := sc.WorkloadSelector; ws != nil {
		if len(ws.Labels) == 0 {
			v.warn("spec.workloadSelector.labels", "is empty, so this Sidecar applies to the whole namespace; give labels or remove workloadSelector")
		}
		v.selectorLabels("spec.workloadSelector.labels", ws.Labels)
	}
	ingressPorts := map[uint32]int{}
	for i, in := range sc.Ingress {
		p := idx("spec.ingress", i)
		if in == nil {
			v.add(p, "is empty; give a port")
			continue
		}
		if in.Port == nil {
			v.add(field(p, "port"), "is required for an ingress listener")
		} else {
			v.sidecarPort(field(p, "port"), in.Port, in.Bind)
			if first, dup := ingressPorts[in.Port.Number]; dup {
				v.add(field(p, "port.number"), "port %d is already used by spec.ingress[%d]; ingress ports must be unique", in.Port.Number, first)
			} else {
				ingressPorts[in.Port.Number] = i
			}
		}
		v.bind(field(p, "bind"), in.Bind)
		if in.DefaultEndpoint != "" {
			v.defaultEndpoint(field(p, "defaultEndpoint"), in.DefaultEndpoint)
		}
		if t := in.Tls; t != nil {
			v.sidecarIngressTLS(field(p, "tls"), t, in.Port)
		}
		v.connectionPool(field(p, "connectionPool"), in.ConnectionPool)
	}
	egressPorts := map[uint32]int{}
	portless := -1
	for i, eg := range sc.Egress {
		p := idx("spec.egress", i)
		if eg == nil {
			v.add(p, "is empty; give hosts")
			continue
		}
		if eg.Port == nil {
			if portless >= 0 {
				v.add(p, "is a second egress listener without a port (spec.egress[%d] is the first); only one may omit the port", portless)
			} else {
				portless = i
			}
			if i != len(sc.Egress)-1 {
				v.add(p, "has no port but is not the last egress listener; move the catch-all listener last")
			}
		} else {
			v.sidecarPort(field(p, "port"), eg.Port, eg.Bind)
			if first, dup := egressPorts[eg.Port.Number]; dup {
				v.add(field(p, "port.number"), "port %d is already used by spec.egress[%d]; egress ports must be unique", eg.Port.Number, first)
			} else {
				egressPorts[eg.Port.Number] = i
			}
		}
		v.bind(field(p, "bind"), eg.Bind)
		if len(eg.Hosts) == 0 {
			v.add(field(p, "hosts"), "is empty; give at least one namespace/host, e.g. \"./*\" or \"istio-system/*\"")
		}
		for j, h := range eg.Hosts {
			v.namespacedHost(idx(field(p, "hosts"), j), h, true)
		}
	}
	v.connectionPool("spec.inboundConnectionPool", sc.InboundConnectionPool)
	if otp := sc.OutboundTrafficPolicy; otp != nil && otp.EgressProxy != nil {
		p := "spec.outboundTrafficPolicy.egressProxy"
		if otp.Mode != networking.OutboundTrafficPolicy_ALLOW_ANY {
			v.add(p, "takes effect only with mode ALLOW_ANY; set the mode or remove egressProxy")
		}
		if strings.Contains(otp.EgressProxy.Host, "*") {
			v.add(field(p, "host"), "%q is a wildcard; name the egress proxy's service", otp.EgressProxy.Host)
		} else {
			v.destination(p, otp.EgressProxy)
		}
		if otp.EgressProxy.Port == nil {
			v.add(field(p, "port"), "is required; give the egress proxy's port")
		}
	}
}

// sidecarIngressTLS checks TLS a sidecar terminates for its workload:
// certificates come from files only, and the mesh's own modes do not apply.
func (v *collector) sidecarIngressTLS(path string, t *networking.ServerTLSSettings, port *networking.SidecarPort) {
	switch t.Mode {
	case networking.ServerTLSSettings_ISTIO_MUTUAL, networking.ServerTLSSettings_AUTO_PASSTHROUGH:
		v.add(field(path, "mode"), "%s is not supported on a sidecar ingress listener; use SIMPLE or MUTUAL", t.Mode)
	}
	for _, unsupported := range []struct {
		name string
		set  bool
	}{
		{"credentialName", t.CredentialName != ""}, {"credentialNames", len(t.CredentialNames) > 0},
		{"tlsCertificates", len(t.TlsCertificates) > 0}, {"subjectAltNames", len(t.SubjectAltNames) > 0},
		{"httpsRedirect", t.HttpsRedirect},
	} {
		if unsupported.set {
			v.add(field(path, unsupported.name), "is not supported on a sidecar ingress listener; give serverCertificate and privateKey files")
		}
	}
	if port != nil {
		if p := strings.ToUpper(port.Protocol); p != "HTTPS" && p != "TLS" {
			v.add(path, "needs the port's protocol to be HTTPS or TLS; it is %s", protocolOrTCP(port.Protocol))
		}
	}
	v.tlsOptions(path, t)
}

func (v *collector) sidecarPort(path string, sp *networking.SidecarPort, bind string) {
	if sp.TargetPort != 0 {
		v.add(field(path, "targetPort"), "has no effect on a Sidecar; remove it")
	}
	if sp.Number == 0 && !strings.HasPrefix(bind, "unix://") {
		v.add(field(path, "number"), "port 0 needs a unix:// bind address; give a port number 1-65535")
	} else if sp.Number != 0 {
		v.port(field(path, "number"), sp.Number)
	}
	if sp.Protocol != "" {
		v.protocol(field(path, "protocol"), sp.Protocol)
	}
	if sp.Name != "" {
		v.portName(field(path, "name"), sp.Name)
	}
}

func (v *collector) bind(path, b string) {
	if b == "" || strings.HasPrefix(b, "unix://") {
		return
	}
	if _, err := netip.ParseAddr(b); err != nil {
		v.add(path, "%q is not an IP address or unix:// path", b)
	}
}

// defaultEndpoint accepts what Istio does: 127.0.0.1:PORT, 0.0.0.0:PORT,
// [::1]:PORT, [::]:PORT or unix:///path.
func (v *collector) defaultEndpoint(path, ep string) {
	if strings.HasPrefix(ep, "unix://") {
		if len(ep) == len("unix://") {
			v.add(path, "%q has no socket path", ep)
		}
		return
	}
	host, port, err := net.SplitHostPort(ep)
	n, perr := strconv.Atoi(port)
	if err != nil || perr != nil || n < 1 || n > 65535 {
		v.add(path, "%q is not IP:PORT or unix:///path; use e.g. 127.0.0.1:8080", ep)
		return
	}
	// An empty host (":8080") means the workload's own address.
	if a, err := netip.ParseAddr(host); host != "" && (err != nil || (!a.IsLoopback() && !a.IsUnspecified())) {
		v.add(path, "%q must use a loopback or unspecified address (127.0.0.1, 0.0.0.0, [::1] or [::])", ep)
	}
}
