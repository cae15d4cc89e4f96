// Package iptables builds and installs the traffic redirection that Istio's
// init container (istio-iptables, `pilot-agent istio-iptables`) installs in
// a pod: outbound TCP to the proxy's 15001, inbound TCP to 15006, the
// proxy's own UID/GID and loopback left alone, optional DNS capture to
// 15053. Build is a pure function from a Config to the ordered iptables
// commands, so the rules can be checked without root; Apply and Cleanup
// run them with the iptables binary in the caller's network namespace.
//
// Only IPv4 and Istio's REDIRECT inbound mode are supported: the local mesh
// gives pods IPv4 addresses only, and TPROXY needs policy routing that a
// REDIRECT capture does not.
package iptables

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Chain names, as Istio names them so that `iptables -t nat -S` reads the
// same in a Skiff pod as in an Istio pod.
const (
	ChainInbound    = "ISTIO_INBOUND"
	ChainRedirect   = "ISTIO_REDIRECT"
	ChainInRedirect = "ISTIO_IN_REDIRECT"
	ChainOutput     = "ISTIO_OUTPUT"
	ChainOutputDNS  = "ISTIO_OUTPUT_DNS"
)

// chainPrefix marks every chain Build creates; Cleanup removes by it.
const chainPrefix = "ISTIO_"

// DNSPort is where skiff-proxy's DNS proxy listens (Istio's 15053).
const DNSPort = 15053

// maxMultiport is the iptables multiport match's limit of ports per rule.
const maxMultiport = 15

// Config is istio-iptables' configuration, one field per flag.
type Config struct {
	ProxyPort          uint16   // -p: outbound capture port (15001)
	InboundCapturePort uint16   // -z: inbound capture port (15006)
	InboundTunnelPort  uint16   // -e: HBONE tunnel port, never captured (15008)
	ProxyUIDs          []uint32 // -u: owners whose traffic is never captured (1337)
	ProxyGIDs          []uint32 // -g: groups whose traffic is never captured (1337)

	// InboundAll captures every inbound port (-b '*') except
	// InboundExcludePorts (-d); otherwise only InboundPorts are captured.
	InboundAll          bool
	InboundPorts        []uint16
	InboundExcludePorts []uint16

	// OutboundAll captures traffic to every destination (-i '*'),
	// otherwise only to OutboundCIDRs; OutboundExcludeCIDRs (-x) are never
	// captured. Loopback is never captured unless a CIDR names it.
	OutboundAll          bool
	OutboundCIDRs        []netip.Prefix
	OutboundExcludeCIDRs []netip.Prefix
	OutboundPorts        []uint16 // -q: ports captured whatever the destination
	OutboundExcludePorts []uint16 // -o: ports never captured (TCP and UDP)

	// RedirectDNS sends DNS (TCP and UDP port 53) for DNSServers, or for
	// any server when CaptureAllDNS, to the proxy's DNS port.
	RedirectDNS   bool
	CaptureAllDNS bool
	DNSServers    []netip.Addr
}

// DefaultConfig is istio-iptables with no flags: the capture ports and the
// proxy's UID and GID set, nothing captured.
func DefaultConfig() Config {
	return Config{
		ProxyPort: 15001, InboundCapturePort: 15006, InboundTunnelPort: 15008,
		ProxyUIDs: []uint32{1337}, ProxyGIDs: []uint32{1337},
	}
}

// SidecarConfig is what Istio's injector passes to istio-iptables for a
// default sidecar (`-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x ""
// -b '*' -d 15090,15021,15020`): everything captured both ways except the
// proxy's own metrics and health ports.
func SidecarConfig() Config {
	c := DefaultConfig()
	c.InboundAll = true
	c.InboundExcludePorts = []uint16{15090, 15021, 15020}
	c.OutboundAll = true
	return c
}

// Command is one iptables invocation: iptables -t Table Args...
type Command struct {
	Table string
	Args  []string
}

// String renders the command as a shell line, as --dry-run prints it.
func (c Command) String() string {
	return "iptables -t " + c.Table + " " + strings.Join(c.Args, " ")
}

// Validate reports the first setting istio-iptables would refuse, or that
// Skiff does not support, naming its flag.
func (c Config) Validate() error {
	if c.ProxyPort == 0 {
		return errors.New("--envoy-port (-p) is 0: give the proxy's outbound capture port, usually 15001")
	}
	if c.InboundCapturePort == 0 {
		return errors.New("--inbound-capture-port (-z) is 0: give the proxy's inbound capture port, usually 15006")
	}
	if c.InboundTunnelPort == 0 {
		return errors.New("--inbound-tunnel-port (-e) is 0: give the HBONE port, usually 15008")
	}
	for _, p := range c.OutboundCIDRs {
		if !p.Addr().Is4() {
			return fmt.Errorf("--istio-service-cidr (-i) %s: only IPv4 is supported; drop the IPv6 ranges", p)
		}
	}
	for _, p := range c.OutboundExcludeCIDRs {
		if !p.Addr().Is4() {
			return fmt.Errorf("--istio-service-exclude-cidr (-x) %s: only IPv4 is supported; drop the IPv6 ranges", p)
		}
	}
	for _, a := range c.DNSServers {
		if !a.Is4() {
			return fmt.Errorf("DNS server %s: only IPv4 is supported", a)
		}
	}
	return nil
}

