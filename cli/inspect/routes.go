package inspect

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
)

// passthrough is Istio's cluster for traffic to unknown destinations;
// istioctl leaves routes to it out of the table.
const passthrough = "PassthroughCluster"

// describeMatch renders a route's path match as istioctl's MATCH; headers
// and query parameters are not shown, as in istioctl.
func describeMatch(m *routev3.RouteMatch) string {
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		return ps.Prefix + "*"
	case *routev3.RouteMatch_Path:
		return ps.Path
	case *routev3.RouteMatch_SafeRegex:
		return "regex " + ps.SafeRegex.GetRegex()
	case *routev3.RouteMatch_PathSeparatedPrefix:
		return ps.PathSeparatedPrefix + "/*"
	case *routev3.RouteMatch_ConnectMatcher_:
		return "CONNECT"
	}
	return ""
}

// describeDomains shortens a virtual host's domains as istioctl does: ports
// dropped, the longer forms of a name that also appears short
// ("reviews.default.svc.cluster.local" beside "reviews.default") dropped,
// at most two shown.
func describeDomains(domains []string) string {
	if len(domains) <= 1 {
		return strings.Join(domains, "")
	}
	var noPort []string
	for _, d := range domains {
		switch {
		case !strings.Contains(d, ":"):
			noPort = append(noPort, d)
		case strings.Count(d, ":") > 2 && strings.HasSuffix(d, "]"):
			noPort = append(noPort, d) // a bare IPv6 address
		}
	}
	have := map[string]bool{}
	for _, d := range noPort {
		have[d] = true
	}
	var short []string
	for _, d := range noPort {
		full := strings.TrimSuffix(d, ".svc.cluster.local")
		partial := strings.TrimSuffix(d, ".svc")
		if (full != d && have[full]) || (partial != d && have[partial]) {
			continue
		}
		short = append(short, d)
	}
	const most = 2
	if len(short) > most {
		return fmt.Sprintf("%s + %d more...", strings.Join(short[:most], ", "), len(short)-most)
	}
	return strings.Join(short, ", ")
}

// configRef turns Istio's config metadata path
// "/apis/GROUP/VERSION/namespaces/NS/KIND/NAME" into "NAME.NS".
func configRef(md *corev3.Metadata) string {
	f := md.GetFilterMetadata()["istio"].GetFields()["config"]
	if f == nil {
		return ""
	}
	p := strings.Split(f.GetStringValue(), "/")
	if len(p) == 8 && p[0] == "" && p[1] == "apis" && p[4] == "namespaces" {
		return p[7] + "." + p[5]
	}
	return "<unknown>"
}

func isPassthrough(r *routev3.Route) bool {
	return r.GetRoute().GetCluster() == passthrough
}

// routeOrder puts port-named route configurations ("9080") first, by
// number, then the others by name.
func routeOrder(a, b *routev3.RouteConfiguration) int {
	an, aerr := strconv.Atoi(a.GetName())
	bn, berr := strconv.Atoi(b.GetName())
	switch {
	case aerr == nil && berr == nil:
		return cmp.Compare(an, bn)
	case aerr == nil:
		return -1
	case berr == nil:
		return 1
	}
	return strings.Compare(a.GetName(), b.GetName())
}

func printRoutes(d *configDump, o configOpts, w io.Writer) error {
	var rcs []*routev3.RouteConfiguration
	for _, r := range d.routes {
		rc, ok := r.msg.(*routev3.RouteConfiguration)
		if !ok || (o.name != "" && rc.GetName() != o.name) {
			continue
		}
		rcs = append(rcs, rc)
	}
	slices.SortStableFunc(rcs, routeOrder)
	if o.output != "short" {
		msgs := make([]proto.Message, len(rcs))
		for i, rc := range rcs {
			msgs[i] = rc
		}
		return writeMessages(w, msgs, o.output)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 5, ' ', 0)
	if !o.verbose {
		fmt.Fprintln(tw, "NAME\tVIRTUAL HOSTS")
		for _, rc := range rcs {
			fmt.Fprintf(tw, "%s\t%d\n", rc.GetName(), len(rc.GetVirtualHosts()))
		}
		return tw.Flush()
	}
	fmt.Fprintln(tw, "NAME\tVHOST NAME\tDOMAINS\tMATCH\tVIRTUAL SERVICE")
	for _, rc := range rcs {
		for _, vh := range rc.GetVirtualHosts() {
			domains := describeDomains(vh.GetDomains())
			if len(vh.GetRoutes()) == 0 {
				fmt.Fprintf(tw, "%s\t%s\t%s\t/*\t404\n", rc.GetName(), vh.GetName(), domains)
				continue
			}
			for _, r := range vh.GetRoutes() {
				if isPassthrough(r) {
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", rc.GetName(), vh.GetName(), domains, describeMatch(r.GetMatch()), configRef(r.GetMetadata()))
			}
		}
	}
	return tw.Flush()
}
