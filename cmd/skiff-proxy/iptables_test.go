package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestIptablesDryRun: `skiff-proxy iptables` takes istio-iptables' flags
// (short and long) and, with --dry-run, prints the commands it would run.
func TestIptablesDryRun(t *testing.T) {
	var out, errb bytes.Buffer
	code := runIptables([]string{"--envoy-port", "15001", "-z", "15006", "--proxy-uid", "1337", "-i", "*",
		"--istio-inbound-ports", "*", "-d", "15090,15021,15020", "-o", "3306", "--dry-run"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{
		"iptables -t nat -A PREROUTING -p tcp -j ISTIO_INBOUND\n",
		"iptables -t nat -A ISTIO_INBOUND -p tcp -m multiport --dports 15090,15021,15020 -j RETURN\n",
		"iptables -t nat -A ISTIO_OUTPUT -p tcp --dport 3306 -j RETURN\n",
		"iptables -t nat -A ISTIO_OUTPUT -j ISTIO_REDIRECT\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestIptablesBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-m", "TPROXY", "-n"}, "supports only REDIRECT"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--istio-inbound-ports", "x", "-n"}, "--istio-inbound-ports (-b)"},
	} {
		var out, errb bytes.Buffer
		if code := runIptables(tc.args, &out, &errb); code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q", tc.args, code, errb.String(), tc.want)
		}
	}
}