// Build returns the commands that install c, in order, as istio-iptables
// issues them: chains first, then the rules of each chain.
func Build(c Config) ([]Command, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	b := &builder{}
	nat := func(args ...string) { b.add("nat", args...) }

	nat("-N", ChainInbound)
	nat("-N", ChainRedirect)
	nat("-N", ChainInRedirect)
	nat("-N", ChainOutput)
	if c.RedirectDNS {
		nat("-N", ChainOutputDNS)
	}
	// The tunnel port carries already-proxied HBONE traffic; capturing it
	// would loop it back into the proxy.
	nat("-A", ChainInbound, "-p", "tcp", "--dport", port(c.InboundTunnelPort), "-j", "RETURN")
	nat("-A", ChainRedirect, "-p", "tcp", "-j", "REDIRECT", "--to-ports", port(c.ProxyPort))
	nat("-A", ChainInRedirect, "-p", "tcp", "-j", "REDIRECT", "--to-ports", port(c.InboundCapturePort))

	if c.InboundAll || len(c.InboundPorts) > 0 {
		nat("-A", "PREROUTING", "-p", "tcp", "-j", ChainInbound)
		if c.InboundAll {
			for _, ports := range multiport(c.InboundExcludePorts) {
				nat(append(append([]string{"-A", ChainInbound, "-p", "tcp"}, ports...), "-j", "RETURN")...)
			}
			nat("-A", ChainInbound, "-p", "tcp", "-j", ChainInRedirect)
		} else {
			for _, p := range c.InboundPorts {
				nat("-A", ChainInbound, "-p", "tcp", "--dport", port(p), "-j", ChainInRedirect)
			}
		}
	}

	nat("-A", "OUTPUT", "-j", ChainOutput)
	for _, ports := range multiport(c.OutboundExcludePorts) {
		nat(append(append([]string{"-A", ChainOutput, "-p", "tcp"}, ports...), "-j", "RETURN")...)
		nat(append(append([]string{"-A", ChainOutput, "-p", "udp"}, ports...), "-j", "RETURN")...)
	}
	// The proxy's inbound passthrough connects to the app from 127.0.0.6,
	// so those connections go straight to the app.
	nat("-A", ChainOutput, "-o", "lo", "-s", "127.0.0.6/32", "-j", "RETURN")

	loopbackIncluded := false
	for _, p := range c.OutboundCIDRs {
		if p.Addr().IsLoopback() {
			loopbackIncluded = true
		}
	}
	owners := func(match string, ids []uint32, dnsOnRedirect bool) {
		for _, id := range ids {
			v := strconv.FormatUint(uint64(id), 10)
			// The proxy calling a pod address of its own pod over lo is an
			// app calling itself through a service: send it to inbound.
			redirect := []string{"-A", ChainOutput, "-o", "lo", "!", "-d", "127.0.0.1/32", "-p", "tcp"}
			if dnsOnRedirect {
				redirect = append(redirect, "-m", "multiport", "!", "--dports", "53,"+port(c.InboundTunnelPort))
			} else {
				redirect = append(redirect, "!", "--dport", port(c.InboundTunnelPort))
			}
			nat(append(redirect, "-m", "owner", match, v, "-j", ChainInRedirect)...)
			// Anyone else talking over lo (app to itself by pod address)
			// is left alone, unless the user asked for loopback capture.
			if !loopbackIncluded {
				if c.RedirectDNS {
					nat("-A", ChainOutput, "-o", "lo", "-p", "tcp", "!", "--dport", "53", "-m", "owner", "!", match, v, "-j", "RETURN")
				} else {
					nat("-A", ChainOutput, "-o", "lo", "-m", "owner", "!", match, v, "-j", "RETURN")
				}
			}
			// The proxy's own upstream connections must not loop back.
			nat("-A", ChainOutput, "-m", "owner", match, v, "-j", "RETURN")
		}
	}
	// Istio leaves port 53 out of the GID redirect rule; kept for parity.
	owners("--uid-owner", c.ProxyUIDs, c.RedirectDNS)
	owners("--gid-owner", c.ProxyGIDs, false)

	if c.RedirectDNS {
		b.dns(c)
	}

	// Apps and proxy-aware clients that call 127.0.0.1 mean it.
	nat("-A", ChainOutput, "-d", "127.0.0.1/32", "-j", "RETURN")
	for _, p := range c.OutboundExcludeCIDRs {
		nat("-A", ChainOutput, "-d", p.Masked().String(), "-j", "RETURN")
	}
	for _, p := range c.OutboundPorts {
		nat("-A", ChainOutput, "-p", "tcp", "--dport", port(p), "-j", ChainRedirect)
	}
	if c.OutboundAll {
		nat("-A", ChainOutput, "-j", ChainRedirect)
	} else if len(c.OutboundCIDRs) > 0 {
		for _, p := range c.OutboundCIDRs {
			nat("-A", ChainOutput, "-d", p.Masked().String(), "-j", ChainRedirect)
		}
		nat("-A", ChainOutput, "-j", "RETURN")
	}
	return append(b.nat, b.raw...), nil
}

