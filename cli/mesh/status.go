package mesh

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// Status is `skiff status`: the pods, their readiness and restarts, and
// their proxies' sync state with skiffd.
func Status(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("status", "skiff status [-o json] [flags]", stderr)
	stateDir := stateDirFlag(fs)
	output := fs.String("o", "", "output format: json (default: a table)")
	pos, err := parse(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) > 0 || (*output != "" && *output != "json") {
		fmt.Fprintln(stderr, "skiff status: takes no arguments; -o json for JSON: skiff status [-o json]")
		return 2
	}
	c, _, err := client(*stateDir)
	if err != nil {
		fmt.Fprintln(stderr, "skiff status:", err)
		return 1
	}
	rep, err := c.Status(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "skiff status:", err)
		return 1
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tPOD\tREADY\tSTATUS\tRESTARTS\tIP\tPROXY\tADMIN\tIDENTITY\tAGE")
	for _, p := range rep.Pods {
		admin := p.Admin
		if admin == "" {
			admin = "-"
		}
		identity := p.Identity
		if identity == "" {
			identity = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", p.Namespace, p.Name, p.Ready, p.Status, p.Restarts, p.IP, p.Proxy, admin, identity, age(p.Age))
	}
	tw.Flush()
	fmt.Fprintln(stdout)
	if rep.ProductPageURL != "" {
		fmt.Fprintln(stdout, "product page:", rep.ProductPageURL)
	}
	fmt.Fprintln(stdout, "ingress:     ", rep.GatewayURL)
	for _, g := range rep.Gateways {
		fmt.Fprintf(stdout, "gateway:      %s port %d at %s\n", g.Gateway, g.Port, g.URL)
	}
	fmt.Fprintf(stdout, "skiffd:       http://%s/debug/syncz\n", rep.MonitoringAddr)
	if rep.SecureAddr != "" {
		fmt.Fprintln(stdout, "CA:          ", rep.SecureAddr, "(Istio's 15012: certificates and xDS over TLS)")
	}
	fmt.Fprintln(stdout, "capture:     ", rep.Capture)
	for _, p := range rep.Problems {
		fmt.Fprintln(stdout, "problem:", p)
	}
	return 0
}

// age prints a duration as kubectl does: 45s, 3m12s, 2h5m, 3d4h.
func age(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}
