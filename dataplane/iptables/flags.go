package iptables

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// Flags are istio-iptables' command-line flags, each under its short
// letter and its long name as Istio spells them.
type Flags struct {
	proxyPort, inboundCapturePort, tunnelPort string
	uid, gid, mode                            string
	inboundPorts, inboundExclude              string
	outboundCIDRs, outboundExclude            string
	outboundPorts, outboundPortsExclude       string
	redirectDNS, captureAllDNS                bool

	// DryRun prints the commands instead of running them (-n, --dry-run).
	DryRun bool
	// Cleanup removes the chains and installs nothing (--cleanup-only,
	// also --cleanup).
	Cleanup bool
}

// RegisterFlags adds istio-iptables' flags to fs.
func RegisterFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{}
	str := func(p *string, short, long, def, usage string) {
		fs.StringVar(p, short, def, usage+" (also --"+long+")")
		fs.StringVar(p, long, def, usage)
	}
	str(&f.proxyPort, "p", "envoy-port", "15001", "port all outbound TCP traffic is redirected to")
	str(&f.inboundCapturePort, "z", "inbound-capture-port", "15006", "port all inbound TCP traffic is redirected to")
	str(&f.tunnelPort, "e", "inbound-tunnel-port", "15008", "HBONE tunnel port, never redirected")
	str(&f.uid, "u", "proxy-uid", "1337", "comma-separated UIDs whose traffic is never redirected (the proxy's)")
	str(&f.gid, "g", "proxy-gid", "", "comma-separated GIDs whose traffic is never redirected (default: the -u values)")
	str(&f.mode, "m", "istio-inbound-interception-mode", "REDIRECT", "inbound interception mode; only REDIRECT is supported")
	str(&f.inboundPorts, "b", "istio-inbound-ports", "", "comma-separated inbound ports to redirect, '*' for all, empty for none")
	str(&f.inboundExclude, "d", "istio-local-exclude-ports", "", "comma-separated inbound ports not redirected when -b is '*'")
	str(&f.outboundCIDRs, "i", "istio-service-cidr", "", "comma-separated destination CIDRs to redirect, '*' for all, empty for none")
	str(&f.outboundExclude, "x", "istio-service-exclude-cidr", "", "comma-separated destination CIDRs never redirected")
	str(&f.outboundPorts, "q", "istio-outbound-ports", "", "comma-separated outbound ports always redirected")
	str(&f.outboundPortsExclude, "o", "istio-local-outbound-ports-exclude", "", "comma-separated outbound ports never redirected")
	fs.BoolVar(&f.redirectDNS, "redirect-dns", false, "redirect DNS for the nameservers in /etc/resolv.conf to the proxy's DNS port 15053")
	fs.BoolVar(&f.captureAllDNS, "capture-all-dns", false, "with --redirect-dns, redirect DNS to any server")
	fs.BoolVar(&f.DryRun, "n", false, "print the iptables commands instead of running them (also --dry-run)")
	fs.BoolVar(&f.DryRun, "dry-run", false, "print the iptables commands instead of running them")
	fs.BoolVar(&f.Cleanup, "cleanup-only", false, "remove the ISTIO_* chains and their jumps, install nothing")
	fs.BoolVar(&f.Cleanup, "cleanup", false, "same as --cleanup-only")
	// Istio's injector passes this to the init container; Skiff logs only errors.
	fs.String("log_output_level", "", "accepted for istio-iptables compatibility; ignored")
	return f
}

