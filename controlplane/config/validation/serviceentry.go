package validation

import (
	"net/netip"
	pathpkg "path"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

func init() {
	register(config.ServiceEntry, (*collector).serviceEntry)
	register(config.WorkloadEntry, func(v *collector, we *networking.WorkloadEntry) { v.workloadEntry("spec", we, standalone, nil) })
	register(config.WorkloadGroup, (*collector).workloadGroup)
}

func (v *collector) serviceEntry(se *networking.ServiceEntry) {
	if len(se.Hosts) == 0 {
		v.add("spec.hosts", "is empty; a ServiceEntry needs at least one host")
	}
	dns := se.Resolution == networking.ServiceEntry_DNS || se.Resolution == networking.ServiceEntry_DNS_ROUND_ROBIN
	for i, h := range se.Hosts {
		p := idx("spec.hosts", i)
		if h == "*" {
			v.add(p, "\"*\" is not allowed; name the hosts, or use *.domain")
			continue
		}
		v.host(p, h)
		if dns && len(se.Endpoints) == 0 && strings.Contains(h, "*") {
			v.add(p, "wildcard host %q cannot be resolved with %s and no endpoints; use resolution NONE or list endpoints", h, se.Resolution)
		}
	}
	for i, a := range se.Addresses {
		p := idx("spec.addresses", i)
		if msg := cidrProblem(a); msg != "" {
			v.add(p, "%s", msg)
			continue
		}
		if strings.Contains(a, "/") && se.Resolution != networking.ServiceEntry_NONE && se.Resolution != networking.ServiceEntry_STATIC {
			v.add(p, "CIDR address %q is allowed only with resolution NONE or STATIC", a)
		}
	}
	names := map[string]bool{}
	numbers := map[uint32]bool{}
	for i, sp := range se.Ports {
		p := idx("spec.ports", i)
		if sp == nil {
			v.add(p, "is empty; give number, name and protocol")
			continue
		}
		v.port(field(p, "number"), sp.Number)
		if sp.Name == "" {
			v.add(field(p, "name"), "is empty; every ServiceEntry port needs a name")
		} else {
			v.portName(field(p, "name"), sp.Name)
		}
		if sp.Protocol != "" {
			v.protocol(field(p, "protocol"), sp.Protocol)
		}
		if sp.TargetPort != 0 {
			v.port(field(p, "targetPort"), sp.TargetPort)
		}
		if sp.Name != "" && names[sp.Name] {
			v.add(field(p, "name"), "port name %q is already defined; port names must be unique", sp.Name)
		}
		if numbers[sp.Number] {
			v.add(field(p, "number"), "port %d is already defined; port numbers must be unique", sp.Number)
		}
		names[sp.Name], numbers[sp.Number] = true, true
	}
	if se.WorkloadSelector != nil && len(se.Endpoints) > 0 {
		v.add("spec.workloadSelector", "cannot be combined with endpoints; select WorkloadEntries or list endpoints, not both")
	}
	if se.WorkloadSelector != nil {
		v.selectorLabels("spec.workloadSelector.labels", se.WorkloadSelector.Labels)
	}
	// Plain TCP carries no host name, so several hosts on one TCP port
	// cannot be told apart unless nothing is resolved (NONE).
	if se.Resolution != networking.ServiceEntry_NONE && len(se.Hosts) > 1 {
		for i, sp := range se.Ports {
			if sp == nil {
				continue
			}
			switch strings.ToUpper(sp.Protocol) {
			case "HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTPS", "TLS":
			default:
				v.add(idx("spec.ports", i), "port %d (%s) carries no host name, so the %d hosts cannot share it with resolution %s; use an HTTP or TLS protocol, one host per ServiceEntry, or resolution NONE", sp.Number, protocolOrTCP(sp.Protocol), len(se.Hosts), se.Resolution)
			}
		}
	}
	switch se.Resolution {
	case networking.ServiceEntry_NONE:
		if len(se.Endpoints) > 0 {
			v.add("spec.endpoints", "must be empty with resolution NONE; use STATIC or DNS to list endpoints")
		}
		if se.WorkloadSelector != nil {
			v.warn("spec.workloadSelector", "is ignored with resolution NONE; use STATIC to send traffic to the selected workloads")
		}
	case networking.ServiceEntry_DNS_ROUND_ROBIN:
		if len(se.Endpoints) > 1 {
			v.add("spec.endpoints", "has %d endpoints; DNS_ROUND_ROBIN takes at most one, use DNS for several", len(se.Endpoints))
		}
	}
	if dns && len(se.Endpoints) == 0 {
		for i, h := range se.Hosts {
			if !strings.Contains(h, "*") && hostProblem(h) == "" && !strings.Contains(h, ".") {
				v.warn(idx("spec.hosts", i), "%q is not a fully qualified name; with %s and no endpoints the host itself is resolved, so give e.g. %s.example.com", h, se.Resolution, h)
			}
		}
	}
	for i, ep := range se.Endpoints {
		p := idx("spec.endpoints", i)
		if ep == nil {
			v.add(p, "is empty; give an address")
			continue
		}
		v.workloadEntry(p, ep, endpoint, names)
		if ep.Address == "" {
			continue
		}
		_, ipErr := netip.ParseAddr(ep.Address)
		unix := strings.HasPrefix(ep.Address, "unix://")
		switch se.Resolution {
		case networking.ServiceEntry_STATIC:
			if ipErr != nil && !unix {
				v.add(field(p, "address"), "%q is not an IP address; STATIC resolution needs IPs (use DNS for host names)", ep.Address)
			}
		case networking.ServiceEntry_DNS, networking.ServiceEntry_DNS_ROUND_ROBIN:
			if ipErr != nil && !unix {
				if msg := hostProblem(ep.Address); msg != "" || strings.Contains(ep.Address, "*") {
					v.add(field(p, "address"), "%q is neither an IP address nor a DNS name", ep.Address)
				}
			}
		}
	}
	for i, san := range se.SubjectAltNames {
		if san == "" {
			v.add(idx("spec.subjectAltNames", i), "is empty; give a name or remove it")
		}
	}
	v.exportTo("spec.exportTo", se.ExportTo, true)
}

func protocolOrTCP(p string) string {
	if p == "" {
		return "TCP"
	}
	return p
}

// weUse is where a WorkloadEntry spec appears; each place has its own rules.
type weUse int

const (
	standalone weUse = iota // a WorkloadEntry object
	endpoint                // a ServiceEntry endpoint, whose port names must be the ServiceEntry's
	template                // a WorkloadGroup template, which must not have an address
)

// workloadEntry checks a WorkloadEntry spec where it is used; sePorts are
// the ServiceEntry's port names for an endpoint.
func (v *collector) workloadEntry(path string, we *networking.WorkloadEntry, use weUse, sePorts map[string]bool) {
	if strings.HasPrefix(we.Address, "unix://") {
		if sock := strings.TrimPrefix(we.Address, "unix://"); sock == "" || (!strings.HasPrefix(sock, "@") && (!pathpkg.IsAbs(sock) || strings.HasSuffix(sock, "/"))) {
			v.add(field(path, "address"), "%q is not unix:// followed by an absolute socket path (or @abstract name)", we.Address)
		}
		if len(we.Ports) > 0 {
			v.add(field(path, "ports"), "must be empty for a unix:// address, which has no ports")
		}
	}
	if use == endpoint && we.Address == "" && we.Network == "" {
		v.add(field(path, "address"), "is empty; give the endpoint's address, or its network if it is reached through a gateway")
	}
	if use == standalone {
		if we.Address == "" && we.Network == "" {
			v.add(field(path, "address"), "is empty; give the workload's address, or its network if it is reached through a gateway")
		} else if we.Address == "" {
			v.warn(field(path, "address"), "is empty; the workload is reached only through network %q's gateway", we.Network)
		} else if _, err := netip.ParseAddr(we.Address); we.Address != "" && err != nil && !strings.HasPrefix(we.Address, "unix://") {
			if msg := hostProblem(we.Address); msg != "" || strings.Contains(we.Address, "*") {
				v.add(field(path, "address"), "%q is neither an IP address, a DNS name nor a unix:// path", we.Address)
			}
		}
	}
	for _, name := range sortedKeys(we.Ports) {
		p := key(field(path, "ports"), name)
		v.portName(p, name)
		v.port(p, we.Ports[name])
		if use == endpoint && !sePorts[name] {
			v.add(p, "port %q is not one of the ServiceEntry's spec.ports names", name)
		}
	}
	v.labels(field(path, "labels"), we.Labels)
	if we.ServiceAccount != "" {
		if msg := dnsSubdomain(we.ServiceAccount); msg != "" {
			v.add(field(path, "serviceAccount"), "%q is invalid; %s", we.ServiceAccount, msg)
		}
	}
	if we.Locality != "" {
		if msg := localityProblem(we.Locality); msg != "" || strings.Contains(we.Locality, "*") {
			v.add(field(path, "locality"), "%q is not region[/zone[/subzone]] without wildcards", we.Locality)
		}
	}
}

func (v *collector) workloadGroup(wg *networking.WorkloadGroup) {
	if wg.Metadata != nil {
		v.labels("spec.metadata.labels", wg.Metadata.Labels)
	}
	if wg.Template == nil {
		v.add("spec.template", "is required; give the template of the WorkloadEntries this group creates")
	} else {
		if wg.Template.Address != "" {
			v.warn("spec.template.address", "is ignored; each workload registers its own address")
		}
		v.workloadEntry("spec.template", wg.Template, template, nil)
	}
	pr := wg.Probe
	if pr == nil {
		return
	}
	for _, n := range []struct {
		name string
		val  int32
	}{{"initialDelaySeconds", pr.InitialDelaySeconds}, {"timeoutSeconds", pr.TimeoutSeconds}, {"periodSeconds", pr.PeriodSeconds}, {"successThreshold", pr.SuccessThreshold}, {"failureThreshold", pr.FailureThreshold}} {
		if n.val < 0 {
			v.add(field("spec.probe", n.name), "%d is negative", n.val)
		}
	}
	switch m := pr.HealthCheckMethod.(type) {
	case nil:
		v.add("spec.probe", "has no check; set httpGet, tcpSocket, grpc or exec")
	case *networking.ReadinessProbe_HttpGet:
		if m.HttpGet == nil {
			v.add("spec.probe.httpGet", "is empty; give at least the port")
			break
		}
		v.port("spec.probe.httpGet.port", m.HttpGet.Port)
		if s := m.HttpGet.Scheme; s != "" && s != "HTTP" && s != "HTTPS" {
			v.add("spec.probe.httpGet.scheme", "%q is not HTTP or HTTPS", s)
		}
	case *networking.ReadinessProbe_TcpSocket:
		if m.TcpSocket == nil {
			v.add("spec.probe.tcpSocket", "is empty; give at least the port")
			break
		}
		v.port("spec.probe.tcpSocket.port", m.TcpSocket.Port)
	case *networking.ReadinessProbe_Grpc:
		if m.Grpc == nil {
			v.add("spec.probe.grpc", "is empty; give at least the port")
			break
		}
		v.port("spec.probe.grpc.port", m.Grpc.Port)
	case *networking.ReadinessProbe_Exec:
		if m.Exec == nil || len(m.Exec.Command) == 0 {
			v.add("spec.probe.exec.command", "is empty; give the command to run")
		}
	}
}