// dns adds Istio's DNS capture: TCP and UDP port 53 to the proxy's DNS
// port, except the proxy's own lookups, and the raw-table conntrack zones
// that keep the app↔proxy and proxy↔server UDP flows apart.
func (b *builder) dns(c Config) {
	nat := func(args ...string) { b.add("nat", args...) }
	dnsPort := port(DNSPort)
	nat("-A", ChainOutput, "-j", ChainOutputDNS)
	servers := []string{""}
	if !c.CaptureAllDNS {
		servers = servers[:0]
		for _, s := range c.DNSServers {
			servers = append(servers, s.String()+"/32")
		}
	}
	dst := func(args []string, s string) []string {
		if s == "" {
			return args
		}
		return append(args, "-d", s)
	}
	for _, s := range servers {
		nat(append(dst([]string{"-A", ChainOutputDNS, "-p", "tcp", "--dport", "53"}, s), "-j", "REDIRECT", "--to-ports", dnsPort)...)
	}
	for _, u := range c.ProxyUIDs {
		nat("-A", ChainOutputDNS, "-p", "udp", "--dport", "53", "-m", "owner", "--uid-owner", id(u), "-j", "RETURN")
	}
	for _, g := range c.ProxyGIDs {
		nat("-A", ChainOutputDNS, "-p", "udp", "--dport", "53", "-m", "owner", "--gid-owner", id(g), "-j", "RETURN")
	}
	for _, s := range servers {
		nat(append(dst([]string{"-A", ChainOutputDNS, "-p", "udp", "--dport", "53"}, s), "-j", "REDIRECT", "--to-port", dnsPort)...)
	}

	raw := func(args ...string) { b.add("raw", args...) }
	raw("-N", ChainOutputDNS)
	raw("-N", ChainInbound)
	raw("-A", "OUTPUT", "-j", ChainOutputDNS)
	zones := func(match string, v string) {
		raw("-A", ChainOutputDNS, "-p", "udp", "--dport", "53", "-m", "owner", match, v, "-j", "CT", "--zone", "1")
		raw("-A", ChainOutputDNS, "-p", "udp", "--sport", dnsPort, "-m", "owner", match, v, "-j", "CT", "--zone", "2")
	}
	for _, u := range c.ProxyUIDs {
		zones("--uid-owner", id(u))
	}
	for _, g := range c.ProxyGIDs {
		zones("--gid-owner", id(g))
	}
	raw("-A", "PREROUTING", "-j", ChainInbound)
	for _, s := range servers {
		raw(append(dst([]string{"-A", ChainOutputDNS, "-p", "udp", "--dport", "53"}, s), "-j", "CT", "--zone", "2")...)
		src := []string{"-A", ChainInbound, "-p", "udp", "--sport", "53"}
		if s != "" {
			src = append(src, "-s", s)
		}
		raw(append(src, "-j", "CT", "--zone", "1")...)
	}
}

// builder keeps each table's commands apart, as istio-iptables does: all
// nat commands run before any raw one.
type builder struct{ nat, raw []Command }

func (b *builder) add(table string, args ...string) {
	c := Command{Table: table, Args: args}
	if table == "raw" {
		b.raw = append(b.raw, c)
	} else {
		b.nat = append(b.nat, c)
	}
}

func port(p uint16) string { return strconv.Itoa(int(p)) }

func id(v uint32) string { return strconv.FormatUint(uint64(v), 10) }

// multiport renders a port list as match arguments: one --dport for a
// single port, multiport groups of at most 15 otherwise.
func multiport(ports []uint16) [][]string {
	if len(ports) == 1 {
		return [][]string{{"--dport", port(ports[0])}}
	}
	var out [][]string
	for len(ports) > 0 {
		n := min(len(ports), maxMultiport)
		s := make([]string, n)
		for i, p := range ports[:n] {
			s[i] = port(p)
		}
		out = append(out, []string{"-m", "multiport", "--dports", strings.Join(s, ",")})
		ports = ports[n:]
	}
	return out
}