// Config turns the parsed flags into a Config. resolvConf supplies the
// nameservers for --redirect-dns without --capture-all-dns; it is read
// only then and may be nil otherwise.
func (f *Flags) Config(resolvConf io.Reader) (Config, error) {
	c := Config{InboundAll: f.inboundPorts == "*", OutboundAll: f.outboundCIDRs == "*"}
	var err error
	if c.ProxyPort, err = parsePort("--envoy-port (-p)", f.proxyPort); err != nil {
		return c, err
	}
	if c.InboundCapturePort, err = parsePort("--inbound-capture-port (-z)", f.inboundCapturePort); err != nil {
		return c, err
	}
	if c.InboundTunnelPort, err = parsePort("--inbound-tunnel-port (-e)", f.tunnelPort); err != nil {
		return c, err
	}
	if !strings.EqualFold(f.mode, "REDIRECT") {
		return c, fmt.Errorf("--istio-inbound-interception-mode (-m) %q: skiff-proxy supports only REDIRECT; remove the flag or the sidecar.istio.io/interceptionMode annotation", f.mode)
	}
	if c.ProxyUIDs, err = parseIDs("--proxy-uid (-u)", f.uid); err != nil {
		return c, err
	}
	gid := f.gid
	if gid == "" {
		gid = f.uid
	}
	if c.ProxyGIDs, err = parseIDs("--proxy-gid (-g)", gid); err != nil {
		return c, err
	}
	if !c.InboundAll {
		if c.InboundPorts, err = parsePorts("--istio-inbound-ports (-b)", f.inboundPorts); err != nil {
			return c, err
		}
	}
	if c.InboundExcludePorts, err = parsePorts("--istio-local-exclude-ports (-d)", f.inboundExclude); err != nil {
		return c, err
	}
	if !c.OutboundAll {
		if c.OutboundCIDRs, err = parseCIDRs("--istio-service-cidr (-i)", f.outboundCIDRs); err != nil {
			return c, err
		}
	}
	if f.outboundExclude == "*" {
		return c, fmt.Errorf("--istio-service-exclude-cidr (-x) '*': a wildcard exclusion would capture nothing; use -i \"\" instead")
	}
	if c.OutboundExcludeCIDRs, err = parseCIDRs("--istio-service-exclude-cidr (-x)", f.outboundExclude); err != nil {
		return c, err
	}
	if c.OutboundPorts, err = parsePorts("--istio-outbound-ports (-q)", f.outboundPorts); err != nil {
		return c, err
	}
	if c.OutboundExcludePorts, err = parsePorts("--istio-local-outbound-ports-exclude (-o)", f.outboundPortsExclude); err != nil {
		return c, err
	}
	c.RedirectDNS, c.CaptureAllDNS = f.redirectDNS, f.captureAllDNS
	if c.RedirectDNS && !c.CaptureAllDNS && resolvConf != nil {
		c.DNSServers = Nameservers(resolvConf)
	}
	return c, c.Validate()
}

// Nameservers returns the IPv4 nameserver lines of a resolv.conf, the
// servers whose DNS traffic --redirect-dns captures.
func Nameservers(r io.Reader) []netip.Addr {
	var out []netip.Addr
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "nameserver" {
			if a, err := netip.ParseAddr(f[1]); err == nil && a.Is4() {
				out = append(out, a)
			}
		}
	}
	return out
}

func split(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func parsePort(flagName, s string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%s %q: want a port number between 1 and 65535", flagName, s)
	}
	return uint16(n), nil
}

func parsePorts(flagName, s string) ([]uint16, error) {
	var out []uint16
	for _, v := range split(s) {
		p, err := parsePort(flagName, v)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

func parseIDs(flagName, s string) ([]uint32, error) {
	var out []uint32
	for _, v := range split(s) {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%s %q: want numeric IDs separated by commas, e.g. 1337", flagName, v)
		}
		out = append(out, uint32(n))
	}
	return out, nil
}

func parseCIDRs(flagName, s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range split(s) {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return nil, fmt.Errorf("%s %q: want CIDRs such as 10.0.0.0/8 separated by commas, or '*'", flagName, v)
		}
		out = append(out, p)
	}
	return out, nil
}

// Flags renders c as the istio-iptables flags that reproduce it, e.g. to
// run `skiff-proxy iptables` inside a pod's namespace. DNS servers are not
// flags: with RedirectDNS and not CaptureAllDNS the command reads them
// from the pod's /etc/resolv.conf.
func (c Config) Flags() []string {
	out := []string{
		"-p", port(c.ProxyPort), "-z", port(c.InboundCapturePort), "-e", port(c.InboundTunnelPort),
		"-u", joinIDs(c.ProxyUIDs), "-g", joinIDs(c.ProxyGIDs), "-m", "REDIRECT",
	}
	add := func(flag, v string) {
		if v != "" {
			out = append(out, flag, v)
		}
	}
	if c.InboundAll {
		add("-b", "*")
	} else {
		add("-b", joinPorts(c.InboundPorts))
	}
	add("-d", joinPorts(c.InboundExcludePorts))
	if c.OutboundAll {
		add("-i", "*")
	} else {
		add("-i", joinPrefixes(c.OutboundCIDRs))
	}
	add("-x", joinPrefixes(c.OutboundExcludeCIDRs))
	add("-q", joinPorts(c.OutboundPorts))
	add("-o", joinPorts(c.OutboundExcludePorts))
	if c.RedirectDNS {
		out = append(out, "--redirect-dns")
	}
	if c.CaptureAllDNS {
		out = append(out, "--capture-all-dns")
	}
	return out
}

func joinPorts(ps []uint16) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = port(p)
	}
	return strings.Join(s, ",")
}

func joinIDs(ids []uint32) string {
	s := make([]string, len(ids))
	for i, v := range ids {
		s[i] = id(v)
	}
	return strings.Join(s, ",")
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
