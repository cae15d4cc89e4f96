package iptables

import (
	"flag"
	"net/netip"
	"strings"
	"testing"

	"github.com/skiff-mesh/skiff/internal/testing/golden"
)

// saveFormat renders commands as iptables-save groups them ("* table",
// rules, COMMIT), the form Istio's capture tests pin.
func saveFormat(cmds []Command) string {
	var b strings.Builder
	table := ""
	for _, c := range cmds {
		if c.Table != table {
			if table != "" {
				b.WriteString("COMMIT\n")
			}
			table = c.Table
			b.WriteString("* " + table + "\n")
		}
		b.WriteString(strings.Join(c.Args, " ") + "\n")
	}
	if table != "" {
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

func configFromArgs(t *testing.T, args []string, resolv string) Config {
	t.Helper()
	fs := flag.NewFlagSet("iptables", flag.ContinueOnError)
	f := RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	c, err := f.Config(strings.NewReader(resolv))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// istioHead is what every istio-iptables run starts with.
const istioHead = `* nat
-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_IN_REDIRECT
-N ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
`

// istioOwners1337 is Istio's loopback and UID/GID 1337 block.
const istioOwners1337 = `-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
`

// TestBuildMatchesIstio compares the IPv4 rules with the ones Istio's own
// capture tests pin (tools/istio-iptables/pkg/capture/testdata) for the
// same flags.
func TestBuildMatchesIstio(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		resolv string
		want   string
	}{
		{
			name: "empty",
			want: istioHead + "-A OUTPUT -j ISTIO_OUTPUT\n" + istioOwners1337 + "COMMIT\n",
		},
		{
			name: "inbound-ports-wildcard",
			args: []string{"-b", "*"},
			want: istioHead + `-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -j ISTIO_OUTPUT
` + istioOwners1337 + "COMMIT\n",
		},
		{
			name: "inbound-wildcard-exclude",
			args: []string{"-b", "*", "-d", "22,80,443"},
			want: istioHead + `-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp -m multiport --dports 22,80,443 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -j ISTIO_OUTPUT
` + istioOwners1337 + "COMMIT\n",
		},
		{
			name: "inbound-ports-include",
			args: []string{"--istio-inbound-ports", "32000,31000"},
			want: istioHead + `-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 32000 -j ISTIO_IN_REDIRECT
-A ISTIO_INBOUND -p tcp --dport 31000 -j ISTIO_IN_REDIRECT
-A OUTPUT -j ISTIO_OUTPUT
` + istioOwners1337 + "COMMIT\n",
		},
		{
			name: "outbound-ports-exclude-single",
			args: []string{"-o", "22"},
			want: istioHead + `-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -p tcp --dport 22 -j RETURN
-A ISTIO_OUTPUT -p udp --dport 22 -j RETURN
` + istioOwners1337 + "COMMIT\n",
		},
		{
			name: "outbound-ports-exclude",
			args: []string{"--istio-local-outbound-ports-exclude", "22,80,443"},
			want: istioHead + `-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -p tcp -m multiport --dports 22,80,443 -j RETURN
-A ISTIO_OUTPUT -p udp -m multiport --dports 22,80,443 -j RETURN
` + istioOwners1337 + "COMMIT\n",
		},
		{
			name: "outbound-ports-include",
			args: []string{"-q", "32000,31000"},
			want: istioHead + "-A OUTPUT -j ISTIO_OUTPUT\n" + istioOwners1337 + `-A ISTIO_OUTPUT -p tcp --dport 32000 -j ISTIO_REDIRECT
-A ISTIO_OUTPUT -p tcp --dport 31000 -j ISTIO_REDIRECT
COMMIT
`,
		},
		{
			name: "ip-range",
			args: []string{"-i", "9.9.0.0/16", "-x", "1.1.0.0/16"},
			want: istioHead + "-A OUTPUT -j ISTIO_OUTPUT\n" + istioOwners1337 + `-A ISTIO_OUTPUT -d 1.1.0.0/16 -j RETURN
-A ISTIO_OUTPUT -d 9.9.0.0/16 -j ISTIO_REDIRECT
-A ISTIO_OUTPUT -j RETURN
COMMIT
`,
		},
		{
			name:   "dns-uid-gid",
			args:   []string{"-u", "3,4", "-g", "1,2", "--redirect-dns"},
			resolv: "search default.svc.cluster.local\nnameserver 127.0.0.53\nnameserver ::1\n",
			want: `* nat
-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_IN_REDIRECT
-N ISTIO_OUTPUT
-N ISTIO_OUTPUT_DNS
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp -m multiport ! --dports 53,15008 -m owner --uid-owner 3 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -p tcp ! --dport 53 -m owner ! --uid-owner 3 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 3 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp -m multiport ! --dports 53,15008 -m owner --uid-owner 4 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -p tcp ! --dport 53 -m owner ! --uid-owner 4 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 4 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -p tcp ! --dport 53 -m owner ! --gid-owner 1 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 2 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -p tcp ! --dport 53 -m owner ! --gid-owner 2 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 2 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS
-A ISTIO_OUTPUT_DNS -p tcp --dport 53 -d 127.0.0.53/32 -j REDIRECT --to-ports 15053
-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --uid-owner 3 -j RETURN
-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --uid-owner 4 -j RETURN
-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --gid-owner 1 -j RETURN
-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --gid-owner 2 -j RETURN
-A ISTIO_OUTPUT_DNS -p udp --dport 53 -d 127.0.0.53/32 -j REDIRECT --to-port 15053
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
COMMIT
* raw
-N ISTIO_OUTPUT_DNS
-N ISTIO_INBOUND
-A OUTPUT -j ISTIO_OUTPUT_DNS
-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --uid-owner 3 -j CT --zone 1
-A ISTIO_OUTPUT_DNS -p udp --sport 15053 -m owner --uid-owner 3 -j CT --zone 2
-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --uid-owner 4 -j CT --zone 1
-A ISTIO_OUTPUT_DNS -p udp --sport 15053 -m owner --uid-owner 4 -j CT --zone 2
-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --gid-owner 1 -j CT --zone 1
-A ISTIO_OUTPUT_DNS -p udp --sport 15053 -m owner --gid-owner 1 -j CT --zone 2
-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --gid-owner 2 -j CT --zone 1
-A ISTIO_OUTPUT_DNS -p udp --sport 15053 -m owner --gid-owner 2 -j CT --zone 2
-A PREROUTING -j ISTIO_INBOUND
-A ISTIO_OUTPUT_DNS -p udp --dport 53 -d 127.0.0.53/32 -j CT --zone 2
-A ISTIO_INBOUND -p udp --sport 53 -s 127.0.0.53/32 -j CT --zone 1
COMMIT
`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmds, err := Build(configFromArgs(t, tc.args, tc.resolv))
			if err != nil {
				t.Fatal(err)
			}
			if got := saveFormat(cmds); got != tc.want {
				t.Errorf("rules differ from Istio's for %v\ngot:\n%s\nwant:\n%s", tc.args, got, tc.want)
			}
		})
	}
}

// TestSidecarConfigGolden pins the --dry-run output for the flags Istio's
// injector passes to a default sidecar, and checks the flag form and
// SidecarConfig agree.
func TestSidecarConfigGolden(t *testing.T) {
	fromFlags := configFromArgs(t, []string{"-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
		"-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020"}, "")
	for name, c := range map[string]Config{"flags": fromFlags, "SidecarConfig": SidecarConfig()} {
		cmds, err := Build(c)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, cmd := range cmds {
			b.WriteString(cmd.String() + "\n")
		}
		t.Run(name, func(t *testing.T) { golden.Compare(t, "testdata/sidecar.golden", []byte(b.String())) })
	}
}

// TestLoopbackInclude: naming loopback in -i drops the "apps talking over
// lo are left alone" rules, as Istio does, so loopback can be captured.
func TestLoopbackInclude(t *testing.T) {
	cmds, err := Build(configFromArgs(t, []string{"-i", "127.0.0.0/8,10.0.0.0/8"}, ""))
	if err != nil {
		t.Fatal(err)
	}
	out := saveFormat(cmds)
	if strings.Contains(out, "-o lo -m owner ! --uid-owner") {
		t.Errorf("loopback named in -i but the lo RETURN rule is still there:\n%s", out)
	}
	for _, want := range []string{"-A ISTIO_OUTPUT -d 127.0.0.0/8 -j ISTIO_REDIRECT", "-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}

func TestMultiportSplitsAt15(t *testing.T) {
	var ports []string
	for p := 1000; p < 1017; p++ {
		ports = append(ports, itoa(p))
	}
	cmds, err := Build(configFromArgs(t, []string{"-b", "*", "-d", strings.Join(ports, ",")}, ""))
	if err != nil {
		t.Fatal(err)
	}
	out := saveFormat(cmds)
	for _, want := range []string{
		"-A ISTIO_INBOUND -p tcp -m multiport --dports " + strings.Join(ports[:15], ",") + " -j RETURN\n",
		"-A ISTIO_INBOUND -p tcp -m multiport --dports " + strings.Join(ports[15:], ",") + " -j RETURN\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}

func itoa(n int) string { return port(uint16(n)) }

func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-m", "TPROXY"}, "supports only REDIRECT"},
		{[]string{"-p", "0"}, "--envoy-port (-p)"},
		{[]string{"-b", "80,http"}, `--istio-inbound-ports (-b) "http"`},
		{[]string{"-i", "10.0.0.0"}, `--istio-service-cidr (-i) "10.0.0.0"`},
		{[]string{"-i", "fd00::/8"}, "only IPv4"},
		{[]string{"-x", "*"}, "--istio-service-exclude-cidr (-x) '*'"},
		{[]string{"-u", "istio-proxy"}, "--proxy-uid (-u)"},
	} {
		fs := flag.NewFlagSet("iptables", flag.ContinueOnError)
		f := RegisterFlags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		_, err := f.Config(nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one containing %q", tc.args, err, tc.want)
		}
	}
}

func TestCaptureAllDNSIgnoresResolvConf(t *testing.T) {
	cmds, err := Build(configFromArgs(t, []string{"--redirect-dns", "--capture-all-dns", "-i", "*"}, "nameserver 10.0.0.10\n"))
	if err != nil {
		t.Fatal(err)
	}
	out := saveFormat(cmds)
	for _, want := range []string{
		"-A ISTIO_OUTPUT_DNS -p tcp --dport 53 -j REDIRECT --to-ports 15053\n",
		"-A ISTIO_OUTPUT_DNS -p udp --dport 53 -j REDIRECT --to-port 15053\n",
		"-A ISTIO_INBOUND -p udp --sport 53 -j CT --zone 1\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "10.0.0.10") {
		t.Errorf("--capture-all-dns still names the resolv.conf server:\n%s", out)
	}
}

// TestFlagsRoundTrip: Config.Flags gives back the same rules when parsed,
// so a Config can be handed to `skiff-proxy iptables` in a pod.
func TestFlagsRoundTrip(t *testing.T) {
	c := SidecarConfig()
	c.OutboundExcludeCIDRs = []netip.Prefix{netip.MustParsePrefix("198.18.0.1/32")}
	c.OutboundExcludePorts = []uint16{3306, 5432}
	c.OutboundPorts = []uint16{9080}
	c.RedirectDNS = true
	c.CaptureAllDNS = true
	partial := DefaultConfig()
	partial.InboundPorts = []uint16{9080}
	partial.OutboundCIDRs = []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16")}
	for _, c := range []Config{c, partial, DefaultConfig()} {
		want, err := Build(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Build(configFromArgs(t, c.Flags(), ""))
		if err != nil {
			t.Fatal(err)
		}
		if saveFormat(got) != saveFormat(want) {
			t.Errorf("flags %v give different rules:\n%s\nwant:\n%s", c.Flags(), saveFormat(got), saveFormat(want))
		}
	}
}
